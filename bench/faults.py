"""The write path under real faults: the figures of issue 17 ("Never lose", "Never hang").

    python bench/faults.py [--quick] [--pg URL]

Prints, each with its setup:
- traces lost in a 10 s and a 60 s PostgreSQL outage (goal 0): a LangChain app records about 80
  traces a second through a loopback proxy that, for the outage, resets every open connection and
  refuses new ones; afterwards the database is read directly;
- the worst overrun of ``flush(timeout=1)`` past its timeout: SQLite locked by another process,
  PostgreSQL blackholed (accepts, never answers), PostgreSQL refusing, a closed port;
- how long a process takes to exit after its last line while PostgreSQL is blackholed;
- peak memory while the writer is stalled (PostgreSQL blackholed) and the app records 200 KB events.

``--quick``: the 10 s outage only, shorter waits, fewer events (about a minute). Needs PostgreSQL
(``--pg``, else $LLMTRACE_TEST_POSTGRES_URL, else postgresql+psycopg://postgres@127.0.0.1:5432/test).
Uses the fault kit of the tests (tests/faults/faultkit.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "faults"))
sys.path.insert(0, str(ROOT / "tests"))

import sqlalchemy as sa  # noqa: E402
from faultkit import (  # noqa: E402
    Child,
    FaultProxy,
    SqliteLock,
    count_by_trace,
    free_port,
    record_through_outage,
    server_reachable,
    trace_rows,
)

import llmtrace  # noqa: E402

MB = 1 << 20


def outage_loss(pg: str, seconds: float) -> dict:
    from fakes import ScriptedChatModel, answer, simple_chain

    from llmtrace_langchain import LLMTraceCallbackHandler

    with FaultProxy(sa.engine.make_url(pg).port or 5432) as proxy:
        tracer = llmtrace.Tracer(proxy.via(pg), flush_interval_seconds=0.05)
        tracer.schema_version()
        handler = LLMTraceCallbackHandler(tracer)
        chain = simple_chain(ScriptedChatModel(script=[answer("Refund approved.")]))
        prefix = f"bench-outage-{uuid.uuid4().hex[:8]}-"

        def record(tid: str) -> None:
            chain.invoke({"question": "where is my refund?"},
                         config={"callbacks": [handler], "metadata": {"llmtrace_trace_id": tid}})

        ids = record_through_outage(proxy, record, prefix, before_s=1.0, outage_s=seconds, after_s=1.0)
        t0 = time.monotonic()
        flushed = tracer.flush(timeout=60)
        flush_s = time.monotonic() - t0
        health = tracer.health()
        tracer.close(timeout=10)
    stored = [tid for tid, _ in trace_rows(pg, prefix)]
    spans = count_by_trace(pg, "llmtrace_spans", prefix)
    return {"recorded": len(ids), "lost": len(set(ids) - set(stored)), "stored": len(stored),
            "out_of_order": stored != [t for t in ids if t in set(stored)],
            "incomplete": sum(1 for t in stored if spans.get(t) != 4), "flushed": flushed, "flush_s": flush_s,
            "dropped": health["dropped"], "failed_rows": health["failed"]}


def _record_some(tracer, n: int = 5) -> None:
    for _ in range(n):
        with tracer.trace(name="bench-flush") as t:
            pass
        tracer.record_feedback(t.trace_id, "accepted")


def _timed_flush(tracer, timeout: float, give_up: float) -> tuple[bool | None, float | None]:
    out: list = []

    def run() -> None:
        t0 = time.monotonic()
        ok = tracer.flush(timeout=timeout)
        out.append((ok, time.monotonic() - t0))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(give_up)
    return out[0] if out else (None, None)


def flush_overruns(pg: str, tmp: str, give_up: float) -> list[tuple[str, bool | None, float | None]]:
    """(setup, result, seconds) of flush(timeout=1) under each fault; None seconds: still running at ``give_up``."""
    results = []
    url = f"sqlite:///{tmp}/flush.db"
    tracer = llmtrace.Tracer(url, flush_interval_seconds=60)
    tracer.schema_version()
    _record_some(tracer)
    with SqliteLock(f"{tmp}/flush.db", seconds=give_up):
        results.append((f"SQLite locked by another process for {give_up:.0f} s", *_timed_flush(tracer, 1, give_up + 5)))
    tracer.close()

    port = sa.engine.make_url(pg).port or 5432
    with FaultProxy(port) as proxy:
        tracer = llmtrace.Tracer(proxy.via(pg), flush_interval_seconds=60)
        tracer.schema_version()
        _record_some(tracer)
        proxy.blackhole()
        results.append(("PostgreSQL blackholed (connected before)", *_timed_flush(tracer, 1, give_up)))
        proxy.cut()
        proxy.pass_through()
        tracer.close(timeout=5)
    with FaultProxy(port) as proxy:
        tracer = llmtrace.Tracer(proxy.via(pg), flush_interval_seconds=60)
        tracer.schema_version()
        _record_some(tracer)
        proxy.outage()
        results.append(("PostgreSQL refusing, open connections cut", *_timed_flush(tracer, 1, give_up)))
        proxy.pass_through()
        tracer.close(timeout=5)
    tracer = llmtrace.Tracer(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere", flush_interval_seconds=60)
    _record_some(tracer)
    results.append(("nothing listening (closed port)", *_timed_flush(tracer, 1, give_up)))
    tracer.close(timeout=1)
    return results


def exit_time(pg: str, tmp: str, give_up: float) -> tuple[float | None, str]:
    with FaultProxy(sa.engine.make_url(pg).port or 5432) as proxy:
        c = Child("exit", cwd=tmp, url=proxy.via(pg), prefix=f"bench-exit-{uuid.uuid4().hex[:8]}-", n_before=5, n_after=20)
        try:
            c.expect("ready", timeout=60)
            proxy.blackhole()
            c.say("go")
            c.expect("exiting", timeout=30)
            took = c.wait_exit(give_up)
            stderr = c.stderr
        finally:
            c.close()
            proxy.cut()
    return took, stderr


def stalled_memory(pg: str, n: int, size: int) -> dict:
    with FaultProxy(sa.engine.make_url(pg).port or 5432) as proxy:
        c = Child("burst", url=proxy.via(pg), n=n, size=size, settings={"on_queue_full": "drop", "flush_interval_seconds": 0.05})
        try:
            c.expect("ready", timeout=60)
            proxy.blackhole()
            c.say("go")
            return c.expect("measured", timeout=300)
        finally:
            c.close()
            proxy.cut()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s outage only, shorter waits, fewer events")
    ap.add_argument("--pg", default=os.environ.get("LLMTRACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = ap.parse_args()
    why = server_reachable(args.pg)
    if why:
        sys.exit(f"bench/faults.py needs PostgreSQL: {why}")
    give_up = 15.0 if args.quick else 30.0
    exit_give_up = 20.0 if args.quick else 60.0
    events = 1_000 if args.quick else 3_000
    print(f"llmtrace {llmtrace.__version__}, PostgreSQL {sa.engine.make_url(args.pg).render_as_string(hide_password=True)}, "
          f"{'quick' if args.quick else 'full'} run\n")

    print("1. traces lost in a PostgreSQL outage (goal 0)")
    print("   setup: LangChain prompt|fake model|parser, one trace per call every 10 ms, Tracer(flush_interval_seconds=0.05)")
    print("   through a loopback proxy; outage = open connections reset + new ones refused; 1 s before and after;")
    print("   then flush(timeout=60) and the traces read straight from the server")
    for seconds in ((10.0,) if args.quick else (10.0, 60.0)):
        r = outage_loss(args.pg, seconds)
        print(f"   {seconds:>4.0f} s outage: lost {r['lost']} of {r['recorded']} traces ({r['lost'] / r['recorded']:.0%}); "
              f"incomplete {r['incomplete']}, out of order {r['out_of_order']}; flush -> {r['flushed']} in {r['flush_s']:.1f} s; "
              f"health: dropped {r['dropped']}, failed rows {r['failed_rows']}")

    print("\n2. flush(timeout=1): time taken and result (goal: <= 1.5 s, False while anything is unwritten)")
    print("   setup: 5 traces + 5 feedbacks queued, writer thread idle (flush_interval_seconds=60), so the flush writes")
    with tempfile.TemporaryDirectory() as tmp:
        rows = flush_overruns(args.pg, tmp, give_up)
    worst = 0.0
    for setup, ok, took in rows:
        shown = f"> {give_up:.0f} s (still running)" if took is None else f"{took:.2f} s"
        worst = max(worst, (give_up if took is None else took) - 1)
        print(f"   {setup:<45} {shown:<24} returned {'-' if ok is None else ok}")
    print(f"   worst overrun past the timeout: {'>= ' if any(t is None for _, _, t in rows) else ''}{worst:.1f} s")

    print("\n3. exit time with PostgreSQL blackholed (goal: bounded, then spilled and said on stderr)")
    print("   setup: a child process records 5 traces (written), the proxy blackholes, it records 20 more and ends normally")
    with tempfile.TemporaryDirectory() as tmp:
        took, stderr = exit_time(args.pg, tmp, exit_give_up)
    shown = f"> {exit_give_up:.0f} s (killed)" if took is None else f"{took:.1f} s"
    print(f"   exit after its last line: {shown}; "
          f"stderr: {stderr.strip()[:200]!r}")

    print("\n4. peak memory while the writer is stalled (goal: bounded in bytes)")
    print(f"   setup: PostgreSQL blackholed, on_queue_full='drop', default queue_size; {events:,} record_feedback calls, "
          "each with a distinct 200 KB correction")
    m = stalled_memory(args.pg, events, 200_000)
    print(f"   offered {m['offered_bytes'] / MB:.0f} MB: RSS +{(m['peak_rss'] - m['rss_before']) / MB:.0f} MB at peak "
          f"(tracemalloc peak {m['traced_peak'] / MB:.0f} MB); queued {m['health']['queue_depth']:,}, "
          f"dropped {m['health']['dropped']:,}; slowest call {m['slowest_call_s'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
