"""The database side of the write path: one thread that writes the backlog, oldest batch first.

Database I/O lives on this thread alone (a flush on SQLite may lend a hand, see ``help``), so a
database that hangs holds this thread, never the application's, the converting thread or a flush
past its timeout. Each try is bounded (``Database.writing``: SQLite's busy timeout, PostgreSQL's
statement and lock timeouts; connect and socket timeouts on the engine). A failure is one of:

- the database cannot take writes now (``store.engine.transient``: refused, cut, locked, read-only,
  timed out): the batch waits and is tried again with capped backoff, as long as it takes; memory
  stays bounded because the converting thread spills what does not fit (``Backlog``);
- something in the batch: values made storable (lone surrogates escaped, as content is), else the
  batch is written row by row and a row the database refuses on its own is set aside
  (quarantined, with why; counted in ``health()``), so one bad value never takes other records;
- neither is clear: a few tries, then the database is asked whether it answers at all.

A try that failed may have committed (a connection cut during COMMIT): every later try of that batch
leaves out rows already stored, so nothing is stored twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

from loguru import logger

from llmtrace.capture.backlog import Backlog, Batch
from llmtrace.capture.loss import LossReporter
from llmtrace.capture.spill import quarantine
from llmtrace.store.checkpoint import Checkpointer
from llmtrace.store.engine import BAD, TRANSIENT, Database, transient
from llmtrace.store.inserts import Rows, content_owners, make_storable, storable_text, write_rows

ATTEMPT_S = 5.0  # one try of the writing thread waits at most this long for a lock
RETRY_FIRST_S = 0.05
RETRY_CAP_S = 2.0  # backoff between tries while the database is away: capped, so it is back in use soon
SCAN_EVERY_S = 30.0  # the spill directory is looked at again this often (when idle)
DONE, LATER = True, False


class Counters:
    """What the write path did, for ``Tracer.health()``: written, dropped, failed, quarantined, ..."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enqueued_dropped = 0
        self.rows_written = 0
        self.spans_written = 0
        self.llm_calls_written = 0
        self.rows_failed = 0  # rows lost to write failures (quarantined: set aside with why)
        self.write_errors = 0
        self.abandoned_spans = 0
        self.problems = 0
        self.unsaved = 0  # rows that could be neither written nor spilled (at close)
        self.quarantine_reasons: Tally[str] = Tally()
        self.last_error: str | None = None

    def losses(self) -> int:
        """Everything lost so far: a flush that saw this grow says False."""
        return self.enqueued_dropped + self.rows_failed + self.unsaved


