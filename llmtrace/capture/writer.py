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

import threading
import time
from collections import deque
from typing import Any

from loguru import logger
from sqlalchemy.exc import DBAPIError, IntegrityError

from llmtrace.capture.recorder import Recorder
from llmtrace.store.checkpoint import Checkpointer
from llmtrace.store.engine import Database
from llmtrace.store.inserts import INSERT_ORDER, Rows, write_rows

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


class _Discard(deque):
    """The queue of a stopped writer: what is submitted after ``Tracer.close()`` is dropped (said
    once), so a handler that outlives its tracer costs nothing and never waits for room."""

    told = False

    def append(self, ev: Any) -> None:
        if not self.told:
            self.told = True
            logger.warning("llmtrace: events submitted after tracer.close() are dropped; create a new Tracer")


class Writer:
    """The bounded queue and the writer thread: ``submit`` on the caller's thread, batches converted
    (``Recorder``) and written (``store.inserts``) on the writer thread or in a caller's ``flush``."""

    def __init__(self, store: Database, recorder: Recorder, *, queue_size: int, on_full: str,
                 block_seconds: float, batch_size: int, interval: float, retries: int,
                 open_span_timeout: float, purge_interval: float = 0.0) -> None:
        self.store = store
        self.recorder = recorder
        self.queue: deque[Any] = deque()
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
        left = self.queue
        self.queue = _Discard()  # (submit reads self.queue on every call: from now on nothing is kept)
        if left:
            with self.counters.lock:
                self.counters.enqueued_dropped += len(left)
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
                from llmtrace.store.retention import purge

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
        for name in (*INSERT_ORDER, "tool_updates", "traces"):
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


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def _first_line(exc: BaseException) -> str:
    text = str(exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
