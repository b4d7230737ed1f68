"""Alert rules: each firing and not firing, over the store and live as calls are written."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

import llmtrace
from llmtrace.base.alerting import AlertEngine
from llmtrace.base.cost import PriceBook
from llmtrace.store import schema as S
from llmtrace.store.engine import utcnow

# $1 per million input tokens: 1,000 input tokens cost $0.001
PRICES = {"m": {"input_mtok": 1.0, "output_mtok": 0.0, "context_window": 1000}}


def engine(**rules) -> AlertEngine:
    return AlertEngine(llmtrace.AlertRules(**rules), PriceBook(PRICES))


def call(e: AlertEngine, t: float, *, tokens: int = 100, latency: float = 100.0, status: str = "ok",
         feature: str = "f", model: str = "m") -> list[str]:
    return [a.rule for a in e.observe(t=t, trace_id=f"t{t}", span_id=f"s{t}", feature=feature, model=model,
                                      input_tokens=tokens, output_tokens=0, latency_ms=latency, status=status)]


def test_cost_spike_fires_over_three_times_the_features_average():
    e = engine(rules=("cost_spike",))
    assert call(e, 0, tokens=5000) == []  # no history yet: no baseline, no verdict
    e = engine(rules=("cost_spike",))
    for i in range(20):
        assert call(e, i) == []  # $0.0001 each
    assert call(e, 20, tokens=300) == []  # exactly 3x is not over 3x
    assert call(e, 21, tokens=400, feature="other") == []  # another feature has its own average
    fired = e.observe(t=22, trace_id="t", span_id="s", feature="f", model="m", input_tokens=500, output_tokens=0)
    assert [a.rule for a in fired] == ["cost_spike"] and fired[0].value == pytest.approx(0.0005)
    assert fired[0].trace_id == "t" and fired[0].feature == "f" and "× the average" in fired[0].message
    assert call(e, 23, tokens=500, model="unpriced-model") == []  # no price: no cost, no alert
    dear = engine(rules=("cost_spike",))
    base_price = dear.prices.overrides["m"]
    dear.prices.overrides["big"] = (base_price[0] * 20, 0.0, None, None)
    for i in range(20):
        assert call(dear, i) == []
    assert call(dear, 20, model="big") == []  # 20x dearer model of the same feature: its own baseline


def test_latency_spike_fires_over_twice_the_p95():
    e = engine(rules=("latency_spike",))
    for i in range(20):
        assert call(e, i, latency=100.0) == []
    assert call(e, 20, latency=200.0) == []  # 2x the p95 is not over it
    assert call(e, 21, latency=500.0, status="error") == []  # failures belong to the error-rate rule
    assert call(e, 22, latency=500.0, model="other") == []  # per feature and model: no history for this one
    assert call(e, 23, latency=201.0) == ["latency_spike"]


def test_error_rate_fires_over_five_percent_in_an_hour_then_stays_quiet():
    e = engine(rules=("error_rate",))
    for i in range(20):
        assert call(e, i) == []
    assert call(e, 20, status="error") == []  # 1 of 21 = 4.8%
    assert call(e, 21, status="error") == ["error_rate"]  # 2 of 22 = 9.1%
    assert call(e, 22, status="error") == []  # fired once for this window
    for i in range(23, 60):
        call(e, i, feature="quiet")
    assert call(e, 3700, status="error") == []  # an hour on: the old errors left the window, 1 of 1 is too few
    fired = [call(e, i, status="error") for i in range(3701, 3720)]
    assert fired[:-1] == [[]] * 18 and fired[-1] == ["error_rate"]  # quiet over: 20 of 20 failed in this hour
    few = engine(rules=("error_rate",))
    for i in range(5):
        assert call(few, i, status="error") == []  # 5 of 5 failed, but 5 calls are no rate


def test_context_limit_fires_at_ninety_percent_of_the_window():
    e = engine(rules=("context_limit",))
    assert call(e, 0, tokens=899) == []
    assert call(e, 1, tokens=900) == ["context_limit"]
    assert call(e, 2, tokens=10**6, model="no-window-known") == []
    real = AlertEngine(llmtrace.AlertRules(rules=("context_limit",)), PriceBook())
    fired = real.observe(t=0, trace_id="t", span_id="s", feature=None, model="gpt-4o-mini", input_tokens=120_000,
                         output_tokens=0)
    assert [a.rule for a in fired] == ["context_limit"] and fired[0].threshold == 0.9 * 128_000  # genai-prices' window


def test_bad_rules_say_what_to_pass():
    with pytest.raises(llmtrace.ConfigError, match="unknown alert rule"):
        llmtrace.AlertRules(rules=("cost_spike", "vibes"))
    with pytest.raises(llmtrace.ConfigError, match="must be a positive number"):
        llmtrace.AlertRules(cost_spike_factor=0)
    with pytest.raises(llmtrace.ConfigError, match="fraction below 1"):
        llmtrace.AlertRules(error_rate=5)
    with pytest.raises(llmtrace.ConfigError, match="on_alert must be a callable"):
        llmtrace.Tracer("sqlite://", on_alert="print")


def _series(url: str, env: str, start, spec: list[tuple]) -> list[str]:
    """LLM calls one minute apart: (input tokens, latency ms, status); returns their span ids."""
    engine = sa.create_engine(url)
    traces, calls = [], []
    for i, (tokens, latency, status) in enumerate(spec):
        at = start + timedelta(minutes=i)
        tid = f"{env}-{i}"
        traces.append({"trace_id": tid, "started_at": at, "status": status, "feature": "support", "environment": env})
        calls.append({"span_id": tid + "-c", "trace_id": tid, "started_at": at, "model": "m", "input_tokens": tokens,
                      "output_tokens": 0, "latency_ms": latency, "status": status,
                      "error_type": "timeout" if status == "error" else None})
    with engine.begin() as conn:
        conn.execute(S.traces.insert(), traces)
        conn.execute(S.llm_calls.insert(), calls)
    engine.dispose()
    return [c["span_id"] for c in calls]


def test_alerts_over_the_store_with_warmup(db_url):
    tracer = llmtrace.Tracer(db_url, prices=PRICES)
    tracer.schema_version()
    env = f"env-{uuid.uuid4().hex[:10]}"
    start = utcnow() - timedelta(hours=3)
    spec = [(100, 100.0, "ok")] * 30 + [(1000, 100.0, "ok"), (100, 900.0, "ok"), (950, 100.0, "ok")] + \
           [(100, 100.0, "error")] * 3
    spans = _series(db_url, env, start, spec)
    try:
        everything = tracer.alerts(since=start - timedelta(minutes=1), environment=env)
        assert [(a.rule, a.span_id) for a in everything] == [
            ("cost_spike", spans[30]), ("context_limit", spans[30]), ("latency_spike", spans[31]),
            ("cost_spike", spans[32]), ("context_limit", spans[32]), ("error_rate", spans[34])]
        # since after the spikes: the first 30 calls only build baselines in the warm-up, never fire
        later = tracer.alerts(since=start + timedelta(minutes=31, seconds=30), environment=env)
        assert [(a.rule, a.span_id) for a in later] == [("cost_spike", spans[32]), ("context_limit", spans[32]),
                                                        ("error_rate", spans[34])]
        # without a warm-up, 3 calls are no baseline: only the context limit fires
        cold = tracer.alerts(since=start + timedelta(minutes=31, seconds=30), warmup="1s", environment=env)
        assert [a.rule for a in cold] == ["context_limit"]
        only = tracer.alerts(since="1d", rules=llmtrace.AlertRules(rules=("error_rate",)), environment=env)
        assert [a.rule for a in only] == ["error_rate"] and only[0].at.endswith("Z")
        assert tracer.alerts(since="1d", environment=f"{env}-none") == []
    finally:
        tracer.close()


def test_alerts_cli(tmp_path, monkeypatch):
    from tests.test_cli import llmtrace as run

    url = f"sqlite:///{tmp_path / 'a.db'}"
    with llmtrace.Tracer(url) as tracer:
        tracer.schema_version()
    env = "cli"
    _series(url, env, utcnow() - timedelta(hours=2), [(100, 100.0, "ok")] * 25 + [(100, 100.0, "error")] * 3)
    out = run("alerts", "--db", url, "--json")
    assert out.returncode == 0, out.stderr
    assert [a["rule"] for a in json.loads(out.stdout)] == ["error_rate"]
    out = run("alerts", "--db", url, "--exit-code")
    assert out.returncode == 1 and "error_rate" in out.stdout and "error rate in feature 'support'" in out.stdout
    out = run("alerts", "--db", url, "--rule", "cost_spike", "--exit-code")
    assert out.returncode == 0 and "no alerts since 24h" in out.stdout


def test_live_alerts_reach_the_callable_and_loguru(sqlite_url, tmp_path):
    """Live: a LangChain call near the model's context window fires as it is written."""
    from llmtrace_langchain import LLMTraceCallbackHandler
    from tests.fakes import ScriptedChatModel, answer, simple_chain

    received = []
    log = tmp_path / "alerts.jsonl"
    sink = llmtrace.add_json_sink(str(log), level="WARNING")
    # the fake model reports 120 input + 30 output tokens; a 160-token window puts it over 90%
    prices = {"gpt-4o-2024-08-06": {"input_mtok": 2.5, "output_mtok": 10, "context_window": 160}}
    tracer = llmtrace.Tracer(sqlite_url, prices=prices, on_alert=received.append, flush_interval_seconds=0.05)
    try:
        handler = LLMTraceCallbackHandler(tracer)
        simple_chain(ScriptedChatModel(script=[answer("hi")])).invoke(
            {"question": "q"}, config={"callbacks": [handler], "metadata": {"llmtrace_feature": "chat"}})
        tracer.flush()
        assert [a.rule for a in received] == ["context_limit"]
        alert = received[0]
        assert alert.trace_id == handler.last_trace_id and alert.feature == "chat" and alert.value == 150
        assert tracer.get_trace(alert.trace_id).to_dict()["llm_calls"][0]["span_id"] == alert.span_id  # written first
    finally:
        tracer.close()
        from loguru import logger

        logger.remove(sink)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line["event"] == "alert" and line["rule"] == "context_limit" for line in lines)


