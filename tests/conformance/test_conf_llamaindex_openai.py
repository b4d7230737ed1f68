"""llama-index-llms-openai's OpenAI, through LLMTraceInstrumentor, against the loopback server.

LlamaIndex's own retry loop (tenacity, 1-20 s waits) runs when ``max_retries`` > 1; the tests
use ``max_retries=0`` (or 1: the SDK retries once, LlamaIndex not at all) to stay fast.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAI
from pydantic import BaseModel

from .conf_check import DELAY, assert_tokens, assert_ttft, comparable, only_call, openai_wire_messages, record
from .conf_wire import API_KEY, OPENAI_USAGE, Call, Fail, Reply, Usage

SYSTEM = "You are the travel desk of Acme. Answer in one sentence."
QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
USAGE_ON = {"stream_options": {"include_usage": True}}


def messages() -> list[ChatMessage]:
    return [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=QUESTION)]


def li_openai(wire, **kw) -> OpenAI:
    kw.setdefault("max_retries", 0)
    return OpenAI(model="gpt-4o", api_base=wire.openai_url, api_key=API_KEY, temperature=0.3, max_tokens=64, **kw)


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny, 24 C in {city}"


def chat(llm, mode: str, msgs):
    """chat / achat / stream_chat / astream_chat; returns the last ChatResponse."""
    if mode == "chat":
        return llm.chat(msgs)
    if mode == "achat":
        return asyncio.run(llm.achat(msgs))
    if mode == "stream_chat":
        return list(llm.stream_chat(msgs))[-1]

    async def collect():
        return [r async for r in await llm.astream_chat(msgs)][-1]

    return asyncio.run(collect())


def warm(wire, llm, mode: str) -> None:
    wire.queue(Reply(text="warm"))
    chat(llm, "achat" if mode.startswith("a") else "chat", [ChatMessage(role="user", content="warm-up")])
    wire.reset()


@pytest.mark.parametrize("mode", ["chat", "achat"])
def test_chat_records_every_signal(wire, ctracer, instrumentor, mode):
    wire.queue(Reply(text=ANSWER, model="gpt-4o-2024-11-20", first_token_delay=0.05))
    out = chat(li_openai(wire), mode, messages())
    assert out.message.content == ANSWER
    [seen] = wire.requests
    doc = record(ctracer, instrumentor.last_trace_id)
    call = only_call(doc)
    assert call["input_messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    assert comparable(call["input_messages"]) == openai_wire_messages(seen.body)
    assert call["system_prompt"] == SYSTEM
    assert (call["model"], call["model_version"], call["provider"]) == ("gpt-4o", "gpt-4o-2024-11-20", "openai")
    assert_tokens(call, OPENAI_USAGE, reasoning=True)
    assert call["streamed"] is False and call["latency_ms"]["ttft"] is None and call["latency_ms"]["total"] >= 50
    assert call["raw_completion"] == ANSWER and call["finish_reason"] == "stop"
    assert (call["status"], call["error"], call["retry_count"]) == ("ok", None, 0)
    assert doc["status"] == "ok"


def test_params_keep_temperature_and_max_tokens(wire, ctracer, instrumentor):
    wire.queue(Reply(text=ANSWER))
    li_openai(wire).chat(messages())
    sent = wire.requests[0].body
    params = only_call(record(ctracer, instrumentor.last_trace_id))["params"]
    assert params.get("temperature") == sent["temperature"] == 0.3
    assert params.get("max_tokens") == sent["max_tokens"] == 64


@pytest.mark.parametrize("mode", ["complete", "acomplete"])
def test_complete_is_one_call(wire, ctracer, instrumentor, mode):
    wire.queue(Reply(text=ANSWER))
    llm = li_openai(wire)
    out = llm.complete(QUESTION) if mode == "complete" else asyncio.run(llm.acomplete(QUESTION))
    assert out.text == ANSWER
    call = only_call(record(ctracer, instrumentor.last_trace_id))
    assert comparable(call["input_messages"]) == openai_wire_messages(wire.requests[0].body)
    assert call["raw_completion"] == ANSWER
    assert_tokens(call, OPENAI_USAGE)


@pytest.mark.parametrize("mode", ["stream_chat", "astream_chat"])
def test_stream_records_text_and_usage(wire, ctracer, instrumentor, mode):
    wire.queue(Reply(text=ANSWER, pieces=4))
    last = chat(li_openai(wire, additional_kwargs=USAGE_ON), mode, messages())
    assert last.message.content == ANSWER
    assert wire.requests[0].body["stream_options"] == {"include_usage": True}
    call = only_call(record(ctracer, instrumentor.last_trace_id))
    assert call["system_prompt"] == SYSTEM
    assert call["model_version"] == "gpt-4o-2024-08-06"
    assert_tokens(call, OPENAI_USAGE, reasoning=True)
    assert call["streamed"] is True and call["raw_completion"] == ANSWER
    assert call["status"] == "ok"


def test_stream_without_usage_records_null_tokens_and_the_finish_reason(wire, ctracer, instrumentor):
    wire.queue(Reply(text=ANSWER))
    chat(li_openai(wire), "stream_chat", messages())
    assert "stream_options" not in wire.requests[0].body
    call = only_call(record(ctracer, instrumentor.last_trace_id))
    assert_tokens(call, None)
    assert call["finish_reason"] == "stop"


def test_stream_with_usage_keeps_the_finish_reason(wire, ctracer, instrumentor):
    wire.queue(Reply(text=ANSWER))
    chat(li_openai(wire, additional_kwargs=USAGE_ON), "stream_chat", messages())
    assert only_call(record(ctracer, instrumentor.last_trace_id))["finish_reason"] == "stop"


@pytest.mark.parametrize("mode", ["stream_chat", "astream_chat"])
def test_stream_ttft_is_the_first_content_delta(wire, ctracer, instrumentor, mode):
    llm = li_openai(wire)
    warm(wire, llm, mode)
    wire.queue(Reply(text=ANSWER, first_token_delay=DELAY))
    chat(llm, mode, messages())
    assert_ttft(only_call(record(ctracer, instrumentor.last_trace_id)))


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_tools_only_stream_ttft_raw_and_one_request(wire, ctracer, instrumentor, mode):
    """A stream that only asks for a tool: TTFT at the first tool-call delta (not the role-only
    opening chunk), raw_completion names the request, and the request is recorded once."""
    from llama_index.core.tools import FunctionTool

    llm = li_openai(wire)
    warm(wire, llm, "achat" if mode == "astream" else "chat")
    wire.queue(Reply(calls=[Call("get_weather", {"city": "Paris"}, "call_s1")], first_token_delay=DELAY))
    tools = [FunctionTool.from_defaults(get_weather)]
    if mode == "stream":
        last = list(llm.stream_chat_with_tools(tools, user_msg="Weather in Paris?"))[-1]
    else:
        async def collect():
            return [r async for r in await llm.astream_chat_with_tools(tools, user_msg="Weather in Paris?")][-1]

        last = asyncio.run(collect())
    assert [c.tool_name for c in llm.get_tool_calls_from_response(last)] == ["get_weather"]
    call = only_call(record(ctracer, instrumentor.last_trace_id))
    assert_ttft(call)
    assert call["finish_reason"] == "tool_calls"
    assert call["raw_completion"] == {"content": None, "tool_calls": [
        {"id": "call_s1", "name": "get_weather", "args": {"city": "Paris"}}]}
    assert [(t["id"], t["name"], t["args"], t["status"]) for t in call["tool_calls"]] == [
        ("call_s1", "get_weather", {"city": "Paris"}, "requested")]
    sent = wire.requests[0].body["tools"][0]["function"]
    assert call["tools_offered"] == [{"name": sent["name"], "description": sent["description"],
                                      "parameters": sent["parameters"]}]


def test_cache_write_tokens_are_kept(wire, ctracer, instrumentor):
    """OpenAI's prompt_tokens_details.cache_write_tokens reaches tokens.input_cache_write (issue 14 item 16)."""
    usage = Usage(input=1500, output=40, cached=1024, cache_write=300)
    wire.queue(Reply(text=ANSWER, usage=usage))
    li_openai(wire).chat(messages())
    assert_tokens(only_call(record(ctracer, instrumentor.last_trace_id)), usage, cache_write=True)


