"""Local files for records the database could not take: the spill, and the quarantine.

While the database is away, converted batches wait in memory up to ``queue_max_bytes``; past it,
the oldest go to a spill file, one JSON line per batch, and come back (in order, before anything
newer) when the database is back. At close or exit, what is still unwritten goes there too, and the
next Tracer on the same URL writes it. The directory is ``<spill_dir>/<hash of the URL>/``
(``spill_dir`` defaults to ``./llmtrace-spill`` in the working directory); a ``README.txt`` there
names the database. Each process writes its own file and holds an exclusive lock on it while it
lives, so two processes never replay the same file at once; a file whose writer died (its lock
gone) is anyone's to replay. Replaying a batch twice stores it once (``write_rows(replay=True)``).

A row the database refuses on its own (a duplicate id, a value it cannot store) is set aside in
``quarantine.jsonl`` beside the spill files, with why, and never replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

DEFAULT_DIR = "llmtrace-spill"
QUARANTINE = "quarantine.jsonl"
_PREFIX = "spill-"


def spill_path(spill_dir: str | None, display_url: str) -> Path:
    """``<spill_dir or ./llmtrace-spill>/<16 hex digits of the URL's hash>``, made absolute now (a
    later ``chdir`` of the app does not move it)."""
    root = Path(spill_dir) if spill_dir else Path.cwd() / DEFAULT_DIR
    return root.expanduser().absolute() / hashlib.sha256(display_url.encode("utf-8", "backslashreplace")).hexdigest()[:16]


def _try_lock(f: IO[bytes]) -> bool:
    """An exclusive lock on the open file, held until it is closed (or the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class SpillWriter:
    """This process's spill file: appended line by line, locked while open."""

    def __init__(self, directory: Path, display_url: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        readme = directory / "README.txt"
        if not readme.exists():
            readme.write_text(f"Records llmtrace could not write to {display_url} yet: one JSON line per batch.\n"
                              "The next llmtrace.Tracer on this URL writes them and deletes the file.\n"
                              f"{QUARANTINE}: rows the database refused on their own, with why (never replayed).\n")
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.path = directory / f"{_PREFIX}{stamp}-{os.getpid()}-{os.urandom(3).hex()}.jsonl"
        self.file: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - open for the writer's life
        _try_lock(self.file)
        self.lines = 0

    def append(self, line: bytes) -> None:
        self.file.write(line + b"\n")
        self.file.flush()  # (in the OS now: a crash of this process keeps it)
        self.lines += 1

    def sync(self) -> None:
        os.fsync(self.file.fileno())

    def close(self, remove: bool = False) -> None:
        self.file.close()
        if remove:
            self.path.unlink(missing_ok=True)

    def forget(self) -> None:
        """In a forked child: the parent's file is the parent's (closing our copy of the descriptor
        leaves the parent's lock in place)."""
        try:
            os.close(self.file.fileno())
        except OSError:
            pass


class SpillReader:
    """One spill file being replayed, line by line. ``own``: this process's file, still appended to."""

    def __init__(self, path: Path, own: bool) -> None:
        self.path = path
        self.own = own
        self.file: IO[bytes] = open(path, "rb")  # noqa: SIM115 - open while it is replayed
        if not own and not _try_lock(self.file):
            self.file.close()
            raise BlockingIOError(f"{path} is being written or replayed by another process")
        self.bad_lines = 0

    def next(self) -> dict[str, Any] | None:
        """The next batch document; None at the end (or at a line cut short by a crash)."""
        while True:
            pos = self.file.tell()
            line = self.file.readline()
            if not line:
                return None
            if not line.endswith(b"\n"):
                self.file.seek(pos)  # a line being written (own file) or cut short: not a batch yet
                return None
            try:
                return json.loads(line)
            except ValueError:
                self.bad_lines += 1  # (a damaged line: counted, skipped)

    def close(self, remove: bool) -> None:
        self.file.close()
        if remove:
            self.path.unlink(missing_ok=True)


def waiting_files(directory: Path, exclude: Path | None = None) -> list[Path]:
    """Spill files in ``directory`` (oldest first: names start with their UTC time)."""
    try:
        names = sorted(p for p in directory.iterdir() if p.name.startswith(_PREFIX) and p.suffix == ".jsonl")
    except OSError:
        return []
    return [p for p in names if p != exclude]


def quarantine(directory: Path, table: str, row: dict[str, Any], why: str) -> Path:
    """Set ``row`` aside in ``quarantine.jsonl`` with why (the file is for people; never replayed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / QUARANTINE
    line = json.dumps({"at": datetime.now(timezone.utc).isoformat(), "table": table, "why": why, "row": row},
                      default=str, ensure_ascii=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    return path
