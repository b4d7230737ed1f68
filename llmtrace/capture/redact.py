"""Redaction: typed placeholders for secrets and PII, run on the writer thread before storage.

A ``Redactor`` is a processor (``fields -> fields``, see ``_privacy``) that walks every string of a
content field. Detectors are cheap to skip: each has a literal pre-check (``"@" in text``, a digit,
a key prefix) so text without candidates costs a few substring searches, not a dozen regex scans.

Secrets (provider API keys, bearer tokens, JWTs, private keys, passwords in URLs and values under
secret-looking keys) are removed in every capture mode; PII (email, phone, payment card, US SSN,
IBAN, IPv4/IPv6) in ``redacted`` mode.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from llmtrace.base.privacy import is_secret_key
from llmtrace.store.content import DEPTH as _SHARE_DEPTH
from llmtrace.store.content import MIN_CHARS as _SHARE_MIN
from llmtrace.store.content import share_text


@dataclass(frozen=True)
class Detector:
    name: str  # the placeholder's type: [EMAIL], [API_KEY], ...
    pattern: re.Pattern[str]
    precheck: Callable[[str], bool]
    valid: Callable[[re.Match[str]], bool] | None = None  # checks the match (boundaries, Luhn, ...)
    group: int = 0  # the part of the match that is replaced (passwords in URLs keep the rest)


_DIGIT = re.compile(r"\d")


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def _phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    if not 8 <= digits <= 15:
        return False
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", candidate.strip()):  # an ISO date, not a phone number
        return False
    if candidate.startswith("+"):
        return True
    groups = re.split(r"[ ().-]+", candidate.strip("()"))
    # separated groups, as people write numbers: not a decimal, not a version, not a long id
    return len([g for g in groups if g]) >= 2 and not re.fullmatch(r"\d+\.\d+", candidate)


def _ssn(candidate: str) -> bool:
    area, group, serial = candidate.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _ipv4(candidate: str) -> bool:
    return all(int(part) <= 255 for part in candidate.split("."))


def _ipv6(candidate: str) -> bool:
    if candidate.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _any_in(*needles: str) -> Callable[[str], bool]:
    return lambda text: any(n in text for n in needles)


def _search(pattern: str) -> Callable[[str], bool]:
    rx = re.compile(pattern)
    return lambda text: rx.search(text) is not None


def _lower_any(*needles: str) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        low = text.lower()
        return any(n in low for n in needles)
    return check


# Patterns start with a literal or a character class so the regex engine can skip ahead in C;
# the word boundaries a leading look-behind would give are checked on the match instead (``_edge``).
def _edge(before: str, after: str = "") -> Callable[[re.Match[str]], bool]:
    def ok(m: re.Match[str]) -> bool:
        s, a, b = m.string, m.start(), m.end()
        return (a == 0 or s[a - 1] not in before) and (b >= len(s) or s[b] not in (after or before))
    return ok


def _both(*checks: Callable[[re.Match[str]], bool]) -> Callable[[re.Match[str]], bool]:
    return lambda m: all(c(m) for c in checks)


def _on_value(check: Callable[[str], bool], group: int = 0) -> Callable[[re.Match[str]], bool]:
    return lambda m: check(m.group(group))


_WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

SECRET_DETECTORS: tuple[Detector, ...] = (
    Detector("PRIVATE_KEY", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"),
             _any_in("-----BEGIN")),
    Detector("JWT", re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), _any_in("eyJ"), _edge(_WORD)),
    Detector("API_KEY", re.compile(r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}"), _any_in("sk-"), _edge(_WORD)),
    Detector("API_KEY", re.compile(r"A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)[A-Z0-9]{16}"),
             lambda t: "A" in t and any(n in t for n in ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")),
             _edge(_WORD)),
    Detector("API_KEY", re.compile(r"AIza[0-9A-Za-z_-]{35}"), _any_in("AIza"), _edge(_WORD)),
    Detector("API_KEY", re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"),
             lambda t: "gh" in t and "_" in t and any(n in t for n in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
             _edge(_WORD)),
    Detector("API_KEY", re.compile(r"github_pat_[A-Za-z0-9_]{22,}"), _any_in("github_pat_")),
    Detector("API_KEY", re.compile(r"xox[abprs]-[A-Za-z0-9-]{10,}"), _any_in("xox"), _edge(_WORD)),
    Detector("API_KEY", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+"), _any_in("hooks.slack.com")),
    Detector("API_KEY", re.compile(r"(?:sk|rk|pk|whsec)_(?:live|test)_[A-Za-z0-9]{10,}"), _any_in("_live_", "_test_"),
             _edge(_WORD)),
    Detector("BEARER_TOKEN", re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr]\s+[A-Za-z0-9._~+/=-]{12,}"), _any_in("earer", "EARER"),
             _edge(_WORD)),
    Detector("PASSWORD", re.compile(r"://[^:/\s@]+:([^@/\s]+)@"), _any_in("://"), group=1),
    Detector("SECRET", re.compile(r"(?i)(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|"
                                  r"aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{4,})"),
             lambda t: ("=" in t or ":" in t) and _lower_any("passw", "pwd", "secret", "api_key", "api-key", "apikey",
                                                           "token")(t),
             _edge(_WORD, "\x00"), group=1),
)

EMAIL = Detector("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), _any_in("@"))
_HEX_COLON = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:")
IPV6 = Detector("IP", re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*"),
                lambda t: ":" in t and _HEX_COLON.search(t) is not None, _both(_edge(_WORD + ":"), _on_value(_ipv6)))

# Numbers are found in one pass (``_NUMERIC``); each candidate run is then tried by these, in order.
NUMERIC_DETECTORS: tuple[Detector, ...] = (
    Detector("IBAN", re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"), _any_in(""),
             _both(_edge(_WORD), _on_value(_iban))),
    Detector("IP", re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"), _any_in("."),
             _both(_edge("0123456789."), _on_value(_ipv4))),
    Detector("CARD", re.compile(r"\d(?:[ -]?\d){12,18}"), _any_in(""), _both(_edge(_WORD + "-+"), _on_value(_luhn))),
    Detector("SSN", re.compile(r"\d{3}-\d{2}-\d{4}"), _any_in("-"), _both(_edge("0123456789-"), _on_value(_ssn))),
    Detector("PHONE", re.compile(r"\+\d{8,15}|[+(\d][\d ().-]{6,22}\d"), _any_in(""),
             _both(_edge(_WORD + "+-."), _on_value(_phone))),
)
# starts with a plain character class so the engine skips non-digits in C; '+', '(' and an IBAN's
# country letters before the run are taken in by ``Redactor._numeric_pass``
_NUMERIC = re.compile(r"[0-9][0-9A-Z ().:/-]{5,45}[0-9A-Z]")
_DIGITS = "0123456789"
PII_DETECTORS: tuple[Detector, ...] = (EMAIL, *NUMERIC_DETECTORS, IPV6)
_PLAIN = (int, float, bool, type(None))
_CACHE_MAX = 8192  # strings seen lately -> their redacted form (prompts, chunks, roles repeat)
# Every detector needs one of these somewhere in the text; short text without any is left at once.
_TRIGGER_CHARS = re.compile(r"[0-9@:=_-]")  # a bare character class: the engine scans it in C
_TRIGGER_WORDS = ("eyJ", "earer", "EARER", "AIza", "xox", "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")
_SHORT = 512


class Redactor:
    """Replace detected values with typed placeholders, optionally keyed-hashed so equal values join.

    ``Redactor()`` removes secrets and PII; ``Redactor(pii=False)`` secrets only; ``extra`` adds
    detectors (see ``regex_processor`` for the simple case).
    """

    def __init__(self, *, secrets: bool = True, pii: bool = True, hash_key: str | None = None,
                 extra: Iterable[Detector] = ()) -> None:
        self.detectors = (SECRET_DETECTORS if secrets else ()) + ((EMAIL,) if pii else ()) + tuple(extra)
        self.pii = pii
        self.hash_key = hash_key.encode() if hash_key else None
        # System prompts, retrieved chunks, tool results, roles repeat across calls: redact each once.
        self._cache: dict[str, str] = {}
        self._tuples: dict[int, tuple[tuple, tuple]] = {}

    def _placeholder(self, name: str, value: str) -> str:
        if self.hash_key is None:
            return f"[{name}]"
        mac = hmac.new(self.hash_key, value.encode("utf-8", "backslashreplace"), hashlib.sha256).hexdigest()[:10]
        return f"[{name}:{mac}]"

    def text(self, text: str) -> str:
        found = self._cache.get(text)
        if found is not None:
            return found
        if len(text) < _SHORT and _TRIGGER_CHARS.search(text) is None and not any(w in text for w in _TRIGGER_WORDS):
            out = text
        else:
            out = self._scan(text)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[text] = out
        return out

    def _scan(self, text: str) -> str:
        out = text
        for det in self.detectors:
            if det.precheck(out):
                out = det.pattern.sub(functools.partial(self._replace, det=det), out)
        if self.pii:
            if any(d in out for d in _DIGITS):
                out = self._numeric_pass(out)
            if IPV6.precheck(out):
                out = IPV6.pattern.sub(lambda m: self._replace(m, IPV6), out)
        return out

    def _numeric_pass(self, text: str) -> str:
        parts: list[str] = []
        pos = 0
        for m in _NUMERIC.finditer(text):
            a, b = m.span()
            if a < pos:
                continue
            while a > pos and (text[a - 1] in "+(" or (text[a - 1].isupper() and a - 1 >= m.start() - 2)):
                a -= 1  # take in '+', '(' and an IBAN's two country letters
            # one character of context on each side, so the detectors' boundary checks see the real
            # neighbours (digits glued to letters are part of an identifier: a UUID, a hash)
            lo, hi = max(a - 1, pos), min(b + 1, len(text))
            run = text[lo:hi]
            for det in NUMERIC_DETECTORS:
                if det.precheck(run):
                    run = det.pattern.sub(functools.partial(self._replace, det=det), run)
            parts.append(text[pos:lo])
            parts.append(run)
            pos = hi
        if not parts:
            return text
        parts.append(text[pos:])
        return "".join(parts)

    def _replace(self, m: re.Match[str], det: Detector) -> str:
        value = m.group(det.group)
        if value is None or (det.valid is not None and not det.valid(m)):
            return m.group(0)
        if det.group == 0:
            return self._placeholder(det.name, value)
        start, end = m.span(det.group)
        whole = m.group(0)
        offset = m.start(0)
        return whole[: start - offset] + self._placeholder(det.name, value) + whole[end - offset:]

    def value(self, value: Any, _depth: int = 0) -> Any:
        cls = type(value)
        if cls is str:
            return self.text(value)
        if _depth > 40 or cls in _PLAIN:
            return value
        if isinstance(value, dict):
            return {k: ("[SECRET]" if type(k) is str and is_secret_key(k) and v not in (None, "")
                        else self.value(v, _depth + 1)) for k, v in value.items()}
        if cls is tuple:  # immutable and shared (e.g. a bound tool list): redacted once per object
            seen = self._tuples.get(id(value))
            if seen is not None and seen[0] is value:
                return seen[1]
            out = tuple(self.value(v, _depth + 1) for v in value)
            if len(self._tuples) >= 256:
                self._tuples.clear()
            self._tuples[id(value)] = (value, out)
            return out
        if isinstance(value, (list, tuple)):
            return [self.value(v, _depth + 1) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def __call__(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {k: self.value(v) for k, v in fields.items()}

    def shared(self, fields: dict[str, Any], owner: str, seen: dict[str, Any]) -> dict[str, Any]:
        """``self(fields)``, with the long strings its trace stored already as references
        (``_shared.share``), in one walk instead of two."""
        root = (None, owner)
        return {k: self._shared(v, seen, (root, k), _SHARE_DEPTH) for k, v in fields.items()}

    def _shared(self, value: Any, seen: dict[str, Any], path: tuple, depth: int) -> Any:
        cls = type(value)
        if cls is str or (cls is not dict and cls is not list and isinstance(value, str)):
            return self._shared_text(value, seen, path)
        # (strings, the common leaf, are handled in the loops: a call per string was most of the walk)
        if depth and cls is dict:
            out = {}
            for k, v in value.items():
                if type(k) is str and is_secret_key(k) and v not in (None, ""):
                    out[k] = "[SECRET]"  # the same rule as ``value`` for values under secret-looking keys
                else:
                    out[k] = (self._shared_text(v, seen, (path, k)) if type(v) is str
                              else self._shared(v, seen, (path, k), depth - 1))
            return out
        if depth and cls is list:
            return [self._shared_text(v, seen, (path, i)) if type(v) is str
                    else self._shared(v, seen, (path, i), depth - 1) for i, v in enumerate(value)]
        return self.value(value, _SHARE_DEPTH - depth)

    def _shared_text(self, value: str, seen: dict[str, Any], path: tuple) -> Any:
        text = self._cache.get(value)
        if text is None:
            text = self.text(value)
        return text if len(text) < _SHARE_MIN else share_text(text, seen, path)


def regex_processor(pattern: str | re.Pattern[str], placeholder: str = "REDACTED") -> Callable[[dict], dict]:
    """A processor replacing every match of ``pattern`` in content with ``[placeholder]``."""
    det = Detector(placeholder, re.compile(pattern) if isinstance(pattern, str) else pattern, lambda _t: True)
    return Redactor(secrets=False, pii=False, extra=[det])


def as_processor(item: Any) -> Callable[[dict], dict]:
    """User processors: a callable ``fields -> fields``, a regex (string or compiled), or (regex, name)."""
    if isinstance(item, (str, re.Pattern)):
        return regex_processor(item)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (str, re.Pattern)):
        return regex_processor(item[0], str(item[1]))
    if callable(item):
        return item
    from llmtrace.base.errors import ConfigError

    raise ConfigError(f"a processor is a callable fields -> fields, a regex, or (regex, placeholder); not {item!r}")


class PresidioRedactor:
    """Microsoft Presidio as a processor, for what patterns cannot find: names, addresses, ...

    ``PresidioRedactor()`` builds Presidio's default ``AnalyzerEngine`` (it needs a spaCy model,
    e.g. ``python -m spacy download en_core_web_lg``); pass your own ``analyzer`` to choose the
    model and recognizers. Detected spans become ``[ENTITY_TYPE]``. Install with
    ``pip install 'llmtrace[presidio]'``. Like every processor it fails closed.
    """

    def __init__(self, analyzer: Any = None, *, entities: list[str] | None = None, language: str = "en",
                 score_threshold: float = 0.5) -> None:
        if analyzer is None:
            try:
                from presidio_analyzer import AnalyzerEngine
            except ImportError:
                from llmtrace.base.errors import ConfigError

                raise ConfigError("PresidioRedactor needs Presidio: pip install 'llmtrace[presidio]' and a spaCy "
                                  "model (python -m spacy download en_core_web_lg)") from None
            analyzer = AnalyzerEngine()
        self.analyzer = analyzer
        self.entities = entities
        self.language = language
        self.threshold = score_threshold
        self._cache: dict[str, str] = {}

    def text(self, text: str) -> str:
        found = self._cache.get(text)
        if found is not None:
            return found
        if type(text) is not str:  # a str subclass (LangChain's TextAccessor): spaCy wants exactly str
            text = str.__str__(text)
        results = self.analyzer.analyze(text=text, language=self.language, entities=self.entities,
                                        score_threshold=self.threshold)
        out = text
        for r in sorted(results, key=lambda r: r.start, reverse=True):  # right to left keeps offsets valid
            out = out[:r.start] + f"[{r.entity_type}]" + out[r.end:]
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[text] = out
        return out

    def value(self, value: Any, _depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.text(value) if value.strip() else value
        if _depth > 40:
            return value
        if isinstance(value, dict):
            return {k: self.value(v, _depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v, _depth + 1) for v in value]
        return value

    def __call__(self, fields: dict[str, Any]) -> dict[str, Any]:
        return {k: self.value(v) for k, v in fields.items()}
