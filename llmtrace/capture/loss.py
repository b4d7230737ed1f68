"""Saying that records did not reach the database: visible without opting in, once, rate-limited.

llmtrace's log lines are off by default (loguru's convention for libraries), but losing data is not
routine: a drop, a quarantined row, records spilled to a local file or left at exit are said as a
``llmtrace.DataLossWarning`` (which Python prints on stderr; ``warnings.filterwarnings("ignore",
category=llmtrace.DataLossWarning)`` silences it) and as a loguru line. Each kind is said at once
the first time, then at most once per ``every_s`` with the running totals, and what was held back
is said when the tracer closes. Problems that lose nothing (a skipped conversion, a failed purge)
are rate-limited log lines only.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable

from loguru import logger

from llmtrace.base.errors import DataLossWarning

EVERY_S = 60.0


class LossReporter:
    """Rate-limited messages per kind ("dropped", "quarantined", "spilled", ...). ``clock`` is
    injectable (tests move time instead of sleeping)."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic,
                 warn: bool = True) -> None:
        self.every_s = every_s
        self.clock = clock
        self.warn = warn  # False: log lines only (routine problems that lose nothing)
        self.lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, str] = {}  # kind -> the latest message not said yet
        self.said = 0

    def report(self, kind: str, message: str) -> None:
        """Say ``message`` now unless ``kind`` was said less than ``every_s`` ago (then hold it)."""
        now = self.clock()
        with self.lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._held[kind] = message
                return
            self._last[kind] = now
            self._held.pop(kind, None)
        self._say(message)

    def say_held(self) -> None:
        """Say what was held back (at close / exit)."""
        with self.lock:
            held, self._held = self._held, {}
            now = self.clock()
            for kind in held:
                self._last[kind] = now
        for message in held.values():
            self._say(message)

    def reset(self) -> None:
        """After a fork: the child starts with nothing said (and a lock nobody holds)."""
        self.lock = threading.Lock()
        self._last, self._held = {}, {}

    def _say(self, message: str) -> None:
        self.said += 1
        logger.warning(message)
        if not self.warn:
            return
        try:  # one line on stderr: "llmtrace:0: DataLossWarning: ..." (no source line of ours under it)
            warnings.warn_explicit(message.removeprefix("llmtrace: "), DataLossWarning, "llmtrace", 0, module="llmtrace")
        except Exception:  # noqa: BLE001 - warnings turned into errors (-W error) must not reach the app
            logger.opt(exception=False).error("llmtrace: the data-loss warning could not be shown")
