"""LlamaIndex objects to llmtrace's neutral fields. Runs on llmtrace's writer thread only.

One small total function per field; what LlamaIndex did not report stays ``None``. Usage blocks,
tool specs, tool-call arguments and the secret-key rule come from ``llmtrace.integration``, so they
read the same as on every other integration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.schema import BaseComponent, BaseNode
from pydantic import BaseModel

from llmtrace.integration import get, json_schema_of, to_jsonable, tokens_from_usage, tool_args, tool_spec, without_secrets

_PROVIDERS = {"openai": "openai", "azureopenai": "azure", "anthropic": "anthropic", "gemini": "google",
              "vertex": "google", "bedrock": "aws", "mistral": "mistral", "groq": "groq", "ollama": "ollama",
              "cohere": "cohere"}
# An LLM's fields that are not invocation parameters: how LlamaIndex formats prompts and parses
# answers, callbacks, and where and how the client connects. (Secrets go by the shared rule.)
_NOT_PARAMS = frozenset((
    "callback_manager", "rate_limiter", "system_prompt", "messages_to_prompt", "completion_to_prompt",
    "output_parser", "pydantic_program_mode", "query_wrapper_prompt", "class_name", "model", "model_name",
    "additional_kwargs", "api_base", "api_version", "base_url", "azure_endpoint", "azure_deployment", "endpoint",
    "default_headers", "default_query", "http_client", "async_http_client", "reuse_client", "max_retries",
    "timeout", "callback", "tool_calls"))
# Arguments of an LLM method that LlamaIndex reads itself (the tools go to ``tools_offered``).
_CALL_FLAGS = frozenset(("tools", "formatted"))


def _role(msg: Any) -> str | None:
    role = getattr(msg, "role", None)
    return getattr(role, "value", role)


def tool_calls_of(msg: Any) -> list[dict[str, Any]]:
    """The tool calls an assistant message carries, once each: its ToolCallBlocks (llama-index-core
    0.13+), and the OpenAI-style ``additional_kwargs["tool_calls"]`` that LLM classes keep beside
    them (the only place on older cores). A call in both is the same call: joined by its id."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for block in getattr(msg, "blocks", None) or ():
        if type(block).__name__ == "ToolCallBlock":
            call_id = block.tool_call_id
            if call_id:
                seen.add(call_id)
            out.append({"id": call_id, "name": block.tool_name, "args": tool_args(block.tool_kwargs)})
    for call in (getattr(msg, "additional_kwargs", None) or {}).get("tool_calls") or ():
        call_id = get(call, "id")
        if call_id and call_id in seen:
            continue
        fn = get(call, "function")
        out.append({"id": call_id, "name": get(fn, "name"), "args": tool_args(get(fn, "arguments"))})
    return out


def message(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _role(msg), "content": getattr(msg, "content", None)}
    calls = tool_calls_of(msg)
    if calls:
        out["tool_calls"] = calls
    extra = getattr(msg, "additional_kwargs", None) or {}
    if extra.get("tool_call_id"):
        out["tool_call_id"] = extra["tool_call_id"]
    if extra.get("name"):
        out["name"] = extra["name"]
    return out


_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    """The fields of an LLM class that are invocation parameters (decided once per class)."""
    found = _FIELDS.get(cls)
    if found is None:
        model_fields = getattr(cls, "model_fields", None) or {}
        found = tuple(name for name, info in model_fields.items()
                      if name not in _NOT_PARAMS and not getattr(info, "exclude", False))
        if len(_FIELDS) < 1024:
            _FIELDS[cls] = found
    return found


