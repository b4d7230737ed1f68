"""Analysis: LLM calls grouped by model, version, feature, team, user, prompt version, day or
conversation turn, with tokens, cost, latency and TTFT percentiles, error, parse and validation
failure rates, and the users' feedback mix.

One query reads the window's calls (each joined to its trace's attributes) and two small ones read
failed validations and feedback; aggregation happens here because percentiles have no portable SQL
and cost comes from the price book per (model, day), never from a guessed stored number.

Definitions, so numbers can be checked by hand:
- percentiles interpolate linearly between the closest ranks (numpy's default);
- ``cost_usd`` sums the calls whose model has a price; ``unpriced_calls`` counts those without;
- a call's parse failed when its output parser raised; its validation failed when a check on that
  call failed, and a trace-level check (``record_validation`` without ``span_id``) counts against
  the trace's last call;
- the feedback mix counts distinct traces by the user's last action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from operator import attrgetter
from typing import Any

import sqlalchemy as sa

from llmtrace.base.cost import PriceBook
from llmtrace.base.errors import ConfigError
from llmtrace.base.fields import ACTIONS
from llmtrace.base.stats import percentile
from llmtrace.read.queries import CallRow, failed_validations, iter_calls, last_actions, parse_time
from llmtrace.store import schema
from llmtrace.store.engine import Database

DIMENSIONS = ("model", "version", "provider", "feature", "team", "user", "prompt-version", "environment",
              "day", "hour", "turn")
_ORDERED = ("day", "hour", "turn")  # groups sorted by key, not by size
_KEY: dict[str, Callable[[CallRow], Any]] = {  # dimension -> its value in a call (queries.CallRow)
    "model": attrgetter("model"),
    "version": attrgetter("model_version"),
    "provider": attrgetter("provider"),
    "feature": attrgetter("feature"),
    "team": attrgetter("team"),
    "user": attrgetter("user_hash"),
    "prompt-version": attrgetter("prompt_version"),
    "environment": attrgetter("environment"),
    "day": lambda r: r.started_at[:10] if r.started_at else None,
    "hour": lambda r: r.started_at[:13].replace(" ", "T") + ":00" if r.started_at else None,
}
PERCENTILES = (50, 95, 99)
_MISSING = object()


def parse_by(by: str | Iterable[str] | None) -> tuple[str, ...]:
    if by is None:
        return ()
    if isinstance(by, str):
        parts = by.split(",")
    elif isinstance(by, Iterable) and all(isinstance(p, str) for p in by):
        parts = list(by)
    else:
        raise ConfigError(f"by is a dimension name or several (a str like 'feature,model', or a list of str); "
                          f"choose from {', '.join(DIMENSIONS)}; not {by!r}")
    dims = tuple(p.strip().lower().replace("_", "-") for p in parts if p and p.strip())
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        raise ConfigError(f"cannot group by {unknown}; choose from {', '.join(DIMENSIONS)} (comma-separated for several)")
    return dims


class _Group:
    __slots__ = ("calls", "traces", "in_sum", "in_n", "out_sum", "out_n", "cost", "priced", "unpriced",
                 "latency", "ttft", "errors", "parse", "checks")

    def __init__(self) -> None:
        self.calls = self.in_sum = self.in_n = self.out_sum = self.out_n = self.priced = self.unpriced = 0
        self.parse = self.checks = 0
        self.cost = 0.0
        self.traces: set[str] = set()
        self.latency: list[float] = []
        self.ttft: list[float] = []
        self.errors: dict[str, int] = {}


class _View:
    """One grouping of the calls (e.g. by feature and model) being aggregated."""

    def __init__(self, dims: tuple[str, ...], turns: dict[str, int]) -> None:
        self.dims = dims
        keyers = [(lambda r: turns.get(r.trace_id)) if d == "turn" else _KEY[d] for d in dims]
        self.key: Callable[[CallRow], Any] = (
            (lambda r: ()) if not keyers else keyers[0] if len(keyers) == 1 else (lambda r: tuple(k(r) for k in keyers)))
        self.groups: dict[Any, _Group] = {}
        self.last_call: dict[str, tuple] = {}  # trace with a trace-level failed check -> (started, span, group)


def compute_stats(store: Database, prices: PriceBook, *, by: str | Iterable[str] | None = "model",
                  since: datetime | None = None, until: datetime | None = None, **filters: Any) -> list[dict[str, Any]]:
    """One row per group: see the module docstring for what each figure means."""
    return compute_views(store, prices, views=[by], since=since, until=until, **filters)[0]


def compute_views(store: Database, prices: PriceBook, *, views: Iterable[str | Iterable[str] | None],
                  since: datetime | None = None, until: datetime | None = None, **filters: Any) -> list[list[dict[str, Any]]]:
    """``compute_stats`` for several groupings at once, over one read of the window's calls."""
    if isinstance(views, str) or not isinstance(views, Iterable):
        raise ConfigError(f"views is a list of groupings, e.g. ['feature', 'day'], not {views!r}")
    all_dims = [parse_by(v) for v in views]
    # a grouping whose dimensions another one holds is merged from that one's groups, not counted again
    source = {i: next((j for j, other in enumerate(all_dims) if j != i and set(dims) < set(other)
                       and _direct(j, all_dims)), None) for i, dims in enumerate(all_dims)}
    store.ensure_schema()
    pricers: dict[tuple, Any] = {}
    with store.engine.connect() as conn:
        parse_failed, check_failed, trace_failed = failed_validations(conn, since)
        actions = last_actions(conn, since)
        turns = _turns(conn, since) if any("turn" in dims for dims in all_dims) else {}
        views_ = [_View(dims, turns) for dims in all_dims]
        todo = [v for i, v in enumerate(views_) if source[i] is None]
        for r in iter_calls(conn, since=since, until=until, **filters):
            span_id, trace_id, started_at, inp, out = r.span_id, r.trace_id, r.started_at, r.input_tokens, r.output_tokens
            model, version, provider = r.model, r.model_version, r.provider
            latency, ttft, status, error_type = r.latency_ms, r.ttft_ms, r.status, r.error_type
            cost = None
            if inp is not None or out is not None:
                pkey = (model, version, provider, started_at[:10] if started_at else None)
                price = pricers.get(pkey, _MISSING)
                if price is _MISSING:
                    price = pricers[pkey] = prices.pricer(model=model, version=version, provider=provider,
                                                          at=parse_time(started_at))
                cost = price(inp, out, r.input_cached_tokens, r.input_cache_write_tokens) if price else None
            for view in todo:
                key = view.key(r)
                g = view.groups.get(key)
                if g is None:
                    g = view.groups[key] = _Group()
                g.calls += 1
                g.traces.add(trace_id)
                if inp is not None:
                    g.in_sum += inp
                    g.in_n += 1
                if out is not None:
                    g.out_sum += out
                    g.out_n += 1
                if inp is not None or out is not None:
                    if cost is None:
                        g.unpriced += 1
                    else:
                        g.cost += cost
                        g.priced += 1
                if latency is not None:
                    g.latency.append(latency)
                if ttft is not None:
                    g.ttft.append(ttft)
                if status == "error":
                    kind = error_type or "other"
                    g.errors[kind] = g.errors.get(kind, 0) + 1
                if span_id in parse_failed:
                    g.parse += 1
                if span_id in check_failed:
                    g.checks += 1
                elif trace_id in trace_failed:
                    seen = view.last_call.get(trace_id)
                    if seen is None or (started_at, span_id) > seen[:2]:
                        view.last_call[trace_id] = (started_at, span_id, key)
    for i, view in enumerate(views_):
        j = source[i]
        if j is not None:
            _merge_into(view, views_[j])
    return [_rows(view, actions) for view in views_]