def test_stream_cut_mid_way_makes_the_trace_an_error(wire, ctracer, instrumentor):
    wire.queue(Reply(text="Paris is the capital of France, and", pieces=4, cut_after=2))
    with pytest.raises(Exception):  # noqa: B017 - httpx's incomplete read
        chat(li_openai(wire), "stream_chat", messages())
    doc = record(ctracer, instrumentor.last_trace_id)
    call = only_call(doc)
    assert call["status"] == "error"
    assert call["raw_completion"] == "Paris is the capit"  # the two deltas the app received
    assert doc["status"] == "error"


# -- tools and agents ------------------------------------------------------------------------------


def _predict_and_call(wire, ctracer, instrumentor):
    from llama_index.core.tools import FunctionTool

    wire.queue(Reply(calls=[Call("get_weather", {"city": "Paris"}, "call_pc1")]))
    out = li_openai(wire).predict_and_call([FunctionTool.from_defaults(get_weather)], "Weather in Paris?")
    assert str(out) == "sunny, 24 C in Paris"
    return wire.requests[0], only_call(record(ctracer, instrumentor.last_trace_id))


def test_predict_and_call_joins_the_result(wire, ctracer, instrumentor):
    seen, call = _predict_and_call(wire, ctracer, instrumentor)
    assert call["finish_reason"] == "tool_calls"
    assert comparable(call["input_messages"]) == openai_wire_messages(seen.body)
    joined = [t for t in call["tool_calls"] if t["id"] == "call_pc1" and t["result"] == "sunny, 24 C in Paris"]
    assert joined and joined[0]["status"] == "ok"


