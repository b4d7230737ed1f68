"""Tool calls: a hand-written loop and a LangGraph agent from langchain.agents.create_agent."""

from __future__ import annotations

import asyncio

import pytest
from fakes import ScriptedChatModel, answer, tool_call
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order by id."""
    return f"order {order_id}: blender, delivered 2026-11-10, 49.00 EUR"


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    raise RuntimeError("payments service unavailable (503)")


def hand_loop(model, tools):
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)

    def loop(question: str) -> str:
        messages = [SystemMessage("You handle refunds."), HumanMessage(question)]
        while True:
            ai = bound.invoke(messages)
            messages.append(ai)
            if not ai.tool_calls:
                return ai.content
            for tc in ai.tool_calls:
                try:
                    messages.append(by_name[tc["name"]].invoke(tc))
                except Exception as exc:  # the app reports the failure to the model
                    messages.append(ToolMessage(str(exc), tool_call_id=tc["id"], status="error"))

    return RunnableLambda(loop, name="refund_agent")


def test_hand_written_tool_loop(tracer, handler):
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "call_1")], finish="tool_calls"),
        answer("Your blender order A-1 can be refunded."),
    ])
    out = hand_loop(model, [lookup_order]).invoke("refund A-1?", config={"callbacks": [handler]})
    assert out == "Your blender order A-1 can be refunded."
    doc = tracer.get_trace(handler.last_trace_id).to_dict()
    first, second = doc["llm_calls"]
    assert first["finish_reason"] == "tool_calls"
    assert first["tools_offered"][0]["name"] == "lookup_order"
    assert first["tools_offered"][0]["parameters"]["properties"]["order_id"]["type"] == "string"
    assert "tools" not in (first["params"] or {})
    [tc] = first["tool_calls"]
    assert tc["id"] == "call_1" and tc["name"] == "lookup_order" and tc["args"] == {"order_id": "A-1"}
    assert tc["result"].startswith("order A-1: blender")
    assert tc["status"] == "ok" and tc["latency_ms"] >= 0 and tc["span_id"]
    tool_span = next(s for s in doc["spans"] if s["span_id"] == tc["span_id"])
    assert tool_span["kind"] == "tool" and tool_span["name"] == "lookup_order"
    # the second call saw the tool round-trip in its input and accounts for its time
    assert [m["role"] for m in second["input_messages"]] == ["system", "user", "assistant", "tool"]
    assert second["input_messages"][2]["tool_calls"][0]["id"] == "call_1"
    assert second["input_messages"][3]["tool_call_id"] == "call_1"
    assert second["latency_ms"]["tools"] == pytest.approx(tc["latency_ms"])
    assert second["tool_calls"] == []


def test_failed_tools_raised_and_error_message(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("issue_refund", {"order_id": "A-1", "amount": 49.0}, "call_9")]),
        answer("Sorry, refunds are down."),
    ])
    hand_loop(model, [issue_refund]).invoke("refund", config={"callbacks": [h]})
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    [tc] = doc["llm_calls"][0]["tool_calls"]
    assert tc["status"] == "error" and tc["args"] == {"order_id": "A-1", "amount": 49.0}
    tool_span = next(s for s in doc["spans"] if s["kind"] == "tool")
    assert tool_span["error"]["type"] == "server_error" and "503" in tool_span["error"]["message"]
    assert doc["status"] == "ok"  # the app handled it


def test_tool_returning_error_toolmessage_is_failed(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    @tool
    def refuses(q: str):
        """Refuses."""
        return ToolMessage("refused: quota", tool_call_id="call_5", status="error")

    h = LLMTraceCallbackHandler(sqlite_tracer)
    refuses.invoke({"name": "refuses", "args": {"q": "x"}, "id": "call_5", "type": "tool_call"},
                   config={"callbacks": [h]})
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    [span] = doc["spans"]
    assert span["kind"] == "tool" and span["status"] == "error"
    assert span["error"]["message"] == "refused: quota"
    assert span["inputs"] == {"q": "x"}


def test_create_agent_langgraph(tracer, handler):
    from langchain.agents import create_agent

    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "B-7"}, "call_b7")]),
        answer("Order B-7 was delivered on 2026-11-10."),
    ])
    agent = create_agent(model, tools=[lookup_order], system_prompt="You handle refunds.")
    result = agent.invoke({"messages": [HumanMessage("where is B-7?")]},
                          config={"callbacks": [handler], "metadata": {"llmtrace_feature": "orders"}})
    assert result["messages"][-1].content == "Order B-7 was delivered on 2026-11-10."
    doc = tracer.get_trace(handler.last_trace_id).to_dict()
    assert doc["feature"] == "orders" and doc["status"] == "ok"
    assert len(doc["llm_calls"]) == 2
    first, second = doc["llm_calls"]
    assert first["system_prompt"] == "You handle refunds."
    [tc] = first["tool_calls"]
    assert (tc["id"], tc["name"], tc["args"], tc["status"]) == ("call_b7", "lookup_order", {"order_id": "B-7"}, "ok")
    assert "B-7: blender" in tc["result"]
    assert second["latency_ms"]["tools"] is not None
    assert second["raw_completion"] == "Order B-7 was delivered on 2026-11-10."
    assert len({s["span_id"] for s in doc["spans"] if s["parent_id"] is None}) == 1


def test_create_agent_async(sqlite_tracer):
    from langchain.agents import create_agent

    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "C-3"}, "call_c3")]),
        answer("C-3 is on its way."),
    ])
    agent = create_agent(model, tools=[lookup_order])
    asyncio.run(agent.ainvoke({"messages": [HumanMessage("C-3?")]}, config={"callbacks": [h]}))
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    assert [c["tool_calls"][0]["id"] for c in doc["llm_calls"] if c["tool_calls"]] == ["call_c3"]
    assert doc["llm_calls"][0]["tool_calls"][0]["status"] == "ok"
