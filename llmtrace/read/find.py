"""Finding traces: the newest first, filtered by their attributes, their calls, their checks, the
users' actions, cost or latency, a retrieved chunk's source, or words in their (redacted) content.

Every filter but two is SQL. Cost is priced when read (see ``_cost``), and text search is first
narrowed in SQL by the JSON-encoded words, then confirmed on the decoded content so that a word
matching a field name or an escape sequence does not count; expired content never matches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from llmtrace.base.cost import PriceBook
from llmtrace.base.errors import ConfigError
from llmtrace.base.serialize import loads
from llmtrace.read.document import _sum, iso
from llmtrace.read.queries import ACTIONS
from llmtrace.store import schema as S
from llmtrace.store.engine import Database, utcnow

STATUSES = ("ok", "error", "open")
_PAGE = 200


def find_traces(store: Database, prices: PriceBook, *, limit: int = 20, since: datetime | None = None,
                until: datetime | None = None, feature: str | None = None, team: str | None = None,
                environment: str | None = None,
                model: str | None = None, prompt_version: str | None = None, user_hash: str | None = None,
                status: str | None = None, error_type: str | None = None, validation_failed: bool = False,
                action: str | None = None, min_cost: float | None = None, min_latency_ms: float | None = None,
                chunk_source: str | None = None, text: str | None = None) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise ConfigError(f"status is one of {STATUSES}, not {status!r}")
    if action is not None and action not in ACTIONS:
        raise ConfigError(f"a user's action is one of {ACTIONS}, not {action!r}")
    if limit is None or limit < 1:
        raise ConfigError(f"limit must be a positive number of traces, not {limit!r}")
    if text is not None and not text.strip():
        raise ConfigError("text search needs some words to look for")
    store.ensure_schema()
    t, c = S.traces, S.llm_calls
    where: list[Any] = []
    for column, value in ((t.c.feature, feature), (t.c.team, team), (t.c.prompt_version, prompt_version),
                          (t.c.user_hash, user_hash), (t.c.environment, environment)):
        if value is not None:
            where.append(column == value)
    if since is not None:
        where.append(t.c.started_at >= since)
    if until is not None:
        where.append(t.c.started_at < until)
    if status == "open":
        where.append(t.c.status.is_(None))
    elif status is not None:
        where.append(t.c.status == status)
    if min_latency_ms is not None:
        where.append(t.c.latency_ms >= min_latency_ms)
    if model is not None:
        where.append(_exists(c, sa.or_(c.c.model == model, c.c.model_version == model)))
    if error_type is not None:
        where.append(_exists(S.spans, S.spans.c.error_type == error_type))
    if validation_failed:
        where.append(_exists(S.validations, S.validations.c.passed == sa.false()))
    if chunk_source is not None:
        where.append(_exists(S.chunks, S.chunks.c.source_id == chunk_source))
    if action is not None:
        where.append(_last_action_is(action))
    if text is not None:
        where.append(_content_like(text))
    stmt = sa.select(t).where(*where).order_by(t.c.started_at.desc(), t.c.trace_id)
    out: list[dict[str, Any]] = []
    offset = 0
    with store.engine.connect() as conn:
        while len(out) < limit:
            page = conn.execute(stmt.limit(_PAGE if (min_cost or text) else limit).offset(offset)).all()
            if not page:
                break
            offset += len(page)
            rows = _describe(conn, page, prices)
            for row in rows:
                if min_cost is not None and (row["cost_usd"] is None or row["cost_usd"] < min_cost):
                    continue
                if text is not None and not _content_has(conn, row["trace_id"], text):
                    continue
                out.append(row)
                if len(out) == limit:
                    break
            if not (min_cost or text):
                break
    return out


def _exists(table: sa.Table, condition: Any) -> Any:
    return sa.exists().where(table.c.trace_id == S.traces.c.trace_id, condition)


def _last_action_is(action: str) -> Any:
    f, later = S.feedback, S.feedback.alias("later")
    newer = sa.exists().where(later.c.trace_id == f.c.trace_id, later.c.action.in_(ACTIONS), later.c.at > f.c.at)
    return sa.exists().where(f.c.trace_id == S.traces.c.trace_id, f.c.action == action, ~newer)


def _encoded(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]  # as the words appear inside stored JSON


def _content_like(text: str) -> Any:
    body = S.contents.c.body
    pattern = "%" + _encoded(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    live = sa.or_(S.contents.c.expires_at.is_(None), S.contents.c.expires_at > utcnow())
    return _exists(S.contents, sa.and_(body.ilike(pattern, escape="\\"), live))


def _content_has(conn: sa.Connection, trace_id: str, text: str) -> bool:
    needle = text.casefold()
    cs = S.contents
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
    """One summary per trace: its calls, tokens, models, cost, error types (any span's) and the
    user's last action."""
    c, f = S.llm_calls, S.feedback
    ids = [r.trace_id for r in traces]
    calls: dict[str, list] = {}
    stmt = sa.select(c.c.trace_id, c.c.model, c.c.model_version, c.c.provider, c.c.started_at, c.c.input_tokens,
                     c.c.output_tokens, c.c.input_cached_tokens).where(c.c.trace_id.in_(ids))
    for r in conn.execute(stmt):
        calls.setdefault(r.trace_id, []).append(r)
    actions = {tid: a for tid, a in conn.execute(sa.select(f.c.trace_id, f.c.action).where(
        f.c.trace_id.in_(ids), f.c.action.in_(ACTIONS)).order_by(f.c.at))}
    errors: dict[str, set] = {}
    sp = S.spans
    for tid, kind in conn.execute(sa.select(sp.c.trace_id, sp.c.error_type).where(
            sp.c.trace_id.in_(ids), sp.c.error_type.is_not(None))):
        errors.setdefault(tid, set()).add(kind)
    out = []
    for tr in traces:
        mine = calls.get(tr.trace_id, [])
        costs = [prices.cost(model=r.model, version=r.model_version, provider=r.provider, input_tokens=r.input_tokens,
                             output_tokens=r.output_tokens, cached_tokens=r.input_cached_tokens, at=r.started_at)
                 for r in mine]
        out.append({
            "trace_id": tr.trace_id, "name": tr.name, "started_at": iso(tr.started_at), "status": tr.status or "open",
            "latency_ms": tr.latency_ms, "feature": tr.feature, "team": tr.team, "prompt_version": tr.prompt_version,
            "user_id": tr.user_hash, "llm_calls": len(mine),
            "models": sorted({r.model_version or r.model for r in mine if r.model_version or r.model}),
            "input_tokens": _sum([r.input_tokens for r in mine]), "output_tokens": _sum([r.output_tokens for r in mine]),
            "cost_usd": _sum(costs), "errors": sorted(errors.get(tr.trace_id, ())),
            "action": actions.get(tr.trace_id),
        })
    return out