def _params(settings: tuple[type, dict] | None, model_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What the LLM sends with every call: its own fields (temperature, max_tokens, ...) and its
    ``additional_kwargs``, from the snapshot of its fields taken when the call started. The start
    event's ``model_dict`` is only the LLM's metadata on llama-index-core 0.14 (context window,
    model name): it is the fallback when the LLM object is not known."""
    if settings is None:
        return {k: v for k, v in model_dict.items() if k not in _NOT_PARAMS}
    cls, values = settings
    params = {}
    for name in _fields(cls):
        value = values.get(name)
        if value is not None:
            params[name] = value
    extra = values.get("additional_kwargs")
    if isinstance(extra, Mapping):
        params.update(extra)
    return params


def _model_and_provider(settings: tuple[type, dict] | None,
                        model_dict: Mapping[str, Any]) -> tuple[str | None, str | None]:
    values = settings[1] if settings is not None else {}
    model = values.get("model") or model_dict.get("model") or model_dict.get("model_name") \
        or model_dict.get("class_name")
    cls = model_dict.get("class_name")
    if not cls and settings is not None:
        llm_class: Any = settings[0]
        try:
            cls = llm_class.class_name()
        except Exception:
            cls = None
    cls = str(cls or "").lower().replace("_llm", "").replace("llm", "")
    provider = next((p for key, p in _PROVIDERS.items() if key in cls), cls or None)
    return (str(model) if model else None), provider


def _tool_spec(tool: Any) -> dict[str, Any]:
    """A tool as the model is shown it. A LlamaIndex tool object is described by its metadata as
    ``to_openai_tool`` sends it (``get_parameters_dict``: the schema without its title); an OpenAI
    tool dict, as LLM classes pass them once converted, by the shared reader."""
    meta = getattr(tool, "metadata", None)
    if meta is not None and not isinstance(tool, Mapping) and callable(getattr(meta, "get_parameters_dict", None)):
        try:
            return tool_spec({"name": meta.name, "description": meta.description,
                              "parameters": meta.get_parameters_dict()})
        except Exception:
            pass
    return tool_spec(tool)


def llm_start(raw: tuple) -> dict[str, Any]:
    model_dict, prompt, call_kwargs, is_chat, settings = raw
    model_dict = model_dict or {}
    model, provider = _model_and_provider(settings, model_dict)
    params = _params(settings, model_dict)
    call_kwargs = call_kwargs or {}
    for key, value in call_kwargs.items():
        if key not in _CALL_FLAGS:
            params[key] = value
    params = without_secrets(params)  # (the one secret-key rule: api_key goes, max_tokens stays)
    if "response_format" in params and isinstance(params["response_format"], type):
        params["response_format"] = json_schema_of(params["response_format"])  # a class: the schema it stands for
    messages = [message(m) for m in prompt] if is_chat else [{"role": "user", "content": prompt}]
    tools = call_kwargs.get("tools")
    offered = [_tool_spec(t) for t in tools] if tools else None
    return {"model": model, "provider": provider, "params": to_jsonable(params),
            "input_messages": messages, "tools_offered": offered}  # (the read side takes the system prompt from them)


def _tokens(raw: Any, extra: Mapping[str, Any]) -> dict[str, int | None]:
    """The provider's usage block (``raw.usage``), else the counts LLM classes copy into the
    response's ``additional_kwargs`` (``prompt_tokens``, ...)."""
    tokens = tokens_from_usage(get(raw, "usage") if raw is not None else None)
    if tokens["input"] is None and tokens["output"] is None and extra:
        tokens = tokens_from_usage(extra)
    return tokens


def _finish_reason(raw: Any) -> str | None:
    if raw is None:
        return None
    choices = get(raw, "choices")
    if choices:
        reason = get(choices[0], "finish_reason")
        if reason:
            return str(reason)
    reason = get(raw, "stop_reason")
    return str(reason) if reason else None


def raw_completion(text: Any, requests: list[dict[str, Any]]) -> Any:
    """The model's answer as it came back: its text, or — when it asked for tools — its text and
    the tool-call requests (``{"content", "tool_calls"}``), so a tools-only answer is not empty."""
    if not requests:
        return text
    return {"content": text if text else None, "tool_calls": requests}


def llm_end(raw: tuple) -> dict[str, Any]:
    """``raw``: (the last response, the one before it, the deltas a stream delivered or None).

    A stream's last chunk may carry only usage (OpenAI's ``include_usage``): the finish reason is
    then on the chunk before it. The text is what the deltas delivered, as the consumer saw it
    (some LLMs' cumulative text lags a token)."""
    response, previous, deltas = raw
    if response is None:
        return {}
    msg = getattr(response, "message", None)
    text = getattr(msg, "content", None) if msg is not None else getattr(response, "text", None)
    if deltas:
        text = "".join(deltas)
    provider_raw = getattr(response, "raw", None)
    finish = _finish_reason(provider_raw)
    if finish is None and previous is not None:
        finish = _finish_reason(getattr(previous, "raw", None))
    requests = tool_calls_of(msg) if msg is not None else []
    version = get(provider_raw, "model") if provider_raw is not None else None
    return {"model_version": version if isinstance(version, str) else None,
            "tokens": _tokens(provider_raw, getattr(response, "additional_kwargs", None) or {}),
            "finish_reason": finish, "raw_completion": raw_completion(text, requests),
            "tool_requests": requests or None, "n_generations": 1}


_SCALARS = frozenset((str, int, float, bool, type(None)))
_SHAPES: dict[type, str] = {}  # class -> how ``value`` shows its instances, decided once per class


def _shape(cls: type) -> str:
    shape = _SHAPES.get(cls)
    if shape is not None:
        return shape
    name = cls.__name__
    if issubclass(cls, (list, tuple)):
        shape = "sequence"
    elif issubclass(cls, dict):
        shape = "mapping"
    elif name == "QueryBundle":
        shape = "query"
    elif name == "NodeWithScore":
        shape = "scored_node"
    elif issubclass(cls, BaseNode):
        shape = "node"
    elif name == "ChatMessage":
        shape = "message"
    elif name in ("CompletionResponse", "ChatResponse"):
        shape = "response"
    elif name.endswith(("Event", "ToolCall", "ToolCallResult")) and hasattr(cls, "model_dump"):
        shape = "dump"
    else:
        shape = "name"
    if len(_SHAPES) < 4096:
        _SHAPES[cls] = shape
    return shape


def value(v: Any, depth: int = 0) -> Any:
    """A readable, bounded view of what LlamaIndex passes between steps.

    Queries and messages keep their text; nodes keep their ids and scores (their text is on the
    retriever span); embedding vectors keep their size; models, prompts and other components keep
    their class name. Walking LlamaIndex objects in full would cost more than the query.
    """
    cls = type(v)
    if cls in _SCALARS:
        return v
    if depth > 4:
        return f"<{cls.__name__}>"
    shape = _shape(cls)
    if shape == "sequence":
        if len(v) > 32 and all(type(x) is float for x in v[:8]):
            return f"<vector of {len(v)} floats>"
        return [value(x, depth + 1) for x in v[:100]]
    if shape == "mapping":
        return {str(k): value(x, depth + 1) for k, x in list(v.items())[:100]}
    if shape == "query":
        return {"query_str": v.query_str}
    if shape == "scored_node":
        node = v.node
        return {"node_id": node.node_id, "source_id": node.ref_doc_id, "score": v.score}
    if shape == "node":
        return {"node_id": v.node_id, "source_id": v.ref_doc_id}
    if shape == "message":
        return message(v)
    if shape == "response":
        return getattr(v, "text", None) or str(v)
    if shape == "dump":
        try:
            return value(v.model_dump(), depth + 1)
        except Exception:
            return f"<{cls.__name__}>"
    return f"<{cls.__name__}>"


def span_inputs(bound_args: Any) -> dict[str, Any]:
    args = dict(getattr(bound_args, "arguments", None) or {})
    args.pop("self", None)
    out: dict[str, Any] = {"inputs": value(args)}
    ev = args.get("ev")
    if ev is not None and type(ev).__name__ == "ToolCall":  # an agent step that runs one tool call
        out["tool_call_id"] = getattr(ev, "tool_id", None)
        out["tool_name"] = getattr(ev, "tool_name", None)
    return out


def tool_inputs(bound_args: Any) -> dict[str, Any]:
    out = span_inputs(bound_args)
    out["kind"] = "tool"
    kwargs = (out["inputs"] or {}).get("kwargs")
    if isinstance(kwargs, dict):
        out["inputs"] = kwargs
    return out


def outputs(result: Any) -> dict[str, Any]:
    cls = type(result)
    name = cls.__name__
    if name == "ToolOutput":
        out = {"outputs": to_jsonable(getattr(result, "content", None))}
        if getattr(result, "is_error", False):
            out.update(status="error", error=out["outputs"])
        return out
    if name in ("Response", "StreamingResponse", "AgentChatResponse", "StreamingAgentChatResponse"):
        text = getattr(result, "response", None)
        return {"outputs": {"response": text if isinstance(text, str) else None,
                            "source_nodes": [getattr(n, "node_id", None) for n in getattr(result, "source_nodes", []) or []]}}
    if _is_stream(cls):
        return {"outputs": f"<{name}>"}  # a stream: its text is the LLM call's raw completion
    if _is_user_model(cls):  # a structured prediction's value: the parsed result (signal 7), in full
        return {"outputs": to_jsonable(result)}
    return {"outputs": value(result)}


_USER_MODELS: dict[type, bool] = {}


def _is_user_model(cls: type) -> bool:
    """Whether ``cls`` is an application's pydantic model (what ``structured_predict`` returns), not
    one of LlamaIndex's own objects, whose full dump would be large and may hold an LLM's settings."""
    found = _USER_MODELS.get(cls)
    if found is None:
        found = (issubclass(cls, BaseModel) and not issubclass(cls, BaseComponent)
                 and not cls.__module__.startswith(("llama_index", "workflows")))
        if len(_USER_MODELS) < 1024:
            _USER_MODELS[cls] = found
    return found


_STREAMS: dict[type, bool] = {}


def _is_stream(cls: type) -> bool:
    """Whether instances of ``cls`` are iterators (the protocol is looked up on the class). Asked of
    the class once: on a pydantic model instance, a missing attribute runs its Python __getattr__,
    which builds an AttributeError message (3% of a LlamaIndex query's conversion)."""
    found = _STREAMS.get(cls)
    if found is None:
        if len(_STREAMS) >= 1024:
            _STREAMS.clear()
        found = _STREAMS[cls] = hasattr(cls, "__aiter__") or hasattr(cls, "__next__")
    return found


def nodes(nodes_with_score: list) -> list[dict[str, Any]]:
    out = []
    for nws in nodes_with_score or []:
        node = getattr(nws, "node", nws)
        try:
            content = node.get_content()
        except Exception:
            content = getattr(node, "text", None)
        out.append({"source_id": getattr(node, "ref_doc_id", None) or getattr(node, "node_id", None),
                    "node_id": getattr(node, "node_id", None), "score": getattr(nws, "score", None),
                    "content": content})
    return out


def retrieval(event: Any) -> dict[str, Any]:
    chunks = nodes(event.nodes)
    return {"kind": "retriever", "end": {"outputs": chunks, "chunks": chunks}}


def rerank(event: Any) -> dict[str, Any]:
    return {"kind": "rerank", "end": {"outputs": nodes(event.nodes)}}


def embedding(raw: tuple) -> dict[str, Any]:
    """An embedding call: every batch it made (its ``EmbeddingEndEvent``s) and the first batch's
    ``model_dict``: the model, how many texts, the vectors' size, and their ``token_count``.

    LlamaIndex reports no usage for embeddings, so tokens are counted with its own tokenizer
    (tiktoken, as its TokenCountingHandler does): exact for OpenAI's embedding models, an
    estimate for others, and said so in ``counted_with``."""
    batches, model_dict = raw
    model_dict = model_dict or {}
    texts = [c for event in batches for c in event.chunks or ()]
    dimensions = next((len(event.embeddings[0]) for event in batches if event.embeddings), None)
    out: dict[str, Any] = {"model": model_dict.get("model_name") or model_dict.get("class_name"),
                           "chunks": len(texts), "dimensions": dimensions}
    count = _count_tokens([t for t in texts if isinstance(t, str)])
    if count is not None:
        out["token_count"] = count
        out["counted_with"] = "llama_index tokenizer (tiktoken)"
    return {"kind": "embedding", "end": {"outputs": out}}


_tokenizer: Any = None


def _count_tokens(texts: list[str]) -> int | None:
    global _tokenizer
    if not texts or _tokenizer is False:
        return None
    try:
        if _tokenizer is None:
            from llama_index.core.utils import get_tokenizer

            _tokenizer = get_tokenizer()
        return sum(len(_tokenizer(t)) for t in texts)
    except Exception:  # no tokenizer here (tiktoken missing, its files unreachable): tokens unknown
        _tokenizer = False
        return None


def predict(event: Any) -> dict[str, Any]:
    template = getattr(event, "template", None)
    try:
        text = template.get_template() if template is not None else None
    except Exception:
        text = None
    return {"start": {"inputs": {"template": text, "template_args": to_jsonable(event.template_args)}}}


def structured(event: Any) -> dict[str, Any]:
    return {"kind": "parser", "end": {"outputs": to_jsonable(event.output)}}
