"""LangChain Expression Language shapes: RunnableParallel and RunnableLambda, with_fallbacks,
with_retry, the trace's tags, tools bound with .bind(tools=...), parser steps and the call they
parsed, and replaying a recorded call — on LangChain's fake chat models."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fakes import REFUND_JSON, Refund, ScriptedChatModel, answer, simple_chain, tool_call
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.output_parsers import PydanticOutputParser, StrOutputParser
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import StructuredTool, tool
from pydantic import BaseModel, Field

from .scn_support import all_trace_ids, path


class RateLimited(Exception):
    status_code = 429


PROMPT = ChatPromptTemplate.from_messages([("system", "Answer in one word."), ("human", "{q}")])


# -- RunnableParallel / RunnableLambda ---------------------------------------------------------

def test_parallel_branches_and_lambdas_each_call_its_own_input_and_parse(scn_tracer, scn_handler):
    chain = (RunnableLambda(lambda q: {"q": q.upper()}, name="normalize")
             | RunnableParallel(short=PROMPT | FakeListChatModel(responses=["yes"]) | StrOutputParser(),
                                long=ChatPromptTemplate.from_messages([("human", "explain {q}")])
                                | FakeListChatModel(responses=["because policy 7"]) | StrOutputParser())
             | RunnableLambda(lambda d: f"{d['short']}: {d['long']}", name="combine"))
    assert chain.invoke("refund?", config={"callbacks": [scn_handler]}) == "yes: because policy 7"

    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    calls = {c["raw_completion"]: c for c in doc["llm_calls"]}
    assert set(calls) == {"yes", "because policy 7"}
    assert calls["yes"]["system_prompt"] == "Answer in one word."
    assert calls["yes"]["input_messages"][-1] == {"role": "user", "content": "REFUND?"}
    assert calls["because policy 7"]["input_messages"] == [{"role": "user", "content": "explain REFUND?"}]
    assert calls["yes"]["parsed"] == "yes" and calls["because policy 7"]["parsed"] == "because policy 7"
    assert path(doc, calls["yes"]["span_id"]) == ["RunnableSequence", "RunnableParallel<short,long>", "RunnableSequence",
                                                  "FakeListChatModel"]
    [normalize] = [s for s in doc["spans"] if s["name"] == "normalize"]
    [combine] = [s for s in doc["spans"] if s["name"] == "combine"]
    assert normalize["inputs"] == "refund?" and normalize["outputs"] == {"q": "REFUND?"}
    assert combine["outputs"] == "yes: because policy 7"
    assert doc["totals"]["llm_calls"] == 2 and doc["status"] == "ok"


def _pause(seconds: float, name: str) -> RunnableLambda:
    def wait(x):
        time.sleep(seconds)
        return x

    return RunnableLambda(wait, name=name)


def test_parallel_branch_parsers_parse_their_own_call(scn_tracer, scn_handler):
    """Branch a's parser ends after branch b's model answered: it must still parse branch a's call."""
    a = ScriptedChatModel(script=[answer("alpha")], model="model-a")
    b = ScriptedChatModel(script=[answer("beta")], model="model-b")
    chain = RunnableParallel(a=a | _pause(0.12, "slow_a") | StrOutputParser(),
                             b=_pause(0.01, "wait_b") | b | _pause(0.2, "slow_b") | StrOutputParser())
    assert chain.invoke("q", config={"callbacks": [scn_handler]}) == {"a": "alpha", "b": "beta"}
    calls = {c["model"]: c for c in scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()["llm_calls"]}
    assert calls["model-a"]["parsed"] == "alpha"
    assert calls["model-b"]["parsed"] == "beta"


# -- fallbacks and retries ---------------------------------------------------------------------

def _fallback_models():
    return (ScriptedChatModel(script=[RateLimited("429 Too Many Requests")], model="gpt-4o"),
            ScriptedChatModel(script=[answer("backup answer", version="claude-3-5-sonnet-20241022")],
                              model="claude-3-5-sonnet"))


