"""LlamaIndex instrumentation: a span handler and an event handler on the root dispatcher.

Spans become llmtrace spans; events say what a span was (a retrieval, an embedding, a rerank, a
structured prediction) and carry the LLM calls, joined to their span by ``span_id``. An LLM call is
a span of its own under the method's span, because a streaming method returns (and its span ends)
before the stream is read: the call ends at ``LLMChatEndEvent``, or at the ``ExceptionEvent`` of a
stream the consumer closed early (recorded as ``cancelled``).

The handlers override the span entry points directly (no ``BaseSpan`` objects, no locks) and only
append a tuple to llmtrace's queue; everything else happens on the writer thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import Dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent, EmbeddingStartEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
    LLMPredictStartEvent,
    LLMStructuredPredictEndEvent,
)
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent
from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.tools.types import BaseTool
from pydantic import BaseModel
from typing_extensions import Self

from llmtrace import Tracer, default_tracer
from llmtrace.integration import ANNOTATE, END, ERROR, START, TraceContext, begin_root, connect, current_trace, now, ordered_id
from llmtrace_llamaindex import _extract as X

_now = now


class _Owned(BaseModel):
    """Both handlers hand everything to the instrumentor that owns them.

    The owner sits in the instance ``__dict__``, not in a pydantic ``PrivateAttr``: reading a
    private attribute goes through ``BaseModel.__getattr__`` (about 2.6 µs), and the handlers read
    it on every span and event of the application's thread (~45 times per W4 query)."""

    if TYPE_CHECKING:
        _owner: ClassVar[LLMTraceInstrumentor]  # (an instance attribute, set below: not a pydantic field)

    @classmethod
    def owned_by(cls, owner: LLMTraceInstrumentor) -> Self:
        handler = cls()
        object.__setattr__(handler, "_owner", owner)
        return handler


class _Spans(_Owned, BaseSpanHandler):
    @classmethod
    def class_name(cls) -> str:
        return "LLMTraceSpanHandler"

    def span_enter(self, id_, bound_args, instance=None, parent_id=None, tags=None, **kwargs) -> None:
        try:
            self._owner._enter(id_, bound_args, instance, parent_id)
        except Exception as exc:
            self._owner._problem("span_enter", exc)

    def span_exit(self, id_, bound_args, instance=None, result=None, **kwargs) -> None:
        try:
            self._owner._submit((END, _now(), id_, X.outputs, result, None))
        except Exception as exc:
            self._owner._problem("span_exit", exc)

    def span_drop(self, id_, bound_args, instance=None, err=None, **kwargs) -> None:
        try:
            self._owner._drop(id_, err)
        except Exception as exc:
            self._owner._problem("span_drop", exc)

    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Events(_Owned, BaseEventHandler):
    @classmethod
    def class_name(cls) -> str:
        return "LLMTraceEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        try:
            on = self._owner._on.get(type(event))
            if on is not None:
                on(event)
        except Exception as exc:
            self._owner._problem("event", exc)


