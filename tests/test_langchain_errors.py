"""Model errors, parser failures, retries, fallbacks, structured output, n>1 generations."""

from __future__ import annotations

import asyncio

import pytest
from conftest import raw_engine
from fakes import REFUND_JSON, Refund, ScriptedChatModel, answer, rag_chain, simple_chain, tool_call
from langchain_core.output_parsers import JsonOutputParser
from pydantic import ValidationError


class RateLimitError(Exception):
    status_code = 429


class BadRequestError(Exception):
    status_code = 400


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream"])
def test_model_error_is_classified_and_never_hidden(tracer, handler, mode):
    model = ScriptedChatModel(script=[RateLimitError("429 Too Many Requests")])
    chain = simple_chain(model)
    with pytest.raises(RateLimitError):
        if mode == "invoke":
            chain.invoke({"question": "q"}, config={"callbacks": [handler]})
        elif mode == "ainvoke":
            asyncio.run(chain.ainvoke({"question": "q"}, config={"callbacks": [handler]}))
        else:
            list(chain.stream({"question": "q"}, config={"callbacks": [handler]}))
    doc = tracer.get_trace(handler.last_trace_id).to_dict()
    assert doc["status"] == "error"
    [call] = doc["llm_calls"]
    assert call["status"] == "error"
    assert call["error"]["type"] == "rate_limit"
    assert "429" in call["error"]["message"] and call["error"]["hint"]
    assert call["raw_completion"] is None and call["tokens"]["input"] is None
    assert doc["totals"]["errors"] == 1  # one root cause, though it went up through the chain


def test_context_length_error(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    err = BadRequestError("This model's maximum context length is 8192 tokens (context_length_exceeded)")
    with pytest.raises(BadRequestError):
        simple_chain(ScriptedChatModel(script=[err])).invoke({"question": "q"}, config={"callbacks": [h]})
    call = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]
    assert call["error"]["type"] == "context_length"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_parse_failure_becomes_parse_error_and_failed_schema_validation(tracer, handler, mode):
    model = ScriptedChatModel(script=[answer("Sure! Here's the JSON you asked for: {eligible: yes}")])
    chain = rag_chain(model)
    with pytest.raises(Exception) as info:
        if mode == "invoke":
            chain.invoke("q", config={"callbacks": [handler]})
        else:
            asyncio.run(chain.ainvoke("q", config={"callbacks": [handler]}))
    assert "OutputParserException" in type(info.value).__name__
    doc = tracer.get_trace(handler.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["status"] == "ok"  # the model answered
    assert call["raw_completion"].startswith("Sure! Here's the JSON")
    assert call["parsed"] is None
    assert "Invalid json output" in call["parse_error"] or "Failed to parse" in call["parse_error"]
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", False)]
    assert call["validations"][0]["detail"] == call["parse_error"]
    assert doc["status"] == "error"


def test_streamed_unparseable_answer_shows_raw_full_parsed_empty(sqlite_tracer):
    # LangChain's streaming parsers swallow what they cannot parse: the record still shows it.
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    chunks = list(rag_chain(ScriptedChatModel(script=[answer("no json here")])).stream("q", config={"callbacks": [h]}))
    assert chunks == []
    [call] = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"]
    assert call["raw_completion"] == "no json here" and call["parsed"] is None
    assert call["latency_ms"]["ttft"] is not None


def test_json_parser_output(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)]), JsonOutputParser()).invoke("q", config={"callbacks": [h]})
    call = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]
    assert call["parsed"] == {"eligible": True, "days_left": 12, "citations": ["pol-7#2"]}
    assert call["parser"] == "JsonOutputParser"


