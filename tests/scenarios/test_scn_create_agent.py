"""langchain.agents.create_agent, the prebuilt agent loop on LangGraph: every LLM call, every tool
call's arguments and result joined by tool-call id, a tool that fails, the final answer, streaming
and the structured response."""

from __future__ import annotations

import asyncio

from fakes import ScriptedChatModel, answer, tool_call
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import StructuredTool, ToolException, tool
from pydantic import BaseModel

from .scn_support import path


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order by id."""
    return f"order {order_id}: delivered"


def _refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    raise ToolException("payments service unavailable")


refund = StructuredTool.from_function(_refund, name="refund", handle_tool_error=True)


def three_round_model():
    return ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "call_a"),
                               tool_call("lookup_order", {"order_id": "B-2"}, "call_b")], finish="tool_calls"),
        answer("", tool_calls=[tool_call("refund", {"order_id": "A-1", "amount": 49.0}, "call_r")], finish="tool_calls"),
        answer("A-1 and B-2 were delivered; the refund of A-1 failed, please retry later."),
    ])


def test_agent_loop_every_call_tool_and_the_final_answer(scn_tracer, scn_handler):
    agent = create_agent(three_round_model(), tools=[lookup_order, refund], system_prompt="You handle orders.")
    out = agent.invoke({"messages": [HumanMessage("status of A-1 and B-2, and refund A-1")]},
                       config={"callbacks": [scn_handler], "metadata": {"llmtrace_feature": "orders"}})
    final = "A-1 and B-2 were delivered; the refund of A-1 failed, please retry later."
    assert out["messages"][-1].content == final

    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert doc["feature"] == "orders" and doc["status"] == "ok"
    assert len([s for s in doc["spans"] if s["parent_id"] is None]) == 1
    first, second, third = doc["llm_calls"]
    assert all(c["system_prompt"] == "You handle orders." for c in (first, second, third))
    assert [t["name"] for t in first["tools_offered"]] == ["lookup_order", "refund"]
    assert first["tools_offered"][1]["parameters"]["properties"]["amount"]["type"] == "number"

    lookups = {t["id"]: (t["name"], t["args"], t["result"], t["status"]) for t in first["tool_calls"]}
    assert lookups == {"call_a": ("lookup_order", {"order_id": "A-1"}, "order A-1: delivered", "ok"),
                       "call_b": ("lookup_order", {"order_id": "B-2"}, "order B-2: delivered", "ok")}
    [failed] = second["tool_calls"]
    assert (failed["id"], failed["name"], failed["args"]) == ("call_r", "refund", {"order_id": "A-1", "amount": 49.0})
    assert failed["status"] == "error" and "payments service unavailable" in failed["error"]
    assert third["tool_calls"] == [] and third["raw_completion"] == final and third["finish_reason"] == "stop"

    # each call's input is the conversation so far, tool results under their request's id
    assert [(m["role"], m.get("tool_call_id")) for m in third["input_messages"]] == [
        ("system", None), ("user", None), ("assistant", None), ("tool", "call_a"), ("tool", "call_b"),
        ("assistant", None), ("tool", "call_r")]
    assert third["input_messages"][2]["tool_calls"][1] == {"id": "call_b", "name": "lookup_order", "args": {"order_id": "B-2"}}
    assert all(path(doc, c["span_id"]) == ["LangGraph", "model", "ScriptedChatModel"] for c in doc["llm_calls"])
    tool_paths = [path(doc, s["span_id"]) for s in doc["spans"] if s["kind"] == "tool"]
    assert sorted(tool_paths) == [["LangGraph", "tools", "lookup_order"]] * 2 + [["LangGraph", "tools", "refund"]]
    assert doc["totals"]["llm_calls"] == 3 and doc["totals"]["input_tokens"] == 360
    assert doc["totals"]["errors"] == 1  # the refund tool really failed


def test_agent_streamed_messages_and_async(scn_tracer, scn_handler):
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "C-3"}, "call_c")], finish="tool_calls"),
        answer("Order C-3 was delivered yesterday."),
    ])
    agent = create_agent(model, tools=[lookup_order])

    async def main():
        pieces = []
        async for msg, _meta in agent.astream({"messages": [HumanMessage("C-3?")]}, stream_mode="messages",
                                              config={"callbacks": [scn_handler]}):
            if msg.type == "AIMessageChunk" and msg.content:
                pieces.append(msg.content)
        return "".join(pieces)

    assert asyncio.run(main()) == "Order C-3 was delivered yesterday."
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    first, second = doc["llm_calls"]
    [tc] = first["tool_calls"]
    assert (tc["id"], tc["args"], tc["result"], tc["status"]) == ("call_c", {"order_id": "C-3"}, "order C-3: delivered", "ok")
    assert second["streamed"] is True and second["raw_completion"] == "Order C-3 was delivered yesterday."
    assert 0 < second["latency_ms"]["ttft"] <= second["latency_ms"]["total"]
    assert second["tokens"] == {"input": 120, "output": 30, "total": 150, "input_cached": 20, "input_cache_write": None, "reasoning": 5}


class OrderStatus(BaseModel):
    status: str
    orders: list[str]


def test_agent_structured_response_is_the_parsed_result(scn_tracer, scn_handler):
    from langchain.agents.structured_output import ToolStrategy

    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "call_a")], finish="tool_calls"),
        answer("", tool_calls=[tool_call("OrderStatus", {"status": "delivered", "orders": ["A-1"]}, "call_s")],
               finish="tool_calls"),
    ])
    agent = create_agent(model, tools=[lookup_order], response_format=ToolStrategy(OrderStatus))
    out = agent.invoke({"messages": [HumanMessage("A-1?")]}, config={"callbacks": [scn_handler]})
    assert out["structured_response"] == OrderStatus(status="delivered", orders=["A-1"])
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    first, second = doc["llm_calls"]
    assert first["parsed"] is None
    assert second["parsed"] == {"status": "delivered", "orders": ["A-1"]}
    assert [(v["rule"], v["passed"]) for v in second["validations"]] == [("schema", True)]
