"""No API key reaches the database: not in params, content, errors, nor anywhere in the file's bytes.

Two kinds of key: provider-shaped ones (``sk-...``, ``sk-ant-...``) that the redactor recognises, and
a proxy key of no known shape, which only stays out if llmtrace never stores it at all.
"""

from __future__ import annotations

import json

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

import llmtrace

from .conf_check import secret_hits, walk
from .conf_wire import ANTHROPIC_KEY, API_KEY, Call, Fail, Reply

PROXY_KEY = "acme-gateway-7f3a9c2e1b5d4f60aa17"  # a key of no known shape


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("capture", ["full", "redacted"])
def test_api_keys_never_reach_the_database(wire, tmp_path, capture):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    from llmtrace_langchain import LLMTraceCallbackHandler
    from llmtrace_llamaindex import LLMTraceInstrumentor

    db = tmp_path / "keys.db"
    tracer = llmtrace.Tracer(f"sqlite:///{db}", capture=capture, flush_interval_seconds=0.05)
    handler = LLMTraceCallbackHandler(tracer)
    cfg = {"callbacks": [handler]}
    msgs = [SystemMessage("You are terse."), HumanMessage("Weather in Paris?")]
    trace_ids = []
    try:
        for key in (API_KEY, PROXY_KEY):
            gpt = ChatOpenAI(model="gpt-4o", base_url=wire.openai_url, api_key=key, max_retries=0, stream_usage=True)
            wire.queue(Reply(text="Sunny."), Reply(calls=[Call("get_weather", {"city": "Paris"})]), Fail(401))
            gpt.invoke(msgs, config=cfg)
            trace_ids.append(handler.last_trace_id)
            list(gpt.bind_tools([get_weather]).stream(msgs, config=cfg))
            trace_ids.append(handler.last_trace_id)
            with pytest.raises(Exception):  # noqa: B017
                gpt.invoke(msgs, config=cfg)
            trace_ids.append(handler.last_trace_id)
        for key in (ANTHROPIC_KEY, PROXY_KEY):
            claude = ChatAnthropic(model="claude-sonnet-4-5", base_url=wire.anthropic_url, api_key=key, max_retries=0)
            wire.queue(Reply(text="Sunny."), Fail(401))
            claude.invoke(msgs, config=cfg)
            trace_ids.append(handler.last_trace_id)
            with pytest.raises(Exception):  # noqa: B017
                claude.invoke(msgs, config=cfg)
            trace_ids.append(handler.last_trace_id)
        instrumentor = LLMTraceInstrumentor(tracer).instrument()
        try:
            for key in (API_KEY, PROXY_KEY):
                llm = OpenAI(model="gpt-4o", api_base=wire.openai_url, api_key=key, max_retries=0)
                wire.queue(Reply(text="Sunny."), Fail(401))
                llm.chat([ChatMessage(role="user", content="Weather in Paris?")])
                trace_ids.append(instrumentor.last_trace_id)
                with pytest.raises(Exception):  # noqa: B017
                    llm.chat([ChatMessage(role="user", content="Weather in Paris?")])
                trace_ids.append(instrumentor.last_trace_id)
        finally:
            instrumentor.uninstrument()
        assert wire.pending == 0
        # every key did go on the wire...
        sent = {s.headers.get("authorization", "").removeprefix("Bearer ") or s.headers.get("x-api-key")
                for s in wire.requests}
        assert {API_KEY, ANTHROPIC_KEY, PROXY_KEY} <= sent
        # ...and none is in any record
        tracer.flush(10)
        for tid in trace_ids:
            doc = tracer.get_trace(tid).to_dict()
            assert doc["llm_calls"], tid
            text = json.dumps(doc)
            for key in (API_KEY, ANTHROPIC_KEY, PROXY_KEY):
                assert key[-16:] not in text, (tid, key)
            for call in doc["llm_calls"]:
                assert not [k for k, _ in walk(call["params"]) if "api_key" in str(k).lower()], call["params"]
    finally:
        tracer.close()
    assert secret_hits(db, [API_KEY, ANTHROPIC_KEY, PROXY_KEY]) == []
