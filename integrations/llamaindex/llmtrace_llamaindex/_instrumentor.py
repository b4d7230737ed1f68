"""LlamaIndex instrumentation: a span handler and an event handler on the root dispatcher.

Spans become llmtrace spans; events say what a span was (a retrieval, an embedding, a rerank, a
structured prediction) and carry the LLM calls, joined to their span by ``span_id``. An LLM call is
a span of its own under the method's span, because a streaming method returns (and its span ends)
before the stream is read: the call ends at ``LLMChatEndEvent``, or at the ``ExceptionEvent`` of a
stream that failed or that the consumer closed early (recorded as ``cancelled``).

Streams LlamaIndex starts lazily. A streaming query engine returns a generator, and the LLM call
inside it starts only when the consumer reads it: after the query's span closed, so LlamaIndex
reports it with no parent. The handler remembers each generator a span returned; a span that
starts with no parent looks down the call stack for one of them, and belongs to the span that
returned it (one request, one trace). If that span's own LLM call is still streaming, the new span
is the same call reported again (``astream_complete`` reading ``stream_complete``): its LLM events
are not a second call.

The handlers override the span entry points directly (no ``BaseSpan`` objects, no locks) and only
append a tuple to llmtrace's queue; everything else happens on the writer thread.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Callable
from types import AsyncGeneratorType, FrameType, GeneratorType
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
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
from llmtrace.integration import (
    ANNOTATE,
    END,
    ERROR,
    START,
    TraceContext,
    begin_root,
    connect,
    current_trace,
    current_trace_id,
    now,
    ordered_id,
)
from llmtrace_llamaindex import _extract as extract

_now = now

# What a span's instance is, decided once per class (an isinstance check against LlamaIndex's
# abstract classes costs ~0.1 µs; this lookup a tenth of that, on every span).
_TOOL, _LLM, _EMBEDDING = 1, 2, 3
_KINDS: dict[type, int] = {}
_STREAMS = frozenset((GeneratorType, AsyncGeneratorType))
_STRUCTURED = (".structured_predict", ".astructured_predict")  # they return the parsed value: a parser step
_NOT_OPEN: Any = object()
_MAX_DEPTH = 256  # call-stack frames looked at for the stream a lazily started span runs in


def _kind_of(cls: type) -> int:
    kind = _KINDS.get(cls)
    if kind is None:
        kind = (_TOOL if issubclass(cls, BaseTool) else _LLM if issubclass(cls, BaseLLM)
                else _EMBEDDING if issubclass(cls, BaseEmbedding) else 0)
        if len(_KINDS) < 4096:
            _KINDS[cls] = kind
    return kind


def _frame_of(gen: Any) -> FrameType | None:
    return gen.gi_frame if type(gen) is GeneratorType else gen.ag_frame


def _asks_for_tool(response: Any) -> bool:
    """Whether a streamed chunk carries a tool-call delta (OpenAI-style ``additional_kwargs``, or a
    ToolCallBlock): the model's first output when it answers only with tool calls."""
    msg = getattr(response, "message", None)
    if msg is None:
        return False
    extra = msg.additional_kwargs
    if extra and extra.get("tool_calls"):
        return True
    return any(type(b).__name__ == "ToolCallBlock" for b in getattr(msg, "blocks", None) or ())


