"""llmtrace: every LLM call as a nine-signal record in SQL tables, feedback by trace id.

    tracer = llmtrace.Tracer()              # sqlite:///llmtrace.db, or LLMTRACE_DATABASE_URL
    tracer.get_trace(trace_id).to_dict()    # the SIGNALS.md document
    tracer.record_feedback(trace_id, "edited", correction="...")
    llmtrace.Store(url).find_traces(...)    # read a recorded database from any process, no writer

The public names below are imported when first used, so ``import llmtrace`` (and ``llmtrace --help``)
does not load SQLAlchemy until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from loguru import logger as _logger

from llmtrace.base.errors import ConfigError, DataLossWarning, InvalidFeedback, LLMTraceError, StoreError, TraceNotFound
from llmtrace.capture.events import current_trace_id

if TYPE_CHECKING:
    from llmtrace._tracer import Tracer, TraceScope, default_tracer
    from llmtrace.base.alerting import Alert, AlertRules
    from llmtrace.base.fields import FEEDBACK_ACTIONS
    from llmtrace.capture.logs import add_json_sink
    from llmtrace.capture.redact import PresidioRedactor, Redactor, regex_processor
    from llmtrace.read.document import Trace
    from llmtrace.read.facade import Store

__version__ = "0.1.0"

# loguru's convention for libraries: silent until the app calls logger.enable("llmtrace").
_logger.disable("llmtrace")

_LAZY = {
    "FEEDBACK_ACTIONS": "llmtrace.base.fields", "Tracer": "llmtrace._tracer", "TraceScope": "llmtrace._tracer",
    "default_tracer": "llmtrace._tracer", "Alert": "llmtrace.base.alerting", "AlertRules": "llmtrace.base.alerting",
    "add_json_sink": "llmtrace.capture.logs", "PresidioRedactor": "llmtrace.capture.redact",
    "Redactor": "llmtrace.capture.redact", "regex_processor": "llmtrace.capture.redact",
    "Trace": "llmtrace.read.document", "Store": "llmtrace.read.facade",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmtrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Alert",
    "AlertRules",
    "ConfigError",
    "DataLossWarning",
    "FEEDBACK_ACTIONS",
    "InvalidFeedback",
    "LLMTraceError",
    "PresidioRedactor",
    "Redactor",
    "Store",
    "StoreError",
    "Trace",
    "TraceNotFound",
    "TraceScope",
    "Tracer",
    "add_json_sink",
    "current_trace_id",
    "default_tracer",
    "regex_processor",
]
