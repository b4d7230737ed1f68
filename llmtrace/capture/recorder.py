"""Writer-side: turn neutral events into rows, linking what belongs together.

Runs only on the writer thread, so its state needs no locks. It keeps the spans still open and a
small state per live trace (retrievers that ended, LLM calls, tool calls the model requested), which
is how a parser's output finds the LLM call it parsed, a tool's result finds the model's request by
tool-call id, and an LLM call learns its retrieval and tool time. Spans become rows as they end.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from uuid import UUID

from llmtrace.base.classify import describe, is_parse_failure
from llmtrace.base.cost import PriceBook
from llmtrace.base.ids import ordered_id
from llmtrace.base.privacy import hash_user_id
from llmtrace.base.serialize import dumps, to_jsonable
from llmtrace.capture import events as E
from llmtrace.capture import logs as L
from llmtrace.capture.content import Content
from llmtrace.capture.live_alerts import LiveAlerts
from llmtrace.store.inserts import Rows

_RECENT_SPANS = 50_000
_LIVE_TRACES = 20_000
_DONE_TRACES = 32  # (a late child comes within moments; after that, a revived trace)
_RESERVED_META = ("llmtrace_", "ls_", "langgraph_", "checkpoint_", "__")


class _Span:
    __slots__ = ("key", "span_id", "trace", "parent_key", "parent_id", "kind", "name", "t0", "start", "retries",
                 "retry_base", "fallback_anchor", "is_root", "convert", "raw", "annot", "llm_children")

    def __init__(self, key, span_id, trace, parent_key, parent_id, kind, name, t0, convert, raw):
        self.key = key  # the framework's id (a UUID's int, or its string id): str() once, here, not per event
        self.parent_key = parent_key
        self.span_id = span_id
        self.trace = trace
        self.parent_id = parent_id
        self.kind = kind
        self.name = name
        self.t0 = t0
        self.convert = convert  # the start payload is converted when the span ends (once, off the hot path)
        self.raw = raw
        self.start: dict = {}
        self.annot: dict | None = None  # what events said about this span (LlamaIndex: retrieval, llm, ...)
        self.llm_children = 0  # LLM calls open directly under this span
        self.retries = 0
        self.retry_base = 0
        self.fallback_anchor = None
        self.is_root = False


class _Trace:
    __slots__ = ("trace_id", "attrs", "capture", "retrievers", "llm_calls", "requests", "tool_ms",
                 "roots_open", "fresh", "strings")

    def __init__(self, trace_id: str, attrs: dict, capture: str):
        self.trace_id = trace_id
        self.attrs = attrs
        self.capture = capture
        self.retrievers: list[tuple[int, float]] = []  # (t_end, latency_ms)
        self.llm_calls: list[dict] = []
        self.requests: dict[str, dict] = {}  # provider tool-call id -> pending request
        self.tool_ms: dict[str, float] = {}  # tool-call id -> latency of the tool run
        self.roots_open = 0
        self.fresh = False  # a generated id that no row can have yet: insert without looking
        self.strings: dict[str, Any] = {}  # long strings stored so far -> where (see _shared)


class Recorder:
    """Neutral events in, rows out: the span state machine of the writer thread, and the links
    between what belongs together. What content becomes is ``content``'s business."""

    def __init__(self, *, wall_offset_ns: int, content: Content, hash_key: Callable[[], str],
                 environment: str | None, release: str | None, on_problem: Callable[[str, Exception], None]):
        self._wall = wall_offset_ns  # wall-clock ns = a perf_counter_ns reading + this
        self.content = content
        self._capture = content.capture
        self._hash_key = hash_key
        self._defaults = {"environment": environment, "release": release}
        self._problem = on_problem
        self.audit = False
        self.prices: PriceBook | None = None  # the cost in log lines
        self.alerts: LiveAlerts | None = None  # when the tracer evaluates alert rules as calls are written
        self._debug = L.debug_enabled()
        self._open: dict[Any, _Span] = {}  # keyed by the id objects the framework passes
        # Ended span -> (trace id, span id, capture): strings only, which the garbage collector stops
        # tracking, so 50,000 of them never count toward the application's full collections (a
        # reference to the trace object did: it kept every trace's dicts alive and promoted).
        self._recent: OrderedDict[Any, tuple[str, str, str]] = OrderedDict()
        self._done: OrderedDict[str, _Trace] = OrderedDict()  # traces whose roots all ended lately
        self._traces: OrderedDict[str, _Trace] = OrderedDict()

    # -- events -------------------------------------------------------------------------------

    def apply(self, ev: tuple, rows: Rows) -> None:
        op = ev[0]
        if op == E.START:  # ids arrive as the framework's objects (UUIDs): made strings here, off the hot path
            _, t, key, parent_key, kind, name, root, convert, raw, metadata, tags = ev
            if type(key) is UUID:  # keyed by the UUID's int: hashing a UUID object runs Python code
                key = key.int
            if type(parent_key) is UUID:
                parent_key = parent_key.int
            self._start(t, key, parent_key, kind, E.name_of(name, kind), root, convert, raw, metadata, tags)
        elif op == E.END:
            _, t, key, convert, raw, extra = ev
            if type(key) is UUID:
                key = key.int
            span = self._open.get(key)
            if span is None:
                return
            # frameworks that stream pass the real inputs only at the end
            start_raw = extra["inputs"] if extra and "inputs" in extra else span.raw
            if span.kind == "parser" and span.annot is None and span.convert is not None:
                span.raw = start_raw  # started as a parser: converted in _end, and only if kept (see there)
            else:
                self._load_start(span, start_raw)
            # a prompt's rendered output is the next LLM call's input snapshot: not stored twice
            out = {} if span.start.get("skip_outputs") else self._convert(convert, raw)
            self._end(t, key, out, None, extra, rows)
        elif op == E.ERROR:
            _, t, key, exc, extra = ev
            if type(key) is UUID:
                key = key.int
            span = self._open.get(key)
            if span is not None:
                self._load_start(span, span.raw)
                self._end(t, key, {}, exc, extra, rows)
        elif op == E.ANNOTATE:
            span = self._open.get(ev[2].int if type(ev[2]) is UUID else ev[2])
            if span is not None:
                note = self._convert(ev[3], ev[4])
                if note.get("kind"):
                    span.kind = note["kind"]
                if span.annot is None:
                    span.annot = {"start": {}, "end": {}}
                span.annot["start"].update(note.get("start") or {})
                span.annot["end"].update(note.get("end") or {})
        elif op == E.RETRY:
            span = self._open.get(ev[2].int if type(ev[2]) is UUID else ev[2])
            if span is not None:
                span.retries += 1
        elif op == E.FEEDBACK:
            self._feedback(ev[1], ev[2], ev[3], rows)
        elif op == E.VALIDATION:
            f = ev[3]
            self._validation(ev[2], f.get("span_id"), f["rule"], f["passed"], f.get("detail"), "user", ev[1], rows)

    def open_spans(self) -> int:
        return len(self._open)

    def expire_open(self, now_ns: int, older_than_ns: int, rows: Rows) -> int:
        """End spans that never ended (a lost callback, an abandoned stream) so they are not lost."""
        stale = [s for s in self._open.values() if now_ns - s.t0 > older_than_ns]
        for span in sorted(stale, key=lambda s: -s.t0):  # children before parents
            self._load_start(span, span.raw)
            self._end(now_ns, span.key, {}, TimeoutError("span never ended (abandoned)"), None, rows)
        return len(stale)

    def _load_start(self, span: _Span, raw) -> None:
        if span.convert is None and raw is None:
            return  # loaded already
        span.start = self._convert(span.convert, raw)
        span.raw = span.convert = None
        if span.start.get("kind"):
            span.kind = span.start["kind"]
        if span.annot:
            span.start.update(span.annot["start"])

    def _convert(self, convert, raw) -> dict:
        if convert is None:
            return {}
        try:
            return convert(raw) or {}
        except Exception as exc:
            self._problem(f"convert:{getattr(convert, '__name__', convert)}", exc)
            return {}

    def _start(self, t, key, parent_key, kind, name, root, convert, raw, metadata, tags=None) -> None:
        span_id = _sid(key) if _kept(key) else ordered_id()
        parent = self._open.get(parent_key) if parent_key is not None else None
        trace = parent.trace if parent is not None else None
        ended: tuple[str, str, str] | None = None
        if trace is None and parent_key is not None:
            ended = self._recent.get(parent_key)  # parent already ended: still the same trace
            if ended is not None:
                trace = (self._traces.get(ended[0]) or self._done.get(ended[0])
                         or self._keep_done(_Trace(ended[0], {}, ended[2])))  # ended long ago: id, capture
        is_root = trace is None
        if is_root:  # no parent, or a parent we never saw: a new root rather than a lost span
            trace = self._trace_for_root(span_id, root, metadata)
            trace.roots_open += 1
            parent_key = None
        parent_id = None if parent_key is None else (parent.span_id if parent is not None else ended[1] if ended else None)
        span = _Span(key, span_id, trace, parent_key, parent_id, kind, name, t, convert, raw)
        span.is_root = is_root
        if tags:  # LangChain's RunnableRetry tags each attempt after the first "retry:attempt:N"
            for tag in tags:
                if isinstance(tag, str) and tag.startswith("retry:attempt:") and tag[14:].isdigit():
                    span.retry_base = int(tag[14:]) - 1
        anc: _Span | None
        if parent is not None and kind == "llm":
            anc = parent
            while anc is not None:
                if anc.llm_children:
                    # a model call inside a model call (LlamaIndex's acomplete -> complete): the same
                    # call, reported twice; the outer one is the call the app made
                    span.kind = kind = "other"
                    break
                anc = self._open.get(anc.parent_key) if anc.parent_key is not None else None
        if parent is not None and kind == "llm":
            parent.llm_children += 1
            anc = parent
            while anc is not None:
                if not span.retry_base and (anc.retries or anc.retry_base):
                    span.retry_base = anc.retries or anc.retry_base
                if span.fallback_anchor is None and "WithFallbacks" in (anc.name or ""):
                    span.fallback_anchor = anc.span_id
                anc = self._open.get(anc.parent_key) if anc.parent_key is not None else None
        self._open[key] = span

    def _trace_for_root(self, span_id: str, root: E.TraceContext | None, metadata: dict | None) -> _Trace:
        attrs = dict(root.attrs) if root is not None else {}
        for key, value in E.trace_attrs_from_metadata(metadata).items():
            attrs.setdefault(key, value)
        trace_id = (root.trace_id if root is not None else None) or attrs.get("trace_id") or span_id
        trace_id = str(trace_id)
        found = self._traces.get(trace_id)
        if found is not None:
            return found
        if metadata:
            user_meta = {k: v for k, v in metadata.items() if not k.startswith(_RESERVED_META)}
            if user_meta:
                attrs.setdefault("metadata", user_meta)
        capture = attrs.get("capture") or self._capture
        if capture not in ("full", "redacted", "metadata"):
            capture = self._capture
        trace = _Trace(trace_id, attrs, capture)
        trace.fresh = trace_id == span_id or bool(root is not None and root.generated)
        self._traces[trace_id] = trace
        if len(self._traces) > _LIVE_TRACES:
            self._traces.popitem(last=False)
        return trace

    # -- span end ----------------------------------------------------------------------------

    def _end(self, t, key, out: dict, exc: BaseException | None, extra, rows: Rows) -> None:
        span = self._open.pop(key, None)
        if span is None:
            return  # never started here (handler attached mid-run): nothing to pair it with
        span_id = span.span_id
        trace = span.trace
        self._recent[key] = (trace.trace_id, span_id, trace.capture)
        if span.annot and span.annot["end"]:
            out = {**out, **span.annot["end"]}
        if len(self._recent) > _RECENT_SPANS:
            self._recent.popitem(last=False)
        latency = (t - span.t0) / 1e6
        error = describe(exc) if exc is not None else None
        status = "error" if exc is not None or out.get("status") == "error" else "ok"
        if error is None and status == "error":
            error = {"type": "other", "message": out.get("error"), "hint": "The tool reported an error result."}
        link = None
        content: dict[str, Any] = {}
        kind = span.kind
        if kind == "llm":
            parent = self._open.get(span.parent_key) if span.parent_key is not None else None
            if parent is not None and parent.llm_children:
                parent.llm_children -= 1
            self._llm_end(span, t, latency, out, error, extra or {}, rows, content)
        else:
            content["inputs"] = None
            content["outputs"] = out.get("outputs")
            if kind == "retriever" and exc is None:
                self._retriever_end(span, t, latency, out, rows)
            elif kind == "tool":
                self._tool_end(span, latency, status, rows)
            if kind == "parser" or (exc is not None and is_parse_failure(exc)):
                link = self._parser_end(span, t, out, exc, error, rows)
            if link is None or kind != "parser":  # (a parser's input is the raw completion of the call
                self._load_start(span, span.raw)  # it is linked to: not converted, not stored twice)
                content["inputs"] = span.start.get("inputs")
        if error is not None:
            content["error"] = error["message"]
        rows.spans.append({
            "span_id": span_id, "trace_id": trace.trace_id, "parent_id": span.parent_id, "kind": kind,
            "name": (span.name or kind)[:256], "started_at": self._wall + span.t0, "ended_at": self._wall + t,
            "latency_ms": latency, "status": status, "error_type": error["type"] if error else None,
            "link_span_id": link, "tool_call_id": span.start.get("tool_call_id"), "position": None,
        })
        if self._debug and kind == "llm":  # before _content: it may make repeated text references
            shown = content and trace.capture != "metadata"  # (metadata: no content, not even here)
            L.debug_print(rows.llm_calls[-1], self.content.processed(trace.capture, content) if shown else {})
        self.content.queue(span_id, trace.trace_id, trace.capture, trace.strings, content, rows)
        if span.is_root:
            self._root_end(span, t, latency, status, rows)

    def _llm_end(self, span: _Span, t, latency, out, error, extra, rows: Rows, content: dict) -> None:
        trace, start = span.trace, span.start
        tokens = out.get("tokens") or {}
        first = extra.get("first_token_ns")
        messages = start.get("input_messages") or []
        tool_ids = [m.get("tool_call_id") for m in messages if isinstance(m, dict) and m.get("tool_call_id")]
        tools_ms = sum(trace.tool_ms[i] for i in tool_ids if i in trace.tool_ms) if tool_ids else None
        retrieval = [lat for (t_end, lat) in trace.retrievers if t_end <= span.t0]
        fallback_from = None
        if span.fallback_anchor is not None:
            for prev in reversed(trace.llm_calls):
                if prev["anchor"] == span.fallback_anchor and prev["status"] == "error":
                    fallback_from = prev["model"]
                    break
        model = start.get("model")
        status = "error" if error else "ok"
        requests = out.get("tool_requests") or []
        rows.llm_calls.append({
            "span_id": span.span_id, "trace_id": trace.trace_id, "started_at": self._wall + span.t0,
            "model": _short(model, 128), "model_version": _short(out.get("model_version"), 128),
            "provider": _short(start.get("provider") or out.get("provider"), 64),
            "params": self.content.params(trace.capture, start.get("params")),
            "input_tokens": tokens.get("input"), "output_tokens": tokens.get("output"),
            "total_tokens": tokens.get("total"), "input_cached_tokens": tokens.get("input_cached"),
            "input_cache_write_tokens": tokens.get("input_cache_write"),
            "reasoning_tokens": tokens.get("reasoning"), "latency_ms": latency,
            "ttft_ms": (first - span.t0) / 1e6 if first else None,
            "retrieval_ms": sum(retrieval) if retrieval else None, "tools_ms": tools_ms, "cost_usd": None,
            "finish_reason": _short(out.get("finish_reason"), 64), "status": status,
            "error_type": error["type"] if error else None, "retry_count": span.retries + span.retry_base,
            "fallback_from": _short(fallback_from, 128), "generations": out.get("n_generations"),
            "streamed": bool(first),
        })
        row = rows.llm_calls[-1]
        L.emit(L.call_level(row), lambda: L.call_fields(  # (built only if a sink takes the line)
            row, trace.attrs, self._user_hash(trace), [{"tool_call_id": i, "latency_ms": trace.tool_ms.get(i)}
                                                      for i in tool_ids if i in trace.tool_ms],
            _iso(self._wall + span.t0), self._cost(row)))
        if self.alerts is not None:
            self.alerts.observe_row(row, trace.attrs, row["started_at"] / 1e9)
        trace.llm_calls.append({"span_id": span.span_id, "t0": span.t0, "t1": t, "model": model,
                                "status": status, "anchor": span.fallback_anchor, "consumed": False})
        for pos, req in enumerate(requests):
            row_id = f"{span.span_id}:{pos}"
            rows.tool_calls.append({
                "id": row_id, "trace_id": trace.trace_id, "llm_span_id": span.span_id, "position": pos,
                "tool_call_id": _short(req.get("id"), 128), "name": _short(req.get("name"), 256),
                "tool_span_id": None, "status": "requested", "latency_ms": None,
            })
            pending = {"row_id": row_id, "name": req.get("name"), "matched": False}
            trace.requests[req.get("id") or row_id] = pending
        if extra.get("streamed_text") is not None:  # what a stream delivered, even when it stopped early
            out = {**out, "raw_completion": extra["streamed_text"]}
        for key in ("input_messages", "tools_offered", "raw_completion", "tool_requests", "generations"):
            value = start.get(key) if key in start else out.get(key)
            if value is not None:
                content[key] = value

    def _retriever_end(self, span: _Span, t, latency, out, rows: Rows) -> None:
        span.trace.retrievers.append((t, latency))
        for rank, chunk in enumerate(out.get("chunks") or []):
            rows.chunks.append({
                "trace_id": span.trace.trace_id, "span_id": span.span_id, "rank": rank,
                "source_id": _short(chunk.get("source_id"), 256), "score": _float(chunk.get("score")),
                "retriever": _short(span.name, 256), "retrieved_at": self._wall + t,
            })

    def _tool_end(self, span: _Span, latency, status, rows: Rows) -> None:
        trace = span.trace
        call_id = span.start.get("tool_call_id")
        parent = self._open.get(span.parent_key) if span.parent_key is not None else None
        if call_id is None and parent is not None:  # a framework step that ran the tool may name the call
            self._load_start(parent, parent.raw)
            call_id = parent.start.get("tool_call_id")
        pending = trace.requests.get(call_id) if call_id else None
        if pending is None or pending["matched"]:
            # No provider id: join by order, to the first unmatched request for this tool.
            pending = next((p for p in trace.requests.values()
                            if not p["matched"] and p["name"] == span.start.get("tool_name", span.name)), None)
        trace.tool_ms[call_id or span.span_id] = latency
        if pending is None:
            rows.tool_calls.append({
                "id": f"{span.span_id}:tool", "trace_id": trace.trace_id, "llm_span_id": None, "position": None,
                "tool_call_id": _short(call_id, 128), "name": _short(span.name, 256),
                "tool_span_id": span.span_id, "status": status, "latency_ms": latency,
            })
            return
        pending["matched"] = True
        rows.tool_updates.append({"b_id": pending["row_id"], "tool_span_id": span.span_id, "status": status,
                                  "latency_ms": latency})

    def _parser_end(self, span: _Span, t, out, exc, error, rows: Rows) -> str | None:
        trace = span.trace
        target = None
        for call in reversed(trace.llm_calls):  # (a streaming parser starts before the model ends)
            if call["t1"] <= t and not call["consumed"]:
                target = call
                break
        if target is None:
            return None
        target["consumed"] = True
        if exc is not None:
            L.emit("ERROR", lambda: {"event": "parse_error", "trace_id": trace.trace_id, "span_id": target["span_id"],
                                     "parser": span.name, "error_type": type(exc).__name__})
            self._validation(trace.trace_id, target["span_id"], "schema", False, error["message"], "parser", t, rows,
                             trace=trace)
        elif span.kind == "parser" and span.name != "StrOutputParser":
            self._validation(trace.trace_id, target["span_id"], "schema", True, None, "parser", t, rows, trace=trace)
        return target["span_id"]

    def _root_end(self, span: _Span, t, latency, status, rows: Rows) -> None:
        trace = span.trace
        trace.roots_open -= 1
        a = trace.attrs
        tags = a.get("tags")
        rows.traces.append({
            "trace_id": trace.trace_id, "name": _short(a.get("trace_name") or span.name, 256),
            "started_at": self._wall + span.t0, "ended_at": self._wall + t, "latency_ms": latency,
            "status": status, "user_hash": self._user_hash(trace),
            "session_id": _short(a.get("session_id"), 128), "feature": _short(a.get("feature"), 128),
            "team": _short(a.get("team"), 128),
            "environment": _short(a.get("environment") or self._defaults["environment"], 64),
            "release": _short(a.get("release") or self._defaults["release"], 64),
            "prompt_version": _short(a.get("prompt_version"), 128),
            "tags": dumps(self.content.scrub(trace.capture, list(tags) if isinstance(tags, (list, tuple, set)) else [tags]))
            if tags else None,
            "meta": dumps(self.content.scrub(trace.capture, to_jsonable(a["metadata"]))) if a.get("metadata") else None,
            "capture": trace.capture, "content_purged_at": None,
            "_fresh": trace.fresh,
        })
        trace.fresh = False
        if trace.roots_open <= 0 and self._traces.pop(trace.trace_id, None) is not None:
            self._keep_done(trace)

    def _keep_done(self, trace: _Trace) -> _Trace:
        """Keep an ended trace for a late child (one whose parent ended first) to find."""
        self._done[trace.trace_id] = trace
        if len(self._done) > _DONE_TRACES:
            self._done.popitem(last=False)
        return trace

    # -- feedback and validations ------------------------------------------------------------

    def _feedback(self, t, trace_id, f, rows: Rows) -> None:
        fid = uuid.uuid4().hex
        rows.feedback.append({"id": fid, "trace_id": trace_id, "action": f["action"], "score": f.get("score"),
                              "source": _short(f.get("source"), 64), "at": self._wall + t})
        body = {k: f[k] for k in ("correction", "comment") if f.get(k) is not None}
        if body:
            self._content_of("fb:" + fid, self._traces.get(trace_id) or trace_id, body, rows)

    def _validation(self, trace_id, span_id, rule, passed, detail, source, t, rows: Rows, trace=None) -> None:
        vid = uuid.uuid4().hex
        if not passed and rule != "schema":  # (a schema failure was logged as the parse error)
            L.emit("ERROR", lambda: {"event": "validation_failed", "trace_id": trace_id, "span_id": span_id,
                                     "rule": rule, "source": source})
        rows.validations.append({"id": vid, "trace_id": trace_id, "span_id": span_id, "rule": _short(rule, 256),
                                 "passed": bool(passed), "source": source, "at": self._wall + t})
        if detail is not None:
            self._content_of("val:" + vid, trace or self._traces.get(trace_id) or trace_id, {"detail": detail}, rows)

    def _content_of(self, owner_id: str, trace: _Trace | str, fields: dict[str, Any], rows: Rows) -> None:
        """Content of a live trace (or one whose id is all that is known: feedback arriving later)."""
        if isinstance(trace, _Trace):
            self.content.queue(owner_id, trace.trace_id, trace.capture, trace.strings, fields, rows)
        else:
            self.content.queue(owner_id, trace, self._capture, None, fields, rows)

    def finish(self, rows: Rows) -> None:
        self.content.finish(rows, self.audit)

    def _user_hash(self, trace: _Trace) -> str | None:
        user = trace.attrs.get("user_id")
        return None if user is None else hash_user_id(user, self._hash_key())

    def _cost(self, row: dict) -> float | None:
        if self.prices is None:
            return None
        try:
            return self.prices.cost(model=row["model"], version=row["model_version"], provider=row["provider"],
                                    input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
                                    cached_tokens=row["input_cached_tokens"],
                                    cache_write_tokens=row["input_cache_write_tokens"])
        except Exception:
            return None

def _kept(key: Any) -> bool:
    """Whether a framework's span id is stored as it is: UUIDs (LangChain's run ids, which users
    pass and look up, and llmtrace's own; they arrive here as the UUID's int). Other ids
    (LlamaIndex's 'Class.method-<uuid4>') get a time-ordered id instead: random keys cost SQLite
    a random B-tree page per insert."""
    return type(key) is int or (type(key) is str and len(key) == 36)


def _sid(key: Any) -> str:
    """A span id that fits the tables: the framework's id, or a readable prefix and a digest of it."""
    if type(key) is int:  # a UUID's int, written as str(UUID) writes it
        h = key.to_bytes(16, "big").hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    text = str(key)
    if len(text) <= 64:
        return text
    return text[:30] + "-" + hashlib.sha1(text.encode("utf-8", "backslashreplace")).hexdigest()[:33]


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000 // 1000:06d}Z"


def _short(value: Any, n: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:n]


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and abs(out) != float("inf") else None
