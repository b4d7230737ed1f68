"""Corrections outlive content (issue 17 item 15): the feedback ``correction`` and ``comment`` are
labels the user gave, the reference answers of every eval set; content retention must not take
them, and an eval export after a purge still carries the correction as the reference."""

from __future__ import annotations

import json

import pytest
from fakes import ScriptedChatModel, answer, simple_chain

import llmtrace

CORRECTION = "You have 12 days left to return the order."
COMMENT = "the model said 30 days"


def record(tracer) -> str:
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(tracer)
    simple_chain(ScriptedChatModel(script=[answer("You have 30 days.")])).invoke(
        {"question": "How long do I have to return order A-1?"}, config={"callbacks": [h]})
    tracer.record_feedback(h.last_trace_id, "edited", correction=CORRECTION, comment=COMMENT)
    assert tracer.flush(10)
    return h.last_trace_id


def corrections(tracer, tid: str) -> list[tuple]:
    return [(f["action"], f["correction"], f["comment"]) for f in tracer.get_trace(tid).to_dict()["feedback"]]


@pytest.fixture(params=["content_ttl_days expired", "purge(older_than=...)"])
def purged(request, sqlite_url):
    """A store whose content was purged, by expiry or by age; the tracer stays open."""
    ttl = 1e-9 if request.param.startswith("content_ttl") else 30
    with llmtrace.Tracer(sqlite_url, content_ttl_days=ttl, flush_interval_seconds=0.05) as tracer:
        tid = record(tracer)
        if ttl == 30:  # (expired content, the correction included today, reads as null even before a purge)
            assert corrections(tracer, tid) == [("edited", CORRECTION, COMMENT)]
        result = tracer.purge() if ttl < 1 else tracer.purge(older_than=1e-9)
        assert result["content_rows"] >= 1 and result["traces"] == 1
        doc = tracer.get_trace(tid).to_dict()
        assert doc["llm_calls"][0]["input_messages"] is None  # the prompt is gone, as it should be
        yield tracer, tid, doc


def test_the_correction_survives_a_purge(purged):
    tracer, tid, _doc = purged
    assert corrections(tracer, tid) == [("edited", CORRECTION, COMMENT)]


@pytest.mark.parametrize("fmt, reference_key", [("jsonl", "reference"), ("dataset", "expected_output")])
def test_the_eval_export_after_a_purge_keeps_the_correction_as_reference(purged, tmp_path, fmt, reference_key):
    tracer, tid, _doc = purged
    path = tmp_path / f"eval.{fmt}.jsonl"
    n = tracer.export_eval_set(str(path), format=fmt)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert n == len(rows) == 1, "the export lost the corrected example"
    row = rows[0]
    assert row[reference_key] == CORRECTION
    assert (row.get("trace_id") or row["metadata"]["trace_id"]) == tid


def test_the_export_before_a_purge_has_the_correction(sqlite_tracer, tmp_path):
    """The control: the same store, unpurged, exports the corrected example."""
    tid = record(sqlite_tracer)
    assert corrections(sqlite_tracer, tid) == [("edited", CORRECTION, COMMENT)]
    path = tmp_path / "eval.jsonl"
    assert sqlite_tracer.export_eval_set(str(path)) == 1
    row = json.loads(path.read_text(encoding="utf-8"))
    assert (row["trace_id"], row["label"], row["reference"]) == (tid, "corrected", CORRECTION)
