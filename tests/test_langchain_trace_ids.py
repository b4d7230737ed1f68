"""Knowing a request's trace id (issue 14 item 14): ``llmtrace.current_trace_id()`` in the thread or
task that ran the request — after invoke, ainvoke, stream and astream return, from many threads and
tasks at once through one handler — and the ways to choose the id up front."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fakes import ScriptedChatModel, answer, simple_chain

import llmtrace

N = 6


def run(chain, mode: str, config: dict):
    inp = {"question": "q"}
    if mode == "invoke":
        return chain.invoke(inp, config=config)
    if mode == "stream":
        return "".join(chain.stream(inp, config=config))

    async def go():
        if mode == "ainvoke":
            out = await chain.ainvoke(inp, config=config)
        else:
            out = "".join([piece async for piece in chain.astream(inp, config=config)])
        return out, llmtrace.current_trace_id()  # (a task's context: read inside it)

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_current_trace_id_after_a_sync_request_names_its_trace(sqlite_tracer, mode):
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)
    out = run(simple_chain(ScriptedChatModel(script=[answer("the answer")])), mode, {"callbacks": [handler]})
    assert out == "the answer"
    trace_id = llmtrace.current_trace_id()
    assert trace_id is not None and trace_id == handler.last_trace_id
    sqlite_tracer.flush()
    [call] = sqlite_tracer.get_trace(trace_id).to_dict()["llm_calls"]
    assert call["raw_completion"] == "the answer"


@pytest.mark.parametrize("mode", ["ainvoke", "astream"])
def test_current_trace_id_inside_an_async_request_names_its_trace(sqlite_tracer, mode):
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)
    out, trace_id = run(simple_chain(ScriptedChatModel(script=[answer("async answer")])), mode, {"callbacks": [handler]})
    assert out == "async answer" and trace_id == handler.last_trace_id
    sqlite_tracer.flush()
    assert sqlite_tracer.get_trace(trace_id).to_dict()["llm_calls"][0]["raw_completion"] == "async answer"


def test_threads_each_know_their_own_trace_while_last_trace_id_is_shared(sqlite_tracer):
    """In a server, last_trace_id is whichever request started last; current_trace_id() is yours."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)
    start = threading.Barrier(N)

    def request(i: int) -> tuple[int, str | None]:
        chain = simple_chain(ScriptedChatModel(script=[answer(f"answer {i}")]))
        start.wait()
        chain.invoke({"question": f"q{i}"}, config={"callbacks": [handler]})
        return i, llmtrace.current_trace_id()

    with ThreadPoolExecutor(N) as pool:
        seen = dict(pool.map(request, range(N)))
    assert len(set(seen.values())) == N and None not in seen.values()
    sqlite_tracer.flush()
    for i, trace_id in seen.items():
        [call] = sqlite_tracer.get_trace(trace_id).to_dict()["llm_calls"]
        assert call["raw_completion"] == f"answer {i}"
    assert handler.last_trace_id in seen.values()  # one of them: not necessarily this thread's


def test_asyncio_tasks_each_know_their_own_trace(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)

    async def request(i: int) -> tuple[int, str | None]:
        chain = simple_chain(ScriptedChatModel(script=[answer(f"answer {i}")]))
        await chain.ainvoke({"question": f"q{i}"}, config={"callbacks": [handler]})
        return i, llmtrace.current_trace_id()

    async def main():
        return await asyncio.gather(*(request(i) for i in range(N)))

    seen = dict(asyncio.run(main()))
    assert len(set(seen.values())) == N
    sqlite_tracer.flush()
    for i, trace_id in seen.items():
        assert sqlite_tracer.get_trace(trace_id).to_dict()["llm_calls"][0]["raw_completion"] == f"answer {i}"


def test_the_id_chosen_up_front(sqlite_tracer):
    """Three ways to know the id before the request runs: metadata, the root run's id, a trace scope."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)

    def chain():
        return simple_chain(ScriptedChatModel(script=[answer("ok")]))

    chain().invoke({"question": "q"}, config={"callbacks": [handler], "metadata": {"llmtrace_trace_id": "order-77"}})
    assert llmtrace.current_trace_id() == "order-77"
    run_id = uuid.uuid4()
    chain().invoke({"question": "q"}, config={"callbacks": [handler], "run_id": run_id})
    assert llmtrace.current_trace_id() == str(run_id)
    with sqlite_tracer.trace(name="scoped") as t:
        chain().invoke({"question": "q"}, config={"callbacks": [handler]})
        assert llmtrace.current_trace_id() == t.trace_id
    sqlite_tracer.flush()
    for trace_id in ("order-77", str(run_id), t.trace_id):
        assert sqlite_tracer.get_trace(trace_id).to_dict()["llm_calls"][0]["raw_completion"] == "ok"
