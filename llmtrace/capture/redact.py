"""Redaction: one walk over content that replaces detected values with typed placeholders.

Every path that redacts goes through ``Walker``: the recording path (``Redactor.shared``, which
also turns repeated long strings into references in the same walk), the public ``llmtrace.Redactor``,
trace metadata, tags and names (``capture.content``), ``regex_processor`` and ``PresidioRedactor``.
The walk fails closed: strings (dict keys too) go through ``text``; numbers long enough to be a card
are read as text; tuples, sets and any other container are walked (a set becomes a list); any other
object is walked as its JSON form (``to_jsonable``); a cycle becomes ``[CYCLE]`` and anything nested
deeper than ``MAX_DEPTH`` becomes ``[TOO_DEEP]``. Nothing comes back as it went in unless it was
looked at.

What is detected is ``llmtrace.base.detect``'s business. Fast paths here (a cache of texts seen
lately, the detectors' pre-checks, a tuple walked once) only make this cheaper; tests compare them
with the plain path (``Redactor(...).plain_text``) on the leak corpus and random text.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

from llmtrace.base.detect import Detector, find, find_extra, fold
from llmtrace.base.errors import ConfigError
from llmtrace.base.privacy import Processor, is_secret_key
from llmtrace.base.serialize import to_jsonable
from llmtrace.store.content import DEPTH as _SHARE_DEPTH
from llmtrace.store.content import MIN_CHARS as _SHARE_MIN
from llmtrace.store.content import share_text

__all__ = ["MAX_DEPTH", "Detector", "PresidioRedactor", "Redactor", "Walker", "as_processor", "processor_list",
           "regex_processor"]

MAX_DEPTH = 64  # containers nested deeper become [TOO_DEEP] (the recording path cuts at 32 before this)
TOO_DEEP = "[TOO_DEEP]"
CYCLE = "[CYCLE]"
SECRET = "[SECRET]"
_PLAIN = frozenset((int, float, bool, type(None)))
_CARD_SIZED = (10_000_000, 10**20)  # ints with 8 to 20 digits are read as text: a card or phone number given as a number
_CACHE_MAX = 8192  # strings seen lately -> their redacted form (prompts, chunks, roles repeat)
_TUPLES_MAX = 256


class Walker:
    """The one walk over content: ``text`` (a subclass's) for every string, the same rules for
    every container, at any depth. ``value(v)`` redacts one value; ``walker(fields)`` a processor's
    ``fields`` dict (its keys are field names and are kept)."""

    secret_keys = False  # values under secret-looking keys become [SECRET] (the Redactor with secrets on)

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._tuples: dict[int, tuple[tuple, tuple]] = {}

    def text(self, text: str) -> str:
        raise NotImplementedError

    def value(self, value: Any) -> Any:
        return self._walk(value, 0, None, None, [], False)

    def __call__(self, fields: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(fields, Mapping):
            raise ConfigError(f"a processor takes the fields dict {{field: value}}, not {type(fields).__name__}; "
                              "for one value use .value(...)")
        stack: list[int] = []
        return {k: self._walk(v, 0, None, None, stack, False) for k, v in fields.items()}

    def shared(self, fields: dict[str, Any], owner: str, seen: dict[str, Any]) -> dict[str, Any]:
        """``self(fields)``, with the long strings its trace stored already as references
        (``store.content.share``), in the same walk. A tuple is taken as read-only here (the
        integrations' frozen tool lists): it is walked once per object."""
        root = (None, owner)
        stack: list[int] = []
        return {k: self._walk(v, 0, seen, (root, k), stack, True) for k, v in fields.items()}

    def _text(self, text: str) -> str:
        found = self._cache.get(text)
        if found is None:
            found = self.text(text)
        return found

    def _number(self, value: int) -> Any:
        text = str(value)
        out = self._text(text)
        return value if out == text else out

    def _walk(self, value: Any, depth: int, seen: dict[str, Any] | None, path: tuple | None, stack: list[int],
              frozen: bool) -> Any:
        cls = type(value)
        if cls is str:
            out = self._cache.get(value)
            if out is None:
                out = self.text(value)
            return out if seen is None or path is None or len(out) < _SHARE_MIN else share_text(out, seen, path)
        if cls in _PLAIN:
            return value if cls is not int or not _CARD_SIZED[0] <= abs(value) < _CARD_SIZED[1] else self._number(value)
        kind: str
        if cls is dict:
            kind = "dict"
        elif cls is list:
            kind = "list"
        elif cls is tuple:
            kind = "tuple"
        elif isinstance(value, str):  # a str subclass (LangChain's TextAccessor): stored as plain text
            return self._walk(str.__str__(value), depth, seen, path, stack, frozen)
        elif isinstance(value, Mapping):
            kind = "dict"
        elif isinstance(value, tuple):
            kind = "tuple"
        elif isinstance(value, (list, set, frozenset)):
            kind = "list"
        elif isinstance(value, bool):
            return bool(value)
        elif isinstance(value, int):  # (an IntEnum, say): by its value
            return self._walk(int(value), depth, seen, path, stack, frozen)
        elif isinstance(value, float):
            return float(value)
        else:  # a model, a dataclass, bytes, any object: walked as what it is stored as, in its place
            return self._walk(to_jsonable(value), depth, seen, path, stack, frozen)
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        oid = id(value)
        if oid in stack:
            return CYCLE
        memo_ok = frozen and kind == "tuple" and depth == 0
        if memo_ok:
            memo = self._tuples.get(oid)
            if memo is not None and memo[0] is value:
                return memo[1]
        # Strings are shared down to the depth store.content.share goes, in the dicts and lists it
        # would see in this walk's output (a tuple stays a tuple there, and is not looked into).
        child = seen if depth < _SHARE_DEPTH and kind != "tuple" else None
        stack.append(oid)
        try:
            if kind == "dict":
                return self._dict(value, depth, child, path, stack, frozen)
            cache = self._cache
            items = []
            for i, v in enumerate(value):
                if type(v) is str:  # (the common leaf, without a call per string)
                    out = cache.get(v)
                    if out is None:
                        out = self.text(v)
                    items.append(out if child is None or len(out) < _SHARE_MIN else share_text(out, child, (path, i)))
                else:
                    items.append(self._walk(v, depth + 1, child, (path, i) if child is not None else None, stack, frozen))
            if kind == "list":
                return items
            result = tuple(items)
            if memo_ok:
                if len(self._tuples) >= _TUPLES_MAX:
                    self._tuples.clear()
                self._tuples[oid] = (value, result)
            return result
        finally:
            stack.pop()

    def _dict(self, value: Mapping, depth: int, seen: dict[str, Any] | None, path: tuple | None,
              stack: list[int], frozen: bool) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        cache = self._cache
        secret_keys = self.secret_keys
        for k, v in value.items():
            if type(k) is str:
                key = cache.get(k)
                if key is None:
                    key = self.text(k)
                if secret_keys and is_secret_key(k) and v is not None and not (type(v) is str and not v):
                    v = SECRET
            else:
                key = self._key(k)
            if key is not k and key in out:  # two keys redacted alike ([EMAIL]): neither value is lost
                base, n = key, 2
                while key in out:
                    key, n = f"{base}#{n}", n + 1
            if type(v) is str:  # (the common leaf, without a call per string)
                text = cache.get(v)
                if text is None:
                    text = self.text(v)
                out[key] = text if seen is None or len(text) < _SHARE_MIN else share_text(text, seen, (path, key))
            else:
                out[key] = self._walk(v, depth + 1, seen, (path, key) if seen is not None else None, stack, frozen)
        return out

    def _key(self, key: Any) -> Any:
        """A key that is not a string is stored as one (JSON): it passes the same rules."""
        if key is None or type(key) in (bool, float):
            return key
        try:
            text = key if isinstance(key, str) else str(key)
        except Exception:
            return "[KEY]"
        out = self._text(str.__str__(text))
        return key if out == text else out

    def _remember(self, text: str, out: str) -> str:
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[text] = out
        return out


class Redactor(Walker):
    """Replace detected values with typed placeholders, optionally keyed-hashed so equal values join.

    ``Redactor()`` removes secrets and PII; ``Redactor(pii=False)`` secrets only; ``extra`` adds
    detectors run on the text as written, after the built-in ones (``regex_processor`` for the
    simple case). Use it as a processor (``redactor(fields)``) or on one value (``.value(v)``,
    ``.text(s)``).
    """

    def __init__(self, *, secrets: bool = True, pii: bool = True, hash_key: str | bytes | None = None,
                 extra: Iterable[Detector] = ()) -> None:
        super().__init__()
        for name, flag in (("secrets", secrets), ("pii", pii)):
            if not isinstance(flag, bool):
                raise ConfigError(f"Redactor({name}=...) is True or False, not {flag!r}")
        if hash_key is not None and not isinstance(hash_key, (str, bytes)):
            raise ConfigError(f"Redactor(hash_key=...) is a secret string (or bytes) or None, not {type(hash_key).__name__}")
        try:
            self.extra = tuple(extra)
        except TypeError:
            raise ConfigError(f"Redactor(extra=...) is a list of Detector, not {type(extra).__name__}") from None
        if not all(isinstance(d, Detector) for d in self.extra):
            raise ConfigError("Redactor(extra=...) is a list of llmtrace.base.detect.Detector (or use regex_processor)")
        self.secrets = self.secret_keys = secrets
        self.pii = pii
        if isinstance(hash_key, str):
            hash_key = hash_key.encode()
        self.hash_key = hash_key or None

    def text(self, text: str) -> str:
        found = self._cache.get(text)
        if found is not None:
            return found
        if type(text) is not str:
            if not isinstance(text, str):
                raise ConfigError(f"Redactor.text takes a str, not {type(text).__name__}; use .value(...) for other values")
            text = str.__str__(text)
        return self._remember(text, self._redact(text, fast=True))

    def plain_text(self, text: str) -> str:
        """``text(text)`` without any fast path (no cache, every detector on every text): what the
        fast path is tested against."""
        return self._redact(text, fast=False)

    def _redact(self, text: str, fast: bool) -> str:
        folded = fold(text)
        spans = find(folded, secrets=self.secrets, pii=self.pii, prechecks=fast) if self.secrets or self.pii else []
        if self.extra:
            spans = find_extra(text, self.extra, spans)
        if not spans:
            return text
        parts, pos = [], 0
        for a, b, name in spans:
            parts.append(text[pos:a])
            parts.append(self._placeholder(name, folded[a:b]))
            pos = b
        parts.append(text[pos:])
        return "".join(parts)

    def _placeholder(self, name: str, value: str) -> str:
        if self.hash_key is None:
            return f"[{name}]"
        mac = hmac.new(self.hash_key, value.encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()[:10]
        return f"[{name}:{mac}]"


_PLACEHOLDER_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")


def regex_processor(pattern: str | re.Pattern[str], placeholder: str = "REDACTED") -> Redactor:
    """A processor replacing every match of ``pattern`` in content with ``[placeholder]``: what
    ``re.sub(pattern, f"[{placeholder}]", text)`` makes of every string, keys included (empty
    matches are left alone)."""
    if isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"regex_processor: {pattern!r} is not a valid regular expression ({exc}); pass a "
                              "pattern such as r'ACME-\\d+'") from None
    elif isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
        compiled = pattern
    else:
        raise ConfigError(f"regex_processor takes a regular expression (a str or re.compile(...) of a str), "
                          f"not {type(pattern).__name__}")
    if not isinstance(placeholder, str) or not _PLACEHOLDER_NAME.fullmatch(placeholder):
        raise ConfigError(f"a placeholder name is a short word of letters, digits and _ (e.g. 'ORDER'), not {placeholder!r}")
    return Redactor(secrets=False, pii=False, extra=[Detector(placeholder, compiled)])


def as_processor(item: Any) -> Processor:
    """User processors: a callable ``fields -> fields``, a regex (string or compiled), or (regex, name)."""
    if isinstance(item, (str, re.Pattern)):
        return regex_processor(item)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (str, re.Pattern)):
        return regex_processor(item[0], item[1])
    if callable(item):
        return item
    raise ConfigError(f"a processor is a callable fields -> fields, a regex, or (regex, placeholder); not {item!r}")


def processor_list(processors: Any) -> list[Processor]:
    """``Tracer(processors=...)``: None or a list of processors (see ``as_processor``), checked."""
    if processors is None:
        return []
    if isinstance(processors, (str, re.Pattern)) or callable(processors) or not isinstance(processors, (list, tuple)):
        raise ConfigError(f"processors is a list, e.g. processors=[r'ACME-\\d+', my_function]; not {processors!r}")
    return [as_processor(p) for p in processors]


class PresidioRedactor(Walker):
    """Microsoft Presidio as a processor, for what patterns cannot find: names, addresses, ...

    ``PresidioRedactor()`` builds Presidio's default ``AnalyzerEngine`` (it needs a spaCy model,
    e.g. ``python -m spacy download en_core_web_lg``); pass your own ``analyzer`` to choose the
    model and recognizers. Detected spans become ``[ENTITY_TYPE]``. Install with
    ``pip install 'llmtrace[presidio]'``. It walks content like every redactor (keys, any depth,
    any container) and, like every processor, fails closed.
    """

    def __init__(self, analyzer: Any = None, *, entities: list[str] | None = None, language: str = "en",
                 score_threshold: float = 0.5) -> None:
        super().__init__()
        if analyzer is None:
            try:
                from presidio_analyzer import AnalyzerEngine
            except ImportError:
                raise ConfigError("PresidioRedactor needs Presidio: pip install 'llmtrace[presidio]' and a spaCy "
                                  "model (python -m spacy download en_core_web_lg)") from None
            analyzer = AnalyzerEngine()
        if not callable(getattr(analyzer, "analyze", None)):
            raise ConfigError(f"PresidioRedactor(analyzer=...) is a presidio_analyzer.AnalyzerEngine, not {analyzer!r}")
        self.analyzer = analyzer
        self.entities = entities
        self.language = language
        self.threshold = score_threshold

    def text(self, text: str) -> str:
        found = self._cache.get(text)
        if found is not None:
            return found
        if type(text) is not str:  # a str subclass (LangChain's TextAccessor): spaCy wants exactly str
            text = str.__str__(text)
        if not text.strip():
            return text
        results = self.analyzer.analyze(text=text, language=self.language, entities=self.entities,
                                        score_threshold=self.threshold)
        out = text
        for r in sorted(results, key=lambda r: r.start, reverse=True):  # right to left keeps offsets valid
            out = out[:r.start] + f"[{r.entity_type}]" + out[r.end:]
        return self._remember(text, out)