class Sink:
    def __init__(self, store: Database, backlog: Backlog, counters: Counters, *, audit: bool, retries: int,
                 loss: LossReporter, problem: Callable[[str, Exception], None], purge_interval: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.backlog = backlog
        self.counters = counters
        self.audit = audit
        self.retries = retries
        self.loss = loss
        self.problem = problem
        self.purge_interval = purge_interval
        self.clock = clock
        self.io_lock = threading.Lock()  # whoever writes (this thread, or a flush helping on SQLite)
        self.waiters = 0  # flushes waiting: write as soon as possible (bound parameters) rather than unobtrusively
        self.stop_event = threading.Event()
        self.kick = threading.Event()  # a flush is waiting: try again now rather than after the backoff
        self.thread: threading.Thread | None = None
        self.checkpointer = Checkpointer(store, problem) if Checkpointer.wanted(store) else None
        self.failing_since: float | None = None
        self._connection: Any = None  # the DBAPI connection of the try in progress (to interrupt it)
        self._last_purge = self._last_scan = clock()

    def start(self) -> None:
        self.stop_event = threading.Event()
        self.kick = threading.Event()
        self.thread = threading.Thread(target=self._run, name="llmtrace-sink", daemon=True)
        self.thread.start()
        if self.checkpointer is not None:
            self.checkpointer.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float) -> None:
        self.stop_event.set()
        self.kick.set()
        with self.backlog.cond:
            self.backlog.cond.notify_all()
        try:
            self.store.interrupt(self._connection)  # (SQLite: a try waiting for a lock returns now)
        except Exception as exc:  # noqa: BLE001 - reported; stopping goes on
            self.problem("interrupt", exc)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(max(0.0, timeout))
        if self.checkpointer is not None:
            self.checkpointer.stop(timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self.backlog.find_foreign()
        delay = 0.0
        while not self.stop_event.is_set():
            if delay:
                self.kick.wait(delay)
                self.kick.clear()
            else:
                with self.backlog.cond:
                    self.backlog.cond.wait_for(lambda: self.backlog.has_work() or self.stop_event.is_set(),
                                               self._idle_wait())
            if self.stop_event.is_set():
                return
            try:
                with self.io_lock:
                    ok = self.write(None)
                delay = 0.0 if ok else min(RETRY_CAP_S, RETRY_FIRST_S * 2 ** min(self._failures(), 10))
                if ok:
                    self._housekeeping()
            except Exception as exc:  # never let the writing thread die: count, report, go on
                self.problem("sink", exc)
                delay = RETRY_CAP_S

    def _idle_wait(self) -> float:
        return min(1.0, self.purge_interval) if self.purge_interval else 1.0

    def _failures(self) -> int:
        taken = self.backlog.taken
        return taken.failures if taken is not None else 1

    def _housekeeping(self) -> None:
        if self.clock() - self._last_scan >= SCAN_EVERY_S and not self.backlog.has_work():
            self._last_scan = self.clock()  # (spill files another process left since: written too)
            if self.backlog.find_foreign():
                return
        if self.purge_interval and self.clock() - self._last_purge >= self.purge_interval:
            self._last_purge = self.clock()
            try:
                from llmtrace.store.retention import purge

                done = purge(self.store)
                if done["content_rows"]:
                    logger.info("llmtrace purged {} expired content row(s) of {} trace(s)", done["content_rows"],
                                done["traces"])
            except Exception as exc:  # noqa: BLE001 - counted; the purge runs again later
                self.problem("purge", exc)

    # -- writing ------------------------------------------------------------------------------

    def write(self, deadline: float | None, until_seq: int | None = None) -> bool:
        """Write batches, oldest first, until none is left (or ``until_seq`` is written). False
        when a try failed or ``deadline`` came: the batch stays first. Holds ``io_lock``."""
        while not self.stop_event.is_set():
            if until_seq is not None and self.backlog.covered(until_seq):
                return True
            batch = self.backlog.take()
            if batch is None:
                return True
            if self.attempt(batch, deadline) is LATER:
                return False
            self.backlog.done(batch)
        return False

    def attempt(self, batch: Batch, deadline: float | None) -> bool:
        """One try of ``batch``: DONE (written, or what failed alone set aside) or LATER."""
        while True:
            budget = ATTEMPT_S if deadline is None else min(ATTEMPT_S, deadline - self.clock())
            if budget <= 0:
                return LATER
            try:
                self._write(batch.rows, budget, batch.replay, unobtrusive=deadline is None and not self.waiters)
            except Exception as exc:
                self._note_error(exc)
                kind = transient(exc)
                if kind == BAD:  # a statement refused the batch: rolled back, nothing committed
                    if make_storable(batch.rows, nul=self.store.dialect == "postgresql"):
                        continue  # (lone surrogates escaped: at once again)
                    return self._row_by_row(batch, deadline)
                batch.replay = True  # (it may have failed at COMMIT, after the database had it)
                batch.failures += 1
                if kind != TRANSIENT and batch.failures > self.retries and self._answers():
                    return self._row_by_row(batch, deadline)
                self._failing()
                return LATER
            except BaseException:  # interrupted (Ctrl-C in a flush that helped): tried again later
                batch.replay = True
                raise
            self._recovered()
            return DONE

    def _write(self, rows: Rows, budget: float, replay: bool, unobtrusive: bool) -> None:
        self.store.ensure_schema(budget)
        with self.store.writing(budget) as conn:
            self._connection = conn.connection.dbapi_connection
            try:
                write_rows(conn, rows, self.audit, unobtrusive=unobtrusive, replay=replay)
            finally:
                self._connection = None
        left = rows.count()  # (a replay leaves out what was stored already)
        c = self.counters
        with c.lock:
            c.rows_written += left
            c.spans_written += len(rows.spans)
            c.llm_calls_written += len(rows.llm_calls)
        if self.checkpointer is not None and left:  # (content bodies, plus a rough size per row and its index entries)
            self.checkpointer.wrote(sum(r["size"] or 0 for r in rows.contents) + 400 * left)

    def _row_by_row(self, batch: Batch, deadline: float | None) -> bool:
        """Each row in a transaction of its own; a row the database refuses alone is set aside.
        LATER (the rest kept as the batch) when the database stops answering or time runs out."""
        rows = batch.rows
        digests: dict[str, list[list[str]]] = {}
        for entry in rows.content_digests:
            digests.setdefault(entry[1], []).append(entry)
        pending = [(name, row) for name, batch_rows in rows.items() for row in batch_rows]
        for i, (name, row) in enumerate(pending):
            single = Rows()
            getattr(single, name).append(row)
            if name == "contents" and digests:
                single.content_digests = [e for o in content_owners(row.get("body")) for e in digests.get(o, ())]
            budget = ATTEMPT_S if deadline is None else min(ATTEMPT_S, deadline - self.clock())
            try:
                if budget <= 0:
                    raise TimeoutError("the flush's time ran out")
                self._write(single, budget, batch.replay, unobtrusive=False)
                continue
            except Exception as exc:
                self._note_error(exc)
                kind = BAD if not isinstance(exc, TimeoutError) else TRANSIENT
                kind = transient(exc) if kind == BAD else kind
                if kind == TRANSIENT or (kind != BAD and not self._answers()):
                    batch.rows = _regroup(pending[i:], rows.content_digests)  # the rest waits
                    batch.replay = True
                    batch.failures += 1
                    self._failing()
                    return LATER
                self._quarantine(name, row, exc)
        self._recovered()
        return DONE

    def _quarantine(self, table: str, row: dict, exc: Exception) -> None:
        why = f"{type(exc).__name__}: {_first_line(exc)}"
        c = self.counters
        with c.lock:
            c.rows_failed += 1
            c.quarantine_reasons[why[:200]] += 1
            total = c.rows_failed
        where = "not saved"
        if self.backlog.directory is not None:
            try:
                where = f"set aside in {quarantine(self.backlog.directory, table, _plain(row), why)}"
            except Exception as save_exc:  # noqa: BLE001 - said below; the row is lost
                where = f"not saved ({type(save_exc).__name__})"
        self.loss.report("quarantined", f"llmtrace: {total} row(s) could not be stored on their own and were "
                                        f"quarantined ({table}: {why}); other records were written. Last one {where}; "
                                        "see tracer.health()['quarantine_reasons']")

    def _answers(self) -> bool:
        """Whether the database answers at all (then a failing batch is to blame, not the database)."""
        try:
            with self.store.writing(min(ATTEMPT_S, 2.0)) as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - not answering is the answer
            return False

    def _failing(self) -> None:
        if self.failing_since is None:
            self.failing_since = self.clock()

    def _recovered(self) -> None:
        if self.failing_since is not None:
            logger.info("llmtrace: the database takes writes again after {:.1f}s", self.clock() - self.failing_since)
            self.failing_since = None

    def _note_error(self, exc: Exception) -> None:
        c = self.counters
        with c.lock:
            c.write_errors += 1
            c.last_error = f"{type(exc).__name__}: {_first_line(exc)}"

    # -- a flush lends a hand -----------------------------------------------------------------

    def help(self, seq: int, deadline: float | None) -> bool:
        """Make batch ``seq`` written by ``deadline``: on SQLite (local, its lock wait bounded by
        the busy timeout) write here if no one else is writing, which spares the hand-off to the
        writing thread; otherwise wait for it. Never past ``deadline``."""
        backlog = self.backlog
        if backlog.covered(seq):
            return True
        if self.store.dialect == "sqlite" and self.io_lock.acquire(blocking=False):
            try:
                if self.write(deadline, until_seq=seq) and backlog.covered(seq):
                    return True
            finally:
                self.io_lock.release()
        with backlog.cond:
            backlog.cond.notify_all()  # (the writing thread: there is work)
        self.kick.set()
        remaining = None if deadline is None else max(0.0, deadline - self.clock())
        return backlog.wait_done(seq, remaining)


def _regroup(pending: list[tuple[str, dict]], digests: list[list[str]]) -> Rows:
    rows = Rows()
    for name, row in pending:
        getattr(rows, name).append(row)
    rows.content_digests = digests
    return rows


def _plain(row: dict) -> dict:
    return {k: (storable_text(v) if isinstance(v, str) else v) for k, v in row.items()}


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
