"""Replay a recorded LLM call on a LlamaIndex LLM (``Trace.replay`` finds this module by its
``llmtrace.replay`` entry point)."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.llms import ChatMessage

from llmtrace.integration import ReplayResult


def can_replay(llm: Any) -> bool:
    return isinstance(llm, BaseLLM)


def replay(llm: Any, call: dict[str, Any], params: dict[str, Any], tracer: Any, trace_id: str) -> ReplayResult:
    # (params stay on the LLM object, as LlamaIndex configures them: not every LLM takes them per call)
    messages = [ChatMessage(role=m.get("role") or "user", content=m.get("content") or "") for m in call["input_messages"]]

    def run() -> Any:
        if len(messages) == 1 and messages[0].role.value == "user" and not getattr(llm.metadata, "is_chat_model", True):
            return llm.complete(messages[0].content or "").text  # a completion model saw one prompt
        return llm.chat(messages).message.content

    if tracer is None:
        return ReplayResult(text=run())
    from llmtrace_llamaindex import LLMTraceInstrumentor

    instrumentor = LLMTraceInstrumentor(tracer).instrument()
    try:
        with tracer.trace(name="replay", metadata={"replay_of": trace_id, "replay_of_span": call["span_id"]}) as t:
            text = run()
    finally:
        instrumentor.uninstrument()
    return ReplayResult(text=text, trace_id=t.trace_id)
