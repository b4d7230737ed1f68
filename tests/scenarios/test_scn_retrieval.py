"""RAG over LangChain's InMemoryVectorStore: the chunks that reached the call, under the source ids
the user chose, findable with find_traces(chunk_source=...) and `llmtrace ls --chunk`."""

from __future__ import annotations

import json
import subprocess
import sys

from fakes import ScriptedChatModel, answer
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

POLICIES = [
    Document(page_content="Refunds are accepted within 30 days of delivery.", metadata={"policy_id": "policy#1"}),
    Document(page_content="Gift cards are never refundable.", metadata={"policy_id": "policy#2"}),
    Document(page_content="Opened electronics carry a 15% restocking fee.", metadata={"policy_id": "policy#3"}),
]


def rag(store: InMemoryVectorStore, k: int = 2):
    prompt = ChatPromptTemplate.from_messages([("system", "Cite policy ids."), ("human", "{context}\n\nQ: {question}")])
    model = ScriptedChatModel(script=[answer("Within 30 days [policy#1].")])
    context = store.as_retriever(search_kwargs={"k": k}) | RunnableLambda(
        lambda docs: "\n".join(d.page_content for d in docs), name="format_docs")
    return {"context": context, "question": RunnablePassthrough()} | prompt | model | StrOutputParser()


def cli_ls(url: str, *args: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "llmtrace", "ls", "--db", url, *args, "--json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def test_vector_store_chunks_reach_the_call_under_the_store_ids(scn_tracer, scn_handler):
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    ids = store.add_documents(POLICIES, ids=["policy#1", "policy#2", "policy#3"])  # the user's own ids
    assert rag(store, k=3).invoke("refund window?", config={"callbacks": [scn_handler]}) == "Within 30 days [policy#1]."
    doc = scn_tracer.get_trace(scn_handler.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert sorted(r["source_id"] for r in call["retrieved"]) == sorted(ids)
    by_source = {r["source_id"]: r for r in call["retrieved"]}
    assert by_source["policy#2"]["content"] == "Gift cards are never refundable."
    assert {r["retriever"] for r in call["retrieved"]} == {"VectorStoreRetriever"}
    assert call["latency_ms"]["retrieval"] > 0
    found = scn_tracer.find_traces(chunk_source="policy#2")
    assert [t["trace_id"] for t in found] == [doc["trace_id"]]


def test_source_id_keys_override_the_generated_document_id(scn_tracer, sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(scn_tracer, source_id_keys=("policy_id",))
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(POLICIES)  # no ids given: the store makes a UUID for each
    rag(store, k=3).invoke("refund window?", config={"callbacks": [handler]})
    doc = scn_tracer.get_trace(handler.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert sorted(r["source_id"] for r in call["retrieved"]) == ["policy#1", "policy#2", "policy#3"]
    assert [t["trace_id"] for t in scn_tracer.find_traces(chunk_source="policy#1")] == [doc["trace_id"]]
    scn_tracer.flush()
    assert [t["trace_id"] for t in cli_ls(sqlite_url, "--chunk", "policy#1")] == [doc["trace_id"]]


def test_cli_help_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "llmtrace", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-300:]
    assert "ls" in done.stdout and "alerts" in done.stdout
