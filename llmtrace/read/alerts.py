"""Alerts over the store (``llmtrace alerts``, ``Tracer.alerts``): the recorded calls fed in time order
through the same ``AlertEngine`` the writer uses live, so a rule fires the same way after the fact."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from llmtrace.base.alerting import Alert, AlertEngine, AlertRules, epoch_seconds
from llmtrace.base.cost import PriceBook
from llmtrace.read.queries import AT, iter_calls, parse_time
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
        feature_at = AT["feature"]
        for r in iter_calls(conn, since=start, until=until, ordered=True, **filters):
            span_id, trace_id, started_at, model, version, provider, inp, outp, cached, latency, _ttft, status = r[:12]
            if started_at is None:
                continue
            at = parse_time(started_at)
            if at is None:
                continue
            t = epoch_seconds(at)
            fired = engine.observe(t=t, trace_id=trace_id, span_id=span_id, feature=r[feature_at], model=model,
                                   version=version, provider=provider, input_tokens=inp, output_tokens=outp,
                                   cached_tokens=cached, latency_ms=latency, status=status)
            if fired and t >= cutoff:
                out.extend(fired)
    return out
