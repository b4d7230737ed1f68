"""The LangChain callback handler: one tuple appended to llmtrace's queue per callback, nothing more.

A plain ``BaseCallbackHandler`` (LangChain's ``BaseTracer`` run bookkeeping alone costs more than
the untraced call). ``run_inline = True`` lets async runs call it directly instead of hopping to a
thread pool per callback. Every body is guarded: a failure here is counted, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config

from llmtrace import Tracer, default_tracer
from llmtrace.integration import END, ERROR, RETRY, START, TraceContext, begin_root, connect, current_trace, now
from llmtrace_langchain import _extract as extract

try:  # LangGraph's control flow (interrupt(), Command to a parent graph) travels as exceptions
    from langgraph.errors import GraphBubbleUp as _GraphBubbleUp

    _CONTROL_FLOW: tuple[type[BaseException], ...] = (_GraphBubbleUp,)
except ImportError:  # LangGraph not installed
    _CONTROL_FLOW = ()

_KINDS = {"parser": "parser", "prompt": "chain", "retriever": "retriever", "tool": "tool", "llm": "llm",
          "embedding": "embedding"}
_TASK_KEY = "langgraph_checkpoint_ns"  # LangGraph's identity of a node's task: the same again on a retry
_MAX_RUNS = 50_000  # runs remembered before the ended ones are dropped (the open ones stay)
_RECENT_RUNS = 5_000  # ended runs still remembered then, for a child that starts after its parent ended
_ENDED: Any = object()  # a run's place in ``_runs`` once it ended
_MISSING: Any = object()
_now = now


def _copy(value: Any) -> Any:
    # Frameworks and hand-written loops mutate the dicts and lists they passed (appending messages):
    # a shallow copy now keeps the snapshot true to the moment of the call.
    cls = type(value)
    if cls is dict or cls is list:
        return value.copy()
    return value


def _carries_output(token: Any, chunk: Any) -> bool:
    """Whether a streamed chunk carries content or a tool-call delta (TTFT is stamped at the first
    that does): not OpenAI's role-only opening chunk, not Anthropic's message_start or an empty
    text block's start."""
    if token and type(token) is str:
        return True
    msg = getattr(chunk, "message", None)
    if msg is None:
        return False
    if getattr(msg, "tool_call_chunks", None):
        return True
    content = msg.content
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                if block:
                    return True
            elif isinstance(block, dict) and (block.get("text") or block.get("thinking") or block.get("partial_json")
                                              or block.get("type") in ("tool_use", "tool_call", "image")):
                return True
        return False
    return bool(content) or bool((getattr(msg, "additional_kwargs", None) or {}).get("refusal"))