def test_fallbacks_at_the_root_record_fallback_from(scn_tracer, scn_handler):
    primary, backup = _fallback_models()
    chain = (PROMPT | primary | StrOutputParser()).with_fallbacks([PROMPT | backup | StrOutputParser()])
    assert chain.invoke({"q": "hi"}, config={"callbacks": [scn_handler]}) == "backup answer"
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert [(c["model"], c["status"], c["fallback_from"]) for c in doc["llm_calls"]] == [
        ("gpt-4o", "error", None), ("claude-3-5-sonnet", "ok", "gpt-4o")]
    assert doc["llm_calls"][0]["error"]["type"] == "rate_limit"
    assert doc["llm_calls"][1]["parsed"] == "backup answer" and doc["status"] == "ok"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_fallbacks_inside_a_chain_record_fallback_from(scn_tracer, scn_handler, mode):
    primary, backup = _fallback_models()
    chain = PROMPT | primary.with_fallbacks([backup]) | StrOutputParser()
    config = {"callbacks": [scn_handler]}
    out = chain.invoke({"q": "hi"}, config) if mode == "invoke" else asyncio.run(chain.ainvoke({"q": "hi"}, config))
    assert out == "backup answer"
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert all(path(doc, c["span_id"])[:2] == ["RunnableSequence", "RunnableWithFallbacks"] for c in doc["llm_calls"])
    assert [(c["model"], c["status"], c["fallback_from"]) for c in doc["llm_calls"]] == [
        ("gpt-4o", "error", None), ("claude-3-5-sonnet", "ok", "gpt-4o")]


def test_retry_inside_a_chain_counts_attempts(scn_tracer, scn_handler):
    model = ScriptedChatModel(script=[RateLimited("429"), RateLimited("429"), answer("ok")])
    retried = model.with_retry(stop_after_attempt=3, wait_exponential_jitter=False, retry_if_exception_type=(RateLimited,))
    assert (PROMPT | retried | StrOutputParser()).invoke({"q": "x"}, config={"callbacks": [scn_handler]}) == "ok"
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert [(c["status"], c["retry_count"]) for c in doc["llm_calls"]] == [("error", 0), ("error", 1), ("ok", 2)]
    assert doc["llm_calls"][-1]["parsed"] == "ok" and doc["status"] == "ok"


def test_retry_of_a_chain_whose_parser_failed(scn_tracer, scn_handler):
    """The whole chain is retried when parsing fails: the failure stays on the call it parsed."""
    model = ScriptedChatModel(script=[answer("Sure! eligible: yes"), answer(REFUND_JSON)])
    chain = (PROMPT | model | PydanticOutputParser(pydantic_object=Refund)).with_retry(
        stop_after_attempt=2, wait_exponential_jitter=False, retry_if_exception_type=(OutputParserException,))
    assert chain.invoke({"q": "refund?"}, config={"callbacks": [scn_handler]}).days_left == 12
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    bad, good = doc["llm_calls"]
    assert bad["status"] == "ok" and bad["raw_completion"] == "Sure! eligible: yes"
    assert bad["parsed"] is None and "Invalid json output" in bad["parse_error"]
    assert [(v["rule"], v["passed"]) for v in bad["validations"]] == [("schema", False)]
    assert good["parsed"] == json.loads(REFUND_JSON) and good["parse_error"] is None
    assert [(v["rule"], v["passed"]) for v in good["validations"]] == [("schema", True)]
    assert (bad["retry_count"], good["retry_count"]) == (0, 1)
    assert doc["status"] == "ok"


# -- tags ----------------------------------------------------------------------------------------

def test_config_tags_are_the_trace_tags(scn_tracer, scn_handler):
    simple_chain(ScriptedChatModel(script=[answer("ok")])).invoke(
        {"question": "q"}, config={"callbacks": [scn_handler], "tags": ["checkout", "beta-users"]})
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert {"checkout", "beta-users"} <= set(doc["tags"])


def test_llmtrace_tags_and_trace_scope_tags(scn_tracer, scn_handler):
    simple_chain(ScriptedChatModel(script=[answer("ok")])).invoke(
        {"question": "q"}, config={"callbacks": [scn_handler], "metadata": {"llmtrace_tags": ["from-metadata"]}})
    assert scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()["tags"] == ["from-metadata"]
    with scn_tracer.trace(name="scoped", tags=["from-scope"]) as t:
        simple_chain(ScriptedChatModel(script=[answer("ok")])).invoke({"question": "q"}, config={"callbacks": [scn_handler]})
    assert scn_tracer.get_trace(t.trace_id).to_dict()["tags"] == ["from-scope"]


