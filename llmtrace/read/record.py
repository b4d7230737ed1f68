"""A typed view of the SIGNALS.md document: ``trace.llm_calls[0].tokens.input`` beside ``to_dict()``.

Frozen dataclasses named as SIGNALS.md names the fields, built from the document the reader
assembled (the same values, never recomputed), so IDEs and type checkers know what a trace holds.
Content fields keep their JSON shape (``Any``); a field the document does not have is ``None``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Tokens:
    input: int | None
    output: int | None
    total: int | None
    input_cached: int | None
    input_cache_write: int | None
    reasoning: int | None


@dataclass(frozen=True)
class Latency:
    total: float | None
    ttft: float | None
    retrieval: float | None
    tools: float | None
    generation: float | None


@dataclass(frozen=True)
class Error:
    type: str
    message: str | None
    hint: str | None


@dataclass(frozen=True)
class Chunk:
    source_id: str | None
    score: float | None
    rank: int | None
    content: Any
    retriever: str | None
    span_id: str | None


@dataclass(frozen=True)
class ToolCall:
    id: str | None
    name: str | None
    args: Any
    result: Any
    status: str | None
    latency_ms: float | None
    span_id: str | None
    error: Any


@dataclass(frozen=True)
class Validation:
    rule: str
    passed: bool
    detail: Any
    at: str | None
    source: str | None
    span_id: str | None


@dataclass(frozen=True)
class Feedback:
    action: str
    score: float | None
    correction: str | None
    comment: str | None
    source: str | None
    at: str | None


@dataclass(frozen=True)
class LLMCall:
    span_id: str
    name: str | None
    started_at: str | None
    ended_at: str | None
    model: str | None
    model_version: str | None
    provider: str | None
    params: Any
    system_prompt: str | None
    input_messages: Any
    tools_offered: Any
    retrieved: list[Chunk]
    tokens: Tokens
    latency_ms: Latency
    streamed: bool | None
    cost_usd: float | None
    finish_reason: str | None
    raw_completion: Any
    generations: Any
    tool_calls: list[ToolCall]
    parsed: Any
    parse_error: str | None
    parser: str | None
    validations: list[Validation]
    status: str | None
    error: Error | None
    retry_count: int | None
    fallback_from: str | None
    content_missing: str | None


@dataclass(frozen=True)
class Span:
    span_id: str
    parent_id: str | None
    kind: str
    name: str | None
    started_at: str | None
    ended_at: str | None
    latency_ms: float | None
    status: str | None
    error: Error | None
    inputs: Any
    outputs: Any


@dataclass(frozen=True)
class Totals:
    llm_calls: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    errors: int


def build(cls: type[T], data: Any) -> T:
    """``cls`` from a document dict: nested records and lists of records built too; a field the
    dict lacks is None (a document written by an older llmtrace)."""
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        raw = data.get(f.name) if isinstance(data, dict) else None
        values[f.name] = _convert(hints[f.name], raw)
    return cls(**values)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    found = _HINTS.get(cls)
    if found is None:
        found = _HINTS[cls] = typing.get_type_hints(cls)
    return found


def _convert(hint: Any, raw: Any) -> Any:
    if raw is None:
        return [] if typing.get_origin(hint) is list else None
    record = _record_type(hint)
    if record is not None:
        return build(record, raw) if isinstance(raw, dict) else None
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        item_record = _record_type(item)
        if item_record is not None:
            return [build(item_record, x) for x in raw if isinstance(x, dict)] if isinstance(raw, list) else []
    return raw


def _record_type(hint: Any) -> type | None:
    """The record class in ``hint`` (``Tokens``, ``Error | None``), if there is one."""
    candidates = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
    for c in candidates:
        if isinstance(c, type) and dataclasses.is_dataclass(c):
            return c
    return None


_UnionType = type(int | None)
