"""Finding traces: the newest first, filtered by their attributes, their calls, their checks, the
users' actions, cost or latency, a retrieved chunk's source, or words in their (redacted) content;
a page at a time (keyset on the start time, so page 1,000 costs what page 1 does), with a count.

Every filter but two is SQL. Cost is priced when read (see ``_describe``), and text search is first
narrowed in SQL by the JSON-encoded words, then confirmed on the decoded content so that a word
matching a field name or an escape sequence does not count; expired content never matches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from numbers import Real
from typing import Any

import sqlalchemy as sa

from llmtrace.base.cost import PriceBook
from llmtrace.base.errors import ConfigError
from llmtrace.base.fields import ACTIONS, FEEDBACK_ACTIONS, STATUSES
from llmtrace.base.serialize import loads
from llmtrace.read.document import _sum, iso
from llmtrace.store import schema
from llmtrace.store.engine import Database, utcnow

ORDERS = ("newest", "oldest")
# the filters find_traces takes (besides limit, since, until), with what each one is
FILTERS = {
    "feature": "a feature name", "team": "a team name", "environment": "an environment name",
    "model": "a model name or exact version", "prompt_version": "a prompt version", "user_hash": "a stored user hash",
    "session_id": "a session id", "name": "a trace name", "status": f"one of {STATUSES}",
    "error_type": "an error type (timeout, rate_limit, ...)", "validation_failed": "True or False",
    "action": "the user's action", "min_cost": "a number of USD", "min_latency_ms": "a number of milliseconds",
    "chunk_source": "a retrieved chunk's source id", "text": "words to look for in the content",
}
_TEXT_FILTERS = ("feature", "team", "environment", "model", "prompt_version", "user_hash", "session_id", "name",
                 "error_type", "chunk_source")
_PAGE = 200
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class TracePage:
    """One page of ``Store.list_traces``: the summaries, the cursor of the next page (None on the
    last), and how many traces match: exact, or at least ``total`` when ``total_capped``; None when
    counting would mean reading every match (cost and text filters)."""

    traces: list[dict[str, Any]]
    next_cursor: str | None
    total: int | None
    total_capped: bool


def check_limit(limit: Any, name: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"{name} must be a whole number of traces from 1 to {MAX_LIMIT:,}, not {limit!r}")
    return limit


def check_filters(store: Database | None, filters: dict[str, Any]) -> dict[str, Any]:
    """The filters with None dropped; every bad one an llmtrace error that says what to pass."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise ConfigError(f"unknown filter(s) {unknown}; filters are {', '.join(FILTERS)} (and limit, since, until)")
    out = {k: v for k, v in filters.items() if v is not None}
    for name in _TEXT_FILTERS:
        if name in out and not isinstance(out[name], str):
            raise ConfigError(f"{name} must be {FILTERS[name]} (a str), not {out[name]!r}")
    status = out.get("status")
    if status is not None and status not in STATUSES:
        raise ConfigError(f"status is one of {STATUSES}, not {status!r}")
    if not isinstance(out.get("validation_failed", False), bool):
        raise ConfigError(f"validation_failed must be True or False, not {out['validation_failed']!r}")
    if out.get("validation_failed") is False:
        del out["validation_failed"]
    for name in ("min_cost", "min_latency_ms"):
        value = out.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
                                  or value < 0):
            raise ConfigError(f"{name} must be {FILTERS[name]} (0 or more), not {value!r}")
    text = out.get("text")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ConfigError(f"text search needs some words to look for (a str), not {text!r}")
    action = out.get("action")
    if action is not None:
        out["action"] = _check_action(store, action)
    return out


def _check_action(store: Database | None, action: Any) -> str:
    """accepted, edited, retried, abandoned, rated, or a custom action someone has recorded here."""
    if isinstance(action, str) and action in FEEDBACK_ACTIONS:
        return action
    known = isinstance(action, str) and action.strip() and store is not None and _recorded(store, action)
    if not known:
        raise ConfigError(f"a user's action is one of {FEEDBACK_ACTIONS} or a custom action recorded in this store; "
                          f"no feedback says {action!r}")
    return str(action)


