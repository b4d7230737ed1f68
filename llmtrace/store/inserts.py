"""Batched inserts: a batch's rows per table, written in one transaction at the driver level.

Multi-row inserts on SQLite, ``executemany`` elsewhere, or on SQLite, one JSON document per table
that SQLite unpacks without the GIL; traces are upserted (several roots may share a trace id); with
the audit chain on, the batch's entry is appended in the same transaction.

A batch written again (a retry after a failure that may have committed, a replay from the spill
file) first leaves out the rows already there (``replay=True``), so a record is never stored twice.
A value the driver cannot send (a lone surrogate) is made storable as content is (``make_storable``),
and a batch becomes JSON (``to_json``) to wait in a local file while the database is away.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from llmtrace.store import audit, schema

INSERT_ORDER = ("contents", "spans", "llm_calls", "tool_calls", "chunks", "validations", "feedback")
TABLES = {"contents": schema.contents, "spans": schema.spans, "llm_calls": schema.llm_calls, "tool_calls": schema.tool_calls,
          "chunks": schema.chunks, "validations": schema.validations, "feedback": schema.feedback}
_TOOL_UPDATE = (schema.tool_calls.update().where(schema.tool_calls.c.id == sa.bindparam("b_id"))
                .values(tool_span_id=sa.bindparam("tool_span_id"), status=sa.bindparam("status"),
                        latency_ms=sa.bindparam("latency_ms")))


class Rows:
    """Rows of one batch, per table, plus the updates and trace upserts that follow the inserts."""

    def __init__(self) -> None:
        self.contents: list[dict] = []
        self.pending_content: dict[str, dict[str, bytes]] = {}  # trace id -> owner id -> fields as JSON
        self.pending_bytes = 0  # their size, kept as they are added (a batch's memory is bounded by it)
        self.content_digests: list[list[str]] = []  # [["content", owner, digest]] for the audit chain
        self.spans: list[dict] = []
        self.llm_calls: list[dict] = []
        self.tool_calls: list[dict] = []
        self.chunks: list[dict] = []
        self.validations: list[dict] = []
        self.feedback: list[dict] = []
        self.tool_updates: list[dict] = []
        self.traces: list[dict] = []

    def count(self) -> int:
        return sum(len(v) for k, v in vars(self).items() if isinstance(v, list) and k != "content_digests")

    def estimate_bytes(self) -> int:
        """About what the batch holds in memory: its content, plus a few hundred bytes a row."""
        return sum(c["size"] or 0 for c in self.contents) + ROW_BYTES * self.count()

    def items(self) -> list[tuple[str, list[dict]]]:
        """(name, rows) of every kind of row, in the order they are written."""
        return [(name, getattr(self, name)) for name in _ALL]


ROW_BYTES = 300  # a metadata row as Python dicts hold it, roughly
_ALL = ("contents", "spans", "llm_calls", "tool_calls", "chunks", "validations", "feedback", "tool_updates", "traces")
# What makes a row the same row: its primary key (chunks have none of their own: span and rank).
ROW_KEYS = {"contents": "id", "spans": "span_id", "llm_calls": "span_id", "tool_calls": "id",
            "validations": "id", "feedback": "id"}


_EPOCH = datetime(1970, 1, 1)
_compiled: dict[tuple[str, str], tuple[str, list[str], bool, frozenset[str]]] = {}


def to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


_SECONDS: dict[int, str] = {}  # second -> "YYYY-MM-DD HH:MM:SS."
_MILLIS: dict[int, str] = {}  # millisecond -> "YYYY-MM-DD HH:MM:SS.mmm"
_DIGITS3 = [f"{i:03d}" for i in range(1000)]


def _sqlite_time(ns: int) -> str:
    """Nanoseconds to the text SQLAlchemy writes for DateTime on SQLite ("...SS.ffffff").

    A batch's times fall in a few milliseconds each (a call's spans start and end within one or
    two), so the text up to the millisecond is looked up and only the microseconds appended: a
    third of the cost of formatting each time (13 times per simple chain call). Several seconds
    are live in one batch (a content row expires a month after it is created): both tables keep
    many entries, and start over when full.
    """
    us = ns // 1000
    head = _MILLIS.get(us // 1000)
    if head is None:
        sec = us // 1_000_000
        prefix = _SECONDS.get(sec)
        if prefix is None:
            if len(_SECONDS) >= 256:
                _SECONDS.clear()
            prefix = _SECONDS[sec] = time.strftime("%Y-%m-%d %H:%M:%S.", time.gmtime(sec))
        if len(_MILLIS) >= 4096:
            _MILLIS.clear()
        head = _MILLIS[us // 1000] = prefix + _DIGITS3[us // 1000 % 1000]
    return head + _DIGITS3[us % 1000]


def _insert_sql(conn: sa.Connection, table: sa.Table) -> tuple[str, list[str], bool, frozenset[str]]:
    """The dialect's INSERT text, its parameter order, positional or not, and its time columns."""
    key = (conn.dialect.name + conn.dialect.driver, table.name)
    found = _compiled.get(key)
    if found is None:
        cols = [c.name for c in table.columns if c.autoincrement is not True]
        compiled = table.insert().compile(dialect=conn.dialect, column_keys=cols)
        names = list(compiled.positiontup or ()) if compiled.positional else list(compiled.params)
        times = frozenset(c.name for c in table.columns if isinstance(c.type, sa.DateTime))
        found = _compiled[key] = (str(compiled), names, bool(compiled.positional), times)
    return found


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict], as_json: bool = False) -> None:
    # executemany at the driver level: SQLAlchemy's per-row type processing costs more than the
    # insert itself on SQLite. Rows carry times as wall-clock nanoseconds, converted here (in
    # place: the audit chain digests the rows as stored). ``as_json``: SQLite takes them as one
    # JSON document instead (see _sqlite_json).
    sql, names, positional, times = _insert_sql(conn, table)
    sqlite = conn.dialect.name == "sqlite"
    conv = _sqlite_time if sqlite else to_datetime
    if times:
        for r in rows:
            for n in times:
                v = r.get(n)
                if type(v) is int:
                    r[n] = conv(v)
    if sqlite and as_json and _sqlite_has_json(conn) and _sqlite_json(conn, table, names, rows):
        return
    if sqlite and len(rows) > 1:
        # Columns empty in every row are left out (they are NULL by default): sqlite3 sends each
        # None through its adapter lookup, and a batch's rows share most of their empty columns.
        names = [n for n in names if _filled(rows, n)]
        _sqlite_multirow(conn, table.name, names, _tuples(rows, names))
    elif positional:
        conn.exec_driver_sql(sql, _tuples(rows, names))
    else:
        conn.exec_driver_sql(sql, [{n: r.get(n) for n in names} for r in rows])