def _direct(j: int, all_dims: list[tuple[str, ...]]) -> bool:
    """Whether grouping ``j`` is counted from the calls (no other grouping holds all its dimensions)."""
    return not any(k != j and set(all_dims[j]) < set(other) for k, other in enumerate(all_dims))


def _merge_into(view: _View, full: _View) -> None:
    """Fill ``view`` from the groups of ``full``, whose dimensions include all of ``view``'s."""
    positions = [full.dims.index(d) for d in view.dims]

    def project(key: Any) -> Any:
        parts = key if len(full.dims) > 1 else (key,)
        picked = tuple(parts[p] for p in positions)
        return picked[0] if len(picked) == 1 else picked

    for key, g in full.groups.items():
        into = view.groups.setdefault(project(key), _Group())
        for name in ("calls", "in_sum", "in_n", "out_sum", "out_n", "cost", "priced", "unpriced", "parse", "checks"):
            setattr(into, name, getattr(into, name) + getattr(g, name))
        into.traces |= g.traces
        into.latency.extend(g.latency)
        into.ttft.extend(g.ttft)
        for kind, n in g.errors.items():
            into.errors[kind] = into.errors.get(kind, 0) + n
    view.last_call = {t: (started, span, project(key)) for t, (started, span, key) in full.last_call.items()}


