"""What content becomes before it is stored, on the writer thread.

Secrets go in every capture mode, PII in ``redacted`` (the default), then the user's processors
run (in ``full`` too); long strings a trace already stored become references (``store.content``);
a field past ``max_field_chars`` is kept as its head plus its length and digest. Content waits per
trace as JSON until its batch is written, then becomes one row per trace with its expiry; the
labels a user gave (feedback corrections and comments) get a row of their own, on their own
retention (kept unless ``label_ttl_days``), so an eval set outlives the prompts. ``metadata``
capture stores none of it. Trace metadata, tags and names get the same rules (``scrub``,
``name``). A processor that fails, fails closed: a placeholder, never the value.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from llmtrace.base.privacy import LABEL_OWNER, Processor, run_processors
from llmtrace.base.serialize import digest, digest_utf8, dumps, dumps_utf8, join_object, to_jsonable
from llmtrace.capture.redact import Redactor
from llmtrace.store.audit import CONTENT, CONTENT_ROWS, owners_digest
from llmtrace.store.content import forget, share
from llmtrace.store.inserts import Rows
from llmtrace.store.retention import LABELS

FAILED = "[PROCESSOR_FAILED]"
_NAMES_MAX = 4096


class Content:
    """The content policy of one Tracer: capture mode, expiry, size cap, redaction and processors."""

    def __init__(self, *, capture: str, ttl_days: float | None, max_field_chars: int, processors: list[Processor],
                 hash_key: Callable[[], str], redaction_hash: bool, on_problem: Callable[[str, Exception], None],
                 label_ttl_days: float | None = None):
        self.capture = capture  # the default; a trace may ask for another
        self._ttl_ns = int(ttl_days * 86_400e9) if ttl_days else None
        self._label_ttl_ns = int(label_ttl_days * 86_400e9) if label_ttl_days else None
        self._cap = max_field_chars
        self.processors = processors
        self._hash_key = hash_key
        self._redaction_hash = redaction_hash
        self._problem = on_problem
        self._redactors: dict[str, Redactor] = {}
        self._params_seen: dict[tuple, str] = {}
        self._names: dict[tuple[str, str], str] = {}

    def queue(self, owner_id: str, trace_id: str, capture: str, strings: dict[str, Any] | None,
              fields: dict[str, Any], rows: Rows) -> None:
        """Queue ``fields`` of ``owner_id`` for storage. ``strings``: a live trace's long strings
        stored so far (shared as references), or None for a trace that ended already."""
        if capture == "metadata" or not fields:
            return
        if owner_id.startswith(LABEL_OWNER):
            strings = None  # a label outlives the trace's content: it never refers to it, nor it to the label
        if strings is not None and not self.processors:
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
        owners = rows.pending_content.setdefault(trace_id, {})
        before = owners.get(owner_id)
        owners[owner_id] = data
        rows.pending_bytes += len(data) - (len(before) if before is not None else 0)

    def processed(self, capture: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` through the redactor, then the user's processors (in every mode that stores content)."""
        return run_processors(fields, [self._redactor(capture), *self.processors],
                              lambda exc: self._problem("processor", exc))

    def params(self, capture: str, params: dict | None) -> str | None:
        """Invocation params as stored: scrubbed JSON, remembered per value (they repeat call after call)."""
        if params is None:
            return None
        try:
            key = (capture, *[(k, v, type(v)) for k, v in params.items()])  # (1, 1.0 and True are equal)
            found = self._params_seen.get(key)
        except TypeError:  # an unhashable value (a list of stop words, a response format): no memo
            return dumps(self._rules(capture, to_jsonable(params)))
        if found is None:
            if len(self._params_seen) >= 256:
                self._params_seen.clear()
            found = self._params_seen[key] = dumps(self._rules(capture, to_jsonable(params)))
        return found

    def scrub(self, capture: str, value: Any) -> Any:
        """Trace metadata and tags (values and keys) get the content rules of ``capture`` (in
        ``metadata`` capture, those of ``redacted``), then the user's processors, as a field named
        ``metadata``."""
        out = self._rules(capture, value)
        if self.processors and out != FAILED:
            out = run_processors({"metadata": out}, self.processors,
                                 lambda exc: self._problem("processor", exc))["metadata"]
        return out

    def name(self, capture: str, name: Any) -> str | None:
        """A name that is stored as an identifier (a run, trace, retriever or tool name, a rule) after
        the rules ``scrub`` applies: apps name steps after user data too."""
        if name is None:
            return None
        try:
            text = name if type(name) is str else str(name)
        except Exception:
            return FAILED
        key = (capture, text)
        found = self._names.get(key)
        if found is None:
            found = self.scrub(capture, text)
            if not isinstance(found, str):
                found = FAILED
            if len(self._names) >= _NAMES_MAX:
                self._names.clear()
            self._names[key] = found
        return found

    def _rules(self, capture: str, value: Any) -> Any:
        """The built-in redaction of ``capture`` (``metadata`` capture: ``redacted``), no processors."""
        try:
            return self._redactor(capture if capture != "metadata" else "redacted").value(value)
        except Exception as exc:  # fail closed
            self._problem("redact", exc)
            return FAILED

    def finish(self, rows: Rows, audit: bool) -> None:
        """One content row per trace per batch: {owner id: {field: value}} in one JSON document; the
        trace's labels (feedback corrections and comments) in a row of their own, kept on their own
        retention."""
        now = time.time_ns()
        expires = now + self._ttl_ns if self._ttl_ns else None
        label_expires = now + self._label_ttl_ns if self._label_ttl_ns else None
        for trace_id, owners in rows.pending_content.items():
            labels = {o: d for o, d in owners.items() if o.startswith(LABEL_OWNER)}
            content = {o: d for o, d in owners.items() if not o.startswith(LABEL_OWNER)} if labels else owners
            for group, kind, until in ((content, None, expires), (labels, LABELS, label_expires)):
                if group:
                    self._row(rows, trace_id, group, kind, now, until, audit)
        rows.pending_content = {}
        rows.pending_bytes = 0

    @staticmethod
    def _row(rows: Rows, trace_id: str, owners: dict[str, bytes], kind: str | None, now: int, expires: int | None,
             audit: bool) -> None:
        body = join_object(owners)
        # Time-ordered ids append to the primary-key B-tree instead of splitting it at random.
        # Nothing here may release the GIL (os.urandom, hashlib on > 2 KB): each release makes
        # the writer wait for the app's thread and then preempt it, a hand-off the app pays for.
        # The digest column is left for the audit chain, which hashes what it needs in one pass.
        row_id = f"{now:016x}{random.getrandbits(48):012x}"
        if audit:  # each owner's content, and which owners the row holds (so a deleted row is missed)
            rows.content_digests.extend([CONTENT, o, digest_utf8(data)] for o, data in owners.items())
            rows.content_digests.append([CONTENT_ROWS, row_id, owners_digest(owners)])
        rows.contents.append({"id": row_id, "trace_id": trace_id, "body": body, "digest": None, "size": len(body),
                              "created_at": now, "expires_at": expires, "kind": kind})

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
