"""Names and shapes of the record shared by every layer (SIGNALS.md)."""

from __future__ import annotations

from typing import Any

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
