"""What users and checks say about a trace (feedback, validations, a trace's own attributes),
checked before it is queued.

Every bad argument is an llmtrace error that says what to pass; nothing is queued that the writer
would have to reject later.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from numbers import Real
from typing import Any

from llmtrace.base.errors import ConfigError, InvalidFeedback
from llmtrace.base.fields import FEEDBACK_ACTIONS

_MAX_ACTION = 64
_MAX_SOURCE = 64


def feedback_fields(action: Any, score: Any, correction: Any, comment: Any, source: Any) -> dict[str, Any]:
    if not isinstance(action, str) or not action.strip():
        raise InvalidFeedback(f"action must be one of {FEEDBACK_ACTIONS} or a custom name, not {action!r}")
    action = action.strip()
    if len(action) > _MAX_ACTION:
        raise InvalidFeedback(f"action names are at most {_MAX_ACTION} characters; got {len(action)}")
    if score is not None:
        score = _finite(score)
    if action == "rated" and score is None:
        raise InvalidFeedback("action 'rated' needs a score, e.g. record_feedback(tid, 'rated', score=4)")
    if action == "edited" and correction is None:
        raise InvalidFeedback("action 'edited' needs the text the user kept: correction='...'")
    for name, value in (("correction", correction), ("comment", comment)):
        if value is not None and not isinstance(value, str):
            raise InvalidFeedback(f"{name} must be text (a str) or None, not {type(value).__name__}")
    if not isinstance(source, str) or not source.strip() or len(source) > _MAX_SOURCE:
        raise InvalidFeedback(f"source must be a short name such as 'user' or 'reviewer', not {source!r}")
    return {"action": action, "score": score, "correction": correction, "comment": comment, "source": source}


def _finite(score: Any) -> float:
    if isinstance(score, bool) or not isinstance(score, Real):
        raise InvalidFeedback(f"score must be a finite number (e.g. 4 or 0.8), not {score!r}")
    try:
        value = float(score)
    except (OverflowError, ValueError):  # an int beyond a float's range
        value = math.inf
    if not math.isfinite(value):
        raise InvalidFeedback(f"score must be a finite number (e.g. 4 or 0.8), not {_short(score)}")
    return value


def validation_fields(rule: Any, passed: Any, detail: Any, span_id: Any) -> dict[str, Any]:
    if not isinstance(rule, str) or not rule.strip():
        raise ConfigError(f"rule must be a non-empty name such as 'dose_range', not {rule!r}")
    if not isinstance(passed, bool):
        raise ConfigError(f"passed must be True or False, not {passed!r}")
    if span_id is not None and not isinstance(span_id, str):
        raise ConfigError(f"span_id must be the span id of a call (a str) or None, not {type(span_id).__name__}")
    return {"rule": rule.strip(), "passed": passed, "detail": detail, "span_id": span_id}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_trace_id(trace_id: Any, max_chars: int = 128, name: str = "trace_id") -> str:
    """A trace id as stored: a non-empty string (or a UUID, as LangChain's run ids are) of at most
    ``max_chars`` characters that every database can store."""
    if isinstance(trace_id, uuid.UUID):
        return str(trace_id)
    if not isinstance(trace_id, str) or not trace_id.strip():
        raise ConfigError(f"{name} must be a non-empty string, such as handler.last_trace_id or the id of "
                          f"tracer.trace(); not {_short_type(trace_id)}")
    if len(trace_id) > max_chars:
        raise ConfigError(f"{name} is at most {max_chars} characters; got {len(trace_id)}")
    try:
        trace_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{name} must be text a database can store; this one holds a lone surrogate") from None
    return trace_id


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    """``tracer.trace(metadata=...)``: a dict with string keys, or None."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise ConfigError(f"metadata is a dict with string keys, e.g. metadata={{'ticket': 'T-42'}}; "
                          f"not {_short_type(metadata)}")
    return dict(metadata)


def check_tags(tags: Any) -> list[str] | None:
    """``tracer.trace(tags=...)``: a list of strings, or None."""
    if tags is None:
        return None
    if isinstance(tags, str) or not isinstance(tags, (list, tuple, set, frozenset)) or not all(
            isinstance(t, str) for t in tags):
        raise ConfigError(f"tags is a list of strings, e.g. tags=['beta']; not {_short_type(tags)}")
    return list(tags)


def _short_type(value: Any) -> str:
    try:
        return _short(value)
    except Exception:  # (an object whose repr raises)
        return f"a {type(value).__name__}"
