"""The neutral events integrations hand to the Tracer, and the trace context.

On the caller's thread an integration builds one small tuple per framework callback: an op code,
a monotonic timestamp, ids, and *references* to the framework's objects plus a ``convert`` function
of its own. ``convert(raw)`` runs later on the writer thread and returns plain fields (see
``_recorder``): serialization never happens on the caller's thread.

    (START, t_ns, span_id, parent_id, kind, name, root, convert, raw, metadata, tags)
    (END,   t_ns, span_id, convert, raw, extra)
    (ERROR, t_ns, span_id, exc, extra)
    (RETRY, t_ns, span_id)
    (FEEDBACK | VALIDATION, t_ns, trace_id, fields)
    (ANNOTATE, t_ns, span_id, convert, raw)   convert(raw) -> {"kind", "start": {...}, "end": {...}}
"""

from __future__ import annotations

import contextvars
import itertools
import os
import random
import time
from typing import Any

START, END, ERROR, RETRY, FEEDBACK, VALIDATION, ANNOTATE = range(7)

_seq = itertools.count()
_node = random.getrandbits(32)
_cache: list = [-1, "", -1, "", f"{_node:08x}"]  # last millisecond, its text; counter's high bits, text; node


def _new_node() -> None:  # a forked child must not mint the ids its parent mints
    global _seq, _node, _cache
    _seq, _node = itertools.count(), random.getrandbits(32)
    _cache = [-1, "", -1, "", f"{_node:08x}"]


os.register_at_fork(after_in_child=_new_node)


def ordered_id() -> str:
    """A UUIDv7 (time first, then a counter, RFC 9562 method 1): rows keyed by it append to the end
    of a B-tree index instead of landing on a random page, which on SQLite is several times cheaper
    per insert. A per-process counter and random node make it unique without a system call
    (``uuid4`` reads os.urandom, which releases the GIL on the caller's thread). The text of the
    millisecond and of the counter's high bits is made only when they change."""
    ms = time.time_ns() // 1_000_000
    c = next(_seq) & 0x3FFFFFFFFFF  # 42 bits: 12 in rand_a, 14 + 16 in rand_b, then the node's 32
    cache = _cache
    if cache[0] != ms:
        h = f"{ms & 0xFFFFFFFFFFFF:012x}"
        cache[0], cache[1] = ms, f"{h[:8]}-{h[8:]}-7"
    high = c >> 16
    if cache[2] != high:
        cache[2], cache[3] = high, f"{high >> 14:03x}-{0x8000 | high & 0x3FFF:04x}-"
    return f"{cache[1]}{cache[3]}{c & 0xFFFF:04x}{cache[4]}"


SPAN_KINDS = ("chain", "llm", "tool", "retriever", "parser", "embedding", "agent", "rerank",
              "validation", "other")

# Trace attributes read from a framework's per-request metadata (RunnableConfig["metadata"]).
META_PREFIX = "llmtrace_"
TRACE_ATTRS = ("trace_id", "trace_name", "user_id", "session_id", "feature", "team", "prompt_version",
               "environment", "release", "tags", "capture")


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


# The trace opened by ``with tracer.trace():`` in this thread / task (copied into child tasks).
current_trace: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "llmtrace_current_trace", default=None
)


def trace_attrs_from_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
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


def system_prompt_of(messages: list[dict[str, Any]] | None) -> str | None:
    """The system prompt as the model saw it: the system messages' text, joined."""
    parts = [m["content"] if isinstance(m.get("content"), str) else str(m.get("content"))
             for m in messages or () if isinstance(m, dict) and m.get("role") == "system"
             and m.get("content") is not None]
    return "\n\n".join(parts) if parts else None
