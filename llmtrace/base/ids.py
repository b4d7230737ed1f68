"""Time-ordered ids (UUIDv7) for spans and traces llmtrace names itself."""

from __future__ import annotations

import itertools
import os
import random
import time

_seq = itertools.count()
_node = random.getrandbits(32)
_cache: list = [-1, "", -1, "", f"{_node:08x}"]  # last millisecond, its text; counter's high bits, text; node


def new_node() -> None:
    """A forked child must not mint the ids its parent mints: registered at import, because workers
    forked from a parent that imported llmtrace (a pre-loading server) would otherwise all mint the
    same ids. It touches only llmtrace's own counter."""
    global _seq, _node, _cache
    _seq, _node = itertools.count(), random.getrandbits(32)
    _cache = [-1, "", -1, "", f"{_node:08x}"]


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=new_node)


def ordered_id() -> str:
    """A UUIDv7 (time first, then a counter, RFC 9562 method 1): rows keyed by it append to the end
    of a B-tree index instead of landing on a random page, which on SQLite is several times cheaper
    per insert. A per-process counter and random node make it unique without a system call
    (``uuid4`` reads os.urandom, which releases the GIL on the caller's thread). The text of the
    millisecond and of the counter's high bits is made only when they change."""
    ms = time.time_ns() // 1_000_000
    c = next(_seq) & 0x3FFFFFFFFFF  # 42 bits: 12 in rand_a, 14 + 16 in rand_b, then the node's 32
    cache = _cache
    if cache[0] != ms:
        h = f"{ms & 0xFFFFFFFFFFFF:012x}"
        cache[0], cache[1] = ms, f"{h[:8]}-{h[8:]}-7"
    high = c >> 16
    if cache[2] != high:
        cache[2], cache[3] = high, f"{high >> 14:03x}-{0x8000 | high & 0x3FFF:04x}-"
    return f"{cache[1]}{cache[3]}{c & 0xFFFF:04x}{cache[4]}"
