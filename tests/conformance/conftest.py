"""Fixtures of the provider conformance suite: the loopback provider and tracers on it.

``wire``: a ``conf_wire.WireServer`` (one per session, emptied for each test): queue replies with
``wire.queue(Reply(...), Fail(...))``, read ``wire.requests``. See conf_wire.py.
``ctracer`` / ``chandler``: a Tracer on a fresh SQLite file and a LangChain handler on it.
``instrumentor``: the LlamaIndex instrumentor on ``ctracer``, removed after the test.
"""

from __future__ import annotations

import pytest

import llmtrace

from .conf_wire import WireServer


@pytest.fixture(scope="session")
def wire_server():
    server = WireServer()
    yield server
    server.close()


@pytest.fixture
def wire(wire_server):
    wire_server.reset()
    yield wire_server
    wire_server.reset()


@pytest.fixture
def ctracer(sqlite_url):
    t = llmtrace.Tracer(sqlite_url, flush_interval_seconds=0.05)
    yield t
    t.close()


@pytest.fixture
def chandler(ctracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    return LLMTraceCallbackHandler(ctracer)


@pytest.fixture
def instrumentor(ctracer):
    from llmtrace_llamaindex import LLMTraceInstrumentor

    inst = LLMTraceInstrumentor(ctracer).instrument()
    yield inst
    inst.uninstrument()
