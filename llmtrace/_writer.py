"""The write path: a bounded queue the callbacks append to, and one writer thread per process.

Callbacks only append a tuple (``collections.deque.append`` is atomic and costs tens of
nanoseconds); the writer wakes on a timer or when the queue fills up; it converts the events to
rows (``Recorder``) and inserts them in one transaction per batch: at the driver level (multi-row
inserts on SQLite, ``executemany`` elsewhere), or on SQLite, as one JSON document per table that
SQLite unpacks without the GIL. ``flush`` does the same work on the thread that calls it, which
would otherwise only wait (see ``Writer.flush``). A database error is retried with backoff, then
the rows are counted as failed and reported; nothing is ever raised into the caller.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from datetime import datetime, timedelta
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson
import sqlalchemy as sa
from loguru import logger
from sqlalchemy.exc import DBAPIError, IntegrityError

from llmtrace import _audit as A
from llmtrace import _schema as S
from llmtrace._checkpoint import Checkpointer
from llmtrace._recorder import Recorder, Rows
from llmtrace._store import Store

_INSERT_ORDER = ("contents", "spans", "llm_calls", "tool_calls", "chunks", "validations", "feedback")
_TABLES = {"contents": S.contents, "spans": S.spans, "llm_calls": S.llm_calls, "tool_calls": S.tool_calls,
           "chunks": S.chunks, "validations": S.validations, "feedback": S.feedback}
_TOOL_UPDATE = (S.tool_calls.update().where(S.tool_calls.c.id == sa.bindparam("b_id"))
                .values(tool_span_id=sa.bindparam("tool_span_id"), status=sa.bindparam("status"),
                        latency_ms=sa.bindparam("latency_ms")))
_SWEEP_EVERY_S = 30.0  # open-span expiry and the periodic purge are checked this often


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enqueued_dropped = 0
        self.rows_written = 0
        self.spans_written = 0
        self.llm_calls_written = 0
        self.rows_failed = 0
        self.write_errors = 0
        self.abandoned_spans = 0
        self.problems = 0
        self.last_error: str | None = None


class Writer:
    def __init__(self, store: Store, recorder: Recorder, *, queue_size: int, on_full: str,
                 block_seconds: float, batch_size: int, interval: float, retries: int,
                 open_span_timeout: float, purge_interval: float = 0.0) -> None:
        self.store = store
        self.recorder = recorder
        self.queue: deque = deque()
        self.max = queue_size
        self.wake_at = max(1, min(batch_size, queue_size // 2))
        self.block_seconds = block_seconds if on_full == "block" else 0.0
        self.batch_size = batch_size
        self.interval = interval
        self.retries = retries
        self.open_span_timeout_ns = int(open_span_timeout * 1e9)
        self.counters = Counters()
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()  # one thread converts and writes at a time (the Recorder has no locks)
        self.drainer: int | None = None  # the thread holding ``lock``
        self.unwritten: deque[Rows] = deque()  # batches a flush gave up retrying: the writer goes on
        self.checkpointer = Checkpointer(store, self.problem) if Checkpointer.wanted(store) else None
        self._last_sweep = time.monotonic()
        self.purge_interval = purge_interval
        self.audit = recorder.audit
        self._last_purge = time.monotonic()

    # -- caller side --------------------------------------------------------------------------

    def submit(self, ev: tuple) -> None:
        q = self.queue
        n = len(q)
        if n >= self.wake_at:
            if n >= self.max and not self._wait_for_room():
                self._dropped()
                return
            if not self.wake.is_set():
                self.wake.set()
        q.append(ev)

    def _dropped(self) -> None:
        c = self.counters
        with c.lock:
            c.enqueued_dropped += 1
            n = c.enqueued_dropped
        if n in (1, 100, 10_000) or n % 100_000 == 0:
            logger.warning("llmtrace queue full ({} events): {} events dropped so far; see tracer.health()",
                           self.max, n)

    def _wait_for_room(self) -> bool:
        self.wake.set()
        deadline = time.monotonic() + self.block_seconds
        while time.monotonic() < deadline:
            time.sleep(0.001)
            if len(self.queue) < self.max:
                return True
        return len(self.queue) < self.max

    def start(self) -> None:
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="llmtrace-writer", daemon=True)
        self.thread.start()
        if self.checkpointer is not None:
            self.checkpointer.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def flush(self, timeout: float | None) -> bool:
        """Write everything submitted before this call; False if ``timeout`` ran out first.

        The calling thread does the work itself instead of waking the writer and waiting: it
        would only wait, the events it converts are still in its core's cache (the writer thread,
        on the other core, reads them from memory: two thirds more time on a 2-core machine), and
        no thread hand-off is paid. A batch whose write fails past the deadline is left to the
        writer thread, which retries it before anything newer.
        """
        if self.drainer == threading.get_ident():
            return False  # called from inside a batch (an alert sink, a processor): it cannot wait for itself
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        try:
            return self._drain_held(len(self.queue), deadline, unobtrusive=False)
        except Exception as exc:  # never raised into the caller
            self.problem("flush", exc)
            return False
        finally:
            self.lock.release()

    def stop(self, timeout: float | None) -> bool:
        ok = self.flush(timeout)
        if not ok:
            logger.warning("llmtrace: stopping with {} event(s) and {} batch(es) not written within {}s; last error: {}",
                           len(self.queue), len(self.unwritten), timeout, self.counters.last_error)
        self.stopping = True
        self.wake.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        if self.checkpointer is not None:
            self.checkpointer.stop(timeout)
        return ok

    # -- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                with self.lock:
                    self._drain_held(None, None, unobtrusive=True)
            except Exception as exc:  # never let the writer die: count, report, go on
                self.problem("writer", exc)

    def _drain_held(self, limit: int | None, deadline: float | None, unobtrusive: bool) -> bool:
        """``_drain`` by the thread holding ``lock``, which a flush from inside the batch must know."""
        self.drainer = threading.get_ident()
        try:
            return self._drain(limit, deadline, unobtrusive)
        finally:
            self.drainer = None

    def _drain(self, limit: int | None, deadline: float | None, unobtrusive: bool) -> bool:
        """Convert and write queued events (at most ``limit``; all if None), batch by batch.
        False if a write was left to the writer thread or ``deadline`` passed. Holds ``lock``."""
        while self.unwritten:  # older than anything in the queue: first
            if not self._write(self.unwritten[0], deadline, unobtrusive):
                return False
            self.unwritten.popleft()
        q = self.queue
        left = (1 << 62) if limit is None else limit
        while left > 0 and q:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            rows = Rows()
            apply, take = self.recorder.apply, min(self.batch_size, left)
            try:
                n = 0
                while q and n < take:
                    ev = q.popleft()
                    n += 1
                    try:
                        apply(ev, rows)
                    except Exception as exc:
                        self.problem("record", exc)
                left -= n
                if unobtrusive:  # (the writer thread's own round: sweeps and purges never run in a caller's flush)
                    self._maybe_sweep(rows)
                try:
                    self.recorder.finish(rows)
                except Exception as exc:
                    self.problem("content", exc)
                if rows.count() and not self._write(rows, deadline, unobtrusive):
                    self.unwritten.append(rows)
                    return False
            except BaseException:  # interrupted (Ctrl-C in a flush): what was converted is kept
                self._keep_unwritten(rows)
                raise
            if self.recorder.alerts is not None and self.recorder.alerts.pending:
                self.recorder.alerts.deliver()
        if unobtrusive:
            self._maybe_sweep(None)
        return left <= 0 or not q

    def _keep_unwritten(self, rows: Rows) -> None:
        try:
            self.recorder.finish(rows)  # (content still pending when the interruption came)
        except Exception as exc:
            self.problem("content", exc)
        if rows.count():
            self.unwritten.append(rows)

    def _maybe_sweep(self, rows: Rows | None) -> None:
        now = time.monotonic()
        if now - self._last_sweep < _SWEEP_EVERY_S:
            return
        self._last_sweep = now
        own = rows or Rows()
        n = self.recorder.expire_open(time.perf_counter_ns(), self.open_span_timeout_ns, own)
        if n:
            self.counters.abandoned_spans += n
            logger.warning("llmtrace closed {} span(s) open longer than {:.0f}s as abandoned", n,
                           self.open_span_timeout_ns / 1e9)
        if self.purge_interval and now - self._last_purge >= self.purge_interval:
            self._last_purge = now
            try:
                from llmtrace._retention import purge

                done = purge(self.store)
                if done["content_rows"]:
                    logger.info("llmtrace purged {} expired content row(s) of {} trace(s)", done["content_rows"], done["traces"])
            except Exception as exc:
                self.problem("purge", exc)
        if rows is None:
            self.recorder.finish(own)
            if own.count() and not self._write(own, None, True):
                self.unwritten.append(own)

    def _write(self, rows: Rows, deadline: float | None, unobtrusive: bool) -> bool:
        """Write one batch, retrying with backoff. True when it is done with the batch (written,
        or counted as failed); False when the next retry would pass ``deadline``."""
        total = rows.count()
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                self.store.ensure_schema()
                with self.store.engine.begin() as conn:
                    write_rows(conn, rows, self.audit, unobtrusive=unobtrusive)
                self._written(rows, total)
                return True
            except IntegrityError as exc:
                # A bad row (e.g. a duplicate id) must not take the whole batch with it.
                self._note_error(exc)
                self._write_one_by_one(rows)
                return True
            except Exception as exc:
                self._note_error(exc)
                if attempt < self.retries:
                    if deadline is not None and time.monotonic() + delay > deadline:
                        return False
                    time.sleep(delay)
                    delay *= 4
        with self.counters.lock:
            self.counters.rows_failed += total
        logger.error("llmtrace could not write {} rows after {} attempts: {}", total, self.retries + 1,
                     self.counters.last_error)
        return True

    def _write_one_by_one(self, rows: Rows) -> None:
        for name in (*_INSERT_ORDER, "tool_updates", "traces"):
            for row in getattr(rows, name):
                single = Rows()
                getattr(single, name).append(row)
                try:
                    with self.store.engine.begin() as conn:
                        write_rows(conn, single, self.audit)
                    self._written(single, 1)
                except Exception as exc:
                    self._note_error(exc)
                    with self.counters.lock:
                        self.counters.rows_failed += 1

    def _written(self, rows: Rows, total: int) -> None:
        with self.counters.lock:
            self.counters.rows_written += total
            self.counters.spans_written += len(rows.spans)
            self.counters.llm_calls_written += len(rows.llm_calls)
        if self.checkpointer is not None:  # (content bodies, plus a rough size per row and its index entries)
            self.checkpointer.wrote(sum(c["size"] or 0 for c in rows.contents) + 400 * total)

    def _note_error(self, exc: Exception) -> None:
        with self.counters.lock:
            self.counters.write_errors += 1
            self.counters.last_error = f"{type(exc).__name__}: {_first_line(exc)}"

    def problem(self, where: str, exc: Exception) -> None:
        with self.counters.lock:
            self.counters.problems += 1
            first = self.counters.problems <= 20
        if first:  # type and place only: an exception's message or locals may carry content
            logger.warning("llmtrace: {} failed and was skipped: {} at {}", where, type(exc).__name__, _where(exc))

    def health(self) -> dict[str, Any]:
        c = self.counters
        with c.lock:
            return {
                "queue_depth": len(self.queue), "queue_size": self.max, "writer_alive": self.alive(),
                "records_written": c.rows_written, "spans_written": c.spans_written,
                "llm_calls_written": c.llm_calls_written, "dropped": c.enqueued_dropped,
                "failed": c.rows_failed, "write_errors": c.write_errors, "processing_errors": c.problems,
                "abandoned_spans": c.abandoned_spans, "open_spans": self.recorder.open_spans(),
                "checkpoints": self.checkpointer.runs if self.checkpointer is not None else None,
                "last_error": c.last_error,
            }


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
        names = list(compiled.positiontup) if compiled.positional else list(compiled.params)
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
    cur = conn.connection.driver_connection.cursor()
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


def write_rows(conn: sa.Connection, rows: Rows, audit: bool = False, unobtrusive: bool = False) -> None:
    """Insert a batch. ``unobtrusive``: the application is running, nobody waits for this batch,
    so on SQLite hold the GIL as little as possible (rows as JSON, unpacked by SQLite without
    it) rather than finish as soon as possible (bound parameters). Not with the audit chain."""
    as_json = unobtrusive and not audit
    for name in _INSERT_ORDER:
        batch = getattr(rows, name)
        if batch:
            _insert(conn, _TABLES[name], batch, as_json)
    if rows.tool_updates:
        conn.execute(_TOOL_UPDATE, rows.tool_updates)
    traces = _upsert_traces(conn, rows.traces, as_json) if rows.traces else []
    if audit:
        _audit_batch(conn, rows, traces)


def _audit_batch(conn: sa.Connection, rows: Rows, traces: list[dict]) -> None:
    """Chain what this transaction wrote: rows as stored (updated ones read back), content digests."""
    entries = [list(e) for e in rows.content_digests]
    for name in _INSERT_ORDER[1:]:
        table = _TABLES[name].name
        entries.extend([table, A.row_key(table, r), A.row_digest(table, r)] for r in getattr(rows, name))
    if rows.tool_updates:
        t = S.tool_calls
        ids = [u["b_id"] for u in rows.tool_updates]
        for r in conn.execute(sa.select(t).where(t.c.id.in_(ids))):
            row = dict(r._mapping)
            entries.append([t.name, A.row_key(t.name, row), A.row_digest(t.name, row)])
    for row in traces:
        entries.append([S.traces.name, A.row_key(S.traces.name, row), A.row_digest(S.traces.name, row)])
    A.append(conn, "rows", entries)


def _upsert_traces(conn: sa.Connection, new_rows: list[dict], as_json: bool = False) -> list[dict]:
    """A trace may end more than once (several roots sharing one trace id): merge, never duplicate."""
    fresh: list[dict] = []
    rest: list[dict] = []
    for row in new_rows:
        (fresh if row.pop("_fresh", False) else rest).append(row)
    if fresh:  # ids llmtrace generated and ended once: no row can exist yet
        _insert(conn, S.traces, fresh, as_json)
    if not rest:
        return fresh
    merged: dict[str, dict] = {}
    for row in rest:
        for col in ("started_at", "ended_at"):
            if type(row.get(col)) is int:
                row[col] = to_datetime(row[col])
        merged[row["trace_id"]] = _merge_trace(merged.get(row["trace_id"]), row)
    t = S.traces
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


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def _first_line(exc: BaseException) -> str:
    text = str(exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