class LLMTraceInstrumentor:
    """Records LlamaIndex query engines, chat engines, retrievers, LLMs and agents into llmtrace.

    ``instrument()`` attaches to LlamaIndex's root dispatcher (idempotent); ``uninstrument()``
    removes exactly what it added. Without ``tracer.trace(...)`` around it, each top-level
    query / chat / agent run is its own trace; ``last_trace_id`` is the most recent one.
    """

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer if tracer is not None else default_tracer()
        self._channel = connect(self.tracer)
        self._submit = self._channel.submit
        self._spans = _Spans.owned_by(self)
        self._events = _Events.owned_by(self)
        self._first: dict[str, int] = {}  # LLM span -> first streamed delta
        self._deltas: dict[str, list[str]] = {}
        self._open_llm: set[str] = set()
        self._embedders: dict[str, dict] = {}  # embedding span -> its model_dict, until it ends
        self._dispatcher: Dispatcher | None = None
        self.last_trace_id: str | None = None
        self._on: dict[type, Callable[[Any], None]] = {
            LLMChatStartEvent: self._chat_start, LLMCompletionStartEvent: self._completion_start,
            LLMChatInProgressEvent: self._delta, LLMCompletionInProgressEvent: self._delta,
            LLMChatEndEvent: self._llm_end, LLMCompletionEndEvent: self._llm_end, ExceptionEvent: self._exception,
            RetrievalEndEvent: lambda e: self._annotate(e, X.retrieval),
            ReRankEndEvent: lambda e: self._annotate(e, X.rerank),
            EmbeddingStartEvent: self._embedding_start, EmbeddingEndEvent: self._embedding_end,
            LLMPredictStartEvent: lambda e: self._annotate(e, X.predict),
            LLMStructuredPredictEndEvent: lambda e: self._annotate(e, X.structured),
        }

    # -- attach / detach ---------------------------------------------------------------------

    def instrument(self) -> LLMTraceInstrumentor:
        if self._dispatcher is None:
            dispatcher = get_dispatcher()
            dispatcher.add_span_handler(self._spans)
            dispatcher.add_event_handler(self._events)
            self._dispatcher = dispatcher
        return self

    def uninstrument(self) -> None:
        d = self._dispatcher
        if d is None:
            return
        d.span_handlers = [h for h in d.span_handlers if h is not self._spans]
        d.event_handlers = [h for h in d.event_handlers if h is not self._events]
        self._dispatcher = None

    @property
    def instrumented(self) -> bool:
        return self._dispatcher is not None

    # -- spans ---------------------------------------------------------------------------------

    def _problem(self, where: str, exc: Exception) -> None:
        self._channel.problem("llamaindex:" + where, exc)

    def _enter(self, id_: str, bound_args: Any, instance: Any, parent_id: str | None) -> None:
        root = None
        parent = parent_id
        if parent_id is None:
            ctx = current_trace.get()
            if ctx is not None:
                parent = ctx.span_id
                self.last_trace_id = ctx.trace_id
            else:
                root = TraceContext(ordered_id(), generated=True)
                self.last_trace_id = root.trace_id
                begin_root(root.trace_id)
        name = id_.partition("-")[0]
        if isinstance(instance, BaseTool):
            kind, convert = "tool", X.tool_inputs
            name = getattr(getattr(instance, "metadata", None), "name", None) or name  # the tool's own name
        else:
            kind, convert = "chain", X.span_inputs
        self._submit((START, _now(), id_, parent, kind, name, root, convert, bound_args, None, None))

    def _drop(self, id_: str, err: BaseException | None) -> None:
        now = _now()
        if id_ in self._open_llm:  # the call failed before it answered
            self._open_llm.discard(id_)
            self._submit((ERROR, now, id_ + "/llm", err, self._stream_extra(id_)))
        self._submit((ERROR, now, id_, err, None))

    # -- events --------------------------------------------------------------------------------

    def _llm_start(self, event: Any, prompt: Any, is_chat: bool) -> None:
        span_id = event.span_id
        if span_id is None:
            return
        self._open_llm.add(span_id)
        model_dict = event.model_dict or {}
        raw = (model_dict, prompt, event.additional_kwargs, is_chat)
        self._submit((START, _now(), span_id + "/llm", span_id, "llm", model_dict.get("class_name") or "llm", None,
                      X.llm_start, raw, None, None))

    def _chat_start(self, event: Any) -> None:
        self._llm_start(event, list(event.messages), True)

    def _completion_start(self, event: Any) -> None:
        self._llm_start(event, event.prompt, False)

    def _delta(self, event: Any) -> None:
        span_id = event.span_id
        if span_id not in self._first:
            self._first[span_id] = _now()
        delta = getattr(event.response, "delta", None)
        if delta:  # the stream's text as the consumer saw it (some LLMs' cumulative text lags a token)
            self._deltas.setdefault(span_id, []).append(delta)

    def _stream_extra(self, span_id: str) -> dict | None:
        first = self._first.pop(span_id, None)
        deltas = self._deltas.pop(span_id, None)
        if first is None:
            return None
        return {"first_token_ns": first, "streamed_text": "".join(deltas) if deltas else None}

    def _llm_end(self, event: Any) -> None:
        span_id = event.span_id
        if span_id not in self._open_llm:
            return
        self._open_llm.discard(span_id)
        self._submit((END, _now(), span_id + "/llm", X.llm_end, event.response, self._stream_extra(span_id)))

    def _exception(self, event: Any) -> None:
        span_id = event.span_id
        if span_id in self._open_llm:  # a stream that failed, or that its consumer closed
            self._open_llm.discard(span_id)
            self._submit((ERROR, _now(), span_id + "/llm", event.exception, self._stream_extra(span_id)))

    def _embedding_start(self, event: Any) -> None:
        if event.span_id is not None:
            if len(self._embedders) > 1000:  # spans that never ended
                self._embedders.clear()
            self._embedders[event.span_id] = event.model_dict

    def _embedding_end(self, event: Any) -> None:
        if event.span_id is not None:
            self._submit((ANNOTATE, _now(), event.span_id, X.embedding,
                          (event, self._embedders.pop(event.span_id, None))))

    def _annotate(self, event: Any, convert: Any) -> None:
        if event.span_id is not None:
            self._submit((ANNOTATE, _now(), event.span_id, convert, event))
