"""Classify an exception into the error types of SIGNALS.md, with a one-line hint on what to do.

Works from the exception's class names, HTTP status and message, so the core needs no provider SDK.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = ("rate_limit", "timeout", "context_length", "content_filter", "auth",
               "server_error", "invalid_request", "cancelled", "other")

HINTS = {
    "rate_limit": "The provider throttled the call: add retries with backoff, lower concurrency, or raise the quota.",
    "timeout": "The call took too long: raise the client timeout, shorten the prompt, or retry.",
    "context_length": "The prompt exceeded the model's context window: trim history or retrieved chunks, or use a longer-context model.",
    "content_filter": "The provider's safety filter blocked the input or output: review the prompt and the flagged content.",
    "auth": "The provider rejected the credentials: check the API key, its permissions and the organisation/project.",
    "server_error": "The provider failed on its side: retry with backoff or fall back to another model.",
    "invalid_request": "The provider rejected the request: check the model name, parameters and message format.",
    "cancelled": "The run was stopped before it finished (a stream the consumer stopped reading, or a cancelled task).",
    "other": "See the error message; the exception type is kept in the message.",
}

_MESSAGE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("context_length", ("context_length", "context length", "maximum context", "too many tokens",
                        "prompt is too long", "reduce the length", "token limit")),
    ("content_filter", ("content_filter", "content filter", "content management policy", "safety system",
                        "blocked by safety", "responsible ai")),
    ("rate_limit", ("rate limit", "ratelimit", "rate_limit", "too many requests", "quota", "429")),
    ("auth", ("api key", "api_key", "unauthorized", "authentication", "permission denied", "401", "403")),
    ("timeout", ("timed out", "timeout", "deadline exceeded")),
    ("server_error", ("internal server error", "service unavailable", "bad gateway", "overloaded",
                      "500", "502", "503")),
    ("invalid_request", ("invalid request", "bad request", "invalid_request", "400", "404", "422")),
)

_NAME_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_limit", ("ratelimit",)),
    ("timeout", ("timeout",)),
    ("context_length", ("contextlength", "contextwindow")),
    ("content_filter", ("contentfilter", "contentpolicy", "safety")),
    ("auth", ("authentication", "permissiondenied", "unauthorized", "auth")),
    # the connection failed or the provider dropped it mid-answer (httpx's RemoteProtocolError on a
    # stream cut short, ReadError, ConnectError; the builtin ConnectionError; requests' and urllib3's)
    ("server_error", ("internalserver", "serviceunavailable", "apiconnection", "servererror", "overloaded",
                      "remoteprotocol", "networkerror", "readerror", "writeerror", "connecterror", "connectionerror",
                      "incompleteread", "protocolerror", "chunkedencoding")),
    ("invalid_request", ("badrequest", "invalidrequest", "notfound", "unprocessable")),
)


def _status(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "http_status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                return value
    return None


def classify(exc: BaseException) -> str:
    names = {c.__name__.lower() for c in type(exc).__mro__}
    if names & {"generatorexit", "cancellederror", "keyboardinterrupt"}:
        return "cancelled"
    status = _status(exc)
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status in (408, 504) or names & {"timeouterror"}:
        return "timeout"
    message = str(exc).lower()
    for kind, needles in _MESSAGE_RULES[:2]:  # specific 400s before the generic status mapping
        if any(n in message for n in needles):
            return kind
    if status is not None and status >= 500:
        return "server_error"
    if status is not None and 400 <= status < 500:
        return "invalid_request"
    joined = " ".join(names)
    for kind, needles in _NAME_RULES:
        if any(n in joined for n in needles):
            return kind
    for kind, needles in _MESSAGE_RULES:
        if any(n in message for n in needles):
            return kind
    return "other"


def describe(exc: BaseException) -> dict[str, Any]:
    """The record's ``error`` object: type, message (content) and hint."""
    kind = classify(exc)
    try:
        message = f"{type(exc).__name__}: {exc}"
    except Exception:
        message = type(exc).__name__
    return {"type": kind, "message": message[:4_000], "hint": HINTS[kind]}


def is_parse_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says an answer could not be turned into the structured value asked for:
    LangChain's parsers, pydantic's and json's errors, LangChain agents' structured output."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"OutputParserException", "ValidationError", "JSONDecodeError", "StructuredOutputError"})
