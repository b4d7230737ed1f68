"""What content becomes before it is stored, on the writer thread.

Secrets go in every capture mode, PII in ``redacted`` (the default), then the user's processors
run; long strings a trace already stored become references (``store.content``); a field past
``max_field_chars`` is kept as its head plus its length and digest. Content waits per trace as
JSON until its batch is written, then becomes one row per trace with its expiry. ``metadata``
capture stores none of it. A processor that fails, fails closed: a placeholder, never the value.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from llmtrace.base.privacy import Processor, run_processors
from llmtrace.base.serialize import digest, digest_utf8, dumps, dumps_utf8, join_object, to_jsonable
from llmtrace.capture.redact import Redactor
from llmtrace.store.audit import CONTENT
from llmtrace.store.content import forget, share
from llmtrace.store.inserts import Rows

FAILED = "[PROCESSOR_FAILED]"


class Content:
    """The content policy of one Tracer: capture mode, expiry, size cap, redaction and processors."""

    def __init__(self, *, capture: str, ttl_days: float | None, max_field_chars: int, processors: list[Processor],
                 hash_key: Callable[[], str], redaction_hash: bool, on_problem: Callable[[str, Exception], None]):
        self.capture = capture  # the default; a trace may ask for another
        self._ttl_ns = int(ttl_days * 86_400e9) if ttl_days else None
        self._cap = max_field_chars
        self.processors = processors
        self._hash_key = hash_key
        self._redaction_hash = redaction_hash
        self._problem = on_problem
        self._redactors: dict[str, Redactor] = {}
        self._params_seen: dict[tuple, str] = {}

    def queue(self, owner_id: str, trace_id: str, capture: str, strings: dict[str, Any] | None,
              fields: dict[str, Any], rows: Rows) -> None:
        """Queue ``fields`` of ``owner_id`` for storage. ``strings``: a live trace's long strings
        stored so far (shared as references), or None for a trace that ended already."""
        if capture == "metadata" or not fields:
            return
        if strings is not None and not (self.processors and capture == "redacted"):
            try:  # redacted, with what the trace stored already as references, in one walk
                fields = self._redactor(capture).shared(fields, owner_id, strings)
            except Exception as exc:  # fail closed
                self._problem("processor", exc)
                forget(owner_id, strings)
                fields = dict.fromkeys(fields, FAILED)
        else:
            fields = self.processed(capture, fields)
            if strings is not None:  # after the user's processors, which never see references
                fields = share(fields, owner_id, strings)
        # Kept as JSON until the batch is written: nested dicts and lists waiting in a batch are
        # containers the garbage collector walks (and promotes) on the application's thread. UTF-8,
        # as orjson makes it: the batch's owners are joined into one document without decoding each.
        data = dumps_utf8(fields)
        if len(data) > self._cap and len(data.decode()) > self._cap:
            if strings is not None:
                forget(owner_id, strings)
            data = dumps_utf8({k: self._capped(v) for k, v in fields.items()})
        rows.pending_content.setdefault(trace_id, {})[owner_id] = data

    def processed(self, capture: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` through the redactor and (in ``redacted`` mode) the user's processors."""
        chain: list[Processor] = [self._redactor(capture)]
        if capture == "redacted":
            chain += self.processors
        return run_processors(fields, chain, lambda exc: self._problem("processor", exc))

    def params(self, capture: str, params: dict | None) -> str | None:
        """Invocation params as stored: scrubbed JSON, remembered per value (they repeat call after call)."""
        if params is None:
            return None
        try:
            key = (capture, *[(k, v, type(v)) for k, v in params.items()])  # (1, 1.0 and True are equal)
            found = self._params_seen.get(key)
        except TypeError:  # an unhashable value (a list of stop words, a response format): no memo
            return dumps(self.scrub(capture, to_jsonable(params)))
        if found is None:
            if len(self._params_seen) >= 256:
                self._params_seen.clear()
            found = self._params_seen[key] = dumps(self.scrub(capture, to_jsonable(params)))
        return found

    def scrub(self, capture: str, value: Any) -> Any:
        """Metadata values that may carry content (params, trace metadata, tags) get the same treatment."""
        try:
            return self._redactor(capture if capture != "metadata" else "redacted").value(value)
        except Exception as exc:  # fail closed
            self._problem("redact", exc)
            return FAILED

    def finish(self, rows: Rows, audit: bool) -> None:
        """One content row per trace per batch: {owner id: {field: value}} in one JSON document."""
        now = time.time_ns()
        expires = now + self._ttl_ns if self._ttl_ns else None
        for trace_id, owners in rows.pending_content.items():
            body = join_object(owners)
            if audit:
                rows.content_digests.extend([CONTENT, o, digest_utf8(data)] for o, data in owners.items())
            # Time-ordered ids append to the primary-key B-tree instead of splitting it at random.
            # Nothing here may release the GIL (os.urandom, hashlib on > 2 KB): each release makes
            # the writer wait for the app's thread and then preempt it, a hand-off the app pays for.
            # The digest column is left for the audit chain, which hashes what it needs in one pass.
            rows.contents.append({"id": f"{now:016x}{random.getrandbits(48):012x}", "trace_id": trace_id,
                                  "body": body, "digest": None, "size": len(body), "created_at": now,
                                  "expires_at": expires})
        rows.pending_content = {}

    def _redactor(self, capture: str) -> Redactor:
        """Secrets go in every mode; PII in ``redacted`` (the default)."""
        found = self._redactors.get(capture)
        if found is None:
            key = self._hash_key() if self._redaction_hash else None
            found = self._redactors[capture] = Redactor(pii=capture != "full", hash_key=key)
        return found

    def _capped(self, value: Any) -> Any:
        text = dumps(value)
        return _capped_marker(text, self._cap) if len(text) > self._cap else value


def _capped_marker(text: str, cap: int) -> dict:
    return {"__capped__": True, "length": len(text), "sha256": digest(text), "head": text[: min(cap, 10_000)]}
