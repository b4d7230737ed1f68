"""The representative wire scenarios on SQLite, PostgreSQL and MariaDB (``tracer``/``handler`` over ``db_url``)."""

from __future__ import annotations

import pytest
from langchain_core.tools import tool

from .conf_check import assert_tokens, comparable, openai_wire_messages, record
from .conf_wire import ANTHROPIC_KEY, ANTHROPIC_USAGE, API_KEY, OPENAI_USAGE, Call, Fail, Reply

SYSTEM = "You are the travel desk of Acme."


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny, 24 C in {city}"


def test_streaming_openai_agent(wire, tracer, handler):
    from langchain.agents import create_agent
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="gpt-4o", base_url=wire.openai_url, api_key=API_KEY, stream_usage=True, temperature=0)
    agent = create_agent(model, tools=[get_weather], system_prompt=SYSTEM)
    wire.queue(Reply(calls=[Call("get_weather", {"city": "Paris"}, "call_db1")], pieces=4),
               Reply(text="Sunny, 24 C in Paris.", pieces=4))
    chunks = list(agent.stream({"messages": [{"role": "user", "content": "Weather in Paris?"}]},
                               config={"callbacks": [handler]}, stream_mode="messages"))
    assert chunks and all(r.body["stream"] is True for r in wire.requests)
    doc = record(tracer, handler.last_trace_id)
    first, second = doc["llm_calls"]
    for call, seen in zip((first, second), wire.requests, strict=True):
        assert comparable(call["input_messages"]) == openai_wire_messages(seen.body)
        assert (call["model"], call["model_version"], call["provider"]) == ("gpt-4o", "gpt-4o-2024-08-06", "openai")
        assert call["params"]["temperature"] == seen.body["temperature"] == 0
        assert_tokens(call, OPENAI_USAGE, reasoning=True)
        assert call["streamed"] is True and call["status"] == "ok"
    [tc] = first["tool_calls"]
    assert (tc["id"], tc["args"], tc["result"], tc["status"]) == ("call_db1", {"city": "Paris"}, "sunny, 24 C in Paris", "ok")
    assert second["raw_completion"] == "Sunny, 24 C in Paris." and second["latency_ms"]["tools"] == tc["latency_ms"]
    assert doc["status"] == "ok" and doc["totals"]["input_tokens"] == 2 * OPENAI_USAGE.input


def test_anthropic_cache_tokens_and_an_auth_error(wire, tracer, handler):
    from langchain_anthropic import ChatAnthropic

    claude = ChatAnthropic(model="claude-sonnet-4-5", base_url=wire.anthropic_url, api_key=ANTHROPIC_KEY, max_retries=0)
    wire.queue(Reply(text="Paris."), Fail(401))
    claude.invoke([("system", SYSTEM), ("human", "Capital of France?")], config={"callbacks": [handler]})
    ok = record(tracer, handler.last_trace_id)
    with pytest.raises(Exception):  # noqa: B017
        claude.invoke([("system", SYSTEM), ("human", "Capital of France?")], config={"callbacks": [handler]})
    failed = record(tracer, handler.last_trace_id)
    [call] = ok["llm_calls"]
    assert call["system_prompt"] == SYSTEM and call["model_version"] == "claude-sonnet-4-5-20250929"
    assert_tokens(call, ANTHROPIC_USAGE)
    assert call["raw_completion"] == "Paris." and call["finish_reason"] == "end_turn"
    [err] = failed["llm_calls"]
    assert (err["status"], err["error"]["type"], failed["status"]) == ("error", "auth", "error")
    assert "invalid x-api-key" in err["error"]["message"]


@pytest.fixture
def db_instrumentor(tracer):
    from llmtrace_llamaindex import LLMTraceInstrumentor

    inst = LLMTraceInstrumentor(tracer).instrument()
    yield inst
    inst.uninstrument()


def test_llamaindex_chat(wire, tracer, db_instrumentor):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(model="gpt-4o", api_base=wire.openai_url, api_key=API_KEY, max_retries=0)
    wire.queue(Reply(text="Paris."))
    llm.chat([ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content="Capital of France?")])
    doc = record(tracer, db_instrumentor.last_trace_id)
    [call] = doc["llm_calls"]
    assert comparable(call["input_messages"]) == openai_wire_messages(wire.requests[0].body)
    assert call["system_prompt"] == SYSTEM and call["model_version"] == "gpt-4o-2024-08-06"
    assert_tokens(call, OPENAI_USAGE, reasoning=True)
    assert call["raw_completion"] == "Paris." and doc["status"] == "ok"
