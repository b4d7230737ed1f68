"""kill -9 in the middle of recording never corrupts the SQLite file, and what was committed stays.

A child records LangChain traces as fast as it can (2 KB questions, a flush every 20 traces, the
writer thread writing every 20 ms meanwhile) and reports the ids each successful flush covered;
it is killed with SIGKILL mid-load, twice at different moments, on the same file.
"""

from __future__ import annotations

import sqlite3
import time

import sqlalchemy as sa

from .faultkit import sqlite_path


def test_kill_9_mid_load_never_corrupts_the_file_and_keeps_what_was_committed(sqlite_url, child):
    path = sqlite_path(sqlite_url)
    committed: list[str] = []
    for round_, after in enumerate((0.3, 1.0)):
        c = child("record", url=sqlite_url, prefix=f"kill-{round_}-", flush_every=20)
        c.expect("committed", timeout=60)
        time.sleep(after)
        c.kill9()
        committed += [tid for e in c.rest() if e["event"] == "committed" for tid in e["ids"]]
        c.close()

        db = sqlite3.connect(path)  # (replays the write-ahead log the killed process left)
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()

    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT trace_id FROM llmtrace_traces")).scalars())
        calls = dict(conn.execute(sa.text("SELECT trace_id, COUNT(*) FROM llmtrace_llm_calls GROUP BY trace_id")).all())
    engine.dispose()
    assert len(committed) >= 40
    assert set(committed) <= stored
    assert all(calls.get(tid) == 1 for tid in committed)
