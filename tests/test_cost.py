"""Cost per call from tokens and a maintained price table; user prices; unknown models are null."""

from __future__ import annotations

import pytest
from fakes import ScriptedChatModel, answer, simple_chain
from loguru import logger

import llmtrace
from llmtrace.base.cost import PriceBook


def test_hand_computed_cost_with_cached_tokens(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [h]})
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    # gpt-4o: $2.50 / M input, $1.25 / M cached input, $10 / M output; 120 in (20 cached), 30 out
    expected = (100 * 2.5 + 20 * 1.25 + 30 * 10) / 1e6
    assert doc["llm_calls"][0]["cost_usd"] == pytest.approx(expected)
    assert doc["totals"]["cost_usd"] == pytest.approx(expected)


def test_other_provider_and_totals(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    model = ScriptedChatModel(script=[answer("x", version="claude-3-5-sonnet-20241022",
                                             usage={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100})],
                              model="claude-3-5-sonnet")
    with sqlite_tracer.trace() as t:
        model.invoke("a", config={"callbacks": [h]})
        model.invoke("b", config={"callbacks": [h]})
    doc = sqlite_tracer.get_trace(t.trace_id).to_dict()
    one = (1000 * 3 + 100 * 15) / 1e6  # $3 / M in, $15 / M out
    assert [c["cost_usd"] for c in doc["llm_calls"]] == [pytest.approx(one), pytest.approx(one)]
    assert doc["totals"]["cost_usd"] == pytest.approx(2 * one)


def test_user_prices_win_and_unknown_models_are_null_with_one_warning(sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING")
    logger.enable("llmtrace")
    try:
        with llmtrace.Tracer(sqlite_url, prices={"acme-ft-1": {"input_mtok": 4, "output_mtok": 16}}) as t:
            h = LLMTraceCallbackHandler(t)
            ScriptedChatModel(script=[answer("x", version=None)], model="acme-ft-1").invoke("q", config={"callbacks": [h]})
            assert t.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]["cost_usd"] == pytest.approx(
                (120 * 4 + 30 * 16) / 1e6)  # no cached-input price given: cached tokens cost the input price
            ids = []
            for _ in range(2):
                ScriptedChatModel(script=[answer("x", version=None)], model="mystery-9").invoke("q", config={"callbacks": [h]})
                ids.append(h.last_trace_id)
            docs = [t.get_trace(i).to_dict() for i in ids]
    finally:
        logger.disable("llmtrace")
        logger.remove(sink)
    assert [d["llm_calls"][0]["cost_usd"] for d in docs] == [None, None]
    assert docs[0]["totals"]["cost_usd"] is None
    assert sum("mystery-9" in line for line in lines) == 1


def test_no_tokens_no_cost():
    assert PriceBook().cost(model="gpt-4o", version=None, provider="openai", input_tokens=None, output_tokens=None) is None


@pytest.mark.parametrize("bad", [{"m": {"input_mtok": 1}}, {"m": {"input_mtok": "x", "output_mtok": 1}},
                                 {"m": {"input_mtok": 1, "output_mtok": 1, "per_call": 2}}])
def test_bad_user_prices_are_clear(bad):
    with pytest.raises(llmtrace.ConfigError):
        PriceBook(bad)


def test_cache_writes_are_priced_apart_from_reads_and_plain_input():
    import llmtrace.base.cost as cost

    book = cost.PriceBook({"m": {"input_mtok": 3.0, "output_mtok": 15.0, "cache_read_mtok": 0.3, "cache_write_mtok": 3.75},
                           "plain": {"input_mtok": 3.0, "output_mtok": 15.0}})
    # 1000 input tokens billed: 600 plain, 100 read from the cache, 300 written to it
    got = book.cost(model="m", version=None, provider=None, input_tokens=1000, output_tokens=10, cached_tokens=100,
                    cache_write_tokens=300)
    assert got == round((600 * 3.0 + 100 * 0.3 + 300 * 3.75 + 10 * 15.0) / 1e6, 10)
    # without a cache-write price a write costs as input; without a read price a read does too
    assert book.cost(model="plain", version=None, provider=None, input_tokens=1000, output_tokens=10,
                     cached_tokens=100, cache_write_tokens=300) == round((1000 * 3.0 + 10 * 15.0) / 1e6, 10)
    # the maintained table knows Anthropic's cache-write price (1.25x input)
    table = cost.PriceBook()
    with_writes = table.cost(model="claude-sonnet-4-5", version=None, provider="anthropic", input_tokens=1000,
                             output_tokens=0, cache_write_tokens=300)
    without = table.cost(model="claude-sonnet-4-5", version=None, provider="anthropic", input_tokens=1000, output_tokens=0)
    assert with_writes is not None and without is not None and with_writes > without
