"""Trace scoping, concurrency, feedback and validations (also from another process), the store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from conftest import new_id, raw_engine
from fakes import REFUND_JSON, ScriptedChatModel, answer, rag_chain, simple_chain
from sqlmodel import SQLModel

import llmtrace
from llmtrace.store import schema as S


def test_trace_context_makes_one_trace_of_several_chains(tracer, handler):
    model = ScriptedChatModel(script=[answer("hello")])
    with tracer.trace(name="support-answer", user_id="u-17", feature="refunds", prompt_version="v3",
                      tags=["beta"], metadata={"plan": "pro"}) as t:
        simple_chain(model).invoke({"question": "a"}, config={"callbacks": [handler]})
        simple_chain(model).invoke({"question": "b"}, config={"callbacks": [handler]})
    assert handler.last_trace_id == t.trace_id
    doc = tracer.get_trace(t.trace_id).to_dict()
    assert doc["name"] == "support-answer" and doc["feature"] == "refunds" and doc["prompt_version"] == "v3"
    assert doc["tags"] == ["beta"] and doc["metadata"] == {"plan": "pro"}
    assert doc["user_id"].startswith("u_")
    assert len(doc["llm_calls"]) == 2
    roots = [s for s in doc["spans"] if s["parent_id"] is None]
    assert len(roots) == 1 and roots[0]["name"] == "support-answer"
    assert sum(1 for s in doc["spans"] if s["parent_id"] == roots[0]["span_id"]) == 2


def test_trace_context_error_marks_trace(sqlite_tracer):
    with pytest.raises(ZeroDivisionError):
        with sqlite_tracer.trace(name="boom") as t:
            1 / 0  # noqa: B018
    doc = sqlite_tracer.get_trace(t.trace_id).to_dict()
    assert doc["status"] == "error" and doc["spans"][0]["error"]["type"] == "other"


def test_caller_supplied_trace_id_and_run_id(tracer, handler):
    import uuid

    tid = new_id()
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke(
        {"question": "q"}, config={"callbacks": [handler], "metadata": {"llmtrace_trace_id": tid}})
    assert handler.last_trace_id == tid
    assert tracer.get_trace(tid).to_dict()["llm_calls"][0]["raw_completion"] == "x"
    run_id = uuid.uuid4()
    simple_chain(ScriptedChatModel(script=[answer("y")])).invoke(
        {"question": "q"}, config={"callbacks": [handler], "run_id": run_id})
    assert handler.last_trace_id == str(run_id)
    assert tracer.get_trace(str(run_id)).to_dict()["spans"][0]["span_id"] == str(run_id)


def test_concurrent_async_requests_through_one_handler_stay_apart(tracer, handler):
    async def one(i: int):
        model = ScriptedChatModel(script=[answer(f"answer {i}")])
        tid = f"{new_id()}-{i}"
        with tracer.trace(trace_id=tid, user_id=f"user-{i}"):
            await asyncio.sleep(0.001 * (i % 3))
            out = await simple_chain(model).ainvoke({"question": f"question {i}"}, config={"callbacks": [handler]})
        return tid, out

    async def main():
        return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(main())
    users = set()
    for tid, out in results:
        i = int(tid.rsplit("-", 1)[1])
        doc = tracer.get_trace(tid).to_dict()
        assert out == f"answer {i}"
        [call] = doc["llm_calls"]
        assert call["input_messages"][-1]["content"] == f"question {i}"
        assert call["raw_completion"] == f"answer {i}"
        assert len([s for s in doc["spans"] if s["parent_id"] is None]) == 1
        users.add(doc["user_id"])
    assert len(users) == 20


def test_threads_through_one_handler_stay_apart(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    ids: dict[int, str] = {}

    def work(i: int):
        tid = f"{new_id()}-{i}"
        simple_chain(ScriptedChatModel(script=[answer(f"a{i}")])).invoke(
            {"question": f"q{i}"}, config={"callbacks": [h], "metadata": {"llmtrace_trace_id": tid}})
        ids[i] = tid

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, tid in ids.items():
        doc = sqlite_tracer.get_trace(tid).to_dict()
        assert [c["raw_completion"] for c in doc["llm_calls"]] == [f"a{i}"]


def test_feedback_and_validations(tracer, handler):
    simple_chain(ScriptedChatModel(script=[answer("Refund approved")])).invoke(
        {"question": "q"}, config={"callbacks": [handler]})
    tid = handler.last_trace_id
    call_span = tracer.get_trace(tid).to_dict()["llm_calls"][0]["span_id"]
    tracer.record_feedback(tid, "edited", correction="Refund approved minus 15% restocking fee", comment="fee")
    tracer.record_feedback(tid, "rated", score=4)
    tracer.record_feedback(tid, "escalated_to_human")
    tracer.record_validation(tid, rule="amount_within_order_total", passed=False, detail={"amount": 60, "total": 49})
    tracer.record_validation(tid, rule="cites_policy", passed=True, span_id=call_span)
    doc = tracer.get_trace(tid).to_dict()
    fb = doc["feedback"]
    assert [f["action"] for f in fb] == ["edited", "rated", "escalated_to_human"]
    assert fb[0]["correction"] == "Refund approved minus 15% restocking fee" and fb[0]["comment"] == "fee"
    assert fb[1]["score"] == 4.0 and fb[0]["source"] == "user" and fb[0]["at"].endswith("Z")
    assert [(v["rule"], v["passed"], v["detail"]) for v in doc["validations"]] == [
        ("amount_within_order_total", False, {"amount": 60, "total": 49})]
    assert [(v["rule"], v["passed"]) for v in doc["llm_calls"][0]["validations"]] == [("cites_policy", True)]


def test_feedback_may_arrive_before_the_trace(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    tid = new_id()
    sqlite_tracer.record_feedback(tid, "accepted")
    sqlite_tracer.flush()
    with pytest.raises(llmtrace.TraceNotFound, match="1 feedback record"):
        sqlite_tracer.get_trace(tid)
    h = LLMTraceCallbackHandler(sqlite_tracer)
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke(
        {"question": "q"}, config={"callbacks": [h], "metadata": {"llmtrace_trace_id": tid}})
    assert [f["action"] for f in sqlite_tracer.get_trace(tid).to_dict()["feedback"]] == ["accepted"]


def test_feedback_from_another_process(db_url, tracer, handler):
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [handler]})
    tid = handler.last_trace_id
    tracer.flush()
    code = ("import llmtrace, sys; llmtrace.Tracer(sys.argv[1]).record_feedback(sys.argv[2], 'edited', "
            "correction='kept text')")
    subprocess.run([sys.executable, "-c", code, db_url, tid], check=True, timeout=60)
    fb = tracer.get_trace(tid).to_dict()["feedback"]
    assert [(f["action"], f["correction"]) for f in fb] == [("edited", "kept text")]


@pytest.mark.parametrize("args, message", [
    (("bogus-id", ""), "action must be"),
    (("bogus-id", "rated"), "needs a score"),
    (("bogus-id", "edited"), "needs the text"),
])
def test_bad_feedback_is_a_clear_error(sqlite_tracer, args, message):
    with pytest.raises(llmtrace.InvalidFeedback, match=message):
        sqlite_tracer.record_feedback(*args)


@pytest.mark.parametrize("score", ["four", float("nan"), True])
def test_non_numeric_score_is_rejected(sqlite_tracer, score):
    with pytest.raises(llmtrace.InvalidFeedback, match="score must be a finite number"):
        sqlite_tracer.record_feedback("t", "rated", score=score)


def test_unknown_trace_raises_trace_not_found(tracer):
    with pytest.raises(llmtrace.TraceNotFound) as info:
        tracer.get_trace("no-such-trace")
    assert info.value.trace_id == "no-such-trace"
    assert isinstance(info.value, LookupError)


def test_bad_settings_are_clear(sqlite_url):
    with pytest.raises(llmtrace.ConfigError, match="capture must be one of"):
        llmtrace.Tracer(sqlite_url, capture="everything")
    with pytest.raises(llmtrace.ConfigError, match="content_ttl_days must be positive"):
        llmtrace.Tracer(sqlite_url, content_ttl_days=0)
    with pytest.raises(llmtrace.ConfigError, match="not a URL"):
        llmtrace.Tracer("llmtrace.db")
    with pytest.raises(TypeError, match="queue_sise"):  # (the signature lists every setting: IDEs and mypy see typos)
        llmtrace.Tracer(sqlite_url, queue_sise=10)


def test_metadata_capture_stores_no_content(sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(sqlite_url, capture="metadata") as t:
        h = LLMTraceCallbackHandler(t)
        rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke("my secret question", config={"callbacks": [h]})
        doc = t.get_trace(h.last_trace_id).to_dict()
        with raw_engine(t.url).connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(S.contents)).scalar() == 0
    call = doc["llm_calls"][0]
    assert call["input_messages"] is None and call["raw_completion"] is None
    assert call["content_missing"] == "not_captured"
    assert call["tokens"]["input"] == 120 and call["retrieved"][0]["source_id"] == "pol-7#2"
    raw = open(sqlite_url.removeprefix("sqlite:///"), "rb").read()
    assert b"my secret question" not in raw


def test_per_request_capture_via_metadata(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke(
        {"question": "q"}, config={"callbacks": [h], "metadata": {"llmtrace_capture": "metadata"}})
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    assert doc["capture"] == "metadata" and doc["llm_calls"][0]["input_messages"] is None


def test_expired_content_reads_as_null_with_reason(sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(sqlite_url, content_ttl_days=1e-9) as t:
        h = LLMTraceCallbackHandler(t)
        simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [h]})
        call = t.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]
    assert call["raw_completion"] is None and call["content_missing"] == "expired"
    assert call["tokens"]["output"] == 30


def test_mechanism_tables_live_in_their_own_registry_with_a_schema_version(tracer):
    assert not any(name.startswith("llmtrace_") for name in SQLModel.metadata.tables)
    assert tracer.schema_version() == S.SCHEMA_VERSION
    tracer._store._ready = False
    tracer._store.ensure_schema()  # idempotent
    with raw_engine(tracer.url).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(S.migrations)).scalar() == S.SCHEMA_VERSION
        names = set(sa.inspect(conn).get_table_names())
    assert {t.name for t in S.METADATA.sorted_tables} <= names


def test_user_id_is_hashed_never_raw(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke(
        {"question": "q"}, config={"callbacks": [h], "metadata": {"llmtrace_user_id": "alice@example.com"}})
    first = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["user_id"]
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke(
        {"question": "q"}, config={"callbacks": [h], "metadata": {"llmtrace_user_id": "alice@example.com"}})
    assert sqlite_tracer.get_trace(h.last_trace_id).to_dict()["user_id"] == first  # joinable
    sqlite_tracer.flush()
    with raw_engine(sqlite_tracer.url).connect() as conn:
        rows = [repr(tuple(r)) for t in S.METADATA.sorted_tables for r in conn.execute(sa.select(t))]
    assert not any("alice@example.com" in r for r in rows)


def test_mechanism_health_counts_and_queue_full_policy(sqlite_url):
    with llmtrace.Tracer(sqlite_url, queue_size=5, on_queue_full="drop", batch_size=5) as t:
        t._writer.stopping = True  # hold the writer so the queue fills
        t._writer.wake.set()
        t._writer.thread.join()
        for _ in range(8):
            t.record_feedback("t1", "accepted")
        h = t.health()
        assert h["queue_depth"] == 5 and h["dropped"] == 3 and h["writer_alive"] is False
        t._writer.start()
        assert t.flush(10) is False  # written, but 3 records were dropped: the flush says so (issue 17 item 6)
        assert t.flush(10)  # (nothing lost since)
        h = t.health()
        assert h["queue_depth"] == 0 and h["records_written"] == 5 and h["failed"] == 0


def test_database_down_is_counted_never_raised(tmp_path):
    from llmtrace_langchain import LLMTraceCallbackHandler

    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    with llmtrace.Tracer(url, write_retries=1, spill_dir=str(tmp_path)) as t:
        h = LLMTraceCallbackHandler(t)
        out = simple_chain(ScriptedChatModel(script=[answer("still answers")])).invoke(
            {"question": "q"}, config={"callbacks": [h]})
        assert out == "still answers"
        assert t.flush(1) is False  # not written: the flush says so (issue 17 item 6)
        h = t.health()
        assert h["unwritten"] > 0 and h["write_errors"] >= 1 and "OperationalError" in h["last_error"]
        t.close(timeout=0)  # what could not be written is kept in a local file, not dropped (issue 17 item 2)
        h = t.health()
        assert h["failed"] == 0 and h["spilled"] > 0 and h["spilled"] == h["unwritten"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_mechanism_writer_restarts_after_fork(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    tid = new_id()
    pid = os.fork()
    if pid == 0:  # child: record through the inherited tracer, then exit through the atexit drain
        code = 1
        try:
            h = LLMTraceCallbackHandler(sqlite_tracer)
            simple_chain(ScriptedChatModel(script=[answer("from child")])).invoke(
                {"question": "q"}, config={"callbacks": [h], "metadata": {"llmtrace_trace_id": tid}})
            alive = sqlite_tracer._writer.thread.is_alive() and sqlite_tracer._writer.checkpointer.thread.is_alive()
            code = 0 if sqlite_tracer.flush(20) and alive else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sqlite_tracer.get_trace(tid).to_dict()["llm_calls"][0]["raw_completion"] == "from child"


@pytest.mark.parametrize("kwargs, says", [
    ({"action": "rated", "score": 10**400}, "score must be a finite number"),
    ({"action": "rated", "score": float("nan")}, "score must be a finite number"),
    ({"action": "rated", "score": "4"}, "score must be a finite number"),
    ({"action": "edited", "correction": 42}, "correction must be text"),
    ({"action": "accepted", "source": ""}, "source must be a short name"),
    ({"action": None}, "action must be one of"),
])
def test_bad_feedback_is_an_llmtrace_error_that_says_what_to_pass(sqlite_tracer, kwargs, says):
    with pytest.raises(llmtrace.InvalidFeedback, match=says):
        sqlite_tracer.record_feedback("t-1", **kwargs)
    with pytest.raises(llmtrace.ConfigError, match="span_id must be"):
        sqlite_tracer.record_validation("t-1", rule="r", passed=True, span_id=object())
