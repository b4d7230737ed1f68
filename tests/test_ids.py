"""Ids llmtrace mints (LlamaIndex spans, generated trace ids): unique, time-ordered UUIDv7s."""

from __future__ import annotations

import os
import uuid

import pytest

from llmtrace.base.ids import ordered_id


def test_ordered_ids_are_unique_sorted_uuid7():
    ids = [ordered_id() for _ in range(200_000)]  # crosses many milliseconds and counter blocks
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[-1])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == ids[-1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_mints_other_ids():
    before = ordered_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, ",".join(ordered_id() for _ in range(1000)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 1 << 20).decode().split(","))
    parent = {ordered_id() for _ in range(1000)}
    assert len(child) == 1000 and not child & parent and before not in child
    assert len({i[-8:] for i in child}) == 1 and {i[-8:] for i in child} != {before[-8:]}  # the child's own node


def test_langchain_run_ids_are_stored_as_str_uuid_writes_them():
    from llmtrace.capture.recorder import _kept, _sid

    for u in [uuid.uuid4() for _ in range(2000)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]:
        assert _kept(u.int) and _sid(u.int) == str(u)
