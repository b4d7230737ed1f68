"""Turn whatever a framework hands us into JSON, on the writer thread, without ever raising.

Bad input never breaks recording: cycles, bytes, NaN, deep nesting, lone surrogates and objects
that do not serialize all become readable markers instead of exceptions.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import enum
import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

MAX_DEPTH = 32
_MAX_ITEMS = 10_000


_EXACT = frozenset((str, int, bool, type(None)))


def _flat(values: Any) -> bool:
    """Whether every value is a plain scalar (a finite float included): nothing to convert."""
    for v in values:
        t = type(v)
        if t not in _EXACT and (t is not float or not math.isfinite(v)):
            return False
    return True


def to_jsonable(obj: Any, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """A JSON-safe copy of ``obj`` (dicts, lists, str, numbers, bool, None)."""
    cls = type(obj)
    if cls in _EXACT:
        return obj
    # the common shapes first, without the general walk: metadata dicts, lists of plain values
    if cls is dict and len(obj) <= _MAX_ITEMS and all(type(k) is str for k in obj) and _flat(obj.values()):
        return obj.copy()
    if cls is list and len(obj) <= _MAX_ITEMS and _flat(obj):
        return obj.copy()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)  # NaN / inf are not JSON
    if _depth >= MAX_DEPTH:
        return "<max depth reached>"
    oid = id(obj)
    if oid in _seen:
        return "<cycle>"
    seen = _seen | {oid}
    depth = _depth + 1
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, depth, seen) for k, v in list(obj.items())[:_MAX_ITEMS]}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)[:_MAX_ITEMS]
        return [to_jsonable(v, depth, seen) for v in items]
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        return {"__bytes__": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                "base64_head": base64.b64encode(raw[:64]).decode()}
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (uuid.UUID, _dt.timedelta)):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, depth, seen)
    if isinstance(obj, BaseException):
        return {"type": type(obj).__name__, "message": str(obj)}
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models, LangChain messages and documents
    if callable(dump) and not isinstance(obj, type):
        try:
            return to_jsonable(dump(), depth, seen)
        except Exception:
            pass
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        try:
            return {f.name: to_jsonable(getattr(obj, f.name), depth, seen) for f in dataclasses.fields(obj)}
        except Exception:
            pass
    try:
        text = repr(obj)
    except Exception:
        text = f"<unrepresentable {type(obj).__name__}>"
    return text[:2_000]


def _default(obj: Any) -> Any:
    return to_jsonable(obj)


def dumps(obj: Any) -> str:
    """JSON text of ``obj`` (compact, non-ASCII kept as is) that every database accepts.

    orjson, because this runs for every record on the writer thread; NaN and infinities become
    null, as in JavaScript. What orjson refuses (lone
    surrogates, integers beyond 64 bits, non-string keys, cycles) takes the careful walk, which
    escapes lone surrogates and turns everything else into a readable marker.
    """
    try:
        return orjson.dumps(obj, default=_default).decode()
    except (TypeError, ValueError, RecursionError):  # orjson.JSONEncodeError is a TypeError
        return _careful_dumps(obj)


def dumps_utf8(obj: Any) -> bytes:
    """``dumps(obj)`` as UTF-8: what orjson makes, not decoded (for text that is joined before use)."""
    try:
        return orjson.dumps(obj, default=_default)
    except (TypeError, ValueError, RecursionError):
        return _careful_dumps(obj).encode("utf-8")


def _careful_dumps(obj: Any) -> str:
    text = json.dumps(to_jsonable(obj), ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def join_object(encoded: dict[str, bytes]) -> str:
    """The JSON object of ``encoded``'s keys and values, each value JSON already (``dumps_utf8``)."""
    try:
        return orjson.dumps({k: orjson.Fragment(v) for k, v in encoded.items()}).decode()
    except TypeError:  # a key orjson refuses (a lone surrogate): escaped by the careful path
        return "{" + ",".join([dumps(k) + ":" + v.decode() for k, v in encoded.items()]) + "}"


def stdlib_dumps(obj: Any) -> str:
    """The text ``dumps`` wrote before it used orjson (they differ only in how some floats look):
    audit digests recorded then are checked against it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def digest(text: str) -> str:
    """sha256 of ``text``, fed in pieces under 2 KB: hashlib releases the GIL for larger buffers, and
    taking it back preempts the application's thread."""
    return digest_utf8(text.encode("utf-8", "backslashreplace"))


def digest_utf8(data: bytes) -> str:
    """``digest`` of text already encoded."""
    h = hashlib.sha256()
    for i in range(0, len(data), 2047):
        h.update(data[i:i + 2047])
    return h.hexdigest()
