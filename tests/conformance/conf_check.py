"""Assertions shared by the conformance tests: a record's fields against what went on the wire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conf_wire import Usage

DELAY = 0.15  # seconds between the token-less opening chunk and the first content delta
SLACK_MS = 250.0  # scheduling room above DELAY on a shared 2-core machine


def record(tracer, trace_id: str) -> dict[str, Any]:
    """The SIGNALS.md document of a trace, after everything queued was written."""
    assert trace_id, "no trace id"
    tracer.flush(10)
    return tracer.get_trace(trace_id).to_dict()


def only_call(doc: dict) -> dict:
    calls = doc["llm_calls"]
    assert len(calls) == 1, [c["name"] for c in calls]
    return calls[0]


def assert_tokens(call: dict, usage: Usage | None, *, reasoning: bool = False, cache_write: bool = False) -> None:
    """tokens.* equal the usage the server sent; null (never 0) when it sent none."""
    tok = call["tokens"]
    if usage is None:
        assert (tok["input"], tok["output"], tok["total"], tok["input_cached"]) == (None, None, None, None), tok
        return
    assert tok["input"] == usage.input, tok
    assert tok["output"] == usage.output, tok
    assert tok["total"] == usage.total, tok
    assert tok["input_cached"] == usage.cached, tok
    if reasoning:
        assert tok["reasoning"] == usage.reasoning, tok
    if cache_write:
        assert tok.get("input_cache_write") == usage.cache_write, tok


def assert_ttft(call: dict, delay: float = DELAY) -> None:
    """TTFT is the first chunk with content or a tool-call delta: never before the server sent it."""
    lat = call["latency_ms"]
    assert call["streamed"] is True
    assert lat["ttft"] is not None, lat
    assert delay * 1000 <= lat["ttft"] <= lat["total"], lat
    assert lat["ttft"] < delay * 1000 + SLACK_MS, lat


def openai_wire_messages(body: dict) -> list[dict]:
    """The messages of an OpenAI request in SIGNALS.md's shape (tool-call arguments as objects)."""
    out = []
    for m in body["messages"]:
        msg = {"role": m["role"], "content": m.get("content")}
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"id": c["id"], "name": c["function"]["name"],
                                  "args": json.loads(c["function"]["arguments"])} for c in m["tool_calls"]]
        if m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    return out


def comparable(messages: list[dict]) -> list[dict]:
    """Recorded messages reduced to what the wire carries (role, content, tool calls, tool_call_id).
    An empty assistant content and a null one are the same on the wire."""
    out = []
    for m in messages:
        msg = {"role": m["role"], "content": m.get("content") or None}
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"id": c["id"], "name": c["name"],
                                  "args": json.loads(c["args"]) if isinstance(c["args"], str) else c["args"]}
                                 for c in m["tool_calls"]]
        if m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    return out


def walk(value: Any):
    """Every (key, value) pair in nested dicts and lists."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def secret_hits(db_file: str | Path, secrets: list[str]) -> list[str]:
    """Which secrets (or their distinctive tail) appear in the SQLite file or its journals."""
    base = Path(db_file)
    blobs = [p.read_bytes() for p in (base, Path(f"{base}-wal"), Path(f"{base}-journal")) if p.exists()]
    hits = []
    for secret in secrets:
        for needle in (secret, secret[-16:]):
            if any(needle.encode() in b for b in blobs):
                hits.append(needle)
    return hits
