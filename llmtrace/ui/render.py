"""How the pages show values: Jinja2 with autoescape on, and filters that turn the record's values
into text — content with its redaction placeholders marked, and content that is not there shown
with the reason (expired, purged, never captured, not readable), never as an empty box.

Every filter returns escaped markup: a value from the store is text, whatever it contains.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from llmtrace.base.fields import STATUSES

# capture/redact.py writes placeholders such as [EMAIL], [CARD:1a2b3c4d], [SECRET], [PROCESSOR_FAILED]
_PLACEHOLDER = re.compile(r"\[(?:[A-Z][A-Z0-9_]{1,40})(?::[0-9a-f]{4,64})?\]")
MISSING = {
    "expired": "expired (content retention ended)",
    "purged": "purged",
    "not_captured": "never captured (capture=metadata)",
    "missing": "not recorded",
    "not_readable": "not readable (this database role may not read content)",
}
MAX_SHOWN_CHARS = 200_000  # one field; the rest is in the JSON document


def environment() -> Environment:
    env = Environment(loader=PackageLoader("llmtrace.ui", "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(content=content, ms=ms, usd=usd, num=num, when=when, ago=ago, jsonish=jsonish, short=short,
                       missing=missing_label, qs=query_string, pathq=quote_path)
    env.globals.update(MISSING=MISSING, statuses=STATUSES)
    return env


def missing_label(reason: str | None) -> str:
    return MISSING.get(reason or "", reason or "")


def _marked(text: str) -> Markup:
    """Text, escaped, with each redaction placeholder wrapped so it reads as 'removed here'."""
    out: list[str] = []
    last = 0
    for m in _PLACEHOLDER.finditer(text):
        out.append(str(escape(text[last:m.start()])))
        out.append(f'<mark class="redacted" title="removed by redaction before storage">{escape(m.group(0))}</mark>')
        last = m.end()
    out.append(str(escape(text[last:])))
    return Markup("".join(out))


def jsonish(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def content(value: Any, missing: str | None = None, *, block: bool = True) -> Markup:
    """A content field: the text (placeholders marked) in a <pre>, or why there is none."""
    if value is None:
        if missing:
            return Markup('<span class="missing" data-missing="{0}">{1}</span>').format(missing, missing_label(missing))
        return Markup('<span class="none">none</span>')
    text = jsonish(value)
    extra = Markup("")
    if len(text) > MAX_SHOWN_CHARS:
        extra = Markup('<span class="none">… {0:,} more characters in the JSON document</span>').format(
            len(text) - MAX_SHOWN_CHARS)
        text = text[:MAX_SHOWN_CHARS]
    if not text:
        return Markup('<span class="none">empty text</span>')
    if block:
        return Markup("<pre class=\"content\">{0}</pre>{1}").format(_marked(text), extra)
    return Markup("<span class=\"content\">{0}</span>{1}").format(_marked(text), extra)


def short(value: Any, n: int = 120) -> str:
    if value is None:
        return ""
    text = " ".join(jsonish(value).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def usd(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}".rstrip("0")


def num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def when(value: str | None) -> str:
    parsed = _parse(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") if parsed else "–"


def ago(value: str | None, now: datetime | None = None) -> str:
    parsed = _parse(value)
    if parsed is None:
        return ""
    seconds = ((now or datetime.now(timezone.utc)) - parsed).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now" if seconds < 5 else f"{seconds:.0f}s ago"


def query_string(params: dict[str, Any], **changes: Any) -> str:
    """``?a=1&b=2`` from the current filters with some changed (None drops one)."""
    merged = {**params, **changes}
    pairs = [(k, str(v)) for k, v in merged.items() if v not in (None, "", False)]
    return "?" + urlencode(pairs) if pairs else "?"


def quote_path(value: str) -> str:
    """An id as one path segment: '/' and every other reserved character percent-encoded."""
    return quote(str(value), safe="")
