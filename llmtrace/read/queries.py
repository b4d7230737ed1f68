"""Read-side queries shared by stats, alerts and trace search: time bounds, the LLM calls of a
window joined to their trace's attributes, the users' last actions, failed validations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

import sqlalchemy as sa

from llmtrace.base.errors import ConfigError
from llmtrace.base.fields import ACTIONS
from llmtrace.store import schema
from llmtrace.store.engine import utcnow
from llmtrace.store.retention import parse_age

_CALLS, _TRACES = schema.llm_calls, schema.traces


class CallRow(NamedTuple):
    """One LLM call as stats and alerts see it: the call's columns, then its trace's attributes
    (None while the trace is open). Field names are the columns' names."""

    span_id: str
    trace_id: str
    started_at: str | None  # as text ('2026-11-22 10:00:00.123456'): see iter_calls
    model: str | None
    model_version: str | None
    provider: str | None
    input_tokens: int | None
    output_tokens: int | None
    input_cached_tokens: int | None
    input_cache_write_tokens: int | None
    latency_ms: float | None
    ttft_ms: float | None
    status: str | None
    error_type: str | None
    finish_reason: str | None
    feature: str | None
    team: str | None
    user_hash: str | None
    prompt_version: str | None
    session_id: str | None
    environment: str | None


# The trace attributes calls can be filtered and grouped by: the last fields of CallRow.
TRACE_FILTER_COLUMNS = CallRow._fields[CallRow._fields.index("feature"):]
# started_at comes back as text: parsing a million datetimes costs as much as the query, and
# grouping by day or pricing per day needs only its first ten characters.
_CALL_COLUMNS = tuple(sa.cast(_CALLS.c.started_at, sa.String).label("started_at") if name == "started_at"
                      else _CALLS.c[name] for name in CallRow._fields[:-len(TRACE_FILTER_COLUMNS)])
_NO_TRACE = (None,) * len(TRACE_FILTER_COLUMNS)
_new_row = tuple.__new__
_SLACK = timedelta(days=1)  # a trace starts before its calls: how far before a window its traces are read


def time_bound(value: Any, name: str = "since") -> datetime | None:
    """A point in time (naive UTC, as stored) from a datetime, a date, an ISO string, or an age
    back from now ('7d', '12h', a timedelta)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, timedelta):
        return utcnow() - value
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return time_bound(parsed, name)
    try:
        age = parse_age(value)
        return None if age is None else utcnow() - age
    except (ConfigError, OverflowError):
        raise ConfigError(f"{name} is an age like '7d', '12h', '30m', or a date/time like '2026-11-01' or "
                          f"'2026-11-01T09:00'; not {value!r}") from None


def parse_time(value: str | datetime | None) -> datetime | None:
    """A stored time, read as text by ``iter_calls``, as a naive UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("T", " ")[:26])


def iter_calls(conn: sa.Connection, *, since: datetime | None = None, until: datetime | None = None,
               model: str | None = None, ordered: bool = False, **trace_filters: str | None) -> Iterator[CallRow]:
    """The LLM calls started in [since, until), as ``CallRow``. ``model`` matches a name or an exact version;
    ``trace_filters`` (feature, team, user_hash, prompt_version, environment) match the trace.

    Calls and traces are read by two range scans and joined here: a SQL join costs one index lookup
    per call, which on a million-call SQLite file is most of the time. A call whose trace started
    over a day before it (or is still open) comes last, even when ``ordered``."""
    unknown = set(trace_filters) - set(TRACE_FILTER_COLUMNS)
    if unknown:
        raise ConfigError(f"unknown filter(s) {sorted(unknown)}; filters are model, {', '.join(TRACE_FILTER_COLUMNS)}")
    wanted = [(TRACE_FILTER_COLUMNS.index(k), v) for k, v in trace_filters.items() if v is not None]
    attrs: dict[str, tuple] = {}
    tq = sa.select(_TRACES.c.trace_id, *(_TRACES.c[a] for a in TRACE_FILTER_COLUMNS))
    if since is not None:
        tq = tq.where(_TRACES.c.started_at >= since - _SLACK)
    if until is not None:
        tq = tq.where(_TRACES.c.started_at < until)
    for part in conn.execution_options(yield_per=10_000).execute(tq).partitions():
        for trace_id, *values in part:
            attrs[trace_id] = tuple(values)
    stmt = sa.select(*_CALL_COLUMNS)
    if since is not None:
        stmt = stmt.where(_CALLS.c.started_at >= since)
    if until is not None:
        stmt = stmt.where(_CALLS.c.started_at < until)
    if model is not None:
        stmt = stmt.where(sa.or_(_CALLS.c.model == model, _CALLS.c.model_version == model))
    if ordered:
        stmt = stmt.order_by(_CALLS.c.started_at)
    late: list[tuple] = []  # calls whose trace started before the slack (or is still open): resolved last
    for part in conn.execution_options(yield_per=10_000).execute(stmt).partitions():
        for r in part:
            trace = attrs.get(r[1])
            if trace is None:
                late.append(tuple(r))
            elif not wanted or all(trace[i] == v for i, v in wanted):
                yield _new_row(CallRow, (*r, *trace))
    by_id = sa.select(_TRACES.c.trace_id, *(_TRACES.c[a] for a in TRACE_FILTER_COLUMNS))
    for chunk in _chunks(sorted({r[1] for r in late}), 500):
        for trace_id, *values in conn.execute(by_id.where(_TRACES.c.trace_id.in_(chunk))):
            attrs[trace_id] = tuple(values)
    for call in late:
        trace = attrs.get(call[1], _NO_TRACE)
        if not wanted or all(trace[i] == v for i, v in wanted):
            yield _new_row(CallRow, call + trace)


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def last_actions(conn: sa.Connection, since: datetime | None) -> dict[str, str]:
    """trace id -> the user's last action (accepted/edited/retried/abandoned) recorded since ``since``."""
    f = schema.feedback
    stmt = sa.select(f.c.trace_id, f.c.action).where(f.c.action.in_(ACTIONS)).order_by(f.c.at)
    if since is not None:
        stmt = stmt.where(f.c.at >= since)  # feedback always follows the call it is about
    return {trace_id: action for trace_id, action in conn.execute(stmt)}


def failed_validations(conn: sa.Connection, since: datetime | None) -> tuple[set[str], set[str], set[str]]:
    """(LLM span ids whose parse failed, span ids with another failed check, trace ids with a
    trace-level failed check) among validations recorded since ``since``."""
    v = schema.validations
    stmt = sa.select(v.c.trace_id, v.c.span_id, v.c.rule, v.c.source).where(v.c.passed == sa.false())
    if since is not None:
        stmt = stmt.where(v.c.at >= since)
    parse, checks, traces = set(), set(), set()
    for trace_id, span_id, rule, source in conn.execute(stmt):
        if rule == "schema" and source == "parser":
            parse.add(span_id)
        elif span_id:
            checks.add(span_id)
        else:
            traces.add(trace_id)
    return parse, checks, traces
