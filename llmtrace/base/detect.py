"""What is a secret or personal data in a text, and where: the detectors behind every redaction path.

``find(text)`` returns the spans to replace as ``(start, end, name)``; ``llmtrace.capture.redact``
walks content and replaces them with ``[NAME]`` placeholders. Text is *folded* first, one character
for one (Unicode digits, full-width forms, non-breaking and ideographic spaces, Unicode dashes become
ASCII), so ``０３－１２３４－５６７８`` is found like ``03-1234-5678`` and a span of the folded text is
the same span of the original.

Stages run in order, each blind to what an earlier one found (found text is masked): secrets (API
keys, tokens, private keys, passwords in URLs or after a label in a dozen languages) in every capture
mode; then emails, IPv6, IBANs (each country's length and the checksum) and numbers. A run of digits
and separators is tried group by group, longest candidate first, as an IPv4 address, a US SSN, a
payment card (Luhn) or a phone number, so two values side by side are two values, and a value ends
where the number ends (a full stop after it is punctuation, a digit after it is more number).

Every detector has a pre-check that is a necessary condition for a match (a character, a prefix);
a text a pre-check rejects has no span of that detector, so skipping it is never a different result,
only a cheaper one (``find(..., prechecks=False)`` is the plain path the tests compare with).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Span = tuple[int, int, str]  # start, end (in the folded text, which is the original's), placeholder name

MASK = "\x00"  # what found text becomes for the stages after (no pattern takes it)
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ALNUM = _WORD - {"_"}
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class Detector:
    """One kind of value: ``pattern`` finds candidates, ``valid`` checks one (boundaries, checksum),
    ``group`` is the part replaced (a URL keeps all but its password). ``precheck(text)`` must be
    true of every text the pattern can match in; None means "always look"."""

    name: str  # the placeholder: [EMAIL], [API_KEY], ...
    pattern: re.Pattern[str]
    precheck: Callable[[str], bool] | None = None
    valid: Callable[[re.Match[str]], bool] | None = None
    group: int = 0


# -- folding ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _fold_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for cp in range(0x80, 0x20000):  # every Unicode decimal digit (Arabic-Indic, Devanagari, full-width...)
        d = unicodedata.decimal(chr(cp), None)
        if d is not None:
            table[cp] = str(d)
    for cp in range(0xFF01, 0xFF5F):  # full-width ASCII: ＠ ： （ ） ＋ ， ．
        table.setdefault(cp, chr(cp - 0xFEE0))
    for cp in (0xA0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000):
        table[cp] = " "
    for cp in (*range(0x2010, 0x2016), 0x2212, 0xFE58, 0xFE63):
        table[cp] = "-"
    return table


def fold(text: str) -> str:
    """``text`` with look-alike characters made ASCII, one for one (same length, same positions)."""
    return text if text.isascii() else text.translate(_fold_table())


# -- validation helpers -----------------------------------------------------------------------------

def _luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c in _DIGITS]
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


def _iban_ok(iban: str) -> bool:
    moved = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


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


def _edge(before: Iterable[str], after: Iterable[str] | None = None) -> Callable[[re.Match[str]], bool]:
    """The match is not glued to these characters on either side (a word boundary the pattern
    does not spell, so it can start with a literal the engine skips to in C)."""
    b_set, a_set = frozenset(before), frozenset(before if after is None else after)

    def ok(m: re.Match[str]) -> bool:
        s, a, b = m.string, m.start(), m.end()
        return (a == 0 or s[a - 1] not in b_set) and (b >= len(s) or s[b] not in a_set)
    return ok


# -- secrets (every capture mode) ---------------------------------------------------------------------

# A pre-check holds for every text its pattern matches in: a literal every match holds, found with
# ``in`` (C speed; one regex alternation of all of them was slower than the checks one by one).
# Detectors are grouped under a cheaper gate their pre-checks share ('-', '_', 'A', ...).
_SECRET_GROUPS: tuple[tuple[tuple[str, ...], tuple[Detector, ...]], ...] = (
    (("-",), (
        Detector("PRIVATE_KEY", re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"), _any_in("-----BEGIN")),
        Detector("API_KEY", re.compile(r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}"), _any_in("sk-"), _edge(_WORD)),
        Detector("API_KEY", re.compile(r"xox[abprs]-[A-Za-z0-9-]{10,}"), _any_in("xox"), _edge(_WORD)),
    )),
    (("eyJ",), (
        Detector("JWT", re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), _any_in("eyJ"), _edge(_WORD)),
    )),
    (("A",), (
        Detector("API_KEY", _AWS_RX := re.compile(r"A(?:KIA|SIA|GPA|IDA|ROA|NPA|NVA|IPA)[A-Z0-9]{16}"),
                 lambda t: _AWS_RX.search(t) is not None, _edge(_WORD)),
        Detector("API_KEY", re.compile(r"AIza[0-9A-Za-z_-]{35}"), _any_in("AIza"), _edge(_WORD)),
    )),
    (("_",), (
        Detector("API_KEY", _GH_RX := re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"), lambda t: _GH_RX.search(t) is not None,
                 _edge(_WORD)),
        Detector("API_KEY", re.compile(r"github_pat_[A-Za-z0-9_]{22,}"), _any_in("github_pat_")),
        Detector("API_KEY", re.compile(r"(?:sk|rk|pk|whsec)_(?:live|test)_[A-Za-z0-9]{10,}"), _any_in("_live_", "_test_"),
                 _edge(_WORD)),
    )),
    (("earer", "EARER"), (
        Detector("BEARER_TOKEN", re.compile(r"(?:[Bb]earer|BEARER)\s+[A-Za-z0-9._~+/=-]{12,}"), _any_in("earer", "EARER"),
                 _edge(_WORD)),
    )),
    (("://",), (
        Detector("API_KEY", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+"), _any_in("hooks.slack.com")),
        # a password in a URL, also with an empty user name (redis://:PASSWORD@host)
        Detector("PASSWORD", re.compile(r"://[^:/\s@\x00]*:([^@/\s\x00]+)@"), _any_in("://"), group=1),
    )),
)
_PATTERN_SECRETS: tuple[Detector, ...] = tuple(d for _gates, group in _SECRET_GROUPS for d in group)


# Labels people put before a password or key, in a dozen languages (matched without regard to case).
SECRET_LABELS = (
    "password", "passwd", "passphrase", "passcode", "pwd", "secret", "client secret", "client_secret", "token",
    "api key", "api_key", "api-key", "apikey", "access token", "access_token", "access-token", "auth token",
    "auth_token", "aws_secret_access_key",
    "mot de passe", "mdp", "passwort", "kennwort", "contraseña", "contrasena", "clave secreta", "clave de acceso",
    "senha", "palavra-passe", "wachtwoord", "lösenord", "losenord", "passord", "adgangskode", "salasana",
    "hasło", "haslo", "heslo", "jelszó", "parola", "şifre", "sifre", "пароль", "κωδικός", "סיסמה",
    "كلمة المرور", "كلمة السر", "पासवर्ड", "パスワード", "暗証番号", "密码", "密碼", "口令", "비밀번호", "암호",
)


@functools.lru_cache(maxsize=1)
def _case_table() -> dict[int, str]:
    """Lower case, one character for one (a character whose case folding is longer is left as is)."""
    table: dict[int, str] = {}
    for cp in range(0x41, 0x20000):
        c = chr(cp)
        f = c.casefold()
        if len(f) != 1:
            f = c.lower()
        if len(f) == 1 and f != c:
            table[cp] = f
    table[0x130] = "i"  # İ
    return table


def casefold(text: str) -> str:
    """``text`` in lower case, same length and positions (labels are matched in it)."""
    return text.lower() if text.isascii() else text.translate(_case_table())


_LABELS = tuple(sorted({casefold(x) for x in SECRET_LABELS}, key=len, reverse=True))
# Where a label can start is found with str.find of a few pieces the labels hold (a regex over the
# whole text tried fifty labels at every letter: 600 µs per 2 KB; str.find runs at C speed).
_ANCHORS = ("pas", "pwd", "secret", "api", "token", "mdp", "kennw", "contras", "clave", "sen", "wachtw",
            "adgangsk", "salasana", "has", "heslo", "jelsz", "parol", "ifre", "пароль", "κωδικ", "סיסמה",
            "كلمة", "पासवर्ड", "パスワード", "暗証番号", "密码", "密碼", "口令", "비밀번호", "암호")
_BY_ANCHOR: dict[str, list[tuple[str, int]]] = {}
for _label in _LABELS:
    _anchor = next(a for a in _ANCHORS if a in _label)  # (every label holds one: checked here, at import)
    _BY_ANCHOR.setdefault(_anchor, []).append((_label, _label.index(_anchor)))
_ASCII_ANCHORS = tuple(a for a in _BY_ANCHOR if a.isascii())
_ALL_ANCHORS = tuple(_BY_ANCHOR)

_LABEL = "(?:" + "|".join(re.escape(x) for x in _LABELS) + ")"
_VALUE = r"([^\s\"'`,;<>()\[\]{}\x00]{4,})"
# "password: x", "pwd=x", "mot de passe : x", '"password": "x"'
_LABEL_COLON = re.compile(rf"{_LABEL}[\"'`]?[ \t]*[:=][ \t]*[\"'`]?{_VALUE}")
# "passcode x", "password is x", "パスワードはx": only a value that looks like one (a digit or a symbol)
_LABEL_SPACE = re.compile(rf"{_LABEL}(?:[ \t]+(?:(?:is|was|est|ist|lautet|heißt|es|era|é|è|luidt|är|er)[ \t]+)?"
                          rf"|[ \t]*[はが是為为][ \t]*)"
                          rf"[\"'`]?{_VALUE}")
_LOOKS_SECRET = re.compile(r"[0-9!$%*#&@_~^+=?/\\|-]")


def _label_starts(cf: str) -> list[int]:
    """Where a label starts in ``cf`` (case-folded), preceded by no letter or digit."""
    starts = set()
    for anchor in _ASCII_ANCHORS if cf.isascii() else _ALL_ANCHORS:
        p = cf.find(anchor)
        while p >= 0:
            for label, offset in _BY_ANCHOR[anchor]:
                s = p - offset
                # (an env-style name counts: DB_PASSWORD=..., GITHUB_TOKEN=...)
                if s >= 0 and cf.startswith(label, s) and (s == 0 or cf[s - 1] not in _ALNUM):
                    starts.add(s)
            p = cf.find(anchor, p + 1)
    return sorted(starts)


def _labels(work: str, spans: list[Span]) -> str:
    """Values after a password or key label: "password: x", "Passwort: x", "passcode x"."""
    cf = casefold(work)
    starts = _label_starts(cf)
    if not starts:
        return work
    first = before = len(spans)
    for rx, spaced in ((_LABEL_COLON, False), (_LABEL_SPACE, True)):
        end = 0
        for s in starts:
            if s < end:
                continue
            m = rx.match(cf, s)
            if m is None or (spaced and (len(m.group(1)) < 6 or _LOOKS_SECRET.search(m.group(1)) is None)):
                continue
            spans.append((m.start(1), m.end(1), "SECRET"))
            end = m.end()
        if len(spans) > before:
            cf = _mask(cf, spans, before)
            before = len(spans)
    return _mask(work, spans, first) if len(spans) > first else work


SECRET_DETECTORS = _PATTERN_SECRETS  # (and the labels, ``_labels``)

# -- personal data (capture "redacted") -------------------------------------------------------------

_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def _emails(work: str, spans: list[Span]) -> str:
    """Local part, '@', domain: found from each '@' (what the pattern
    ``[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}`` finds, without trying it at every letter)."""
    before, floor = len(spans), 0
    at = work.find("@")
    while at >= 0:
        s = at
        while s > floor and work[s - 1] in _EMAIL_LOCAL:
            s -= 1
        m = _EMAIL_DOMAIN.match(work, at + 1) if s < at else None
        if m is not None:
            spans.append((s, m.end(), "EMAIL"))
            floor = m.end()
            at = work.find("@", floor)
        else:
            at = work.find("@", at + 1)
    return _mask(work, spans, before) if len(spans) > before else work


_V6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")  # every IPv6 address has one; found at C speed (it starts with ':')
_V6 = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:(?:[0-9A-Fa-f]{0,4}:)*"
                 r"(?:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9])|[0-9A-Fa-f]{1,4})?")
_HEX = frozenset("0123456789abcdefABCDEF")
_V6_EDGE = _WORD | {":"}


def _ipv6s(work: str, spans: list[Span]) -> str:
    before, pos = len(spans), 0
    while (hint := _V6_HINT.search(work, pos)) is not None:
        p = s = hint.start()
        while s > pos and p - s < 4 and work[s - 1] in _HEX:
            s -= 1
        m = _V6.match(work, s)
        if m is None:  # (cannot happen: the hint is a match's start) keep looking after it
            pos = p + 1
            continue
        a, b = m.span()
        if (a == 0 or work[a - 1] not in _V6_EDGE) and (b >= len(work) or work[b] not in _V6_EDGE) and _ipv6(m.group()):
            spans.append((a, b, "IP"))
        pos = max(b, p + 1)
    return _mask(work, spans, before) if len(spans) > before else work

# The length of an IBAN in each country that issues them (the SWIFT registry, and its partners).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AO": 25, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BF": 28, "BG": 22, "BH": 22,
    "BI": 27, "BJ": 28, "BR": 29, "BY": 28, "CF": 27, "CG": 27, "CH": 21, "CI": 28, "CM": 27, "CR": 22, "CV": 25,
    "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "DZ": 26, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GA": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GQ": 27, "GR": 27, "GT": 28,
    "GW": 25, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IR": 26, "IS": 26, "IT": 27, "JO": 30,
    "KM": 27, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MA": 28,
    "MC": 27, "MD": 24, "ME": 22, "MG": 27, "MK": 19, "ML": 28, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "MZ": 25,
    "NE": 28, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24,
    "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SN": 28, "SO": 23,
    "ST": 25, "SV": 28, "TD": 27, "TG": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _alnum(ch: str) -> bool:
    return ch in _WORD and ch != "_"


def _glued_word(work: str, s: int) -> bool:
    """Whether what is glued before ``s`` is a word ('IBANDE89…', as Japanese text writes it), not the
    rest of a hex digest or an id (digits, or only the letters a-f)."""
    j = s
    while j > 0 and work[j - 1] in _ALNUM:
        j -= 1
    token = work[j:s]
    return not any(c in _DIGITS for c in token) and any(c not in _HEX for c in token)


def _iban_at(work: str, s: int) -> int | None:
    """The end of the IBAN starting at ``s`` (a country code, then its check digits), or None: read on
    for exactly that country's length (a single space allowed between groups of four) and checksum-checked,
    so an IBAN right after another value ends where it must."""
    length = IBAN_LENGTHS.get(work[s:s + 2].upper())
    if length is None or (s and work[s - 1] in _WORD and not _glued_word(work, s)):
        return None
    n = len(work)
    chars, i, count = [work[s:s + 4].upper()], s + 4, 4
    while count < length and i < n:
        ch = work[i]
        if _alnum(ch):
            chars.append(ch.upper())
            count += 1
            i += 1
        elif ch == " " and count % 4 == 0 and i + 1 < n and _alnum(work[i + 1]) and work[i - 1] != " ":
            i += 1  # (printed in groups of four: a space anywhere else ends it)
        else:
            break
    if count == length and (i >= n or not _alnum(work[i])) and _iban_ok("".join(chars)):
        return i
    return None


# -- numbers: IPv4, SSN, cards, phones, tried on each run of digits and separators -------------------

_RUN = re.compile(r"[0-9][0-9 ().\-/]*")  # (digit-led; a '+' or '(' before it is taken in by hand)
_GROUP = re.compile(r"[0-9]+")
_IP4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_SSN = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{4}")
_CARD = re.compile(r"[0-9](?:[ -]?[0-9]){12,18}")
_DATE = re.compile(r"([0-9]{4})[-/.]([0-9]{1,2})[-/.]([0-9]{1,2})|([0-9]{1,2})[-/.]([0-9]{1,2})[-/.]([0-9]{4}|[0-9]{2})")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
# Grouped as card numbers are printed (4-4-4-4[-3], 4-6-5): a card, or one number that is no one's phone
_CARD_SHAPE = re.compile(r"[0-9]{4}([ -]?)[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{3})?(?![0-9])|[0-9]{4}([ -]?)[0-9]{6}\2[0-9]{5}(?![0-9])")


def _before_ok(w: str, s: int, joins: str, hyphen: bool = True) -> bool:
    """Nothing glued before ``s``: no letter or digit, no ``joins`` character with a digit before it
    (the '.' of a longer dotted number) and, with ``hyphen``, no '-' with a letter or digit before it
    (a hyphenated id: 'a628-7000-8000')."""
    if s == 0:
        return True
    c = w[s - 1]
    if c in _WORD or s < 2:
        return c not in _WORD
    return not ((c in joins and w[s - 2] in _DIGITS) or (hyphen and c == "-" and w[s - 2] in _WORD))


def _after_ok(w: str, e: int, joins: str, hyphen: bool = True) -> bool:
    if e >= len(w):
        return True
    c = w[e]
    if c in _WORD or e + 1 >= len(w):
        return c not in _WORD
    return not ((c in joins and w[e + 1] in _DIGITS) or (hyphen and c == "-" and w[e + 1] in _WORD))


def _is_ip(w: str, s: int, e: int) -> bool:
    c = w[s:e]
    return (_IP4.fullmatch(c) is not None and all(int(p) <= 255 for p in c.split("."))
            and _before_ok(w, s, ".", False) and _after_ok(w, e, ".", False))


def _is_ssn(w: str, s: int, e: int) -> bool:
    c = w[s:e]
    if _SSN.fullmatch(c) is None or not (_before_ok(w, s, ".") and _after_ok(w, e, ".")):
        return False
    area, group, serial = c.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _is_card(w: str, s: int, e: int) -> bool:
    c = w[s:e]
    return (_CARD.fullmatch(c) is not None and (s == 0 or w[s - 1] != "+")
            and _before_ok(w, s, ".") and _after_ok(w, e, ".") and _luhn(c))


def _is_card_shaped(w: str, s: int, e: int) -> bool:
    return (s == 0 or w[s - 1] != "+") and _before_ok(w, s, ".") and _after_ok(w, e, ".")


def _is_date(c: str) -> bool:
    m = _DATE.fullmatch(c)
    if m is None:
        return False
    if m.group(1):
        year, a, b = int(m.group(1)), int(m.group(2)), int(m.group(3))
    else:
        a, b, year = int(m.group(4)), int(m.group(5)), int(m.group(6))
        year = year + 2000 if year < 100 else year
    return 1900 <= year <= 2100 and 1 <= min(a, b) and ((a <= 12 and b <= 31) or (a <= 31 and b <= 12))


# The most digits a number dialled with a '+' has, country code included, for countries whose numbers
# are never as long as E.164 allows (15): a number written right after one ends where it must.
_MOST_DIGITS = {
    "1": 11, "7": 11, "20": 12, "27": 11, "30": 12, "31": 11, "32": 11, "33": 11, "34": 11, "36": 11, "39": 13,
    "40": 11, "41": 11, "43": 13, "44": 12, "45": 10, "46": 12, "47": 10, "48": 11, "49": 14, "51": 11, "52": 12,
    "54": 13, "55": 13, "56": 11, "57": 12, "60": 11, "61": 11, "62": 13, "63": 12, "64": 11, "65": 10, "66": 11,
    "81": 12, "82": 12, "84": 12, "86": 13, "90": 12, "91": 12, "92": 12, "94": 11, "351": 12, "353": 12,
    "358": 12, "380": 12, "420": 12, "852": 11, "886": 12, "966": 12, "971": 12, "972": 12,
}
_NATIONAL_MOST = 12  # a number written without '+' (a trunk '0' and the national number)


def _is_phone(w: str, s: int, e: int) -> bool:
    c = w[s:e]
    groups = _GROUP.findall(c)
    digits = sum(map(len, groups))
    if not 8 <= digits <= 15 or len(groups) > 8 or not (_before_ok(w, s, ".:") and _after_ok(w, e, ".:")):
        return False
    if c[0] == "+":
        all_digits = "".join(groups)
        most = next((_MOST_DIGITS[all_digits[:k]] for k in (1, 2, 3) if all_digits[:k] in _MOST_DIGITS), 15)
        if digits > most + ("(0)" in c):  # (a trunk '0' in brackets is written, not dialled)
            return False
    # separated groups, as people write numbers: not one long id, a decimal, a date or a list of digits
    elif digits > _NATIONAL_MOST or len(groups) < 2 or _DECIMAL.fullmatch(c) or _is_date(c):
        return False
    return sum(len(g) == 1 for g in groups) <= 3


# (name, check, whether a leading '+' or '(' belongs to the value, longest candidate in characters)
_NUMBERS: tuple[tuple[str, Callable[[str, int, int], bool], bool, int], ...] = (
    ("IP", _is_ip, False, 15), ("SSN", _is_ssn, False, 11), ("CARD", _is_card, False, 25), ("PHONE", _is_phone, True, 28),
)


def _numeric(work: str, spans: list[Span]) -> str:
    """Each run of digits and separators (found at C speed: digits are rare in prose): an IBAN if two
    letters start it, else numbers group by group (``_numbers``)."""
    pos = 0
    while (run := _RUN.search(work, pos)) is not None:
        a, b = run.span()
        if a >= 2 and work[a - 2] in _LETTERS and work[a - 1] in _LETTERS and b - a >= 2 and work[a + 1] in _DIGITS:
            end = _iban_at(work, a - 2)
            if end is not None:
                spans.append((a - 2, end, "IBAN"))
                work = work[:a - 2] + MASK * (end - a + 2) + work[end:]  # (what follows is read without it)
                pos = end
                continue
        if a and work[a - 1] in "+(":
            a -= 1
        _numbers(work, a, b, spans)
        pos = b
    return work


def _numbers(work: str, a: int, b: int, spans: list[Span]) -> None:
    while b > a and work[b - 1] not in _DIGITS and work[b - 1] != ")":
        b -= 1
    groups = [g.span() for g in _GROUP.finditer(work, a, b)]
    ends = [g[1] for g in groups]
    i, n = 0, len(groups)
    while i < n:
        s = groups[i][0]
        shape = _CARD_SHAPE.match(work, s, b)
        if shape is not None and _is_card_shaped(work, s, shape.end()):
            if _luhn(shape.group()):
                spans.append((s, shape.end(), "CARD"))
            i = bisect.bisect_left(ends, shape.end()) + 1
            continue
        lead = s - 1 if s - 1 >= a and work[s - 1] in "+(" else s
        for name, check, with_lead, longest in _NUMBERS:
            start = lead if with_lead else s
            last = bisect.bisect_right(ends, start + longest) - 1  # candidates end at a group's end
            hit = None
            for j in range(last, i - 1, -1):
                e = ends[j]
                if with_lead and e < b and work[e] == ")" and work.count("(", start, e) > work.count(")", start, e):
                    e += 1  # "(03) ..." keeps its bracket; "(+1 415 555 0132)" as well
                if check(work, start, e):
                    hit = (j, e)
                    break
            if hit is not None:
                spans.append((start, hit[1], name))
                i = hit[0] + 1
                break
        else:
            i += 1


# -- the whole search ---------------------------------------------------------------------------------

def _has_digit(text: str) -> bool:
    return any(d in text for d in "0123456789")


def _mask(work: str, spans: list[Span], since: int) -> str:
    parts, pos = [], 0
    for a, b, _name in sorted(spans[since:]):
        parts.append(work[pos:a])
        parts.append(MASK * (b - a))
        pos = b
    parts.append(work[pos:])
    return "".join(parts)


def _run(det: Detector, work: str, spans: list[Span]) -> str:
    before = len(spans)
    for m in det.pattern.finditer(work):
        if det.valid is not None and not det.valid(m):
            continue
        a, b = m.span(det.group)
        if a < b:
            spans.append((a, b, det.name))
    return _mask(work, spans, before) if len(spans) > before else work


def _pattern_secrets(work: str, spans: list[Span], prechecks: bool) -> str:
    for gates, group in _SECRET_GROUPS:
        if prechecks and not any(g in work for g in gates):
            continue
        for det in group:
            if not prechecks or det.precheck is None or det.precheck(work):
                work = _run(det, work, spans)
    return work


# The stages after the pattern secrets: (stage, a pre-check that is a necessary condition for it to
# find anything, or None when the stage finds its own candidates at C speed, in which mode).
_STAGES: tuple[tuple[Callable[[str, list[Span]], str], Callable[[str], bool] | None, str], ...] = (
    (_labels, None, "secrets"),  # (from str.find of the labels' anchors)
    (_emails, None, "pii"),  # (from str.find of '@')
    (_ipv6s, lambda t: ":" in t, "pii"),
    (_numeric, _has_digit, "pii"),  # (IBANs, IPv4, SSN, cards, phones: each needs a digit)
)


# Every detector needs one of these characters or words in the text (a '-' or '_' in most keys, ':' or
# '=' after a label or a digit or symbol in the value after it, '@', ':' in IPv6, a digit in numbers):
# prose without any of them, most of a prompt, is passed in one scan.
_ANY_TRIGGER = re.compile(r"[0-9@:=_!$%*#&^~+?/\\|-]")
_TRIGGER_WORDS = ("eyJ", "AIza", "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "earer", "EARER")


def find(text: str, *, secrets: bool = True, pii: bool = True, prechecks: bool = True) -> list[Span]:
    """The spans of secrets (and PII) in ``text`` (folded), sorted, never overlapping.
    ``prechecks=False`` runs every detector on every text: the plain path the fast one must equal."""
    if prechecks and _ANY_TRIGGER.search(text) is None and not any(w in text for w in _TRIGGER_WORDS):
        return []
    spans: list[Span] = []
    work = _pattern_secrets(text, spans, prechecks) if secrets else text
    for stage, check, mode in _STAGES:
        if (secrets if mode == "secrets" else pii) and (not prechecks or check is None or check(work)):
            work = stage(work, spans)
    spans.sort()
    return spans


def find_extra(text: str, detectors: Iterable[Detector], spans: list[Span]) -> list[Span]:
    """``spans`` plus what ``detectors`` (a user's own, run on the text as written) find outside them."""
    work = _mask(text, spans, 0) if spans else text
    out = list(spans)
    for det in detectors:
        if det.precheck is None or det.precheck(work):
            work = _run(det, work, out)
    return merge(out)


def merge(spans: list[Span]) -> list[Span]:
    """Sorted spans, overlapping ones joined (fail closed: the union is replaced, under the first name)."""
    spans = sorted(spans)
    out: list[Span] = []
    for a, b, name in spans:
        if out and a < out[-1][1]:
            pa, pb, pname = out[-1]
            out[-1] = (pa, max(pb, b), pname)
        else:
            out.append((a, b, name))
    return out


# The placeholders llmtrace writes: a reader (replay's warning, a UI) knows redacted text by them.
MARKERS = ("SECRET", "PROCESSOR_FAILED", "TOO_DEEP", "CYCLE", "REDACTED")
PRESIDIO_ENTITIES = ("PERSON", "LOCATION", "NRP", "DATE_TIME", "URL", "PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD",
                     "IBAN_CODE", "IP_ADDRESS", "US_SSN", "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_PASSPORT",
                     "MEDICAL_LICENSE", "CRYPTO", "ORGANIZATION")
PLACEHOLDER_NAMES: tuple[str, ...] = tuple(dict.fromkeys(
    [d.name for d in _PATTERN_SECRETS] + ["SECRET", "EMAIL", "IP", "IBAN"] + [n[0] for n in _NUMBERS]
    + list(MARKERS) + list(PRESIDIO_ENTITIES)))
