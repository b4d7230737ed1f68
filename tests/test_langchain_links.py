"""Links decided when the record is written, as users see them: a step that ends after its trace's
root (a stream a chain returned, read after the chain ended), and traces written by an llmtrace
before links were stored (schema 5), which must read as they always did."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fakes import POLICY_DOCS, PolicyRetriever, ScriptedChatModel, answer
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

import llmtrace


class BreaksMidStream(ScriptedChatModel):
    """Streams two tokens, then the connection drops."""

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        for word in ("Refunds", " are"):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=word))
            if run_manager:
                run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        raise ConnectionError("connection reset mid-stream")


def stream_read_after_the_chain_returned(handler, model) -> tuple[object, list[str]]:
    """A step that returns the model's stream: the chain ends, then the app reads the stream."""
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | RunnableLambda(lambda value, config: model.stream(value, config), name="start_stream")
    stream = chain.invoke({"q": "refund?"}, config={"callbacks": [handler]})
    got: list[str] = []
    try:
        for chunk in stream:
            got.append(chunk.content)
    except ConnectionError as exc:
        return exc, got
    return None, got


def test_a_stream_read_after_its_chain_ended_is_in_the_chains_trace(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)
    exc, got = stream_read_after_the_chain_returned(handler, ScriptedChatModel(script=[answer("Refunds are fine.")]))
    assert exc is None and "".join(got) == "Refunds are fine."
    trace_id = handler.last_trace_id
    assert llmtrace.current_trace_id() == trace_id
    sqlite_tracer.flush()
    doc = sqlite_tracer.get_trace(trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == "Refunds are fine." and call["status"] == "ok"
    [step] = [s for s in doc["spans"] if s["name"] == "start_stream"]
    assert [s["parent_id"] for s in doc["spans"] if s["span_id"] == call["span_id"]] == [step["span_id"]]
    assert call["ended_at"] > step["ended_at"]  # it ran after the step (and the trace's root) had ended
    assert doc["ended_at"] >= call["ended_at"]  # the request lasted until the stream was read
    assert doc["status"] == "ok" and doc["totals"]["errors"] == 0


def test_a_late_stream_that_fails_makes_its_trace_an_error(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)
    exc, got = stream_read_after_the_chain_returned(handler, BreaksMidStream(script=[answer("unused")]))
    assert isinstance(exc, ConnectionError) and got == ["Refunds", " are"]
    sqlite_tracer.flush()
    doc = sqlite_tracer.get_trace(handler.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert (call["status"], call["error"]["type"], call["raw_completion"]) == ("error", "server_error", "Refunds are")
    assert doc["status"] == "error" and doc["totals"]["errors"] == 1
    assert [t["trace_id"] for t in sqlite_tracer.find_traces(status="error")] == [doc["trace_id"]]


def test_a_parser_parses_a_call_of_its_own_run_only(sqlite_tracer):
    """Two runs of one trace (a graph paused and resumed under one id): the second run's parser
    parses no model answer, so the first run's call is left unparsed, not given its output."""
    from langchain_core.output_parsers import JsonOutputParser

    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)
    config = {"callbacks": [handler], "metadata": {"llmtrace_trace_id": "conversation-9"}}
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    (prompt | ScriptedChatModel(script=[answer("a draft")])).invoke({"q": "draft?"}, config=config)
    parsed = (RunnableLambda(lambda _: '{"approved": true}', name="reviewer") | JsonOutputParser()).invoke("x", config=config)
    assert parsed == {"approved": True}
    sqlite_tracer.flush()
    [call] = sqlite_tracer.get_trace("conversation-9").to_dict()["llm_calls"]
    assert (call["parsed"], call["parser"], call["validations"]) == (None, None, [])


# -- rows written before schema 6 ------------------------------------------------------------------

def text_agent(handler) -> None:
    """Retrieval, then an agent that asks for a tool in text (no tool-call id), then answers."""
    from langchain_core.tools import tool

    @tool
    def lookup(order_id: str) -> str:
        """Look up an order."""
        return f"order {order_id}: delivered"

    model = ScriptedChatModel(script=[answer("Action: lookup A-1"), answer("It was delivered.")])
    retriever = PolicyRetriever(docs=POLICY_DOCS)

    def agent(question: str) -> str:
        docs = retriever.invoke(question)
        first = model.invoke(f"{question}\n{docs[0].page_content}")
        seen = lookup.invoke({"order_id": "A-1"}) if "Action: lookup" in first.content else ""
        return model.invoke(f"{question}\nObservation: {seen}").content

    RunnableLambda(agent, name="text_agent").invoke("refund A-1?", config={"callbacks": [handler]})


def make_it_schema_5(url: str, trace_id: str) -> None:
    """What an llmtrace before schema 6 wrote: no stored retrieval links, no error origins, tools asked
    for in text unjoined (and their time not in the next call's tools_ms)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE llmtrace_llm_calls SET retrieved_from = NULL WHERE trace_id = :t"), {"t": trace_id})
        conn.execute(sa.text("UPDATE llmtrace_spans SET error_from = NULL WHERE trace_id = :t"), {"t": trace_id})
        joined = conn.execute(sa.text("SELECT llm_span_id FROM llmtrace_tool_calls WHERE trace_id = :t AND position IS NULL"
                                      " AND llm_span_id IS NOT NULL"), {"t": trace_id}).scalars().all()
        conn.execute(sa.text("UPDATE llmtrace_tool_calls SET llm_span_id = NULL WHERE trace_id = :t AND position IS NULL"),
                     {"t": trace_id})
        conn.execute(sa.text("UPDATE llmtrace_llm_calls SET tools_ms = NULL WHERE trace_id = :t"), {"t": trace_id})
    engine.dispose()
    assert joined  # (the scenario did join a tool asked for in text)


def test_traces_written_before_links_were_stored_read_the_same(sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(sqlite_url) as tracer:
        handler = LLMTraceCallbackHandler(tracer)
        text_agent(handler)
        trace_id = handler.last_trace_id
        tracer.flush()
        now = tracer.get_trace(trace_id).to_dict()
    first, second = now["llm_calls"]
    assert [c["source_id"] for c in first["retrieved"]] == ["pol-7#2", "kb/electronics.md", "gift-1"]
    assert first["retrieved"][0]["content"] == POLICY_DOCS[0].page_content
    [tool_call] = first["tool_calls"]  # asked for in text: joined to the call that asked
    assert (tool_call["name"], tool_call["args"], tool_call["result"]) == ("lookup", {"order_id": "A-1"},
                                                                           "order A-1: delivered")
    assert second["latency_ms"]["tools"] == pytest.approx(tool_call["latency_ms"])
    make_it_schema_5(sqlite_url, trace_id)
    with llmtrace.Tracer(sqlite_url) as tracer:
        before = tracer.get_trace(trace_id).to_dict()
    assert before == now
