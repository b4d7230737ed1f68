"""Stats: each grouping against the fixture's hand-computed answers, on all three databases."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

import llmtrace
from tests import analysis_data

# hand-computed from the fixture's table (see tests/analysis_data.py)
COST_A = (100 * 1 + 10 * 2) / 1e6 + (200 * 1 + 20 * 2) / 1e6 + (200 * 1 + 100 * 0.5 + 30 * 2) / 1e6
COST_B3, COST_B4 = (1000 * 10 + 100 * 30) / 1e6, (400 * 10 + 40 * 30) / 1e6




def by_key(rows, key):
    return {r[key]: r for r in rows}


def test_stats_by_model(analysis):
    rows = by_key(analysis.tracer.stats("model", environment=analysis.env), "model")
    assert set(rows) == {"model-a", "model-b", "mystery"}
    a, b, m = rows["model-a"], rows["model-b"], rows["mystery"]
    assert (a["calls"], a["traces"], a["input_tokens"], a["output_tokens"]) == (4, 3, 600, 60)
    assert a["avg_input_tokens"] == 200 and a["avg_output_tokens"] == 20  # T6 observed no tokens: not a zero
    assert a["cost_usd"] == pytest.approx(COST_A) and a["unpriced_calls"] == 0
    assert (a["latency_p50_ms"], a["latency_p95_ms"], a["latency_p99_ms"]) == (150, 285, 297)  # 50,100,200,300
    assert (a["ttft_p50_ms"], a["ttft_p95_ms"]) == (50, 50)
    assert a["errors"] == 0 and a["error_rate"] == 0 and a["errors_by_type"] == {}
    assert a["parse_failures"] == 1 and a["parse_failure_rate"] == 0.25
    assert a["validation_failures"] == 1  # T2's trace-level check counts against T2's last call
    assert (a["feedback_accepted"], a["feedback_edited"], a["feedback_retried"], a["feedback_abandoned"]) == (0, 1, 1, 0)

    assert b["calls"] == 2 and b["cost_usd"] == pytest.approx(COST_B3 + COST_B4)
    assert (b["latency_p50_ms"], b["latency_p95_ms"], b["latency_p99_ms"]) == (700, 970, 994)
    assert b["errors_by_type"] == {"timeout": 1} and b["error_rate"] == 0.5
    assert b["validation_failures"] == 1 and b["validation_failure_rate"] == 0.5  # T4's call; T3's check passed
    assert b["feedback_accepted"] == 1 and b["feedback_edited"] == 0  # T3 was only rated: not in the mix

    assert m["cost_usd"] is None and m["unpriced_calls"] == 1  # no price: null, never a guess
    assert m["errors_by_type"] == {"rate_limit": 1} and m["error_rate"] == 1.0 and m["feedback_abandoned"] == 1


def test_stats_by_version_feature_team_user_prompt(analysis):
    t = analysis.tracer
    versions = by_key(t.stats("version", environment=analysis.env), "version")
    assert set(versions) == {"model-a-2026", "model-b-2026", None} and versions[None]["calls"] == 1

    features = by_key(t.stats("feature", environment=analysis.env), "feature")
    refunds, search = features["refunds"], features["search"]
    assert (refunds["calls"], refunds["traces"], search["calls"], search["traces"]) == (4, 3, 3, 3)
    assert refunds["cost_usd"] == pytest.approx(COST_A - 0 + COST_B3)
    assert search["cost_usd"] == pytest.approx(COST_B4) and search["unpriced_calls"] == 1
    assert refunds["errors_by_type"] == {"timeout": 1} and search["errors_by_type"] == {"rate_limit": 1}

    teams = by_key(t.stats("team", environment=analysis.env), "team")
    assert teams["support"]["calls"] == 4 and teams["growth"]["calls"] == 3

    users = by_key(t.stats("user", environment=analysis.env), "user")
    alice = users[analysis.user("alice")]
    assert alice["calls"] == 3 and alice["traces"] == 2 and alice["input_tokens"] == 1300
    assert users[None]["calls"] == 1  # T6 has no user

    prompts = by_key(t.stats("prompt-version", environment=analysis.env), "prompt_version")
    assert prompts["v1"]["calls"] == 5 and prompts["v2"]["calls"] == 1 and prompts["v2"]["error_rate"] == 1.0

    assert [(r["provider"], r["calls"]) for r in t.stats("provider", environment=analysis.env)] == [("test", 7)]
    assert [(r["environment"], r["calls"]) for r in t.stats("environment", environment=analysis.env)] == [(analysis.env, 7)]
    hours = t.stats("hour", environment=analysis.env)
    assert [r["hour"] for r in hours] == sorted({analysis.at(d).strftime("%Y-%m-%dT%H:00") for d in (-2, -1, 0)})

    both = t.stats("feature,model", environment=analysis.env)
    assert {(r["feature"], r["model"]): r["calls"] for r in both} == {
        ("refunds", "model-a"): 3, ("refunds", "model-b"): 1, ("search", "model-b"): 1,
        ("search", "mystery"): 1, ("search", "model-a"): 1}


def test_stats_by_day_and_turn_show_token_trends(analysis):
    t = analysis.tracer
    days = t.stats("day", environment=analysis.env)
    assert [r["day"] for r in days] == [analysis.at(d).date().isoformat() for d in (-2, -1, 0)]  # oldest first
    assert [r["calls"] for r in days] == [3, 2, 2]
    assert [r["avg_input_tokens"] for r in days] == [200, 700, 500]

    turns = t.stats("turn", environment=analysis.env)
    # a session's n-th trace: s1 = T1, T2, T3 and s2 = T4, T5; T6 has no session
    assert [(r["turn"], r["calls"], r["avg_input_tokens"]) for r in turns] == [
        (1, 3, round((100 + 200 + 400) / 3, 1)), (2, 2, 400), (3, 1, 1000), (None, 1, None)]


def test_stats_since_until_and_filters(analysis):
    t = analysis.tracer
    recent = by_key(t.stats("model", since=analysis.at(-1) - timedelta(hours=1), environment=analysis.env), "model")
    assert set(recent) == {"model-b", "mystery", "model-a"} and recent["model-a"]["calls"] == 1  # only T6
    window = t.stats(None, since=analysis.at(-2) - timedelta(hours=1), until=analysis.at(-1) - timedelta(hours=1),
                     environment=analysis.env)
    assert len(window) == 1 and window[0]["calls"] == 3
    assert t.stats("model", feature="search", model="model-b", environment=analysis.env)[0]["calls"] == 1
    assert t.stats("model", user="alice", environment=analysis.env)[0]["calls"] == 2  # the raw id is hashed
    assert t.stats("model", user=analysis.user("alice"), environment=analysis.env)[0]["calls"] == 2  # the stored hash too
    assert t.stats("model", since="30d", feature="no-such-feature") == []


def test_stats_dataframe_and_bad_input(analysis):
    df = analysis.tracer.stats_dataframe("feature", environment=analysis.env)
    assert sorted(df["feature"]) == ["refunds", "search"] and int(df["calls"].sum()) == 7
    with pytest.raises(llmtrace.ConfigError, match="choose from model, version"):
        analysis.tracer.stats("colour")
    with pytest.raises(llmtrace.ConfigError, match="since is an age like"):
        analysis.tracer.stats(since="last tuesday")


def test_stats_cli_json_csv_and_table(analysis):
    from tests.test_cli import llmtrace as run

    out = run("stats", "--db", analysis.url, "--by", "feature", "--json", "--since", "30d")
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["feature"] in ("refunds", "search")]
    assert len(rows) >= 2  # (the server databases also hold other tests' calls)
    csv_out = run("stats", "--db", analysis.url, "--by", "day,model", "--csv")
    header = csv_out.stdout.splitlines()[0].split(",")
    assert header[:3] == ["day", "model", "calls"] and "latency_p95_ms" in header and "feedback_edited" in header
    table = run("stats", "--db", analysis.url, "--by", "model")
    assert table.returncode == 0 and "p95 ms" in table.stdout and "model-a" in table.stdout


def test_stats_over_recorded_langchain_calls(tracer):
    """End to end: real LangChain runs through the handler, then stats over what was written."""
    from llmtrace_langchain import LLMTraceCallbackHandler
    from tests.fakes import ScriptedChatModel, answer, simple_chain

    env = f"env-{uuid.uuid4().hex[:12]}"
    handler = LLMTraceCallbackHandler(tracer)
    model = ScriptedChatModel(script=[answer("one"), answer("two"), answer("three")])
    for i in range(3):
        simple_chain(model).invoke({"question": f"q{i}"}, config={"callbacks": [handler], "metadata": {
            "llmtrace_feature": "e2e", "llmtrace_environment": env}})
        tracer.record_feedback(handler.last_trace_id, "accepted")
    rows = tracer.stats("feature", feature="e2e", environment=env)
    assert len(rows) == 1 and rows[0]["calls"] == 3 and rows[0]["feedback_accepted"] == 3
    assert rows[0]["input_tokens"] is not None and rows[0]["cost_usd"] is not None  # gpt-4o has a price


def test_stats_reads_calls_of_long_and_open_traces(sqlite_url):
    """Calls are joined to their traces by time windows; a trace that started days before its call,
    or one still open (no trace row yet), must still count."""
    import sqlalchemy as sa

    from llmtrace.store import schema as S
    from llmtrace.store.engine import utcnow

    with llmtrace.Tracer(sqlite_url, prices=analysis_data.PRICES) as tracer:
        tracer.schema_version()
        now = utcnow()
        engine = sa.create_engine(sqlite_url)
        with engine.begin() as conn:
            conn.execute(S.traces.insert(), [{"trace_id": "old", "started_at": now - timedelta(days=3), "feature": "long"}])
            conn.execute(S.llm_calls.insert(), [
                {"span_id": "c-old", "trace_id": "old", "started_at": now - timedelta(hours=1), "model": "model-a",
                 "input_tokens": 10, "output_tokens": 1, "latency_ms": 5.0, "status": "ok"},
                {"span_id": "c-open", "trace_id": "open", "started_at": now - timedelta(hours=1), "model": "model-a",
                 "input_tokens": 20, "output_tokens": 2, "latency_ms": 7.0, "status": "ok"}])
        engine.dispose()
        rows = by_key(tracer.stats("feature", since="1d"), "feature")
        assert rows["long"]["calls"] == 1 and rows["long"]["input_tokens"] == 10
        assert rows[None]["calls"] == 1 and rows[None]["input_tokens"] == 20  # open trace: no attributes yet
        assert tracer.stats("feature", since="1d", feature="long")[0]["calls"] == 1
