"""The read side: assemble one trace's SIGNALS.md document from the tables.

Works on rows written by any process. Every link was decided when the rows were written
(``llmtrace.capture.linking``) and stored with them: this module only puts them together —
``retrieved`` from the retriever spans a call names, ``tool_calls`` from the tool-call rows of the
call, ``parsed`` from the step linked to the call. (Rows of schema versions before 6 left two
links to the reader: ``_links_of_old_rows`` still reads them as they were written.)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmtrace.base.classify import HINTS
from llmtrace.base.cost import PriceBook, default_pricebook
from llmtrace.base.errors import TraceNotFound
from llmtrace.base.fields import LATENCY_COLUMNS, TOKEN_COLUMNS, system_prompt_of
from llmtrace.base.serialize import loads
from llmtrace.read import record
from llmtrace.read.text import render_text
from llmtrace.store import schema
from llmtrace.store.content import resolve
from llmtrace.store.engine import Database, utcnow

if TYPE_CHECKING:
    from llmtrace.read.replay import Reparse, Replay


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Trace:
    """One recorded trace. ``to_dict()`` is the SIGNALS.md document; ``str()`` a readable tree."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self._doc = doc

    @property
    def trace_id(self) -> str:
        return self._doc["trace_id"]

    # -- the typed view (the same values as to_dict(), as records) ------------------------------

    @property
    def name(self) -> str | None:
        return self._doc.get("name")

    @property
    def status(self) -> str | None:
        return self._doc.get("status")

    @property
    def started_at(self) -> str | None:
        return self._doc.get("started_at")

    @property
    def latency_ms(self) -> float | None:
        return self._doc.get("latency_ms")

    @property
    def llm_calls(self) -> list[record.LLMCall]:
        """Every LLM call, in order: ``trace.llm_calls[0].tokens.input``."""
        return [record.build(record.LLMCall, c) for c in self._doc["llm_calls"]]

    @property
    def spans(self) -> list[record.Span]:
        return [record.build(record.Span, s) for s in self._doc["spans"]]

    @property
    def totals(self) -> record.Totals:
        return record.build(record.Totals, self._doc["totals"])

    @property
    def validations(self) -> list[record.Validation]:
        """Trace-level validations (each call's own are on the call)."""
        return [record.build(record.Validation, v) for v in self._doc["validations"]]

    @property
    def feedback(self) -> list[record.Feedback]:
        return [record.build(record.Feedback, f) for f in self._doc["feedback"]]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._doc))  # a deep copy the caller may change

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self._doc, indent=indent, ensure_ascii=False)

    def render(self) -> str:
        return render_text(self._doc)

    def __str__(self) -> str:
        return self.render()

    def replay(self, llm: Any, call: int | str = -1, tracer: Any = None) -> Replay:
        """Re-run an LLM call (the last by default, or an index / span id) with its recorded input
        snapshot against ``llm`` (a LangChain chat model or a LlamaIndex LLM). Returns a ``Replay``
        with the recorded and new completions side by side; pass ``tracer`` to record the replay as
        a trace of its own whose metadata points back to this one."""
        from llmtrace.read.replay import replay

        return replay(self._doc, llm, call, tracer)

    def reparse(self, parser: Any, call: int | str = -1) -> Reparse:
        """Run ``parser`` (a LangChain parser, or any callable) over a call's recorded raw completion."""
        from llmtrace.read.replay import reparse

        return reparse(self._doc, parser, call)

    def _repr_html_(self) -> str:  # Jupyter's rich display
        from llmtrace.read.html import render_html

        return render_html(self._doc)

    def __repr__(self) -> str:
        d = self._doc
        return f"<Trace {d['trace_id']} {d.get('name')!r} {d.get('status')} {len(d['llm_calls'])} LLM call(s)>"


def _rows(conn: sa.Connection, table: sa.Table, trace_id: str, order: Any = None) -> list[dict]:
    stmt = sa.select(table).where(table.c.trace_id == trace_id)
    if order is not None:
        stmt = stmt.order_by(order)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def load_trace(store: Database, trace_id: str, prices: PriceBook | None = None) -> Trace:
    store.ensure_schema()
    with store.engine.connect() as conn:
        trace_row = conn.execute(sa.select(schema.traces).where(schema.traces.c.trace_id == trace_id)).first()
        spans = _rows(conn, schema.spans, trace_id, schema.spans.c.started_at)
        if trace_row is None and not spans:
            waiting = conn.execute(sa.select(sa.func.count()).select_from(schema.feedback)
                                   .where(schema.feedback.c.trace_id == trace_id)).scalar()
            raise TraceNotFound(trace_id, f"{waiting} feedback record(s) are waiting for it" if waiting else "")
        llms = {r["span_id"]: r for r in _rows(conn, schema.llm_calls, trace_id)}
        tools = _rows(conn, schema.tool_calls, trace_id, schema.tool_calls.c.position)
        chunk_rows = _rows(conn, schema.chunks, trace_id, schema.chunks.c.rank)
        vals = _rows(conn, schema.validations, trace_id, schema.validations.c.at)
        fbs = _rows(conn, schema.feedback, trace_id, schema.feedback.c.at)
        contents: dict[str, tuple[dict, Any]] = {}
        for r in _rows(conn, schema.contents, trace_id, schema.contents.c.created_at):
            for owner, fields in (loads(r["body"]) or {}).items():
                contents[owner] = (fields, r["expires_at"])
    now = utcnow()
    resolve({o: f for o, (f, exp) in contents.items() if exp is None or exp > now})
    doc = _assemble(trace_id, dict(trace_row._mapping) if trace_row else None, spans, llms, tools, chunk_rows, vals, fbs,
                    contents)
    _add_costs(doc, prices or default_pricebook())
    return Trace(doc)


