"""The LlamaIndex half of ``llmtrace demo``: a policy Q&A over a VectorStoreIndex of the same corpus.

A bag-of-words embedding and a small offline LLM that answers from the retrieved context (with
the token usage and model version a real provider reports) keep it runnable anywhere, and
deterministic: each question retrieves the policies it is about.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

_STOP = {"a", "an", "and", "are", "as", "at", "be", "can", "do", "for", "have", "how", "i", "in", "is", "it",
         "long", "of", "or", "the", "to", "when", "with"}
QUESTIONS = [("u-fay", "How long do I have to return an unused item?", "accepted"),
             ("u-gus", "Are gift cards refundable?", "accepted"),
             ("u-hal", "Is shipping refunded when the item arrived damaged?", "retried")]


def run(tracer, policies: dict[str, str], out) -> list[str]:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
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

    class WordsEmbedding(BaseEmbedding):
        """Hashed bag of words, normalised: offline and deterministic, and near enough to meaning here."""

        def _vector(self, text: str) -> list[float]:
            v = [0.0] * 512
            for word in re.findall(r"[a-z]+", text.lower()):
                if word not in _STOP:
                    v[zlib.crc32(word.rstrip("s").encode()) % 512] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            return [x / norm for x in v]

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._vector(text)

    # (the embedding is passed, not set on LlamaIndex's global Settings: the demo leaves the app's alone)
    index = VectorStoreIndex.from_documents(
        [Document(text=text, id_=pid, metadata={"source": "policies.md"}) for pid, text in policies.items()],
        embed_model=WordsEmbedding(model_name="bag-of-words-512"))
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