def _filled(rows: list[dict], name: str) -> bool:
    """Whether any row has a value in column ``name`` (the column scanned in C, not row by row in Python)."""
    if rows[0].get(name) is not None:
        return True
    try:
        column = list(map(itemgetter(name), rows))
    except KeyError:  # a row without some optional column
        column = [r.get(name) for r in rows]
    return column.count(None) != len(column)


def _tuples(rows: list[dict], names: list[str]) -> list[tuple]:
    getter = itemgetter(*names)
    try:
        return [getter(r) for r in rows]
    except KeyError:  # a row without some optional column
        return [tuple(r.get(n) for n in names) for r in rows]


_SQLITE_MAX_VARS = 30_000  # SQLite >= 3.32 allows 32766 bound parameters per statement
_SIZES = (256, 64, 16, 4, 1)  # rows per multi-row INSERT: every batch is cut into these
_multirow_sql: dict[tuple[str, int], str] = {}


def _sqlite_multirow(conn: sa.Connection, table: str, names: list[str], params: list[tuple]) -> None:
    """Insert ``params`` with multi-row INSERTs of a few fixed sizes.

    sqlite3's executemany releases and retakes the GIL for every row; with the app's thread
    running, each retake is a thread hand-off that costs the app more than the insert itself. One
    multi-row INSERT per chunk takes the GIL hand-off once. The chunk sizes are fixed because
    SQLite compiles a statement in longer than it takes to run it (about 2.7 µs per row of a dozen
    columns, against 1.1 µs to insert it), and sqlite3 reuses a compiled statement only for the
    same text: cut into these sizes, batches of any length share five statements per table (and
    set of filled columns: see _insert).
    Straight on the driver's cursor (in the same transaction): a chunk costs no SQLAlchemy
    execution context.
    """
    quote = conn.dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table)} ({', '.join([quote(n) for n in names])})"
    driver = conn.connection.driver_connection
    assert driver is not None  # (a connection checked out of the pool has one)
    cur = driver.cursor()
    i, n = 0, len(params)
    try:
        for size in _SIZES:
            if n - i < size or size * len(names) > _SQLITE_MAX_VARS:
                continue
            text = _multirow_sql.get((head, size))
            if text is None:
                if len(_multirow_sql) >= 512:  # (one per table, size and set of filled columns)
                    _multirow_sql.clear()
                one = "(" + ",".join("?" * len(names)) + ")"
                text = _multirow_sql[head, size] = head + " VALUES " + ",".join([one] * size)
            while n - i >= size:
                cur.execute(text, tuple(chain.from_iterable(params[i:i + size])))
                i += size
    except sqlite3.Error as exc:  # as SQLAlchemy would raise it (an IntegrityError is then written row by row)
        raise DBAPIError.instance(head, None, exc, sqlite3.Error, hide_parameters=True) from None
    finally:
        cur.close()