class LLMTraceCallbackHandler(BaseCallbackHandler):
    """Records every LangChain run into llmtrace; pass it in ``config={"callbacks": [handler]}``.

    One handler serves every request (thread- and task-safe). Per-request attributes come from
    RunnableConfig metadata keys ``llmtrace_trace_id``, ``llmtrace_user_id``, ``llmtrace_session_id``,
    ``llmtrace_feature``, ``llmtrace_team``, ``llmtrace_prompt_version`` (and ``llmtrace_capture``).

    ``llmtrace.current_trace_id()`` is the trace id of the request running in the calling thread or
    task (inside a step, or after ``invoke`` returns): use it to attach feedback in a server.
    ``last_trace_id`` is the trace id of the most recent root run this handler saw, in *any*
    thread: a convenience for scripts and notebooks that run one request at a time.

    ``source_id_keys``: metadata keys that name a retrieved document's source. Given, they win over
    ``Document.id`` (which vector stores fill with an id of their own); by default ``Document.id``
    comes first, then the metadata keys ``id``, ``source``, ``doc_id``.
    """

    run_inline = True
    raise_error = False

    def __init__(self, tracer: Tracer | None = None, *, source_id_keys: Sequence[str] | None = None):
        self.tracer = tracer if tracer is not None else default_tracer()
        self._channel = connect(self.tracer)
        self._submit = self._channel.submit
        # Keyed by the run id's int: hashing a UUID runs Python code (UUID.__hash__), an int's does not.
        self._first_token: dict[int, int] = {}  # run -> first chunk with output (0: streaming, none yet)
        self._runs: dict[int, Any] = {}  # runs this handler saw start -> their parent's key, or _ENDED
        # langchain-core < 1.1.2 does not tell on_tool_start the tool-call id: a tool run's start
        # payload waits here for the id its ToolMessage names at the end
        self._tool_starts: dict[int, tuple] = {}
        if source_id_keys is None:
            self._documents = extract.make_documents_converter(("id", "source", "doc_id"))
        else:
            self._documents = extract.make_documents_converter(tuple(source_id_keys), keys_first=True)
        self.last_trace_id: str | None = None

    def _problem(self, where: str, exc: Exception) -> None:
        self._channel.problem("langchain:" + where, exc)

    def _place(self, run_id: UUID, parent_run_id: UUID | None, metadata: dict[str, Any] | None) -> tuple[Any, Any]:
        """The parent of a run (and its trace context when it is a root).

        ``RunnableWithFallbacks`` (langchain-core 1.x) puts its child config in the context but
        invokes with its parent's, so its children name their grandparent (or, on older cores, no
        parent): the config in the context still names the real parent, a run this handler saw
        start under the reported one. A run whose parent ended before it started (a generator a
        step returned, read later) belongs to its parent's trace. A run whose parent this handler
        never saw (the handler was given to a model inside an untraced chain) is the root of a
        trace of its own."""
        runs = self._runs
        state = runs.get(parent_run_id.int, _MISSING) if parent_run_id is not None else _MISSING
        if state is _MISSING or parent_run_id is None:
            parent, root = self._root(run_id, metadata)
            pkey = parent.int if type(parent) is UUID else None
        elif state is _ENDED:  # its parent ended first (a generator a step returned, read later): its trace
            parent, root, pkey = parent_run_id, None, parent_run_id.int
        else:
            parent, root, pkey = parent_run_id, None, parent_run_id.int
            child_config = var_child_runnable_config.get()
            if child_config:
                named = getattr(child_config.get("callbacks"), "parent_run_id", None)
                if named is not parent_run_id and type(named) is UUID:
                    nkey = named.int
                    if nkey != pkey and runs.get(nkey) == pkey:
                        parent, pkey = named, nkey
        runs[run_id.int] = pkey
        return parent, root

    def _forget_ended_runs(self) -> None:
        """Drop ended runs but the last ones (in place: other threads are adding theirs); a run
        whose end never came stays, as if open."""
        runs = self._runs
        ended = [k for k, v in list(runs.items()) if v is _ENDED]
        for key in ended[:-_RECENT_RUNS]:
            runs.pop(key, None)

    def _root(self, run_id: UUID, metadata: dict[str, Any] | None) -> tuple[Any, TraceContext | None]:
        if len(self._runs) > _MAX_RUNS:  # (checked once per trace, not per run)
            self._forget_ended_runs()
        child_config = var_child_runnable_config.get()
        if child_config:
            parent = getattr(child_config.get("callbacks"), "parent_run_id", None)
            if type(parent) is UUID and parent != run_id and self._runs.get(parent.int, _ENDED) is not _ENDED:
                return parent, None
        ctx = current_trace.get()
        if ctx is not None:  # inside ``with tracer.trace():``: a child of that trace's span
            self.last_trace_id = ctx.trace_id
            return ctx.span_id, None
        trace_id = _chosen_trace_id(metadata.get("llmtrace_trace_id")) if metadata else None
        root = TraceContext(trace_id, generated=False) if trace_id else TraceContext(str(run_id), generated=True)
        self.last_trace_id = root.trace_id
        begin_root(root.trace_id)
        return None, root

    # -- chains, prompts, parsers --------------------------------------------------------------

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None, metadata=None,
                       **kwargs: Any) -> None:
        try:
            parent, root = self._place(run_id, parent_run_id, metadata)
            run_type = kwargs.get("run_type")
            cls = type(inputs)
            self._submit((START, _now(), run_id, parent, _KINDS.get(run_type, "chain") if run_type else "chain",
                          kwargs.get("name") or serialized, root,
                          extract.prompt_inputs if run_type == "prompt" else extract.chain_inputs,
                          inputs.copy() if cls is dict or cls is list else inputs, metadata, tags,
                          metadata.get(_TASK_KEY) if metadata else None))
        except Exception as exc:
            self._problem("on_chain_start", exc)

    def on_chain_end(self, outputs, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            cls = type(outputs)
            inputs = kwargs.get("inputs")  # the real inputs when streaming (the start saw a placeholder)
            if inputs is not None:
                icls = type(inputs)
                inputs = {"inputs": inputs.copy() if icls is dict or icls is list else inputs}
            self._submit((END, _now(), run_id, extract.chain_outputs,
                          outputs.copy() if cls is dict or cls is list else outputs, inputs))
        except Exception as exc:
            self._problem("on_chain_end", exc)

    def on_chain_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            if _CONTROL_FLOW and isinstance(error, _CONTROL_FLOW):  # a pause or a route, not a failure
                self._submit((END, _now(), run_id, extract.control_flow, error, None))
            else:
                self._submit((ERROR, _now(), run_id, error, None))
        except Exception as exc:
            self._problem("on_chain_error", exc)

    # -- models --------------------------------------------------------------------------------

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, tags=None, metadata=None,
                            **kwargs: Any) -> None:
        try:
            parent, root = self._place(run_id, parent_run_id, metadata)
            raw = (serialized, [list(m) for m in messages], kwargs.get("invocation_params"), metadata, True)
            self._submit((START, _now(), run_id, parent, "llm", kwargs.get("name") or serialized, root, extract.llm_start,
                          raw, metadata, tags))
        except Exception as exc:
            self._problem("on_chat_model_start", exc)

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, tags=None, metadata=None,
                     **kwargs: Any) -> None:
        try:
            parent, root = self._place(run_id, parent_run_id, metadata)
            raw = (serialized, list(prompts), kwargs.get("invocation_params"), metadata, False)
            self._submit((START, _now(), run_id, parent, "llm", kwargs.get("name") or serialized, root, extract.llm_start,
                          raw, metadata, tags))
        except Exception as exc:
            self._problem("on_llm_start", exc)

    def on_llm_new_token(self, token, *, chunk=None, run_id, **kwargs: Any) -> None:
        try:
            key = run_id.int
            if self._first_token.get(key):
                return
            self._first_token[key] = _now() if _carries_output(token, chunk) else 0
        except Exception as exc:
            self._problem("on_llm_new_token", exc)

    def _stream_extra(self, run_id: UUID) -> dict[str, Any] | None:
        first = self._first_token.pop(run_id.int, None)
        return None if first is None else {"first_token_ns": first or None, "streamed": True}

    def on_llm_end(self, response, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            self._submit((END, _now(), run_id, extract.llm_end, response, self._stream_extra(run_id)))
        except Exception as exc:
            self._problem("on_llm_end", exc)

    def on_llm_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            extra = self._stream_extra(run_id) or {}
            extra["response"] = (extract.llm_error, (error, kwargs.get("response")))  # what it delivered before it failed
            self._submit((ERROR, _now(), run_id, error, extra))
        except Exception as exc:
            self._problem("on_llm_error", exc)

    def on_retry(self, retry_state, *, run_id, **kwargs: Any) -> None:
        try:
            self._submit((RETRY, _now(), run_id))
        except Exception as exc:
            self._problem("on_retry", exc)

    # -- tools ---------------------------------------------------------------------------------

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, tags=None, metadata=None,
                      inputs=None, **kwargs: Any) -> None:
        try:
            parent, root = self._place(run_id, parent_run_id, metadata)
            name = kwargs.get("name") or serialized
            raw = (input_str, _copy(inputs), kwargs.get("tool_call_id"), name)
            if "tool_call_id" not in kwargs:  # (langchain-core < 1.1.2)
                self._tool_starts[run_id.int] = raw
            self._submit((START, _now(), run_id, parent, "tool", name, root, extract.tool_start, raw, metadata, tags))
        except Exception as exc:
            self._problem("on_tool_start", exc)

    def on_tool_end(self, output, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            extra = None
            if self._tool_starts:
                started = self._tool_starts.pop(run_id.int, None)
                if started is not None:  # the start again, with the id the tool answered (langchain-core < 1.1.2)
                    call_id = extract.tool_call_id_of(output)
                    if call_id is not None:
                        extra = {"inputs": (started[0], started[1], call_id, started[3])}
            self._submit((END, _now(), run_id, extract.tool_end, output, extra))
        except Exception as exc:
            self._problem("on_tool_end", exc)

    def on_tool_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            if self._tool_starts:
                self._tool_starts.pop(run_id.int, None)
            if _CONTROL_FLOW and isinstance(error, _CONTROL_FLOW):  # a tool that asked a human: paused, not failed
                self._submit((END, _now(), run_id, extract.control_flow, error, None))
            else:
                self._submit((ERROR, _now(), run_id, error, None))
        except Exception as exc:
            self._problem("on_tool_error", exc)

    # -- retrievers ----------------------------------------------------------------------------

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, tags=None, metadata=None,
                           **kwargs: Any) -> None:
        try:
            parent, root = self._place(run_id, parent_run_id, metadata)
            self._submit((START, _now(), run_id, parent, "retriever", kwargs.get("name") or serialized, root, extract.query,
                          query, metadata, tags))
        except Exception as exc:
            self._problem("on_retriever_start", exc)

    def on_retriever_end(self, documents, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            self._submit((END, _now(), run_id, self._documents, list(documents), None))
        except Exception as exc:
            self._problem("on_retriever_end", exc)

    def on_retriever_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            self._runs[run_id.int] = _ENDED
            self._submit((ERROR, _now(), run_id, error, None))
        except Exception as exc:
            self._problem("on_retriever_error", exc)


_MAX_TRACE_ID = 128  # (what get_trace accepts)


def _chosen_trace_id(value: Any) -> str | None:
    """The trace id a request chose in its metadata, if it is one get_trace can find: a short string
    (or a UUID / int). Anything else — a huge or nested value, one whose str() fails — is ignored:
    the trace keeps its run id rather than being stored under an id nobody can look up."""
    if value is None or value == "":
        return None
    if type(value) is str:
        text = value
    elif isinstance(value, (UUID, int)) and not isinstance(value, bool):
        try:
            text = str(value)
        except ValueError:  # (an int too long to print)
            return None
    else:
        return None
    return text if len(text) <= _MAX_TRACE_ID else None
