"""Read-side queries shared by stats, alerts and trace search: time bounds, the LLM calls of a
window joined to their trace's attributes, the users' last actions, failed validations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from llmtrace import _schema as S
from llmtrace._errors import ConfigError
from llmtrace._retention import parse_age
from llmtrace._store import utcnow

ACTIONS = ("accepted", "edited", "retried", "abandoned")

# The columns of one LLM call as stats and alerts see it (the trace's attributes joined on).
_C, _T = S.llm_calls, S.traces
CALL_COLUMNS = (
    _C.c.span_id, _C.c.trace_id, _C.c.started_at, _C.c.model, _C.c.model_version, _C.c.provider,
    _C.c.input_tokens, _C.c.output_tokens, _C.c.input_cached_tokens, _C.c.latency_ms, _C.c.ttft_ms,
    _C.c.status, _C.c.error_type, _C.c.finish_reason,
    _T.c.feature, _T.c.team, _T.c.user_hash, _T.c.prompt_version, _T.c.session_id, _T.c.environment,
)


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
        return utcnow() - parse_age(value)
    except ConfigError:
        raise ConfigError(f"{name} is an age like '7d', '12h', '30m', or a date/time like '2026-11-01' or "
                          f"'2026-11-01T09:00'; not {value!r}") from None


def call_filters(*, since: datetime | None = None, until: datetime | None = None, feature: str | None = None,
                 model: str | None = None, team: str | None = None, prompt_version: str | None = None,
                 environment: str | None = None, user_hash: str | None = None) -> list[Any]:
    where: list[Any] = []
    if since is not None:
        where.append(_C.c.started_at >= since)
    if until is not None:
        where.append(_C.c.started_at < until)
    if model is not None:
        where.append(sa.or_(_C.c.model == model, _C.c.model_version == model))
    for column, value in ((_T.c.feature, feature), (_T.c.team, team), (_T.c.prompt_version, prompt_version),
                          (_T.c.environment, environment), (_T.c.user_hash, user_hash)):
        if value is not None:
            where.append(column == value)
    return where


def iter_calls(conn: sa.Connection, where: list[Any], ordered: bool = False) -> Iterator[sa.Row]:
    """The LLM calls matching ``where``, each with its trace's attributes (None while the trace is open)."""
    stmt = sa.select(*CALL_COLUMNS).select_from(_C.outerjoin(_T, _T.c.trace_id == _C.c.trace_id)).where(*where)
    if ordered:
        stmt = stmt.order_by(_C.c.started_at)
    yield from conn.execution_options(yield_per=5000).execute(stmt)


def last_actions(conn: sa.Connection, since: datetime | None) -> dict[str, str]:
    """trace id -> the user's last action (accepted/edited/retried/abandoned) recorded since ``since``."""
    f = S.feedback
    stmt = sa.select(f.c.trace_id, f.c.action).where(f.c.action.in_(ACTIONS)).order_by(f.c.at)
    if since is not None:
        stmt = stmt.where(f.c.at >= since)  # feedback always follows the call it is about
    return {trace_id: action for trace_id, action in conn.execute(stmt)}


def failed_validations(conn: sa.Connection, since: datetime | None) -> tuple[set[str], set[str], set[str]]:
    """(LLM span ids whose parse failed, span ids with another failed check, trace ids with a
    trace-level failed check) among validations recorded since ``since``."""
    v = S.validations
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
