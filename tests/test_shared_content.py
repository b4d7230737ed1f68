"""Long text a trace already stored is stored once: a reference in the table, the full text when read."""

from __future__ import annotations

import json

import sqlalchemy as sa
from conftest import raw_engine
from fakes import ScriptedChatModel, answer
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import llmtrace
from llmtrace.base.serialize import join_object
from llmtrace.store import schema as S
from llmtrace.store.content import MARK, MIN_CHARS, resolve, share
from llmtrace_langchain import LLMTraceCallbackHandler

ANSWER = "Refunds are issued within 14 days of the return arriving at our warehouse. " * 4


def _bodies(tracer, trace_id: str) -> str:
    with raw_engine(tracer.url).connect() as conn:
        return "".join(conn.execute(sa.select(S.contents.c.body).where(S.contents.c.trace_id == trace_id)).scalars())


def _chain():
    prompt = ChatPromptTemplate.from_messages([("system", "Answer from policy."), ("human", "{question}")])
    return prompt | ScriptedChatModel(script=[answer(ANSWER)]) | StrOutputParser()


def test_share_and_resolve_round_trip():
    seen: dict = {}
    long_a, long_b, short = "a" * MIN_CHARS, "b" * 300, "c" * (MIN_CHARS - 1)
    first = share({"inputs": {"q": long_a, "n": 1, "s": short}, "outputs": long_b}, "span-1", seen)
    assert first == {"inputs": {"q": long_a, "n": 1, "s": short}, "outputs": long_b}  # first occurrences stay
    second = share({"input_messages": [{"role": "user", "content": long_a}, {"content": short}], "raw": long_b,
                    "deep": {"x": {"y": {"z": long_b}}}}, "span-2", seen)
    assert second["input_messages"][0]["content"] == {MARK: ["span-1", "inputs", "q"]}
    assert second["input_messages"][1]["content"] == short  # short text is cheaper stored than referenced
    assert second["raw"] == {MARK: ["span-1", "outputs"]}
    assert second["deep"] == {"x": {"y": {"z": long_b}}}  # below the shared depth: stored as it is
    contents = json.loads(json.dumps({"span-1": first, "span-2": second}))
    resolve(contents)
    assert contents["span-2"]["input_messages"][0]["content"] == long_a
    assert contents["span-2"]["raw"] == long_b
    gone = {"span-2": json.loads(json.dumps(second))}  # the first occurrence expired or was purged
    resolve(gone)
    assert gone["span-2"]["raw"] is None


def test_langchain_answer_stored_once_and_read_in_full(tracer):
    handler = LLMTraceCallbackHandler(tracer)
    out = _chain().invoke({"question": "When do I get my refund?"}, config={"callbacks": [handler]})
    assert out == ANSWER
    tracer.flush()
    trace_id = handler.last_trace_id
    stored = _bodies(tracer, trace_id)
    assert stored.count(ANSWER) == 1  # the completion, not again as the parser's and the chain's output
    assert MARK in stored
    doc = tracer.get_trace(trace_id).to_dict()
    call = doc["llm_calls"][0]
    assert call["raw_completion"] == ANSWER and call["parsed"] == ANSWER
    by_kind = {s["kind"]: s for s in doc["spans"]}
    assert by_kind["parser"]["outputs"] == ANSWER
    root = next(s for s in doc["spans"] if s["parent_id"] is None)
    assert root["outputs"] == ANSWER
    assert tracer.find_traces(text="warehouse") and tracer.find_traces(text="warehouse")[0]["trace_id"] == trace_id


def test_user_processors_never_see_references(sqlite_url):
    seen_values = []

    def spy(fields):
        seen_values.append(json.dumps(fields))
        return fields

    tracer = llmtrace.Tracer(sqlite_url, processors=[spy])
    handler = LLMTraceCallbackHandler(tracer)
    _chain().invoke({"question": "When do I get my refund?"}, config={"callbacks": [handler]})
    tracer.flush()
    assert seen_values and not any(MARK in v for v in seen_values)
    assert _bodies(tracer, handler.last_trace_id).count(ANSWER) == 1  # shared after the processors
    doc = tracer.get_trace(handler.last_trace_id).to_dict()
    assert doc["llm_calls"][0]["parsed"] == ANSWER
    tracer.close()


def test_capped_text_is_never_a_reference_target(sqlite_url):
    tracer = llmtrace.Tracer(sqlite_url, max_field_chars=200)
    handler = LLMTraceCallbackHandler(tracer)
    _chain().invoke({"question": "When do I get my refund?"}, config={"callbacks": [handler]})
    tracer.flush()
    doc = tracer.get_trace(handler.last_trace_id).to_dict()
    parsed = doc["llm_calls"][0]["parsed"]
    # every copy is capped on its own (the answer is longer than the cap): none points at a capped one
    assert parsed is not None and MARK not in json.dumps(doc)
    tracer.close()


def test_a_content_body_is_one_json_object_whatever_the_owner_ids():
    texts = {"a": b'{"x":1}', 'q"uo\\te': b"null", "sur\ud800rogate": b'["y"]'}
    assert json.loads(join_object(texts)) == {"a": {"x": 1}, 'q"uo\\te': None, "sur\ud800rogate": ["y"]}
    assert join_object({}) == "{}"