def _add_costs(doc: dict[str, Any], prices: PriceBook) -> None:
    """Costs are computed when read, from the tokens and the price of the call's day."""
    for call in doc["llm_calls"]:
        if call["cost_usd"] is None:
            tok = call["tokens"]
            at = datetime.fromisoformat(call["started_at"].replace("Z", "")) if call["started_at"] else None
            call["cost_usd"] = prices.cost(model=call["model"], version=call["model_version"], provider=call["provider"],
                                           input_tokens=tok["input"], output_tokens=tok["output"],
                                           cached_tokens=tok["input_cached"],
                                           cache_write_tokens=tok["input_cache_write"], at=at)
    doc["totals"]["cost_usd"] = _sum([c["cost_usd"] for c in doc["llm_calls"]])


class _Content:
    """The content of one trace's owners (spans, ``val:``/``fb:`` rows), or why there is none."""

    def __init__(self, tr: dict | None, contents: dict[str, tuple[dict, Any]]) -> None:
        self._now = utcnow()
        self._contents = contents
        self._capture = (tr or {}).get("capture")
        self._purged = bool((tr or {}).get("content_purged_at"))
        self._spans: dict[str, tuple[dict, str | None]] = {}

    def of(self, owner: str) -> tuple[dict, str | None]:
        found = self._contents.get(owner)
        if found is None:
            if self._capture == "metadata":
                return {}, "not_captured"
            return {}, ("purged" if self._purged else "missing")
        fields, expires_at = found
        if expires_at is not None and expires_at <= self._now:
            return {}, "expired"
        return fields if isinstance(fields, dict) else {}, None

    def body(self, span_id: str | None) -> dict:
        if not span_id:
            return {}
        found = self._spans.get(span_id)
        if found is None:
            found = self._spans[span_id] = self.of(span_id)
        return found[0]


def _assemble(trace_id, tr, spans, llms, tools, chunk_rows, vals, fbs, contents) -> dict[str, Any]:
    """The document from stored rows and the links stored with them (decided when written)."""
    content = _Content(tr, contents)
    by_id = {s["span_id"]: s for s in spans}
    vals_by_span: dict[str | None, list] = {}
    for v in vals:
        owner = v["span_id"] if v["span_id"] in llms else None
        vals_by_span.setdefault(owner, []).append(_validation(v, content.of("val:" + v["id"])[0]))
    llm_spans = sorted((by_id[k] for k in llms if k in by_id), key=lambda r: r["started_at"])
    chunks_of: dict[str, list] = {}
    for c in chunk_rows:
        chunks_of.setdefault(c["span_id"], []).append(c)
    tools_of: dict[str | None, list] = {}
    for t in tools:
        tools_of.setdefault(t["llm_span_id"], []).append(t)
    if llm_spans and all(llms[s["span_id"]].get("retrieved_from") is None for s in llm_spans):
        fed, tools_ms_of = _links_of_old_rows(spans, by_id, llm_spans, tools, tools_of)
    else:
        fed = {s["span_id"]: _list(loads(llms[s["span_id"]].get("retrieved_from"))) for s in llm_spans}
        tools_ms_of = {}
    parser_of = {s["link_span_id"]: s for s in spans if s["link_span_id"]}
    llm_docs = [_call_doc(s, llms[s["span_id"]], content, parser_of.get(s["span_id"]),
                          _retrieved(fed.get(s["span_id"], []), chunks_of, content),
                          tools_of.get(s["span_id"], []), tools_ms_of.get(s["span_id"]),
                          vals_by_span.get(s["span_id"], []))
                 for s in llm_spans]
    return {**_trace_doc(trace_id, tr, spans), "totals": _totals(llm_docs, spans),
            "spans": [_span_doc(s, content) for s in _tree_order(spans)], "llm_calls": llm_docs,
            "validations": vals_by_span.get(None, []),
            "feedback": [_feedback(f, content.of("fb:" + f["id"])[0]) for f in fbs]}