def _rows(view: _View, actions: dict[str, str]) -> list[dict[str, Any]]:
    dims, groups = view.dims, view.groups
    for _started, _span, key in view.last_call.values():
        groups[key].checks += 1
    if len(dims) == 1:
        groups = {(k,): g for k, g in groups.items()}
    rows = [_row(dims, key, g, actions) for key, g in groups.items()]
    if any(d in _ORDERED for d in dims):
        names = [d.replace("-", "_") for d in dims]
        rows.sort(key=lambda row: tuple(_sort_key(row[n]) for n in names))
    else:
        rows.sort(key=lambda row: -row["calls"])
    return rows


def _row(dims: tuple[str, ...], key: tuple, g: _Group, actions: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {d.replace("-", "_"): v for d, v in zip(dims, key, strict=True)}
    g.latency.sort()
    g.ttft.sort()
    errors = sum(g.errors.values())
    feedback = dict.fromkeys(ACTIONS, 0)
    for trace_id in g.traces:
        action = actions.get(trace_id)
        if action is not None:
            feedback[action] += 1
    out.update({
        "calls": g.calls, "traces": len(g.traces),
        "input_tokens": g.in_sum if g.in_n else None, "output_tokens": g.out_sum if g.out_n else None,
        "avg_input_tokens": round(g.in_sum / g.in_n, 1) if g.in_n else None,
        "avg_output_tokens": round(g.out_sum / g.out_n, 1) if g.out_n else None,
        "cost_usd": round(g.cost, 10) if g.priced else None, "unpriced_calls": g.unpriced,
        **{f"latency_p{q}_ms": _r(percentile(g.latency, q)) for q in PERCENTILES},
        **{f"ttft_p{q}_ms": _r(percentile(g.ttft, q)) for q in PERCENTILES},
        "errors": errors, "error_rate": round(errors / g.calls, 4),
        "errors_by_type": dict(sorted(g.errors.items(), key=lambda kv: -kv[1])),
        "parse_failures": g.parse, "parse_failure_rate": round(g.parse / g.calls, 4),
        "validation_failures": g.checks, "validation_failure_rate": round(g.checks / g.calls, 4),
        **{f"feedback_{a}": n for a, n in feedback.items()},
    })
    return out


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, 0, "")
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _turns(conn: sa.Connection, since: datetime | None) -> dict[str, int]:
    """trace id -> its turn in its session (1 = the session's first trace), over the session's whole
    history, for the sessions active since ``since``: input tokens by turn show prompts growing with
    the conversation."""
    t = schema.traces
    active = sa.select(t.c.session_id).where(t.c.session_id.is_not(None))
    if since is not None:
        active = active.where(t.c.started_at >= since)
    turn = sa.func.row_number().over(partition_by=t.c.session_id, order_by=(t.c.started_at, t.c.trace_id))
    stmt = sa.select(t.c.trace_id, turn).where(t.c.session_id.in_(active.distinct().scalar_subquery()))
    return dict(conn.execute(stmt).all())