def _recorded(store: Database, action: str) -> bool:
    store.ensure_schema()
    with store.engine.connect() as conn:
        return conn.execute(sa.select(schema.feedback.c.trace_id).where(schema.feedback.c.action == action).limit(1)).first() \
            is not None


def encode_cursor(started_at: str | None, trace_id: str) -> str:
    return f"{started_at or ''}|{trace_id}"


def decode_cursor(cursor: Any) -> tuple[datetime, str]:
    """A cursor from ``TracePage.next_cursor``: the start time and id of the last trace shown."""
    if isinstance(cursor, str) and "|" in cursor:
        when, trace_id = cursor.split("|", 1)
        try:
            started = datetime.fromisoformat(when.replace("Z", ""))
        except ValueError:
            pass
        else:
            if trace_id:
                return started.replace(tzinfo=None), trace_id
    raise ConfigError(f"cursor must be the next_cursor of a page of traces (like '2026-11-01T10:00:00Z|<trace id>'), "
                      f"not {cursor!r}")


def _where(since: datetime | None, until: datetime | None, f: dict[str, Any]) -> list[Any]:
    t, c = schema.traces, schema.llm_calls
    where: list[Any] = []
    for name in ("feature", "team", "prompt_version", "user_hash", "environment", "session_id", "name"):
        if name in f:
            where.append(t.c[name] == f[name])
    if since is not None:
        where.append(t.c.started_at >= since)
    if until is not None:
        where.append(t.c.started_at < until)
    status = f.get("status")
    if status is not None:
        where.append(t.c.status == status)
    if "min_latency_ms" in f:
        where.append(t.c.latency_ms >= f["min_latency_ms"])
    if "model" in f:
        where.append(_exists(c, sa.or_(c.c.model == f["model"], c.c.model_version == f["model"])))
    if "error_type" in f:
        where.append(_exists(schema.spans, schema.spans.c.error_type == f["error_type"]))
    if f.get("validation_failed"):
        where.append(_exists(schema.validations, schema.validations.c.passed == sa.false()))
    if "chunk_source" in f:
        # the traces that used a chunk, from the (source_id, trace_id) index: a rarely used chunk
        # would otherwise cost one lookup per trace walked from the newest
        used = sa.select(schema.chunks.c.trace_id).where(schema.chunks.c.source_id == f["chunk_source"])
        where.append(t.c.trace_id.in_(used.scalar_subquery()))
    action = f.get("action")
    if action in ACTIONS:
        where.append(_last_action_is(action))
    elif action is not None:  # rated, or a custom action: any feedback saying it
        where.append(_exists(schema.feedback, schema.feedback.c.action == action))
    if "text" in f:
        where.append(_content_like(f["text"]))
    return where


def _after(cursor: tuple[datetime, str], order: str) -> Any:
    """Rows past the cursor in the list's order (newest: started_at desc, trace_id asc); written as
    a range on started_at so that the database walks its index from the cursor on."""
    started, trace_id = cursor
    t = schema.traces
    if order == "newest":
        return sa.and_(t.c.started_at <= started, sa.not_(sa.and_(t.c.started_at == started, t.c.trace_id <= trace_id)))
    return sa.and_(t.c.started_at >= started, sa.not_(sa.and_(t.c.started_at == started, t.c.trace_id <= trace_id)))


def find_traces(store: Database, prices: PriceBook, *, limit: int = 20, since: datetime | None = None,
                until: datetime | None = None, order: str = "newest", **filters: Any) -> list[dict[str, Any]]:
    """The traces matching every filter, newest (or oldest) first, one summary dict each."""
    return list_traces(store, prices, limit=limit, since=since, until=until, order=order, count=False,
                       **filters).traces


