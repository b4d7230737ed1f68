"""Retention: delete expired content in bounded batches; metadata (counts, timings, ids) stays."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from llmtrace.base.errors import ConfigError
from llmtrace.store import audit as A
from llmtrace.store import schema as S
from llmtrace.store.engine import Database, utcnow

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str | float | int | timedelta | None) -> timedelta | None:
    """'7d', '12h', '30m', '90s', '2w', a number of days, or a timedelta."""
    if text is None or isinstance(text, timedelta):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        days = float(text)
    else:
        raw = str(text).strip().lower()
        try:
            days = float(raw[:-1]) * _UNITS[raw[-1]] / 86400 if raw and raw[-1] in _UNITS else float(raw)
        except ValueError:
            raise ConfigError(f"an age is like '7d', '12h', '30m' or a number of days; not {text!r}") from None
    if not days > 0:
        raise ConfigError(f"an age must be positive, not {text!r}")
    try:
        return timedelta(days=days)
    except OverflowError:  # (inf, or beyond what a date can hold)
        raise ConfigError(f"an age is at most 999999999 days; not {text!r}") from None


def purge(store: Database, *, older_than: Any = None, dry_run: bool = False, batch_size: int = 1000) -> dict[str, int]:
    """Delete content rows past their expiry (or older than ``older_than``), ``batch_size`` at a time."""
    store.ensure_schema()
    age = parse_age(older_than)
    now = utcnow()
    c = S.contents
    cond = c.c.expires_at <= now
    if age is not None:
        cond = sa.or_(cond, c.c.created_at <= now - age)
    if dry_run:
        with store.engine.connect() as conn:
            rows, traces = conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(c.c.trace_id))).where(cond)).one()
        return {"content_rows": rows, "traces": traces, "dry_run": 1}
    total_rows = 0
    touched: set[str] = set()
    while True:
        with store.engine.begin() as conn:  # one bounded transaction per batch: never a long lock
            if store.dialect == "postgresql":  # a hardened store lets content go only this way
                conn.execute(sa.text("SET LOCAL llmtrace.purge = 'on'"))
            batch = conn.execute(sa.select(c.c.id, c.c.trace_id).where(cond).limit(batch_size)).all()
            if not batch:
                break
            conn.execute(c.delete().where(c.c.id.in_([r.id for r in batch])))
            ids = sorted({r.trace_id for r in batch} - touched)
            if ids:
                conn.execute(S.traces.update().where(S.traces.c.trace_id.in_(ids)).values(content_purged_at=now))
            if A.enabled(conn):  # the purge is itself a chained event: the stamped trace rows
                t = S.traces
                stamped = [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.trace_id.in_(ids)))] if ids else []
                A.append(conn, "purge", [[t.name, A.row_key(t.name, r), A.row_digest(t.name, r)] for r in stamped]
                         + [["purge", "content_rows", str(len(batch))]])
            touched.update(ids)
            total_rows += len(batch)
        if len(batch) < batch_size:
            break
    return {"content_rows": total_rows, "traces": len(touched), "dry_run": 0}