# -- tools bound to a model --------------------------------------------------------------------

class WeatherQuery(BaseModel):
    city: str = Field(description="City name")
    unit: str = Field(default="C", description="C or F")


def _weather(city: str, unit: str = "C") -> str:
    return f"20 {unit} in {city}"


weather = StructuredTool.from_function(_weather, name="weather", description="Current weather.", args_schema=WeatherQuery)


def _schema_of(offered: dict) -> dict:
    params = offered["parameters"]
    assert isinstance(params, dict), f"stored as {params!r}, not a JSON schema"
    return params


def test_bind_structured_tool_stores_its_json_schema(scn_tracer, scn_handler):
    ScriptedChatModel(script=[answer("done")]).bind(tools=[weather]).invoke("weather?", config={"callbacks": [scn_handler]})
    [call] = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()["llm_calls"]
    [offered] = call["tools_offered"]
    assert (offered["name"], offered["description"]) == ("weather", "Current weather.")
    schema = _schema_of(offered)
    assert schema["properties"]["city"] == {"description": "City name", "type": "string"}
    assert schema["required"] == ["city"]


def test_bind_tools_stores_the_converted_schema(scn_tracer, scn_handler):
    ScriptedChatModel(script=[answer("done")]).bind_tools([weather]).invoke("weather?", config={"callbacks": [scn_handler]})
    [call] = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()["llm_calls"]
    [offered] = call["tools_offered"]
    assert _schema_of(offered)["properties"]["unit"]["default"] == "C"


# -- parsers and the call they parsed (issue 14 item 4) ----------------------------------------

@tool
def lookup_order(order_id: str) -> str:
    """Look up an order by id."""
    return f"order {order_id}: delivered 10 days ago"


def agent_then_parser(final_text: str):
    """A tool loop whose last answer is parsed: the first call asks for a tool, the second answers."""
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "call_1")], finish="tool_calls"),
        answer(final_text),
    ])
    bound = model.bind_tools([lookup_order])

    def loop(question: str):
        messages = [HumanMessage(question)]
        while True:
            ai = bound.invoke(messages)
            messages.append(ai)
            if not ai.tool_calls:
                return ai
            messages.extend(lookup_order.invoke(tc) for tc in ai.tool_calls)

    return RunnableLambda(loop, name="refund_agent") | PydanticOutputParser(pydantic_object=Refund)


def test_parser_fills_parsed_on_the_call_it_consumed(scn_tracer, scn_handler):
    out = agent_then_parser(REFUND_JSON).invoke("refund A-1?", config={"callbacks": [scn_handler]})
    assert out.citations == ["pol-7#2"]
    asked, answered = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()["llm_calls"]
    assert asked["parsed"] is None and asked["validations"] == [] and asked["parser"] is None
    assert answered["parsed"] == json.loads(REFUND_JSON) and answered["parser"] == "PydanticOutputParser"
    assert [(v["rule"], v["passed"]) for v in answered["validations"]] == [("schema", True)]


def test_parse_error_is_on_the_call_it_parsed_only(scn_tracer, scn_handler):
    with pytest.raises(OutputParserException):
        agent_then_parser("Yes, you can get a refund.").invoke("refund A-1?", config={"callbacks": [scn_handler]})
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert doc["status"] == "error"
    asked, answered = doc["llm_calls"]
    assert answered["raw_completion"] == "Yes, you can get a refund." and answered["status"] == "ok"
    assert "Invalid json output" in answered["parse_error"]
    assert [(v["rule"], v["passed"]) for v in answered["validations"]] == [("schema", False)]
    assert asked["parse_error"] is None and asked["validations"] == []


# -- replay (issue 14 item 17) -----------------------------------------------------------------

def test_replay_a_plain_call_on_a_fake_model(scn_tracer, scn_handler):
    simple_chain(ScriptedChatModel(script=[answer("recorded answer")])).invoke(
        {"question": "refund?"}, config={"callbacks": [scn_handler]})
    result = scn_tracer.get_trace(scn_handler.last_trace_id).replay(GenericFakeChatModel(messages=iter(["a new answer"])))
    assert result.error is None
    assert (result.recorded, result.new, result.same) == ("recorded answer", "a new answer", False)


