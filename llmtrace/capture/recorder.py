"""Writer-side: the span state machine that turns neutral events into rows.

Runs only on the writer thread, so its state needs no locks. It keeps the spans still open, the
traces still live (and a few that ended lately, for a child that ends after its parent: a stream
read after its query returned), and moves each span from start to end. What links to what is
``linking``'s decision; what a row holds is ``rows``'; what content becomes is ``content``'s.
Spans become rows as they end, so a crash loses only what was still open.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from uuid import UUID

from llmtrace.base.classify import describe, is_parse_failure
from llmtrace.base.cost import PriceBook
from llmtrace.base.ids import ordered_id
from llmtrace.capture import events, logs
from llmtrace.capture.content import Content
from llmtrace.capture.linking import Linker
from llmtrace.capture.live_alerts import LiveAlerts
from llmtrace.capture.rows import RowBuilder
from llmtrace.capture.state import Span, TraceState
from llmtrace.store.inserts import Rows

_RECENT_SPANS = 50_000
_LIVE_TRACES = 20_000
_DONE_TRACES = 32  # (a late child comes within moments; after that, a revived trace)
_RESERVED_META = ("llmtrace_", "ls_", "langgraph_", "checkpoint_", "__")
# Tags frameworks put on runs for their own bookkeeping (LangChain's sequence steps, graph steps,
# parallel keys, retry attempts, LangSmith's flags): not the user's tags of the trace.
_INTERNAL_TAGS = ("seq:step:", "graph:step:", "map:key:", "retry:attempt:", "langsmith:")
_UNSET: Any = object()


class Recorder:
    """Neutral events in, rows out: the span state machine of the writer thread."""

    def __init__(self, *, wall_offset_ns: int, content: Content, hash_key: Callable[[], str],
                 environment: str | None, release: str | None, on_problem: Callable[[str, Exception], None]):
        self.content = content
        self._capture = content.capture
        self._problem = on_problem
        self.audit = False
        self.rows = RowBuilder(wall_offset_ns=wall_offset_ns, content=content, hash_key=hash_key,
                               environment=environment, release=release)
        self.rows.on_problem = on_problem
        self._open: dict[Any, Span] = {}  # keyed by the id objects the framework passes
        self.links = Linker(self._open, self._load_start)
        # Ended span -> (trace id, span id, capture): strings only, which the garbage collector stops
        # tracking, so 50,000 of them never count toward the application's full collections (a
        # reference to the trace object did: it kept every trace's dicts alive and promoted).
        self._recent: OrderedDict[Any, tuple[str, str, str]] = OrderedDict()
        self._done: OrderedDict[str, TraceState] = OrderedDict()  # traces whose roots all ended lately
        self._traces: OrderedDict[str, TraceState] = OrderedDict()

    @property
    def prices(self) -> PriceBook | None:  # the cost in log lines
        return self.rows.prices

    @prices.setter
    def prices(self, value: PriceBook | None) -> None:
        self.rows.prices = value

    @property
    def alerts(self) -> LiveAlerts | None:  # when the tracer evaluates alert rules as calls are written
        return self.rows.alerts

    @alerts.setter
    def alerts(self, value: LiveAlerts | None) -> None:
        self.rows.alerts = value

    # -- events -------------------------------------------------------------------------------

    def apply(self, ev: tuple, rows: Rows) -> None:
        op = ev[0]
        if op == events.START:  # ids arrive as the framework's objects (UUIDs): made strings here, off the hot path
            key, parent_key = ev[2], ev[3]
            if type(key) is UUID:  # keyed by the UUID's int: hashing a UUID object runs Python code
                key = key.int
            if type(parent_key) is UUID:
                parent_key = parent_key.int
            self._start(ev[1], key, parent_key, ev[4], events.name_of(ev[5], ev[4]), ev[6], ev[7], ev[8], ev[9], ev[10],
                        ev[11] if len(ev) > 11 else None)
        elif op == events.END:
            _, t, key, convert, raw, extra = ev
            span = self._open.get(key.int if type(key) is UUID else key)
            if span is None:
                return
            # frameworks that stream pass the real inputs only at the end
            inputs = extra["inputs"] if extra and "inputs" in extra else _UNSET
            if span.kind == "parser" and span.annot is None and not span.loaded:
                if inputs is not _UNSET:  # started as a parser: converted in _end, and only if kept (see there)
                    span.raw = inputs
            else:
                self._load_start(span, inputs)
            # a prompt's rendered output is the next LLM call's input snapshot: not stored twice
            out = {} if span.start.get("skip_outputs") else self._convert(convert, raw)
            self._end(t, span, out, None, extra, rows)
        elif op == events.ERROR:
            _, t, key, exc, extra = ev
            span = self._open.get(key.int if type(key) is UUID else key)
            if span is not None:
                self._load_start(span)
                answered = extra.get("response") if extra else None  # what it produced before it failed
                out = self._convert(answered[0], answered[1]) if answered else {}
                self._end(t, span, out, exc, extra, rows)
        elif op == events.ANNOTATE:
            span = self._open.get(ev[2].int if type(ev[2]) is UUID else ev[2])
            if span is not None:
                note = self._convert(ev[3], ev[4])
                if note.get("kind"):
                    span.kind = note["kind"]
                if span.annot is None:
                    span.annot = {"start": {}, "end": {}}
                span.annot["start"].update(note.get("start") or {})
                span.annot["end"].update(note.get("end") or {})
        elif op == events.RETRY:
            span = self._open.get(ev[2].int if type(ev[2]) is UUID else ev[2])
            if span is not None:
                span.retries += 1
        elif op == events.FEEDBACK:
            self._feedback(ev[1], ev[2], ev[3], rows)
        elif op == events.VALIDATION:
            f = ev[3]
            self._validation(ev[2], f.get("span_id"), f["rule"], f["passed"], f.get("detail"), "user", ev[1], rows)

    def open_spans(self) -> int:
        return len(self._open)

    def expire_open(self, now_ns: int, older_than_ns: int, rows: Rows) -> int:
        """End spans that never ended (a lost callback, an abandoned stream) so they are not lost."""
        stale = [s for s in self._open.values() if now_ns - s.t0 > older_than_ns]
        for span in sorted(stale, key=lambda s: -s.t0):  # children before parents
            self._load_start(span)
            self._end(now_ns, span, {}, TimeoutError("span never ended (abandoned)"), None, rows)
        return len(stale)

    def _load_start(self, span: Span, raw: Any = _UNSET) -> None:
        """Convert a span's start payload (once; again when the end brings the real inputs)."""
        if raw is _UNSET:
            if span.loaded:
                return
            raw = span.raw
        span.start = self._convert(span.convert, raw)
        span.raw = None
        span.loaded = True
        if span.start.get("kind"):
            span.kind = span.start["kind"]
        if span.annot:
            span.start.update(span.annot["start"])

    def _convert(self, convert: Any, raw: Any) -> dict:
        if convert is None:
            return {}
        try:
            return convert(raw) or {}
        except Exception as exc:
            self._problem(f"convert:{getattr(convert, '__name__', convert)}", exc)
            return {}

    def _start(self, t: int, key: Any, parent_key: Any, kind: str, name: str, root: events.TraceContext | None,
               convert: Any, raw: Any, metadata: Any, tags: Any, task: str | None) -> None:
        span_id = _sid(key) if _kept(key) else ordered_id()
        parent = self._open.get(parent_key) if parent_key is not None else None
        trace = parent.trace if parent is not None else None
        ended: tuple[str, str, str] | None = None
        if trace is None and parent_key is not None:
            ended = self._recent.get(parent_key)  # parent already ended: still the same trace (a late child)
            if ended is not None:
                trace = self._traces.get(ended[0]) or self._done.get(ended[0]) or self._revive(ended)
        is_root = trace is None
        if is_root:  # no parent, or a parent we never saw: a new root rather than a lost span
            trace = self._trace_for_root(span_id, root, metadata, tags)
            trace.roots_open += 1
            parent_key = None
        assert trace is not None
        parent_id = None if parent_key is None else (parent.span_id if parent is not None else ended[1] if ended else None)
        span = Span(key, span_id, trace, parent_key, parent_id, kind, name, t, convert, raw)
        span.is_root = is_root
        span.task = task
        self.links.started(span, parent, tags)
        self._open[key] = span

    def _revive(self, ended: tuple[str, str, str]) -> TraceState:
        """A trace whose roots ended long ago gets a child: only its id and capture mode are known."""
        trace = TraceState(ended[0], {}, ended[2])
        trace.ended_ns = 0
        return self._keep_done(trace)

    def _trace_for_root(self, span_id: str, root: events.TraceContext | None, metadata: Any, tags: Any) -> TraceState:
        attrs = dict(root.attrs) if root is not None else {}
        for key, value in events.trace_attrs_from_metadata(metadata).items():
            attrs.setdefault(key, value)
        trace_id = str((root.trace_id if root is not None else None) or attrs.get("trace_id") or span_id)
        found = self._traces.get(trace_id) or self._done.pop(trace_id, None)  # another root of the same trace
        if found is not None:
            self._traces[trace_id] = found
            return found
        if metadata:
            user_meta = {k: v for k, v in metadata.items() if not k.startswith(_RESERVED_META)}
            if user_meta:
                attrs.setdefault("metadata", user_meta)
        if tags:  # the root run's own tags are the trace's, after the ones llmtrace was given
            own = [t for t in tags if isinstance(t, str) and not t.startswith(_INTERNAL_TAGS)]
            if own:
                given = attrs.get("tags")
                given = list(given) if isinstance(given, (list, tuple, set)) else [given] if given else []
                attrs["tags"] = given + [t for t in own if t not in given]
        capture = attrs.get("capture") or self._capture
        if capture not in ("full", "redacted", "metadata"):
            capture = self._capture
        trace = TraceState(trace_id, attrs, capture)
        trace.fresh = trace_id == span_id or bool(root is not None and root.generated)
        self._traces[trace_id] = trace
        if len(self._traces) > _LIVE_TRACES:
            self._traces.popitem(last=False)
        return trace

    # -- span end ----------------------------------------------------------------------------

    def _end(self, t: int, span: Span, out: dict, exc: BaseException | None, extra: dict | None, rows: Rows) -> None:
        self._open.pop(span.key, None)
        trace = span.trace
        self._recent[span.key] = (trace.trace_id, span.span_id, trace.capture)
        if len(self._recent) > _RECENT_SPANS:
            self._recent.popitem(last=False)
        if span.annot and span.annot["end"]:
            out = {**out, **span.annot["end"]}
        latency = (t - span.t0) / 1e6
        kind = span.kind
        error: dict[str, Any] | None = None
        error_from = None
        own = absorbed = False
        if exc is not None:
            # a model whose answer its own client failed to parse did answer: a parse failure, not a failed call
            absorbed = kind == "llm" and out.get("raw_completion") is not None and is_parse_failure(exc)
            error_from, own = self.links.error_origin(span, exc, absorbed)
            error = describe(exc)
            status = "ok" if absorbed else "error"
        else:
            status = "error" if out.get("status") == "error" else "ok"
            if status == "error":
                error = {"type": "other", "message": out.get("error"), "hint": "The tool reported an error result."}
        self.links.ended(span, status == "error")
        link = None
        content: dict[str, Any] = {}
        if kind == "llm":
            link = self._llm_end(span, t, latency, out, status, error, exc if absorbed else None, extra or {}, rows,
                                 content)
        else:
            content["inputs"] = None
            content["outputs"] = out.get("outputs")
            if kind == "retriever" and exc is None:
                self._retriever_end(span, t, latency, out, rows, content)
            elif kind == "tool":
                self._tool_end(span, latency, status, out, rows)
            if (own or exc is None) and (kind == "parser" or "parsed" in out or "parse_error" in out
                                         or (exc is not None and is_parse_failure(exc))):
                link = self._parse_end(span, t, out, exc, error, rows, content)
            if link is None or kind != "parser":  # (a parser's input is the raw completion of the call
                self._load_start(span)            # it is linked to: not converted, not stored twice)
                content["inputs"] = span.start.get("inputs")
        if error is not None and not absorbed:
            content["error"] = error["message"]
        self.rows.span(rows, span, t, latency, status, None if absorbed else error, link, error_from)
        if self.rows.debug and kind == "llm":  # before the content is queued: it may make repeated text references
            shown = content and trace.capture != "metadata"  # (metadata: no content, not even here)
            logs.debug_print(rows.llm_calls[-1], self.content.processed(trace.capture, content) if shown else {})
        self.content.queue(span.span_id, trace.trace_id, trace.capture, trace.strings, content, rows)
        if (kind == "llm" and status == "error" and error_from is None and extra and error is not None
                and error["type"] != "cancelled" and (extra.get("first_token_ns") or extra.get("streamed_text"))):
            # A stream that failed after the app had received part of it: the failure reached the app
            # too (after the first chunk no fallback can take over; LlamaIndex's engines re-raise it in
            # the reader, on another thread, maybe after the request's span ended ok). The consumer
            # closing a stream early is not a failure of the request.
            trace.stream_failed = True
        if span.is_root:
            self._root_end(span, t, latency, "error" if trace.stream_failed else status, rows)
        elif trace.roots_open <= 0 and trace.ended_ns is not None:  # a late child: its trace ended before it
            self.rows.late_trace(rows, trace, t, failed=status == "error" and error_from is None)
            trace.ended_ns = max(trace.ended_ns, t)

    def _llm_end(self, span: Span, t: int, latency: float, out: dict, status: str, error: dict | None,
                 absorbed: BaseException | None, extra: dict, rows: Rows, content: dict) -> str | None:
        trace, start = span.trace, span.start
        first = extra.get("first_token_ns")
        streamed = bool(first) or bool(extra.get("streamed"))
        messages = start.get("input_messages") or []
        tool_ids: list[str] = [m["tool_call_id"] for m in messages if isinstance(m, dict) and m.get("tool_call_id")]
        links = self.links.call_ended(span, t, status, start.get("model"), tool_ids, out.get("sdk_retries"))
        params = start.get("params")
        if streamed and isinstance(params, dict) and params.get("stream") is False:
            params = {**params, "stream": True}  # (LangChain reports its default, not what was sent)
        row = self.rows.llm_call(rows, span, latency, out, status, None if absorbed is not None else error, links, first,
                                 streamed, params)
        self.rows.log_call(row, trace, tool_ids)
        self.rows.tool_requests(rows, span, out.get("tool_requests") or [])
        if extra.get("streamed_text") is not None:  # what a stream delivered, even when it stopped early
            out = {**out, "raw_completion": extra["streamed_text"]}
        for key in ("input_messages", "tools_offered", "raw_completion", "tool_requests", "generations"):
            value = start.get(key) if key in start else out.get(key)
            if value is not None:
                content[key] = value
        if absorbed is None and "parsed" not in out:
            return None
        # the provider's client parsed the answer itself (a structured-output call): it is its own parser
        trace.llm_calls[-1].consumed = True
        if absorbed is not None:
            assert error is not None
            content["parse_error"] = error["message"]
            self._parse_failed(trace, span.span_id, span.name, error, type(absorbed).__name__, t, rows)
        else:
            content["parsed"] = out["parsed"]
            self._validation(trace.trace_id, span.span_id, "schema", True, None, "parser", t, rows, trace=trace)
        return span.span_id

    def _retriever_end(self, span: Span, t: int, latency: float, out: dict, rows: Rows, content: dict) -> None:
        self.links.retriever_ended(span, t, latency)
        chunks = out.get("chunks")
        if chunks:
            content["outputs"] = chunks  # a retriever's outputs are its chunks in rank order: where each chunk's text is
            self.rows.chunks(rows, span, t, chunks)

    def _tool_end(self, span: Span, latency: float, status: str, out: dict, rows: Rows) -> None:
        if out.get("interrupted"):  # paused for a human (LangGraph's interrupt): it has no result yet
            status = "interrupted"
        call_id, pending = self.links.tool_request(span)
        span.trace.tool_ms[call_id or span.span_id] = latency
        if pending is not None:
            self.rows.tool_answered(rows, pending["row_id"], span, status, latency)
        else:
            self.rows.tool_run(rows, span, call_id, self.links.tool_asked_in_text(span, latency), status, latency)

    def _parse_end(self, span: Span, t: int, out: dict, exc: BaseException | None, error: dict | None, rows: Rows,
                   content: dict) -> str | None:
        """A step that turned a model's answer into a structured value (or failed to)."""
        trace = span.trace
        target = self.links.parse_target(span, t)
        if target is None:
            return None
        target.consumed = True
        if exc is not None:
            assert error is not None
            self._parse_failed(trace, target.span_id, span.name, error, type(exc).__name__, t, rows)
        elif "parse_error" in out:  # a framework that recovers from the failure reports it in its output
            content["parse_error"] = out["parse_error"]
            self._parse_failed(trace, target.span_id, span.name, {"message": out["parse_error"]}, None, t, rows)
        else:
            if "parsed" in out:
                content["parsed"] = out["parsed"]
            if span.kind != "parser" or span.name != "StrOutputParser":
                self._validation(trace.trace_id, target.span_id, "schema", True, None, "parser", t, rows, trace=trace)
        return target.span_id

    def _parse_failed(self, trace: TraceState, call_span_id: str, parser: str, error: dict, exc_type: str | None,
                      t: int, rows: Rows) -> None:
        logs.emit("ERROR", lambda: {"event": "parse_error", "trace_id": trace.trace_id, "span_id": call_span_id,
                                 "parser": parser, "error_type": exc_type})
        self._validation(trace.trace_id, call_span_id, "schema", False, error["message"], "parser", t, rows, trace=trace)

    def _root_end(self, span: Span, t: int, latency: float, status: str, rows: Rows) -> None:
        trace = span.trace
        trace.roots_open -= 1
        self.rows.trace(rows, trace, span, t, latency, status)
        trace.ended_ns = t if trace.ended_ns is None else max(trace.ended_ns, t)
        if trace.roots_open <= 0:
            trace.errors.clear()  # (exceptions hold their frames: not kept past the request)
            if self._traces.pop(trace.trace_id, None) is not None:
                self._keep_done(trace)

    def _keep_done(self, trace: TraceState) -> TraceState:
        """Keep an ended trace for a late child (one whose parent ended first) to find."""
        self._done[trace.trace_id] = trace
        if len(self._done) > _DONE_TRACES:
            self._done.popitem(last=False)
        return trace

    # -- feedback and validations ------------------------------------------------------------

    def _feedback(self, t: int, trace_id: str, f: dict, rows: Rows) -> None:
        fid = self.rows.feedback(rows, trace_id, f, t)
        body = {k: f[k] for k in ("correction", "comment") if f.get(k) is not None}
        if body:
            self._content_of("fb:" + fid, self._traces.get(trace_id) or trace_id, body, rows)

    def _validation(self, trace_id: str, span_id: str | None, rule: str, passed: bool, detail: Any, source: str,
                    t: int, rows: Rows, trace: TraceState | None = None) -> None:
        vid = self.rows.validation(rows, trace_id, span_id, rule, passed, source, t)
        if detail is not None:
            self._content_of("val:" + vid, trace or self._traces.get(trace_id) or trace_id, {"detail": detail}, rows)

    def _content_of(self, owner_id: str, trace: TraceState | str, fields: dict[str, Any], rows: Rows) -> None:
        """Content of a live trace (or one whose id is all that is known: feedback arriving later)."""
        if isinstance(trace, TraceState):
            self.content.queue(owner_id, trace.trace_id, trace.capture, trace.strings, fields, rows)
        else:
            self.content.queue(owner_id, trace, self._capture, None, fields, rows)

    def finish(self, rows: Rows) -> None:
        self.content.finish(rows, self.audit)


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