def test_predict_and_call_records_one_tool_call(wire, ctracer, instrumentor):
    _seen, call = _predict_and_call(wire, ctracer, instrumentor)
    assert [(t["id"], t["name"], t["args"], t["result"], t["status"]) for t in call["tool_calls"]] == [
        ("call_pc1", "get_weather", {"city": "Paris"}, "sunny, 24 C in Paris", "ok")]


def test_predict_and_call_tools_offered_are_what_was_sent(wire, ctracer, instrumentor):
    seen, call = _predict_and_call(wire, ctracer, instrumentor)
    sent = seen.body["tools"][0]["function"]
    assert call["tools_offered"] == [{"name": sent["name"], "description": sent["description"],
                                      "parameters": sent["parameters"]}]


def test_predict_and_call_raw_completion_names_the_request(wire, ctracer, instrumentor):
    _seen, call = _predict_and_call(wire, ctracer, instrumentor)
    assert call["raw_completion"] not in (None, "")
    assert "get_weather" in json.dumps(call["raw_completion"])


def _function_agent(wire, ctracer, instrumentor):
    from llama_index.core.agent.workflow import FunctionAgent

    agent = FunctionAgent(tools=[get_weather], llm=li_openai(wire), system_prompt=SYSTEM)
    wire.queue(Reply(calls=[Call("get_weather", {"city": "Paris"}, "call_fa1")]), Reply(text="Sunny in Paris."))

    async def go():
        return await agent.run("Weather in Paris?")

    assert str(asyncio.run(go())) == "Sunny in Paris."
    return wire.requests, record(ctracer, instrumentor.last_trace_id)


