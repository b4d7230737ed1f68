"""Replay a recorded LLM call on a LangChain chat model (``Trace.replay`` finds this module by its
``llmtrace.replay`` entry point)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from llmtrace.integration import ReplayResult


def can_replay(llm: Any) -> bool:
    return isinstance(llm, BaseLanguageModel)


def _messages(recorded: list[dict[str, Any]]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for m in recorded:
        role, content = m.get("role"), m.get("content") or ""
        if role == "system":
            messages.append(SystemMessage(content))
        elif role == "assistant":
            calls = [{"name": t.get("name"), "args": t.get("args") or {}, "id": t.get("id"), "type": "tool_call"}
                     for t in m.get("tool_calls") or []]
            messages.append(AIMessage(content, tool_calls=calls))
        elif role == "tool":
            messages.append(ToolMessage(content, tool_call_id=m.get("tool_call_id") or ""))
        else:
            messages.append(HumanMessage(content))
    return messages


def replay(llm: Any, call: dict[str, Any], params: dict[str, Any], tracer: Any, trace_id: str) -> ReplayResult:
    warnings: list[str] = []
    model: Any = llm
    offered = call.get("tools_offered") or []
    if offered:
        try:
            model = llm.bind_tools([{"type": "function", "function": t} for t in offered])
        except NotImplementedError:  # BaseChatModel's default: a model without tool calling
            names = ", ".join(str(t.get("name")) for t in offered)
            warnings.append(f"{type(llm).__name__} cannot bind tools: replayed without the tools offered ({names})")
    if params:
        model = model.bind(**params)
    config: dict[str, Any] = {}
    handler = None
    if tracer is not None:  # recorded as a trace of its own, linked to the original
        from llmtrace_langchain import LLMTraceCallbackHandler

        handler = LLMTraceCallbackHandler(tracer)
        config = {"callbacks": [handler], "metadata": {"replay_of": trace_id, "replay_of_span": call["span_id"]}}
    result = model.invoke(_messages(call["input_messages"]), config=config or None)
    text = result.content if isinstance(result, BaseMessage) else result
    calls = [{"id": t.get("id"), "name": t.get("name"), "args": t.get("args")}
             for t in getattr(result, "tool_calls", None) or []]
    return ReplayResult(text=text, tool_calls=calls, trace_id=handler.last_trace_id if handler else None,
                        warnings=warnings)