# SQLite >= 3.38 has JSON built in (and the ->> operator), unless it was compiled without it:
# None until the first insert asks SQLite itself.
_SQLITE_JSON: bool | None = None if sqlite3.sqlite_version_info >= (3, 38, 0) else False


def _sqlite_has_json(conn: sa.Connection) -> bool:
    global _SQLITE_JSON
    if _SQLITE_JSON is None:
        try:
            _SQLITE_JSON = conn.exec_driver_sql("SELECT value->>0 FROM json_each('[[7]]')").scalar() == 7
        except Exception:
            _SQLITE_JSON = False
    return _SQLITE_JSON


_json_sql: dict[str, str] = {}


def _sqlite_json(conn: sa.Connection, table: sa.Table, names: list[str], rows: list[dict]) -> bool:
    """Insert ``rows`` as one JSON array that SQLite unpacks itself (``json_each``).

    Binding parameters holds the GIL: about 3 us per row of a dozen columns, taken from the
    application's thread. One text parameter, parsed inside sqlite3_step (which runs without the
    GIL), leaves the application alone. Times arrive formatted: SQLite's ``->>`` parses the row's
    JSON again on every use, so an expression that read a column five times (formatting a time in
    SQL) cost more than the formatting. Returns False (nothing written) for rows orjson refuses,
    which then take the binding path.
    """
    try:
        payload = orjson.dumps(_tuples(rows, names), default=_json_time, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except TypeError:  # lone surrogates, integers beyond 64 bits: bound one by one instead
        return False
    sql = _json_sql.get(table.name)
    if sql is None:
        cols = [f"value->>{i}" for i in range(len(names))]
        sql = _json_sql[table.name] = (f"INSERT INTO {table.name} ({', '.join(names)}) "
                                       f"SELECT {', '.join(cols)} FROM json_each(?)")
    conn.exec_driver_sql(sql, (payload.decode(),))
    return True


def _json_time(value: Any) -> str:
    if isinstance(value, datetime):  # a merged trace row: the text SQLAlchemy writes for DateTime
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    raise TypeError(type(value).__name__)


def write_rows(conn: sa.Connection, rows: Rows, audit: bool = False, unobtrusive: bool = False,
               replay: bool = False) -> None:
    """Insert a batch. ``unobtrusive``: the application is running, nobody waits for this batch,
    so on SQLite hold the GIL as little as possible (rows as JSON, unpacked by SQLite without
    it) rather than finish as soon as possible (bound parameters). Not with the audit chain.
    ``replay``: the batch may be stored already (all of it or none: one transaction): rows that
    are there are left out (traces are merged anyway, tool updates are idempotent)."""
    if replay:
        _leave_out_written(conn, rows)
    as_json = unobtrusive and not audit
    for name in INSERT_ORDER:
        batch = getattr(rows, name)
        if batch:
            _insert(conn, TABLES[name], batch, as_json)
    if rows.tool_updates:
        conn.execute(_TOOL_UPDATE, rows.tool_updates)
    traces = _upsert_traces(conn, rows.traces, as_json) if rows.traces else []
    if audit:
        _audit_batch(conn, rows, traces)


def _audit_batch(conn: sa.Connection, rows: Rows, traces: list[dict]) -> None:
    """Chain what this transaction wrote: rows as stored (updated ones read back), content digests."""
    entries = [list(e) for e in rows.content_digests]
    for name in INSERT_ORDER[1:]:
        table = TABLES[name].name
        entries.extend([table, audit.row_key(table, r), audit.row_digest(table, r)] for r in getattr(rows, name))
    if rows.tool_updates:
        t = schema.tool_calls
        ids = [u["b_id"] for u in rows.tool_updates]
        for r in conn.execute(sa.select(t).where(t.c.id.in_(ids))):
            row = dict(r._mapping)
            entries.append([t.name, audit.row_key(t.name, row), audit.row_digest(t.name, row)])
    for row in traces:
        entries.append([schema.traces.name, audit.row_key(schema.traces.name, row), audit.row_digest(schema.traces.name, row)])
    audit.append(conn, "rows", entries)


def _upsert_traces(conn: sa.Connection, new_rows: list[dict], as_json: bool = False) -> list[dict]:
    """A trace may end more than once (several roots sharing one trace id): merge, never duplicate."""
    fresh: list[dict] = []
    rest: list[dict] = []
    for row in new_rows:
        (fresh if row.pop("_fresh", False) else rest).append(row)
    if fresh:  # ids llmtrace generated and ended once: no row can exist yet
        _insert(conn, schema.traces, fresh, as_json)
    if not rest:
        return fresh
    merged: dict[str, dict] = {}
    for row in rest:
        for col in ("started_at", "ended_at"):
            if type(row.get(col)) is int:
                row[col] = to_datetime(row[col])
        merged[row["trace_id"]] = _merge_trace(merged.get(row["trace_id"]), row)
    t = schema.traces
    existing = {r.trace_id: dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.trace_id.in_(list(merged))))}
    inserts = [row for tid, row in merged.items() if tid not in existing]
    updates = [_merge_trace(existing[tid], row) for tid, row in merged.items() if tid in existing]
    if inserts:
        _insert(conn, t, inserts, as_json)
    if updates:
        cols = [c for c in updates[0] if c != "trace_id"]
        stmt = t.update().where(t.c.trace_id == sa.bindparam("b_trace_id")).values(
            {c: sa.bindparam("v_" + c) for c in cols})
        conn.execute(stmt, [{"b_trace_id": u["trace_id"], **{"v_" + c: u[c] for c in cols}} for u in updates])
    return fresh + inserts + updates


