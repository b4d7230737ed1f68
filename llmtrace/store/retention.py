"""Retention: delete expired content in bounded batches; metadata (counts, timings, ids) stays.

Two retentions: content (prompts, answers, tool arguments, chunks) expires after ``content_ttl_days``;
labels a user gave (feedback corrections and comments, content rows of kind ``labels``) are kept
unless given a retention of their own. ``purge(older_than=...)`` takes content by age; labels only
with ``labels=True`` (a user's request to be forgotten, say). Rows written before labels had rows of
their own are split as they are purged: their labels move to a row of their own first.

With the audit chain on, a purge chains what it deletes (each content row, and the trace rows it
stamps), so ``llmtrace audit verify`` tells a purge from a deletion.
"""

from __future__ import annotations

import math
import random
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from llmtrace.base.errors import ConfigError
from llmtrace.base.privacy import LABEL_OWNER
from llmtrace.base.serialize import dumps, loads
from llmtrace.store import audit, schema
from llmtrace.store.engine import Database, utcnow

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LABELS = "labels"  # the kind of content row that holds labels


def parse_age(text: str | float | int | timedelta | None) -> timedelta | None:
    """'7d', '12h', '30m', '90s', '2w', a number of days, or a timedelta."""
    if text is None or isinstance(text, timedelta):
        return text
    try:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            days = float(text)
        else:
            raw = str(text).strip().lower()
            days = float(raw[:-1]) * _UNITS[raw[-1]] / 86400 if raw and raw[-1] in _UNITS else float(raw)
    except (ValueError, OverflowError):
        raise ConfigError(f"an age is like '7d', '12h', '30m' or a number of days; not {_short(text)}") from None
    if not days > 0:
        raise ConfigError(f"an age must be positive, not {_short(text)}")
    try:
        if not math.isfinite(days):
            raise OverflowError
        return timedelta(days=days)
    except OverflowError:  # (inf, or beyond what a date can hold)
        raise ConfigError(f"an age is at most 999999999 days; not {_short(text)}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1_000_000:
        raise ConfigError(f"batch_size is the number of content rows deleted per transaction, a whole number from 1 "
                          f"to 1000000 (e.g. 1000); not {_short(batch_size)}")
    return batch_size


def purge(store: Database, *, older_than: Any = None, dry_run: bool = False, batch_size: int = 1000,
          labels: bool = False) -> dict[str, int]:
    """Delete content rows past their expiry (or older than ``older_than``; labels too only with
    ``labels=True``), ``batch_size`` at a time. Returns ``{"content_rows", "traces", "dry_run"}``."""
    batch_size = check_batch_size(batch_size)
    age = parse_age(older_than)
    if not isinstance(labels, bool):
        raise ConfigError(f"labels is True (purge feedback corrections and comments by age too) or False, not {labels!r}")
    store.ensure_schema()
    now = utcnow()
    c = schema.contents
    cond = c.c.expires_at <= now
    if age is not None:
        by_age = c.c.created_at <= now - age
        if not labels:
            by_age = sa.and_(by_age, sa.or_(c.c.kind.is_(None), c.c.kind != LABELS))
        cond = sa.or_(cond, by_age)
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
            audited = audit.enabled(conn)
            ids = [r.id for r in batch]
            kept = [] if labels else _keep_labels(conn, ids, now)
            conn.execute(c.delete().where(c.c.id.in_(ids)))
            stamp = sorted({r.trace_id for r in batch} - touched)
            if stamp:
                conn.execute(schema.traces.update().where(schema.traces.c.trace_id.in_(stamp)).values(content_purged_at=now))
            if audited:  # the purge is itself a chained event: the rows it deleted, the trace rows it stamped
                t = schema.traces
                stamped = [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.trace_id.in_(stamp)))] if stamp else []
                audit.append(conn, "purge", [[audit.CONTENT_ROWS, i, audit.PURGED] for i in ids] + kept
                         + [[t.name, audit.row_key(t.name, r), audit.row_digest(t.name, r)] for r in stamped]
                         + [["purge", "content_rows", str(len(batch))]])
            touched.update(stamp)
            total_rows += len(batch)
        if len(batch) < batch_size:
            break
    return {"content_rows": total_rows, "traces": len(touched), "dry_run": 0}


def _keep_labels(conn: sa.Connection, ids: list[str], now: Any) -> list[list[str]]:
    """Rows about to go that still hold labels beside content (written before labels had rows of
    their own): the labels move to a row of their own. Returns the audit entries of the new rows."""
    c = schema.contents
    mixed = conn.execute(sa.select(c.c.trace_id, c.c.body, c.c.created_at)
                         .where(c.c.id.in_(ids), c.c.kind.is_(None), c.c.body.like(f'%"{LABEL_OWNER}%'))).all()
    entries: list[list[str]] = []
    for r in mixed:
        owners = {o: f for o, f in (loads(r.body) or {}).items() if o.startswith(LABEL_OWNER)}
        if not owners:
            continue
        body = dumps(owners)
        row_id = f"{time.time_ns():016x}{random.getrandbits(48):012x}"
        conn.execute(c.insert(), {"id": row_id, "trace_id": r.trace_id, "body": body, "digest": None, "size": len(body),
                                  "created_at": r.created_at or now, "expires_at": None, "kind": LABELS})
        entries.append([audit.CONTENT_ROWS, row_id, audit.owners_digest(owners)])
    return entries
