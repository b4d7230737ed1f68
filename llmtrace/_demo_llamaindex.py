"""The LlamaIndex half of ``llmtrace demo``: a policy Q&A over a VectorStoreIndex of the same corpus.

MockEmbedding and a small offline LLM that answers from the retrieved context (with the token
usage and model version a real provider reports) keep it runnable anywhere.
"""

from __future__ import annotations

from typing import Any

QUESTIONS = [("u-fay", "How long do I have to return an unused item?", "accepted"),
             ("u-gus", "Are gift cards refundable?", "accepted"),
             ("u-hal", "Is shipping refunded when the item arrived damaged?", "retried")]


def run(tracer, policies: dict[str, str], out) -> list[str]:
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llmtrace_llamaindex import LLMTraceInstrumentor

    class PolicyLLM(CustomLLM):
        """Answers with the first policy sentence of its context, as a careful model would."""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="gpt-4o-mini")

        def _answer(self, prompt: str) -> CompletionResponse:
            context = prompt.split("---------------------")[1] if "------" in prompt else prompt
            lines = [ln for ln in context.splitlines() if ln.strip() and not ln.startswith("source:")]
            text = f"According to our policy: {lines[0].strip()}" if lines else "I could not find that in the policy."
            usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                     "total_tokens": len(prompt) // 4 + len(text) // 4}
            return CompletionResponse(text=text, raw={"model": "gpt-4o-mini-2024-07-18", "usage": usage,
                                                      "choices": [{"finish_reason": "stop"}]})

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return self._answer(prompt)

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
            full = self._answer(prompt)
            words = full.text.split(" ")

            def gen():
                text = ""
                for i, word in enumerate(words):
                    delta = word if i == 0 else " " + word
                    text += delta
                    yield CompletionResponse(text=text, delta=delta, raw=full.raw)
            return gen()

    Settings.embed_model = MockEmbedding(embed_dim=32)
    index = VectorStoreIndex.from_documents(
        [Document(text=text, id_=pid, metadata={"source": "policies.md"}) for pid, text in policies.items()])
    engine = index.as_query_engine(llm=PolicyLLM(), similarity_top_k=2)
    instrumentor = LLMTraceInstrumentor(tracer).instrument()
    ids = []
    try:
        for user, question, action in QUESTIONS:
            with tracer.trace(name="policy-qa", user_id=user, feature="policy-qa", prompt_version="qa-v2") as t:
                engine.query(question)
            tracer.record_feedback(t.trace_id, action)
            ids.append(t.trace_id)
    finally:
        instrumentor.uninstrument()
    out(f"llmtrace demo: recorded {len(ids)} LlamaIndex policy questions (VectorStoreIndex + query engine)")
    return ids
