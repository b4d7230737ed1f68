"""A PII and secret corpus in ordinary sentences, generated from templates x values, and a scanner.

Every case is a sentence (English, French, German, Spanish, Japanese) holding one or two sensitive
values in a context people write them in: after a colon, in brackets, quoted, at a line end, before
punctuation, side by side. ``corpus(seed)`` makes a fresh set of values for each seed, each value
unique across the corpus, so a scan of a database file or a log names the exact case (and the
channel it went in by) that leaked.

``Scanner`` finds thousands of needles in megabytes in well under a second: an index of each
needle's first k-grams, probed at every s-th position of the haystack, then an exact comparison.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# -- kinds --------------------------------------------------------------------------------------

PHONE_KINDS = ("phone_us", "phone_uk", "phone_fr", "phone_de", "phone_in", "phone_br", "phone_jp")
PII_KINDS = (*PHONE_KINDS, "ipv4", "ipv6", "email", "card", "iban", "ssn")
SECRET_KINDS = ("openai_key", "anthropic_key", "aws_key", "github_token", "bearer_token", "jwt", "private_key",
                "url_password", "password_field")
KINDS = (*PII_KINDS, *SECRET_KINDS)
LANGS = ("en", "fr", "de", "es", "ja")

# The word a sentence uses for the value, per language.
NOUNS = {
    "phone": {"en": "phone number", "fr": "numéro", "de": "Telefonnummer", "es": "teléfono", "ja": "電話番号"},
    "ip": {"en": "server address", "fr": "adresse IP", "de": "IP-Adresse", "es": "dirección IP", "ja": "IPアドレス"},
    "email": {"en": "email", "fr": "adresse e-mail", "de": "E-Mail-Adresse", "es": "correo", "ja": "メールアドレス"},
    "card": {"en": "card number", "fr": "numéro de carte", "de": "Kartennummer", "es": "tarjeta", "ja": "カード番号"},
    "iban": {"en": "IBAN", "fr": "IBAN", "de": "IBAN", "es": "IBAN", "ja": "IBAN"},
    "ssn": {"en": "SSN", "fr": "numéro SSN", "de": "SSN", "es": "SSN", "ja": "社会保障番号"},
    "key": {"en": "API key", "fr": "clé d'API", "de": "API-Schlüssel", "es": "clave de API", "ja": "APIキー"},
    "token": {"en": "token", "fr": "jeton", "de": "Token", "es": "token", "ja": "トークン"},
    "url": {"en": "connection string", "fr": "chaîne de connexion", "de": "Verbindungs-URL", "es": "cadena de conexión",
            "ja": "接続URL"},
    "password": {"en": "login", "fr": "identifiant", "de": "Zugang", "es": "acceso", "ja": "ログイン情報"},
}
NOUN_OF = {**{k: "phone" for k in PHONE_KINDS}, "ipv4": "ip", "ipv6": "ip", "email": "email", "card": "card",
           "iban": "iban", "ssn": "ssn", "openai_key": "key", "anthropic_key": "key", "aws_key": "key",
           "github_token": "key", "bearer_token": "token", "jwt": "token", "private_key": "key", "url_password": "url",
           "password_field": "password"}

# (id, language, template): {v} is the value as written, {n} the noun.
TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("colon_end", "en", "Sure, my {n}: {v}"),
    ("parens", "en", "Please use my {n} ({v}) for the refund."),
    ("brackets", "en", "The {n} on the form is [{v}] and it is correct."),
    ("double_quotes", "en", 'She typed "{v}" as her {n}.'),
    ("single_quotes", "en", "He said '{v}' was the old {n}."),
    ("full_stop", "en", "Update the {n} to {v}."),
    ("question", "en", "Is your {n} {v}?"),
    ("line_end", "en", "Contact details\n{n}: {v}\nThanks, Sam"),
    ("text_start", "en", "{v} is the {n} we have on file."),
    ("query_string", "en", "GET /profile?{n}={v}&lang=en"),
    ("backticks", "en", "Logged {n} `{v}` in the ticket."),
    ("json_in_text", "en", 'payload {{"{n}": "{v}", "ok": true}}'),
    ("exclamation", "en", "Write it down: {v}!"),
    ("angle", "en", "From: Sam <{v}>"),
    ("markdown_bold", "en", "Your {n} is **{v}**"),
    ("csv", "en", "name,{n},city\nSam,{v},Paris"),
    ("tabs", "en", "row\t{v}\tend"),
    ("colon_space_fr", "fr", "Mon {n} : {v}."),
    ("colon_nbsp_fr", "fr", "Mon {n}\u00a0: {v}\u00a0!"),
    ("guillemets_fr", "fr", "Voici mon {n} « {v} », merci !"),
    ("parens_fr", "fr", "Notez le {n} ({v}) s'il vous plaît."),
    ("semicolon_fr", "fr", "Le {n} est {v} ; merci."),
    ("colon_de", "de", "Meine {n}: {v}."),
    ("quotes_de", "de", "Bitte die {n} „{v}“ verwenden."),
    ("comma_de", "de", "Die {n} lautet {v}, danke!"),
    ("parens_de", "de", "Neue {n} ({v}) gespeichert."),
    ("es_is", "es", "Mi {n} es {v}."),
    ("es_question", "es", "¿Es {v} tu {n}?"),
    ("es_parens", "es", "Usa el {n} ({v}), por favor."),
    ("es_guillemets", "es", "{n}: «{v}»"),
    ("ja_desu", "ja", "{n}は{v}です。"),
    ("ja_fullwidth_colon", "ja", "{n}：{v}"),
    ("ja_corner_quotes", "ja", "「{v}」に連絡してください。"),
    ("ja_fullwidth_parens", "ja", "{n}（{v}）を確認しました。"),
    ("ja_comma", "ja", "新しい{n}は{v}、古いのは不明。"),
    # shapes added after the first fixes: markup, typographic spaces and dashes, no space at all
    ("html_cell", "en", "<tr><td>{n}</td><td>{v}</td></tr>"),
    ("narrow_nbsp_fr", "fr", "Votre {n}\u202f: {v}\u202f?"),
    ("em_dash_es", "es", "Tu {n} — {v} — quedó guardado."),
    ("ja_glued", "ja", "{n}{v}までご連絡ください"),
)
PUNCTUATION = ".,;:!?"
# Two values side by side (the second right after the first), with the separators people use.
PAIRS = (("card", "iban"), ("iban", "iban"), ("phone_uk", "phone_fr"), ("email", "phone_us"), ("ipv4", "ipv4"),
         ("ipv4", "ipv6"), ("card", "card"), ("ssn", "phone_us"), ("openai_key", "aws_key"), ("iban", "card"))
PAIR_SEPARATORS = (" ", ", ", "/", "\n", ";")


@dataclass(frozen=True)
class Sensitive:
    kind: str
    value: str  # the exact sensitive substring (a key, a password: not the text around it)

    @property
    def secret(self) -> bool:
        return self.kind in SECRET_KINDS

    def needles(self) -> tuple[str, ...]:
        """The value as written, as JSON would escape it, and normalised (digits only, no spaces)."""
        v = self.value
        out = {v, json.dumps(v, ensure_ascii=False)[1:-1], json.dumps(v)[1:-1]}
        digits = "".join(c for c in v if c.isdigit())
        if self.kind in (*PHONE_KINDS, "card", "ssn") and len(digits) >= 10:
            out.add(digits)
            out.add(_ascii_digits(digits))
        if self.kind == "iban":
            out.add(v.replace(" ", ""))
        if self.kind in ("openai_key", "anthropic_key", "github_token", "jwt", "bearer_token") and len(v) >= 32:
            out.add(v[-20:])  # the random tail, in case only a prefix was taken
        if self.kind == "private_key":
            out.update(line for line in v.splitlines() if len(line) >= 20)
        return tuple(sorted(n for n in out if len(n) >= Scanner.MIN_LEN))


@dataclass(frozen=True)
class Case:
    id: str  # e.g. "phone_uk/parens_fr"
    lang: str
    context: str
    text: str
    values: tuple[Sensitive, ...]

    @property
    def kind(self) -> str:
        return self.values[0].kind

    @property
    def secret(self) -> bool:
        return all(v.secret for v in self.values)

    def needles(self) -> tuple[str, ...]:
        return tuple(n for v in self.values for n in v.needles())


# -- value generators (each call a new value) -----------------------------------------------------

def _ascii_digits(text: str) -> str:
    return "".join(str(int(c)) for c in text)


def _d(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def _devanagari(text: str) -> str:
    return text.translate({ord(c): chr(0x0966 + int(c)) for c in string.digits})


def _fullwidth(text: str) -> str:
    return text.translate({ord(c): ord(c) + 0xFEE0 for c in string.digits} | {ord("-"): "－"})


def _phone(kind: str, fmt: int, rng: random.Random) -> str:
    d = lambda n, first="0123456789": _d(rng, n, first)  # noqa: E731
    forms = {
        "phone_us": lambda: [f"+1 {d(3, '2345678')} {d(3, '2345678')} {d(4)}", f"({d(3, '2345678')}) {d(3, '2345678')}-{d(4)}",
                             f"{d(3, '2345678')}-{d(3, '2345678')}-{d(4)}", f"{d(3, '2345678')}.{d(3, '2345678')}.{d(4)}",
                             f"+1-{d(3, '2345678')}-{d(3, '2345678')}-{d(4)}", f"+1 ({d(3, '2345678')}) {d(3, '2345678')}-{d(4)}",
                             f"1-{d(3, '2345678')}-{d(3, '2345678')}-{d(4)}", f"+1{d(3, '2345678')}{d(3, '2345678')}{d(4)}"],
        "phone_uk": lambda: [f"+44 20 {d(4, '3789')} {d(4)}", f"020 {d(4, '3789')} {d(4)}", f"+44 (0)20 {d(4, '3789')} {d(4)}",
                             f"07{d(3)} {d(6)}", f"+44 7{d(3)} {d(6)}", f"+447{d(9)}", f"0161 {d(3, '23456789')} {d(4)}"],
        "phone_fr": lambda: [f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}", f"01 {d(2)} {d(2)} {d(2)} {d(2)}",
                             f"06.{d(2)}.{d(2)}.{d(2)}.{d(2)}", f"07-{d(2)}-{d(2)}-{d(2)}-{d(2)}",
                             f"+33 (0)6 {d(2)} {d(2)} {d(2)} {d(2)}", f"+336{d(8)}",
                             "\u00a0".join(["01", d(2), d(2), d(2), d(2)])],  # (non-breaking spaces, as typeset)
        "phone_de": lambda: [f"+49 30 {d(8, '123456789')}", f"030 {d(8, '123456789')}", f"030/{d(8, '123456789')}",
                             f"+49 (0)30 {d(4, '123456789')} {d(4)}", f"0171 {d(7, '123456789')}", f"+49 171 {d(7, '123456789')}",
                             f"+49-89-{d(7, '123456789')}", f"+49 (0) 30 {d(4, '123456789')} {d(4)}"],
        "phone_in": lambda: [f"+91 {d(5, '6789')} {d(5)}", f"+91-{d(5, '6789')}-{d(5)}", f"+91{d(10, '6789')}",
                             f"0{d(5, '6789')} {d(5)}", f"+91 11 {d(4, '23456789')} {d(4)}", f"011-{d(4, '2345')}-{d(4)}",
                             _devanagari(f"+91 {d(5, '6789')} {d(5)}")],
        "phone_br": lambda: [f"+55 11 9{d(4)}-{d(4)}", f"(11) 9{d(4)}-{d(4)}", f"+55 (11) 9{d(4)}-{d(4)}",
                             f"11 9{d(4)}-{d(4)}", f"+55 21 {d(4, '2345')}-{d(4)}", f"+5511 9{d(4)}{d(4)}"],
        "phone_jp": lambda: [f"+81 3-{d(4)}-{d(4)}", f"03-{d(4)}-{d(4)}", f"090-{d(4)}-{d(4)}", f"+81 90 {d(4)} {d(4)}",
                             f"(03) {d(4)}-{d(4)}", f"+81-90-{d(4)}-{d(4)}", _fullwidth(f"03-{d(4)}-{d(4)}")],
    }[kind]()
    return forms[fmt % len(forms)]


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, c in enumerate(reversed(body)):
        x = int(c)
        if i % 2 == 0:
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return body + str((10 - total % 10) % 10)


def _card(fmt: int, rng: random.Random) -> str:
    brand = fmt % 4
    if brand == 3:  # American Express: 15 digits, 4-6-5
        n = _luhn_complete(rng.choice(("34", "37")), 15, rng)
        return (f"{n[:4]} {n[4:10]} {n[10:]}", f"{n[:4]}-{n[4:10]}-{n[10:]}", n)[fmt // 4 % 3]
    n = _luhn_complete(("4", rng.choice(("51", "52", "53", "54", "55")), "6011")[brand], 16, rng)
    groups = [n[i:i + 4] for i in range(0, 16, 4)]
    return (" ".join(groups), "-".join(groups), n)[fmt // 4 % 3]


_IBAN_SHAPES = {  # country: BBAN as (alphabet, length) parts
    "DE": [(string.digits, 18)], "GB": [(string.ascii_uppercase, 4), (string.digits, 14)],
    "FR": [(string.digits, 10), (string.ascii_uppercase + string.digits, 11), (string.digits, 2)],
    "ES": [(string.digits, 20)], "NL": [(string.ascii_uppercase, 4), (string.digits, 10)],
    "IT": [(string.ascii_uppercase, 1), (string.digits, 10), (string.ascii_uppercase + string.digits, 12)],
    "BE": [(string.digits, 12)], "CH": [(string.digits, 5), (string.ascii_uppercase + string.digits, 12)],
}


def _iban(fmt: int, rng: random.Random) -> str:
    country = sorted(_IBAN_SHAPES)[fmt % len(_IBAN_SHAPES)]
    bban = "".join(rng.choice(alpha) for alpha, n in _IBAN_SHAPES[country] for _ in range(n))
    num = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    iban = f"{country}{98 - num % 97:02d}{bban}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if fmt // len(_IBAN_SHAPES) % 2 == 0 else iban


def _ipv6(fmt: int, rng: random.Random) -> str:
    h = lambda: f"{rng.randrange(1, 0xFFFF):x}"  # noqa: E731
    forms = [f"2001:db8:{h()}:{h()}::{h()}:{h()}", ":".join(f"{rng.randrange(0x1000, 0xFFFF):04x}" for _ in range(8)),
             f"fe80::{h()}:{h()}:{h()}:{h()}", f"2001:DB8:{h()}::{h()}".upper(), f"2a00:1450:{h()}:{h()}::{h()}",
             f"::ffff:{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
             f"2001:db8:{h()}:{h()}:{h()}::"]
    return forms[fmt % len(forms)]


def _secret(kind: str, fmt: int, rng: random.Random) -> tuple[str, str]:
    """(value, text to write): the text may carry the value inside a larger form (a URL, a header)."""
    alnum = string.ascii_letters + string.digits
    r = lambda n, alpha=alnum: "".join(rng.choice(alpha) for _ in range(n))  # noqa: E731
    if kind == "openai_key":
        v = ("sk-" + r(48), "sk-proj-" + r(56, alnum + "_-") + r(8), "sk-svcacct-" + r(40))[fmt % 3]
        return v, v
    if kind == "anthropic_key":
        v = "sk-ant-api03-" + r(90, alnum + "_-") + r(3) + "AA"
        return v, v
    if kind == "aws_key":
        v = rng.choice(("AKIA", "ASIA")) + r(16, string.ascii_uppercase + "234567")
        return v, v
    if kind == "github_token":
        v = ("ghp_" + r(36), "github_pat_11" + r(20) + "_" + r(59), "gho_" + r(36))[fmt % 3]
        return v, v
    if kind == "bearer_token":
        token = r(40, alnum + "._-") + r(2)
        return token, ("Authorization: Bearer " + token, "Bearer " + token, "bearer " + token)[fmt % 3]
    if kind == "jwt":
        def part(n: int) -> str:
            return r(n, alnum + "_-")
        v = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJ" + part(60) + "." + part(43)
        return v, v
    if kind == "private_key":
        label = ("RSA PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY")[fmt % 4]
        body = "\n".join(r(64, alnum + "+/") for _ in range(3)) + "\n" + r(20, alnum + "+/") + "=="
        return body, f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
    if kind == "url_password":
        pw = r(6) + rng.choice("!$*-_~") + r(7)
        forms = [f"postgres://app:{pw}@db.internal:5432/orders", f"https://admin:{pw}@example.com/admin",
                 f"mysql+pymysql://root:{pw}@127.0.0.1/app", f"redis://:{pw}@cache:6379/0", f"amqp://guest:{pw}@rabbit/",
                 f"mongodb+srv://svc_reader:{pw}@cluster0.example.net/?retryWrites=true"]
        return pw, forms[fmt % len(forms)]
    if kind == "password_field":
        pw = r(7) + rng.choice("!$*-_~") + r(5)
        forms = [f"password: {pw}", f"pwd={pw}", f"Passwort: {pw}", f"mot de passe : {pw}", f"contraseña: {pw}",
                 f"パスワード：{pw}", f"passcode {pw}", f"DB_PASSWORD={pw}", f"senha: {pw}", f"wachtwoord: {pw}",
                 f"пароль: {pw}", f"Kennwort lautet {pw}"]
        return pw, forms[fmt % len(forms)]
    raise ValueError(kind)


def make_value(kind: str, fmt: int, rng: random.Random) -> tuple[str, str]:
    """(sensitive value, what the sentence contains)."""
    if kind in PHONE_KINDS:
        v = _phone(kind, fmt, rng)
    elif kind == "ipv4":
        v = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        return v, (v, f"{v}:8080", f"{v}/24")[fmt % 3]  # (too short for the scanner: made again)
    elif kind == "ipv6":
        v = _ipv6(fmt, rng)
        bracketed = fmt // 7 % 2 == 1 and not v.endswith("::")
        return v, f"[{v}]:443" if bracketed else v
    elif kind == "email":
        first, last = rng.choice(("jane", "omar", "li", "sofia", "hans", "yuki")), r_word(rng)
        local = (f"{first}.{last}", f"{first}.{last}+billing", f"{first}_{last}", f"{first}-{last}{rng.randrange(100)}",
                 f"{first[0].upper()}{last.title()}")[fmt % 5]
        domain = ("example.com", "mail.example.co.uk", "beispiel.de", "exemple.fr", "ejemplo.es", "example.co.jp")[fmt % 6]
        v = f"{local}@{domain}"
    elif kind == "card":
        v = _card(fmt, rng)
    elif kind == "iban":
        v = _iban(fmt, rng)
    elif kind == "ssn":
        while True:
            area = rng.randrange(1, 900)
            if area != 666:
                break
        v = f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"
    else:
        return _secret(kind, fmt, rng)
    return v, v


def r_word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3))


# -- the corpus ----------------------------------------------------------------------------------

def corpus(seed: int = 0, kinds: Iterable[str] = KINDS, *, used: set[str] | None = None) -> list[Case]:
    """Templates x kinds, a punctuation sweep and side-by-side pairs; values unique within the corpus
    and, when several corpora share ``used``, across them."""
    rng = random.Random(seed)
    kinds = tuple(kinds)
    used = set() if used is None else used
    cases: list[Case] = []

    def fresh(kind: str, fmt: int) -> tuple[Sensitive, str]:
        for _ in range(100):
            value, written = make_value(kind, fmt, rng)
            s = Sensitive(kind, value)
            needles = s.needles()
            if len(value) >= Scanner.MIN_LEN and not any(n in used for n in needles):
                used.update(needles)
                return s, written
        raise RuntimeError(f"could not make a unique {kind} value")

    for k_i, kind in enumerate(kinds):
        for t_i, (tid, lang, template) in enumerate(TEMPLATES):
            s, written = fresh(kind, t_i + k_i)
            text = template.format(n=NOUNS[NOUN_OF[kind]][lang], v=written)
            cases.append(Case(f"{kind}/{tid}", lang, tid, text, (s,)))
        for p in PUNCTUATION:
            s, written = fresh(kind, k_i + ord(p))
            cases.append(Case(f"{kind}/before '{p}'", "en", f"before '{p}'", f"It is {written}{p} Noted", (s,)))
    for a, b in PAIRS:
        if a not in kinds or b not in kinds:
            continue
        for sep_i, sep in enumerate(PAIR_SEPARATORS):
            sa, wa = fresh(a, sep_i)
            sb, wb = fresh(b, sep_i + 1)
            sep_name = {" ": "space", ", ": "comma", "/": "slash", "\n": "newline", ";": "semicolon"}[sep]
            cases.append(Case(f"{a}+{b}/{sep_name}", "en", f"side by side ({sep_name})",
                              f"Details: {wa}{sep}{wb} and that is all", (sa, sb)))
    return cases


def corpora(channels: Iterable[str], kinds: Iterable[str] = KINDS) -> dict[str, list[Case]]:
    """One corpus per channel, every value unique across all of them, so a leak names its channel
    (``check_unique`` proves that no value occurs inside another case's text)."""
    used: set[str] = set()
    kinds = tuple(kinds)
    return {ch: corpus(i + 1, kinds, used=used) for i, ch in enumerate(channels)}


def check_unique(scanner: Scanner, cases: Iterable[tuple[str, Case]]) -> None:
    """No case's needle may occur in another case's text: a scan names exactly the case that leaked."""
    for ch, case in cases:
        for needle in scanner.find(case.text):
            owner = scanner.owner[needle]
            if (owner.channel, owner.case) != (ch, case):
                raise AssertionError(f"{needle!r} of {owner.channel}:{owner.case.id} occurs in {ch}:{case.id}")


# Plain text of every length class, for the fast-path comparisons.
PLAIN_TEXTS = (
    "Hello Alice", "Thanks, that helps.", "ok", "", " ", "Où est la gare ?", "駅はどこですか。", "Straße über Brücke",
    "emoji 🙂 and more 🚀", "a-b_c=d: e", "version 1.2.3 at 12:30:45", "order A-1001 of 3 items",
    "trace 01a20274-f5e7-76d3-9385-30860b60449f", "delivered 2026-11-10, total 49.00 EUR",
    "word " * 120, "x" * 511, "x" * 512, "y" * 513, ("Long text without any digits or at signs. " * 20),
    "長い日本語の文章です。" * 60, "Hello Alice " * 50,
)


# -- the scanner ---------------------------------------------------------------------------------

class Scanner:
    """Find which of many needles occur in a text, in one pass over it.

    Each needle is indexed by ``STEP`` consecutive k-grams taken where it is most distinctive (the
    grams fewest other needles share); the text's k-grams are taken every ``STEP`` characters, so an
    occurrence always shows one of its indexed grams; candidates are then compared exactly.
    """

    K = 6
    STEP = 2
    MIN_LEN = K + STEP - 1

    def __init__(self, owner: dict[str, Any]) -> None:
        self.owner = owner  # needle -> the case it belongs to
        k, step = self.K, self.STEP
        counts: dict[str, int] = {}
        for needle in owner:
            if len(needle) < self.MIN_LEN:
                raise ValueError(f"needle {needle!r} is shorter than {self.MIN_LEN}")
            for g in {needle[i:i + k] for i in range(len(needle) - k + 1)}:
                counts[g] = counts.get(g, 0) + 1
        self.index: dict[str, list[tuple[str, int]]] = {}
        for needle in owner:
            best = min(range(len(needle) - self.MIN_LEN + 1),
                       key=lambda o: sum(counts[needle[o + j:o + j + k]] for j in range(step)))
            for j in range(step):
                self.index.setdefault(needle[best + j:best + j + k], []).append((needle, best + j))

    def find(self, text: str) -> set[str]:
        k, index = self.K, self.index
        found: set[str] = set()
        for i in [i for i in range(0, len(text) - k + 1, self.STEP) if text[i:i + k] in index]:
            for needle, o in index[text[i:i + k]]:
                if i >= o and needle not in found and text.startswith(needle, i - o):
                    found.add(needle)
        return found


@dataclass(frozen=True)
class Leak:
    channel: str
    case: Case
    value: Sensitive


def index(cases: Iterable[tuple[str, Case]]) -> Scanner:
    """A scanner for every form of every value of ``(channel, case)`` pairs; its hits are ``Leak``s."""
    return Scanner({n: Leak(ch, c, v) for ch, c in cases for v in c.values for n in v.needles()})


def leaks(scanner: Scanner, haystack: str) -> list[Leak]:
    """Each value (in any of its forms) that occurs in ``haystack``, once."""
    return sorted({scanner.owner[n] for n in scanner.find(haystack)}, key=lambda lk: (lk.channel, lk.case.id, lk.value.value))

