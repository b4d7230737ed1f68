"""Converted batches waiting to be written, oldest first: spill files, then memory.

The converting thread ``put``s batches; the writing thread ``take``s the oldest, writes it and says
``done``; a flush waits until the batch it made is done. Past the memory bound the converting thread
moves the oldest batches to this process's spill file (``spill_oldest``); since those are older
than every batch still in memory, the writing thread replays the spill files first, then memory, so
records reach the database in the order they were recorded. Foreign spill files (left by a process
that ended with the database away) are replayed too. Everything is under one condition lock.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from llmtrace.capture.spill import SpillReader, SpillWriter, waiting_files
from llmtrace.store.inserts import Rows, rows_from_doc, to_json

MERGE_ROWS = 20_000  # after an outage, batches waiting in memory are written this many rows per transaction


class Batch:
    __slots__ = ("rows", "seq", "nbytes", "nrows", "replay", "failures", "reader", "parts")

    def __init__(self, rows: Rows, seq: int | None, nbytes: int, replay: bool = False,
                 reader: SpillReader | None = None) -> None:
        self.rows = rows
        self.seq = seq  # this process's order; None for a foreign spill file's batch
        self.nbytes = nbytes  # in memory, as counted against the bound (0: read back from a file)
        self.nrows = rows.count()  # as queued (a write may leave some out: already stored, set aside)
        self.replay = replay  # it may be stored already (a try that may have committed; a spilled batch)
        self.failures = 0
        self.reader = reader  # the spill file it came from, if any
        self.parts = 1  # batches of ``memory`` it stands for (several, merged, after an outage)


class Backlog:
    def __init__(self, directory: Path | None, display_url: str) -> None:
        self.directory = directory  # None: nowhere to spill (an in-memory database)
        self.display_url = display_url
        self.cond = threading.Condition()
        self.memory: deque[Batch] = deque()
        self.memory_bytes = 0
        self.memory_rows = 0
        self.taken: Batch | None = None  # the batch being written (still counted where it came from)
        self.readers: deque[SpillReader] = deque()  # spill files to replay, oldest first
        self.writer: SpillWriter | None = None  # this process's spill file
        self.disk_rows = 0  # rows in this process's spill file not replayed yet
        self.next_seq = 1
        self.done_seq = 0
        self.closed = False
        self.spilled_rows = 0
        self.replayed_rows = 0
        self.damaged_lines = 0

    # -- converting side ----------------------------------------------------------------------

    def put(self, rows: Rows, notify: bool = True) -> int:
        """Queue a converted batch; its sequence number (a flush waits for it). ``notify=False``:
        the writing thread is not woken (a flush that may write the batch itself)."""
        batch = Batch(rows, 0, rows.estimate_bytes())
        with self.cond:
            batch.seq = self.next_seq
            self.next_seq += 1
            self.memory.append(batch)
            self.memory_bytes += batch.nbytes
            self.memory_rows += batch.nrows
            if notify:
                self.cond.notify_all()
        return batch.seq

    def last_seq(self) -> int:
        return self.next_seq - 1

    def spill_oldest(self) -> int:
        """Move the oldest batch in memory that is not being written to the spill file; the rows
        moved (0: nothing to move). Raises OSError when the file cannot be written."""
        with self.cond:
            if self.directory is None or self.closed:
                return 0
            i = self.taken.parts if self.taken is not None and self.taken.reader is None else 0
            if i >= len(self.memory):
                return 0
            batch = self.memory[i]
            self._append(batch)
            del self.memory[i]
            self.memory_bytes -= batch.nbytes
            self.memory_rows -= batch.nrows
            return batch.nrows

    def _append(self, batch: Batch) -> None:
        """Write ``batch`` to this process's spill file (opened, and queued for replay, on first use)."""
        assert self.directory is not None
        if self.writer is None:
            self.writer = SpillWriter(self.directory, self.display_url)
            self.readers.append(SpillReader(self.writer.path, own=True))
        n = batch.rows.count()  # (what is left of it)
        line = b'{"seq":%d,"replay":%s,"batch":' % (batch.seq or 0, b"true" if batch.replay else b"false")
        self.writer.append(line + to_json(batch.rows) + b"}")
        self.disk_rows += n
        self.spilled_rows += n

    # -- writing side -------------------------------------------------------------------------

    def find_foreign(self) -> int:
        """Queue spill files other processes left (not locked by a live one): replayed first."""
        if self.directory is None:
            return 0
        own = self.writer.path if self.writer is not None else None
        found = 0
        with self.cond:
            queued = {r.path for r in self.readers}
            for path in waiting_files(self.directory, exclude=own):
                if path in queued:
                    continue
                try:
                    reader = SpillReader(path, own=False)
                except OSError:  # being written or replayed by a live process, or gone
                    continue
                own_reader = self.readers.pop() if self.readers and self.readers[-1].own else None
                self.readers.append(reader)
                if own_reader is not None:  # (this process's file stays last: it is the newest)
                    self.readers.append(own_reader)
                found += 1
            if found:
                self.cond.notify_all()
        return found

    def take(self) -> Batch | None:
        """The oldest batch not written yet (the same one again until it is ``done``)."""
        with self.cond:
            if self.closed:
                return None
            if self.taken is not None:
                return self.taken
            while self.readers:
                reader = self.readers[0]
                doc = reader.next()
                if doc is not None:
                    rows = rows_from_doc(doc["batch"])
                    seq = doc.get("seq")
                    while rows.count() < MERGE_ROWS and (more := reader.next()) is not None:
                        _extend(rows, rows_from_doc(more["batch"]))  # (as in _merged: a transaction per line is slow)
                        seq = more.get("seq")
                    self.taken = Batch(rows, (seq or None) if reader.own else None, 0, replay=True, reader=reader)
                    return self.taken
                self.damaged_lines += reader.bad_lines
                reader.bad_lines = 0
                if reader.own:
                    if self.writer is not None:
                        self.writer.close(remove=True)
                        self.writer = None
                    reader.close(remove=False)
                    self.disk_rows = 0
                else:
                    reader.close(remove=True)
                self.readers.popleft()
            if self.memory:
                self.taken = self._merged()
                return self.taken
            return None

    def _merged(self) -> Batch:
        """The oldest batch in memory, merged with those that follow (up to ``MERGE_ROWS`` rows):
        after an outage, hundreds of small batches wait, and a transaction each would take longer
        than the outage. Rows of one trace in several batches merge as they would have (traces are
        upserted; inserts come before updates)."""
        first = self.memory[0]
        if len(self.memory) == 1 or first.nrows >= MERGE_ROWS:
            return first
        parts = [first]
        total = first.nrows
        for batch in list(self.memory)[1:]:
            if total + batch.nrows > MERGE_ROWS:
                break
            parts.append(batch)
            total += batch.nrows
        if len(parts) == 1:
            return first
        rows = Rows()
        for part in parts:
            _extend(rows, part.rows)
        merged = Batch(rows, parts[-1].seq, sum(p.nbytes for p in parts), replay=any(p.replay for p in parts))
        merged.parts = len(parts)
        merged.failures = first.failures
        return merged

    def done(self, batch: Batch) -> None:
        """``batch`` is written (or what was left of it was set aside)."""
        with self.cond:
            mine = self.taken is batch
            if mine:
                self.taken = None
            if batch.reader is None:
                for _ in range(min(batch.parts, len(self.memory)) if mine else 0):  # (not if spilled at close)
                    part = self.memory.popleft()
                    self.memory_bytes -= part.nbytes
                    self.memory_rows -= part.nrows
            else:
                self.replayed_rows += batch.nrows
                if batch.reader.own:
                    self.disk_rows = max(0, self.disk_rows - batch.nrows)
            if batch.seq:
                self.done_seq = max(self.done_seq, batch.seq)
            self.cond.notify_all()

    def has_work(self) -> bool:
        return bool(self.taken is not None or self.readers or self.memory)

    def covered(self, seq: int) -> bool:
        """Batch ``seq`` and everything before it is written, foreign spill files included (they
        hold records of this database that are older than anything of ours)."""
        return self.done_seq >= seq and not any(not r.own for r in self.readers)

    def wait_done(self, seq: int, timeout: float | None) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.covered(seq) or self.closed, timeout) and self.covered(seq)

    # -- the end ------------------------------------------------------------------------------

    def spill_all(self) -> int:
        """At close: every batch still in memory (the one being written too) to the spill file, in
        order; the files stay for the next Tracer on this URL. Returns the rows moved; raises
        OSError when they could not be written (they stay in memory)."""
        with self.cond:
            moved = 0
            if self.directory is not None:
                taken = self.taken.parts if self.taken is not None and self.taken.reader is None else 0
                while self.memory:
                    batch = self.memory[0]
                    if taken > 0:
                        batch.replay = True  # (its write may still complete: written once all the same)
                        taken -= 1
                    self._append(batch)
                    self.memory.popleft()
                    self.memory_bytes -= batch.nbytes
                    moved += batch.nrows
                self.memory_rows = 0
                self.taken = None if self.taken is None or self.taken.reader is None else self.taken
                if self.writer is not None:
                    self.writer.sync()
            return moved

    def close(self) -> None:
        """Stop: nothing more is taken; the spill files stay (unlocked) for the next process."""
        with self.cond:
            self.closed = True
            for reader in self.readers:
                reader.close(remove=False)
            self.readers.clear()
            if self.writer is not None:
                self.writer.close(remove=False)
                self.writer = None
            self.cond.notify_all()

    def after_fork(self) -> None:
        """In a forked child: the parent's batches and files stay the parent's."""
        for reader in self.readers:
            try:
                reader.file.close()  # (our copy of the descriptor: the parent's lock stays)
            except OSError:
                pass
        if self.writer is not None:
            self.writer.forget()
        self.cond = threading.Condition()
        self.memory, self.readers, self.taken, self.writer = deque(), deque(), None, None
        self.memory_bytes = self.memory_rows = self.disk_rows = 0
        self.closed = False


def _extend(rows: Rows, more: Rows) -> None:
    for name, more_rows in more.items():
        getattr(rows, name).extend(more_rows)
    rows.content_digests.extend(more.content_digests)
