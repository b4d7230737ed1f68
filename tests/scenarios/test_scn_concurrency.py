"""Many requests at once through ONE handler, as a web server runs them: from several threads and
as asyncio tasks. Each trace must hold exactly its own request's calls, and the request must be able
to know its own trace id (handler.last_trace_id is shared by every thread: issue 14 item 14)."""

from __future__ import annotations

import asyncio
import operator
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypedDict

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph

import llmtrace

from .scn_support import EchoChatModel, all_trace_ids

N = 8
PROMPT = ChatPromptTemplate.from_messages([("system", "Echo the customer."), ("human", "{q}")])


def echo_chain():
    return PROMPT | EchoChatModel(delay=0.02) | StrOutputParser()


def check_own_calls(tracer, trace_id: str, question: str, calls: int = 1) -> dict:
    doc = tracer.get_trace(trace_id).to_dict()
    assert len(doc["llm_calls"]) == calls, f"{trace_id}: {[c['input_messages'] for c in doc['llm_calls']]}"
    for call in doc["llm_calls"]:
        assert question in call["input_messages"][-1]["content"]
        assert call["raw_completion"].startswith("echo: ") and question in call["raw_completion"]
    assert len([s for s in doc["spans"] if s["parent_id"] is None]) == 1
    return doc


def test_threads_share_one_handler_and_keep_their_traces_apart(scn_tracer, scn_handler):
    chain = echo_chain()
    start = threading.Barrier(N)

    def request(i: int) -> str:
        start.wait()
        config = {"callbacks": [scn_handler], "metadata": {"llmtrace_trace_id": f"thread-req-{i}",
                                                            "llmtrace_user_id": f"user-{i}"}}
        return chain.invoke({"q": f"order number {i}"}, config=config)

    with ThreadPoolExecutor(N) as pool:
        answers = list(pool.map(request, range(N)))
    assert answers == [f"echo: order number {i}" for i in range(N)]
    assert sorted(all_trace_ids(scn_tracer)) == sorted(f"thread-req-{i}" for i in range(N))
    users = set()
    for i in range(N):
        doc = check_own_calls(scn_tracer, f"thread-req-{i}", f"order number {i}")
        assert doc["llm_calls"][0]["parsed"] == f"echo: order number {i}"
        users.add(doc["user_id"])
    assert len(users) == N and None not in users


def test_asyncio_tasks_share_one_handler_and_keep_their_traces_apart(scn_tracer, scn_handler):
    chain = echo_chain()

    async def by_metadata(i: int) -> str:
        return await chain.ainvoke({"q": f"task {i}"}, config={"callbacks": [scn_handler],
                                                               "metadata": {"llmtrace_trace_id": f"task-req-{i}"}})

    async def by_scope(i: int) -> tuple[str, str]:
        with scn_tracer.trace(name="scoped-request", user_id=f"user-{i}") as t:
            await chain.ainvoke({"q": f"scoped {i}"}, config={"callbacks": [scn_handler]})
        return t.trace_id, f"scoped {i}"

    async def main():
        return await asyncio.gather(*(by_metadata(i) for i in range(N)), *(by_scope(i) for i in range(N)))

    results = asyncio.run(main())
    assert results[:N] == [f"echo: task {i}" for i in range(N)]
    for i in range(N):
        check_own_calls(scn_tracer, f"task-req-{i}", f"task {i}")
    scoped = results[N:]
    assert len({tid for tid, _ in scoped}) == N
    for trace_id, question in scoped:
        assert check_own_calls(scn_tracer, trace_id, question)["name"] == "scoped-request"
    assert len(all_trace_ids(scn_tracer)) == 2 * N


class Branches(TypedDict, total=False):
    q: str
    parts: Annotated[list, operator.add]


def test_concurrent_graphs_with_parallel_branches(scn_tracer, scn_handler):
    """LangGraph runs each request's branches on its own thread pool: still one trace per request."""
    model = EchoChatModel(delay=0.01)

    def branch(tag):
        return lambda state: {"parts": [model.invoke(f"{tag} {state['q']}").content]}

    g = StateGraph(Branches)
    g.add_node("a", branch("a"))
    g.add_node("b", branch("b"))
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge(["a", "b"], END)
    app = g.compile()

    def request(i: int):
        return app.invoke({"q": f"graph {i}"}, config={"callbacks": [scn_handler],
                                                       "metadata": {"llmtrace_trace_id": f"graph-req-{i}"}})

    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(request, range(N)))
    assert [sorted(o["parts"]) for o in outs] == [[f"echo: a graph {i}", f"echo: b graph {i}"] for i in range(N)]
    for i in range(N):
        doc = check_own_calls(scn_tracer, f"graph-req-{i}", f"graph {i}", calls=2)
        assert sorted(c["input_messages"][-1]["content"] for c in doc["llm_calls"]) == [f"a graph {i}", f"b graph {i}"]


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_current_trace_id_inside_the_request_names_its_own_trace(scn_tracer, scn_handler, mode):
    """Inside the request (a step of the chain), the app asks for the trace id to attach feedback to."""
    seen: dict[int, str] = {}

    def remember(i):
        def step(x):
            seen[i] = llmtrace.current_trace_id()
            return x

        return RunnableLambda(step, name="remember_trace_id")

    def chain_for(i):
        return PROMPT | EchoChatModel(delay=0.02) | StrOutputParser() | remember(i)

    if mode == "threads":
        with ThreadPoolExecutor(N) as pool:
            list(pool.map(lambda i: chain_for(i).invoke({"q": f"req {i}"}, config={"callbacks": [scn_handler]}), range(N)))
    else:
        async def main():
            await asyncio.gather(*(chain_for(i).ainvoke({"q": f"req {i}"}, config={"callbacks": [scn_handler]})
                                   for i in range(N)))

        asyncio.run(main())
    assert len(set(seen.values())) == N
    for i, trace_id in seen.items():
        check_own_calls(scn_tracer, trace_id, f"req {i}")
