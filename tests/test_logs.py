"""Structured log lines: one JSON object per LLM call, metadata only, levels as people expect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fakes import REFUND_JSON, ScriptedChatModel, answer, rag_chain, simple_chain
from langchain_core.exceptions import OutputParserException
from loguru import logger
from test_langchain_errors import RateLimitError

import llmtrace


@pytest.fixture
def lines():
    captured: list[tuple[str, dict]] = []
    sink = logger.add(lambda m: captured.append((m.record["level"].name, json.loads(m.record["message"]))),
                      level="DEBUG", filter=lambda r: r["name"].startswith("llmtrace") and r["message"].startswith("{"))
    logger.enable("llmtrace")
    yield captured
    logger.disable("llmtrace")
    logger.remove(sink)


def handler(tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    return LLMTraceCallbackHandler(tracer)


def test_one_line_per_call_matching_the_record_without_content(sqlite_tracer, lines):
    h = handler(sqlite_tracer)
    rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke(
        "Can I return my blender?", config={"callbacks": [h], "metadata": {"llmtrace_feature": "refunds",
                                                                           "llmtrace_team": "support",
                                                                           "llmtrace_user_id": "u-1"}})
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    calls = [f for level, f in lines if f["event"] == "llm_call"]
    assert len(calls) == 1 and lines[0][0] == "INFO"
    line, call = calls[0], doc["llm_calls"][0]
    assert line["trace_id"] == doc["trace_id"] and line["span_id"] == call["span_id"]
    assert (line["model"], line["model_version"], line["input_tokens"], line["output_tokens"]) == (
        "gpt-4o", "gpt-4o-2024-08-06", 120, 30)
    assert line["cost_usd"] == pytest.approx(call["cost_usd"])
    assert line["latency_ms"] == pytest.approx(call["latency_ms"]["total"], abs=0.01)
    assert (line["feature"], line["team"], line["user_id"]) == ("refunds", "support", doc["user_id"])
    text = json.dumps(lines)
    for content in ("blender", "Refunds are accepted", "eligible", "u-1\""):
        assert content not in text


def test_levels(sqlite_tracer, lines):
    h = handler(sqlite_tracer)
    model = ScriptedChatModel(script=[RateLimitError("429"), answer("fine", finish="length")])
    model.with_retry(stop_after_attempt=2, wait_exponential_jitter=False).invoke("hi", config={"callbacks": [h]})
    with pytest.raises(OutputParserException):
        rag_chain(ScriptedChatModel(script=[answer("not json")])).invoke("q", config={"callbacks": [h]})
    sqlite_tracer.record_validation(h.last_trace_id, rule="refund_limit", passed=False)
    sqlite_tracer.flush()
    got = [(level, f["event"], f.get("error_type") or f.get("rule")) for level, f in lines]
    assert got[:2] == [("ERROR", "llm_call", "rate_limit"), ("WARNING", "llm_call", None)]
    assert ("ERROR", "parse_error", "OutputParserException") in got
    assert ("ERROR", "validation_failed", "refund_limit") in got


def test_silent_until_enabled(sqlite_tracer):
    captured = []
    sink = logger.add(captured.append, level="DEBUG")
    try:
        simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [handler(sqlite_tracer)]})
        sqlite_tracer.flush()
    finally:
        logger.remove(sink)
    assert not [m for m in captured if "llm_call" in m]


def test_json_sink_to_a_file(sqlite_tracer, tmp_path):
    path = tmp_path / "calls.jsonl"
    hid = llmtrace.add_json_sink(str(path))
    try:
        simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [handler(sqlite_tracer)]})
        sqlite_tracer.flush()
    finally:
        logger.remove(hid)
        logger.disable("llmtrace")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"] for r in rows] == ["llm_call"] and rows[0]["model"] == "gpt-4o"


def test_debug_mode_prints_calls(sqlite_url):
    code = ("import sys; sys.path.insert(0, sys.argv[2]); import llmtrace; from llmtrace_langchain import "
            "LLMTraceCallbackHandler; from fakes import *; t = llmtrace.Tracer(sys.argv[1]); "
            "simple_chain(ScriptedChatModel(script=[answer('the answer')])).invoke({'question': 'mail a@b.io'}, "
            "config={'callbacks': [LLMTraceCallbackHandler(t)]}); t.flush()")
    here = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", code, sqlite_url, here], capture_output=True, text=True,
                         env={**os.environ, "LLMTRACE_DEBUG": "1"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "llmtrace: gpt-4o → gpt-4o-2024-08-06" in out.stderr and "=> the answer" in out.stderr
    assert "[user] mail [EMAIL]" in out.stderr and "a@b.io" not in out.stderr


def test_lines_follow_enable_after_calls_made_while_disabled(sqlite_tracer):
    # While disabled, llmtrace skips asking loguru once loguru has said no; enabling must still work.
    captured: list[dict] = []
    sink = logger.add(lambda m: captured.append(json.loads(m.record["message"])), level="DEBUG",
                      filter=lambda r: r["name"].startswith("llmtrace") and r["message"].startswith("{"))
    try:
        h = handler(sqlite_tracer)
        simple_chain(ScriptedChatModel(script=[answer("one")])).invoke("q", config={"callbacks": [h]})
        sqlite_tracer.flush()
        assert captured == []
        logger.enable("llmtrace")
        simple_chain(ScriptedChatModel(script=[answer("two")])).invoke("q", config={"callbacks": [h]})
        sqlite_tracer.flush()
        assert [f["event"] for f in captured] == ["llm_call"] and captured[0]["trace_id"] == h.last_trace_id
        logger.disable("llmtrace")
        simple_chain(ScriptedChatModel(script=[answer("three")])).invoke("q", config={"callbacks": [h]})
        sqlite_tracer.flush()
        assert len(captured) == 1
    finally:
        logger.disable("llmtrace")
        logger.remove(sink)