def _trace_doc(trace_id: str, tr: dict | None, spans: list[dict]) -> dict[str, Any]:
    """The trace's own fields (from its row; from its root spans when the row is not written yet)."""
    roots = [s for s in spans if s["parent_id"] is None]
    started = tr["started_at"] if tr and tr["started_at"] else min((s["started_at"] for s in roots), default=None)
    ended = tr["ended_at"] if tr and tr["ended_at"] else max((s["ended_at"] for s in roots), default=None)
    status = tr["status"] if tr else ("error" if any(s["status"] == "error" for s in roots) else
                                      ("ok" if roots else None))
    tr = tr or {}
    return {
        "trace_id": trace_id, "name": tr.get("name") or (roots[0]["name"] if roots else None),
        "started_at": iso(started), "ended_at": iso(ended),
        "latency_ms": tr.get("latency_ms") if tr.get("latency_ms") is not None else (
            (ended - started).total_seconds() * 1000 if started and ended else None),
        "status": status, "user_id": tr.get("user_hash"), "session_id": tr.get("session_id"),
        "feature": tr.get("feature"), "team": tr.get("team"), "environment": tr.get("environment"),
        "release": tr.get("release"), "prompt_version": tr.get("prompt_version"),
        "tags": loads(tr.get("tags")) or [], "metadata": loads(tr.get("meta")) or {},
        "capture": tr.get("capture"), "complete": bool(tr),
    }


def _span_doc(s: dict, content: _Content) -> dict[str, Any]:
    body = content.body(s["span_id"])
    is_llm = s["kind"] == "llm"
    if s["kind"] == "parser" and s["link_span_id"] and body.get("inputs") is None:
        # a parser's input is the raw completion of the call it parsed (stored once, there)
        body = {**body, "inputs": content.body(s["link_span_id"]).get("raw_completion")}
    return {
        "span_id": s["span_id"], "parent_id": s["parent_id"], "kind": s["kind"], "name": s["name"],
        "started_at": iso(s["started_at"]), "ended_at": iso(s["ended_at"]), "latency_ms": s["latency_ms"],
        "status": s["status"], "error": _error(s["error_type"], body.get("error")),
        "inputs": body.get("input_messages") if is_llm else body.get("inputs"),
        "outputs": body.get("raw_completion") if is_llm else body.get("outputs"),
    }


def _retrieved(retriever_ids: list, chunks_of: dict[str, list], content: _Content) -> list[dict]:
    """The chunks of the retrievers a call names; each chunk's text is its retriever's output at its rank."""
    out = []
    for rid in retriever_ids:
        texts = _list(content.body(rid).get("outputs"))
        for c in chunks_of.get(rid, []):
            text = texts[c["rank"]] if c["rank"] is not None and c["rank"] < len(texts) else None
            out.append({"source_id": c["source_id"], "score": c["score"], "rank": c["rank"],
                        "content": text.get("content") if isinstance(text, dict) else text,
                        "retriever": c["retriever"], "span_id": rid})
    return out


def _tool_doc(t: dict, requests: list, content: _Content) -> dict[str, Any]:
    result = content.body(t["tool_span_id"])
    if t["position"] is not None:  # the model's request (by position), answered by the tool span
        req = requests[t["position"]] if t["position"] < len(requests) else {}
        args = req.get("args") if isinstance(req, dict) else None
    else:  # a tool run no request named (asked for in text): its arguments are its inputs
        args = result.get("inputs")
    return {"id": t["tool_call_id"], "name": t["name"], "args": args, "result": result.get("outputs"),
            "status": t["status"], "latency_ms": t["latency_ms"], "span_id": t["tool_span_id"],
            "error": result.get("error") if t["status"] == "error" else None}