def test_replay_a_tool_call_on_a_model_without_tool_binding(scn_tracer, scn_handler):
    agent_then_parser(REFUND_JSON).invoke("refund A-1?", config={"callbacks": [scn_handler]})
    trace = scn_tracer.get_trace(scn_handler.last_trace_id)
    assert trace.to_dict()["llm_calls"][-1]["tools_offered"]  # the replayed call had tools
    result = trace.replay(GenericFakeChatModel(messages=iter(["the replayed answer"])))
    assert result.error is None, result.error
    assert result.new == "the replayed answer" and result.recorded == REFUND_JSON


# -- a stream that fails mid-way ---------------------------------------------------------------

class BreaksMidStream(ScriptedChatModel):
    """Streams two tokens, then the connection drops (sync and async)."""

    def _chunks(self):
        return [ChatGenerationChunk(message=AIMessageChunk(content=w)) for w in ("Refunds", " are")]

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        for chunk in self._chunks():
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
        raise ConnectionError("connection reset mid-stream")

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        for chunk in self._chunks():
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
        raise ConnectionError("connection reset mid-stream")


def stream_and_fail(handler, mode: str, with_parser: bool = True) -> str:
    chain = PROMPT | BreaksMidStream(script=[answer("unused")])
    if with_parser:
        chain = chain | StrOutputParser()
    got: list = []
    config = {"callbacks": [handler]}
    with pytest.raises(ConnectionError):
        if mode == "stream":
            for piece in chain.stream({"q": "refund?"}, config):
                got.append(piece)
        else:
            async def main():
                async for piece in chain.astream({"q": "refund?"}, config):
                    got.append(piece)

            asyncio.run(main())
    return "".join(p if isinstance(p, str) else p.content for p in got)


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_stream_failing_mid_way_is_an_error_trace(scn_tracer, scn_handler, mode):
    assert stream_and_fail(scn_handler, mode) == "Refunds are"
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert (doc["status"], call["status"], call["streamed"]) == ("error", "error", True)
    assert "connection reset mid-stream" in call["error"]["message"]


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_stream_failing_mid_way_keeps_what_was_delivered(scn_tracer, scn_handler, mode):
    delivered = stream_and_fail(scn_handler, mode, with_parser=False)
    [call] = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()["llm_calls"]
    assert call["raw_completion"] == delivered == "Refunds are"


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_stream_failing_mid_way_is_not_a_parse_failure(scn_tracer, scn_handler, mode):
    stream_and_fail(scn_handler, mode)
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["parse_error"] is None and call["validations"] == []
    assert doc["totals"]["errors"] == 1  # one failure: the connection
    [row] = scn_tracer.stats("model")
    assert (row["errors"], row["parse_failures"]) == (1, 0)


# -- a handler given to the model only -----------------------------------------------------------

def test_handler_given_to_the_chain_with_config(scn_tracer, scn_handler):
    chain = (PROMPT | ScriptedChatModel(script=[answer("ok")]) | StrOutputParser()).with_config(
        callbacks=[scn_handler], run_name="configured-chain", metadata={"llmtrace_feature": "refunds"})
    assert chain.invoke({"q": "hi"}) == "ok"
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    assert (doc["name"], doc["feature"], doc["llm_calls"][0]["parsed"]) == ("configured-chain", "refunds", "ok")


def test_handler_given_to_the_model_only_names_its_trace(scn_tracer, scn_handler):
    """ChatModel(callbacks=[handler]) is a common setup: the chain around it is not traced, the call is."""
    model = ScriptedChatModel(script=[answer("model-level answer")], callbacks=[scn_handler])
    assert (PROMPT | model | StrOutputParser()).invoke({"q": "hi"}) == "model-level answer"
    [recorded] = all_trace_ids(scn_tracer)  # the call was recorded, as a trace of its own
    assert scn_handler.last_trace_id == recorded
    [call] = scn_tracer.get_trace(recorded).to_dict()["llm_calls"]
    assert call["raw_completion"] == "model-level answer"
