"""Issue 17 item 6: ``flush(timeout)`` keeps its timeout and says False when anything is unwritten.

The flush does the writing itself here (the writer thread sleeps: ``flush_interval_seconds=60``),
as it does whenever the app calls it before the writer's next round.
"""

from __future__ import annotations

import threading
import time

import pytest

import llmtrace

from .faultkit import free_port, sqlite_path

SLACK = 0.5  # what a flush may take past its timeout


def _record(tracer, n: int = 5) -> list[str]:
    ids = []
    for _ in range(n):
        with tracer.trace(name="flush-fault") as t:
            pass
        tracer.record_feedback(t.trace_id, "accepted")
        ids.append(t.trace_id)
    return ids


def _timed_flush(tracer, timeout: float, give_up_after: float) -> tuple[bool | None, float | None]:
    """(result, seconds) of ``tracer.flush(timeout)``; (None, None) if it had not returned after ``give_up_after``."""
    out: list = []

    def run() -> None:
        t0 = time.monotonic()
        ok = tracer.flush(timeout=timeout)
        out.append((ok, time.monotonic() - t0))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(give_up_after)
    return out[0] if out else (None, None)


@pytest.mark.xfail(strict=True, reason="issue 17 item 6: flush(timeout=1) waits for another process's SQLite lock, then says True")
def test_flush_keeps_its_timeout_while_another_process_holds_the_sqlite_lock(sqlite_url, sqlite_lock):
    tracer = llmtrace.Tracer(sqlite_url, flush_interval_seconds=60)
    tracer.schema_version()
    _record(tracer)
    lock = sqlite_lock(sqlite_path(sqlite_url), seconds=3)
    ok, elapsed = _timed_flush(tracer, 1, give_up_after=4)
    lock.release()
    tracer.close()
    assert elapsed is not None and elapsed <= 1 + SLACK, elapsed
    assert ok is False  # the traces were not written within the timeout


@pytest.mark.xfail(strict=True, reason="issue 17 item 6: flush(timeout=1) hangs on a blackholed PostgreSQL")
def test_flush_keeps_its_timeout_while_postgresql_is_blackholed(pg_proxy):
    proxy, via = pg_proxy
    tracer = llmtrace.Tracer(via, flush_interval_seconds=60)
    tracer.schema_version()
    _record(tracer)
    proxy.blackhole()
    ok, elapsed = _timed_flush(tracer, 1, give_up_after=4)
    proxy.cut()  # (ends a flush still hanging, so the tracer can close)
    proxy.pass_through()
    tracer.close(timeout=5)
    assert elapsed is not None and elapsed <= 1 + SLACK, "flush(timeout=1) still running after 4 s"
    assert ok is False


@pytest.mark.parametrize("fault", ["connection refused", "read-only file", "outage"])
@pytest.mark.xfail(strict=True, reason="issue 17 item 6: flush returns True when the rows were dropped as failed")
def test_flush_says_false_when_records_could_not_be_written(fault, tmp_path, request):
    if fault == "connection refused":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    elif fault == "read-only file":
        path = tmp_path / "ro.db"
        with llmtrace.Tracer(f"sqlite:///{path}") as t:
            t.schema_version()
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    else:
        proxy, url = request.getfixturevalue("pg_proxy")
        with llmtrace.Tracer(url) as t:
            t.schema_version()
        proxy.outage()
    tracer = llmtrace.Tracer(url, flush_interval_seconds=60)
    _record(tracer)
    t0 = time.monotonic()
    ok = tracer.flush(timeout=3)  # longer than today's retries (about 2 s): they end before the timeout
    elapsed = time.monotonic() - t0
    health = tracer.health()
    tracer.close(timeout=1)
    assert health["records_written"] == 0  # (the fault is real)
    assert elapsed <= 3 + SLACK
    assert ok is False, health