def _call_doc(s: dict, row: dict, content: _Content, parser: dict | None, retrieved: list[dict], tools: list[dict],
              old_tools_ms: Any, validations: list[dict]) -> dict[str, Any]:
    body, missing = content.of(s["span_id"])
    # the step linked to the call parsed it: its ``parsed`` (or its outputs) and its failure
    parser_body = content.body(parser["span_id"]) if parser else {}
    parse_error = parser_body.get("parse_error") or (
        parser_body.get("error") if parser and parser["status"] == "error" else None)
    requests = _list(body.get("tool_requests"))  # content may be a placeholder string: never trust its shape
    ttft = row["ttft_ms"]
    return {
        "span_id": s["span_id"], "name": s["name"], "started_at": iso(s["started_at"]),
        "ended_at": iso(s["ended_at"]), "model": row["model"], "model_version": row["model_version"],
        "provider": row["provider"], "params": loads(row["params"]),
        "system_prompt": body.get("system_prompt") or system_prompt_of(_list(body.get("input_messages"))),
        "input_messages": body.get("input_messages"),
        "tools_offered": body.get("tools_offered"), "retrieved": retrieved,
        "tokens": {key: row[column] for key, column in TOKEN_COLUMNS.items()},
        "latency_ms": {**{key: row[column] for key, column in LATENCY_COLUMNS.items()},
                       "tools": row["tools_ms"] if row["tools_ms"] is not None else old_tools_ms,
                       "generation": (row["latency_ms"] - ttft) if ttft is not None else row["latency_ms"]},
        "streamed": row["streamed"], "cost_usd": row["cost_usd"],
        "finish_reason": row["finish_reason"], "raw_completion": body.get("raw_completion"),
        "generations": body.get("generations"),
        "tool_calls": [_tool_doc(t, requests, content) for t in tools],
        "parsed": None if parse_error is not None or not parser else parser_body.get("parsed", parser_body.get("outputs")),
        "parse_error": parse_error, "parser": parser["name"] if parser else None,
        "validations": validations, "status": row["status"],
        "error": _error(row["error_type"], body.get("error")), "retry_count": row["retry_count"],
        "fallback_from": row["fallback_from"], "content_missing": missing,
    }


def _links_of_old_rows(spans, by_id, llm_spans, tools, tools_of) -> tuple[dict[str, list], dict[str, Any]]:
    """Rows written before schema 6 have no stored retrieval links and leave tools asked for in
    text unjoined: their writer left these links to the reader, by these rules (kept so that they
    read as they always did). Returns the retriever span ids of each call and the tool time of the
    calls that waited for text-asked tools; joins those tools into ``tools_of`` in place."""
    ended_ok = [(s["ended_at"], s["span_id"]) for s in spans if s["kind"] == "retriever" and s["status"] == "ok"]
    fed = {c["span_id"]: [sid for ended, sid in ended_ok if ended is not None and ended <= c["started_at"]]
           for c in llm_spans}
    # a tool with no request belongs to the model call that ended last before the tool started
    joined: dict[str, list] = {}
    for t in tools:
        tool_span = by_id.get(t["tool_span_id"]) if t["llm_span_id"] is None and t["tool_span_id"] else None
        if tool_span is None or tool_span["started_at"] is None:
            continue
        before = [c for c in llm_spans if c["ended_at"] is not None and c["ended_at"] <= tool_span["started_at"]]
        if before:
            joined.setdefault(max(before, key=lambda c: c["ended_at"])["span_id"], []).append(t)
    tools_ms: dict[str, Any] = {}
    previous = None  # the time in the tools the previous call asked for in text: this call waited for it
    for c in llm_spans:
        if previous is not None:
            tools_ms[c["span_id"]] = _sum([t["latency_ms"] for t in joined.get(previous, [])])
        tools_of.setdefault(c["span_id"], []).extend(joined.get(c["span_id"], []))
        previous = c["span_id"]
    return fed, tools_ms


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _sum(values: list) -> Any:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _totals(llm_docs: list[dict], spans: list[dict]) -> dict[str, Any]:
    # One error per exception: where it started (the spans it only passed through name that span in
    # ``error_from``; rows of earlier versions do not, and count only the deepest failing span).
    started_here = [s for s in spans if s["status"] == "error" and not s.get("error_from")]
    errored_parents = {s["parent_id"] for s in started_here}
    return {
        "llm_calls": len(llm_docs),
        "input_tokens": _sum([c["tokens"]["input"] for c in llm_docs]),
        "output_tokens": _sum([c["tokens"]["output"] for c in llm_docs]),
        "cost_usd": _sum([c["cost_usd"] for c in llm_docs]),
        # root causes only: an error propagating up through five chains is one error
        "errors": sum(1 for s in started_here if s["span_id"] not in errored_parents),
    }


def _error(kind: str | None, message: str | None) -> dict | None:
    if kind is None:
        return None
    return {"type": kind, "message": message, "hint": HINTS.get(kind, HINTS["other"])}


def _validation(v: dict, body: dict) -> dict:
    return {"rule": v["rule"], "passed": v["passed"], "detail": body.get("detail"), "at": iso(v["at"]),
            "source": v["source"], "span_id": v["span_id"]}


def _feedback(f: dict, body: dict) -> dict:
    return {"action": f["action"], "score": f["score"], "correction": body.get("correction"),
            "comment": body.get("comment"), "source": f["source"], "at": iso(f["at"])}


def _tree_order(spans: list[dict]) -> list[dict]:
    """Parent before child, siblings by start time."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list] = {}
    for s in spans:
        parent = s["parent_id"] if s["parent_id"] in ids else None
        children.setdefault(parent, []).append(s)
    out: list[dict] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        s = stack.pop()
        out.append(s)
        stack.extend(reversed(children.get(s["span_id"], [])))
    return out
