"""LangChain objects to llmtrace's neutral fields. Runs on llmtrace's writer thread, never the caller's.

One small total function per field: each returns ``None`` when the framework did not say,
never a made-up default (a token count that was not reported is null, not 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue

from llmtrace.integration import name_of, to_jsonable

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool", "function": "function",
          "developer": "system", "AIMessageChunk": "assistant", "HumanMessageChunk": "user"}
_SCORE_KEYS = ("score", "relevance_score", "similarity_score", "similarity", "_score")


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def message(m: Any) -> dict[str, Any]:
    """A LangChain message as {role, content, tool_calls, tool_call_id, name}."""
    if isinstance(m, dict):
        return to_jsonable(m)
    if isinstance(m, (list, tuple)) and len(m) == 2 and isinstance(m[0], str):
        return {"role": _ROLES.get(m[0], m[0]), "content": to_jsonable(m[1])}
    if isinstance(m, str):
        return {"role": "user", "content": m}
    mtype = getattr(m, "type", None)
    role = getattr(m, "role", None) if mtype == "chat" else _ROLES.get(str(mtype), mtype)
    fields = getattr(m, "__dict__", None) or {}
    out: dict[str, Any] = {"role": role, "content": fields.get("content", getattr(m, "content", None))}
    calls = fields.get("tool_calls")
    if calls:
        out["tool_calls"] = [{"id": _get(c, "id"), "name": _get(c, "name"), "args": _get(c, "args")} for c in calls]
    if fields.get("tool_call_id"):
        out["tool_call_id"] = fields["tool_call_id"]
    if fields.get("name"):
        out["name"] = fields["name"]
    if fields.get("status") == "error":
        out["status"] = "error"
    return out


_SCALARS = (str, int, float, bool, type(None))


def plain(obj: Any, depth: int = 0) -> Any:
    """Chain inputs/outputs with messages, prompt values and documents made readable.

    Plain data is returned as is (the JSON encoder takes it); only framework objects are converted.
    """
    cls = type(obj)
    if cls in _SCALARS:
        return obj
    if depth > 4:
        return to_jsonable(obj)
    if cls is dict:
        if all(type(v) in _SCALARS for v in obj.values()):
            return obj
        return {str(k): plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, depth + 1) for v in obj]
    if isinstance(obj, BaseMessage):
        return message(obj)
    if isinstance(obj, Document):
        return {"id": obj.id, "content": obj.page_content, "metadata": to_jsonable(obj.metadata)}
    if isinstance(obj, PromptValue):
        try:
            return {"messages": [message(m) for m in obj.to_messages()]}
        except Exception:
            pass
    return to_jsonable(obj)


def chain_inputs(raw: Any) -> dict[str, Any]:
    return {"inputs": plain(raw)}


def prompt_inputs(raw: Any) -> dict[str, Any]:
    return {"inputs": plain(raw), "skip_outputs": True}


def chain_outputs(raw: Any) -> dict[str, Any]:
    return {"outputs": plain(raw)}


_tools_seen: dict[int, tuple[Any, tuple[dict, ...]]] = {}  # id -> (the bound tools list, its conversion)


def tools_offered(params: dict) -> tuple[dict, ...] | None:
    tools = params.get("tools") or params.get("functions")
    if not tools:
        return None
    # bind_tools() passes the same list object on every call: convert it once (writer thread only)
    seen = _tools_seen.get(id(tools))
    if seen is not None and seen[0] is tools:
        return seen[1]
    out = []
    for t in tools:
        fn = _get(t, "function") or t
        out.append({"name": _get(fn, "name"), "description": _get(fn, "description"),
                    "parameters": to_jsonable(_get(fn, "parameters") or _get(fn, "input_schema"))})
    if len(_tools_seen) > 256:
        _tools_seen.clear()
    frozen = tuple(out)  # a tuple: shared read-only, so the redactor handles it once too
    _tools_seen[id(tools)] = (tools, frozen)
    return frozen


def model_asked(serialized: dict | None, params: dict, metadata: dict | None) -> str | None:
    for value in ((metadata or {}).get("ls_model_name"), params.get("model"), params.get("model_name"),
                  params.get("model_id")):
        if value:
            return str(value)
    kwargs = (serialized or {}).get("kwargs") or {}
    for key in ("model", "model_name", "model_id"):
        if kwargs.get(key):
            return str(kwargs[key])
    ident = (serialized or {}).get("id")
    if ident:
        return str(ident[-1])
    return params.get("_type")


def llm_start(raw: tuple) -> dict[str, Any]:
    """on_chat_model_start / on_llm_start: the input snapshot and the model asked for."""
    serialized, prompt, params, metadata, is_chat = raw
    params = dict(params or {})
    if is_chat:
        messages = [message(m) for batch in prompt for m in batch]
    else:
        messages = [{"role": "user", "content": p} for p in prompt]
    offered = tools_offered(params)
    model = model_asked(serialized, params, metadata)
    provider = (metadata or {}).get("ls_provider")
    params.pop("tools", None)
    params.pop("functions", None)
    return {"model": model, "provider": provider, "params": params,
            "input_messages": messages, "tools_offered": offered}  # (the read side takes the system prompt from them)


def _first_int(*values: Any) -> int | None:
    for v in values:
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            return int(v)
    return None


def tokens(msg: Any, llm_output: dict | None) -> dict[str, int | None]:
    usage = getattr(msg, "usage_metadata", None) if msg is not None else None
    if usage:
        inp, out = _first_int(usage.get("input_tokens")), _first_int(usage.get("output_tokens"))
        cached = _first_int((usage.get("input_token_details") or {}).get("cache_read"))
        reasoning = _first_int((usage.get("output_token_details") or {}).get("reasoning"))
        total = _first_int(usage.get("total_tokens"))
    else:
        meta = getattr(msg, "response_metadata", None) or {}
        tu = ((llm_output or {}).get("token_usage") or (llm_output or {}).get("usage")
              or meta.get("token_usage") or meta.get("usage"))
        if not tu:  # nothing reported (fake and local models): nothing to look through
            return dict.fromkeys(_TOKEN_FIELDS)
        if not isinstance(tu, dict):
            tu = to_jsonable(tu)
            tu = tu if isinstance(tu, dict) else {}
        inp = _first_int(tu.get("prompt_tokens"), tu.get("input_tokens"))
        out = _first_int(tu.get("completion_tokens"), tu.get("output_tokens"))
        total = _first_int(tu.get("total_tokens"))
        cached = _first_int((tu.get("prompt_tokens_details") or {}).get("cached_tokens"),
                            tu.get("cache_read_input_tokens"))
        reasoning = _first_int((tu.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    if total is None and inp is not None and out is not None:
        total = inp + out
    return {"input": inp, "output": out, "total": total, "input_cached": cached, "reasoning": reasoning}


_TOKEN_FIELDS = ("input", "output", "total", "input_cached", "reasoning")


def _text(gen: Any) -> Any:
    msg = getattr(gen, "message", None)
    text = getattr(gen, "text", None)
    if isinstance(text, str) and type(text) is not str:
        text = str.__str__(text)  # LangChain's TextAccessor: store a plain string
    if msg is not None and (not text or not isinstance(msg.content, str)):
        return to_jsonable(msg.content)
    return text


def llm_end(response: Any) -> dict[str, Any]:
    """on_llm_end: the version that answered, tokens, raw completion, tool-call requests."""
    gens: Sequence = (response.generations or [[]])[0] if response.generations else []
    first = gens[0] if gens else None
    msg = getattr(first, "message", None)
    meta = getattr(msg, "response_metadata", None) or {}
    info = getattr(first, "generation_info", None) or {}
    llm_output = response.llm_output or {}
    requests = []
    for call in getattr(msg, "tool_calls", None) or []:
        requests.append({"id": _get(call, "id"), "name": _get(call, "name"), "args": to_jsonable(_get(call, "args"))})
    for call in getattr(msg, "invalid_tool_calls", None) or []:
        requests.append({"id": _get(call, "id"), "name": _get(call, "name"), "args": _get(call, "args"),
                         "error": _get(call, "error")})
    version = (meta.get("model_name") or meta.get("model") or llm_output.get("model_name")
               or llm_output.get("model") or info.get("model"))
    finish = (info.get("finish_reason") or meta.get("finish_reason") or meta.get("stop_reason")
              or meta.get("done_reason"))
    out: dict[str, Any] = {
        "model_version": version, "provider": meta.get("model_provider"),
        "tokens": tokens(msg, llm_output), "finish_reason": finish,
        "raw_completion": _text(first) if first is not None else None,
        "tool_requests": requests or None, "n_generations": len(gens) or None,
    }
    if len(gens) > 1:
        out["generations"] = [_text(g) for g in gens]
    return out


def tool_start(raw: tuple) -> dict[str, Any]:
    input_str, inputs, tool_call_id, name = raw
    return {"inputs": plain(inputs) if inputs is not None else input_str, "tool_call_id": tool_call_id,
            "tool_name": name_of(name, "tool")}


def tool_end(output: Any) -> dict[str, Any]:
    if hasattr(output, "tool_call_id") and hasattr(output, "content"):  # a ToolMessage
        content = to_jsonable(output.content)
        if getattr(output, "status", None) == "error":
            return {"outputs": content, "status": "error", "error": content if isinstance(content, str) else None}
        return {"outputs": content}
    return {"outputs": plain(output)}


def source_id(doc: Any, keys: Sequence[str]) -> str | None:
    doc_id = getattr(doc, "id", None)
    if doc_id:
        return str(doc_id)
    meta = getattr(doc, "metadata", None) or {}
    for key in keys:
        if meta.get(key) is not None:
            return str(meta[key])
    return None


def score(doc: Any) -> Any:
    meta = getattr(doc, "metadata", None) or {}
    for key in _SCORE_KEYS:
        if meta.get(key) is not None:
            return meta[key]
    return None


def make_documents_converter(keys: Sequence[str]):
    def documents(docs: list) -> dict[str, Any]:
        chunks = [{"source_id": source_id(d, keys), "score": to_jsonable(score(d)),
                   "content": getattr(d, "page_content", None), "metadata": to_jsonable(getattr(d, "metadata", None))}
                  for d in docs]
        return {"outputs": chunks, "chunks": chunks}

    documents.__name__ = "documents"
    return documents


def query(raw: Any) -> dict[str, Any]:
    return {"inputs": to_jsonable(raw)}
