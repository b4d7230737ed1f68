"""What the writer thread remembers while traces are live: open spans and a small state per trace.

The recorder (``recorder``) moves spans through these states; the links between records
(``linking``) are decided from them; rows (``rows``) are built from them. They live only on the
writer thread, so nothing here takes a lock. Slotted classes: a busy application keeps thousands
of them alive, and each event touches a few attributes.
"""

from __future__ import annotations

from typing import Any


class Span:
    """A span between its start and its end."""

    __slots__ = ("key", "span_id", "trace", "parent_key", "parent_id", "kind", "name", "t0", "start", "convert", "raw",
                 "loaded", "annot", "llm_children", "retries", "retry_base", "fallback_anchor", "is_root", "task",
                 "ancestors")

    def __init__(self, key: Any, span_id: str, trace: TraceState, parent_key: Any, parent_id: str | None, kind: str,
                 name: str, t0: int, convert: Any, raw: Any) -> None:
        self.key = key  # the framework's id (a UUID's int, or its string id): str() once, here, not per event
        self.span_id = span_id
        self.trace = trace
        self.parent_key = parent_key
        self.parent_id = parent_id
        self.kind = kind
        self.name = name
        self.t0 = t0
        self.convert = convert  # the start payload is converted when first needed (once, off the hot path)
        self.raw = raw
        self.loaded = False
        self.start: dict[str, Any] = {}
        self.annot: dict[str, dict[str, Any]] | None = None  # what events said about this span (LlamaIndex)
        self.llm_children = 0  # LLM calls open directly under this span
        self.retries = 0  # retries the framework announced for this span (LangChain's on_retry)
        self.retry_base = 0  # failed attempts before this one (a re-run of the same work)
        self.fallback_anchor: str | None = None  # the fallback runner this LLM call ran under
        self.is_root = False
        self.task: str | None = None  # the framework's identity of a unit of work it may run again
        self.ancestors: tuple[str, ...] = ()  # LLM calls: span ids of the spans open above it at its start


class CallRef:
    """An LLM call of a live trace, as the links need it once its span has ended."""

    __slots__ = ("span_id", "t0", "t1", "model", "status", "anchor", "consumed", "ancestors")

    def __init__(self, span_id: str, t0: int, t1: int, model: Any, status: str, anchor: str | None,
                 ancestors: tuple[str, ...]) -> None:
        self.span_id = span_id
        self.t0 = t0
        self.t1 = t1
        self.model = model
        self.status = status
        self.anchor = anchor
        self.consumed = False  # a parser step took its answer
        self.ancestors = ancestors


class TraceState:
    """A live trace: its attributes and what its spans left for later spans to link to."""

    __slots__ = ("trace_id", "attrs", "capture", "retrievers", "llm_calls", "requests", "tool_ms", "text_tools",
                 "errors", "failed_tasks", "stream_failed", "roots_open", "ended_ns", "fresh", "strings")

    def __init__(self, trace_id: str, attrs: dict[str, Any], capture: str) -> None:
        self.trace_id = trace_id
        self.attrs = attrs
        self.capture = capture
        self.retrievers: list[tuple[int, str, float]] = []  # (t_end, span id, latency_ms) of retrievers that returned
        self.llm_calls: list[CallRef] = []
        self.requests: dict[str, dict[str, Any]] = {}  # provider tool-call id (or row id) -> pending request
        self.tool_ms: dict[str, float] = {}  # tool-call id -> latency of the tool run
        self.text_tools: dict[str, float] = {}  # LLM span id -> time in the tools it asked for in text
        self.errors: dict[int, list[Any]] = {}  # id(exception) -> [exception, span id where it started, counted]
        self.failed_tasks: dict[tuple[Any, str, str], int] = {}  # (parent, name, task) -> attempts that failed
        self.stream_failed = False  # a model's stream failed after the app had received part of it
        self.roots_open = 0
        self.ended_ns: int | None = None  # when the last root ended (a late child may end after it)
        self.fresh = False  # a generated id that no row can have yet: insert without looking
        self.strings: dict[str, Any] = {}  # long strings stored so far -> where (see store.content)
