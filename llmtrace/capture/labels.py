"""What users and checks say about a trace (feedback, validations), checked before it is queued.

Every bad argument is an llmtrace error that says what to pass; nothing is queued that the writer
would have to reject later.
"""

from __future__ import annotations

import math
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
