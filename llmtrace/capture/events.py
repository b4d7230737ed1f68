"""The neutral events integrations hand to the Tracer, and the trace context.

On the caller's thread an integration builds one small tuple per framework callback: an op code,
a monotonic timestamp, ids, and *references* to the framework's objects plus a ``convert`` function
of its own. ``convert(raw)`` runs later on the writer thread and returns plain fields (see
``recorder``): serialization never happens on the caller's thread. Tuples, not objects: building
one costs a few dozen nanoseconds; the aliases below type them for mypy at no cost at run time.

    (START, t_ns, span_key, parent_key, kind, name, root, convert, raw, metadata, tags[, task])
    (END,   t_ns, span_key, convert, raw, extra)
    (ERROR, t_ns, span_key, exc, extra)
    (RETRY, t_ns, span_key)
    (FEEDBACK | VALIDATION, t_ns, trace_id, fields)
    (ANNOTATE, t_ns, span_key, convert, raw)   convert(raw) -> {"kind", "start": {...}, "end": {...}}

``task`` (optional): the framework's identity of a unit of work it may run again (LangGraph's
checkpoint namespace of a node): a span with the same parent, name and task as one that failed is
its retry.

``extra`` on END/ERROR: ``first_token_ns`` (the first chunk that carried content or a tool-call
delta), ``streamed`` (True when the call streamed, even if no chunk carried content),
``streamed_text`` (what a stream delivered), ``inputs`` (the real inputs, when the start only saw a
placeholder); on ERROR also ``response``: ``(convert, raw)`` of what the span produced before it
failed (a stream's chunks, the answer its client could not parse), converted like an END's output.

What ``convert`` functions return is read by ``llmtrace.capture.recorder``: for any span
``inputs``, ``outputs``, ``kind``, ``status``/``error`` (a result that reports failure); for LLM
calls ``model``, ``provider``, ``params``, ``input_messages``, ``tools_offered`` (start) and
``model_version``, ``tokens``, ``finish_reason``, ``raw_completion``, ``tool_requests``,
``n_generations``, ``generations``, ``parsed`` (the client parsed the answer itself),
``sdk_retries`` (retries the provider's client made and reported); for tools ``tool_call_id``,
``tool_name``, ``interrupted`` (paused, no result yet); for retrievers ``chunks``; for any step
that turned an answer into a structured value ``parsed`` or ``parse_error``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal
from uuid import UUID

from llmtrace.base.fields import META_PREFIX, TRACE_ATTRS

START: Final = 0
END: Final = 1
ERROR: Final = 2
RETRY: Final = 3
FEEDBACK: Final = 4
VALIDATION: Final = 5
ANNOTATE: Final = 6

SpanKind = Literal["chain", "llm", "tool", "retriever", "parser", "embedding", "agent", "rerank", "validation", "other"]
SPAN_KINDS: tuple[SpanKind, ...] = ("chain", "llm", "tool", "retriever", "parser", "embedding", "agent", "rerank",
                                    "validation", "other")

SpanKey = UUID | str | int  # the framework's own span id (a LangChain run id, a LlamaIndex span id)
Fields = dict[str, Any]
Convert = Callable[[Any], Fields]  # runs on the writer thread: the framework's objects -> plain fields


class TraceContext:
    """What a root span knows about its trace: id and attributes (raw user id, hashed on the writer)."""

    __slots__ = ("trace_id", "span_id", "name", "attrs", "generated")

    def __init__(self, trace_id: str, span_id: str | None = None, name: str | None = None,
                 attrs: dict[str, Any] | None = None, generated: bool = False) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.name = name
        self.attrs = attrs or {}
        self.generated = generated  # True when llmtrace made the id up (so no row can have it yet)


StartEvent = (tuple[Literal[0], int, SpanKey, SpanKey | None, str, Any, TraceContext | None, Convert | None, Any,
                    Mapping[str, Any] | None, Sequence[str] | None]
              | tuple[Literal[0], int, SpanKey, SpanKey | None, str, Any, TraceContext | None, Convert | None, Any,
                      Mapping[str, Any] | None, Sequence[str] | None, str | None])
EndEvent = tuple[Literal[1], int, SpanKey, Convert | None, Any, Fields | None]
ErrorEvent = tuple[Literal[2], int, SpanKey, BaseException | None, Fields | None]
RetryEvent = tuple[Literal[3], int, SpanKey]
FeedbackEvent = tuple[Literal[4], int, str, Fields]
ValidationEvent = tuple[Literal[5], int, str, Fields]
AnnotateEvent = tuple[Literal[6], int, SpanKey, Convert, Any]
Event = StartEvent | EndEvent | ErrorEvent | RetryEvent | FeedbackEvent | ValidationEvent | AnnotateEvent

# The trace opened by ``with tracer.trace():`` in this thread / task (copied into child tasks).
current_trace: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "llmtrace_current_trace", default=None
)
# The trace id of the last root run an integration started in this thread / task.
last_root: contextvars.ContextVar[str | None] = contextvars.ContextVar("llmtrace_last_root", default=None)


def current_trace_id() -> str | None:
    """The trace id of the request running in this context (thread or asyncio task): the innermost
    ``with tracer.trace()``, else the last root run an integration started in this context (so
    after ``chain.invoke(...)`` returns, the id of that run's trace). ``None`` if there is none.

    Unlike ``handler.last_trace_id``, which every thread shares, this is safe in a web server."""
    ctx = current_trace.get()
    if ctx is not None:
        return ctx.trace_id
    return last_root.get()


def trace_attrs_from_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``llmtrace_*`` keys of a request's metadata, as trace attributes."""
    if not metadata:
        return {}
    out = {}
    for key in TRACE_ATTRS:
        value = metadata.get(META_PREFIX + key)
        if value is not None:
            out[key] = value
    return out


def name_of(value: Any, default: str) -> str:
    """A span name from what a callback passed: a name, or a serialized object ({"name"} / {"id": [...]})."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        if value.get("name"):
            return str(value["name"])
        ident = value.get("id")
        if isinstance(ident, (list, tuple)) and ident:
            return str(ident[-1])
    return default
