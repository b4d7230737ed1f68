"""Replay a recorded call against fake models (same answer, different answer, model error), reparse."""

from __future__ import annotations

import pytest
from fakes import REFUND_JSON, Refund, ScriptedChatModel, answer, rag_chain, tool_call
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from test_langchain_errors import RateLimitError
from test_langchain_tools import hand_loop, lookup_order

import llmtrace
from llmtrace.read.replay import ReplayError


@pytest.fixture
def recorded(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke("Can I return it?", config={"callbacks": [h]})
    return sqlite_tracer.get_trace(h.last_trace_id)


def test_same_and_different_answers(recorded):
    seen = []

    class Spy(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(messages)
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    same = recorded.replay(Spy(script=[answer(REFUND_JSON)]))
    assert same.same and same.new == same.recorded == REFUND_JSON and same.error is None
    assert [m.type for m in seen[0]] == ["system", "human"]
    assert seen[0][1].content == recorded.to_dict()["llm_calls"][0]["input_messages"][1]["content"]
    different = recorded.replay(ScriptedChatModel(script=[answer('{"eligible": false}')]))
    assert not different.same and different.new == '{"eligible": false}' and "different answer" in str(different)


def test_model_error_is_a_result(recorded):
    result = recorded.replay(ScriptedChatModel(script=[RateLimitError("429")]))
    assert result.error["type"] == "rate_limit" and result.new is None and not result.same


def test_replay_with_tools_and_recorded_as_a_linked_trace(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    hand_loop(ScriptedChatModel(script=[answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "c1")]),
                                        answer("done")]), [lookup_order]).invoke("refund?", config={"callbacks": [h]})
    trace = sqlite_tracer.get_trace(h.last_trace_id)
    result = trace.replay(ScriptedChatModel(script=[answer("done again")]), call=1, tracer=sqlite_tracer)
    assert result.recorded == "done" and result.new == "done again"
    linked = sqlite_tracer.get_trace(result.trace_id).to_dict()
    assert linked["metadata"]["replay_of"] == trace.trace_id
    replayed = linked["llm_calls"][0]
    assert [m["role"] for m in replayed["input_messages"]] == ["system", "user", "assistant", "tool"]
    assert replayed["tools_offered"][0]["name"] == "lookup_order"


def test_redacted_and_expired_inputs_are_reported(sqlite_url):
    from fakes import simple_chain

    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(sqlite_url) as t:
        h = LLMTraceCallbackHandler(t)
        simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "mail a@b.io"}, config={"callbacks": [h]})
        result = t.get_trace(h.last_trace_id).replay(ScriptedChatModel(script=[answer("y")]))
    assert result.warnings == ["the recorded input was redacted ([EMAIL] stand where the values were)"]
    with llmtrace.Tracer(sqlite_url, content_ttl_days=1e-9) as t:
        h = LLMTraceCallbackHandler(t)
        simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [h]})
        with pytest.raises(ReplayError, match="expired"):
            t.get_trace(h.last_trace_id).replay(ScriptedChatModel(script=[answer("y")]))


def test_reparse_checks_a_parser_fix_without_a_model(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    chatty = 'Sure! Here you go: {"eligible": true, "days_left": 3, "citations": []}'
    with pytest.raises(Exception):  # noqa: B017 - the parser's own exception type
        rag_chain(ScriptedChatModel(script=[answer(chatty)])).invoke("q", config={"callbacks": [h]})
    trace = sqlite_tracer.get_trace(h.last_trace_id)
    still_broken = trace.reparse(PydanticOutputParser(pydantic_object=Refund))
    assert still_broken.error and not still_broken.fixed

    def tolerant(text: str) -> dict:  # the fix: parse from the first brace
        return JsonOutputParser().parse(text[text.index("{"):])

    fixed = trace.reparse(tolerant)
    assert fixed.fixed and fixed.parsed == {"eligible": True, "days_left": 3, "citations": []}
    assert fixed.recorded_error and fixed.raw == chatty


def test_replay_a_llamaindex_llm(sqlite_tracer):
    from llama_index.core.llms import MockLLM

    from llmtrace_llamaindex import LLMTraceInstrumentor

    inst = LLMTraceInstrumentor(sqlite_tracer).instrument()
    try:
        MockLLM(max_tokens=3).complete("hello there")
    finally:
        inst.uninstrument()
    original = inst.last_trace_id
    result = sqlite_tracer.get_trace(original).replay(MockLLM(max_tokens=3), tracer=sqlite_tracer)
    assert result.same and result.new == "text text text"
    linked = sqlite_tracer.get_trace(result.trace_id).to_dict()
    assert linked["metadata"]["replay_of"] == original and linked["llm_calls"][0]["raw_completion"] == "text text text"