def list_traces(store: Database, prices: PriceBook, *, limit: int = 50, cursor: str | None = None,
                since: datetime | None = None, until: datetime | None = None, order: str = "newest",
                count: bool = True, count_cap: int = 1000, **filters: Any) -> TracePage:
    limit = check_limit(limit)
    if order not in ORDERS:
        raise ConfigError(f"order is one of {ORDERS}, not {order!r}")
    f = check_filters(store, filters)
    after = decode_cursor(cursor) if cursor is not None else None
    store.ensure_schema()
    t = schema.traces
    where = _where(since, until, f)
    direction = t.c.started_at.desc() if order == "newest" else t.c.started_at.asc()
    base = sa.select(t).order_by(direction, t.c.trace_id)
    min_cost, text = f.get("min_cost"), f.get("text")
    post = min_cost is not None or text is not None
    out: list[dict[str, Any]] = []
    more = False
    with store.engine.connect() as conn:
        position = after
        while True:
            conditions = where + ([_after(position, order)] if position is not None else [])
            want = _PAGE if post else limit + 1  # one more than asked tells whether there is a next page
            page = conn.execute(base.where(*conditions).limit(want)).all()
            if not page:
                break
            position = (page[-1].started_at, page[-1].trace_id)
            rows = page if post else page[:limit]
            more = not post and len(page) > limit
            for row in _describe(conn, rows, prices):
                if min_cost is not None and (row["cost_usd"] is None or row["cost_usd"] < min_cost):
                    continue
                if text is not None and not _content_has(conn, row["trace_id"], text):
                    continue
                if len(out) == limit:
                    more = True
                    break
                out.append(row)
            if not post or more or len(page) < want:
                break
        total, capped = (_count(conn, where, count_cap, exact=not f) if count and not post else (None, False))
    next_cursor = encode_cursor(out[-1]["started_at"], out[-1]["trace_id"]) if more and out else None
    return TracePage(out, next_cursor, total, capped)


def _count(conn: sa.Connection, where: list[Any], cap: int, exact: bool) -> tuple[int, bool]:
    """How many traces match: all of them for a time range alone (counted on its index), else up
    to ``cap`` (an attribute without an index, or a lookup per trace, would read every trace)."""
    t = schema.traces
    if exact:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar() or 0), False
    inner = sa.select(sa.literal(1)).select_from(t).where(*where).limit(cap + 1).subquery()
    n = int(conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar() or 0)
    return min(n, cap), n > cap


def _exists(table: sa.Table, condition: Any) -> Any:
    return sa.exists().where(table.c.trace_id == schema.traces.c.trace_id, condition)


def _last_action_is(action: str) -> Any:
    f, later = schema.feedback, schema.feedback.alias("later")
    newer = sa.exists().where(later.c.trace_id == f.c.trace_id, later.c.action.in_(ACTIONS), later.c.at > f.c.at)
    return sa.exists().where(f.c.trace_id == schema.traces.c.trace_id, f.c.action == action, ~newer)


def _encoded(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]  # as the words appear inside stored JSON