def test_a_parser_stores_its_input_unless_it_parsed_a_model_answer(sqlite_tracer):
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser

    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    StrOutputParser().invoke(AIMessage(content="typed by hand"), config={"callbacks": [h]})
    alone = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["spans"][0]
    assert alone["inputs"] == {"role": "assistant", "content": "typed by hand"} and alone["outputs"] == "typed by hand"
    said = "from the model: " + "refunds take five days " * 8  # (long enough to be stored once per trace)
    simple_chain(ScriptedChatModel(script=[answer(said)])).invoke({"question": "q"}, config={"callbacks": [h]})
    trace = sqlite_tracer.get_trace(h.last_trace_id)
    with raw_engine(sqlite_tracer.url).connect() as conn:  # stored once: as the call's raw completion
        body = conn.exec_driver_sql("SELECT body FROM llmtrace_contents WHERE trace_id = ?", (trace.trace_id,)).scalar()
    assert body.count(said) == 1
    parser = next(s for s in trace.to_dict()["spans"] if s["kind"] == "parser")
    assert parser["inputs"] == said == trace.to_dict()["llm_calls"][0]["raw_completion"]


def test_with_structured_output(tracer, handler):
    model = ScriptedChatModel(script=[answer("", tool_calls=[tool_call(
        "Refund", {"eligible": False, "days_left": 0, "citations": ["pol-7#2"]}, "call_s")])])
    structured = model.with_structured_output(Refund)
    out = structured.invoke("Is A-1 refundable?", config={"callbacks": [handler]})
    assert out == Refund(eligible=False, days_left=0, citations=["pol-7#2"])
    [call] = tracer.get_trace(handler.last_trace_id).to_dict()["llm_calls"]
    assert call["parsed"] == {"eligible": False, "days_left": 0, "citations": ["pol-7#2"]}
    assert call["parser"] == "PydanticToolsParser"
    assert call["tools_offered"][0]["name"] == "Refund"
    assert call["params"]["tool_choice"] == "any"
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]


