"""Names and shapes of the record shared by every layer (SIGNALS.md)."""

from __future__ import annotations

from typing import Any

# Where each part of an LLM call's record lives: document key -> llm_calls column. Rows, the
# document, log lines and queries read these tables instead of spelling the pairs again.
TOKEN_COLUMNS = {"input": "input_tokens", "output": "output_tokens", "total": "total_tokens",
                 "input_cached": "input_cached_tokens", "input_cache_write": "input_cache_write_tokens",
                 "reasoning": "reasoning_tokens"}
LATENCY_COLUMNS = {"total": "latency_ms", "ttft": "ttft_ms", "retrieval": "retrieval_ms", "tools": "tools_ms"}
# trace document key -> llm_traces column, where they differ
TRACE_COLUMN_OF = {"user_id": "user_hash", "metadata": "meta"}
# Columns no version of llmtrace writes (spans.position, llm_calls.cost_usd: costs are priced when
# read, contents.digest: the audit chain digests content itself). They stay: the audit chain digests
# every column of a row as stored, so dropping one would break the chains of existing databases.
RESERVED_COLUMNS = {"llmtrace_spans": ("position",), "llmtrace_llm_calls": ("cost_usd",),
                    "llmtrace_contents": ("digest",)}

ACTIONS = ("accepted", "edited", "retried", "abandoned")  # what a user finally did with an answer
FEEDBACK_ACTIONS = (*ACTIONS, "rated")  # and custom names
# A trace's status once its root run ended (until then it has no row to filter on: SIGNALS.md)
STATUSES = ("ok", "error")
ALERT_RULES = ("cost_spike", "latency_spike", "error_rate", "context_limit")

# Trace attributes read from a framework's per-request metadata (RunnableConfig["metadata"]) as
# ``llmtrace_<name>`` keys.
META_PREFIX = "llmtrace_"
TRACE_ATTRS = ("trace_id", "trace_name", "user_id", "session_id", "feature", "team", "prompt_version",
               "environment", "release", "tags", "capture")


def system_prompt_of(messages: list[dict[str, Any]] | None) -> str | None:
    """The system prompt as the model saw it: the system messages' text, joined. A system message
    in content blocks (Anthropic's prompt caching marks a block with ``cache_control``) is the text
    of its text blocks."""
    parts = [text_of(m["content"]) for m in messages or ()
             if isinstance(m, dict) and m.get("role") == "system" and m.get("content") is not None]
    return "\n\n".join(parts) if parts else None


def text_of(content: Any) -> str:
    """The text of message content: a string, or the text of its text blocks (a list of blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b if isinstance(b, str) else str(b.get("text") or "")
                       for b in content if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text"))
    return str(content)