def _failed_future() -> BaseException | None:
    """The error of a Future a span's method returned, when the span ends with it.

    LlamaIndex's dispatcher ends such a span from the Future's done callback
    (``handle_future_result``, which calls the handler's ``span_exit`` through its own) with ``result=None`` even when the Future failed:
    ``Workflow.run`` on llama-index-workflows < 2 returns one. (tests/test_llamaindex_internals.py
    names that callback.)"""
    frame = sys._getframe(3)  # (this function, the handler's span_exit, the dispatcher's, its caller)
    if frame.f_code.co_name != "handle_future_result":
        return None
    future = frame.f_locals.get("future")
    if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
        return future.exception()
    return None


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
            owner = self._owner
            if result is None:
                failed = _failed_future()
                if failed is not None:  # the Future it returned failed: the span failed (see _failed_future)
                    owner._drop(id_, instance, failed)
                    return
            if type(result) in _STREAMS:
                owner._returned_stream(id_, result)
            if _KINDS.get(type(instance)) or owner._batches or owner._inner:
                owner._leave(id_, instance)
            owner._submit((END, _now(), id_, extract.outputs, result, None))
        except Exception as exc:
            self._owner._problem("span_exit", exc)

    def span_drop(self, id_, bound_args, instance=None, err=None, **kwargs) -> None:
        try:
            self._owner._drop(id_, instance, err)
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
    query / chat / agent run is its own trace (a stream it returns included, whenever it is read);
    ``last_trace_id`` is the most recent one: a single-threaded convenience. In a server, use
    ``llmtrace.current_trace_id()`` inside the request, or choose the id with ``tracer.trace(trace_id=...)``.
    """

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer if tracer is not None else default_tracer()
        self._channel = connect(self.tracer)
        self._submit = self._channel.submit
        self._spans = _Spans.owned_by(self)
        self._events = _Events.owned_by(self)
        # LLM span -> its stream so far: None until the first chunk, then
        # [first content/tool-call delta ns (0: none yet), deltas, the chunk before the last, the last chunk]
        self._open_llm: dict[str, list | None] = {}
        self._llms: dict[str, Any] = {}  # span of an LLM method -> the LLM, until the span ends
        self._tools: set[str] = set()  # tool spans still open (a tool's own inner call is not another run)
        self._inner: set[str] = set()  # spans inside an LLM call that is still streaming: not a call of their own
        self._embedders: dict[str, dict] = {}  # embedding span -> its first batch's model_dict
        self._batches: dict[str, list] = {}  # embedding span -> its batches' end events
        # id(frame of a generator a span returned) -> (weak ref to the generator, that span, its trace id)
        self._gens: dict[int, tuple[weakref.ref, str, str | None]] = {}
        self._dispatcher: Dispatcher | None = None
        self.last_trace_id: str | None = None
        self._on: dict[type, Callable[[Any], None]] = {
            LLMChatStartEvent: self._chat_start, LLMCompletionStartEvent: self._completion_start,
            LLMChatInProgressEvent: self._delta, LLMCompletionInProgressEvent: self._delta,
            LLMChatEndEvent: self._llm_end, LLMCompletionEndEvent: self._llm_end, ExceptionEvent: self._exception,
            RetrievalEndEvent: lambda e: self._annotate(e, extract.retrieval),
            ReRankEndEvent: lambda e: self._annotate(e, extract.rerank),
            EmbeddingStartEvent: self._embedding_start, EmbeddingEndEvent: self._embedding_end,
            LLMPredictStartEvent: lambda e: self._annotate(e, extract.predict),
            LLMStructuredPredictEndEvent: lambda e: self._annotate(e, extract.structured),
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
        cls = type(instance)
        special = _KINDS.get(cls)
        if special is None:
            special = _kind_of(cls)
        root = None
        parent = parent_id
        if parent_id is None:
            entry, in_llm = self._stream_of_caller() if self._gens else (None, False)
            if entry is not None:  # started by reading a stream a span returned: that span's trace
                parent = entry[1] + "/llm" if in_llm else entry[1]
                if in_llm:
                    self._inner.add(id_)
                if entry[2] is not None:
                    self.last_trace_id = entry[2]
            else:
                ctx = current_trace.get()
                if ctx is not None:
                    parent = ctx.span_id
                    self.last_trace_id = ctx.trace_id
                else:
                    root = TraceContext(ordered_id(), generated=True)
                    self.last_trace_id = root.trace_id
                    begin_root(root.trace_id)
        elif self._inner and parent_id in self._inner:
            self._inner.add(id_)
        elif special == _LLM and self._gens and self._open_llm and self._stream_of_caller()[1]:
            self._inner.add(id_)  # an LLM method read by another LLM call's stream: that same call
        name = id_.partition("-")[0]
        kind, convert = "chain", extract.span_inputs
        if special:
            if special == _TOOL:
                if parent_id is None or parent_id not in self._tools:  # (not the tool's own inner call)
                    kind, convert = "tool", extract.tool_inputs
                    name = getattr(getattr(instance, "metadata", None), "name", None) or name  # the tool's own name
                self._tools.add(id_)
            elif special == _LLM:
                self._llms[id_] = instance
                if name.endswith(_STRUCTURED):
                    kind = "parser"
        self._submit((START, _now(), id_, parent, kind, name, root, convert, bound_args, None, None))

    def _leave(self, id_: str, instance: Any) -> None:
        """A span ends: forget what was kept for it; an embedding span gets all its batches."""
        special = _KINDS.get(type(instance))
        if special == _TOOL:
            self._tools.discard(id_)
        elif special == _LLM:
            self._llms.pop(id_, None)
        if self._inner:
            self._inner.discard(id_)
        if self._batches:
            batches = self._batches.pop(id_, None)
            if batches is not None:
                self._submit((ANNOTATE, _now(), id_, extract.embedding, (batches, self._embedders.pop(id_, None))))

    def _drop(self, id_: str, instance: Any, err: BaseException | None) -> None:
        t = _now()
        self._leave(id_, instance)
        state = self._open_llm.pop(id_, _NOT_OPEN)
        if state is not _NOT_OPEN:  # the call failed before it answered
            self._submit((ERROR, t, id_ + "/llm", err, self._stream_extra(state)))
        self._submit((ERROR, t, id_, err, None))

    def _returned_stream(self, id_: str, gen: Any) -> None:
        """Remember a generator span ``id_`` returned, for the spans that start when it is read."""
        frame = _frame_of(gen)
        if frame is None:
            return
        key = id(frame)
        gens = self._gens
        if len(gens) > 10_000:  # generators nobody reads nor frees
            gens.clear()

        def forget(ref: weakref.ref, key: int = key) -> None:
            entry = gens.get(key)
            if entry is not None and entry[0] is ref:
                gens.pop(key, None)

        gens[key] = (weakref.ref(gen, forget), id_, current_trace_id())

    def _stream_of_caller(self) -> tuple[tuple[weakref.ref, str, str | None] | None, bool]:
        """The generator a span returned that is running this call, found on the call stack: an
        LLM call's own stream if one is (then True: the call is that LLM call, read through another
        method), else the innermost one."""
        gens = self._gens
        innermost = None
        frame: FrameType | None = sys._getframe(2)
        depth = 0
        while frame is not None and depth < _MAX_DEPTH:
            entry = gens.get(id(frame))
            if entry is not None:
                gen = entry[0]()
                if gen is not None and _frame_of(gen) is frame:
                    if entry[1] in self._open_llm:
                        return entry, True
                    if innermost is None:
                        innermost = entry
            frame = frame.f_back
            depth += 1
        return innermost, False

    # -- events --------------------------------------------------------------------------------

    def _llm_start(self, event: Any, prompt: Any, is_chat: bool) -> None:
        span_id = event.span_id
        if span_id is None or span_id in self._inner:
            return
        if len(self._open_llm) > 10_000:  # calls whose stream was never read
            self._open_llm.clear()
        self._open_llm[span_id] = None
        llm = self._llms.get(span_id)
        # a snapshot of the LLM's fields (its settings as of this call), read on the writer thread
        settings = (type(llm), dict(llm.__dict__)) if llm is not None else None
        model_dict = event.model_dict or {}
        raw = (model_dict, prompt, event.additional_kwargs, is_chat, settings)
        self._submit((START, _now(), span_id + "/llm", span_id, "llm", model_dict.get("class_name") or "llm", None,
                      extract.llm_start, raw, None, None))

    def _chat_start(self, event: Any) -> None:
        self._llm_start(event, list(event.messages), True)

    def _completion_start(self, event: Any) -> None:
        self._llm_start(event, event.prompt, False)

    def _delta(self, event: Any) -> None:
        span_id = event.span_id
        state = self._open_llm.get(span_id, _NOT_OPEN)
        if state is None:
            state = self._open_llm[span_id] = [0, [], None, None]
        elif state is _NOT_OPEN:
            return
        response = event.response
        state[2] = state[3]
        state[3] = response
        delta = response.delta
        if delta:  # the stream's text as the consumer saw it (some LLMs' cumulative text lags a token)
            state[1].append(delta)
            if not state[0]:
                state[0] = _now()
        elif not state[0] and _asks_for_tool(response):  # (a role-only opening chunk is not a token)
            state[0] = _now()

    @staticmethod
    def _stream_extra(state: list | None) -> dict | None:
        if not state:
            return None
        first, deltas = state[0], state[1]
        if not first and not deltas:
            return None
        return {"first_token_ns": first or None, "streamed_text": "".join(deltas) if deltas else None}

    def _llm_end(self, event: Any) -> None:
        state = self._open_llm.pop(event.span_id, _NOT_OPEN)
        if state is _NOT_OPEN:
            return
        if state is None:
            raw, extra = (event.response, None, None), None
        else:
            raw = (event.response, state[2], state[1])
            extra = {"first_token_ns": state[0]} if state[0] else None
        self._submit((END, _now(), event.span_id + "/llm", extract.llm_end, raw, extra))

    def _exception(self, event: Any) -> None:
        state = self._open_llm.pop(event.span_id, _NOT_OPEN)
        if state is not _NOT_OPEN:  # a stream that failed, or that its consumer closed
            self._submit((ERROR, _now(), event.span_id + "/llm", event.exception, self._stream_extra(state)))

    def _embedding_start(self, event: Any) -> None:
        span_id = event.span_id
        if span_id is not None and span_id not in self._embedders:
            if len(self._embedders) > 1000:  # spans that never ended
                self._embedders.clear()
            self._embedders[span_id] = event.model_dict

    def _embedding_end(self, event: Any) -> None:
        """A batch: kept until its span ends, which then gets them all (a span embeds in batches)."""
        span_id = event.span_id
        if span_id is not None:
            batches = self._batches.get(span_id)
            if batches is None:
                if len(self._batches) > 1000:
                    self._batches.clear()
                self._batches[span_id] = [event]
            else:
                batches.append(event)

    def _annotate(self, event: Any, convert: Any) -> None:
        if event.span_id is not None:
            self._submit((ANNOTATE, _now(), event.span_id, convert, event))
