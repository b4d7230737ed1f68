"""LlamaIndex engines that compose others: a RouterQueryEngine (an LLM selector, then the chosen
engine) and a SubQuestionQueryEngine (an LLM question generator, one query per sub-question, then a
synthesis), sync, async and streaming. One request is one trace holding every LLM call, each with the
chunks retrieved before it; a stream read after ``query()`` returned stays in that trace."""

from __future__ import annotations

import asyncio
import json

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.query_engine import RouterQueryEngine, SubQuestionQueryEngine
from llama_index.core.question_gen import LLMQuestionGenerator
from llama_index.core.selectors import LLMSingleSelector
from llama_index.core.tools import QueryEngineTool

from .scn_support import all_trace_ids

ANSWER = "Refunds are accepted within 30 days."
CHOICE = json.dumps([{"choice": 1, "reason": "a refund question"}])
SUB_QUESTIONS = "```json\n" + json.dumps({"items": [
    {"sub_question": "What is the refund window?", "tool_name": "refunds"},
    {"sub_question": "How long does shipping take?", "tool_name": "shipping"}]}) + "\n```"


class Scripted(CustomLLM):
    """Answers by what the prompt asks for: a selector's choice, a question generator's sub-questions,
    else the answer; streams it word by word (sync and async, through CustomLLM's own wrappers)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted")

    @staticmethod
    def answer(prompt: str) -> str:
        if "choice" in prompt:
            return CHOICE
        if "sub_question" in prompt:
            return SUB_QUESTIONS
        return ANSWER

    @llm_completion_callback()
    def complete(self, prompt, formatted=False, **kwargs):
        return CompletionResponse(text=self.answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt, formatted=False, **kwargs):
        words = self.answer(prompt).split(" ")

        def gen():
            text = ""
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()


@pytest.fixture(scope="module")
def tools_factory():
    embed = MockEmbedding(embed_dim=8)
    refunds = VectorStoreIndex.from_documents([Document(text="Refunds within 30 days.", id_="kb-refunds")],
                                              embed_model=embed)
    shipping = VectorStoreIndex.from_documents([Document(text="Shipping takes 5 days.", id_="kb-shipping")],
                                               embed_model=embed)

    def make(llm, streaming: bool) -> list[QueryEngineTool]:
        return [QueryEngineTool.from_defaults(refunds.as_query_engine(llm=llm, streaming=streaming, embed_model=embed),
                                              name="refunds", description="The refund policy."),
                QueryEngineTool.from_defaults(shipping.as_query_engine(llm=llm, streaming=streaming, embed_model=embed),
                                              name="shipping", description="The shipping policy.")]

    return make


def one_trace(tracer, inst) -> dict:
    traces = all_trace_ids(tracer)
    assert traces == [inst.last_trace_id], f"one request made {len(traces)} traces"
    return tracer.get_trace(traces[0]).to_dict()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_streaming_router_is_one_trace_with_the_selection_and_the_answer(scn_tracer, li_inst, tools_factory, mode):
    llm = Scripted()
    router = RouterQueryEngine(selector=LLMSingleSelector.from_defaults(llm=llm),
                               query_engine_tools=tools_factory(llm, True), llm=llm)
    if mode == "sync":
        text = "".join(router.query("What is the refund window?").response_gen)
    else:
        async def main():
            response = await router.aquery("What is the refund window?")
            return "".join([t async for t in response.async_response_gen()])

        text = asyncio.run(main())
    assert text == ANSWER
    doc = one_trace(scn_tracer, li_inst)
    assert doc["name"] in ("RouterQueryEngine.query", "RouterQueryEngine.aquery") and doc["status"] == "ok"
    select, answer = doc["llm_calls"]
    assert select["raw_completion"] == CHOICE and select["retrieved"] == []
    assert answer["raw_completion"] == ANSWER and answer["streamed"] is True
    assert [r["source_id"] for r in answer["retrieved"]] == ["kb-refunds"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sub_question_engine_is_one_trace_with_every_call(scn_tracer, li_inst, tools_factory, mode):
    llm = Scripted()
    engine = SubQuestionQueryEngine.from_defaults(
        query_engine_tools=tools_factory(llm, True), llm=llm, question_gen=LLMQuestionGenerator.from_defaults(llm=llm))
    if mode == "sync":
        out = engine.query("Refund window and shipping time?")
    else:
        out = asyncio.run(engine.aquery("Refund window and shipping time?"))
    assert str(out) == ANSWER
    doc = one_trace(scn_tracer, li_inst)
    generate, refunds, shipping, final = doc["llm_calls"]
    assert generate["raw_completion"] == SUB_QUESTIONS
    assert (refunds["raw_completion"], refunds["streamed"]) == (ANSWER, True)  # the sub-engines stream
    assert (shipping["raw_completion"], shipping["streamed"]) == (ANSWER, True)
    assert "kb-refunds" in {r["source_id"] for r in refunds["retrieved"]}
    assert "kb-shipping" in {r["source_id"] for r in shipping["retrieved"]}
    assert final["raw_completion"] == ANSWER and "Sub question" in final["input_messages"][0]["content"]
    assert doc["totals"]["llm_calls"] == 4 and doc["status"] == "ok"
