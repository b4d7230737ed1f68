"""What never reaches disk: secret-named values, raw user ids (the detectors are in ``base.detect``).

The redaction processor chain over content fields plugs in here (``Processor``: a plain callable
``fields -> fields`` run on the writer thread; one that raises fails closed).

The user-id hash key is a secret: whoever holds it can hash guessed ids and compare. It comes from
``LLMTRACE_HASH_KEY`` (kept outside the database: the recommended setup, required in production),
or else is made once per database and kept in ``llmtrace_meta``, a row ``llmtrace db harden``
hides from its reader role.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

Processor = Callable[[dict[str, Any]], dict[str, Any]]

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|passwd|authorization|credential|private[_-]?key)",
                         re.IGNORECASE)
# Token *counts* are not secrets.
# (Anchored: "session_token" ends in "n_token" and is a secret.)
_NOT_SECRET = re.compile(r"^(max|min|num|n)_?(\w+_)?tokens?$|tokens?_(count|limit)$|^logit_bias$|_tokens$",
                         re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # keys repeat endlessly ("role", "content", "type", ...)
def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _NOT_SECRET.search(key)


USER_HASH_KEY = "user_hash_key"  # the meta row holding the key (when none is configured)
LABEL_OWNER = "fb:"  # content owners that are labels a user gave (feedback): kept on their own retention


def hash_user_id(user_id: Any, key: str) -> str:
    """A keyed hash: stable per database/key so one user's traces stay joinable, never reversible."""
    mac = hmac.new(key.encode(), str(user_id).encode("utf-8", "backslashreplace"), hashlib.sha256)
    return "u_" + mac.hexdigest()[:24]


def is_user_hash(value: str) -> bool:
    """Whether ``value`` is already a stored user hash (``u_`` + 24 hex digits), not a raw id."""
    return len(value) == 26 and value.startswith("u_") and all(c in "0123456789abcdef" for c in value[2:])


def run_processors(fields: dict[str, Any], processors: list[Processor],
                   on_failure: Callable[[Exception], None]) -> dict[str, Any]:
    for proc in processors:
        try:
            fields = proc(fields)
        except Exception as exc:  # fail closed: nothing unprocessed is stored
            on_failure(exc)
            return {k: "[PROCESSOR_FAILED]" for k in fields}
    return fields