def _merge_trace(old: dict | None, new: dict) -> dict:
    if old is None:
        return dict(new)
    out = dict(old)
    for key, value in new.items():
        if value is not None and out.get(key) is None:
            out[key] = value
    if new.get("started_at") and old.get("started_at"):
        out["started_at"] = min(old["started_at"], new["started_at"])
    if new.get("ended_at") and old.get("ended_at"):
        out["ended_at"] = max(old["ended_at"], new["ended_at"])
    if out.get("started_at") and out.get("ended_at"):
        out["latency_ms"] = (out["ended_at"] - out["started_at"]).total_seconds() * 1000
    if "error" in (old.get("status"), new.get("status")):
        out["status"] = "error"
    return out




# -- a batch written again --------------------------------------------------------------------

_IN_CHUNK = 500  # ids per IN (...) list


def _leave_out_written(conn: sa.Connection, rows: Rows) -> None:
    """Drop from ``rows`` what the database has already (and, for the audit chain, its digests)."""
    for name in INSERT_ORDER:
        batch: list[dict] = getattr(rows, name)
        if not batch:
            continue
        table = TABLES[name]
        if name == "chunks":
            spans = sorted({r["span_id"] for r in batch})
            have = {(s, r) for part in _parts(spans) for s, r in conn.execute(
                sa.select(table.c.span_id, table.c.rank).where(table.c.span_id.in_(part)))}
            keep = [r for r in batch if (r["span_id"], r.get("rank")) not in have]
        else:
            col = table.c[ROW_KEYS[name]]
            ids = [r[col.name] for r in batch]
            have = {k for part in _parts(ids) for k in conn.execute(sa.select(col).where(col.in_(part))).scalars()}
            keep = [r for r in batch if r[col.name] not in have]
        if len(keep) == len(batch):
            continue
        if name == "contents" and rows.content_digests:
            owners = {o for r in batch if r["id"] in have for o in content_owners(r.get("body"))}
            rows.content_digests = [e for e in rows.content_digests if e[1] not in owners]
        setattr(rows, name, keep)


