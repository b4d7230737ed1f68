"""Issue 17 item 7: a process exits in bounded time while its database is silently unreachable,
and what it could not write is kept (spilled to a local file), said on stderr, and written later.

A child process records through a proxy in front of PostgreSQL; the proxy then blackholes (the
server stops answering, nothing is refused: what a dead route or a hung server looks like), the
child records more and ends normally. Its exit is timed from its last line.
"""

from __future__ import annotations

import time
import uuid

import pytest

import llmtrace

from .faultkit import trace_rows

EXIT_BOUND_S = 12.0  # a sane default exit wait (today's exit drain alone allows 10 s) plus slack
SPILL_WORDS = ("spill", "unwritten", "not written", "saved", "could not write", "lost")


@pytest.mark.xfail(strict=True, reason="issue 17 item 7: exit hangs while PostgreSQL is blackholed (no connect/statement timeout)")
def test_a_process_exits_in_bounded_time_with_postgresql_blackholed_and_keeps_what_is_left(pg_url, pg_proxy, child, tmp_path,
                                                                                         monkeypatch):
    proxy, via = pg_proxy
    prefix = f"exit-{uuid.uuid4().hex[:10]}-"
    c = child("exit", cwd=tmp_path, url=via, prefix=prefix, n_before=5, n_after=20)
    c.expect("ready", timeout=60)
    proxy.blackhole()
    c.say("go")
    ids = c.expect("exiting", timeout=30)["ids"]
    took = c.wait_exit(EXIT_BOUND_S + 1)
    stderr = c.stderr
    c.close()
    proxy.cut()
    proxy.pass_through()

    assert took is not None and took <= EXIT_BOUND_S, f"still running {EXIT_BOUND_S + 1:.0f} s after its last line"
    said = [line for line in stderr.splitlines() if "llmtrace" in line.lower()]
    assert any(w in line.lower() for line in said for w in SPILL_WORDS), f"stderr: {stderr!r}"
    # the spilled traces are written once the database is back (a new Tracer, same directory, same URL)
    monkeypatch.chdir(tmp_path)
    with llmtrace.Tracer(via, flush_interval_seconds=0.05) as later:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(trace_rows(pg_url, prefix)) < len(ids):
            later.flush(timeout=1)
            time.sleep(0.2)
    assert [tid for tid, _ in trace_rows(pg_url, prefix)] == ids
