"""The write path: a bounded queue the callbacks append to, a converting thread, a writing thread.

Callbacks only append a tuple (``collections.deque.append`` is atomic and costs tens of
nanoseconds). The converting thread (``llmtrace-writer``) wakes on a timer or when the queue fills
up and turns events into rows (``Recorder``), batch by batch, into the ``Backlog``; the writing
thread (``llmtrace-sink``, see ``sink``) writes the backlog's batches in order, one transaction
each, and alone waits for the database. So conversion goes on while the database is away, and
what waits has a known size: the queue's bytes (feedback and validations say theirs when recorded)
plus the converted rows' are bounded by ``queue_max_bytes``; past it the oldest batches are spilled
to a local file and written when the database is back (by this process or the next Tracer on the
same URL). Past ``queue_size`` events or the byte bound, ``on_queue_full`` says what a recording
thread does: ``block`` (at most ``queue_block_seconds`` per thread and call, in all) then drop, or
``drop``; drops are counted and said (``loss``).

``flush`` converts on the thread that calls it, which would otherwise only wait (the events are in
its core's cache; no hand-off), and on SQLite writes there too when the writing thread is idle; it
never waits past its timeout, and says False when anything it covers is unwritten or was lost.
``stop`` (close, exit) waits a bounded time, then spills what is left and says so on stderr.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llmtrace.capture import events
from llmtrace.capture.backlog import Backlog
from llmtrace.capture.loss import LossReporter
from llmtrace.capture.recorder import Recorder
from llmtrace.capture.sink import Counters, Sink
from llmtrace.capture.spill import spill_path
from llmtrace.store.checkpoint import Checkpointer
from llmtrace.store.engine import Database
from llmtrace.store.inserts import Rows

__all__ = ["Counters", "Writer"]

_SWEEP_EVERY_S = 30.0  # open-span expiry is checked this often
_SIZED = frozenset((events.FEEDBACK, events.VALIDATION))  # events that carry their size (in characters) as a 5th item
_MB = 1 << 20


class _Discard(deque):
    """The queue of a stopped writer: what is submitted after ``Tracer.close()`` is dropped (said
    once), so a handler that outlives its tracer costs nothing and never waits for room."""

    told = False

    def append(self, ev: Any) -> None:
        if not self.told:
            self.told = True
            from loguru import logger

            logger.warning("llmtrace: events submitted after tracer.close() are dropped; create a new Tracer")


class Writer:
    """The bounded queue, the converting thread and the writing thread (``sink``): ``submit`` on
    the caller's thread; batches converted (``Recorder``) on the converting thread or in a caller's
    ``flush``; written by the sink."""

    def __init__(self, store: Database, recorder: Recorder, *, queue_size: int, on_full: str,
                 block_seconds: float, batch_size: int, interval: float, retries: int,
                 open_span_timeout: float, purge_interval: float = 0.0, max_bytes: int = 64 * _MB,
                 spill_dir: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.recorder = recorder
        self.queue: deque[Any] = deque()
        self.max = queue_size
        self.max_bytes = max_bytes
        self.wake_at = max(1, min(batch_size, queue_size // 2))
        self.policy = on_full
        self.block_seconds = block_seconds if on_full == "block" else 0.0
        self.batch_size = batch_size
        self.batch_bytes = max(_MB, max_bytes // 8)  # a batch is cut once its content is this big
        self.interval = interval
        self.open_span_timeout_ns = int(open_span_timeout * 1e9)
        self.clock = clock
        self.counters = Counters()
        self.loss = LossReporter(clock=clock)  # records not written: said on stderr, rate-limited
        self.log = LossReporter(clock=clock, warn=False)  # problems that lose nothing: log lines, rate-limited
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()  # one thread converts at a time (the Recorder has no locks)
        self.drainer: int | None = None  # the thread holding ``lock``
        self.queued_bytes = 0  # sizes the queued events said (feedback, validations)
        self.full = False  # queued + converted bytes past max_bytes: recording threads apply the policy
        self._bytes_lock = threading.Lock()
        self._waiters_lock = threading.Lock()
        self._blocked = threading.local()  # per recording thread: what is left of its block budget
        url = store.engine.url
        in_memory = store.dialect == "sqlite" and (url.database or "") in ("", ":memory:")
        directory = None if in_memory else spill_path(spill_dir, store.display_url)
        self.backlog = Backlog(directory, store.display_url)
        self.backlog.find_foreign()  # (a directory listing, usually of nothing: spill files a flush must cover)
        self.sink = Sink(store, self.backlog, self.counters, audit=recorder.audit, retries=retries, loss=self.loss,
                         problem=self.problem, purge_interval=purge_interval, clock=clock)
        self._last_sweep = clock()
        self._flushed_losses = 0
        self._spill_paused_until = 0.0

    @property
    def checkpointer(self) -> Checkpointer | None:
        return self.sink.checkpointer

    # -- caller side --------------------------------------------------------------------------

    def submit(self, ev: tuple) -> None:
        q = self.queue
        n = len(q)
        if n >= self.wake_at or self.full:
            if (n >= self.max or self.full) and not self._wait_for_room():
                self._dropped()
                return
            if not self.wake.is_set():
                self.wake.set()
        q.append(ev)

    def submit_sized(self, ev: tuple, nbytes: int) -> None:
        """``submit`` an event whose size is known (feedback, validations: ``ev[4]``), counted
        against ``max_bytes`` while it waits."""
        q = self.queue
        if (len(q) >= self.max or self.full) and not self._wait_for_room():
            self._dropped()
            return
        with self._bytes_lock:
            self.queued_bytes += nbytes
            self._update_full()
        q.append(ev)
        if (len(q) >= self.wake_at or self.queued_bytes >= self.batch_bytes) and not self.wake.is_set():
            self.wake.set()

    def _update_full(self) -> None:
        self.full = self.queued_bytes + self.backlog.memory_bytes >= self.max_bytes

    def _room(self) -> bool:
        self._update_full()
        return len(self.queue) < self.max and not self.full

    def _wait_for_room(self) -> bool:
        """``block``: wait for room, at most what is left of this thread's budget. The budget is
        ``block_seconds`` and fills again at ``block_seconds`` a second, so one call (however many
        events it records) waits ``block_seconds`` at most in all, not per event."""
        if self._room():
            return True
        if not self.block_seconds:
            return False
        self.wake.set()
        state = self._blocked
        now = time.monotonic()
        budget = min(self.block_seconds,
                     getattr(state, "budget", self.block_seconds) + (now - getattr(state, "at", now)) * self.block_seconds)
        deadline = now + budget
        ok = False
        while True:
            if self._room():
                ok = True
                break
            t = time.monotonic()
            if t >= deadline:
                break
            time.sleep(min(0.001, deadline - t))
        end = time.monotonic()
        state.budget, state.at = max(0.0, budget - (end - now)), end
        return ok

    def _dropped(self) -> None:
        c = self.counters
        with c.lock:
            c.enqueued_dropped += 1
            n = c.enqueued_dropped
        self.loss.report("dropped", f"llmtrace: {n:,} record(s) dropped so far: the queue was full (queue_size="
                                    f"{self.max:,}, queue_max_bytes={self.max_bytes / _MB:.0f} MB, "
                                    f"on_queue_full={self.policy!r}); see tracer.health()")

    def start(self) -> None:
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="llmtrace-writer", daemon=True)
        self.thread.start()
        if not self.sink.alive():
            self.sink.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def flush(self, timeout: float | None) -> bool:
        """Write everything submitted before this call; False if ``timeout`` ran out first, or if
        anything was lost (dropped, set aside) since the previous flush.

        The calling thread converts the events itself instead of waiting for the converting thread
        (they are still in its core's cache, and no hand-off is paid), and on SQLite writes them
        too when the writing thread is idle. Database waits end with the timeout: a flush never
        waits for the database past it (the writing thread goes on trying).
        """
        if self.drainer == threading.get_ident():
            return False  # called from inside a batch (an alert sink, a processor): it cannot wait for itself
        deadline = None if timeout is None else self.clock() + timeout
        with self._waiters_lock:
            self.sink.waiters += 1
        try:
            if not self.lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
                return False
            try:
                self._drain_held(self.queue, len(self.queue), unobtrusive=False)
                mark = self.backlog.last_seq()
            except Exception as exc:  # never raised into the caller
                self.problem("flush", exc)
                return False
            finally:
                self.lock.release()
            try:
                ok = self.sink.help(mark, deadline)
            except Exception as exc:
                self.problem("flush", exc)
                ok = False
        finally:
            with self._waiters_lock:
                self.sink.waiters -= 1
        losses = self.counters.losses()
        if losses != self._flushed_losses:
            self._flushed_losses = losses
            return False
        return ok

    def stop(self, timeout: float | None) -> bool:
        """Write what is queued within ``timeout``, then spill what is left (said on stderr), stop."""
        start = self.clock()
        ok = self.flush(timeout)
        self.stopping = True
        left = self.queue
        self.queue = _Discard()  # (submit reads self.queue on every call: from now on nothing is kept)
        self.wake.set()
        if left:  # submitted while the flush ran: converted, then kept with the rest (CPU work only)
            if self.lock.acquire(timeout=1.0):
                try:
                    self._drain_held(left, None, unobtrusive=False)
                finally:
                    self.lock.release()
            if left:
                with self.counters.lock:
                    self.counters.enqueued_dropped += len(left)
                self.loss.report("dropped", f"llmtrace: {len(left):,} event(s) still queued at close were dropped "
                                            "(the converting thread was busy); see tracer.health()")
        self._spill_the_rest(timeout, start)
        rest = 0.5 if timeout is None else max(0.05, min(0.5, timeout - (self.clock() - start)))
        self.sink.stop(rest)
        self.backlog.close()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(rest)
        self.loss.say_held()
        return ok

    def _spill_the_rest(self, timeout: float | None, start: float) -> None:
        b = self.backlog
        if not (b.memory or b.disk_rows):
            return
        waited = self.clock() - start
        why = self.counters.last_error or "the database did not answer"
        total = b.memory_rows + b.disk_rows
        try:
            b.spill_all()
        except OSError as exc:
            with self.counters.lock:
                self.counters.unsaved += b.memory_rows
            self.loss.report("lost", f"llmtrace: {b.memory_rows:,} row(s) not written to {self.store.display_url} "
                                     f"within {waited:.1f}s ({why}) are lost: the spill file could not be written "
                                     f"({type(exc).__name__}: {exc})")
            return
        if b.directory is None:
            with self.counters.lock:
                self.counters.unsaved += b.memory_rows
            self.loss.report("lost", f"llmtrace: {b.memory_rows:,} row(s) not written to the in-memory database "
                                     f"within {waited:.1f}s ({why}) are lost")
            return
        where = b.writer.path if b.writer is not None else b.directory
        self.loss.report("spilled", f"llmtrace: {total:,} row(s) not written to "
                                    f"{self.store.display_url} within {waited:.1f}s ({why}) were spilled to {where}; "
                                    "the next Tracer on this URL writes them")
        self.loss.say_held()

    # -- converting thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                with self.lock:
                    self._drain_held(self.queue, None, unobtrusive=True)
            except Exception as exc:  # never let the thread die: count, report, go on
                self.problem("writer", exc)

    def _drain_held(self, q: deque, limit: int | None, unobtrusive: bool) -> None:
        """``_convert`` by the thread holding ``lock``, which a flush from inside the batch must know."""
        self.drainer = threading.get_ident()
        try:
            self._convert(q, limit, unobtrusive)
        finally:
            self.drainer = None

    def _convert(self, q: deque, limit: int | None, unobtrusive: bool) -> None:
        """Convert queued events (at most ``limit``; all if None) into batches for the backlog.
        Holds ``lock``."""
        left = (1 << 62) if limit is None else limit
        apply, cap = self.recorder.apply, self.batch_bytes
        while left > 0 and q:
            rows = Rows()
            take = min(self.batch_size, left)
            n = sized = 0
            try:
                while q and n < take:
                    ev = q.popleft()
                    n += 1
                    if ev[0] in _SIZED and len(ev) > 4:
                        sized += ev[4]
                    try:
                        apply(ev, rows)
                    except Exception as exc:
                        self.problem("record", exc)
                    if sized >= cap or rows.pending_bytes >= cap:
                        break  # (a batch's size in memory stays bounded)
                left -= n
                if unobtrusive:  # (the converting thread's own round: sweeps never run in a caller's flush)
                    self._maybe_sweep(rows)
                try:
                    self.recorder.finish(rows)
                except Exception as exc:
                    self.problem("content", exc)
            except BaseException:  # interrupted (Ctrl-C in a flush): what was converted is kept
                self._keep(rows, unobtrusive)
                raise
            finally:
                if sized:
                    with self._bytes_lock:
                        self.queued_bytes -= sized
            if rows.count():
                self.backlog.put(rows, notify=unobtrusive)
                self._relieve()
            if self.recorder.alerts is not None and self.recorder.alerts.pending:
                self.recorder.alerts.deliver()
        if unobtrusive:
            self._maybe_sweep(None)
        self._update_full()

    def _keep(self, rows: Rows, unobtrusive: bool) -> None:
        try:
            self.recorder.finish(rows)  # (content still pending when the interruption came)
        except Exception as exc:
            self.problem("content", exc)
        if rows.count():
            self.backlog.put(rows, notify=unobtrusive)

    def _relieve(self) -> None:
        """Past the memory bound, the oldest converted batches go to the spill file."""
        b = self.backlog
        while b.memory_bytes + self.queued_bytes > self.max_bytes and self.clock() >= self._spill_paused_until:
            try:
                moved = b.spill_oldest()
            except OSError as exc:
                self._spill_paused_until = self.clock() + 10.0
                self.loss.report("spill failed", f"llmtrace: records past queue_max_bytes ({self.max_bytes / _MB:.0f} MB) "
                                                 f"could not be spilled to {b.directory} ({type(exc).__name__}: {exc}); "
                                                 "new records are dropped while the database is away")
                break
            if not moved:
                break
            self.loss.report("spilled", f"llmtrace: the database is not taking writes ({self.counters.last_error}); "
                                        f"{b.spilled_rows:,} row(s) past queue_max_bytes ({self.max_bytes / _MB:.0f} MB) "
                                        f"spilled to {b.writer.path if b.writer else b.directory} so far; they are "
                                        "written when it is back")
        self._update_full()

    def _maybe_sweep(self, rows: Rows | None) -> None:
        now = self.clock()
        if now - self._last_sweep < _SWEEP_EVERY_S:
            return
        self._last_sweep = now
        own = rows or Rows()
        n = self.recorder.expire_open(time.perf_counter_ns(), self.open_span_timeout_ns, own)
        if n:
            self.counters.abandoned_spans += n
            self.log.report("abandoned", f"llmtrace closed {n} span(s) open longer than "
                                         f"{self.open_span_timeout_ns / 1e9:.0f}s as abandoned")
        if rows is None:
            self.recorder.finish(own)
            if own.count():
                self.backlog.put(own)

    def problem(self, where: str, exc: Exception) -> None:
        with self.counters.lock:
            self.counters.problems += 1
            n = self.counters.problems
        # type and place only: an exception's message or locals may carry content
        self.log.report(f"problem:{where}", f"llmtrace: {where} failed and was skipped: {type(exc).__name__} at "
                                            f"{_where(exc)} ({n} problem(s) so far; see tracer.health())")

    def health(self) -> dict[str, Any]:
        c, b = self.counters, self.backlog
        with c.lock:
            return {
                "queue_depth": len(self.queue), "queue_size": self.max,
                "queue_bytes": self.queued_bytes + b.memory_bytes, "queue_max_bytes": self.max_bytes,
                "writer_alive": self.alive(), "records_written": c.rows_written, "spans_written": c.spans_written,
                "llm_calls_written": c.llm_calls_written, "dropped": c.enqueued_dropped,
                "failed": c.rows_failed + c.unsaved, "quarantined": c.rows_failed,
                "quarantine_reasons": dict(c.quarantine_reasons),
                "unwritten": b.memory_rows + b.disk_rows, "spilled": b.spilled_rows, "replayed": b.replayed_rows,
                "spill_dir": str(b.directory) if b.directory is not None else None,
                "write_errors": c.write_errors, "processing_errors": c.problems,
                "abandoned_spans": c.abandoned_spans, "open_spans": self.recorder.open_spans(),
                "checkpoints": self.checkpointer.runs if self.checkpointer is not None else None,
                "last_error": c.last_error,
            }

    def after_fork(self) -> None:
        """In a forked child: the parent's events and batches are the parent's; new threads, new locks."""
        self.queue = deque()
        self.lock = threading.Lock()  # (a copy of a lock the parent's thread may have held)
        self.drainer = None
        self.wake = threading.Event()
        self._bytes_lock = threading.Lock()
        self._waiters_lock = threading.Lock()
        self._blocked = threading.local()
        self.queued_bytes, self.full = 0, False
        self.counters.lock = threading.Lock()
        self.loss.reset()
        self.log.reset()
        self.backlog.after_fork()
        self.sink.io_lock = threading.Lock()
        self.sink.waiters = 0
        self.sink.thread = None
        self.start()


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