def _parts(values: list) -> list[list]:
    return [values[i:i + _IN_CHUNK] for i in range(0, len(values), _IN_CHUNK)]


def content_owners(body: str | None) -> list[str]:
    """The owners (span ids, ``fb:``/``val:`` ids) whose content a content row holds."""
    try:
        found = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return []
    return list(found) if isinstance(found, dict) else []


# -- values the driver cannot send ------------------------------------------------------------

def storable_text(text: str, nul: bool = False) -> str:
    """``text`` as every database can store it: lone surrogates (which no UTF-8 encoder takes)
    become ``\\udXXX`` escapes, as content's JSON writes them; ``nul`` (PostgreSQL, whose text
    cannot hold it): NUL becomes ``\\u0000``. Anything else is returned unchanged."""
    if nul and "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def make_storable(rows: Rows, nul: bool = False) -> int:
    """Make every string of every row storable (``storable_text``), in place; returns how many
    were changed. (A cheap check first: ASCII text, nearly all of it, is passed over at C speed.)"""
    changed = 0
    for _name, batch in rows.items():
        for row in batch:
            for key, value in row.items():
                if type(value) is str and (not value.isascii() or (nul and "\x00" in value)):
                    fixed = storable_text(value, nul)
                    if fixed != value:
                        row[key] = fixed
                        changed += 1
    if changed:
        for entry in rows.content_digests:
            entry[1] = storable_text(entry[1], nul)
    return changed


# -- a batch as JSON (the spill file) ---------------------------------------------------------

_TIME_COLUMNS = {name: frozenset(c.name for c in table.columns if isinstance(c.type, sa.DateTime))
                 for name, table in {**TABLES, "traces": schema.traces}.items()}


def _to_ns(value: Any) -> Any:
    """A time as the rows carry it before insert (wall-clock ns), from what an insert made of it."""
    if type(value) is str:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return (value.replace(tzinfo=None) - _EPOCH) // timedelta(microseconds=1) * 1000
    return value


def to_json(rows: Rows) -> bytes:
    """The batch as one line of JSON (times back to nanoseconds, strings storable)."""
    make_storable(rows)
    doc: dict[str, Any] = {}
    for name, batch in rows.items():
        if batch:
            times = _TIME_COLUMNS.get(name, ())
            doc[name] = [{k: (_to_ns(v) if k in times else v) for k, v in r.items()} for r in batch] if times else batch
    if rows.content_digests:
        doc["content_digests"] = rows.content_digests
    try:
        return orjson.dumps(doc)
    except TypeError:  # an integer beyond 64 bits: the standard library writes it
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def from_json(data: bytes | str) -> Rows:
    """``to_json``'s batch back. (The standard library's parser: orjson reads an integer beyond
    64 bits as a float.)"""
    return rows_from_doc(json.loads(data))


def rows_from_doc(doc: dict[str, Any]) -> Rows:
    """A batch from ``to_json``'s document, already parsed."""
    rows = Rows()
    for name in (*_ALL, "content_digests"):
        found = doc.get(name)
        if found:
            setattr(rows, name, found)
    return rows
