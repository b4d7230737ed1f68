"""LangGraph graphs as users build them — interrupt/resume, subgraphs, Command routing, parallel
branches, ToolNode, node retries — recorded through one LLMTraceCallbackHandler, on LangChain's
own fake chat model (tests/fakes.py)."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

import pytest
from fakes import ScriptedChatModel, answer, tool_call
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, RetryPolicy, Send, interrupt

from .scn_support import errors, path, spans_named


class RateLimited(Exception):
    status_code = 429


# -- interrupt / resume ------------------------------------------------------------------------

class Review(TypedDict, total=False):
    question: str
    draft: str
    final: str


def review_graph(model):
    def draft(state):
        return {"draft": model.invoke(state["question"]).content}

    def human_review(state):
        verdict = interrupt({"draft": state["draft"], "ask": "approve?"})
        return {"final": model.invoke(f"{state['draft']} (reviewer: {verdict})").content}

    g = StateGraph(Review)
    g.add_node("draft", draft)
    g.add_node("human_review", human_review)
    g.add_edge(START, "draft")
    g.add_edge("draft", "human_review")
    g.add_edge("human_review", END)
    return g.compile(checkpointer=InMemorySaver())


def run_review(handler, thread: str = "thread-1"):
    model = ScriptedChatModel(script=[answer("Draft: refund approved."), answer("Final: refund approved, 49 EUR.")])
    app = review_graph(model)
    config = {"callbacks": [handler], "configurable": {"thread_id": thread}}
    paused = app.invoke({"question": "refund order A-1?"}, config=config)
    paused_id = handler.last_trace_id
    done = app.invoke(Command(resume="yes"), config=config)
    return paused, paused_id, done, handler.last_trace_id


def test_interrupt_and_resume_record_what_ran(scn_tracer, scn_handler):
    paused, paused_id, done, resumed_id = run_review(scn_handler)
    assert paused["__interrupt__"][0].value["ask"] == "approve?"
    assert done["final"] == "Final: refund approved, 49 EUR."
    first = scn_tracer.get_trace(paused_id).to_dict()
    second = scn_tracer.get_trace(resumed_id).to_dict()
    assert paused_id != resumed_id  # a resume is a request of its own...
    assert first["metadata"]["thread_id"] == second["metadata"]["thread_id"] == "thread-1"  # ...linked by thread
    assert [c["raw_completion"] for c in first["llm_calls"]] == ["Draft: refund approved."]
    assert [c["raw_completion"] for c in second["llm_calls"]] == ["Final: refund approved, 49 EUR."]
    assert second["llm_calls"][0]["input_messages"][-1]["content"] == "Draft: refund approved. (reviewer: yes)"
    assert first["status"] == second["status"] == "ok"
    assert path(second, second["llm_calls"][0]["span_id"]) == ["LangGraph", "human_review", "ScriptedChatModel"]


def test_interrupt_is_not_an_error(scn_tracer, scn_handler):
    _, paused_id, _, _ = run_review(scn_handler)
    doc = scn_tracer.get_trace(paused_id).to_dict()
    assert errors(doc) == []
    assert doc["totals"]["errors"] == 0
    [node] = spans_named(doc, "human_review")
    assert node["status"] == "ok" and node["error"] is None
    assert scn_tracer.find_traces(error_type="other") == []


def test_same_trace_id_stitches_pause_and_resume(scn_tracer, scn_handler):
    """The documented way to make a paused and resumed conversation one trace: choose its id."""
    model = ScriptedChatModel(script=[answer("Draft."), answer("Final.")])
    app = review_graph(model)
    config = {"callbacks": [scn_handler], "configurable": {"thread_id": "t-stitch"},
              "metadata": {"llmtrace_trace_id": "conversation-42"}, "run_name": "support-graph"}
    app.invoke({"question": "q"}, config=config)
    app.invoke(Command(resume="ok"), config=config)
    doc = scn_tracer.get_trace("conversation-42").to_dict()
    assert doc["name"] == "support-graph"
    assert [c["raw_completion"] for c in doc["llm_calls"]] == ["Draft.", "Final."]
    roots = [s for s in doc["spans"] if s["parent_id"] is None]
    assert len(roots) == 2 and doc["started_at"] == roots[0]["started_at"] and doc["ended_at"] == roots[1]["ended_at"]


@tool
def approve_refund(order_id: str) -> str:
    """Ask a human to approve a refund."""
    verdict = interrupt({"approve_refund": order_id})
    return f"refund {order_id}: {verdict}"


def test_tool_that_asks_a_human_is_paused_not_failed(scn_tracer, scn_handler):
    from langchain.agents import create_agent

    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("approve_refund", {"order_id": "A-1"}, "call_ok")], finish="tool_calls"),
        answer("The refund was approved."),
    ])
    agent = create_agent(model, tools=[approve_refund], checkpointer=InMemorySaver())
    out = agent.invoke({"messages": [HumanMessage("refund A-1")]},
                       config={"callbacks": [scn_handler], "configurable": {"thread_id": "hitl"}})
    assert out["__interrupt__"][0].value == {"approve_refund": "A-1"}
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    [tc] = doc["llm_calls"][0]["tool_calls"]
    assert (tc["id"], tc["args"]) == ("call_ok", {"order_id": "A-1"})
    assert tc["status"] != "error" and tc["error"] is None
    assert doc["totals"]["errors"] == 0


# -- subgraphs ---------------------------------------------------------------------------------

class Notes(TypedDict, total=False):
    question: str
    notes: Annotated[list, operator.add]


def test_subgraph_is_one_trace_with_the_parent_chain(scn_tracer, scn_handler):
    inner_model = ScriptedChatModel(script=[answer("inner: policy 7 applies")], model="gpt-4o-mini")
    outer_model = ScriptedChatModel(script=[answer("outer: refund it")], model="gpt-4o")

    def research(state):
        return {"notes": [inner_model.invoke(state["question"]).content]}

    sub = StateGraph(Notes)
    sub.add_node("lookup_policy", research)
    sub.add_edge(START, "lookup_policy")
    sub.add_edge("lookup_policy", END)

    def decide(state):
        return {"notes": [outer_model.invoke("\n".join(state["notes"])).content]}

    g = StateGraph(Notes)
    g.add_node("research", sub.compile(name="research_graph"))
    g.add_node("decide", decide)
    g.add_edge(START, "research")
    g.add_edge("research", "decide")
    g.add_edge("decide", END)
    out = g.compile().invoke({"question": "refund?"}, config={"callbacks": [scn_handler]})
    assert out["notes"] == ["inner: policy 7 applies", "outer: refund it"]

    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert len([s for s in doc["spans"] if s["parent_id"] is None]) == 1
    inner, outer = doc["llm_calls"]
    assert (inner["model"], outer["model"]) == ("gpt-4o-mini", "gpt-4o")
    assert path(doc, inner["span_id"]) == ["LangGraph", "research", "research_graph", "lookup_policy", "ScriptedChatModel"]
    assert path(doc, outer["span_id"]) == ["LangGraph", "decide", "ScriptedChatModel"]
    assert outer["input_messages"][-1]["content"] == "inner: policy 7 applies"
    assert doc["totals"]["llm_calls"] == 2 and doc["totals"]["errors"] == 0


# -- Command routing ---------------------------------------------------------------------------

class Routed(TypedDict, total=False):
    visited: Annotated[list, operator.add]


def routing_graph():
    def router(state) -> Command:
        return Command(goto="support", update={"visited": ["router"]})

    def support(state):
        return {"visited": ["support"]}

    def escalate(state) -> Command:  # inside a subgraph: hands control back to the parent graph
        return Command(goto="billing", graph=Command.PARENT, update={"visited": ["triage"]})

    def billing(state):
        return {"visited": ["billing"]}

    triage = StateGraph(Routed)
    triage.add_node("escalate", escalate)
    triage.add_edge(START, "escalate")
    g = StateGraph(Routed)
    g.add_node("router", router, destinations=("support",))
    g.add_node("support", support)
    g.add_node("triage", triage.compile(), destinations=("billing",))
    g.add_node("billing", billing)
    g.add_edge(START, "router")
    g.add_edge("support", "triage")
    g.add_edge("billing", END)
    return g.compile()


def test_command_goto_routes_are_recorded_in_order(scn_tracer, scn_handler):
    out = routing_graph().invoke({"visited": []}, config={"callbacks": [scn_handler]})
    assert out["visited"] == ["router", "support", "triage", "billing"]
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    root = next(s for s in doc["spans"] if s["parent_id"] is None)
    nodes = [s["name"] for s in doc["spans"] if s["parent_id"] == root["span_id"]]
    assert nodes == ["router", "support", "triage", "billing"]
    assert doc["status"] == "ok"


def test_command_to_parent_is_not_an_error(scn_tracer, scn_handler):
    routing_graph().invoke({"visited": []}, config={"callbacks": [scn_handler]})
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert [s["name"] for s in errors(doc)] == []
    assert doc["totals"]["errors"] == 0


# -- parallel branches -------------------------------------------------------------------------

class FanOut(TypedDict, total=False):
    question: str
    answers: Annotated[list, operator.add]
    joined: str


def test_parallel_branches_fan_out_and_in(scn_tracer, scn_handler):
    policy = ScriptedChatModel(script=[answer("policy says 30 days")], model="policy-model")
    orders = ScriptedChatModel(script=[answer("order delivered 10 days ago")], model="orders-model")

    def ask(model):
        return lambda state: {"answers": [model.invoke(state["question"]).content]}

    def join(state):
        return {"joined": " / ".join(sorted(state["answers"]))}

    g = StateGraph(FanOut)
    g.add_node("policy", ask(policy))
    g.add_node("orders", ask(orders))
    g.add_node("join", join)
    g.add_edge(START, "policy")
    g.add_edge(START, "orders")
    g.add_edge(["policy", "orders"], "join")
    g.add_edge("join", END)
    out = g.compile().invoke({"question": "refund A-1?"}, config={"callbacks": [scn_handler]})
    assert out["joined"] == "order delivered 10 days ago / policy says 30 days"

    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    calls = {c["model"]: c for c in doc["llm_calls"]}
    assert set(calls) == {"policy-model", "orders-model"}
    assert path(doc, calls["policy-model"]["span_id"]) == ["LangGraph", "policy", "ScriptedChatModel"]
    assert path(doc, calls["orders-model"]["span_id"]) == ["LangGraph", "orders", "ScriptedChatModel"]
    assert calls["policy-model"]["raw_completion"] == "policy says 30 days"
    [join_span] = spans_named(doc, "join")
    assert join_span["started_at"] >= max(c["ended_at"] for c in doc["llm_calls"])  # fan-in after both
    assert doc["totals"] == {**doc["totals"], "llm_calls": 2, "input_tokens": 240, "output_tokens": 60, "errors": 0}


class MapState(TypedDict, total=False):
    orders: list[str]
    summaries: Annotated[list, operator.add]


class OneOrder(TypedDict):
    order: str


def test_send_map_reduce_one_call_per_item(scn_tracer, scn_handler):
    model = ScriptedChatModel(script=[answer("summary")])  # (the same answer: which call is which comes from the input)

    def fan(state):
        return [Send("summarize", {"order": o}) for o in state["orders"]]

    def summarize(state: OneOrder):
        return {"summaries": [f"{state['order']}: " + model.invoke(f"summarize {state['order']}").content]}

    g = StateGraph(MapState)
    g.add_node("summarize", summarize)
    g.add_conditional_edges(START, fan, ["summarize"])
    g.add_edge("summarize", END)
    out = g.compile().invoke({"orders": ["A-1", "B-2", "C-3"]}, config={"callbacks": [scn_handler]})
    assert sorted(out["summaries"]) == ["A-1: summary", "B-2: summary", "C-3: summary"]
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    asked = sorted(c["input_messages"][-1]["content"] for c in doc["llm_calls"])
    assert asked == ["summarize A-1", "summarize B-2", "summarize C-3"]
    assert all(path(doc, c["span_id"]) == ["LangGraph", "summarize", "ScriptedChatModel"] for c in doc["llm_calls"])


# -- ToolNode ----------------------------------------------------------------------------------

@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny, 21 C in {city}"


@tool
def get_time(city: str) -> str:
    """Local time in a city."""
    return f"12:00 in {city}"


def tool_graph(model):
    bound = model.bind_tools([get_weather, get_time])

    def agent(state):
        return {"messages": [bound.invoke(state["messages"])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode([get_weather, get_time]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    return g.compile()


def check_tool_node_trace(doc):
    first, second = doc["llm_calls"]
    assert [t["name"] for t in first["tools_offered"]] == ["get_weather", "get_time"]
    assert first["tools_offered"][0]["parameters"]["properties"]["city"]["type"] == "string"
    got = {t["id"]: (t["name"], t["args"], t["result"], t["status"]) for t in first["tool_calls"]}
    assert got == {"call_w": ("get_weather", {"city": "Oslo"}, "sunny, 21 C in Oslo", "ok"),
                   "call_t": ("get_time", {"city": "Lima"}, "12:00 in Lima", "ok")}
    tool_spans = {s["span_id"]: s for s in doc["spans"] if s["kind"] == "tool"}
    assert {t["span_id"] for t in first["tool_calls"]} == set(tool_spans)
    assert all(path(doc, sid)[:2] == ["LangGraph", "tools"] for sid in tool_spans)
    # the second call saw both results, each under the id of the request it answers
    fed = {m["tool_call_id"]: m["content"] for m in second["input_messages"] if m["role"] == "tool"}
    assert fed == {"call_w": "sunny, 21 C in Oslo", "call_t": "12:00 in Lima"}
    assert second["latency_ms"]["tools"] == pytest.approx(sum(t["latency_ms"] for t in first["tool_calls"]))
    assert second["raw_completion"] == "Oslo: sunny. Lima: noon."
    assert doc["totals"]["llm_calls"] == 2 and doc["totals"]["errors"] == 0


def scripted_weather_model():
    return ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("get_weather", {"city": "Oslo"}, "call_w"),
                               tool_call("get_time", {"city": "Lima"}, "call_t")], finish="tool_calls"),
        answer("Oslo: sunny. Lima: noon."),
    ])


def test_tool_node_joins_results_to_requests_by_id(scn_tracer, scn_handler):
    out = tool_graph(scripted_weather_model()).invoke({"messages": [HumanMessage("weather?")]},
                                                      config={"callbacks": [scn_handler]})
    assert out["messages"][-1].content == "Oslo: sunny. Lima: noon."
    check_tool_node_trace(scn_tracer.get_trace(scn_handler.last_trace_id).to_dict())


@tool
def get_forecast(city: str) -> str:
    """Tomorrow's forecast for a city."""
    raise ValueError(f"forecast service down for {city}")


