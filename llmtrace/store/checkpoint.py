"""SQLite WAL checkpoints off the writer's path.

In WAL mode each commit appends pages to the write-ahead log, and by default the commit that takes
the log past 1,000 pages (4 MB) also copies it into the database file and syncs it: a pause of
tens of milliseconds in the middle of the writer's work, and a flush waits through it. Here every
connection gets a far larger threshold (``_store.WAL_AUTOCHECKPOINT_PAGES``, a safety net), and a
thread of its own checkpoints (PASSIVE: it never blocks the writer or a reader) after about as
much writing as SQLite would have waited for, or after a quiet spell. SQLite runs the checkpoint
without holding Python's GIL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from llmtrace.store.engine import Database

DUE_BYTES = 4 << 20  # about what SQLite's default threshold (1,000 pages) lets the log grow to
QUIET_S = 30.0  # a log that stopped growing is checkpointed after this long anyway


class Checkpointer:
    """The SQLite WAL checkpoint thread of one writer (see the module's docstring)."""

    def __init__(self, store: Database, on_problem: Callable[[str, Exception], None]) -> None:
        self.store = store
        self.on_problem = on_problem
        self.runs = 0
        self.pending = 0  # bytes written (estimated) since the last checkpoint
        self.thread: threading.Thread | None = None
        self._due = threading.Event()
        self._stop = threading.Event()

    @staticmethod
    def wanted(store: Database) -> bool:
        """Only for a SQLite file (an in-memory database has no log)."""
        url = store.engine.url
        db = url.database or ""
        return store.dialect == "sqlite" and db not in ("", ":memory:") and url.query.get("mode") != "memory"

    def start(self) -> None:
        self._due, self._stop = threading.Event(), threading.Event()  # (fresh after a fork)
        self.thread = threading.Thread(target=self._run, name="llmtrace-checkpoint", daemon=True)
        self.thread.start()

    def wrote(self, nbytes: int) -> None:
        """The writer committed about ``nbytes`` (called on the writer thread only)."""
        self.pending += nbytes
        if self.pending >= DUE_BYTES:
            self._due.set()

    def stop(self, timeout: float | None) -> None:
        self._stop.set()
        self._due.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            due = self._due.wait(QUIET_S)
            if self._stop.is_set():
                return
            self._due.clear()
            if not due and not self.pending:
                continue
            self.pending = 0
            try:
                with self.store.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                self.runs += 1
            except Exception as exc:  # the safety net still checkpoints: report, go on
                self.on_problem("checkpoint", exc)
