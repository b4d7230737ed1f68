"""The exceptions llmtrace raises to its own callers (never into a traced chain).

    LLMTraceError
    ├── ConfigError        bad settings or arguments (also a ValueError)
    ├── InvalidFeedback    a feedback action or score that cannot be recorded (also a ValueError)
    ├── StoreError         the database could not be reached or migrated
    └── TraceNotFound      no trace with that id has been written (also a LookupError)

    DataLossWarning        a warning (not an error: nothing is raised into your program) that
                           records were dropped, quarantined or spilled to a local file; printed on
                           stderr once, rate-limited; silence it with
                           ``warnings.filterwarnings("ignore", category=llmtrace.DataLossWarning)``
"""

from __future__ import annotations


class LLMTraceError(Exception):
    """Base class of every error llmtrace raises."""


class ConfigError(LLMTraceError, ValueError):
    """A setting or argument has a value llmtrace cannot use; the message says what to pass."""


class InvalidFeedback(LLMTraceError, ValueError):
    """A feedback action or score that cannot be recorded."""


class StoreError(LLMTraceError):
    """The database could not be reached, created or migrated."""


class TraceNotFound(LLMTraceError, LookupError):
    """No trace with this id is in the store (yet)."""

    def __init__(self, trace_id: str, detail: str = "") -> None:
        self.trace_id = trace_id
        msg = f"no trace with id {trace_id!r} in the store"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class DataLossWarning(UserWarning):
    """Records did not reach the database: dropped (queue full), quarantined (a row the database
    refused), or spilled to a local file to be written later. Shown once, rate-limited, without
    enabling llmtrace's log lines; ``tracer.health()`` has the counts."""
