"""Alerts over the store (``llmtrace alerts``, ``Tracer.alerts``): the recorded calls fed in time order
through the same ``AlertEngine`` the writer uses live, so a rule fires the same way after the fact."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from llmtrace.base.alerting import Alert, AlertEngine, AlertRules, epoch_seconds
from llmtrace.base.cost import PriceBook
from llmtrace.read.queries import iter_calls, parse_time
from llmtrace.store.engine import Database


def evaluate(store: Database, prices: PriceBook, rules: AlertRules | None = None, *, since: datetime | None = None,
             until: datetime | None = None, warmup: timedelta = timedelta(days=1), **filters: Any) -> list[Alert]:
    """The alerts calls since ``since`` fire, in time order. The ``warmup`` before ``since`` only
    builds the baselines (averages, p95s, the error window), as a live engine would have had them."""
    engine = AlertEngine(rules, prices)
    start = since - warmup if since is not None else None
    cutoff = epoch_seconds(since) if since is not None else -math.inf
    out: list[Alert] = []
    store.ensure_schema()
    with store.engine.connect() as conn:
        for r in iter_calls(conn, since=start, until=until, ordered=True, **filters):
            at = parse_time(r.started_at)
            if at is None:
                continue
            t = epoch_seconds(at)
            fired = engine.observe(t=t, trace_id=r.trace_id, span_id=r.span_id, feature=r.feature, model=r.model,
                                   version=r.model_version, provider=r.provider, input_tokens=r.input_tokens,
                                   output_tokens=r.output_tokens, cached_tokens=r.input_cached_tokens,
                                   cache_write_tokens=r.input_cache_write_tokens, latency_ms=r.latency_ms,
                                   status=r.status)
            if fired and t >= cutoff:
                out.extend(fired)
    return out
