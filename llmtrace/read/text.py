"""A trace document as a readable text tree (the CLI's ``show`` and ``str(trace)``).

By default each value is cut to a line; ``full=True`` (``llmtrace show --full``) prints every
message and whole content, each long value on indented lines of its own.
"""

from __future__ import annotations

import json
from typing import Any

_WIDTH = 100


def _short(value: Any, n: int = 80) -> str:
    if value is None:
        return "∅"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _ms(value: float | None) -> str:
    return "–" if value is None else (f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms")


def _whole(value: Any, pad: str) -> str:
    """A value in full: on the same line when short, else on indented lines below."""
    if value is None:
        return "∅"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2, default=str)
    if "\n" not in text and len(text) <= 80:
        return text
    return "\n" + "\n".join(pad + "    " + line for line in text.splitlines())


def render_text(doc: dict[str, Any], full: bool = False) -> str:
    lines = []
    cut = (lambda value, n=80, pad="": _whole(value, pad)) if full else (lambda value, n=80, pad="": _short(value, n))
    head = [f"trace {doc['trace_id']}", repr(doc.get("name")), doc.get("status") or "open",
            _ms(doc.get("latency_ms"))]
    for key in ("feature", "user_id", "session_id", "team", "prompt_version"):
        if doc.get(key):
            head.append(f"{key}={doc[key]}")
    lines.append("  ".join(head))
    t = doc["totals"]
    lines.append(f"  {t['llm_calls']} LLM call(s), tokens in/out {t['input_tokens']}/{t['output_tokens']}, "
                 f"cost {_usd(t['cost_usd'])}, errors {t['errors']}")
    calls = {c["span_id"]: c for c in doc["llm_calls"]}
    depth: dict[str | None, int] = {None: 0}
    for s in doc["spans"]:
        d = depth.get(s["parent_id"], 0) + 1
        depth[s["span_id"]] = d
        pad = "  " * d
        mark = "✗" if s["status"] == "error" else "•"
        lines.append(f"{pad}{mark} {s['kind']:<9} {s['name']}  {_ms(s['latency_ms'])}")
        if s["error"]:
            lines.append(f"{pad}    error [{s['error']['type']}] {cut(s['error']['message'], 80, pad)}")
        call = calls.get(s["span_id"])
        if call is not None:
            lines.extend(pad + "    " + line for line in "\n".join(_call_lines(call, cut, full)).splitlines())
        elif s["kind"] == "tool":
            lines.append(f"{pad}    args {cut(s['inputs'], 70, pad)} → {cut(s['outputs'], 70, pad)}")
        elif full and (s["inputs"] is not None or s["outputs"] is not None):
            lines.append(f"{pad}    inputs {cut(s['inputs'], 70, pad)}")
            lines.append(f"{pad}    outputs {cut(s['outputs'], 70, pad)}")
    if doc["validations"]:
        lines.append("  validations: " + "; ".join(_val(v) for v in doc["validations"]))
    if doc["feedback"]:
        for f in doc["feedback"]:
            extra = f" score={f['score']}" if f["score"] is not None else ""
            extra += f" correction={cut(f['correction'], 60, '  ')}" if f["correction"] else ""
            extra += f" comment={cut(f['comment'], 60, '  ')}" if f.get("comment") else ""
            lines.append(f"  feedback: {f['action']}{extra} ({f['source']}, {f['at']})")
    if full:
        return "\n".join(lines)
    return "\n".join(line[:_WIDTH * 2] for line in lines)


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


def _val(v: dict) -> str:
    return f"{v['rule']} {'passed' if v['passed'] else 'FAILED'}" + (f" ({_short(v['detail'], 50)})" if v["detail"] else "")


def _call_lines(c: dict[str, Any], cut: Any = None, full: bool = False) -> list[str]:
    cut = cut or (lambda value, n=80, pad="": _short(value, n))
    tok = c["tokens"]
    lat = c["latency_ms"]
    out = [f"model {c['model']} → {c['model_version'] or '?'} ({c['provider'] or '?'})  "
           f"tokens {tok['input']}/{tok['output']}  ttft {_ms(lat['ttft'])}  retrieval {_ms(lat['retrieval'])}  "
           f"tools {_ms(lat['tools'])}  finish {c['finish_reason'] or '–'}  cost {_usd(c['cost_usd'])}"
           + (f"  retries {c['retry_count']}" if c["retry_count"] else "")
           + (f"  fell back from {c['fallback_from']}" if c["fallback_from"] else "")]
    if c["content_missing"]:
        out.append(f"content: {c['content_missing']}")
    if c["system_prompt"]:
        out.append(f"system: {cut(c['system_prompt'])}")
    messages = c["input_messages"] if isinstance(c["input_messages"], list) else []
    for m in messages if full else messages[-3:]:
        if isinstance(m, dict) and m.get("role") != "system":
            out.append(f"{m.get('role')}: {cut(m.get('content') or m.get('tool_calls'))}")
    if c["retrieved"] and full:
        for r in c["retrieved"]:
            score = f"{r['score']:.3g}" if isinstance(r["score"], (int, float)) else "–"
            out.append(f"retrieved {r['source_id']} (score {score}): {cut(r['content'])}")
    elif c["retrieved"]:
        out.append("retrieved: " + ", ".join(
            f"{r['source_id']}({r['score']:.3g})" if isinstance(r["score"], (int, float)) else f"{r['source_id']}"
            for r in c["retrieved"][:6]))
    for tc in c["tool_calls"]:
        out.append(f"tool call {tc['name']}({cut(tc['args'], 50)}) → {cut(tc['result'], 50)} "
                   f"[{tc['status']}, {_ms(tc['latency_ms'])}]")
    if c["raw_completion"]:
        out.append(f"raw: {cut(c['raw_completion'])}")
    if c["parsed"] is not None:
        out.append(f"parsed: {cut(c['parsed'])}")
    if c["parse_error"]:
        out.append(f"parse error: {cut(c['parse_error'])}")
    for v in c["validations"]:
        out.append("validation: " + _val(v))
    return out
