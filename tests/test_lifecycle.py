"""What happens around the calls: async callbacks without a thread hop, abandoned streams, exit drain."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid

from conftest import new_id
from fakes import ScriptedChatModel, answer, simple_chain


def test_async_callbacks_run_inline_on_the_event_loop_thread(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    threads: set[int] = set()

    class Spy(LLMTraceCallbackHandler):
        def on_chain_start(self, *args, **kwargs):
            threads.add(threading.get_ident())
            return super().on_chain_start(*args, **kwargs)

        def on_llm_end(self, *args, **kwargs):
            threads.add(threading.get_ident())
            return super().on_llm_end(*args, **kwargs)

    h = Spy(sqlite_tracer)
    loop_thread: list[int] = []

    async def main():
        loop_thread.append(threading.get_ident())
        await simple_chain(ScriptedChatModel(script=[answer("x")])).ainvoke({"question": "q"}, config={"callbacks": [h]})

    asyncio.run(main())
    assert threads == set(loop_thread)
    assert sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]["raw_completion"] == "x"


def test_stream_stopped_early_leaves_nothing_open_and_keeps_the_partial_answer(sqlite_tracer):
    # LangChain ends a closed stream's runs normally (output None), so the record shows what the
    # consumer received: the partial completion, with no span left open.
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    chain = simple_chain(ScriptedChatModel(script=[answer("one two three four five six")]))
    stream = chain.stream({"question": "q"}, config={"callbacks": [h]})
    first = next(stream)
    assert first == "one"
    stream.close()  # the consumer stops reading
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    assert all(s["ended_at"] for s in doc["spans"])
    [call] = doc["llm_calls"]
    assert call["raw_completion"].startswith("one")  # what the model produced before the stream closed
    assert call["latency_ms"]["ttft"] is not None
    assert doc["spans"][0]["outputs"] is None
    assert sqlite_tracer.health()["open_spans"] == 0


def test_exit_drains_what_is_queued(sqlite_url):
    tid = new_id()
    code = f"""
import sys
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
import llmtrace
from llmtrace_langchain import LLMTraceCallbackHandler
from fakes import ScriptedChatModel, answer, simple_chain
tracer = llmtrace.Tracer({sqlite_url!r}, flush_interval_seconds=60)  # the writer would wait a minute
h = LLMTraceCallbackHandler(tracer)
simple_chain(ScriptedChatModel(script=[answer("written at exit")])).invoke(
    {{"question": "q"}}, config={{"callbacks": [h], "metadata": {{"llmtrace_trace_id": {tid!r}}}}})
tracer.record_feedback({tid!r}, "accepted")
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    import llmtrace

    with llmtrace.Tracer(sqlite_url) as t:
        doc = t.get_trace(tid).to_dict()
    assert doc["llm_calls"][0]["raw_completion"] == "written at exit"
    assert [f["action"] for f in doc["feedback"]] == ["accepted"]


def test_mechanism_default_tracer_from_environment(tmp_path, monkeypatch):
    import llmtrace
    from llmtrace import _tracer
    from llmtrace_langchain import LLMTraceCallbackHandler

    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("LLMTRACE_DATABASE_URL", url)
    monkeypatch.setattr(_tracer, "_default", None)
    h = LLMTraceCallbackHandler()
    assert h.tracer.url == url
    run_id = uuid.uuid4()
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [h], "run_id": run_id})
    assert llmtrace.default_tracer().get_trace(str(run_id)).trace_id == str(run_id)
    h.tracer.close()


def test_a_child_that_starts_after_its_parent_ended_stays_in_its_trace_and_capture_mode(sqlite_tracer):
    # The recorder remembers ended spans as plain ids (not the trace objects, which the app's
    # garbage collector would have to carry): a late child still joins its trace, with the trace's
    # capture mode, whether the trace ended a moment ago or a hundred traces ago.
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    for others in (0, 100):
        root, child = uuid.uuid4(), uuid.uuid4()
        h.on_chain_start({}, {"q": "x"}, run_id=root, name="root", metadata={"llmtrace_capture": "metadata"})
        h.on_chain_end({"a": "done"}, run_id=root)
        for i in range(others):  # other traces end in between
            run = uuid.uuid4()
            h.on_chain_start({}, {"q": i}, run_id=run, name="other")
            h.on_chain_end({"a": i}, run_id=run)
        h.on_chain_start({}, {"q": "late, from ann@example.com"}, run_id=child, parent_run_id=root, name="late")
        h.on_chain_end({"a": "ann@example.com"}, run_id=child)
        sqlite_tracer.flush()
        spans = sqlite_tracer.get_trace(str(root)).to_dict()["spans"]
        assert [(s["name"], s["parent_id"]) for s in spans] == [("root", None), ("late", str(root))]
        assert all(s["inputs"] is None and s["outputs"] is None for s in spans)  # metadata: no content


def test_mechanism_a_span_that_never_ends_is_closed_as_abandoned_by_the_writer(sqlite_url, monkeypatch):
    import time

    import llmtrace
    from llmtrace.capture import writer as _writer
    from llmtrace_langchain import LLMTraceCallbackHandler

    monkeypatch.setattr(_writer, "_SWEEP_EVERY_S", 0.05)
    with llmtrace.Tracer(sqlite_url, open_span_timeout_seconds=0.2, flush_interval_seconds=0.05) as tracer:
        h = LLMTraceCallbackHandler(tracer)
        run_id = uuid.uuid4()
        h.on_chain_start({}, {"question": "q"}, run_id=run_id, name="StreamNobodyFinished")  # and no end
        assert tracer.flush(10) and tracer.health()["open_spans"] == 1  # (a flush never sweeps)
        deadline = time.monotonic() + 10
        while tracer.health()["open_spans"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tracer.health()["abandoned_spans"] == 1 and tracer.flush(10)
        [span] = tracer.get_trace(str(run_id)).to_dict()["spans"]
    assert span["name"] == "StreamNobodyFinished" and span["status"] == "error"
    assert "abandoned" in span["error"]["message"]
