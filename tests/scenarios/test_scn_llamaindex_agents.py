"""LlamaIndex agents and workflows (llama_index.core.agent.workflow with its mock function-calling
LLM, a custom Workflow with steps), predict_and_call on the real OpenAI class, and embeddings made in
batches."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context, Event, StartEvent, StopEvent, Workflow, step
from pydantic import BaseModel, ValidationError

from .scn_support import all_trace_ids, completion, path, scripted_openai

try:  # the fakes that script an agent's tool calls: llama-index-core 0.14.10 and later
    from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ReActAgent
    from llama_index.core.base.llms.types import ToolCallBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM
except ImportError:  # the oldest cores the pin allows: these tests skip, the others run
    AgentWorkflow = FunctionAgent = ReActAgent = ToolCallBlock = MockFunctionCallingLLM = None

needs_agent_fakes = pytest.mark.skipif(MockFunctionCallingLLM is None, reason=(
    "this llama-index-core has no MockFunctionCallingLLM / ToolCallBlock (0.14.10+) to script an agent with"))


def lookup_order(order_id: str) -> str:
    """Look up an order by id."""
    return f"order {order_id}: delivered"


LOOKUP = FunctionTool.from_defaults(lookup_order)


def run(start):
    """Run ``start()`` (a coroutine function, or one returning a workflow handler) in an event loop."""
    async def main():
        return await start()

    return asyncio.run(main())


# -- FunctionAgent -----------------------------------------------------------------------------

@needs_agent_fakes
def test_function_agent_parallel_tool_calls_while_streaming_events(scn_tracer, li_inst):
    def respond(messages, **kwargs):
        if not any(m.role.value == "tool" for m in messages):
            return ChatMessage(role="assistant", blocks=[
                ToolCallBlock(tool_call_id="call_a", tool_name="lookup_order", tool_kwargs={"order_id": "A-1"}),
                ToolCallBlock(tool_call_id="call_b", tool_name="lookup_order", tool_kwargs={"order_id": "B-2"})])
        return ChatMessage(role="assistant", content="A-1 and B-2 were delivered.")

    agent = FunctionAgent(tools=[LOOKUP], llm=MockFunctionCallingLLM(response_generator=respond),
                          system_prompt="You track orders.")

    async def main():
        handler = agent.run("where are A-1 and B-2?")
        kinds = {type(ev).__name__ async for ev in handler.stream_events()}
        return await handler, kinds

    result, kinds = run(main)
    assert str(result) == "A-1 and B-2 were delivered." and {"ToolCall", "ToolCallResult", "AgentStream"} <= kinds
    assert all_trace_ids(scn_tracer) == [li_inst.last_trace_id]
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    assert doc["name"] == "FunctionAgent.run" and doc["status"] == "ok"
    first, second = doc["llm_calls"]
    assert first["system_prompt"] == "You track orders." and first["tools_offered"][0]["name"] == "lookup_order"
    got = {t["id"]: (t["name"], t["args"], t["result"], t["status"]) for t in first["tool_calls"]}
    assert got == {"call_a": ("lookup_order", {"order_id": "A-1"}, "order A-1: delivered", "ok"),
                   "call_b": ("lookup_order", {"order_id": "B-2"}, "order B-2: delivered", "ok")}
    assert [(m["role"], m.get("tool_call_id")) for m in second["input_messages"]] == [
        ("system", None), ("user", None), ("assistant", None), ("tool", "call_a"), ("tool", "call_b")]
    assert second["raw_completion"] == "A-1 and B-2 were delivered." and second["streamed"] is True
    assert second["latency_ms"]["tools"] == pytest.approx(sum(t["latency_ms"] for t in first["tool_calls"]))


@needs_agent_fakes
def test_agent_workflow_handoff_between_agents(scn_tracer, li_inst):
    def triage(messages, **kwargs):
        return ChatMessage(role="assistant", blocks=[ToolCallBlock(
            tool_call_id="call_h", tool_name="handoff", tool_kwargs={"to_agent": "orders", "reason": "order question"})])

    def orders(messages, **kwargs):
        if not any(m.role.value == "tool" and "delivered" in str(m.content) for m in messages):
            return ChatMessage(role="assistant", blocks=[
                ToolCallBlock(tool_call_id="call_o", tool_name="lookup_order", tool_kwargs={"order_id": "A-1"})])
        return ChatMessage(role="assistant", content="A-1 was delivered.")

    workflow = AgentWorkflow(root_agent="triage", agents=[
        FunctionAgent(name="triage", description="Routes questions.", can_handoff_to=["orders"], tools=[],
                      llm=MockFunctionCallingLLM(response_generator=triage)),
        FunctionAgent(name="orders", description="Answers order questions.", tools=[LOOKUP],
                      llm=MockFunctionCallingLLM(response_generator=orders)),
    ])
    assert str(run(lambda: workflow.run(user_msg="where is A-1?"))) == "A-1 was delivered."
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    handoff, lookup, final = doc["llm_calls"]
    [h] = handoff["tool_calls"]
    assert (h["id"], h["name"], h["args"]["to_agent"], h["status"]) == ("call_h", "handoff", "orders", "ok")
    assert "orders is now handling the request" in h["result"]
    [tc] = lookup["tool_calls"]
    assert (tc["id"], tc["args"], tc["result"]) == ("call_o", {"order_id": "A-1"}, "order A-1: delivered")
    assert final["raw_completion"] == "A-1 was delivered." and doc["totals"]["llm_calls"] == 3


@needs_agent_fakes
@pytest.mark.filterwarnings("ignore:Skipping serialization")  # (workflows: the agent's memory is not serializable)
def test_react_agent_two_turns_in_one_context(scn_tracer, li_inst):
    def respond(messages, **kwargs):
        last = str(messages[-1].content)
        if last.startswith("Observation"):
            return ChatMessage(role="assistant", content="Thought: I can answer without using any more tools.\n"
                                                         "Answer: It was delivered.")
        order = "A-1" if "A-1" in last else "B-2"
        return ChatMessage(role="assistant", content="Thought: I need the order.\nAction: lookup_order\n"
                                                     f'Action Input: {{"order_id": "{order}"}}')

    agent = ReActAgent(tools=[LOOKUP], llm=MockFunctionCallingLLM(response_generator=respond))

    async def main():
        ctx = Context(agent)
        await agent.run("where is A-1?", ctx=ctx)
        first = li_inst.last_trace_id
        handler = agent.run("and B-2?", ctx=ctx)
        async for _ in handler.stream_events():
            pass
        await handler
        return first, li_inst.last_trace_id

    first_id, second_id = run(main)
    assert first_id != second_id and sorted(all_trace_ids(scn_tracer)) == sorted([first_id, second_id])
    for trace_id, order in ((first_id, "A-1"), (second_id, "B-2")):
        doc = scn_tracer.get_trace(trace_id).to_dict()
        asked, answered = doc["llm_calls"]
        [tc] = asked["tool_calls"]
        assert (tc["name"], tc["args"], tc["result"], tc["status"]) == (
            "lookup_order", {"order_id": order}, f"order {order}: delivered", "ok")
        assert answered["input_messages"][-1]["content"] == f"Observation: order {order}: delivered"
        assert answered["raw_completion"].endswith("Answer: It was delivered.")


# -- a custom Workflow -------------------------------------------------------------------------

class Drafted(Event):
    draft: str


class DraftAndPolish(Workflow):
    llm: MockLLM = MockLLM(max_tokens=4)

    @step
    async def draft(self, ev: StartEvent) -> Drafted:
        return Drafted(draft=(await self.llm.acomplete(f"draft about {ev.topic}")).text)

    @step
    async def polish(self, ev: Drafted) -> StopEvent:
        if ev.draft == "":
            raise ValueError("empty draft")
        return StopEvent(result=(await self.llm.acomplete(f"polish: {ev.draft}")).text)


class FailsInPolish(DraftAndPolish):
    @step
    async def polish(self, ev: Drafted) -> StopEvent:
        raise ValueError("polish step failed: style guide missing")


def test_custom_workflow_steps_are_one_trace(scn_tracer, li_inst):
    result = run(lambda: DraftAndPolish(timeout=10).run(topic="refunds"))
    assert all_trace_ids(scn_tracer) == [li_inst.last_trace_id]
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    assert doc["name"] == "DraftAndPolish.run" and doc["status"] == "ok"
    draft, polish = doc["llm_calls"]
    assert draft["input_messages"] == [{"role": "user", "content": "draft about refunds"}]
    assert polish["input_messages"] == [{"role": "user", "content": f"polish: {draft['raw_completion']}"}]
    assert polish["raw_completion"] == result
    assert path(doc, draft["span_id"])[:2] == ["DraftAndPolish.run", "DraftAndPolish.draft"]
    assert path(doc, polish["span_id"])[:2] == ["DraftAndPolish.run", "DraftAndPolish.polish"]
    root = doc["spans"][0]
    assert root["ended_at"] >= polish["ended_at"]  # the run's span lasts until its last step


def _workflows_major() -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("llama-index-workflows").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


@pytest.mark.xfail(_workflows_major() < 2, strict=True, reason=(
    "new: on llama-index-workflows < 2 Workflow.run returns a future and LlamaIndex's dispatcher ends its span "
    "with result None when the future failed: the trace is 'ok' though the run raised"))
def test_custom_workflow_failing_step_is_an_error_trace(scn_tracer, li_inst):
    # (llama-index-workflows before 2.0 wraps the step's error in a WorkflowRuntimeError)
    with pytest.raises(Exception, match="style guide missing") as raised:
        run(lambda: FailsInPolish(timeout=10).run(topic="refunds"))
    assert type(raised.value).__name__ in ("ValueError", "WorkflowRuntimeError")
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    assert doc["status"] == "error" and doc["totals"] == {**doc["totals"], "llm_calls": 1, "errors": 1}
    [failed] = [s for s in doc["spans"] if s["status"] == "error" and s["name"] == "FailsInPolish.polish"]
    assert "style guide missing" in failed["error"]["message"]
    assert [t["trace_id"] for t in scn_tracer.find_traces(status="error")] == [doc["trace_id"]]


# -- predict_and_call (issue 14 item 8) --------------------------------------------------------

def test_predict_and_call_one_tool_call_one_entry(scn_tracer, li_inst):
    sent: list[dict] = []
    llm = scripted_openai([completion(None, [("call_9", "lookup_order", {"order_id": "A-1"})], finish="tool_calls")], sent)
    out = llm.predict_and_call([LOOKUP], user_msg="where is A-1?")
    assert str(out) == "order A-1: delivered"
    assert [t["function"]["name"] for t in sent[0]["tools"]] == ["lookup_order"]  # offered on the wire
    [call] = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()["llm_calls"]
    assert [t["name"] for t in call["tools_offered"]] == ["lookup_order"]
    assert call["tools_offered"][0]["parameters"]["properties"]["order_id"]["type"] == "string"
    [tc] = call["tool_calls"]
    assert (tc["id"], tc["name"], tc["args"], tc["result"], tc["status"]) == (
        "call_9", "lookup_order", {"order_id": "A-1"}, "order A-1: delivered", "ok")


# -- embeddings in batches (issue 14 item 9) ---------------------------------------------------

TEXTS = [f"refund policy paragraph number {i}" for i in range(6)]


def _embedding_span(doc: dict) -> dict:
    [root] = [s for s in doc["spans"] if s["parent_id"] is None]
    assert root["kind"] == "embedding"
    return root


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_embedding_batches_record_every_text_and_all_tokens(scn_tracer, li_inst, mode):
    from llama_index.core.utils import get_tokenizer

    model = MockEmbedding(embed_dim=4, embed_batch_size=2)
    if mode == "sync":
        vectors = model.get_text_embedding_batch(TEXTS)
    else:
        vectors = asyncio.run(model.aget_text_embedding_batch(TEXTS))
    assert len(vectors) == 6
    span = _embedding_span(scn_tracer.get_trace(li_inst.last_trace_id).to_dict())
    assert span["inputs"] == {"texts": TEXTS}
    tokenizer = get_tokenizer()
    assert span["outputs"]["chunks"] == 6
    assert span["outputs"]["token_count"] == sum(len(tokenizer(t)) for t in TEXTS)


def test_async_embedding_batches_keep_the_model_name(scn_tracer, li_inst):
    model = MockEmbedding(embed_dim=4, embed_batch_size=2)
    model.get_text_embedding_batch(TEXTS)
    sync_span = _embedding_span(scn_tracer.get_trace(li_inst.last_trace_id).to_dict())
    asyncio.run(model.aget_text_embedding_batch(TEXTS))
    async_span = _embedding_span(scn_tracer.get_trace(li_inst.last_trace_id).to_dict())
    assert sync_span["outputs"]["model"] == model.model_name == "unknown"
    assert async_span["outputs"]["model"] == model.model_name


# -- structured output on the real OpenAI class ------------------------------------------------

class Person(BaseModel):
    name: str
    age: int


def _json_schema_path() -> bool:
    from llama_index.llms.openai import OpenAI

    return hasattr(OpenAI, "_should_use_structure_outputs")


# (llama-index-llms-openai before 0.4, the last for llama-index-core 0.12, asks for a tool call instead)
needs_json_schema = pytest.mark.skipif(not _json_schema_path(), reason="this llama-index-llms-openai has no "
                                       "json_schema structured_predict")


@needs_json_schema
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_structured_predict_fills_parsed(scn_tracer, li_inst, mode):
    sent: list[dict] = []
    llm = scripted_openai([completion('{"name": "Ann", "age": 31}')], sent)
    prompt = PromptTemplate("Extract the person: {text}")
    if mode == "sync":
        person = llm.structured_predict(Person, prompt, text="Ann is 31")
    else:
        person = run(lambda: llm.astructured_predict(Person, prompt, text="Ann is 31"))
    assert person == Person(name="Ann", age=31)
    assert sent[0]["response_format"]["type"] == "json_schema"
    [call] = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()["llm_calls"]
    assert call["raw_completion"] == '{"name": "Ann", "age": 31}'
    assert call["parsed"] == {"name": "Ann", "age": 31}
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]


@needs_json_schema
def test_openai_structured_predict_failure_is_a_failed_schema_validation(scn_tracer, li_inst):
    llm = scripted_openai([completion('{"name": "Ann"}')])
    with pytest.raises(ValidationError):
        llm.structured_predict(Person, PromptTemplate("Extract the person: {text}"), text="Ann is 31")
    doc = scn_tracer.get_trace(li_inst.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert (doc["status"], call["status"], call["raw_completion"]) == ("error", "ok", '{"name": "Ann"}')
    assert call["parsed"] is None and "age" in call["parse_error"]
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", False)]
