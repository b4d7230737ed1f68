"""LlamaIndex streaming, as apps consume it: a query engine with streaming=True read through
response_gen (sync) or async_response_gen (async), chat engines' stream_chat, a stream that fails
mid-way, and the invocation params of a real provider class — on MockLLM / MockEmbedding and on
llama-index-llms-openai's OpenAI talking to an httpx MockTransport."""

from __future__ import annotations

import asyncio
import threading

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import ChatMessage, CompletionResponse, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback

from .scn_support import all_trace_ids, completion, scripted_openai

DOCS = [Document(text=f"Policy {i}: refunds within {10 + 10 * i} days.", id_=f"policy-{i}") for i in range(3)]


@pytest.fixture(scope="module")
def index():
    return VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))


def engine(index, llm=None):
    return index.as_query_engine(llm=llm or MockLLM(max_tokens=6), streaming=True, similarity_top_k=2,
                                 embed_model=MockEmbedding(embed_dim=8))


def check_one_request(tracer, inst, text: str, source_ids: set[str]) -> dict:
    traces = all_trace_ids(tracer)
    assert len(traces) == 1, f"one request made {len(traces)} traces"
    assert inst.last_trace_id == traces[0]
    doc = tracer.get_trace(traces[0]).to_dict()
    assert doc["name"].startswith("RetrieverQueryEngine.")
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == text and call["streamed"] is True
    assert {r["source_id"] for r in call["retrieved"]} == source_ids
    assert call["latency_ms"]["retrieval"] > 0
    return doc


def test_streaming_query_is_one_trace_with_its_call_and_chunks(scn_tracer, li_inst, index):
    response = engine(index).query("What is the refund window?")
    text = "".join(response.response_gen)
    check_one_request(scn_tracer, li_inst, text, {n.node.ref_doc_id for n in response.source_nodes})


def test_async_streaming_query_is_one_trace_with_one_call(scn_tracer, li_inst, index):
    async def main():
        response = await engine(index).aquery("What is the refund window?")
        return response, "".join([t async for t in response.async_response_gen()])

    response, text = asyncio.run(main())
    check_one_request(scn_tracer, li_inst, text, {n.node.ref_doc_id for n in response.source_nodes})


def test_streaming_query_inside_tracer_trace(scn_tracer, li_inst, index):
    """The documented way to group a request: read the stream inside ``tracer.trace()``."""
    with scn_tracer.trace(name="policy-qa", feature="qa") as t:
        response = engine(index).query("What is the refund window?")
        text = "".join(response.response_gen)
    assert all_trace_ids(scn_tracer) == [t.trace_id]
    doc = scn_tracer.get_trace(t.trace_id).to_dict()
    assert doc["feature"] == "qa"
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == text and call["latency_ms"]["ttft"] is not None
    assert {r["source_id"] for r in call["retrieved"]} == {n.node.ref_doc_id for n in response.source_nodes}


def test_async_streaming_query_inside_tracer_trace_is_one_call(scn_tracer, li_inst, index):
    async def main():
        with scn_tracer.trace(name="policy-qa") as t:
            response = await engine(index).aquery("What is the refund window?")
            text = "".join([x async for x in response.async_response_gen()])
        return t.trace_id, text

    trace_id, text = asyncio.run(main())
    doc = scn_tracer.get_trace(trace_id).to_dict()
    assert [c["raw_completion"] for c in doc["llm_calls"]] == [text]


# -- a stream that fails mid-way -------------------------------------------------------------

class BreaksMidStream(MockLLM):
    """Streams two tokens, then the connection drops."""

    @llm_completion_callback()
    def stream_complete(self, prompt, formatted=False, **kwargs):
        def gen():
            yield CompletionResponse(text="Refunds", delta="Refunds")
            yield CompletionResponse(text="Refunds are", delta=" are")
            raise ConnectionError("upstream connection reset mid-stream")

        return gen()


