"""A trace as self-contained HTML for Jupyter (``Trace._repr_html_``): no scripts, no network assets.

A waterfall of the span tree with latencies, then each LLM call: messages, system prompt,
retrieved chunks, tool calls, raw completion beside the parsed output (flagged when parsing lost
something), validations, error, cost; then the user's feedback. Every value is escaped.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Any

# Written plainly, then every declaration made !important and the view's elements reset to the
# browser's defaults first: a notebook's own stylesheet (JupyterLab's .jp-RenderedHTMLCommon,
# classic Notebook's .rendered_html) right-aligns table cells, fixes table layout and breaks words
# mid-word, and its selectors (e.g. "tbody tr:nth-child(odd)") outrank any single class of ours.
# The bars' geometry is inline and !important too, so the reset cannot undo it.
_CSS = """
.llmt, .llmt * {all:revert; box-sizing:border-box}
.llmt {display:block; font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif; color:#222; max-width:1100px;
  text-align:left; background:transparent}
.llmt * {font-family:inherit; font-size:inherit; line-height:inherit; color:inherit; text-align:left;
  word-break:normal; overflow-wrap:break-word; white-space:normal; letter-spacing:normal; text-transform:none}
.llmt h3 {font-size:15px; font-weight:700; margin:6px 0}
.llmt h4 {font-size:13px; font-weight:700; margin:10px 0 4px}
.llmt div {display:block; margin:0; padding:0}
.llmt .bar {height:10px; background:#7aa7e0; border-radius:2px}
.llmt .err .bar {background:#e07a7a}
.llmt table {border-collapse:collapse; width:100%; table-layout:auto; margin:0; border:0; background:transparent}
.llmt tr, .llmt tbody tr, .llmt tbody tr:nth-child(odd), .llmt tbody tr:hover {background:transparent; border:0}
.llmt td {padding:2px 6px; vertical-align:top; border:0; border-bottom:1px solid #eee; text-align:left;
  white-space:normal; max-width:none}
.llmt pre {display:block; white-space:pre-wrap; word-break:normal; overflow-wrap:anywhere; margin:0; max-height:240px;
  overflow:auto; background:#f7f7f7; padding:4px; border:0; border-radius:0; font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;
  text-align:left}
.llmt .ok {color:#2a7} .llmt .bad {color:#c33; font-weight:600} .llmt .muted {color:#888}
.llmt .lost {outline:2px solid #e0a100} .llmt .call {border:1px solid #ddd; border-radius:4px; padding:6px; margin:8px 0}
.llmt b {font-weight:700}
"""


def _important(css: str) -> str:
    """Every declaration of ``css`` marked !important."""
    import re

    return re.sub(r"\s*([;}])", lambda m: m.group(1), re.sub(r"([^;{}\s][^;{}]*?:[^;{}]+?)\s*(?=[;}])",
                                                              r"\1 !important", css))


_STYLE = "<style>" + _important(_CSS) + "</style>"


def _text(value: Any, limit: int = 4000) -> str:
    if value is None:
        return '<span class="muted">∅</span>'
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1, default=str)
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text)} chars)"
    return f"<pre>{escape(text)}</pre>"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _when(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def _waterfall(doc: dict[str, Any]) -> str:
    start = _when(doc.get("started_at"))
    total = doc.get("latency_ms") or 0
    depth: dict[str | None, int] = {None: 0}
    rows = []
    for s in doc["spans"]:
        d = depth.get(s["parent_id"], 0) + 1
        depth[s["span_id"]] = d
        begin = _when(s["started_at"])
        left = ((begin - start) / total * 100) if start and begin and total else 0
        width = max(0.5, (s["latency_ms"] or 0) / total * 100) if total else 0
        cls = " err" if s["status"] == "error" else ""
        err = f' <span class="bad">{escape(s["error"]["type"])}</span>' if s.get("error") else ""
        rows.append(
            f'<tr class="{cls.strip()}"><td style="padding-left:{d * 12}px !important">{escape(s["kind"] or "")} '
            f'<b>{escape(s["name"] or "")}</b>{err}</td><td style="width:45% !important"><div class="bar" '
            f'style="margin-left:{max(0, min(left, 100)):.1f}% !important;width:{min(width, 100):.1f}% !important">'
            f"</div></td><td>{_ms(s['latency_ms'])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _call(c: dict[str, Any]) -> str:
    t, lat = c["tokens"], c["latency_ms"]
    head = (f"<b>{escape(str(c['model']))}</b> → {escape(str(c['model_version'] or '?'))} "
            f"({escape(str(c['provider'] or '?'))}) · tokens {t['input']}/{t['output']} · total {_ms(lat['total'])} · "
            f"ttft {_ms(lat['ttft'])} · retrieval {_ms(lat['retrieval'])} · tools {_ms(lat['tools'])} · "
            f"cost {_usd(c['cost_usd'])} · "
            f"<span class=\"{'ok' if c['status'] == 'ok' else 'bad'}\">{escape(c['status'] or '')}</span>")
    parts = [f'<div class="call"><div>{head}</div>']
    if c.get("content_missing"):
        parts.append(f'<div class="muted">content {escape(c["content_missing"])}</div>')
    if c.get("error"):
        parts.append(f'<div class="bad">{escape(c["error"]["type"])}: {escape(str(c["error"]["message"]))}</div>'
                     f'<div class="muted">{escape(c["error"]["hint"])}</div>')
    if c.get("system_prompt"):
        parts.append("<h4>System prompt</h4>" + _text(c["system_prompt"]))
    messages = c["input_messages"] if isinstance(c["input_messages"], list) else []
    if messages:
        parts.append("<h4>Messages</h4><table>" + "".join(
            f"<tr><td>{escape(str(m.get('role')))}</td><td>{_text(m.get('content') or m.get('tool_calls'))}</td></tr>"
            for m in messages if isinstance(m, dict)) + "</table>")
    if c["retrieved"]:
        parts.append("<h4>Retrieved</h4><table>" + "".join(
            f"<tr><td>{escape(str(r['source_id']))}</td><td>{r['score']}</td><td>{_text(r['content'], 600)}</td></tr>"
            for r in c["retrieved"]) + "</table>")
    if c["tool_calls"]:
        parts.append("<h4>Tool calls</h4><table>" + "".join(
            f"<tr><td>{escape(str(tc['name']))}<br><span class=\"muted\">{escape(str(tc['id']))}</span></td>"
            f"<td>{_text(tc['args'], 800)}</td><td>{_text(tc['result'], 800)}</td>"
            f"<td class=\"{'ok' if tc['status'] == 'ok' else 'bad'}\">{escape(str(tc['status']))} {_ms(tc['latency_ms'])}</td></tr>"
            for tc in c["tool_calls"]) + "</table>")
    lost = c["raw_completion"] not in (None, "") and c["parsed"] is None and c.get("parser")
    parts.append('<h4>Raw completion / parsed</h4><table><tr>'
                 f'<td style="width:50% !important">{_text(c["raw_completion"])}</td>'
                 f'<td class="{"lost" if lost else ""}">{_text(c["parsed"])}'
                 + (f'<div class="bad">parse error: {escape(str(c["parse_error"]))}</div>' if c.get("parse_error") else "")
                 + "</td></tr></table>")
    parts.append(_validations(c["validations"]))
    parts.append("</div>")
    return "".join(parts)


def _validations(vals: list[dict]) -> str:
    if not vals:
        return ""
    return "<h4>Validations</h4>" + "".join(
        f'<div class="{"ok" if v["passed"] else "bad"}">{escape(str(v["rule"]))}: '
        f'{"passed" if v["passed"] else "FAILED"} {escape(str(v["detail"])) if v["detail"] else ""}</div>' for v in vals)


def render_html(doc: dict[str, Any]) -> str:
    t = doc["totals"]
    meta = " · ".join(f"{k} {escape(str(doc[k]))}" for k in ("feature", "user_id", "session_id", "prompt_version")
                      if doc.get(k))
    cost = _usd(t["cost_usd"])
    parts = [_STYLE, '<div class="llmt">',
             f"<h3>{escape(str(doc.get('name')))} <span class=\"{'ok' if doc['status'] == 'ok' else 'bad'}\">"
             f"{escape(str(doc['status']))}</span></h3>",
             f'<div class="muted">trace {escape(doc["trace_id"])} · {_ms(doc.get("latency_ms"))} · {t["llm_calls"]} LLM '
             f"call(s) · tokens {t['input_tokens']}/{t['output_tokens']} · cost {cost} · errors {t['errors']}"
             f"{' · ' + meta if meta else ''}</div>",
             "<h4>Timeline</h4>", _waterfall(doc)]
    for c in doc["llm_calls"]:
        parts.append(_call(c))
    parts.append(_validations(doc["validations"]))
    if doc["feedback"]:
        parts.append("<h4>User's action</h4>" + "".join(
            f"<div><b>{escape(f['action'])}</b>{' score ' + str(f['score']) if f['score'] is not None else ''} "
            f"{_text(f['correction'], 2000) if f['correction'] else ''}"
            f"<span class=\"muted\">{escape(str(f['source']))} · {escape(str(f['at']))}</span></div>"
            for f in doc["feedback"]))
    parts.append("</div>")
    return "".join(parts)
