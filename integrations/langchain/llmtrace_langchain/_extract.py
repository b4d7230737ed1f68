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

from llmtrace.integration import json_schema_of, name_of, raw_completion, retries_reported, to_jsonable, tokens_from_usage, tool_spec

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
    out = {"outputs": plain(raw)}
    if type(raw) is list or type(raw).__name__ == "Command":
        _structured(raw, out)
    return out


def _structured(raw: Any, out: dict[str, Any]) -> None:
    """LangGraph's agent (``create_agent``) parses its structured response inside its model node,
    which returns Commands: the update carries ``structured_response``; when parsing failed and the
    agent asks the model again, it carries the model's answer and, in the same update, the error
    ToolMessage answering its structured-output call (a model node runs no tools: a tool call
    answered in its own update is the structured output's). The graph's final state is not read:
    it holds every message and the response of whichever node parsed it."""
    for item in raw if type(raw) is list else [raw]:
        update = getattr(item, "update", None) if type(item).__name__ == "Command" else None
        if not isinstance(update, dict):
            continue
        if update.get("structured_response") is not None:
            out["parsed"] = plain(update["structured_response"])
            return
        messages = update.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            continue
        asked = {_get(c, "id") for m in messages for c in getattr(m, "tool_calls", None) or ()}
        answered = [m for m in messages if getattr(m, "type", None) == "tool" and m.tool_call_id in asked]
        if asked and answered:
            out["parse_error"] = str(answered[0].content)
            return


def control_flow(exc: BaseException) -> dict[str, Any]:
    """A LangGraph control-flow signal (``interrupt()``, a ``Command`` to the parent graph) that
    ended a step: what it carried, not an error."""
    arg = exc.args[0] if exc.args else None
    if type(exc).__name__ == "ParentCommand":
        return {"outputs": {"command": plain(arg)}}
    if isinstance(arg, (list, tuple)):  # GraphInterrupt: the interrupts, each with the value shown to the human
        return {"outputs": {"interrupt": plain([getattr(i, "value", i) for i in arg])}, "interrupted": True}
    return {"outputs": {type(exc).__name__: plain(arg)}}


_tools_seen: dict[int, tuple[Any, tuple[dict, ...]]] = {}  # id -> (the bound tools list, its conversion)


def tools_offered(params: dict) -> tuple[dict, ...] | None:
    tools = params.get("tools") or params.get("functions")
    if not tools:
        return None
    # bind_tools() passes the same list object on every call: convert it once (writer thread only)
    seen = _tools_seen.get(id(tools))
    if seen is not None and seen[0] is tools:
        return seen[1]
    out = [tool_spec(_as_tool_dict(t)) for t in tools]
    if len(_tools_seen) > 256:
        _tools_seen.clear()
    frozen = tuple(out)  # a tuple: shared read-only, so the redactor handles it once too
    _tools_seen[id(tools)] = (tools, frozen)
    return frozen


def _as_tool_dict(tool: Any) -> Any:
    """A tool as the provider receives it: ``.bind(tools=[...])`` passes LangChain tools, pydantic
    classes or functions as they are, and the client converts them the way ``bind_tools`` does."""
    if isinstance(tool, dict):
        return tool
    try:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return convert_to_openai_tool(tool)
    except Exception:
        return tool


def _response_format_sent(schema: Any, provider: Any) -> Any:
    """What a ``response_format`` given as a class (``with_structured_output``'s json_schema method)
    went on the wire as: the OpenAI client turns it into a strict JSON schema; for other clients
    the class's JSON schema (how they send it is theirs to say)."""
    if provider in ("openai", "azure"):
        try:  # openai's own conversion, an internal of the SDK (tests/test_langchain_internals.py names it)
            from openai.lib._parsing._completions import type_to_response_format_param

            return to_jsonable(type_to_response_format_param(schema))
        except Exception:
            pass
    return json_schema_of(schema)


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
    if isinstance(params.get("response_format"), type):
        params["response_format"] = _response_format_sent(params["response_format"], provider)
    return {"model": model, "provider": provider, "params": params,
            "input_messages": messages, "tools_offered": offered}  # (the read side takes the system prompt from them)


