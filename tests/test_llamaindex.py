"""LlamaIndex: query engines, chat, streaming, async, agents and errors, on real LlamaIndex classes
with the mock LLMs and embeddings it ships, recorded through LLMTraceInstrumentor."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.tools import FunctionTool

try:  # the fakes that script an agent's tool calls: llama-index-core 0.14.10 and later
    from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
    from llama_index.core.base.llms.types import ToolCallBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM
except ImportError:  # the oldest cores the pin allows: these tests skip, the others run
    FunctionAgent = ReActAgent = ToolCallBlock = MockFunctionCallingLLM = None

needs_agent_fakes = pytest.mark.skipif(MockFunctionCallingLLM is None, reason=(
    "this llama-index-core has no MockFunctionCallingLLM / ToolCallBlock (0.14.10+) to script an agent with"))

DOCS = [Document(text=f"Policy {i}: refunds within {10 + i} days.", id_=f"policy-{i}",
                 metadata={"source": f"kb/policy-{i}.md"}) for i in range(6)]


@pytest.fixture
def inst(tracer):
    from llmtrace_llamaindex import LLMTraceInstrumentor

    Settings.llm = MockLLM(max_tokens=20)
    Settings.embed_model = MockEmbedding(embed_dim=16)
    i = LLMTraceInstrumentor(tracer).instrument()
    yield i
    i.uninstrument()


@pytest.fixture(scope="module")
def index():
    Settings.embed_model = MockEmbedding(embed_dim=16)
    return VectorStoreIndex.from_documents(DOCS)


def test_query_engine(tracer, inst, index):
    response = index.as_query_engine(similarity_top_k=2).query("What is the refund window?")
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    assert doc["name"] == "RetrieverQueryEngine.query" and doc["status"] == "ok"
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == str(response) and call["status"] == "ok"
    assert "What is the refund window?" in call["input_messages"][0]["content"]
    assert call["provider"] == "mock" and call["tokens"]["input"] is None
    sources = {n.node.ref_doc_id for n in response.source_nodes}
    assert {r["source_id"] for r in call["retrieved"]} == sources and len(call["retrieved"]) == 2
    assert all(isinstance(r["score"], float) and r["content"].startswith("Policy") for r in call["retrieved"])
    assert call["latency_ms"]["retrieval"] > 0 and call["latency_ms"]["ttft"] is None
    kinds = {s["kind"] for s in doc["spans"]}
    assert {"chain", "retriever", "embedding", "llm"} <= kinds
    [embed] = [s for s in doc["spans"] if s["kind"] == "embedding"]  # the query's embedding: a span of its own
    assert embed["inputs"] == {"query": "What is the refund window?"}
    assert embed["outputs"]["model"] == "unknown" and embed["outputs"]["chunks"] == 1  # (MockEmbedding's name)
    assert embed["outputs"]["dimensions"] == 16
    assert embed["outputs"]["token_count"] == 6 and "tiktoken" in embed["outputs"]["counted_with"]  # What| is| the| refund| window|?
    predict = next(s for s in doc["spans"] if s["name"].endswith(".predict"))
    assert "Context information is below" in predict["inputs"]["template"]
    assert "Policy" in predict["inputs"]["template_args"]["context_str"]  # (query_str is a partial)


def test_async_queries_keep_their_traces_apart(tracer, inst, index):
    engine = index.as_query_engine(similarity_top_k=1)

    async def one(i):
        with tracer.trace(trace_id=f"li-{i}-{id(engine)}", user_id=f"user-{i}") as t:
            await engine.aquery(f"question number {i}?")
        return t.trace_id, i

    async def main():
        return await asyncio.gather(*(one(i) for i in range(8)))

    for trace_id, i in asyncio.run(main()):
        doc = tracer.get_trace(trace_id).to_dict()
        [call] = doc["llm_calls"]
        assert f"question number {i}?" in call["input_messages"][0]["content"]
        assert len([s for s in doc["spans"] if s["parent_id"] is None]) == 1


def test_streaming_query_engine_ttft_and_full_text(tracer, inst, index):
    response = index.as_query_engine(streaming=True, similarity_top_k=1).query("stream it?")
    text = "".join(response.response_gen)
    call = tracer.get_trace(inst.last_trace_id).to_dict()["llm_calls"][0]
    assert call["raw_completion"] == text and call["status"] == "ok"
    assert call["latency_ms"]["ttft"] is not None and call["streamed"] is True


def test_stream_closed_early_is_closed_and_marked_cancelled(tracer, inst):
    llm = MockLLM(max_tokens=50)
    stream = llm.stream_complete("tell me everything")
    next(stream)
    stream.close()
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["status"] == "error" and call["error"]["type"] == "cancelled"
    assert call["latency_ms"]["ttft"] is not None
    assert tracer.health()["open_spans"] == 0


def test_async_stream_read_through_another_stream_is_one_call(tracer, inst):
    """MockLLM's astream_complete reads stream_complete lazily: LlamaIndex reports two LLM calls
    (the inner one with no parent, or under whatever span reads the stream); it is one call."""
    llm = MockLLM(max_tokens=4)

    async def main():
        return "".join([r.delta async for r in await llm.astream_complete("four words, please")])

    text = asyncio.run(main())
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == text and call["streamed"] is True and call["name"] == "MockLLM"
    assert doc["name"] == "MockLLM.astream_complete" and doc["totals"]["llm_calls"] == 1


def test_chat_and_stream_chat(tracer, inst):
    llm = MockLLM(max_tokens=5)
    with tracer.trace(name="chat") as t:
        llm.chat([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="hi")])
        "".join(r.delta for r in llm.stream_chat([ChatMessage(role="user", content="again")]))
    doc = tracer.get_trace(t.trace_id).to_dict()
    first, second = doc["llm_calls"]
    assert first["system_prompt"] == "Be brief." and [m["role"] for m in first["input_messages"]] == ["system", "user"]
    assert first["raw_completion"] and second["streamed"] is True and second["raw_completion"]


def test_llm_error_is_classified(tracer, inst):
    class Overloaded(MockLLM):
        def complete(self, prompt, formatted=False, **kwargs):
            raise RuntimeError("503 Service Unavailable: model overloaded")

    llm = Overloaded()
    with pytest.raises(RuntimeError):
        llm.predict(__import__("llama_index.core.prompts", fromlist=["PromptTemplate"]).PromptTemplate("q {x}"), x=1)
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    assert doc["status"] == "error"
    spans = [s for s in doc["spans"] if s["status"] == "error"]
    assert spans and spans[-1]["error"]["type"] == "server_error"


@needs_agent_fakes
def test_function_agent_tool_calls(tracer, inst):
    def lookup_order(order_id: str) -> str:
        """Look up an order."""
        return f"order {order_id}: delivered"

    def respond(messages, **kwargs):
        if not any(m.role.value == "tool" for m in messages):
            return ChatMessage(role="assistant", blocks=[
                ToolCallBlock(tool_call_id="call_7", tool_name="lookup_order", tool_kwargs={"order_id": "A-1"})])
        return ChatMessage(role="assistant", content="Order A-1 was delivered.")

    agent = FunctionAgent(tools=[FunctionTool.from_defaults(lookup_order)],
                          llm=MockFunctionCallingLLM(response_generator=respond), system_prompt="You help.")

    async def main():
        return await agent.run("where is A-1?")

    result = asyncio.run(main())
    assert "delivered" in str(result)
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    first, second = doc["llm_calls"]
    assert first["tools_offered"][0]["name"] == "lookup_order"
    [tc] = first["tool_calls"]
    assert (tc["id"], tc["name"], tc["args"], tc["status"]) == ("call_7", "lookup_order", {"order_id": "A-1"}, "ok")
    assert tc["result"] == "order A-1: delivered"
    assert second["raw_completion"] == "Order A-1 was delivered."
    assert second["latency_ms"]["tools"] == pytest.approx(tc["latency_ms"])


@needs_agent_fakes
def test_react_agent_text_tool_calls(tracer, inst):
    """A ReAct agent asks for tools in text ("Action: ..."), with no provider tool-call id: the
    tool call is joined to the model call that ended just before it, with its args and result."""
    def lookup_order(order_id: str) -> str:
        """Look up an order."""
        return f"order {order_id}: delivered"

    def broken_tool(order_id: str) -> str:
        """Always fails."""
        raise RuntimeError("warehouse API down")

    def respond(messages, **kwargs):
        observations = sum(str(m.content).count("Observation") for m in messages[1:])  # (not the system prompt)
        if observations == 0:
            return ChatMessage(role="assistant", content='Thought: Try the fast way.\nAction: broken_tool\n'
                                                         'Action Input: {"order_id": "A-1"}')
        if observations == 1:
            return ChatMessage(role="assistant", content='Thought: I need the order.\nAction: lookup_order\n'
                                                         'Action Input: {"order_id": "A-1"}')
        return ChatMessage(role="assistant", content="Thought: I can answer without using any more tools.\n"
                                                     "Answer: Order A-1 was delivered.")

    agent = ReActAgent(tools=[FunctionTool.from_defaults(lookup_order), FunctionTool.from_defaults(broken_tool)],
                       llm=MockFunctionCallingLLM(response_generator=respond))

    async def main():
        return await agent.run("where is A-1?")

    result = asyncio.run(main())
    assert "delivered" in str(result)
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    assert doc["name"] == "ReActAgent.run" and doc["status"] == "ok"
    first, second, third = doc["llm_calls"]
    assert first["raw_completion"].startswith("Thought: Try the fast way.\nAction: broken_tool")
    [failed] = first["tool_calls"]
    assert (failed["name"], failed["args"], failed["status"]) == ("broken_tool", {"order_id": "A-1"}, "error")
    assert "warehouse API down" in str(failed["error"] or failed["result"])
    [tc] = second["tool_calls"]
    assert (tc["name"], tc["args"], tc["result"], tc["status"]) == ("lookup_order", {"order_id": "A-1"},
                                                                      "order A-1: delivered", "ok")
    assert tc["span_id"] in {sp["span_id"] for sp in doc["spans"] if sp["kind"] == "tool"}
    assert third["tool_calls"] == [] and third["raw_completion"].endswith("Answer: Order A-1 was delivered.")
    assert third["latency_ms"]["tools"] == pytest.approx(tc["latency_ms"])  # the wait for the tool


def test_instrument_is_idempotent_and_uninstrument_removes_exactly_it(tracer):
    from llama_index.core.instrumentation import get_dispatcher

    from llmtrace_llamaindex import LLMTraceInstrumentor

    d = get_dispatcher()
    before = (list(d.span_handlers), list(d.event_handlers))
    i = LLMTraceInstrumentor(tracer)
    i.instrument()
    i.instrument()
    assert len(d.span_handlers) == len(before[0]) + 1 and len(d.event_handlers) == len(before[1]) + 1
    i.uninstrument()
    assert (d.span_handlers, d.event_handlers) == before
    MockLLM(max_tokens=3).complete("not recorded")
    assert i.last_trace_id is None


def test_chat_engine(tracer, inst, index):
    engine = index.as_chat_engine(chat_mode="context", llm=MockLLM(max_tokens=8))
    engine.chat("What is the refund window?")
    engine.chat("And for electronics?")
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    contents = [m["content"] for m in call["input_messages"]]
    assert any("What is the refund window?" in (c or "") for c in contents)  # history is in the snapshot
    assert "And for electronics?" in contents[-1]  # (a completion model sees the chat as one prompt)
    assert call["retrieved"] and call["raw_completion"]


def test_structured_predict_parsed_and_validation_failure(tracer, inst):
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llama_index.core.prompts import PromptTemplate
    from pydantic import BaseModel

    class Refund(BaseModel):
        eligible: bool
        days_left: int

    class JsonLLM(CustomLLM):
        answer: str = ""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="json-mock")

        @llm_completion_callback()
        def complete(self, prompt, formatted=False, **kwargs):
            return CompletionResponse(text=self.answer)

        @llm_completion_callback()
        def stream_complete(self, prompt, formatted=False, **kwargs):
            yield CompletionResponse(text=self.answer, delta=self.answer)

    prompt = PromptTemplate("Is order {order} refundable?")
    out = JsonLLM(answer='{"eligible": true, "days_left": 12}').structured_predict(Refund, prompt, order="A-1")
    assert out == Refund(eligible=True, days_left=12)
    [call] = tracer.get_trace(inst.last_trace_id).to_dict()["llm_calls"]
    assert call["parsed"] == {"eligible": True, "days_left": 12}
    assert [(v["rule"], v["passed"]) for v in call["validations"]] == [("schema", True)]

    with pytest.raises(Exception) as info:
        JsonLLM(answer='{"eligible": "maybe"}').structured_predict(Refund, prompt, order="A-2")
    assert "ValidationError" in type(info.value).__name__ or "validation" in str(info.value).lower()
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == '{"eligible": "maybe"}' and call["parsed"] is None
    assert call["parse_error"] and call["validations"][0]["passed"] is False
    assert doc["status"] == "error"


def test_rerank_is_a_span_with_its_nodes(tracer, inst, index):
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor

    dispatcher = get_dispatcher(__name__)

    class ReverseRerank(BaseNodePostprocessor):
        """Reranks like real rerankers report it: ReRankStart / ReRankEnd events inside the span."""

        def _postprocess_nodes(self, nodes, query_bundle=None):
            dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=1, model_name="reverse"))
            ranked = list(reversed(nodes))[:1]
            dispatcher.event(ReRankEndEvent(nodes=ranked))
            return ranked

    engine = index.as_query_engine(similarity_top_k=3, node_postprocessors=[ReverseRerank()])
    response = engine.query("refund?")
    doc = tracer.get_trace(inst.last_trace_id).to_dict()
    rerank = [s for s in doc["spans"] if s["kind"] == "rerank"]
    assert len(rerank) == 1
    assert [n["source_id"] for n in rerank[0]["outputs"]] == [response.source_nodes[0].node.ref_doc_id]
    assert len(doc["llm_calls"][0]["retrieved"]) == 3  # what the retriever returned, before reranking


def test_a_step_that_returns_a_stream_stores_a_marker_not_the_stream():
    from llama_index.core.base.llms.types import CompletionResponse

    from llmtrace_llamaindex import _extract as X

    def tokens():
        yield "a"

    async def atokens():
        yield "a"

    stream, astream = tokens(), atokens()
    assert X.outputs(stream) == {"outputs": "<generator>"} and X.outputs(astream) == {"outputs": "<async_generator>"}
    assert next(stream) == "a"  # (left unconsumed: the app reads it, not llmtrace)
    assert X.outputs(CompletionResponse(text="hi")) == {"outputs": "hi"} and X.outputs([1, 2]) == {"outputs": [1, 2]}
