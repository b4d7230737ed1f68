"""Issue 17 items 1-3: what does not fit in memory goes to a local file and comes back in order,
once; a row the database refuses on its own is set aside alone, said and counted.

The database is stalled for real (another process holds the SQLite file's write lock); the spill
directory is ./llmtrace-spill in the test's own working directory (see conftest.py).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from fakes import ScriptedChatModel, answer, simple_chain

import llmtrace
from llmtrace_langchain import LLMTraceCallbackHandler

from .faultkit import count_by_trace, sqlite_path, trace_rows

MB = 1 << 20
SPANS_PER_TRACE = 4  # simple_chain: the sequence, its prompt, the model, the parser


def _fresh(url: str) -> None:
    with llmtrace.Tracer(url) as t:
        t.schema_version()


def _spill_files() -> list[Path]:
    return sorted(Path("llmtrace-spill").glob("*/spill-*.jsonl"))


def _recorder(tracer):
    handler = LLMTraceCallbackHandler(tracer)
    chain = simple_chain(ScriptedChatModel(script=[answer("Refund approved.")]))
    question = "Where is my refund? " * 2_500  # 50 KB of content a trace

    def record(tid: str) -> None:
        chain.invoke({"question": question}, config={"callbacks": [handler], "metadata": {"llmtrace_trace_id": tid}})

    return record


def test_past_the_memory_bound_records_are_spilled_then_written_in_order_once(sqlite_url, sqlite_lock):
    _fresh(sqlite_url)
    lock = sqlite_lock(sqlite_path(sqlite_url))
    tracer = llmtrace.Tracer(sqlite_url, queue_max_bytes=1 * MB, flush_interval_seconds=0.02)
    record = _recorder(tracer)
    prefix = f"spill-{uuid.uuid4().hex[:8]}-"
    ids = [f"{prefix}{i:03d}" for i in range(60)]  # 3 MB of content: three times the bound
    for tid in ids:
        record(tid)
    assert tracer.flush(0.5) is False  # (the fault is real: nothing can be written)
    h = tracer.health()
    assert h["records_written"] == 0 and h["spilled"] > 0 and h["dropped"] == 0
    assert h["queue_bytes"] <= 1 * MB + 256 * 1024  # memory held to the bound (a batch in flight aside)
    assert _spill_files() and all(p.parent.name == Path(h["spill_dir"]).name for p in _spill_files())

    lock.release()
    assert tracer.flush(30) is True  # spilled and in memory: all written now
    h = tracer.health()
    tracer.close()
    assert h["replayed"] > 0 and h["unwritten"] == 0 and (h["failed"], h["dropped"]) == (0, 0)
    assert [tid for tid, _ in trace_rows(sqlite_url, prefix)] == ids  # each once, in the order recorded
    assert count_by_trace(sqlite_url, "llmtrace_spans", prefix) == dict.fromkeys(ids, SPANS_PER_TRACE)
    assert count_by_trace(sqlite_url, "llmtrace_llm_calls", prefix) == dict.fromkeys(ids, 1)
    assert _spill_files() == []  # replayed files are removed


def test_a_spilled_batch_that_was_written_already_is_not_written_twice(sqlite_url, sqlite_lock):
    """A process spills at exit the batch its writing thread was still writing; that write then
    completes. The next tracer replays the file: the rows are there already, and stay single."""
    from llmtrace.capture.spill import SpillWriter, spill_path
    from llmtrace.store import schema as S
    from llmtrace.store.inserts import ROW_KEYS, Rows, to_json

    prefix = f"twice-{uuid.uuid4().hex[:8]}-"
    with llmtrace.Tracer(sqlite_url) as tracer:
        record = _recorder(tracer)
        for i in range(3):
            record(f"{prefix}{i}")
        tracer.record_feedback(f"{prefix}0", "accepted")
        assert tracer.flush(10)
        directory = spill_path(None, tracer._store.display_url)
    # the spill file that process would have left: the same rows, as they were written
    engine = sa.create_engine(sqlite_url)
    rows = Rows()
    with engine.connect() as conn:
        for name in (*ROW_KEYS, "chunks"):
            table = S.METADATA.tables[f"llmtrace_{name}"]
            stored = [dict(r._mapping) for r in conn.execute(sa.select(table))]
            getattr(rows, name).extend({k: v for k, v in r.items() if k != "id" or name != "chunks"} for r in stored)
        rows.traces.extend(dict(r._mapping) for r in conn.execute(sa.select(S.traces)))
        before = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in S.METADATA.sorted_tables}
    engine.dispose()
    spill = SpillWriter(directory, "test")
    spill.append(b'{"seq":1,"replay":true,"batch":' + to_json(rows) + b"}")
    spill.close()

    with llmtrace.Tracer(sqlite_url) as later:
        deadline = time.monotonic() + 10
        while _spill_files() and time.monotonic() < deadline:
            later.flush(1)
            time.sleep(0.05)
        h = later.health()
    assert _spill_files() == [] and h["replayed"] == rows.count()
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        after = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in S.METADATA.sorted_tables}
    engine.dispose()
    assert after == before


def test_a_row_the_database_refuses_alone_is_quarantined_and_its_batch_written(db_url):
    """A session id of lone surrogates is made storable (each escaped as \\udXXX: 6 characters a
    surrogate), which the 128-character column of PostgreSQL or MariaDB refuses: that trace's row is
    set aside, counted with why and said; the other rows of the batch are written whole. (SQLite has
    no length limit: it stores it. A trace id of surrogates is refused by tracer.trace() itself.)"""
    tracer = llmtrace.Tracer(db_url, flush_interval_seconds=60)  # one batch, written by the flush
    record = _recorder(tracer)
    run = uuid.uuid4().hex[:8]
    good = [f"good-{run}-{i}" for i in range(3)]
    record(good[0])
    bad = f"bad-{run}"
    with tracer.trace(name="bad session", trace_id=bad, session_id="\ud800" * 100 + run):
        pass
    record(good[1])
    tracer.record_feedback(good[1], "accepted")
    record(good[2])
    with pytest.warns(llmtrace.DataLossWarning, match="quarantined") if not db_url.startswith("sqlite") else _nothing():
        flushed = tracer.flush(30)
    h = tracer.health()
    tracer.close()
    for tid in good:
        assert count_by_trace(db_url, "llmtrace_spans", tid) == {tid: SPANS_PER_TRACE}
    assert count_by_trace(db_url, "llmtrace_feedback", good[1]) == {good[1]: 1}
    if db_url.startswith("sqlite"):
        assert flushed is True and h["quarantined"] == 0
        return
    assert flushed is False  # something was lost: the flush says so
    assert h["quarantined"] == h["failed"] == 1  # the trace's row: its span is written, nothing else is lost
    assert count_by_trace(db_url, "llmtrace_spans", bad) == {bad: 1}
    assert all(("DataError" in why) for why in h["quarantine_reasons"]), h["quarantine_reasons"]
    [kept] = Path("llmtrace-spill").glob("*/quarantine.jsonl")
    lines = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [x["table"] for x in lines] == ["traces"]
    assert all(x["row"]["trace_id"] == bad and x["why"].startswith("DataError") for x in lines)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
