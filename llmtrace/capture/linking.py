"""Every link between records, decided once, on the writer thread, as spans start and end.

Links are facts about *how* the framework ran, and only the writer sees the run as it happens:
which spans were open above a call, which exception object passed through which span, what had
ended when something started. So they are decided here and stored (``llm_calls.retrieved_from``,
``tool_calls.llm_span_id``, ``spans.link_span_id``, ``spans.error_from``, ``llm_calls.tools_ms`` /
``retry_count`` / ``fallback_from``); the read side only puts stored rows together.

- **nested calls**: a model call inside a model call (LlamaIndex's ``acomplete`` -> ``complete``) is
  the same call reported twice; the outer one is the call the app made, the inner one is ``other``.
- **retries**: failed attempts before a call: LangChain's ``on_retry`` and ``retry:attempt:N`` tags
  of the runnable that re-ran, a re-run of the same framework task (LangGraph's ``RetryPolicy``),
  and the retries the provider's client reported with its final error.
- **fallbacks**: a call that answered under a fallback runner after a sibling call failed names
  the model that failed (``fallback_from``).
- **retrieval**: the chunks that could have reached a call are those of the retriever spans of its
  trace that returned before it started; a retriever's outputs are its chunks in rank order, so
  a chunk row's rank is where its text is.
- **tools**: a tool's result answers the model's request with the same provider tool-call id;
  without one, the first unanswered request for that tool (order within the agent step); without
  any request, the model call that ended last before the tool started (an agent that asked in
  text). A call's tool time is the time of the tool runs whose results are in its input, or else
  of the tools the previous call asked for in text.
- **parsers**: a parser step parses the answer of the model call that ended last before it ended,
  nearest in the span tree (so parallel branches parse their own call), not parsed by another step.
- **errors**: an exception is one error where it started; the spans it only passed through (the
  same object, or one raised ``from`` it) point there with ``error_from``. A parse failure is a
  parse failure only where it started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmtrace.capture.state import CallRef, Span

_RETRY_TAG = "retry:attempt:"  # LangChain's RunnableRetry tags each attempt after the first


class Linker:
    """The link decisions, over the recorder's open spans (``open_spans`` is the recorder's own dict;
    ``load_start`` converts a span's start payload when a link needs it before the span ends)."""

    def __init__(self, open_spans: dict[Any, Span], load_start: Callable[[Span], None]) -> None:
        self._open = open_spans
        self._load_start = load_start

    def _parent(self, span: Span) -> Span | None:
        return self._open.get(span.parent_key) if span.parent_key is not None else None

    # -- when a span starts ---------------------------------------------------------------------

    def started(self, span: Span, parent: Span | None, tags: Any) -> None:
        """Links a span takes from where it starts: retries, nested and fallback calls."""
        if tags:
            for tag in tags:
                if isinstance(tag, str) and tag.startswith(_RETRY_TAG) and tag[14:].isdigit():
                    span.retry_base = int(tag[14:]) - 1
        if span.task is not None:  # the same framework task run again after it failed: a retry
            failed = span.trace.failed_tasks.get((span.parent_key, span.name, span.task))
            if failed:
                span.retry_base = failed
        if span.kind != "llm" or parent is None:
            return
        ancestors = []
        anc: Span | None = parent
        while anc is not None:
            if anc.llm_children:
                span.kind = "other"  # the same call reported twice: the outer one is the call the app made
                return
            ancestors.append(anc)
            anc = self._parent(anc)
        parent.llm_children += 1
        span.ancestors = tuple(a.span_id for a in ancestors)
        for anc in ancestors:
            if not span.retry_base and (anc.retries or anc.retry_base):
                span.retry_base = anc.retries or anc.retry_base
            if span.fallback_anchor is None and "WithFallbacks" in (anc.name or ""):
                span.fallback_anchor = anc.span_id

    def ended(self, span: Span, failed: bool) -> None:
        """A span ended: an LLM call no longer counts as open under its parent; a failed task is noted."""
        if span.kind == "llm":
            parent = self._parent(span)
            if parent is not None and parent.llm_children:
                parent.llm_children -= 1
        if failed and span.task is not None:
            key = (span.parent_key, span.name, span.task)
            span.trace.failed_tasks[key] = span.trace.failed_tasks.get(key, 0) + 1

    # -- errors ---------------------------------------------------------------------------------

    def error_origin(self, span: Span, exc: BaseException, absorbed: bool = False) -> tuple[str | None, bool]:
        """Where ``exc`` started: ``(error_from, own)``. ``error_from`` is the span id of the span it
        started in when that is another span (this one only passed it on), else None; ``own`` is
        True when it started here. ``absorbed``: this span records it as something other than its
        own failure (a model call whose answer failed to parse), so the first span it then passes
        through counts it as the error."""
        errors = span.trace.errors
        seen = None
        cause: BaseException | None = exc
        for _ in range(8):  # the same object, or one raised ``from`` it
            if cause is None:
                break
            found = errors.get(id(cause))
            if found is not None and found[0] is cause:
                seen = found
                break
            cause = cause.__cause__
        if seen is not None:
            if seen[2]:
                return seen[1], False
            seen[1], seen[2] = span.span_id, True  # its origin absorbed it: the error counts here
            return None, False
        errors[id(exc)] = [exc, span.span_id, not absorbed]
        return None, True

    # -- LLM calls ------------------------------------------------------------------------------

    def call_ended(self, span: Span, t: int, status: str, model: Any, tool_ids: list[str],
                   sdk_retries: int | None) -> dict[str, Any]:
        """The links of a model call that ended, and its place among the trace's calls."""
        trace = span.trace
        retrieved = [(sid, ms) for (t_end, sid, ms) in trace.retrievers if t_end <= span.t0] if trace.retrievers else ()
        tools_ms = None
        if tool_ids:
            known = [trace.tool_ms[i] for i in tool_ids if i in trace.tool_ms]
            tools_ms = sum(known) if known else None
        if tools_ms is None and trace.text_tools:  # the time of the tools the previous call asked for in text
            previous = None
            for call in trace.llm_calls:  # the call that started last before this one
                if call.t0 < span.t0 and (previous is None or call.t0 > previous.t0):
                    previous = call
            tools_ms = trace.text_tools.get(previous.span_id) if previous is not None else None
        fallback_from = None
        if span.fallback_anchor is not None:
            for prev in reversed(trace.llm_calls):
                if prev.anchor == span.fallback_anchor and prev.status == "error":
                    fallback_from = prev.model
                    break
        trace.llm_calls.append(CallRef(span.span_id, span.t0, t, model, status, span.fallback_anchor, span.ancestors))
        return {"retrieved_from": [sid for sid, _ in retrieved] if retrieved else None,
                "retrieval_ms": sum(ms for _, ms in retrieved) if retrieved else None,
                "tools_ms": tools_ms, "fallback_from": fallback_from,
                "retry_count": span.retries + span.retry_base + (sdk_retries or 0)}

    def retriever_ended(self, span: Span, t: int, latency: float) -> None:
        span.trace.retrievers.append((t, span.span_id, latency))

    # -- tools ----------------------------------------------------------------------------------

    def tool_request(self, span: Span) -> tuple[str | None, dict[str, Any] | None]:
        """The tool-call id a tool span answers, and the model's pending request it answers (if any)."""
        trace = span.trace
        call_id = span.start.get("tool_call_id")
        parent = self._parent(span)
        if call_id is None and parent is not None:  # a framework step that ran the tool may name the call
            self._load_start(parent)
            call_id = parent.start.get("tool_call_id")
        pending = trace.requests.get(call_id) if call_id else None
        if pending is None or pending["matched"]:
            # No provider id: join by order, to the first unmatched request for this tool.
            name = span.start.get("tool_name", span.name)
            pending = next((p for p in trace.requests.values() if not p["matched"] and p["name"] == name), None)
        if pending is not None:
            pending["matched"] = True
            # joined by name: the call that answers it knows the tool's result by the request's id
            call_id = call_id or pending.get("id")
        return call_id, pending

    def tool_asked_in_text(self, span: Span, latency: float) -> str | None:
        """A tool no request names: the model call that ended last before it started asked for it."""
        trace = span.trace
        before = [c for c in trace.llm_calls if c.t1 <= span.t0]
        if not before:
            return None
        call = max(before, key=lambda c: c.t1)
        trace.text_tools[call.span_id] = trace.text_tools.get(call.span_id, 0.0) + latency
        return call.span_id

    # -- parsers --------------------------------------------------------------------------------

    def parse_target(self, span: Span, t: int) -> CallRef | None:
        """The model call whose answer a parsing step consumed: ended by the time it ended, not
        taken by another step, the one that ended last among the calls nearest in the span tree
        (inside the step itself first: an agent node that calls the model and parses its answer)."""
        candidates = [c for c in span.trace.llm_calls if c.t1 <= t and not c.consumed]
        if not candidates:
            return None
        anc: Span | None = span
        while anc is not None:
            mine = [c for c in candidates if anc.span_id in c.ancestors]
            if mine:
                return max(mine, key=lambda c: c.t1)
            if anc.parent_key is None:  # the root of its run: calls outside it are other runs' of the trace
                return max(candidates, key=lambda c: c.t1) if anc is span else None
            anc = self._parent(anc)
        return max(candidates, key=lambda c: c.t1)  # a step whose parent ended first: its trace's latest call