def test_stream_failing_mid_way_makes_the_trace_an_error(scn_tracer, li_inst):
    with pytest.raises(ConnectionError):
        for _ in BreaksMidStream().stream_complete("refund window?"):
            pass
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["status"] == "error" and call["raw_completion"] == "Refunds are"  # (this much is right today)
    assert doc["status"] == "error"
    assert [t["trace_id"] for t in scn_tracer.find_traces(status="error")] == [doc["trace_id"]]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (LlamaIndex's writer thread re-raises)
def test_chat_engine_stream_failing_mid_way_makes_the_trace_an_error(scn_tracer, li_inst, index):
    chat = index.as_chat_engine(chat_mode="context", llm=BreaksMidStream(), similarity_top_k=1,
                                embed_model=MockEmbedding(embed_dim=8))
    before = set(threading.enumerate())
    with pytest.raises(ConnectionError):
        "".join(chat.stream_chat("refund window?").response_gen)
    # LlamaIndex's thread hands the error to the reader before its own span ends: let it finish
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["status"] == "error" and "connection reset" in call["error"]["message"]
    assert doc["status"] == "error"


def test_streaming_query_failing_mid_way_is_an_error_call_in_the_query_trace(scn_tracer, li_inst, index):
    response = engine(index, BreaksMidStream()).query("What is the refund window?")
    with pytest.raises(ConnectionError):
        "".join(response.response_gen)
    [trace_id] = all_trace_ids(scn_tracer)
    assert li_inst.last_trace_id == trace_id
    doc = scn_tracer.get_trace(trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["status"] == "error" and "connection reset" in call["error"]["message"]
    assert call["raw_completion"] == "Refunds are" and call["retrieved"]


def test_streaming_query_failing_mid_way_makes_the_trace_an_error(scn_tracer, li_inst, index):
    response = engine(index, BreaksMidStream()).query("What is the refund window?")
    with pytest.raises(ConnectionError):
        "".join(response.response_gen)
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    assert doc["status"] == "error"
    assert [t["trace_id"] for t in scn_tracer.find_traces(status="error")] == [doc["trace_id"]]


# -- chat engines ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["context", "condense_plus_context"])
def test_chat_engine_stream_is_one_trace_with_retrieved_chunks(scn_tracer, li_inst, index, mode):
    chat = index.as_chat_engine(chat_mode=mode, llm=MockLLM(max_tokens=5), similarity_top_k=1,
                                embed_model=MockEmbedding(embed_dim=8))
    streamed = chat.stream_chat("What is the refund window?")
    text = "".join(streamed.response_gen)
    assert all_trace_ids(scn_tracer) == [li_inst.last_trace_id]
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    assert doc["status"] == "ok" and doc["name"].endswith(".stream_chat")
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == text and call["streamed"] is True and call["latency_ms"]["ttft"] is not None
    assert [r["source_id"] for r in call["retrieved"]] == [n.node.ref_doc_id for n in streamed.source_nodes]
    assert "What is the refund window?" in str(call["input_messages"])


def test_chat_engine_stream_on_every_database(tracer):
    """A LlamaIndex scenario on SQLite, PostgreSQL and MariaDB: streaming chat, caller-chosen id."""
    from llmtrace_llamaindex import LLMTraceInstrumentor

    index = VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))
    chat = index.as_chat_engine(chat_mode="context", llm=MockLLM(max_tokens=5), similarity_top_k=2,
                                embed_model=MockEmbedding(embed_dim=8))
    inst = LLMTraceInstrumentor(tracer).instrument()
    tid = f"scn-li-chat-{id(inst)}"
    try:
        with tracer.trace(name="chat-turn", trace_id=tid, session_id="s-1"):
            streamed = chat.stream_chat("What is the refund window?")
            text = "".join(streamed.response_gen)
    finally:
        inst.uninstrument()
    doc = tracer.get_trace(tid).to_dict()
    assert (doc["name"], doc["session_id"], doc["status"]) == ("chat-turn", "s-1", "ok")
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == text and call["streamed"] is True
    assert sorted(r["source_id"] for r in call["retrieved"]) == sorted(n.node.ref_doc_id for n in streamed.source_nodes)
    assert all(r["content"].startswith("Policy") for r in call["retrieved"])


@pytest.mark.parametrize("mode", ["context", "condense_plus_context"])
def test_async_chat_engine_stream_is_one_call(scn_tracer, li_inst, index, mode):
    chat = index.as_chat_engine(chat_mode=mode, llm=MockLLM(max_tokens=5), similarity_top_k=1,
                                embed_model=MockEmbedding(embed_dim=8))

    async def main():
        streamed = await chat.astream_chat("What is the refund window?")
        return "".join([t async for t in streamed.async_response_gen()])

    text = asyncio.run(main())
    assert all_trace_ids(scn_tracer) == [li_inst.last_trace_id]
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    assert [c["raw_completion"] for c in doc["llm_calls"]] == [text]
    assert doc["llm_calls"][0]["retrieved"] and doc["totals"]["llm_calls"] == 1


# -- invocation params -------------------------------------------------------------------------

def test_openai_llm_call_model_version_and_tokens(scn_tracer, li_inst):
    sent: list[dict] = []
    llm = scripted_openai([completion("Within 30 days.", usage=(42, 5))], sent, temperature=0.2, max_tokens=64)
    out = llm.chat([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="refund window?")])
    assert out.message.content == "Within 30 days."
    assert (sent[0]["temperature"], sent[0]["max_tokens"]) == (0.2, 64)  # what went over the wire
    [call] = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()["llm_calls"]
    assert (call["model"], call["model_version"], call["provider"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai")
    assert call["tokens"] == {"input": 42, "output": 5, "total": 47, "input_cached": None, "input_cache_write": None,
                              "reasoning": None}
    assert call["system_prompt"] == "Be brief." and call["finish_reason"] == "stop"
    assert call["raw_completion"] == "Within 30 days."


def test_openai_llm_params_keep_temperature_and_max_tokens(scn_tracer, li_inst):
    sent: list[dict] = []
    llm = scripted_openai([completion("Within 30 days.")], sent, temperature=0.2, max_tokens=64)
    llm.chat([ChatMessage(role="user", content="refund window?")])
    [call] = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()["llm_calls"]
    assert call["params"]["temperature"] == sent[0]["temperature"] == 0.2
    assert call["params"]["max_tokens"] == sent[0]["max_tokens"] == 64
    assert "api_key" not in call["params"]
