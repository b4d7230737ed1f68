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
from llmtrace_langchain import _extract as X

_KINDS = {"parser": "parser", "prompt": "chain", "retriever": "retriever", "tool": "tool", "llm": "llm",
          "embedding": "embedding"}
_now = now


def _copy(value: Any) -> Any:
    # Frameworks and hand-written loops mutate the dicts and lists they passed (appending messages):
    # a shallow copy now keeps the snapshot true to the moment of the call.
    cls = type(value)
    if cls is dict or cls is list:
        return value.copy()
    return value


class LLMTraceCallbackHandler(BaseCallbackHandler):
    """Records every LangChain run into llmtrace; pass it in ``config={"callbacks": [handler]}``.

    One handler serves every request (thread- and task-safe). Per-request attributes come from
    RunnableConfig metadata keys ``llmtrace_trace_id``, ``llmtrace_user_id``, ``llmtrace_session_id``,
    ``llmtrace_feature``, ``llmtrace_team``, ``llmtrace_prompt_version`` (and ``llmtrace_capture``).
    ``last_trace_id`` is the trace id of the most recent root run this handler saw.
    """

    run_inline = True
    raise_error = False

    def __init__(self, tracer: Tracer | None = None, *, source_id_keys: Sequence[str] = ("id", "source", "doc_id")):
        self.tracer = tracer if tracer is not None else default_tracer()
        self._channel = connect(self.tracer)
        self._submit = self._channel.submit
        self._first_token: dict[UUID, int] = {}
        self._documents = X.make_documents_converter(tuple(source_id_keys))
        self.last_trace_id: str | None = None

    def _problem(self, where: str, exc: Exception) -> None:
        self._channel.problem("langchain:" + where, exc)

    def _root(self, run_id: UUID, metadata: dict[str, Any] | None) -> tuple[Any, TraceContext | None]:
        """Parent and trace context of a run LangChain reports without a parent.

        Some runnables (``RunnableWithFallbacks`` in langchain-core 1.x) set the child config in
        the context but invoke with the parent's: their children arrive with no parent_run_id.
        The config in the context still names the real parent, so the request stays one trace.
        """
        child_config = var_child_runnable_config.get()
        if child_config:
            parent = getattr(child_config.get("callbacks"), "parent_run_id", None)
            if parent is not None and parent != run_id:
                return parent, None
        ctx = current_trace.get()
        if ctx is not None:  # inside ``with tracer.trace():``: a child of that trace's span
            self.last_trace_id = ctx.trace_id
            return ctx.span_id, None
        trace_id = metadata.get("llmtrace_trace_id") if metadata else None
        root = TraceContext(str(trace_id), generated=False) if trace_id else TraceContext(str(run_id), generated=True)
        self.last_trace_id = root.trace_id
        begin_root(root.trace_id)
        return None, root

    # -- chains, prompts, parsers --------------------------------------------------------------

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None, metadata=None,
                       **kwargs: Any) -> None:
        try:
            parent, root = (parent_run_id, None) if parent_run_id is not None else self._root(run_id, metadata)
            run_type = kwargs.get("run_type")
            cls = type(inputs)
            self._submit((START, _now(), run_id, parent, _KINDS.get(run_type, "chain") if run_type else "chain",
                          kwargs.get("name") or serialized, root,
                          X.prompt_inputs if run_type == "prompt" else X.chain_inputs,
                          inputs.copy() if cls is dict or cls is list else inputs, metadata, tags))
        except Exception as exc:
            self._problem("on_chain_start", exc)

    def on_chain_end(self, outputs, *, run_id, **kwargs: Any) -> None:
        try:
            cls = type(outputs)
            inputs = kwargs.get("inputs")  # the real inputs when streaming (the start saw a placeholder)
            if inputs is not None:
                icls = type(inputs)
                inputs = {"inputs": inputs.copy() if icls is dict or icls is list else inputs}
            self._submit((END, _now(), run_id, X.chain_outputs,
                          outputs.copy() if cls is dict or cls is list else outputs, inputs))
        except Exception as exc:
            self._problem("on_chain_end", exc)

    def on_chain_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            self._submit((ERROR, _now(), run_id, error, None))
        except Exception as exc:
            self._problem("on_chain_error", exc)

    # -- models --------------------------------------------------------------------------------

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, tags=None, metadata=None,
                            **kwargs: Any) -> None:
        try:
            parent, root = (parent_run_id, None) if parent_run_id is not None else self._root(run_id, metadata)
            raw = (serialized, [list(m) for m in messages], kwargs.get("invocation_params"), metadata, True)
            self._submit((START, _now(), run_id, parent, "llm", kwargs.get("name") or serialized, root, X.llm_start,
                          raw, metadata, tags))
        except Exception as exc:
            self._problem("on_chat_model_start", exc)

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, tags=None, metadata=None,
                     **kwargs: Any) -> None:
        try:
            parent, root = (parent_run_id, None) if parent_run_id is not None else self._root(run_id, metadata)
            raw = (serialized, list(prompts), kwargs.get("invocation_params"), metadata, False)
            self._submit((START, _now(), run_id, parent, "llm", kwargs.get("name") or serialized, root, X.llm_start,
                          raw, metadata, tags))
        except Exception as exc:
            self._problem("on_llm_start", exc)

    def on_llm_new_token(self, token, *, chunk=None, run_id, **kwargs: Any) -> None:
        if run_id not in self._first_token:
            self._first_token[run_id] = _now()

    def on_llm_end(self, response, *, run_id, **kwargs: Any) -> None:
        try:
            first = self._first_token.pop(run_id, None)
            self._submit((END, _now(), run_id, X.llm_end, response, {"first_token_ns": first} if first else None))
        except Exception as exc:
            self._problem("on_llm_end", exc)

    def on_llm_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            first = self._first_token.pop(run_id, None)
            self._submit((ERROR, _now(), run_id, error, {"first_token_ns": first} if first else None))
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
            parent, root = (parent_run_id, None) if parent_run_id is not None else self._root(run_id, metadata)
            name = kwargs.get("name") or serialized
            raw = (input_str, _copy(inputs), kwargs.get("tool_call_id"), name)
            self._submit((START, _now(), run_id, parent, "tool", name, root, X.tool_start, raw, metadata, tags))
        except Exception as exc:
            self._problem("on_tool_start", exc)

    def on_tool_end(self, output, *, run_id, **kwargs: Any) -> None:
        try:
            self._submit((END, _now(), run_id, X.tool_end, output, None))
        except Exception as exc:
            self._problem("on_tool_end", exc)

    def on_tool_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            self._submit((ERROR, _now(), run_id, error, None))
        except Exception as exc:
            self._problem("on_tool_error", exc)

    # -- retrievers ----------------------------------------------------------------------------

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, tags=None, metadata=None,
                           **kwargs: Any) -> None:
        try:
            parent, root = (parent_run_id, None) if parent_run_id is not None else self._root(run_id, metadata)
            self._submit((START, _now(), run_id, parent, "retriever", kwargs.get("name") or serialized, root, X.query,
                          query, metadata, tags))
        except Exception as exc:
            self._problem("on_retriever_start", exc)

    def on_retriever_end(self, documents, *, run_id, **kwargs: Any) -> None:
        try:
            self._submit((END, _now(), run_id, self._documents, list(documents), None))
        except Exception as exc:
            self._problem("on_retriever_end", exc)

    def on_retriever_error(self, error, *, run_id, **kwargs: Any) -> None:
        try:
            self._submit((ERROR, _now(), run_id, error, None))
        except Exception as exc:
            self._problem("on_retriever_error", exc)
