"""The SQL tables: llmtrace's own SQLModel registry, ``llmtrace_`` names, numbered migrations.

Metadata (ids, timings, counts, models, statuses) lives in one row per thing; content (prompts,
completions, chunk text, tool args/results, parsed output, error messages) lives apart in
``llmtrace_contents``, one JSON row per owner, so it can expire while the metadata stays.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, DateTime, Float, Index, Integer, String, Table, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 8

_Time = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# MySQL's FLOAT is single precision: DOUBLE keeps latencies and costs exact (and digests stable)
_Float = Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")


def _id(n: int = 64, primary_key: bool = False, index: bool = False, nullable: bool = True):
    return Field(default=None, sa_column=Column(String(n), primary_key=primary_key, index=index,
                                                nullable=nullable and not primary_key))


def _col(type_, index: bool = False):
    return Field(default=None, sa_column=Column(type_, index=index, nullable=True))


class _Base(SQLModel, registry=registry()):
    """Abstract base on a private registry: our tables never mix with the app's SQLModel.metadata."""


class TraceRow(_Base, table=True):
    __tablename__ = "llmtrace_traces"
    # a session's or a user's traces, newest first, without walking every trace (v8)
    __table_args__ = (Index("ix_llmtrace_traces_session", "session_id", "started_at"),
                      Index("ix_llmtrace_traces_user", "user_hash", "started_at"))
    trace_id: str = _id(128, primary_key=True)
    name: str | None = _col(String(256))
    started_at: datetime | None = _col(_Time, index=True)
    ended_at: datetime | None = _col(_Time)
    latency_ms: float | None = _col(_Float)
    status: str | None = _col(String(16))
    user_hash: str | None = _id(64)
    session_id: str | None = _id(128)
    feature: str | None = _id(128)
    team: str | None = _id(128)
    environment: str | None = _id(64)
    release: str | None = _id(64)
    prompt_version: str | None = _id(128)
    tags: str | None = _col(Text)
    meta: str | None = _col(Text)
    capture: str | None = _col(String(16))
    content_purged_at: datetime | None = _col(_Time)  # set when a purge deleted this trace's content (v2)


class SpanRow(_Base, table=True):
    __tablename__ = "llmtrace_spans"
    span_id: str = _id(64, primary_key=True)
    trace_id: str = _id(128, index=True)
    parent_id: str | None = _id(64)
    kind: str | None = _col(String(16))
    name: str | None = _col(String(256))
    started_at: datetime | None = _col(_Time)
    ended_at: datetime | None = _col(_Time)
    latency_ms: float | None = _col(_Float)
    status: str | None = _col(String(16))
    error_type: str | None = _col(String(32))
    link_span_id: str | None = _id(64)  # parser -> the LLM call it consumed
    tool_call_id: str | None = _id(128)
    position: int | None = _col(Integer)  # order of ending within the trace
    error_from: str | None = _id(64)  # (v6) an error that only passed through: the span where it started


class LLMCallRow(_Base, table=True):
    __tablename__ = "llmtrace_llm_calls"
    span_id: str = _id(64, primary_key=True)
    trace_id: str = _id(128, index=True)
    started_at: datetime | None = _col(_Time, index=True)  # stats and alerts read by time (v4)
    model: str | None = _id(128)
    model_version: str | None = _id(128)
    provider: str | None = _id(64)
    params: str | None = _col(Text)
    input_tokens: int | None = _col(Integer)
    output_tokens: int | None = _col(Integer)
    total_tokens: int | None = _col(Integer)
    input_cached_tokens: int | None = _col(Integer)
    input_cache_write_tokens: int | None = _col(Integer)  # (v5) the part of the input written to the cache
    reasoning_tokens: int | None = _col(Integer)
    latency_ms: float | None = _col(_Float)
    ttft_ms: float | None = _col(_Float)
    retrieval_ms: float | None = _col(_Float)
    tools_ms: float | None = _col(_Float)
    cost_usd: float | None = _col(_Float)
    finish_reason: str | None = _col(String(64))
    status: str | None = _col(String(16))
    error_type: str | None = _col(String(32))
    retry_count: int | None = _col(Integer)
    fallback_from: str | None = _col(String(128))
    generations: int | None = _col(Integer)
    streamed: bool | None = _col(Boolean)
    # (v6) JSON list of the retriever spans whose chunks could reach the call (decided when written;
    # NULL on rows of earlier versions, whose reader decided it)
    retrieved_from: str | None = _col(Text)


