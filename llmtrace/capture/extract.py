"""Extraction helpers every integration's ``convert`` functions share (re-exported by
``llmtrace.integration``), so that a usage block, a tool spec, tool-call arguments or a
secret-looking parameter read the same whichever framework reported them.

Each is a small total function: what the provider did not say stays ``None``; nothing raises on an
odd shape (it is read as "not said"). They run on the writer thread, never the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmtrace.base.privacy import is_secret_key
from llmtrace.base.serialize import to_jsonable

TOKEN_FIELDS = ("input", "output", "total", "input_cached", "input_cache_write", "reasoning")


def get(obj: Any, key: str) -> Any:
    """``obj[key]`` of a mapping, ``obj.key`` of an object, None otherwise."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def count(*values: Any) -> int | None:
    """The first value that is a token count (an int or a whole float, not a bool), as an int."""
    for v in values:
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer() and v >= 0:
            return int(v)
    return None


def tokens_from_usage(usage: Any) -> dict[str, int | None]:
    """Token counts from any usage block a provider or framework reports:

    - LangChain's ``usage_metadata`` (``input_tokens`` counts cache reads and writes;
      ``input_token_details.cache_read`` / ``cache_creation``, ``output_token_details.reasoning``);
    - OpenAI's ``usage`` (``prompt_tokens`` counts cached tokens; ``prompt_tokens_details.cached_tokens``
      / ``cache_write_tokens``, ``completion_tokens_details.reasoning_tokens``);
    - Anthropic's ``usage`` (``input_tokens`` is only the uncached part: cache reads
      ``cache_read_input_tokens`` and writes ``cache_creation_input_tokens`` are added to it).

    ``input`` is every billed input token (SIGNALS.md); ``total`` is input + output when not given.
    """
    out: dict[str, int | None] = dict.fromkeys(TOKEN_FIELDS)
    if usage is None:
        return out
    if not isinstance(usage, Mapping):
        usage = to_jsonable(usage)
        if not isinstance(usage, Mapping):
            return out
    inp = count(usage.get("prompt_tokens"), usage.get("input_tokens"))
    output = count(usage.get("completion_tokens"), usage.get("output_tokens"))
    in_details = usage.get("input_token_details") or usage.get("prompt_tokens_details") or {}
    out_details = usage.get("output_token_details") or usage.get("completion_tokens_details") or {}
    cached = count(get(in_details, "cache_read"), get(in_details, "cached_tokens"))
    written = count(get(in_details, "cache_creation"), get(in_details, "cache_write_tokens"))
    anthropic_read = count(usage.get("cache_read_input_tokens"))
    anthropic_write = count(usage.get("cache_creation_input_tokens"))
    if "prompt_tokens" not in usage and (anthropic_read is not None or anthropic_write is not None):
        # Anthropic's own block: input_tokens leaves out what was read from or written to the cache
        inp = (inp or 0) + (anthropic_read or 0) + (anthropic_write or 0) if inp is not None else None
        cached = cached if cached is not None else anthropic_read
        written = written if written is not None else anthropic_write
    out["input"], out["output"] = inp, output
    out["input_cached"], out["input_cache_write"] = cached, written
    out["reasoning"] = count(get(out_details, "reasoning"), get(out_details, "reasoning_tokens"))
    total = count(usage.get("total_tokens"))
    if total is None and inp is not None and output is not None:
        total = inp + output
    out["total"] = total
    return out


def tool_args(value: Any) -> Any:
    """Tool-call arguments as the model meant them: an object. Providers send a JSON string (OpenAI)
    or an object (Anthropic, LangChain's parsed ``tool_calls``); a string that is not a JSON object
    or array is kept as it came (the model produced invalid arguments: that is the record)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, (dict, list)) else value
    return to_jsonable(value)


def json_schema_of(value: Any) -> Any:
    """A JSON schema for what a caller passed as a schema: a pydantic model class (its
    ``model_json_schema()``), a schema dict as it is; None when it is neither."""
    if isinstance(value, Mapping):
        return to_jsonable(value)
    schema = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema):
        try:
            return to_jsonable(schema())
        except Exception:
            return None
    return None


def tool_spec(tool: Any) -> dict[str, Any]:
    """``{"name", "description", "parameters"}`` of a tool offered to a model, from the shapes
    frameworks pass: an OpenAI tool dict (``{"type": "function", "function": {...}}``), a bare
    function dict, an Anthropic tool dict (``input_schema``), or a tool object with ``name``,
    ``description`` and an ``args_schema`` / ``parameters`` / ``metadata``."""
    fn = get(tool, "function") or tool
    meta = get(fn, "metadata") if not isinstance(fn, Mapping) else None
    if meta is not None and get(meta, "name") is not None:  # a LlamaIndex tool: its ToolMetadata
        fn = meta
    params: Any = None
    for key in ("parameters", "input_schema", "args_schema", "fn_schema"):
        found = get(fn, key)
        if found is not None:
            params = json_schema_of(found)
            if params is not None:
                break
    if params is None:
        getter = getattr(fn, "get_parameters_dict", None)
        if callable(getter):
            try:
                params = to_jsonable(getter())
            except Exception:
                params = None
    name, description = get(fn, "name"), get(fn, "description")
    return {"name": name if isinstance(name, str) else None,
            "description": description if isinstance(description, str) else None,
            "parameters": params}


def raw_completion(content: Any, requests: list[dict[str, Any]] | None, refusal: str | None = None) -> Any:
    """The raw completion as SIGNALS.md keeps it: the model's text *and* its tool-call requests.

    Text alone stays as it came (a string, or the provider's content blocks: Anthropic's carry
    their ``tool_use`` blocks already). An answer that asked for tools, or refused, becomes
    ``{"content": text or None, "tool_calls": [{"id", "name", "args"}], "refusal": ...}`` (the keys
    that apply), so an answer that is only tool calls is never ``""``, which reads as a refusal."""
    if isinstance(content, list) or not (requests or refusal):
        return content
    out: dict[str, Any] = {"content": content if content else None}
    if requests:
        out["tool_calls"] = [{"id": r.get("id"), "name": r.get("name"), "args": tool_args(r.get("args"))}
                             for r in requests]
    if refusal:
        out["refusal"] = refusal
    return out


def retries_reported(response: Any) -> int | None:
    """How many times the provider's client retried before the response it ends with (``response``:
    the ``httpx.Response`` the openai and anthropic clients attach to their errors). Their requests
    say it in ``x-stainless-retry-count`` (0 on a first attempt); None when nothing says."""
    headers = getattr(getattr(response, "request", None), "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("x-stainless-retry-count")
        return int(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def without_secrets(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Invocation parameters minus secret-looking keys (``*api_key*``, ``*secret*``, ``*token*`` but
    not token *counts* like ``max_tokens``): the one rule every integration uses."""
    if not params:
        return {}
    return {k: v for k, v in params.items() if not (isinstance(k, str) and is_secret_key(k))}


__all__ = ["TOKEN_FIELDS", "count", "get", "is_secret_key", "json_schema_of", "raw_completion", "retries_reported",
           "tokens_from_usage", "tool_args", "tool_spec", "without_secrets"]
