"""Replay a recorded LLM call with its exact input snapshot, or re-parse its raw completion.

The core imports no framework: the integration packages run the model. Each registers a module in
the ``llmtrace.replay`` entry-point group with ``can_replay(llm) -> bool`` and
``replay(llm, call, params, tracer, trace_id) -> ReplayResult`` (see ``llmtrace.integration``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmtrace.base.classify import describe
from llmtrace.base.detect import PLACEHOLDER_NAMES
from llmtrace.base.errors import LLMTraceError

# What redaction writes (the redactor's detectors, its markers, Presidio's entity types), keyed or not
_PLACEHOLDER = re.compile(r"\[(" + "|".join(map(re.escape, PLACEHOLDER_NAMES)) + r")(?::[0-9a-f]{10})?\]")
_GEN_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop", "response_format",
               "frequency_penalty", "presence_penalty", "tool_choice")


class ReplayError(LLMTraceError):
    """The recorded call cannot be replayed (its content expired or was never captured)."""


REPLAY_ENTRY_POINTS = "llmtrace.replay"


@dataclass
class ReplayResult:
    """What an integration's ``replay`` returns: the new answer, the tool calls it asked for, the trace
    it was recorded as (when a tracer was given), and anything the user should know about the run."""

    text: Any
    tool_calls: list[dict] = field(default_factory=list)
    trace_id: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Replay:
    """A replayed call: the recorded and the new completion side by side, the tool calls the new
    answer asked for, the model's error if it failed, and what to know about the run (``warnings``)."""

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
    """A parser run again over a recorded raw completion, beside what was recorded (``fixed``: the
    recorded parse failed and this one did not)."""

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
    params = {k: v for k, v in (c["params"] or {}).items() if k in _GEN_PARAMS and v is not None}
    replayer = _replayer_for(llm)
    out = Replay(recorded=c["raw_completion"], new=None, same=False, model=type(llm).__name__, warnings=_warnings(c))
    try:
        result = replayer(llm, c, params, tracer, doc["trace_id"])
    except Exception as exc:  # the model failed: that is a result, not a crash
        out.error = describe(exc)
        return out
    out.new, out.new_tool_calls, out.trace_id = result.text, result.tool_calls, result.trace_id
    out.warnings += result.warnings
    out.same = out.new == out.recorded
    return out


def _replayer_for(llm: Any) -> Any:
    """The installed integration that can run ``llm`` (found by entry point: the core imports no framework)."""
    from importlib.metadata import entry_points

    names = []
    for ep in sorted(entry_points(group=REPLAY_ENTRY_POINTS), key=lambda e: e.name):
        names.append(ep.name)
        try:
            module = ep.load()
        except Exception:  # an integration whose framework is not installed cannot run this model anyway
            continue
        if module.can_replay(llm):
            return module.replay
    installed = f" (installed: {', '.join(names)})" if names else ""
    raise ReplayError(f"no installed llmtrace integration can run a {type(llm).__module__}.{type(llm).__name__}"
                      f"{installed}: pass a LangChain chat model (pip install llmtrace-langchain) or a LlamaIndex LLM "
                      "(pip install llmtrace-llamaindex)")


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