def test_structured_output_validation_error(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    model = ScriptedChatModel(script=[answer("", tool_calls=[tool_call("Refund", {"eligible": "maybe"}, "c")])])
    with pytest.raises(ValidationError):
        model.with_structured_output(Refund).invoke("q", config={"callbacks": [h]})
    [call] = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"]
    assert call["parse_error"] and "eligible" in call["parse_error"]
    assert call["validations"][0]["passed"] is False and call["validations"][0]["rule"] == "schema"


def test_retries_are_counted(tracer, handler):
    model = ScriptedChatModel(script=[RateLimitError("429"), RateLimitError("429"), answer("fine")])
    chain = model.with_retry(stop_after_attempt=3, wait_exponential_jitter=False, retry_if_exception_type=(RateLimitError,))
    chain.invoke("hi", config={"callbacks": [handler]})
    doc = tracer.get_trace(handler.last_trace_id).to_dict()
    calls = doc["llm_calls"]
    assert [c["status"] for c in calls] == ["error", "error", "ok"]
    assert [c["retry_count"] for c in calls] == [0, 1, 2]
    assert doc["status"] == "ok"


def test_fallback_records_the_model_it_fell_back_from(tracer, handler):
    primary = ScriptedChatModel(script=[RateLimitError("429 from primary")], model="gpt-4o")
    backup = ScriptedChatModel(script=[answer("backup answer", version="claude-3-5-sonnet-20241022")],
                               model="claude-3-5-sonnet")
    out = primary.with_fallbacks([backup]).invoke("hi", config={"callbacks": [handler]})
    assert out.content == "backup answer"
    calls = tracer.get_trace(handler.last_trace_id).to_dict()["llm_calls"]
    assert [(c["model"], c["status"], c["fallback_from"]) for c in calls] == [
        ("gpt-4o", "error", None), ("claude-3-5-sonnet", "ok", "gpt-4o")]
    assert calls[1]["model_version"] == "claude-3-5-sonnet-20241022"


def test_several_generations(sqlite_tracer):
    from langchain_core.outputs import ChatGeneration, ChatResult

    from llmtrace_langchain import LLMTraceCallbackHandler

    class TwoAnswers(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            return ChatResult(generations=[ChatGeneration(message=answer("first")),
                                           ChatGeneration(message=answer("second"))])

    h = LLMTraceCallbackHandler(sqlite_tracer)
    TwoAnswers(script=[answer("x")]).invoke("hi", config={"callbacks": [h]})
    [call] = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"]
    assert call["raw_completion"] == "first"
    assert call["generations"] == ["first", "second"]


def test_secrets_never_stored_in_params(sqlite_tracer):
    import sqlalchemy as sa

    from llmtrace.store import schema as S
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    model = ScriptedChatModel(script=[answer("ok")]).bind(api_key="sk-proj-SECRETSECRET123", temperature=0.2,
                                                          max_tokens=100, extra_headers={"x-auth-token": "tok-999"})
    model.invoke("hi", config={"callbacks": [h]})
    [call] = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"]
    assert call["params"]["temperature"] == 0.2 and call["params"]["max_tokens"] == 100
    assert call["params"]["api_key"] == "[SECRET]"
    assert call["params"]["extra_headers"]["x-auth-token"] == "[SECRET]"
    with raw_engine(sqlite_tracer.url).connect() as conn:
        for table in S.METADATA.sorted_tables:
            for row in conn.execute(sa.select(table)):
                assert "SECRETSECRET" not in repr(tuple(row)) and "tok-999" not in repr(tuple(row))



def test_repeated_params_are_stored_as_each_call_passed_them(sqlite_tracer):
    # params repeat call after call, so their stored form is remembered: a remembered form must
    # still be scrubbed, and 1, 1.0 and True (equal in Python) must each be stored as passed
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    seen = []
    for temperature in (1, 1.0, True, 1, 1.0):
        model = ScriptedChatModel(script=[answer("ok")]).bind(api_key="sk-proj-SECRETSECRET123",
                                                              temperature=temperature)
        model.invoke("hi", config={"callbacks": [h]})
        sqlite_tracer.flush()
        [call] = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"]
        assert call["params"]["api_key"] == "[SECRET]"
        seen.append(call["params"]["temperature"])
    assert seen == [1, 1.0, True, 1, 1.0]
    assert [type(v) for v in seen] == [int, float, bool, int, float]

def test_tokens_from_llm_output_and_response_metadata(sqlite_tracer):
    # providers that report usage only in llm_output (OpenAI-style) or response_metadata (Anthropic-style)
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from llmtrace_langchain import LLMTraceCallbackHandler

    class LegacyUsage(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            return ChatResult(generations=[ChatGeneration(message=AIMessage("a"))], llm_output={
                "model_name": "gpt-4o-2024-11-20", "token_usage": {
                    "prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57,
                    "prompt_tokens_details": {"cached_tokens": 10}, "completion_tokens_details": {"reasoning_tokens": 2}}})

    class MetadataUsage(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            msg = AIMessage("b", response_metadata={"model": "claude-3-5-haiku-20241022", "stop_reason": "end_turn",
                                                    "usage": {"input_tokens": 40, "output_tokens": 9,
                                                              "cache_read_input_tokens": 4}})
            return ChatResult(generations=[ChatGeneration(message=msg)])

    h = LLMTraceCallbackHandler(sqlite_tracer)
    LegacyUsage(script=[answer("x")]).invoke("q", config={"callbacks": [h]})
    [a] = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"]
    assert a["tokens"] == {"input": 50, "output": 7, "total": 57, "input_cached": 10, "input_cache_write": None, "reasoning": 2}
    assert a["model_version"] == "gpt-4o-2024-11-20"
    MetadataUsage(script=[answer("x")]).invoke("q", config={"callbacks": [h]})
    [b] = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"]
    # Anthropic's input_tokens leave out cache reads: tokens.input is every billed input token (SIGNALS.md)
    assert b["tokens"] == {"input": 44, "output": 9, "total": 53, "input_cached": 4, "input_cache_write": None,
                           "reasoning": None}
    assert b["model_version"] == "claude-3-5-haiku-20241022" and b["finish_reason"] == "end_turn"