def tokens(msg: Any, llm_output: dict | None) -> dict[str, int | None]:
    """LangChain's ``usage_metadata`` first (it counts every billed input token), then what it left
    out from the provider's own usage block (OpenAI's cache writes, for one)."""
    usage = getattr(msg, "usage_metadata", None) if msg is not None else None
    meta = getattr(msg, "response_metadata", None) or {}
    raw = ((llm_output or {}).get("token_usage") or (llm_output or {}).get("usage")
           or meta.get("token_usage") or meta.get("usage"))
    if not usage and not raw:  # nothing reported (fake and local models): nothing to look through
        return dict(_NO_TOKENS)
    out = tokens_from_usage(usage) if usage else tokens_from_usage(raw)
    if usage and raw:
        more = tokens_from_usage(raw)
        for key, value in out.items():
            if value is None:
                out[key] = more[key]
    return out


_NO_TOKENS = tokens_from_usage(None)


def _text(gen: Any) -> Any:
    msg = getattr(gen, "message", None)
    text = getattr(gen, "text", None)
    if isinstance(text, str) and type(text) is not str:
        text = str.__str__(text)  # LangChain's TextAccessor: store a plain string
    if msg is not None and (not text or not isinstance(msg.content, str)):
        return to_jsonable(msg.content)
    return text


def _requests(msg: Any) -> list[dict[str, Any]]:
    requests = []
    for call in getattr(msg, "tool_calls", None) or []:
        requests.append({"id": _get(call, "id"), "name": _get(call, "name"), "args": to_jsonable(_get(call, "args"))})
    for call in getattr(msg, "invalid_tool_calls", None) or []:
        requests.append({"id": _get(call, "id"), "name": _get(call, "name"), "args": _get(call, "args"),
                         "error": _get(call, "error")})
    return requests


def _raw(gen: Any, msg: Any, requests: list[dict[str, Any]]) -> Any:
    """The answer as the provider gave it: its text, and the tool calls it asked for (a refusal is
    kept as the refusal it is)."""
    content = _text(gen)
    if isinstance(content, list):  # content blocks (Anthropic): a streamed tool_use block is merged
        content = [_block(b, requests) for b in content]
    refusal = (getattr(msg, "additional_kwargs", None) or {}).get("refusal") if msg is not None else None
    return raw_completion(content, requests, refusal)


def _block(block: Any, requests: list[dict[str, Any]]) -> Any:
    """A content block without LangChain's stream bookkeeping (``index``); a streamed ``tool_use``
    block's input, which LangChain leaves as ``{}`` beside the JSON pieces, is the parsed call's."""
    if not isinstance(block, dict) or not ("index" in block or "partial_json" in block):
        return block
    out = {k: v for k, v in block.items() if k not in ("index", "partial_json")}
    if out.get("type") == "tool_use" and not out.get("input"):
        args = next((r["args"] for r in requests if r.get("id") == out.get("id") and "error" not in r), None)
        if args is not None:
            out["input"] = args
    return out


def llm_end(response: Any) -> dict[str, Any]:
    """on_llm_end: the version that answered, tokens, raw completion, tool-call requests."""
    gens: Sequence = (response.generations or [[]])[0] if response.generations else []
    return _answer(gens, response.llm_output or {})


def _answer(gens: Sequence, llm_output: dict) -> dict[str, Any]:
    first = gens[0] if gens else None
    msg = getattr(first, "message", None)
    meta = getattr(msg, "response_metadata", None) or {}
    info = getattr(first, "generation_info", None) or {}
    requests = _requests(msg)
    version = (meta.get("model_name") or meta.get("model") or llm_output.get("model_name")
               or llm_output.get("model") or info.get("model"))
    finish = (info.get("finish_reason") or meta.get("finish_reason") or meta.get("stop_reason")
              or meta.get("done_reason"))
    out: dict[str, Any] = {
        "model_version": version, "provider": meta.get("model_provider"),
        "tokens": tokens(msg, llm_output), "finish_reason": finish,
        "raw_completion": _raw(first, msg, requests) if first is not None else None,
        "tool_requests": requests or None, "n_generations": len(gens) or None,
    }
    parsed = (getattr(msg, "additional_kwargs", None) or {}).get("parsed") if msg is not None else None
    if parsed is not None:  # the provider's client parsed the answer itself (structured output)
        out["parsed"] = to_jsonable(parsed)
    if len(gens) > 1:
        out["generations"] = [_text(g) for g in gens]
    return out


