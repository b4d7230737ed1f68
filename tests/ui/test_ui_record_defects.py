"""Defects in the record that the trace page made visible (the page shows what the record says)."""

from __future__ import annotations

import pytest
from fakes import Refund, ScriptedChatModel, answer, tool_call
from langchain_core.output_parsers import PydanticOutputParser

import llmtrace
from ui.ui_scenario import _tool_loop, lookup_order


def test_a_failed_parse_is_on_the_call_it_parsed_only(sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "call_1")], finish="tool_calls"),
        answer("Sure! Here you go: {eligible: yes}"),
    ])
    chain = _tool_loop(model, [lookup_order]) | PydanticOutputParser(pydantic_object=Refund)
    with llmtrace.Tracer(sqlite_url, flush_interval_seconds=0.05) as t:
        h = LLMTraceCallbackHandler(t)
        with pytest.raises(Exception):  # noqa: B017 - the parser's own exception type
            chain.invoke("refund A-1?", config={"callbacks": [h]})
        doc = t.get_trace(h.last_trace_id).to_dict()
    asked_for_tool, answered = doc["llm_calls"]
    assert answered["parse_error"] and [v["rule"] for v in answered["validations"]] == ["schema"]
    assert asked_for_tool["parse_error"] is None and asked_for_tool["validations"] == []  # it parsed nothing
