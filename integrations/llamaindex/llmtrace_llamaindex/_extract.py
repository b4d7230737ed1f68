"""LlamaIndex objects to llmtrace's neutral fields. Runs on llmtrace's writer thread only.

One small total function per field; what LlamaIndex did not report stays ``None``.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.schema import BaseNode

from llmtrace.integration import to_jsonable

_SECRETISH = ("api_key", "token", "secret", "password")
_PROVIDERS = {"openai": "openai", "azureopenai": "azure", "anthropic": "anthropic", "gemini": "google",
              "vertex": "google", "bedrock": "aws", "mistral": "mistral", "groq": "groq", "ollama": "ollama",
              "cohere": "cohere"}


def _role(msg: Any) -> str | None:
    role = getattr(msg, "role", None)
    return getattr(role, "value", role)


def tool_calls_of(msg: Any) -> list[dict[str, Any]]:
    """Tool calls an assistant message carries: ToolCallBlocks, or OpenAI-style additional_kwargs."""
    out = []
    for block in getattr(msg, "blocks", None) or []:
        if type(block).__name__ == "ToolCallBlock":
            out.append({"id": block.tool_call_id, "name": block.tool_name, "args": to_jsonable(block.tool_kwargs)})
    for call in (getattr(msg, "additional_kwargs", None) or {}).get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else getattr(call, "function", None)
        get = (lambda o, k: o.get(k)) if isinstance(fn, dict) else getattr
        out.append({"id": call.get("id") if isinstance(call, dict) else getattr(call, "id", None),
                    "name": get(fn, "name") if fn is not None else None,
                    "args": get(fn, "arguments") if fn is not None else None})
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


def _model(model_dict: dict) -> tuple[str | None, str | None, dict]:
    params = {k: v for k, v in model_dict.items() if not any(s in k for s in _SECRETISH)}
    model = params.get("model") or params.get("model_name") or params.get("class_name")
    cls = str(params.get("class_name") or "").lower().replace("_llm", "").replace("llm", "")
    provider = next((p for key, p in _PROVIDERS.items() if key in cls), cls or None)
    for key in ("class_name", "callback_manager", "system_prompt", "messages_to_prompt", "completion_to_prompt",
                "output_parser", "pydantic_program_mode", "query_wrapper_prompt", "tool_calls"):
        params.pop(key, None)
    return (str(model) if model else None), provider, params


def llm_start(raw: tuple) -> dict[str, Any]:
    model_dict, prompt, additional, is_chat = raw
    model, provider, params = _model(dict(model_dict or {}))
    params.update({k: v for k, v in (additional or {}).items() if k != "tools"})
    messages = [message(m) for m in prompt] if is_chat else [{"role": "user", "content": prompt}]
    tools = (additional or {}).get("tools")
    offered = None
    if tools:
        offered = []
        for t in tools:
            meta = getattr(t, "metadata", None)
            offered.append({"name": getattr(meta, "name", None), "description": getattr(meta, "description", None),
                            "parameters": to_jsonable(meta.get_parameters_dict()) if meta is not None else None})
    return {"model": model, "provider": provider, "params": to_jsonable(params),
            "input_messages": messages, "tools_offered": offered}  # (the read side takes the system prompt from them)


def _usage(raw: Any, extra: dict) -> dict[str, int | None]:
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    get = (lambda k: usage.get(k)) if isinstance(usage, dict) else (lambda k: getattr(usage, k, None))
    inp = out = total = cached = reasoning = None
    if usage is not None:
        inp = get("prompt_tokens") if get("prompt_tokens") is not None else get("input_tokens")
        out = get("completion_tokens") if get("completion_tokens") is not None else get("output_tokens")
        total = get("total_tokens")
        details = get("prompt_tokens_details")
        cached = (details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None))
        details = get("completion_tokens_details")
        reasoning = (details.get("reasoning_tokens") if isinstance(details, dict)
                     else getattr(details, "reasoning_tokens", None))
    inp = inp if inp is not None else extra.get("prompt_tokens")
    out = out if out is not None else extra.get("completion_tokens")
    total = total if total is not None else extra.get("total_tokens")
    if total is None and inp is not None and out is not None:
        total = inp + out
    return {"input": inp, "output": out, "total": total, "input_cached": cached, "reasoning": reasoning}


def llm_end(response: Any) -> dict[str, Any]:
    if response is None:
        return {}
    msg = getattr(response, "message", None)
    text = getattr(msg, "content", None) if msg is not None else getattr(response, "text", None)
    raw = getattr(response, "raw", None)
    extra = getattr(response, "additional_kwargs", None) or {}
    get = (lambda k: raw.get(k)) if isinstance(raw, dict) else (lambda k: getattr(raw, k, None))
    choices = get("choices") if raw is not None else None
    finish = None
    if choices:
        first = choices[0]
        finish = first.get("finish_reason") if isinstance(first, dict) else getattr(first, "finish_reason", None)
    finish = finish or (get("stop_reason") if raw is not None else None)
    requests = tool_calls_of(msg) if msg is not None else []
    return {"model_version": get("model") if raw is not None else None, "tokens": _usage(raw, extra),
            "finish_reason": finish, "raw_completion": text, "tool_requests": requests or None, "n_generations": 1}


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
    name = type(result).__name__
    if name == "ToolOutput":
        out = {"outputs": to_jsonable(getattr(result, "content", None))}
        if getattr(result, "is_error", False):
            out.update(status="error", error=out["outputs"])
        return out
    if name in ("Response", "StreamingResponse", "AgentChatResponse", "StreamingAgentChatResponse"):
        text = getattr(result, "response", None)
        return {"outputs": {"response": text if isinstance(text, str) else None,
                            "source_nodes": [getattr(n, "node_id", None) for n in getattr(result, "source_nodes", []) or []]}}
    if _is_stream(type(result)):
        return {"outputs": f"<{name}>"}  # a stream: its text is the LLM call's raw completion
    return {"outputs": value(result)}


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
    """An embedding call (``EmbeddingEndEvent`` and its start's ``model_dict``): the model, how many
    texts, the vectors' size, and their ``token_count``.

    LlamaIndex reports no usage for embeddings, so tokens are counted with its own tokenizer
    (tiktoken, as its TokenCountingHandler does): exact for OpenAI's embedding models, an
    estimate for others, and said so in ``counted_with``."""
    event, model_dict = raw
    model_dict = model_dict or {}
    out: dict[str, Any] = {"model": model_dict.get("model_name") or model_dict.get("class_name"),
                           "chunks": len(event.chunks or []),
                           "dimensions": len(event.embeddings[0]) if event.embeddings else None}
    count = _count_tokens([c for c in event.chunks or [] if isinstance(c, str)])
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
