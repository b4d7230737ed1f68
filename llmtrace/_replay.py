"""Replay a recorded LLM call with its exact input snapshot, or re-parse its raw completion.

Frameworks are imported only here, lazily, when a LangChain chat model or a LlamaIndex LLM is
passed in: the core still imports none at module load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmtrace._classify import describe
from llmtrace._errors import LLMTraceError

_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|SSN|IBAN|IP|API_KEY|BEARER_TOKEN|JWT|PRIVATE_KEY|PASSWORD|SECRET|"
                          r"PROCESSOR_FAILED|REDACTED|PERSON|LOCATION)(?::[0-9a-f]{10})?\]")
_GEN_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop", "response_format",
               "frequency_penalty", "presence_penalty", "tool_choice")


class ReplayError(LLMTraceError):
    """The recorded call cannot be replayed (its content expired or was never captured)."""


@dataclass
class Replay:
    recorded: Any
    new: Any
    same: bool
    model: str | None
    new_tool_calls: list[dict] = field(default_factory=list)
    error: dict | None = None
    warnings: list[str] = field(default_factory=list)
    trace_id: str | None = None  # the replay's own trace, when recorded

    def __str__(self) -> str:
        head = "same answer" if self.same else ("model error" if self.error else "different answer")
        lines = [f"replay ({head}) with {self.model}", f"  recorded: {self.recorded!r}", f"  new:      {self.new!r}"]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class Reparse:
    raw: Any
    parsed: Any
    error: str | None
    recorded_parsed: Any
    recorded_error: str | None

    @property
    def fixed(self) -> bool:
        """True when the recorded parse failed and this one succeeds."""
        return self.recorded_error is not None and self.error is None


def pick_call(doc: dict[str, Any], call: int | str) -> dict[str, Any]:
    calls = doc["llm_calls"]
    if not calls:
        raise ReplayError(f"trace {doc['trace_id']} has no LLM call to replay")
    if isinstance(call, str):
        for c in calls:
            if c["span_id"] == call:
                return c
        raise ReplayError(f"no LLM call with span id {call!r} in trace {doc['trace_id']}")
    try:
        return calls[call]
    except IndexError:
        raise ReplayError(f"trace {doc['trace_id']} has {len(calls)} LLM call(s); there is no call {call}") from None


def _warnings(c: dict[str, Any]) -> list[str]:
    found = sorted({f"[{m.group(1)}]" for m in _PLACEHOLDER.finditer(str(c["input_messages"]))})
    return [f"the recorded input was redacted ({', '.join(found)} stand where the values were)"] if found else []


def replay(doc: dict[str, Any], llm: Any, call: int | str = -1, tracer: Any = None) -> Replay:
    c = pick_call(doc, call)
    if not isinstance(c["input_messages"], list):
        reason = c.get("content_missing") or "not stored"
        raise ReplayError(f"the input of call {c['span_id']} is {reason}: there is nothing exact to replay")
    module = type(llm).__module__
    params = {k: v for k, v in (c["params"] or {}).items() if k in _GEN_PARAMS and v is not None}
    out = Replay(recorded=c["raw_completion"], new=None, same=False, model=type(llm).__name__, warnings=_warnings(c))
    try:
        if module.startswith("llama_index"):
            out.new, out.trace_id = _llamaindex(llm, c, tracer, doc["trace_id"])
        else:
            out.new, out.new_tool_calls, out.trace_id = _langchain(llm, c, params, tracer, doc["trace_id"])
    except Exception as exc:  # the model failed: that is a result, not a crash
        out.error = describe(exc)
        return out
    out.same = out.new == out.recorded
    return out


def _langchain(llm: Any, c: dict[str, Any], params: dict, tracer: Any, original: str):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    messages = []
    for m in c["input_messages"]:
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
    model = llm
    if c["tools_offered"] and hasattr(llm, "bind_tools"):
        model = llm.bind_tools([{"type": "function", "function": t} for t in c["tools_offered"]])
    if params:
        model = model.bind(**params)
    config: dict[str, Any] = {}
    trace_id = None
    if tracer is not None:  # recorded as a trace of its own, linked to the original
        from llmtrace_langchain import LLMTraceCallbackHandler

        handler = LLMTraceCallbackHandler(tracer)
        config = {"callbacks": [handler], "metadata": {"replay_of": original, "replay_of_span": c["span_id"]}}
    result = model.invoke(messages, config=config or None)
    if tracer is not None:
        trace_id = handler.last_trace_id
    calls = [{"id": t.get("id"), "name": t.get("name"), "args": t.get("args")} for t in getattr(result, "tool_calls", [])]
    return result.content, calls, trace_id


def _llamaindex(llm: Any, c: dict[str, Any], tracer: Any, original: str) -> tuple[Any, str | None]:
    from llama_index.core.llms import ChatMessage

    messages = [ChatMessage(role=m.get("role") or "user", content=m.get("content") or "") for m in c["input_messages"]]

    def call() -> Any:
        if len(messages) == 1 and messages[0].role.value == "user" and not getattr(llm.metadata, "is_chat_model", True):
            return llm.complete(messages[0].content).text  # a completion model saw one prompt
        return llm.chat(messages).message.content

    if tracer is None:
        return call(), None
    from llmtrace_llamaindex import LLMTraceInstrumentor

    instrumentor = LLMTraceInstrumentor(tracer).instrument()
    try:
        with tracer.trace(name="replay", metadata={"replay_of": original, "replay_of_span": c["span_id"]}) as t:
            text = call()
    finally:
        instrumentor.uninstrument()
    return text, t.trace_id


def reparse(doc: dict[str, Any], parser: Any, call: int | str = -1) -> Reparse:
    c = pick_call(doc, call)
    raw = c["raw_completion"]
    if raw is None:
        raise ReplayError(f"the raw completion of call {c['span_id']} is {c.get('content_missing') or 'missing'}")
    fn = getattr(parser, "parse", None) or getattr(parser, "invoke", None) or parser
    try:
        parsed, error = fn(raw), None
    except Exception as exc:
        parsed, error = None, f"{type(exc).__name__}: {exc}"
    if hasattr(parsed, "model_dump"):
        parsed = parsed.model_dump()
    return Reparse(raw=raw, parsed=parsed, error=error, recorded_parsed=c["parsed"], recorded_error=c["parse_error"])
