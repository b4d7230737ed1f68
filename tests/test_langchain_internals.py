"""The framework internals llmtrace_langchain relies on, each named here so that an upgrade that
moves one fails loudly (issue 14: "where the handler needs a framework internal, a test names it").

Each test checks the internal itself, not llmtrace: the scenario and conformance suites check what
the record looks like with it."""

from __future__ import annotations

import contextvars
import json
from typing import TypedDict

from fakes import ScriptedChatModel, answer, tool_call
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel


class Calls(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, metadata=None, **kwargs):
        self.seen.append(("chain_start", {"name": kwargs.get("name"), "run_id": run_id, "parent": parent_run_id,
                                          "metadata": dict(metadata or {})}))

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kwargs):
        from langchain_core.runnables.config import var_child_runnable_config

        config = var_child_runnable_config.get() or {}
        self.seen.append(("llm_start", {"parent": parent_run_id,
                                        "context_parent": getattr(config.get("callbacks"), "parent_run_id", None)}))

    def on_llm_error(self, error, *, run_id, **kwargs):
        self.seen.append(("llm_error", {"response": kwargs.get("response")}))


def test_child_config_context_var_names_the_fallback_runner():
    """RunnableWithFallbacks (langchain-core 1.x) reports its children under its own parent, while
    ``var_child_runnable_config`` (an internal of langchain_core.runnables.config) names it."""
    from langchain_core.runnables.config import var_child_runnable_config

    assert isinstance(var_child_runnable_config, contextvars.ContextVar)

    class Boom(Exception):
        pass

    seen = Calls()
    primary = ScriptedChatModel(script=[Boom("down")])
    backup = ScriptedChatModel(script=[answer("ok")])
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    (prompt | primary.with_fallbacks([backup])).invoke({"q": "hi"}, config={"callbacks": [seen]})
    runner = next(e for kind, e in seen.seen if kind == "chain_start" and e["name"] == "RunnableWithFallbacks")
    starts = [e for kind, e in seen.seen if kind == "llm_start"]
    assert len(starts) == 2
    assert all(e["context_parent"] == runner["run_id"] for e in starts)
    # (when LangChain fixes the reported parent, the handler needs the context no more: both agree)
    assert all(e["parent"] in (runner["run_id"], runner["parent"]) for e in starts)


def test_on_llm_error_passes_the_chunks_a_stream_delivered():
    """``on_llm_error(..., response=LLMResult)``: the merged chunks first, then the error's own generations."""
    class Breaks(ScriptedChatModel):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            yield ChatGenerationChunk(message=AIMessageChunk(content="half"))
            raise ConnectionError("dropped")

    seen = Calls()
    try:
        for _ in Breaks(script=[answer("x")]).stream("q", config={"callbacks": [seen]}):
            pass
    except ConnectionError:
        pass
    [(_, error)] = [e for e in seen.seen if e[0] == "llm_error"]
    generations = error["response"].generations
    assert len(generations) == 2 and generations[0][0].message.content == "half"


def test_langgraph_control_flow_and_task_identity():
    """``langgraph.errors.GraphBubbleUp`` (interrupt(), Command(graph=PARENT)) and the node metadata
    key ``langgraph_checkpoint_ns``, the same on a RetryPolicy re-run of the node."""
    from langgraph.errors import GraphBubbleUp, GraphInterrupt, ParentCommand
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import RetryPolicy

    assert issubclass(GraphInterrupt, GraphBubbleUp) and issubclass(ParentCommand, GraphBubbleUp)

    class Flaky(Exception):
        pass

    class State(TypedDict, total=False):
        out: str

    attempts = []

    def node(state):
        attempts.append(1)
        if len(attempts) == 1:
            raise Flaky()
        return {"out": "done"}

    g = StateGraph(State)
    g.add_node("work", node, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=Flaky))
    g.add_edge(START, "work")
    g.add_edge("work", END)
    seen = Calls()
    g.compile().invoke({}, config={"callbacks": [seen]})
    runs = [e for kind, e in seen.seen if kind == "chain_start" and e["name"] == "work"]
    assert len(runs) == 2
    namespaces = {e["metadata"].get("langgraph_checkpoint_ns") for e in runs}
    assert len(namespaces) == 1 and None not in namespaces


def test_create_agent_model_node_returns_commands_with_the_structured_response():
    """``create_agent``'s model node returns Commands whose update carries ``structured_response``."""
    from langchain.agents import create_agent
    from langchain.agents.structured_output import StructuredOutputError, ToolStrategy

    class Verdict(BaseModel):
        ok: bool

    outputs = []

    class Ends(BaseCallbackHandler):
        def on_chain_end(self, out, *, run_id, **kwargs):
            outputs.append(out)

    model = ScriptedChatModel(script=[answer("", tool_calls=[tool_call("Verdict", {"ok": True}, "call_v")])])
    create_agent(model, tools=[], response_format=ToolStrategy(Verdict)).invoke(
        {"messages": [HumanMessage("ok?")]}, config={"callbacks": [Ends()]})
    commands = [c for out in outputs if isinstance(out, list) for c in out if type(c).__name__ == "Command"]
    assert any(isinstance(c.update, dict) and c.update.get("structured_response") == Verdict(ok=True) for c in commands)
    assert StructuredOutputError.__name__ == "StructuredOutputError"  # (is_parse_failure names it)


def test_openai_internals_for_structured_output():
    """openai's ``type_to_response_format_param`` (an internal of openai.lib._parsing) is what the
    client sends for a pydantic response_format; langchain-openai keeps the client's parsed object
    in ``additional_kwargs["parsed"]``."""
    from langchain_openai.chat_models.base import _oai_structured_outputs_parser
    from openai.lib._parsing._completions import type_to_response_format_param

    class Person(BaseModel):
        name: str

    sent = type_to_response_format_param(Person)
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Person"
    assert json.loads(json.dumps(sent))["json_schema"]["schema"]["properties"]["name"]["type"] == "string"
    from langchain_core.messages import AIMessage

    msg = AIMessage(content='{"name": "Ada"}', additional_kwargs={"parsed": Person(name="Ada")})
    assert _oai_structured_outputs_parser(msg, Person) == Person(name="Ada")
