"""llmtrace: every LLM call as a nine-signal record in SQL tables, feedback by trace id.

    tracer = llmtrace.Tracer()              # sqlite:///llmtrace.db, or LLMTRACE_DATABASE_URL
    tracer.get_trace(trace_id).to_dict()    # the SIGNALS.md document
    tracer.record_feedback(trace_id, "edited", correction="...")
"""

from loguru import logger as _logger

from llmtrace._alerts import Alert, AlertRules
from llmtrace._errors import (
    ConfigError,
    InvalidFeedback,
    LLMTraceError,
    StoreError,
    TraceNotFound,
)
from llmtrace._logs import add_json_sink
from llmtrace._read import Trace
from llmtrace._redact import PresidioRedactor, Redactor, regex_processor
from llmtrace._tracer import FEEDBACK_ACTIONS, Tracer, TraceScope, default_tracer

__version__ = "0.1.0"

# loguru's convention for libraries: silent until the app calls logger.enable("llmtrace").
_logger.disable("llmtrace")

__all__ = [
    "Alert",
    "AlertRules",
    "FEEDBACK_ACTIONS",
    "PresidioRedactor",
    "Redactor",
    "ConfigError",
    "InvalidFeedback",
    "LLMTraceError",
    "StoreError",
    "Trace",
    "add_json_sink",
    "TraceNotFound",
    "TraceScope",
    "Tracer",
    "default_tracer",
    "regex_processor",
]