def test_tool_node_failed_tool_time_is_the_next_calls_tools_latency(scn_tracer, scn_handler):
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("get_forecast", {"city": "Oslo"}, "call_f")], finish="tool_calls"),
        answer("The forecast is unavailable."),
    ])
    bound = model.bind_tools([get_forecast])
    g = StateGraph(MessagesState)
    g.add_node("agent", lambda state: {"messages": [bound.invoke(state["messages"])]})
    g.add_node("tools", ToolNode([get_forecast], handle_tool_errors=True))  # the error goes back to the model
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition)
    g.add_edge("tools", "agent")
    g.compile().invoke({"messages": [HumanMessage("forecast?")]}, config={"callbacks": [scn_handler]})
    first, second = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()["llm_calls"]
    [tc] = first["tool_calls"]
    assert (tc["id"], tc["status"]) == ("call_f", "error") and tc["latency_ms"] is not None
    fed = [m for m in second["input_messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in fed] == ["call_f"] and "forecast service down" in fed[0]["content"]
    assert second["latency_ms"]["tools"] == pytest.approx(tc["latency_ms"])


def test_tool_node_graph_on_every_database(tracer, handler):
    """The same LangGraph scenario on SQLite, PostgreSQL and MariaDB, with a caller-chosen id."""
    tid = f"scn-toolnode-{id(handler)}"
    tool_graph(scripted_weather_model()).invoke(
        {"messages": [HumanMessage("weather?")]},
        config={"callbacks": [handler], "metadata": {"llmtrace_trace_id": tid, "llmtrace_feature": "weather"}})
    doc = tracer.get_trace(tid).to_dict()
    assert doc["feature"] == "weather" and doc["status"] == "ok"
    check_tool_node_trace(doc)


@tool
def set_plan(plan: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """Record the plan in the graph state."""
    return Command(update={"messages": [ToolMessage(f"plan set: {plan}", tool_call_id=tool_call_id)]})


def test_tool_returning_command_records_the_message_the_model_saw(scn_tracer, scn_handler):
    from langchain.agents import create_agent

    model = ScriptedChatModel(script=[answer("", tool_calls=[tool_call("set_plan", {"plan": "refund"}, "call_p")]),
                                      answer("The plan is a refund.")])
    out = create_agent(model, tools=[set_plan]).invoke({"messages": [HumanMessage("plan?")]},
                                                       config={"callbacks": [scn_handler]})
    assert out["messages"][-1].content == "The plan is a refund."
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    [tc] = doc["llm_calls"][0]["tool_calls"]
    assert (tc["id"], tc["status"]) == ("call_p", "ok")
    assert tc["result"] == "plan set: refund"  # what the model got back (second call's tool message)
    assert doc["llm_calls"][1]["input_messages"][-1]["content"] == tc["result"]


# -- node retries ------------------------------------------------------------------------------

class Out(TypedDict, total=False):
    out: str


def test_node_retry_policy_counts_the_failed_attempt(scn_tracer, scn_handler):
    model = ScriptedChatModel(script=[RateLimited("429 Too Many Requests"), answer("fine")])

    def call(state):
        return {"out": model.invoke("x").content}

    g = StateGraph(Out)
    g.add_node("call", call, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False,
                                                       retry_on=RateLimited))
    g.add_edge(START, "call")
    g.add_edge("call", END)
    assert g.compile().invoke({}, config={"callbacks": [scn_handler]}) == {"out": "fine"}
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    failed, ok = doc["llm_calls"]
    assert (failed["status"], failed["error"]["type"], ok["status"]) == ("error", "rate_limit", "ok")
    assert [failed["retry_count"], ok["retry_count"]] == [0, 1]
