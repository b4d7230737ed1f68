"""langchain-openai's ChatOpenAI against the loopback OpenAI Chat Completions server.

Every assertion compares the record with what the server sent or received. Defects are strict
xfails naming the issue item, so the fix flips them.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from .conf_apps import ADA, Person, get_weather, run, warm
from .conf_check import DELAY, assert_tokens, assert_ttft, comparable, only_call, openai_wire_messages, record
from .conf_wire import API_KEY, OPENAI_USAGE, Call, Fail, Reply, Usage

SYSTEM = "You are the travel desk of Acme. Answer in one sentence."
QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
MESSAGES = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]


def gpt(wire, **kw) -> ChatOpenAI:
    kw.setdefault("stream_usage", True)  # (off by default on a custom base_url)
    return ChatOpenAI(model="gpt-4o", base_url=wire.openai_url, api_key=API_KEY, temperature=0.2, max_tokens=100,
                      seed=7, **kw)




# -- a plain answer ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_invoke_records_every_signal(wire, ctracer, chandler, mode):
    wire.queue(Reply(text=ANSWER, model="gpt-4o-2024-11-20", first_token_delay=0.05))
    out = run(gpt(wire), mode, MESSAGES, {"callbacks": [chandler]})
    assert out.content == ANSWER
    [seen] = wire.requests
    doc = record(ctracer, chandler.last_trace_id)
    call = only_call(doc)
    # 1: the input snapshot is what went on the wire
    assert call["input_messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    assert comparable(call["input_messages"]) == openai_wire_messages(seen.body)
    assert call["system_prompt"] == SYSTEM
    # 2: the model asked for, and the version the response named
    assert (call["model"], call["provider"]) == (seen.body["model"], "openai") == ("gpt-4o", "openai")
    assert call["model_version"] == "gpt-4o-2024-11-20"
    # params: what was sent
    params = call["params"]
    assert params["temperature"] == seen.body["temperature"] == 0.2
    assert params["max_completion_tokens"] == seen.body["max_completion_tokens"] == 100
    assert params["seed"] == seen.body["seed"] == 7
    # 3: tokens as the usage reported them
    assert_tokens(call, OPENAI_USAGE, reasoning=True)
    # 5: a call that did not stream has no TTFT; it lasted at least the server's delay
    assert call["streamed"] is False and call["latency_ms"]["ttft"] is None
    assert call["latency_ms"]["total"] >= 50
    # 6: the raw completion, the finish reason
    assert call["raw_completion"] == ANSWER
    assert call["finish_reason"] == "stop"
    assert call["tool_calls"] == [] and call["parsed"] is None and call["parse_error"] is None
    assert (call["status"], call["error"], call["retry_count"]) == ("ok", None, 0)
    assert doc["status"] == "ok"
    assert doc["totals"]["llm_calls"] == 1 and doc["totals"]["errors"] == 0
    assert (doc["totals"]["input_tokens"], doc["totals"]["output_tokens"]) == (OPENAI_USAGE.input, OPENAI_USAGE.output)


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_stream_records_text_tokens_and_version(wire, ctracer, chandler, mode):
    usage = Usage(input=900, output=12, cached=512, reasoning=0)
    wire.queue(Reply(text=ANSWER, usage=usage, pieces=4))
    out = run(gpt(wire), mode, MESSAGES, {"callbacks": [chandler]})
    assert out.content == ANSWER
    [seen] = wire.requests
    assert seen.body["stream"] is True and seen.body["stream_options"] == {"include_usage": True}
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert comparable(call["input_messages"]) == openai_wire_messages(seen.body)
    assert call["model_version"] == "gpt-4o-2024-08-06"
    assert_tokens(call, usage, reasoning=True)
    assert call["streamed"] is True
    assert call["raw_completion"] == ANSWER
    assert call["finish_reason"] == "stop"
    assert call["status"] == "ok"


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_stream_ttft_is_the_first_content_delta(wire, ctracer, chandler, mode):
    model = gpt(wire)
    warm(wire, model, mode)
    wire.queue(Reply(text=ANSWER, first_token_delay=DELAY))
    run(model, mode, MESSAGES, {"callbacks": [chandler]})
    assert_ttft(only_call(record(ctracer, chandler.last_trace_id)))


def test_stream_ttft_of_a_tool_call_is_its_first_delta(wire, ctracer, chandler):
    model = gpt(wire)
    warm(wire, model, "stream")
    wire.queue(Reply(calls=[Call("get_weather", {"city": "Paris"}, "call_w")], first_token_delay=DELAY))
    run(model.bind_tools([get_weather]), "stream", QUESTION, {"callbacks": [chandler]})
    assert_ttft(only_call(record(ctracer, chandler.last_trace_id)))


def test_stream_without_usage_records_null_tokens(wire, ctracer, chandler):
    wire.queue(Reply(text=ANSWER))
    run(gpt(wire, stream_usage=False), "stream", QUESTION, {"callbacks": [chandler]})
    assert "stream_options" not in wire.requests[0].body  # so the server reported no usage
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert_tokens(call, None)
    assert call["raw_completion"] == ANSWER


def test_stream_params_say_what_was_sent(wire, ctracer, chandler):
    wire.queue(Reply(text=ANSWER))
    run(gpt(wire), "stream", QUESTION, {"callbacks": [chandler]})
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["params"].get("stream", True) is wire.requests[0].body["stream"] is True


def test_batch_keeps_each_request_in_its_own_trace(wire, ctracer, chandler):
    questions = ["Capital of France?", "Capital of Italy?", "Capital of Spain?"]
    wire.queue(Reply(text="Paris."), Reply(text="Rome."), Reply(text="Madrid."))
    configs = [{"callbacks": [chandler], "metadata": {"llmtrace_trace_id": f"batch-{i}"}} for i in range(3)]
    outs = gpt(wire).batch(questions, config=configs)
    # the replies were taken in arrival order: find which request got which answer
    answer_of = {s.body["messages"][0]["content"]: s.reply.text for s in wire.requests}
    assert [o.content for o in outs] == [answer_of[q] for q in questions]
    for i, q in enumerate(questions):
        call = only_call(record(ctracer, f"batch-{i}"))
        assert call["input_messages"] == [{"role": "user", "content": q}]
        assert call["raw_completion"] == answer_of[q]
        assert_tokens(call, OPENAI_USAGE)


# -- tools -----------------------------------------------------------------------------------------


def test_parallel_tool_calls_are_recorded_with_their_ids_and_args(wire, ctracer, chandler):
    calls = [Call("get_weather", {"city": "Paris"}, "call_p1"), Call("get_weather", {"city": "Rome"}, "call_p2")]
    wire.queue(Reply(calls=calls))
    out = run(gpt(wire).bind_tools([get_weather]), "invoke", QUESTION, {"callbacks": [chandler]})
    assert [c["id"] for c in out.tool_calls] == ["call_p1", "call_p2"]
    [seen] = wire.requests
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert [(t["id"], t["name"], t["args"], t["status"]) for t in call["tool_calls"]] == [
        ("call_p1", "get_weather", {"city": "Paris"}, "requested"), ("call_p2", "get_weather", {"city": "Rome"}, "requested")]
    assert call["finish_reason"] == "tool_calls"
    sent = seen.body["tools"][0]["function"]
    assert call["tools_offered"] == [{"name": sent["name"], "description": sent["description"],
                                      "parameters": sent["parameters"]}]
    assert "tools" not in call["params"]
    assert_tokens(call, OPENAI_USAGE)


def test_streamed_tool_call_deltas_are_reassembled(wire, ctracer, chandler):
    args = {"city": "São Paulo", "units": "metric"}
    wire.queue(Reply(calls=[Call("get_weather", args, "call_s1")], pieces=5))
    out = run(gpt(wire).bind_tools([get_weather]), "stream", QUESTION, {"callbacks": [chandler]})
    assert out.tool_calls[0]["args"] == args
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert [(t["id"], t["name"], t["args"]) for t in call["tool_calls"]] == [("call_s1", "get_weather", args)]
    assert call["finish_reason"] == "tool_calls" and call["streamed"] is True
    assert_tokens(call, OPENAI_USAGE)


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_tool_calls_only_answer_keeps_the_requests_in_raw_completion(wire, ctracer, chandler, mode):
    wire.queue(Reply(calls=[Call("get_weather", {"city": "Paris"}, "call_r1")]))
    run(gpt(wire).bind_tools([get_weather]), mode, QUESTION, {"callbacks": [chandler]})
    raw = only_call(record(ctracer, chandler.last_trace_id))["raw_completion"]
    assert raw not in (None, "", [])
    assert "get_weather" in json.dumps(raw) and "Paris" in json.dumps(raw)


def test_create_agent_round_trip(wire, ctracer, chandler):
    from langchain.agents import create_agent

    agent = create_agent(gpt(wire), tools=[get_weather], system_prompt=SYSTEM)
    wire.queue(Reply(calls=[Call("get_weather", {"city": "Paris"}, "call_a1")]), Reply(text="Sunny, 24 C in Paris."))
    out = agent.invoke({"messages": [{"role": "user", "content": "Weather in Paris?"}]}, config={"callbacks": [chandler]})
    assert out["messages"][-1].content == "Sunny, 24 C in Paris."
    first_req, second_req = wire.requests
    doc = record(ctracer, chandler.last_trace_id)
    first, second = doc["llm_calls"]
    assert comparable(first["input_messages"]) == openai_wire_messages(first_req.body)
    assert comparable(second["input_messages"]) == openai_wire_messages(second_req.body)
    assert first["system_prompt"] == second["system_prompt"] == SYSTEM
    [tc] = first["tool_calls"]
    assert (tc["id"], tc["name"], tc["args"], tc["result"], tc["status"]) == (
        "call_a1", "get_weather", {"city": "Paris"}, "sunny, 24 C in Paris", "ok")
    assert tc["latency_ms"] is not None and second["latency_ms"]["tools"] == tc["latency_ms"]
    assert second["raw_completion"] == "Sunny, 24 C in Paris." and second["finish_reason"] == "stop"
    assert doc["status"] == "ok" and doc["totals"]["llm_calls"] == 2
    assert doc["totals"]["input_tokens"] == 2 * OPENAI_USAGE.input


# -- structured output -----------------------------------------------------------------------------


def test_structured_output_function_calling(wire, ctracer, chandler):
    wire.queue(Reply(calls=[Call("Person", ADA, "call_so1")]))
    out = gpt(wire).with_structured_output(Person, method="function_calling").invoke(
        "Who wrote the first program?", config={"callbacks": [chandler]})
    assert out == Person(**ADA)
    [seen] = wire.requests
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["parsed"] == ADA and call["parse_error"] is None
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]
    assert call["params"]["tool_choice"] == seen.body["tool_choice"]
    assert call["tools_offered"][0]["parameters"] == seen.body["tools"][0]["function"]["parameters"]


def test_structured_output_json_mode(wire, ctracer, chandler):
    wire.queue(Reply(text=json.dumps(ADA)))
    out = gpt(wire).with_structured_output(Person, method="json_mode").invoke(
        "Who wrote the first program? Answer in JSON.", config={"callbacks": [chandler]})
    assert out == Person(**ADA)
    [seen] = wire.requests
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["params"]["response_format"] == seen.body["response_format"] == {"type": "json_object"}
    assert call["raw_completion"] == json.dumps(ADA)
    assert call["parsed"] == ADA
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]


def test_structured_output_json_schema_fills_parsed(wire, ctracer, chandler):
    wire.queue(Reply(text=json.dumps(ADA)))
    out = gpt(wire).with_structured_output(Person).invoke("Who wrote the first program?", config={"callbacks": [chandler]})
    assert out == Person(**ADA)
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["raw_completion"] == json.dumps(ADA)
    assert call["parsed"] == ADA
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]


def test_structured_output_json_schema_params_hold_the_schema_sent(wire, ctracer, chandler):
    wire.queue(Reply(text=json.dumps(ADA)))
    gpt(wire).with_structured_output(Person).invoke("Who wrote the first program?", config={"callbacks": [chandler]})
    sent = wire.requests[0].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["title"] == "Person"
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["params"]["response_format"] == sent


def test_structured_output_json_schema_parse_failure_keeps_the_answer(wire, ctracer, chandler):
    text = "I am not sure who that was."
    wire.queue(Reply(text=text))
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError through the SDK
        gpt(wire).with_structured_output(Person).invoke("Who wrote the first program?", config={"callbacks": [chandler]})
    doc = record(ctracer, chandler.last_trace_id)
    call = only_call(doc)
    assert doc["status"] == "error"
    assert call["parse_error"] is not None
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", False)]
    # the model answered: the call is ok and its answer, version and tokens are kept
    assert call["status"] == "ok"
    assert call["raw_completion"] == text
    assert call["model_version"] == "gpt-4o-2024-08-06"
    assert_tokens(call, OPENAI_USAGE)


# -- errors and retries --------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind", "needle"), [
    (429, "rate_limit", "Rate limit reached for gpt-4o"),
    (400, "context_length", "maximum context length is 128000 tokens"),
    (401, "auth", "Incorrect API key provided"),
    (500, "server_error", "The server had an error"),
    (503, "server_error", "currently overloaded"),
])
def test_errors_are_classified(wire, ctracer, chandler, status, kind, needle):
    wire.queue(Fail(status))
    with pytest.raises(Exception):  # noqa: B017 - each provider error class
        gpt(wire, max_retries=0).invoke(MESSAGES, config={"callbacks": [chandler]})
    assert len(wire.requests) == 1
    doc = record(ctracer, chandler.last_trace_id)
    call = only_call(doc)
    assert call["status"] == "error"
    assert call["error"]["type"] == kind
    assert needle in call["error"]["message"]
    assert call["input_messages"][0] == {"role": "system", "content": SYSTEM}
    assert call["raw_completion"] is None and call["model_version"] is None
    assert_tokens(call, None)
    assert doc["status"] == "error" and doc["totals"]["errors"] == 1


@pytest.mark.xfail(strict=True, reason="issue 14 item 15: a client retry that ended in success is invisible to LangChain "
                                       "(the client keeps its response to itself; README: 'Retries')")
def test_rate_limit_then_success_counts_the_sdk_retry(wire, ctracer, chandler):
    wire.queue(Fail(429, retry_after=0.05), Reply(text=ANSWER))
    out = gpt(wire).invoke(MESSAGES, config={"callbacks": [chandler]})
    assert out.content == ANSWER
    assert [s.retry_count for s in wire.requests] == [0, 1]  # the SDK retried once, after Retry-After
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["status"] == "ok" and call["raw_completion"] == ANSWER
    assert call["retry_count"] == 1


def test_server_error_after_sdk_retries_counts_them(wire, ctracer, chandler):
    wire.queue(Fail(500, retry_after=0.02), Fail(500, retry_after=0.02), Fail(500, retry_after=0.02))
    with pytest.raises(Exception):  # noqa: B017
        gpt(wire).invoke(MESSAGES, config={"callbacks": [chandler]})
    assert [s.retry_count for s in wire.requests] == [0, 1, 2]
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["error"]["type"] == "server_error"
    assert call["retry_count"] == 2


def test_stream_cut_mid_way_is_an_error(wire, ctracer, chandler):
    wire.queue(Reply(text="Paris is the capital of France, and", pieces=4, cut_after=2))
    got = []
    with pytest.raises(Exception):  # noqa: B017 - httpx's incomplete read, as the SDK lets it through
        for chunk in gpt(wire, max_retries=0).stream(QUESTION, config={"callbacks": [chandler]}):
            got.append(chunk.content)
    doc = record(ctracer, chandler.last_trace_id)
    call = only_call(doc)
    assert call["status"] == "error" and doc["status"] == "error"
    assert "".join(got) == "Paris is the capit"  # two deltas of four arrived


def test_stream_cut_mid_way_keeps_the_text_delivered(wire, ctracer, chandler):
    wire.queue(Reply(text="Paris is the capital of France, and", pieces=4, cut_after=2))
    with pytest.raises(Exception):  # noqa: B017
        for _ in gpt(wire, max_retries=0).stream(QUESTION, config={"callbacks": [chandler]}):
            pass
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["raw_completion"] == "Paris is the capit"
    assert call["streamed"] is True and call["parse_error"] is None and call["validations"] == []


@pytest.mark.xfail(strict=True, reason="langchain-openai keeps a chunk's model name only on a stream's last chunk: a "
                                       "stream cut short never shows it to callbacks (not fixable in llmtrace)")
def test_stream_cut_mid_way_keeps_the_model_version(wire, ctracer, chandler):
    wire.queue(Reply(text="Paris is the capital of France, and", pieces=4, cut_after=2))
    with pytest.raises(Exception):  # noqa: B017
        for _ in gpt(wire, max_retries=0).stream(QUESTION, config={"callbacks": [chandler]}):
            pass
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["model_version"] == "gpt-4o-2024-08-06"  # every chunk named it on the wire


def test_stream_dropped_by_the_provider_is_a_server_error(wire, ctracer, chandler):
    wire.queue(Reply(text="Paris is the capital of France, and", pieces=4, cut_after=2))
    with pytest.raises(Exception):  # noqa: B017
        for _ in gpt(wire, max_retries=0).stream(QUESTION, config={"callbacks": [chandler]}):
            pass
    assert only_call(record(ctracer, chandler.last_trace_id))["error"]["type"] == "server_error"


def test_with_retry_attempts_are_counted(wire, ctracer, chandler):
    # framework retries (RunnableRetry), unlike the SDK's, are visible: one call per attempt
    model = gpt(wire, max_retries=0).with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    wire.queue(Fail(429), Fail(429), Reply(text=ANSWER))
    assert model.invoke(MESSAGES, config={"callbacks": [chandler]}).content == ANSWER
    doc = record(ctracer, chandler.last_trace_id)
    assert [(c["status"], c["retry_count"], (c["error"] or {}).get("type")) for c in doc["llm_calls"]] == [
        ("error", 0, "rate_limit"), ("error", 1, "rate_limit"), ("ok", 2, None)]
    assert doc["status"] == "ok" and doc["llm_calls"][-1]["raw_completion"] == ANSWER


def test_concurrent_async_streams_stay_apart(wire, ctracer, chandler):
    questions = {f"trace-c{i}": f"Question {i}?" for i in range(4)}
    wire.queue(*[Reply(text=f"Answer {i}.", usage=Usage(input=100 + i, output=10 + i), first_token_delay=0.02 * i,
                       pieces=3) for i in range(4)])
    model = gpt(wire)

    async def one(tid, q):
        out = ""
        async for chunk in model.astream(q, config={"callbacks": [chandler], "metadata": {"llmtrace_trace_id": tid}}):
            out += chunk.content
        return out

    async def all_of():
        return await asyncio.gather(*(one(tid, q) for tid, q in questions.items()))

    outs = asyncio.run(all_of())
    reply_of = {s.body["messages"][0]["content"]: s.reply for s in wire.requests}
    assert outs == [reply_of[q].text for q in questions.values()]
    for tid, q in questions.items():
        call = only_call(record(ctracer, tid))
        assert call["input_messages"] == [{"role": "user", "content": q}]
        assert call["raw_completion"] == reply_of[q].text
        assert_tokens(call, reply_of[q].usage)


class Forecast(BaseModel):
    city: str
    sky: str


def test_create_agent_structured_response_retried_after_a_parse_failure(wire, ctracer, chandler):
    from langchain.agents import create_agent
    from langchain.agents.structured_output import ToolStrategy

    agent = create_agent(gpt(wire), tools=[get_weather], response_format=ToolStrategy(Forecast))
    wire.queue(Reply(calls=[Call("Forecast", {"city": "Paris"}, "call_f1")]),  # "sky" missing: the agent retries
               Reply(calls=[Call("Forecast", {"city": "Paris", "sky": "sunny"}, "call_f2")]))
    out = agent.invoke({"messages": [{"role": "user", "content": "Weather in Paris?"}]}, config={"callbacks": [chandler]})
    assert out["structured_response"] == Forecast(city="Paris", sky="sunny")
    assert "Failed to parse structured output" in wire.requests[1].body["messages"][-1]["content"]
    first, second = record(ctracer, chandler.last_trace_id)["llm_calls"]
    assert first["parsed"] is None and first["parse_error"] is not None
    assert [(v["rule"], v["passed"]) for v in first["validations"]] == [("schema", False)]
    assert second["parsed"] == {"city": "Paris", "sky": "sunny"} and second["parse_error"] is None
    assert [(v["rule"], v["passed"]) for v in second["validations"]] == [("schema", True)]


def test_create_agent_structured_response_provider_strategy(wire, ctracer, chandler):
    from langchain.agents import create_agent
    from langchain.agents.structured_output import ProviderStrategy

    agent = create_agent(gpt(wire), tools=[get_weather], response_format=ProviderStrategy(Forecast))
    wire.queue(Reply(text=json.dumps({"city": "Paris", "sky": "sunny"})))
    out = agent.invoke({"messages": [{"role": "user", "content": "Weather in Paris?"}]}, config={"callbacks": [chandler]})
    assert out["structured_response"] == Forecast(city="Paris", sky="sunny")
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert call["params"]["response_format"]["json_schema"]["schema"] == \
        wire.requests[0].body["response_format"]["json_schema"]["schema"]
    assert call["parsed"] == {"city": "Paris", "sky": "sunny"}
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]


def test_cache_write_tokens_are_recorded(wire, ctracer, chandler):
    usage = Usage(input=2000, output=20, cached=1024, cache_write=512, reasoning=0)
    wire.queue(Reply(text=ANSWER, usage=usage))
    gpt(wire).invoke(MESSAGES, config={"callbacks": [chandler]})
    assert_tokens(only_call(record(ctracer, chandler.last_trace_id)), usage, cache_write=True)


def test_timeout_is_classified(wire, ctracer, chandler):
    wire.queue(Reply(text=ANSWER, first_token_delay=DELAY))
    with pytest.raises(Exception):  # noqa: B017 - the SDK's timeout, as LangChain wraps it
        gpt(wire, max_retries=0, timeout=0.05).invoke(MESSAGES, config={"callbacks": [chandler]})
    doc = record(ctracer, chandler.last_trace_id)
    call = only_call(doc)
    assert (call["status"], call["error"]["type"], doc["status"]) == ("error", "timeout", "error")
    assert call["latency_ms"]["total"] >= 50  # it lasted until the client gave up


def test_refusal_text_is_kept(wire, ctracer, chandler):
    refusal = "I can't help with identifying real people."
    wire.queue(Reply(text=None, refusal=refusal))
    out = gpt(wire).invoke(MESSAGES, config={"callbacks": [chandler]})
    assert out.additional_kwargs["refusal"] == refusal
    call = only_call(record(ctracer, chandler.last_trace_id))
    assert refusal in json.dumps(call["raw_completion"])
