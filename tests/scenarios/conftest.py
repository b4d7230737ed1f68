"""Fixtures of the scenario suite: a fresh SQLite tracer per test (so "how many traces did this one
request make" can be counted), a LangChain handler on it, and a LlamaIndex instrumentor that is
always detached again."""

from __future__ import annotations

import pytest

import llmtrace


@pytest.fixture
def scn_tracer(sqlite_url):
    t = llmtrace.Tracer(sqlite_url, flush_interval_seconds=0.05)
    t.schema_version()  # the tables exist before the first count
    yield t
    t.close()


@pytest.fixture
def scn_handler(scn_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    return LLMTraceCallbackHandler(scn_tracer)


@pytest.fixture
def li_inst(scn_tracer):
    from llmtrace_llamaindex import LLMTraceInstrumentor

    inst = LLMTraceInstrumentor(scn_tracer).instrument()
    yield inst
    inst.uninstrument()
