"""Finding traces (``tracer.find_traces`` / ``llmtrace ls``): each filter matching and not matching."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import llmtrace
from tests import analysis_data
from tests.test_stats import COST_B3


def names(analysis, **filters) -> list[str]:
    """The fixture's trace names (T1..T6) that match, newest first."""
    back = {v: k for k, v in analysis.ids.items()}
    return [back[r["trace_id"]] for r in analysis.tracer.find_traces(environment=analysis.env, limit=50, **filters)]


def test_newest_first_with_summaries(analysis):
    assert names(analysis) == ["T6", "T5", "T4", "T3", "T2", "T1"]
    rows = {r["trace_id"]: r for r in analysis.tracer.find_traces(environment=analysis.env)}
    t1 = rows[analysis.ids["T1"]]
    assert t1["llm_calls"] == 2 and t1["input_tokens"] == 300 and t1["output_tokens"] == 30
    assert t1["models"] == ["model-a-2026"] and t1["action"] == "edited" and t1["errors"] == ["other"]
    assert rows[analysis.ids["T3"]]["cost_usd"] == pytest.approx(COST_B3) and rows[analysis.ids["T3"]]["errors"] == ["timeout"]
    assert rows[analysis.ids["T5"]]["cost_usd"] is None  # unpriced model
    assert rows[analysis.ids["T6"]]["status"] == "ok" and rows[analysis.ids["T6"]]["user_id"] is None
    assert len(analysis.tracer.find_traces(environment=analysis.env, limit=2)) == 2


def test_attribute_filters(analysis):
    assert names(analysis, feature="search") == ["T6", "T5", "T4"]
    assert names(analysis, feature="nope") == []
    assert names(analysis, team="support") == ["T3", "T2", "T1"]
    assert names(analysis, prompt_version="v2") == ["T3"]
    assert names(analysis, user="alice") == ["T3", "T1"] and names(analysis, user=analysis.user("carol")) == ["T5", "T4"]
    assert names(analysis, user="nobody") == []


def test_call_filters(analysis):
    assert names(analysis, model="model-b") == ["T4", "T3"]
    assert names(analysis, model="model-a-2026") == ["T6", "T2", "T1"]  # the exact version works too
    assert names(analysis, model="gpt-none") == []
    assert names(analysis, status="error") == ["T5", "T3"] and names(analysis, status="ok") == ["T6", "T4", "T2", "T1"]
    with pytest.raises(llmtrace.ConfigError, match="status"):  # (a trace is listed once its root ended)
        names(analysis, status="open")
    assert names(analysis, error_type="timeout") == ["T3"] and names(analysis, error_type="rate_limit") == ["T5"]
    assert names(analysis, error_type="auth") == []


def test_checks_and_feedback_filters(analysis):
    assert names(analysis, validation_failed=True) == ["T4", "T2", "T1"]  # T3's check passed
    assert names(analysis, action="edited") == ["T1"]
    assert names(analysis, action="accepted") == ["T4"]  # T1 was accepted, then edited: the last action counts
    assert names(analysis, action="retried") == ["T2"] and names(analysis, action="abandoned") == ["T5"]


def test_cost_latency_and_time_filters(analysis):
    assert names(analysis, min_cost=0.005) == ["T4", "T3"]  # T4 $0.0052, T3 $0.013
    assert names(analysis, min_cost=0.01) == ["T3"]
    assert names(analysis, min_cost=1.0) == []
    assert names(analysis, min_latency_ms=3000) == ["T3"] and names(analysis, min_latency_ms=10_000) == []
    assert names(analysis, since=analysis.at(-1) - timedelta(hours=1)) == ["T6", "T5", "T4", "T3"]
    assert names(analysis, since=analysis.at(-2) - timedelta(hours=1), until=analysis.at(-1) - timedelta(hours=1)) == ["T2", "T1"]
    assert names(analysis, since=analysis.at(0).isoformat()) == ["T6", "T5"]


def test_chunk_source_and_text_search(analysis):
    assert names(analysis, chunk_source=f"{analysis.env}/refund-policy.md") == ["T1"]
    assert names(analysis, chunk_source="other.md") == []
    assert names(analysis, text="blue kettle") == ["T1"]  # case-insensitive; T5's copy has expired
    assert names(analysis, text='"quoted" 50% off_sale') == ["T4"]  # quotes, % and _ are literal
    assert names(analysis, text="50%") == ["T4"] and names(analysis, text="_sale") == ["T4"]
    assert names(analysis, text="input_messages") == []  # a field name is not content
    assert names(analysis, text="raw_completion") == []
    assert names(analysis, text="kettle", feature="search") == []  # filters combine


def test_cli_prices_from_the_environment(analysis, tmp_path, monkeypatch, capsys):
    """``LLMTRACE_PRICES`` (inline JSON or a file) prices private models for the CLI."""
    from llmtrace.cli.main import main

    path = tmp_path / "prices.json"
    path.write_text(json.dumps(analysis_data.PRICES))
    for value in (str(path), json.dumps(analysis_data.PRICES)):
        monkeypatch.setenv("LLMTRACE_PRICES", value)
        capsys.readouterr()
        assert main(["ls", "--db", analysis.url, "--min-cost", "0.01", "--json"]) == 0
        found = {r["trace_id"]: r["cost_usd"] for r in json.loads(capsys.readouterr().out)}
        assert found.get(analysis.ids["T3"]) == pytest.approx(COST_B3) and analysis.ids["T4"] not in found
    monkeypatch.setenv("LLMTRACE_PRICES", "{not json")
    with pytest.raises(llmtrace.ConfigError, match="LLMTRACE_PRICES must be JSON"):
        llmtrace.Tracer(analysis.url)


def test_bad_filters_say_what_to_pass(analysis):
    with pytest.raises(llmtrace.ConfigError, match="status is one of"):
        analysis.tracer.find_traces(status="broken")
    with pytest.raises(llmtrace.ConfigError, match="action is one of"):
        analysis.tracer.find_traces(action="liked")
    with pytest.raises(llmtrace.ConfigError, match="limit must be"):
        analysis.tracer.find_traces(limit=0)


def test_ls_cli_filters(analysis):
    from tests.test_cli import llmtrace as run

    out = run("ls", "--db", analysis.url, "--feature", "refunds", "--action", "edited", "--json")
    assert out.returncode == 0, out.stderr
    assert [r["trace_id"] for r in json.loads(out.stdout) if r["trace_id"] in analysis.ids.values()] == [analysis.ids["T1"]]
    out = run("ls", "--db", analysis.url, "--search", "Blue Kettle", "--csv")
    assert out.returncode == 0 and analysis.ids["T1"] in out.stdout and out.stdout.startswith("trace_id,")
    out = run("ls", "--db", analysis.url, "--model", "model-b", "--status", "error", "--error-type", "timeout",
              "--validation-failed")
    assert out.returncode == 0 and "no matching traces" in out.stdout  # T3 failed no check
    out = run("ls", "--db", analysis.url, "--chunk", f"{analysis.env}/refund-policy.md", "--since", "30d", "--min-latency", "100")
    assert analysis.ids["T1"] in out.stdout and "trace id" in out.stdout
    out = run("ls", "--db", analysis.url, "--status", "broken")
    assert out.returncode == 2 and "invalid choice" in out.stderr