def _content_like(text: str) -> Any:
    body = schema.contents.c.body
    pattern = "%" + _encoded(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    live = sa.or_(schema.contents.c.expires_at.is_(None), schema.contents.c.expires_at > utcnow())
    return _exists(schema.contents, sa.and_(body.ilike(pattern, escape="\\"), live))


def _content_has(conn: sa.Connection, trace_id: str, text: str) -> bool:
    needle = text.casefold()
    cs = schema.contents
    now = utcnow()
    for body, expires_at in conn.execute(sa.select(cs.c.body, cs.c.expires_at).where(cs.c.trace_id == trace_id)):
        if expires_at is not None and expires_at <= now:
            continue
        if any(needle in s.casefold() for s in _strings(loads(body))):
            return True
    return False


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _describe(conn: sa.Connection, traces: Sequence[sa.Row], prices: PriceBook) -> list[dict[str, Any]]:
    """One summary per trace: its calls, tokens, models, cost, error types (any span's), the user's
    last action and every feedback action recorded, oldest first."""
    c, f = schema.llm_calls, schema.feedback
    ids = [r.trace_id for r in traces]
    if not ids:
        return []
    calls: dict[str, list] = {}
    stmt = sa.select(c.c.trace_id, c.c.model, c.c.model_version, c.c.provider, c.c.started_at, c.c.input_tokens,
                     c.c.output_tokens, c.c.input_cached_tokens, c.c.input_cache_write_tokens).where(c.c.trace_id.in_(ids))
    for r in conn.execute(stmt):
        calls.setdefault(r.trace_id, []).append(r)
    actions: dict[str, str] = {}
    feedback: dict[str, list[dict[str, Any]]] = {}
    for tid, action, score in conn.execute(sa.select(f.c.trace_id, f.c.action, f.c.score).where(
            f.c.trace_id.in_(ids)).order_by(f.c.at)):
        feedback.setdefault(tid, []).append({"action": action, "score": score})
        if action in ACTIONS:
            actions[tid] = action
    errors: dict[str, set] = {}
    sp = schema.spans
    for tid, kind in conn.execute(sa.select(sp.c.trace_id, sp.c.error_type).where(
            sp.c.trace_id.in_(ids), sp.c.error_type.is_not(None))):
        errors.setdefault(tid, set()).add(kind)
    out = []
    for tr in traces:
        mine = calls.get(tr.trace_id, [])
        costs = [prices.cost(model=r.model, version=r.model_version, provider=r.provider, input_tokens=r.input_tokens,
                             output_tokens=r.output_tokens, cached_tokens=r.input_cached_tokens,
                             cache_write_tokens=r.input_cache_write_tokens, at=r.started_at)
                 for r in mine]
        out.append({
            "trace_id": tr.trace_id, "name": tr.name, "started_at": iso(tr.started_at), "status": tr.status or "open",
            "latency_ms": tr.latency_ms, "feature": tr.feature, "team": tr.team, "prompt_version": tr.prompt_version,
            "user_id": tr.user_hash, "session_id": tr.session_id, "environment": tr.environment,
            "llm_calls": len(mine),
            "models": sorted({r.model_version or r.model for r in mine if r.model_version or r.model}),
            "input_tokens": _sum([r.input_tokens for r in mine]), "output_tokens": _sum([r.output_tokens for r in mine]),
            "cost_usd": _sum(costs), "errors": sorted(errors.get(tr.trace_id, ())),
            "action": actions.get(tr.trace_id), "feedback": feedback.get(tr.trace_id, []),
        })
    return out


def recent_values(store: Database, names: Sequence[str] = ("feature", "prompt_version", "environment", "team"),
                  window: int = 5000) -> dict[str, list[str]]:
    """The values each trace attribute took in the newest ``window`` traces (filter suggestions):
    reading them from every trace would scan the whole table."""
    store.ensure_schema()
    t = schema.traces
    recent = sa.select(*(t.c[n] for n in names)).order_by(t.c.started_at.desc()).limit(window).subquery()
    seen: dict[str, set[str]] = {n: set() for n in names}
    with store.engine.connect() as conn:
        for row in conn.execute(sa.select(recent)):
            for n, v in zip(names, row, strict=True):
                if v is not None:
                    seen[n].add(v)
        models = _recent_models(conn, window)
    out = {n: sorted(v) for n, v in seen.items()}
    out["model"] = models
    return out


def _recent_models(conn: sa.Connection, window: int) -> list[str]:
    c = schema.llm_calls
    recent = sa.select(c.c.model, c.c.model_version).order_by(c.c.started_at.desc()).limit(window).subquery()
    names: set[str] = set()
    for model, version in conn.execute(sa.select(recent)):
        names.update(v for v in (model, version) if v)
    return sorted(names)
