"""SQLite's write-ahead log is checkpointed by a thread of its own, not in the writer's commits."""

from __future__ import annotations

import sqlite3
import time

import llmtrace
from llmtrace.store import checkpoint as _checkpoint
from llmtrace.store.engine import WAL_AUTOCHECKPOINT_PAGES


def _in_main_file(path) -> int:
    # immutable=1 reads the database file alone, ignoring the WAL: rows show once checkpointed
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:
        try:
            return conn.execute("SELECT count(*) FROM llmtrace_feedback").fetchone()[0]
        except sqlite3.OperationalError:  # the table itself is not checkpointed yet
            return 0


def _wait_for_checkpoint(tracer) -> None:
    deadline = time.monotonic() + 10
    while tracer.health()["checkpoints"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_mechanism_the_checkpoint_thread_moves_the_log_into_the_database_file(tmp_path, monkeypatch):
    monkeypatch.setattr(_checkpoint, "DUE_BYTES", 20_000)  # (4 MB in use: a few hundred rows here)
    path = tmp_path / "llmtrace.db"
    tracer = llmtrace.Tracer(f"sqlite:///{path}")
    with tracer._store.engine.connect() as conn:  # (a setting of llmtrace's own connections)
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == WAL_AUTOCHECKPOINT_PAGES
    for i in range(200):
        tracer.record_feedback(f"t-{i}", "accepted")
    assert tracer.flush(10)
    assert _in_main_file(path) < 200  # a few hundred rows: far below the commit's own threshold
    _wait_for_checkpoint(tracer)
    assert tracer.health()["checkpoints"] >= 1
    assert _in_main_file(path) == 200
    t0 = time.monotonic()
    tracer.close()
    assert time.monotonic() - t0 < 1.0  # a waiting checkpoint thread does not hold close() up
    assert not tracer._writer.checkpointer.thread.is_alive()


def test_mechanism_a_quiet_log_is_checkpointed_too(tmp_path, monkeypatch):
    monkeypatch.setattr(_checkpoint, "QUIET_S", 0.2)
    path = tmp_path / "llmtrace.db"
    tracer = llmtrace.Tracer(f"sqlite:///{path}")
    tracer.record_feedback("t-1", "accepted")  # far below DUE_BYTES
    assert tracer.flush(10)
    _wait_for_checkpoint(tracer)
    assert _in_main_file(path) == 1
    tracer.close()


def test_mechanism_no_checkpoint_thread_for_servers_or_memory(db_url):
    tracer = llmtrace.Tracer(db_url if not db_url.startswith("sqlite") else "sqlite://")
    assert tracer._writer.checkpointer is None and tracer.health()["checkpoints"] is None
    tracer.close()