def test_function_agent_round_trip(wire, ctracer, instrumentor):
    requests, doc = _function_agent(wire, ctracer, instrumentor)
    first, second = doc["llm_calls"]
    assert first["system_prompt"] == second["system_prompt"] == SYSTEM
    assert comparable(first["input_messages"]) == openai_wire_messages(requests[0].body)
    assert first["streamed"] is True and first["finish_reason"] == "tool_calls"
    joined = [t for t in first["tool_calls"] if t["result"] == "sunny, 24 C in Paris"]
    assert joined and joined[0]["id"] == "call_fa1" and joined[0]["status"] == "ok"
    tool_msg = second["input_messages"][-1]
    assert (tool_msg["role"], tool_msg["tool_call_id"], tool_msg["content"]) == ("tool", "call_fa1",
                                                                                  "sunny, 24 C in Paris")
    assert second["latency_ms"]["tools"] == joined[0]["latency_ms"]
    assert second["raw_completion"] == "Sunny in Paris." and doc["status"] == "ok"
    assert_tokens(first, None)  # the agent streams without include_usage: nothing reported


def test_function_agent_records_each_request_once(wire, ctracer, instrumentor):
    requests, doc = _function_agent(wire, ctracer, instrumentor)
    first, second = doc["llm_calls"]
    assert comparable(second["input_messages"]) == openai_wire_messages(requests[1].body)
    assert [(t["id"], t["args"], t["status"]) for t in first["tool_calls"]] == [("call_fa1", {"city": "Paris"}, "ok")]


class City(BaseModel):
    name: str
    country: str


def test_structured_predict_fills_parsed(wire, ctracer, instrumentor):
    from llama_index.core.prompts import PromptTemplate

    wire.queue(Reply(text=json.dumps({"name": "Paris", "country": "France"})))
    out = li_openai(wire).structured_predict(City, PromptTemplate("Capital of {country}?"), country="France")
    assert out == City(name="Paris", country="France")
    assert wire.requests[0].body["response_format"]["type"] == "json_schema"
    call = only_call(record(ctracer, instrumentor.last_trace_id))
    assert call["parsed"] == {"name": "Paris", "country": "France"}
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]
    assert call["params"]["response_format"] == wire.requests[0].body["response_format"]  # the schema sent


# -- errors and retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (429, "rate_limit"), (400, "context_length"), (401, "auth"), (500, "server_error"),
])
def test_errors_are_classified(wire, ctracer, instrumentor, status, kind):
    wire.queue(Fail(status))
    with pytest.raises(Exception):  # noqa: B017 - the openai SDK's error classes
        li_openai(wire).chat(messages())
    assert len(wire.requests) == 1
    doc = record(ctracer, instrumentor.last_trace_id)
    call = only_call(doc)
    assert call["status"] == "error" and call["error"]["type"] == kind
    assert call["system_prompt"] == SYSTEM and call["raw_completion"] is None
    assert_tokens(call, None)
    assert doc["status"] == "error"


@pytest.mark.xfail(strict=True, reason="issue 14 item 15: the SDK's own retry (429, then 200) is invisible")
def test_rate_limit_then_success_counts_the_sdk_retry(wire, ctracer, instrumentor):
    wire.queue(Fail(429, retry_after=0.05), Reply(text=ANSWER))
    assert li_openai(wire, max_retries=1).chat(messages()).message.content == ANSWER
    assert [s.retry_count for s in wire.requests] == [0, 1]
    call = only_call(record(ctracer, instrumentor.last_trace_id))
    assert call["status"] == "ok"
    assert call["retry_count"] == 1


def test_timeout_is_classified(wire, ctracer, instrumentor):
    wire.queue(Reply(text=ANSWER, first_token_delay=DELAY))
    with pytest.raises(Exception):  # noqa: B017
        li_openai(wire, timeout=0.05).chat(messages())
    doc = record(ctracer, instrumentor.last_trace_id)
    call = only_call(doc)
    assert (call["status"], call["error"]["type"], doc["status"]) == ("error", "timeout", "error")
