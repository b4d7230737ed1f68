"""Alerts: rules over LLM calls, evaluated over the store (``llmtrace alerts``) or live as calls
are written (``Tracer(on_alert=...)`` or ``Tracer(alerts=True)``).

Both paths feed calls in time order through the same ``AlertEngine``, so a rule fires the same way
after the fact as it did live. The rules:

- ``cost_spike``: a call costing over ``cost_spike_factor`` (3) × the average of its feature and
  model's previous ``cost_window_calls`` (100) priced calls (per model: a feature that routes some
  questions to a dearer model is not spiking each time it does);
- ``latency_spike``: a successful call slower than ``latency_spike_factor`` (2) × the p95 of its
  feature and model's previous ``latency_window_calls`` (500) successful calls;
- ``error_rate``: errors above ``error_rate`` (5%) of a feature's calls in the last
  ``error_window_minutes`` (60); it fires once, then stays quiet for a window;
- ``context_limit``: input + output tokens at or over ``context_fraction`` (90%) of the model's
  context window (genai-prices' table, or ``prices={"model": {"context_window": n}}``).

Spike and rate rules wait for ``min_calls`` (20) calls of history: three calls are no baseline.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from llmtrace.base.cost import PriceBook
from llmtrace.base.errors import ConfigError
from llmtrace.base.fields import ALERT_RULES
from llmtrace.base.stats import percentile

RULES = ALERT_RULES
_EPOCH = datetime(1970, 1, 1)
_MAX_CACHED = 4096
_P95_REFRESH = 20  # recompute a latency baseline every this many calls: sorting per call is waste


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the alert rules; ``rules`` picks which run."""

    cost_spike_factor: float = 3.0
    cost_window_calls: int = 100
    latency_spike_factor: float = 2.0
    latency_window_calls: int = 500
    error_rate: float = 0.05
    error_window_minutes: float = 60.0
    context_fraction: float = 0.9
    min_calls: int = 20
    rules: tuple[str, ...] = RULES

    def __post_init__(self) -> None:
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ConfigError(f"unknown alert rule(s) {sorted(unknown)}; rules are {', '.join(RULES)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "rules" and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"alert setting {f.name} must be a positive number, not {value!r}")
        if self.error_rate >= 1 or self.context_fraction > 1:
            raise ConfigError("error_rate is a fraction below 1 (0.05 = 5%); context_fraction at most 1 (0.9 = 90%)")


@dataclass(frozen=True)
class Alert:
    """One alert a rule fired on one LLM call: what, when, by how much, and which trace to open."""

    rule: str
    at: str  # when the call started, ISO 8601 UTC
    message: str
    value: float
    threshold: float
    feature: str | None = None
    model: str | None = None
    trace_id: str | None = None
    span_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertEngine:
    """Feed calls in time order with ``observe``; it returns the alerts each call fires."""

    def __init__(self, rules: AlertRules | None = None, prices: PriceBook | None = None) -> None:
        self.rules = rules or AlertRules()
        self.prices = prices or PriceBook()
        on = set(self.rules.rules)
        self._on_cost, self._on_latency = "cost_spike" in on, "latency_spike" in on
        self._on_errors, self._on_context = "error_rate" in on, "context_limit" in on
        self._costs: dict[Any, deque] = {}
        self._cost_sums: dict[Any, float] = {}
        self._latencies: dict[Any, deque] = {}
        self._p95: dict[Any, list] = {}  # key -> [p95, calls until recomputed]
        self._outcomes: dict[Any, deque] = {}  # feature -> (t, failed) within the error window
        self._failed: dict[Any, int] = {}
        self._quiet_until: dict[Any, float] = {}
        self._pricers: dict[tuple, Any] = {}
        self._windows: dict[tuple, int | None] = {}

    def observe(self, *, t: float, trace_id: str | None, span_id: str | None, feature: str | None,
                model: str | None, version: str | None = None, provider: str | None = None,
                input_tokens: int | None = None, output_tokens: int | None = None, cached_tokens: int | None = None,
                cache_write_tokens: int | None = None, latency_ms: float | None = None,
                status: str | None = "ok") -> list[Alert]:
        """``t``: the call's start in seconds since the epoch (UTC)."""
        fired: list[Alert] = []
        base = {"feature": feature, "model": version or model, "trace_id": trace_id, "span_id": span_id}
        if self._on_cost and (input_tokens is not None or output_tokens is not None):
            self._cost(fired, base, t, model, version, provider, (input_tokens, output_tokens, cached_tokens,
                                                                   cache_write_tokens))
        if self._on_latency and latency_ms is not None and status == "ok":
            self._latency(fired, base, t, (feature, version or model), latency_ms)
        if self._on_errors:
            self._errors(fired, base, t, feature, status == "error")
        if self._on_context and (input_tokens is not None or output_tokens is not None):
            self._context(fired, base, t, model, version, provider, (input_tokens or 0) + (output_tokens or 0))
        return fired

    def _cost(self, fired: list[Alert], base: dict[str, Any], t: float, model: str | None, version: str | None,
              provider: str | None, tokens: tuple[int | None, int | None, int | None, int | None]) -> None:
        day = int(t // 86400)
        pkey = (model, version, provider, day)
        if pkey not in self._pricers:
            if len(self._pricers) >= _MAX_CACHED:  # (one per model and day: bounded for a long-lived writer)
                self._pricers.clear()
            self._pricers[pkey] = self.prices.pricer(model=model, version=version, provider=provider,
                                                     at=_EPOCH + timedelta(seconds=t))
        price = self._pricers[pkey]
        cost = price(*tokens) if price else None
        if cost is None:
            return
        key = (base["feature"], base["model"])  # like for like: a feature's cheap and dear models apart
        hist = self._costs.get(key)
        if hist is None:
            hist = self._costs[key] = deque()
            self._cost_sums[key] = 0.0
        r = self.rules
        if len(hist) >= r.min_calls:
            mean = self._cost_sums[key] / len(hist)
            if mean > 0 and cost > r.cost_spike_factor * mean:
                fired.append(Alert("cost_spike", _iso(t), f"cost spike in {_feature(key[0])} on {key[1]}: ${cost:.6f} is "
                                   f"{cost / mean:.1f}× the average ${mean:.6f} of its last {len(hist)} calls",
                                   cost, r.cost_spike_factor * mean, **base))
        hist.append(cost)
        self._cost_sums[key] += cost
        if len(hist) > r.cost_window_calls:
            self._cost_sums[key] -= hist.popleft()

    def _latency(self, fired, base, t, key, latency) -> None:
        r = self.rules
        hist = self._latencies.get(key)
        if hist is None:
            hist = self._latencies[key] = deque(maxlen=r.latency_window_calls)
            self._p95[key] = [None, 0]
        baseline = self._p95[key]
        if len(hist) >= r.min_calls:
            if baseline[1] <= 0 or baseline[0] is None:
                baseline[0] = percentile(sorted(hist), 95)
                baseline[1] = _P95_REFRESH
            baseline[1] -= 1
            p95 = baseline[0]
            if p95 > 0 and latency > r.latency_spike_factor * p95:
                fired.append(Alert("latency_spike", _iso(t), f"latency spike in {_feature(key[0])} on {key[1]}: "
                                   f"{latency:,.0f} ms is {latency / p95:.1f}× the p95 {p95:,.0f} ms of its last "
                                   f"{len(hist)} calls", latency, r.latency_spike_factor * p95, **base))
        hist.append(latency)

    def _errors(self, fired, base, t, key, failed: bool) -> None:
        r = self.rules
        window = r.error_window_minutes * 60
        seen = self._outcomes.get(key)
        if seen is None:
            seen = self._outcomes[key] = deque()
            self._failed[key] = 0
        seen.append((t, failed))
        self._failed[key] += failed
        while seen and seen[0][0] <= t - window:
            self._failed[key] -= seen.popleft()[1]
        n, errors = len(seen), self._failed[key]
        if n >= r.min_calls and errors / n > r.error_rate and t >= self._quiet_until.get(key, -math.inf):
            self._quiet_until[key] = t + window
            fired.append(Alert("error_rate", _iso(t), f"error rate in {_feature(key)}: {errors} of the last {n} calls "
                               f"({errors / n:.1%}) within {r.error_window_minutes:g} min failed",
                               errors / n, r.error_rate, **base))

    def _context(self, fired, base, t, model, version, provider, tokens: int) -> None:
        wkey = (model, version, provider)
        if wkey not in self._windows:
            self._windows[wkey] = self.prices.context_window(model=model, version=version, provider=provider)
        window = self._windows[wkey]
        limit = self.rules.context_fraction * window if window else None
        if window and limit and tokens >= limit:
            fired.append(Alert("context_limit", _iso(t), f"{base['model']} used {tokens:,} of its {window:,}-token "
                               f"context ({tokens / window:.0%}) in {_feature(base['feature'])}: trim history or "
                               "chunks before it overflows", tokens, limit, **base))


def _feature(feature: str | None) -> str:
    return f"feature {feature!r}" if feature is not None else "calls without a feature"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def epoch_seconds(at: datetime) -> float:
    """Seconds since the epoch of a naive UTC datetime (as stored)."""
    return (at - _EPOCH).total_seconds()


AlertSink = Callable[[Alert], Any]
