"""Content stored once per trace: a long string a trace already stored becomes a reference.

One answer travels through many spans (the model's completion is the parser's input and output, and
every enclosing chain's output; LlamaIndex passes the same context text down five levels): a long
string is stored once per trace however many spans carry it.

A repeated string becomes ``{"__llmtrace_same__": [owner, field, *path]}`` pointing at its first
occurrence, which is always stored in full. Only strings of ``MIN_CHARS`` or more, at most two
levels below a field, are shared (a bounded walk on the writer thread); the read side puts them
back (``resolve``) before anything else sees the content.
"""

from __future__ import annotations

from typing import Any

MARK = "__llmtrace_same__"
MIN_CHARS = 128  # shorter text costs less to store than to reference
MAX_SEEN = 512  # strings remembered per live trace
DEPTH = 2  # levels below a field where strings are shared


def share(fields: dict[str, Any], owner: str, seen: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with strings already in ``seen`` (this trace's first occurrences) as references;
    the new long strings are added to ``seen``. Containers are copied only where something changed.
    (``Redactor.shared`` does the same while it redacts, in the same walk.)"""
    return _share(fields, seen, (None, owner), DEPTH + 1)


def _share(value: Any, seen: dict[str, Any], path: tuple, depth: int) -> Any:
    if isinstance(value, str):
        return share_text(value, seen, path)
    if not depth or not isinstance(value, (dict, list)):
        return value
    out = None
    for k, v in (value.items() if isinstance(value, dict) else enumerate(value)):
        if isinstance(v, str):
            if len(v) < MIN_CHARS:
                continue
        elif depth == 1 or not isinstance(v, (dict, list)):
            continue
        new = _share(v, seen, (path, k), depth - 1)
        if new is not v:
            if out is None:
                out = dict(value) if isinstance(value, dict) else list(value)
            out[k] = new
    return value if out is None else out


def share_text(text: str, seen: dict[str, Any], path: tuple) -> Any:
    """``text``, or a reference to where this trace stored it first. ``path`` is a linked list,
    ``(parent, key)``, from ``(None, owner)``: kept as it is for a new long string, and made into the
    stored list only when the string comes again (most long strings never do)."""
    if len(text) < MIN_CHARS:
        return text
    ref = seen.get(text)
    if ref is not None:
        if type(ref) is tuple:
            ref = seen[text] = _steps(ref)
        return {MARK: ref}
    if len(seen) < MAX_SEEN:
        seen[text] = path
    return text


def _steps(path: tuple | None) -> list:
    steps = []
    while path is not None:
        path, key = path
        steps.append(key)
    steps.reverse()
    return steps


def forget(owner: str, seen: dict[str, Any]) -> None:
    """Drop the first occurrences ``owner`` registered (its content was stored another way)."""
    for text in [t for t, ref in seen.items() if (ref if type(ref) is list else _steps(ref))[0] == owner]:
        del seen[text]


def resolve(contents: dict[str, Any]) -> None:
    """Put shared strings back, in place: ``contents`` maps owner -> fields, as read for one trace.
    A reference whose first occurrence is gone (expired, purged) becomes None."""
    for fields in contents.values():
        if isinstance(fields, dict):
            for key, value in fields.items():
                fields[key] = _resolve(value, contents, DEPTH)


def _resolve(value: Any, contents: dict[str, Any], depth: int) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and MARK in value:
            return _lookup(value[MARK], contents)
        if depth:
            for k, v in value.items():
                value[k] = _resolve(v, contents, depth - 1)
    elif isinstance(value, list) and depth:
        for i, v in enumerate(value):
            value[i] = _resolve(v, contents, depth - 1)
    return value


def _lookup(ref: Any, contents: dict[str, Any]) -> str | None:
    if not isinstance(ref, list) or len(ref) < 2:
        return None
    node: Any = contents.get(ref[0])
    for step in ref[1:]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node if isinstance(node, str) else None
