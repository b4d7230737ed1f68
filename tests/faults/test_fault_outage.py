"""Issue 17 item 2: records wait out a database outage; none is lost, none written twice.

PostgreSQL sits behind a loopback proxy; while a LangChain app records about 80 traces a
second, the proxy cuts every open connection and refuses new ones for 8 s, then lets the server
back. After the outage every trace is in the database once, whole, in the order it was recorded.
"""

from __future__ import annotations

import uuid

from fakes import ScriptedChatModel, answer, simple_chain

import llmtrace
from llmtrace_langchain import LLMTraceCallbackHandler

from .faultkit import count_by_trace, record_through_outage, trace_rows

SPANS_PER_TRACE = 4  # simple_chain: the sequence, its prompt, the model, the parser


def test_an_8_second_postgresql_outage_loses_no_trace(pg_url, pg_proxy):
    proxy, via = pg_proxy
    tracer = llmtrace.Tracer(via, flush_interval_seconds=0.05)
    tracer.schema_version()
    handler = LLMTraceCallbackHandler(tracer)
    chain = simple_chain(ScriptedChatModel(script=[answer("Refund approved.")]))
    prefix = f"outage-{uuid.uuid4().hex[:10]}-"

    def record(tid: str) -> None:
        chain.invoke({"question": "where is my refund?"},
                     config={"callbacks": [handler], "metadata": {"llmtrace_trace_id": tid}})

    ids = record_through_outage(proxy, record, prefix, before_s=0.5, outage_s=8.0, after_s=0.5)
    flushed = tracer.flush(timeout=30)
    health = tracer.health()
    tracer.close()

    stored = [tid for tid, _ in trace_rows(pg_url, prefix)]  # straight to the server, not through the proxy
    lost = len(set(ids) - set(stored))
    assert lost == 0, f"{lost} of {len(ids)} traces lost; health: {health}"
    assert stored == ids  # each once, in the order recorded (by start time)
    spans = count_by_trace(pg_url, "llmtrace_spans", prefix)
    calls = count_by_trace(pg_url, "llmtrace_llm_calls", prefix)
    assert {tid: spans.get(tid) for tid in ids} == dict.fromkeys(ids, SPANS_PER_TRACE)
    assert {tid: calls.get(tid) for tid in ids} == dict.fromkeys(ids, 1)
    assert flushed is True
    assert (health["dropped"], health["failed"]) == (0, 0)


def test_a_user_id_recorded_while_the_database_is_away_keeps_its_trace_never_the_raw_id(pg_url, pg_proxy):
    """The user-id hash key lives in the database unless LLMTRACE_HASH_KEY is set: a trace with a
    user id recorded while the database is away is kept, without its user (never with the raw id),
    and the writer does not wait on the key for every trace."""
    proxy, via = pg_proxy
    tracer = llmtrace.Tracer(via, flush_interval_seconds=0.05)
    tracer.schema_version()  # the tables exist; the key has not been read by this tracer yet
    handler = LLMTraceCallbackHandler(tracer)
    chain = simple_chain(ScriptedChatModel(script=[answer("Refund approved.")]))
    prefix = f"keyless-{uuid.uuid4().hex[:10]}-"
    proxy.outage()
    for i in range(3):
        chain.invoke({"question": "where is my refund?"}, config={"callbacks": [handler], "metadata": {
            "llmtrace_trace_id": f"{prefix}{i}", "llmtrace_user_id": "ana@example.com"}})
    proxy.pass_through()
    assert tracer.flush(timeout=30)
    tracer.close()
    stored = dict(trace_rows(pg_url, prefix))
    assert sorted(stored) == [f"{prefix}{i}" for i in range(3)]  # every trace kept
    assert count_by_trace(pg_url, "llmtrace_spans", prefix) == {f"{prefix}{i}": SPANS_PER_TRACE for i in range(3)}
    import sqlalchemy as sa

    with sa.create_engine(pg_url).connect() as conn:
        users = conn.execute(sa.text("SELECT user_hash FROM llmtrace_traces WHERE trace_id LIKE :p"),
                             {"p": prefix + "%"}).scalars().all()
    assert all(u is None or (u.startswith("u_") and "ana" not in u) for u in users)
