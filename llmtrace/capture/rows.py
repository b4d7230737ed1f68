"""Rows of a batch, built from spans that ended and the links decided for them.

Kept apart from the span state machine (``recorder``) and the link decisions (``linking``) so
that a column can change without reading either. Times are stored as wall-clock nanoseconds
(a ``perf_counter_ns`` reading plus one offset) and made into datetimes by ``store.inserts``.
Also here, because they read the same rows: the structured log line of each LLM call, live
alerts, the cost in that line, and the debug print.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from llmtrace.base.cost import PriceBook
from llmtrace.base.fields import TOKEN_COLUMNS
from llmtrace.base.privacy import hash_user_id
from llmtrace.base.serialize import dumps, to_jsonable
from llmtrace.capture import logs
from llmtrace.capture.content import Content
from llmtrace.capture.live_alerts import LiveAlerts
from llmtrace.capture.state import Span, TraceState
from llmtrace.store.inserts import Rows


class RowBuilder:
    """Builds the rows of one Tracer's records (``content`` decides what their content becomes)."""

    def __init__(self, *, wall_offset_ns: int, content: Content, hash_key: Callable[[], str],
                 environment: str | None, release: str | None) -> None:
        self.wall = wall_offset_ns  # wall-clock ns = a perf_counter_ns reading + this
        self.content = content
        self._hash_key = hash_key
        self._defaults = {"environment": environment, "release": release}
        self.prices: PriceBook | None = None  # the cost in log lines
        self.alerts: LiveAlerts | None = None  # when the tracer evaluates alert rules as calls are written
        self.debug = logs.debug_enabled()
        self.on_problem: Callable[[str, Exception], None] | None = None

    def span(self, rows: Rows, span: Span, t: int, latency: float, status: str, error: dict | None,
             link: str | None, error_from: str | None) -> None:
        rows.spans.append({
            "span_id": span.span_id, "trace_id": span.trace.trace_id, "parent_id": span.parent_id, "kind": span.kind,
            "name": (self.content.name(span.trace.capture, span.name) or span.kind)[:256],
            "started_at": self.wall + span.t0, "ended_at": self.wall + t,
            "latency_ms": latency, "status": status, "error_type": error["type"] if error else None,
            "link_span_id": link, "tool_call_id": span.start.get("tool_call_id"), "position": None,
            "error_from": error_from,
        })

    def llm_call(self, rows: Rows, span: Span, latency: float, out: dict[str, Any], status: str,
                 error: dict | None, links: dict[str, Any], first_ns: int | None, streamed: bool,
                 params: Any) -> dict[str, Any]:
        trace, start = span.trace, span.start
        tokens = out.get("tokens") or {}
        retrieved = links["retrieved_from"]
        row = {
            "span_id": span.span_id, "trace_id": trace.trace_id, "started_at": self.wall + span.t0,
            "model": short(start.get("model"), 128), "model_version": short(out.get("model_version"), 128),
            "provider": short(start.get("provider") or out.get("provider"), 64),
            "params": self.content.params(trace.capture, params),
            **{column: tokens.get(key) for key, column in TOKEN_COLUMNS.items()}, "latency_ms": latency,
            "ttft_ms": (first_ns - span.t0) / 1e6 if first_ns else None,
            "retrieval_ms": links["retrieval_ms"], "tools_ms": links["tools_ms"], "cost_usd": None,
            "finish_reason": short(out.get("finish_reason"), 64), "status": status,
            "error_type": error["type"] if error else None, "retry_count": links["retry_count"],
            "fallback_from": short(links["fallback_from"], 128), "generations": out.get("n_generations"),
            "streamed": streamed,
            # always a list (empty: no retriever had returned): NULL marks rows of an llmtrace that
            # decided this link on the read side (see read.document)
            "retrieved_from": dumps(retrieved) if retrieved else "[]",
        }
        rows.llm_calls.append(row)
        return row

    def log_call(self, row: dict[str, Any], trace: TraceState, tool_ids: list[str]) -> None:
        """The call's log line (built only if a sink takes it) and the live alert rules."""
        logs.emit(logs.call_level(row), lambda: logs.call_fields(
            row, trace.attrs, self.user_hash(trace), [{"tool_call_id": i, "latency_ms": trace.tool_ms.get(i)}
                                                      for i in tool_ids if i in trace.tool_ms],
            iso(row["started_at"]), self._cost(row)))
        if self.alerts is not None:
            self.alerts.observe_row(row, trace.attrs, row["started_at"] / 1e9)

    def tool_requests(self, rows: Rows, span: Span, requests: list[dict[str, Any]]) -> None:
        """One row per tool call the model asked for, waiting for the tool that answers it."""
        trace = span.trace
        for pos, req in enumerate(requests):
            row_id = f"{span.span_id}:{pos}"
            rows.tool_calls.append({
                "id": row_id, "trace_id": trace.trace_id, "llm_span_id": span.span_id, "position": pos,
                "tool_call_id": short(req.get("id"), 128), "name": short(self.content.name(trace.capture, req.get("name")), 256),
                "tool_span_id": None, "status": "requested", "latency_ms": None,
            })
            trace.requests[req.get("id") or row_id] = {"row_id": row_id, "name": req.get("name"), "id": req.get("id"),
                                                       "matched": False}

    def tool_answered(self, rows: Rows, row_id: str, span: Span, status: str, latency: float) -> None:
        rows.tool_updates.append({"b_id": row_id, "tool_span_id": span.span_id, "status": status, "latency_ms": latency})

    def tool_run(self, rows: Rows, span: Span, call_id: str | None, llm_span_id: str | None, status: str,
                 latency: float) -> None:
        """A tool no request named: joined to the call that asked in text, or to none."""
        rows.tool_calls.append({
            "id": f"{span.span_id}:tool", "trace_id": span.trace.trace_id, "llm_span_id": llm_span_id,
            "position": None, "tool_call_id": short(call_id, 128),
            "name": short(self.content.name(span.trace.capture, span.name), 256),
            "tool_span_id": span.span_id, "status": status, "latency_ms": latency,
        })

    def chunks(self, rows: Rows, span: Span, t: int, chunks: list[dict[str, Any]]) -> None:
        for rank, chunk in enumerate(chunks):
            rows.chunks.append({
                "trace_id": span.trace.trace_id, "span_id": span.span_id, "rank": rank,
                "source_id": short(chunk.get("source_id"), 256), "score": as_float(chunk.get("score")),
                "retriever": short(self.content.name(span.trace.capture, span.name), 256), "retrieved_at": self.wall + t,
            })

    def trace(self, rows: Rows, trace: TraceState, span: Span, t: int, latency: float, status: str) -> None:
        a = trace.attrs
        tags = a.get("tags")
        capture = trace.capture
        rows.traces.append({
            "trace_id": trace.trace_id, "name": short(self.content.name(capture, a.get("trace_name") or span.name), 256),
            "started_at": self.wall + span.t0, "ended_at": self.wall + t, "latency_ms": latency,
            "status": status, "user_hash": self.user_hash(trace),
            "session_id": short(a.get("session_id"), 128), "feature": short(a.get("feature"), 128),
            "team": short(a.get("team"), 128),
            "environment": short(a.get("environment") or self._defaults["environment"], 64),
            "release": short(a.get("release") or self._defaults["release"], 64),
            "prompt_version": short(a.get("prompt_version"), 128),
            "tags": dumps(self.content.scrub(capture, list(tags) if isinstance(tags, (list, tuple, set)) else [tags]))
            if tags else None,
            "meta": dumps(self.content.scrub(capture, to_jsonable(a["metadata"]))) if a.get("metadata") else None,
            "capture": capture, "content_purged_at": None,
            "_fresh": trace.fresh,
        })
        trace.fresh = False

    def late_trace(self, rows: Rows, trace: TraceState, t: int, failed: bool) -> None:
        """A span that ended after its trace's roots: the trace lasts until then, and failed if it did.
        Merged into the trace's row (``store.inserts`` keeps the latest end and an error status)."""
        rows.traces.append({"trace_id": trace.trace_id, "ended_at": self.wall + t,
                            "status": "error" if failed else None, "_fresh": False})

    def validation(self, rows: Rows, trace_id: str, span_id: str | None, rule: str, passed: bool, source: str,
                   t: int) -> str:
        vid = uuid.uuid4().hex
        if not passed and rule != "schema":  # (a schema failure was logged as the parse error)
            logs.emit("ERROR", lambda: {"event": "validation_failed", "trace_id": trace_id, "span_id": span_id,
                                     "rule": rule, "source": source})
        rows.validations.append({"id": vid, "trace_id": trace_id, "span_id": span_id, "rule": short(rule, 256),
                                 "passed": bool(passed), "source": source, "at": self.wall + t})
        return vid

    def feedback(self, rows: Rows, trace_id: str, f: dict[str, Any], t: int) -> str:
        fid = uuid.uuid4().hex
        rows.feedback.append({"id": fid, "trace_id": trace_id, "action": f["action"], "score": f.get("score"),
                              "source": short(f.get("source"), 64), "at": self.wall + t})
        return fid

    def user_hash(self, trace: TraceState) -> str | None:
        user = trace.attrs.get("user_id")
        if user is None:
            return None
        try:
            key = self._hash_key()
        except Exception as exc:  # (the key lives in the database, which is away): the trace is kept
            if self.on_problem is not None:  # without its user, never with the raw id
                self.on_problem("user id not hashed: the hash key is not readable (set LLMTRACE_HASH_KEY)", exc)
            return None
        return hash_user_id(user, key)

    def _cost(self, row: dict[str, Any]) -> float | None:
        if self.prices is None:
            return None
        try:
            return self.prices.cost(model=row["model"], version=row["model_version"], provider=row["provider"],
                                    input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                                    cached_tokens=row["input_cached_tokens"],
                                    cache_write_tokens=row["input_cache_write_tokens"])
        except Exception:
            return None


def iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000 // 1000:06d}Z"


def short(value: Any, n: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:n]


def as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and abs(out) != float("inf") else None
