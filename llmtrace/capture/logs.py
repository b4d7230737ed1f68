"""One structured log line per LLM call, through loguru, with metadata only (never content).

llmtrace follows loguru's convention for libraries: it logs through ``logger`` and disables its
own name at import, so the lines appear only after ``logger.enable("llmtrace")`` (in whatever
sinks the application has) or ``llmtrace.add_json_sink()`` for an application that has none.
Lines are built lazily: while disabled they cost a function call, not a JSON document.

``LLMTRACE_DEBUG=1`` prints each call (redacted prompt and response, tokens, latency) to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from loguru import logger

from llmtrace.base.config import check_sink
from llmtrace.base.fields import LATENCY_COLUMNS, TOKEN_COLUMNS

SLOW_CALL_MS = float(os.environ.get("LLMTRACE_SLOW_CALL_MS", "30000"))


def add_json_sink(sink: Any = None, level: str = "INFO") -> int:
    """Send llmtrace's lines, one JSON object each, to ``sink`` (stderr, a path, a file) and turn them on.

    Returns loguru's handler id (``logger.remove(id)`` takes it away). The application's own
    handlers are left as they are.
    """
    check_sink(sink)
    handler_id = logger.add(sys.stderr if sink is None else sink, level=level, format="{message}",
                            filter=lambda record: record["name"].startswith("llmtrace"))
    logger.enable("llmtrace")
    return handler_id


def call_level(row: dict[str, Any]) -> str:
    if row["status"] == "error":
        return "ERROR"
    if row["error_type"] == "content_filter" or row.get("finish_reason") == "content_filter":
        return "ERROR"
    if (row.get("retry_count") or row.get("fallback_from") or row.get("finish_reason") == "length"
            or (row.get("latency_ms") or 0) > SLOW_CALL_MS):
        return "WARNING"
    return "INFO"


def call_fields(row: dict[str, Any], trace_attrs: dict[str, Any], user_hash: str | None, tools: list[dict],
                at_iso: str, cost: float | None) -> dict[str, Any]:
    return {
        "event": "llm_call", "timestamp": at_iso, "trace_id": row["trace_id"], "span_id": row["span_id"],
        "model": row["model"], "model_version": row["model_version"], "provider": row["provider"],
        **{column: row[column] for column in TOKEN_COLUMNS.values()},
        "cached_tokens": row["input_cached_tokens"],  # (the line's name since its first version)
        **{column: _r(row[column]) for column in LATENCY_COLUMNS.values()},
        "cost_usd": cost, "status": row["status"], "error_type": row["error_type"],
        "finish_reason": row["finish_reason"], "retry_count": row["retry_count"], "fallback_from": row["fallback_from"],
        "tools_called": len(tools), "tools": tools, "user_id": user_hash, "feature": trace_attrs.get("feature"),
        "team": trace_attrs.get("team"), "prompt_version": trace_attrs.get("prompt_version"),
    }


_lazy = logger.opt(lazy=True)  # (opt() builds a new logger object on every call)


def emit(level: str, fields_fn: Callable[[], dict[str, Any]]) -> None:
    """One line, built only if some sink takes it (loguru asks once per line, through its public API)."""
    _lazy.log(level, "{}", lambda: json.dumps(fields_fn(), ensure_ascii=False, default=str))


def debug_enabled() -> bool:
    return os.environ.get("LLMTRACE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def debug_print(row: dict[str, Any], content: dict[str, Any]) -> None:
    """The developer's view of one call, on stderr (content as stored: redacted)."""
    out = [f"── llmtrace: {row['model']} → {row['model_version'] or '?'}  {row['status']}  "
           f"{_r(row['latency_ms'])} ms  ttft {_r(row['ttft_ms'])}  tokens {row['input_tokens']}/{row['output_tokens']}"]
    for m in content.get("input_messages") or []:
        if isinstance(m, dict):
            out.append(f"  [{m.get('role')}] {m.get('content') if m.get('content') else m.get('tool_calls')}")
    out.append(f"  => {content.get('raw_completion')!s}")
    for req in content.get("tool_requests") or []:
        out.append(f"  => tool call {req}")
    print("\n".join(out), file=sys.stderr, flush=True)


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
