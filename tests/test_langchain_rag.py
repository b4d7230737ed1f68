"""The RAG chain (retriever | prompt | model | parser) across invoke, ainvoke, stream, astream,
batch and abatch, on SQLite, PostgreSQL and MariaDB, asserting the SIGNALS.md fields."""

from __future__ import annotations

import asyncio

import pytest
from conftest import raw_engine
from fakes import POLICY_DOCS, REFUND_JSON, SYSTEM, ScriptedChatModel, answer, rag_chain

MODES = ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"]


def run(chain, mode: str, question: str, config: dict):
    if mode == "invoke":
        return [chain.invoke(question, config=config)]
    if mode == "ainvoke":
        return [asyncio.run(chain.ainvoke(question, config=config))]
    if mode == "stream":
        return list(chain.stream(question, config=config))
    if mode == "astream":
        async def go():
            return [c async for c in chain.astream(question, config=config)]
        return asyncio.run(go())
    if mode == "batch":
        return chain.batch([question, question], config=config)
    async def go_batch():
        return await chain.abatch([question, question], config=config)
    return asyncio.run(go_batch())


def check_rag_call(call: dict, *, streamed: bool) -> None:
    assert call["model"] == "gpt-4o"
    assert call["model_version"] == "gpt-4o-2024-08-06"
    assert call["provider"] == "openai"
    assert call["system_prompt"] == SYSTEM
    roles = [m["role"] for m in call["input_messages"]]
    assert roles == ["system", "user"]
    assert "Refunds are accepted within 30 days" in call["input_messages"][1]["content"]
    assert call["input_messages"][1]["content"].endswith("Q: Can I return my blender?")
    assert [(r["source_id"], r["score"], r["rank"]) for r in call["retrieved"]] == [
        ("pol-7#2", 0.91, 0), ("kb/electronics.md", 0.74, 1), ("gift-1", 0.42, 2)]
    assert call["retrieved"][0]["content"] == POLICY_DOCS[0].page_content
    assert call["retrieved"][0]["retriever"] == "PolicyRetriever"
    assert call["tokens"] == {"input": 120, "output": 30, "total": 150, "input_cached": 20, "input_cache_write": None, "reasoning": 5}
    lat = call["latency_ms"]
    assert lat["total"] > 0 and lat["retrieval"] is not None and lat["retrieval"] >= 0
    assert lat["tools"] is None
    if streamed:
        assert lat["ttft"] is not None and 0 <= lat["ttft"] <= lat["total"]
        assert call["streamed"] is True
    else:
        assert lat["ttft"] is None and call["streamed"] is False
    assert call["finish_reason"] == "stop"
    assert call["raw_completion"] == REFUND_JSON
    assert call["parsed"] == {"eligible": True, "days_left": 12, "citations": ["pol-7#2"]}
    assert call["parser"] == "PydanticOutputParser"
    assert call["parse_error"] is None
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]
    assert call["status"] == "ok" and call["error"] is None
    assert call["retry_count"] == 0 and call["fallback_from"] is None
    assert call["tool_calls"] == []


@pytest.mark.parametrize("mode", MODES)
def test_rag_chain_every_mode(tracer, handler, mode):
    model = ScriptedChatModel(script=[answer(REFUND_JSON)])
    chain = rag_chain(model)
    meta = {"llmtrace_user_id": "u-17", "llmtrace_feature": "refunds", "llmtrace_team": "support",
            "llmtrace_session_id": "s-1", "llmtrace_prompt_version": "refund-v7", "tenant": "acme"}
    out = run(chain, mode, "Can I return my blender?", {"callbacks": [handler], "metadata": meta})
    assert out and out[-1] is not None
    trace_id = handler.last_trace_id
    doc = tracer.get_trace(trace_id).to_dict()
    assert doc["trace_id"] == trace_id
    assert doc["status"] == "ok" and doc["complete"] is True
    assert doc["feature"] == "refunds" and doc["team"] == "support" and doc["session_id"] == "s-1"
    assert doc["prompt_version"] == "refund-v7"
    assert doc["user_id"].startswith("u_") and "u-17" not in doc["user_id"]
    assert doc["metadata"] == {"tenant": "acme"}
    assert doc["latency_ms"] > 0 and doc["started_at"].endswith("Z")
    assert len(doc["llm_calls"]) == 1
    check_rag_call(doc["llm_calls"][0], streamed=mode in ("stream", "astream"))
    kinds = [s["kind"] for s in doc["spans"]]
    assert kinds[0] == "chain" and doc["spans"][0]["parent_id"] is None
    assert {"retriever", "llm", "parser"} <= set(kinds)
    seen = set()
    for s in doc["spans"]:  # parent before child
        assert s["parent_id"] is None or s["parent_id"] in seen
        seen.add(s["span_id"])
    assert doc["totals"] == {"llm_calls": 1, "input_tokens": 120, "output_tokens": 30, "cost_usd": 0.000575,
                             "errors": 0}
    if mode in ("batch", "abatch"):  # each input is its own root run, so its own trace
        assert len({s["span_id"] for s in doc["spans"] if s["parent_id"] is None}) == 1


def test_tokens_absent_are_null_not_zero(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    model = ScriptedChatModel(script=[answer(REFUND_JSON, usage=None, version=None)])
    rag_chain(model).invoke("q", config={"callbacks": [h]})
    call = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]
    assert call["tokens"] == {"input": None, "output": None, "total": None, "input_cached": None,
                              "input_cache_write": None, "reasoning": None}
    assert call["model_version"] is None
    assert sqlite_tracer.get_trace(h.last_trace_id).to_dict()["totals"]["input_tokens"] is None


def test_which_traces_used_a_chunk(sqlite_tracer):
    import sqlalchemy as sa

    from llmtrace.store import schema as S
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    ids = []
    for _ in range(3):
        rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke("q", config={"callbacks": [h]})
        ids.append(h.last_trace_id)
    sqlite_tracer.flush()
    with raw_engine(sqlite_tracer.url).connect() as conn:
        found = set(conn.execute(sa.select(S.chunks.c.trace_id).where(S.chunks.c.source_id == "gift-1")).scalars())
    assert found == set(ids)