class ToolCallRow(_Base, table=True):
    __tablename__ = "llmtrace_tool_calls"
    id: str = _id(160, primary_key=True)
    trace_id: str = _id(128, index=True)
    llm_span_id: str | None = _id(64)
    position: int | None = _col(Integer)
    tool_call_id: str | None = _id(128)
    name: str | None = _col(String(256))
    tool_span_id: str | None = _id(64)
    status: str | None = _col(String(16))
    latency_ms: float | None = _col(_Float)


class ChunkRow(_Base, table=True):
    __tablename__ = "llmtrace_chunks"
    __table_args__ = (Index("ix_llmtrace_chunks_source_trace", "source_id", "trace_id"),)
    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    trace_id: str = _id(128, index=True)
    span_id: str = _id(64)
    rank: int | None = _col(Integer)
    source_id: str | None = _col(String(256))
    score: float | None = _col(_Float)
    retriever: str | None = _col(String(256))
    retrieved_at: datetime | None = _col(_Time)


class ValidationRow(_Base, table=True):
    __tablename__ = "llmtrace_validations"
    id: str = _id(64, primary_key=True)
    trace_id: str = _id(128, index=True)
    span_id: str | None = _id(64)
    rule: str | None = _col(String(256))
    passed: bool | None = _col(Boolean)
    source: str | None = _col(String(32))
    at: datetime | None = _col(_Time)


class FeedbackRow(_Base, table=True):
    __tablename__ = "llmtrace_feedback"
    id: str = _id(64, primary_key=True)
    trace_id: str = _id(128, index=True)
    action: str | None = _id(64, index=True)
    score: float | None = _col(_Float)
    source: str | None = _col(String(64))
    at: datetime | None = _col(_Time)


class ContentRow(_Base, table=True):
    """Content of one trace written in one batch: {owner id: {field: value}} as one JSON document.

    Owners are span ids, ``val:<id>`` for validations and ``fb:<id>`` for feedback. Feedback content
    (the labels a user gave) is a row of its own, ``kind`` "labels", on its own retention (v7).
    """

    __tablename__ = "llmtrace_contents"
    id: str = _id(64, primary_key=True)
    trace_id: str = _id(128, index=True)
    body: str | None = _col(_LongText)
    digest: str | None = _col(String(64))
    size: int | None = _col(Integer)
    created_at: datetime | None = _col(_Time)
    expires_at: datetime | None = _col(_Time, index=True)  # purge deletes by it (v2)
    kind: str | None = _col(String(16))  # None: content; "labels": feedback corrections and comments (v7)


class MigrationRow(_Base, table=True):
    __tablename__ = "llmtrace_migrations"
    version: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    name: str | None = _col(String(128))
    applied_at: datetime | None = _col(_Time)


class AuditRow(_Base, table=True):
    """One link of the audit hash chain: the [table, key, digest] of the rows one batch wrote (v3)."""

    __tablename__ = "llmtrace_audit"
    seq: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    at: datetime | None = _col(_Time)
    kind: str | None = _col(String(16))
    entries: str | None = _col(_LongText)
    prev_hash: str | None = _col(String(64))
    hash: str | None = _col(String(64))


class MetaRow(_Base, table=True):
    __tablename__ = "llmtrace_meta"
    key: str = _id(64, primary_key=True)
    value: str | None = _col(Text)


METADATA = _Base.metadata


def _table(row: type[SQLModel]) -> Table:
    return row.__table__  # type: ignore[attr-defined]  # (SQLModel sets it on table=True classes)


traces = _table(TraceRow)
spans = _table(SpanRow)
llm_calls = _table(LLMCallRow)
tool_calls = _table(ToolCallRow)
chunks = _table(ChunkRow)
validations = _table(ValidationRow)
feedback = _table(FeedbackRow)
contents = _table(ContentRow)
migrations = _table(MigrationRow)
audit = _table(AuditRow)
meta = _table(MetaRow)