def test_a_failing_alert_callable_is_counted_never_raised(sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler
    from tests.fakes import ScriptedChatModel, answer, simple_chain

    def broken(alert):
        raise RuntimeError("pager down")

    prices = {"gpt-4o-2024-08-06": {"input_mtok": 2.5, "output_mtok": 10, "context_window": 100}}
    tracer = llmtrace.Tracer(sqlite_url, prices=prices, on_alert=broken, flush_interval_seconds=0.05)
    try:
        handler = LLMTraceCallbackHandler(tracer)
        out = simple_chain(ScriptedChatModel(script=[answer("hi")])).invoke({"question": "q"},
                                                                           config={"callbacks": [handler]})
        assert out == "hi"
        tracer.flush()
        health = tracer.health()
        assert health["processing_errors"] == 1 and health["llm_calls_written"] == 1
    finally:
        tracer.close()


def test_mechanism_alerts_setting_turns_on_live_rules_without_a_callable(sqlite_url, monkeypatch):
    monkeypatch.setenv("LLMTRACE_ALERTS", "1")
    tracer = llmtrace.Tracer(sqlite_url)
    try:
        assert tracer._writer.recorder.alerts is not None and tracer.settings.alerts is True
    finally:
        tracer.close()
    monkeypatch.delenv("LLMTRACE_ALERTS")
    tracer = llmtrace.Tracer(sqlite_url)
    try:
        assert tracer._writer.recorder.alerts is None  # off by default: the writer does no alert work
    finally:
        tracer.close()