def llm_error(raw: tuple) -> dict[str, Any]:
    """on_llm_error: what the call produced before it failed, and what its client said about it.

    A stream that failed keeps the chunks it delivered (LangChain passes them, merged, as the
    first generation of ``response``). The openai and anthropic clients attach the final HTTP
    response to their errors: its request says how many times the client retried
    (``x-stainless-retry-count``), and when the client failed to parse a structured answer, its
    body is the answer the model gave."""
    exc, response = raw
    out: dict[str, Any] = {}
    generations = getattr(response, "generations", None) or []
    if len(generations) > 1 and generations[0]:  # [[the merged chunks], [the error's own metadata]]
        out = _answer(generations[0], {})
    http = getattr(exc, "response", None)
    retries = retries_reported(http)
    if retries:
        out["sdk_retries"] = retries
    if out.get("raw_completion") is None:
        body = _json_body(http)
        if isinstance(body, dict) and body.get("choices"):
            out.update(_openai_answer(body))
    return out


def _json_body(http: Any) -> Any:
    try:
        return http.json() if http is not None and callable(getattr(http, "json", None)) else None
    except Exception:
        return None


def _openai_answer(body: dict) -> dict[str, Any]:
    """An OpenAI Chat Completions body (the answer a client could not parse) as the call's fields."""
    choice = (body.get("choices") or [{}])[0] or {}
    message = choice.get("message") or {}
    requests = [{"id": c.get("id"), "name": (c.get("function") or {}).get("name"),
                 "args": (c.get("function") or {}).get("arguments")} for c in message.get("tool_calls") or []]
    return {"model_version": body.get("model"), "tokens": tokens_from_usage(body.get("usage")),
            "finish_reason": choice.get("finish_reason"),
            "raw_completion": raw_completion(message.get("content"), requests, message.get("refusal")),
            "tool_requests": requests or None}


def tool_start(raw: tuple) -> dict[str, Any]:
    input_str, inputs, tool_call_id, name = raw
    return {"inputs": plain(inputs) if inputs is not None else input_str, "tool_call_id": tool_call_id,
            "tool_name": name_of(name, "tool")}


def tool_end(output: Any) -> dict[str, Any]:
    update = getattr(output, "update", None) if type(output).__name__ == "Command" else None
    if isinstance(update, dict):  # a tool that updates the graph: the model sees its ToolMessage
        found = next((m for m in update.get("messages") or () if getattr(m, "tool_call_id", None)), None)
        if found is not None:
            output = found
    if hasattr(output, "tool_call_id") and hasattr(output, "content"):  # a ToolMessage
        content = to_jsonable(output.content)
        if getattr(output, "status", None) == "error":
            return {"outputs": content, "status": "error", "error": content if isinstance(content, str) else None}
        return {"outputs": content}
    return {"outputs": plain(output)}


def source_id(doc: Any, keys: Sequence[str], keys_first: bool = False) -> str | None:
    """A chunk's source id: the user's ``source_id_keys`` in its metadata win over ``Document.id``
    (vector stores make one up); with the default keys, ``Document.id`` comes first."""
    meta = getattr(doc, "metadata", None) or {}
    if keys_first:
        for key in keys:
            if meta.get(key) is not None:
                return str(meta[key])
    doc_id = getattr(doc, "id", None)
    if doc_id:
        return str(doc_id)
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


def make_documents_converter(keys: Sequence[str], keys_first: bool = False):
    def documents(docs: list) -> dict[str, Any]:
        chunks = [{"source_id": source_id(d, keys, keys_first), "score": to_jsonable(score(d)),
                   "content": getattr(d, "page_content", None), "metadata": to_jsonable(getattr(d, "metadata", None))}
                  for d in docs]
        return {"outputs": chunks, "chunks": chunks}

    documents.__name__ = "documents"
    return documents


def query(raw: Any) -> dict[str, Any]:
    return {"inputs": to_jsonable(raw)}
