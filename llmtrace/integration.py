"""The contract between llmtrace and its framework integrations (``llmtrace_langchain``,
``llmtrace_llamaindex``, or your own).

An integration translates its framework's callbacks into the neutral events of this module and
hands them to a ``Channel``; everything else (linking, redaction, rows, SQL) happens in the core,
on the writer thread. On the caller's thread it does as little as it can: ids, a monotonic
timestamp (``now()``), references to the framework's objects, and a ``convert`` function of its own
that turns them into plain fields later, on the writer thread.

    channel = llmtrace.integration.connect(tracer)
    channel.submit((START, now(), run_id, parent_id, "llm", name, root, convert_start, raw, metadata, tags))
    channel.submit((END, now(), run_id, convert_end, response, {"first_token_ns": t_first}))

The event shapes are documented (and typed) in ``llmtrace.capture.events`` and re-exported here.
``convert`` functions return the fields the recorder reads; the helpers below are the ones both
shipped integrations use, so that a usage block, a secret-looking parameter or a tool spec reads the
same whichever framework reported it.

A channel whose tracer was closed drops what it is given (once logged), never blocks and never raises.
An integration registers a replayer in the ``llmtrace.replay`` entry-point group: a module with
``can_replay(llm) -> bool`` and ``replay(llm, call, params, tracer, trace_id) -> ReplayResult``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmtrace.base.ids import ordered_id
from llmtrace.base.serialize import to_jsonable
from llmtrace.capture.events import (
    ANNOTATE,
    END,
    ERROR,
    FEEDBACK,
    RETRY,
    SPAN_KINDS,
    START,
    VALIDATION,
    AnnotateEvent,
    Convert,
    EndEvent,
    ErrorEvent,
    Event,
    Fields,
    RetryEvent,
    SpanKey,
    SpanKind,
    StartEvent,
    TraceContext,
    current_trace,
    current_trace_id,
    last_root,
    name_of,
    trace_attrs_from_metadata,
)
from llmtrace.capture.extract import (
    TOKEN_FIELDS,
    count,
    get,
    is_secret_key,
    json_schema_of,
    raw_completion,
    retries_reported,
    tokens_from_usage,
    tool_args,
    tool_spec,
    without_secrets,
)
from llmtrace.read.replay import ReplayResult

if TYPE_CHECKING:
    from llmtrace._tracer import Tracer

now: Callable[[], int] = time.perf_counter_ns
"""The clock every event's timestamp comes from (monotonic nanoseconds)."""


class Channel:
    """Where an integration submits its events. ``submit`` appends to the tracer's bounded queue (it
    is the writer's own method, bound: a callback pays one call); ``problem`` counts and reports a
    failure inside the integration without raising it into the application."""

    __slots__ = ("tracer", "submit", "_problem")

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        writer = tracer._writer
        self.submit: Callable[[Event], None] = writer.submit
        self._problem = writer.problem

    def problem(self, where: str, exc: Exception) -> None:
        try:
            self._problem(where, exc)
        except Exception:  # reporting must not fail into the app either
            pass

    @property
    def closed(self) -> bool:
        return self.tracer.closed


def connect(tracer: Tracer) -> Channel:
    """The channel an integration submits ``tracer``'s events to."""
    return Channel(tracer)


def begin_root(trace_id: str) -> None:
    """Note that a root run of trace ``trace_id`` started in this context (see ``current_trace_id``)."""
    last_root.set(trace_id)


__all__ = [
    "ANNOTATE", "END", "ERROR", "FEEDBACK", "RETRY", "SPAN_KINDS", "START", "VALIDATION",
    "AnnotateEvent", "Channel", "Convert", "EndEvent", "ErrorEvent", "Event", "Fields", "ReplayResult",
    "RetryEvent", "SpanKey", "SpanKind", "StartEvent", "TraceContext",
    "TOKEN_FIELDS", "begin_root", "connect", "count", "current_trace", "current_trace_id", "get", "is_secret_key",
    "json_schema_of", "name_of", "now", "ordered_id", "raw_completion", "retries_reported", "to_jsonable",
    "tokens_from_usage", "tool_args", "tool_spec",
    "trace_attrs_from_metadata", "without_secrets",
]
