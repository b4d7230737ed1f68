"""Eval-set export: labels from the user's action, every format read back row by row."""

from __future__ import annotations

import json

import pytest
from fakes import ScriptedChatModel, answer, simple_chain

import llmtrace


@pytest.fixture
def recorded(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    ids = {}
    for action, question in (("accepted", "q1"), ("edited", "q2"), ("abandoned", "q3"), ("retried", "q1"),
                             ("rated", "q4")):
        simple_chain(ScriptedChatModel(script=[answer(f"answer to {question}")])).invoke(
            {"question": question}, config={"callbacks": [h], "metadata": {"llmtrace_feature": "refunds"}})
        ids[action] = h.last_trace_id
        if action == "edited":
            sqlite_tracer.record_feedback(h.last_trace_id, "edited", correction="the better answer")
        elif action == "rated":
            sqlite_tracer.record_feedback(h.last_trace_id, "rated", score=5)
        else:
            sqlite_tracer.record_feedback(h.last_trace_id, action)
    return ids


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_labels_dedupe_and_provenance(sqlite_tracer, recorded, tmp_path):
    n = sqlite_tracer.export_eval_set(tmp_path / "e.jsonl")
    rows = read(tmp_path / "e.jsonl")
    assert n == len(rows) == 3  # q1 twice (accepted, retried): one row per input
    by_trace = {r["trace_id"]: r for r in rows}
    assert by_trace[recorded["accepted"]]["label"] == "positive"
    assert by_trace[recorded["accepted"]]["reference"] == "answer to q1"
    assert by_trace[recorded["edited"]]["label"] == "corrected"
    assert by_trace[recorded["edited"]]["reference"] == "the better answer"
    assert by_trace[recorded["abandoned"]]["label"] == "negative" and by_trace[recorded["abandoned"]]["reference"] is None
    assert recorded["rated"] not in by_trace
    assert all(r["feature"] == "refunds" and r["inputs"]["messages"][-1]["role"] == "user" for r in rows)


def test_openai_and_dataset_formats(sqlite_tracer, recorded, tmp_path):
    sqlite_tracer.export_eval_set(tmp_path / "o.jsonl", format="openai", labels=("corrected",))
    [row] = read(tmp_path / "o.jsonl")
    assert row["messages"][-1] == {"role": "assistant", "content": "the better answer"}
    assert row["messages"][-2] == {"role": "user", "content": "q2"}
    assert row["metadata"] == {"trace_id": recorded["edited"], "label": "corrected"}
    sqlite_tracer.export_eval_set(tmp_path / "d.jsonl", format="dataset", labels=("positive", "negative"))
    rows = read(tmp_path / "d.jsonl")
    assert sorted(r["metadata"]["label"] for r in rows) == ["negative", "positive"]
    assert all(set(r) == {"inputs", "expected_output", "metadata"} for r in rows)


def test_bad_format_or_label(sqlite_tracer, tmp_path):
    with pytest.raises(llmtrace.ConfigError, match="format"):
        sqlite_tracer.export_eval_set(tmp_path / "x", format="xml")
    with pytest.raises(llmtrace.ConfigError, match="label"):
        sqlite_tracer.export_eval_set(tmp_path / "x", labels=("great",))


def test_parquet_dataframe_and_hf_dataset_read_back(sqlite_tracer, recorded, tmp_path):
    import pandas as pd

    expected = read_rows(sqlite_tracer, tmp_path)
    n = sqlite_tracer.export_eval_set(tmp_path / "e.parquet", format="parquet")
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert n == len(frame) == len(expected)
    for (_, got), want in zip(frame.iterrows(), expected, strict=True):
        reference = None if pd.isna(got["reference"]) else got["reference"]
        assert (got["trace_id"], got["label"], reference, got["output"]) == (
            want["trace_id"], want["label"], want["reference"], want["output"])
        assert json.loads(got["inputs"]) == want["inputs"]
    df = sqlite_tracer.eval_dataframe(labels=("corrected",))
    assert list(df["reference"]) == ["the better answer"]
    ds = sqlite_tracer.eval_dataset()
    assert len(ds) == len(expected) and ds[0]["trace_id"] == expected[0]["trace_id"]
    assert json.loads(ds[0]["inputs"]) == expected[0]["inputs"]


def read_rows(tracer, tmp_path):
    tracer.export_eval_set(tmp_path / "all.jsonl")
    return read(tmp_path / "all.jsonl")


def test_validation_filter(sqlite_tracer, recorded, tmp_path):
    sqlite_tracer.record_validation(recorded["edited"], rule="tone", passed=False)
    sqlite_tracer.export_eval_set(tmp_path / "failed.jsonl", validation="failed")
    assert [r["trace_id"] for r in read(tmp_path / "failed.jsonl")] == [recorded["edited"]]
    sqlite_tracer.export_eval_set(tmp_path / "passed.jsonl", validation="passed")
    assert recorded["edited"] not in {r["trace_id"] for r in read(tmp_path / "passed.jsonl")}


def test_action_filter(sqlite_tracer, recorded, tmp_path):
    sqlite_tracer.export_eval_set(tmp_path / "a.jsonl", actions=("abandoned",))
    assert [r["trace_id"] for r in read(tmp_path / "a.jsonl")] == [recorded["abandoned"]]
    with pytest.raises(llmtrace.ConfigError, match="actions"):
        sqlite_tracer.export_eval_set(tmp_path / "x", actions=("liked",))


def test_a_corrected_example_outlives_its_prompt(sqlite_url, tmp_path):
    """The correction is a label kept on its own retention: after the prompt expired the example is
    still exported with the correction as its reference (inputs null), except as an OpenAI chat line."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(sqlite_url, content_ttl_days=1e-9) as tracer:
        h = LLMTraceCallbackHandler(tracer)
        for question, action in (("q-edited", "edited"), ("q-accepted", "accepted")):
            simple_chain(ScriptedChatModel(script=[answer(f"answer to {question}")])).invoke(
                {"question": question}, config={"callbacks": [h]})
            if action == "edited":
                tracer.record_feedback(h.last_trace_id, "edited", correction="the better answer")
                edited = h.last_trace_id
            else:
                tracer.record_feedback(h.last_trace_id, "accepted")
        assert tracer.purge()["content_rows"] >= 2
        n = tracer.export_eval_set(tmp_path / "e.jsonl")
        [row] = read(tmp_path / "e.jsonl")  # (the accepted one taught its own answer, which expired)
        assert n == 1 and (row["trace_id"], row["label"], row["reference"], row["inputs"]) == (
            edited, "corrected", "the better answer", None)
        assert tracer.export_eval_set(tmp_path / "d.jsonl", format="dataset") == 1
        assert read(tmp_path / "d.jsonl")[0]["expected_output"] == "the better answer"
        assert tracer.export_eval_set(tmp_path / "o.jsonl", format="openai") == 0
        assert read(tmp_path / "o.jsonl") == []


def test_eval_filters_are_checked_on_every_path(sqlite_tracer, tmp_path):
    with pytest.raises(llmtrace.ConfigError, match="unknown eval-set filter.*'labelz'"):
        sqlite_tracer.eval_dataframe(labelz=("corrected",))
    with pytest.raises(llmtrace.ConfigError, match="since"):
        sqlite_tracer.export_eval_set(tmp_path / "x.jsonl", since="last tuesday")
    with pytest.raises(llmtrace.ConfigError, match="path"):
        sqlite_tracer.export_eval_set("")
    assert sqlite_tracer.export_eval_set(tmp_path / "x.jsonl", since="7d", labels="corrected") == 0
