"""Tracing overhead on the reference workloads: untraced vs llmtrace persisting to SQLite, one process.

    python bench/overhead.py [--n 100] [--rounds 15] [--workloads W1,W2,W3]

Per workload and round: N untraced calls, then N traced calls, then tracer.flush(). Each round gives
a foreground ratio (median traced call / median untraced call) and an amortized ratio ((traced loop
+ final flush) / untraced loop, the "(loop µs)" column: totals on both sides, so the pauses and outliers any loop has count
on both), both against the untraced block measured just before it, so drift on a shared machine
cancels out; the figures are medians over rounds (loop against loop: dividing by the median
untraced call would count the untraced loop's own pauses as tracing overhead). It also checks that
every LLM call and every span is in the database (one trace per call, each with the same span
tree, nothing dropped, failed or left open).

    python bench/overhead.py --processes 5 [...]

runs the whole measurement in 5 fresh interpreters, one after the other, and prints each one's
ratios and their median: on a shared 2-core machine the untraced speed itself moves by a third
from one process to the next (memory layout, neighbours), more than within a process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sqlalchemy as sa  # noqa: E402
from workloads import BUILDERS, DESCRIPTIONS, FRAMEWORK  # noqa: E402

import llmtrace  # noqa: E402
from llmtrace.store import schema as S  # noqa: E402

EXPECTED_LLM_CALLS = {"W1": 1, "W2": 2, "W3": 1, "W4": 1}


def timed(run, callbacks, n):
    per = []
    t_all = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        run(callbacks)
        per.append(time.perf_counter() - t0)
    return per, time.perf_counter() - t_all


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--workloads", default="W1,W2,W3")
    ap.add_argument("--capture", default="redacted", choices=["full", "redacted", "metadata"],
                    help="capture mode of the traced runs (redacted is the default; metadata stores no content)")
    ap.add_argument("--processes", type=int, default=1, help="repeat in this many fresh processes; print the median")
    args = ap.parse_args()
    if args.processes > 1:
        return across_processes(args)
    tmp = tempfile.mkdtemp(prefix="llmtrace-bench-")
    print(f"python {sys.version.split()[0]}, n={args.n} calls x {args.rounds} rounds, capture={args.capture}, "
          f"SQLite in {tmp}")
    print(f"{'workload':<52} {'untraced µs':>11} {'(loop µs)':>9} {'traced µs':>10} {'fg ratio':>8} "
          f"{'amortized µs':>12} {'amort ratio':>11} {'llm rows':>9}")
    for name in args.workloads.split(","):
        run = BUILDERS[name]()
        url = f"sqlite:///{tmp}/{name}.db"
        tracer = llmtrace.Tracer(url, capture=args.capture, **json.loads(os.environ.get("LLMTRACE_BENCH_SETTINGS", "{}")))
        handler = None
        if FRAMEWORK[name] == "langchain":
            from llmtrace_langchain import LLMTraceCallbackHandler

            handler = LLMTraceCallbackHandler(tracer)
            cbs = [handler]
        else:
            from llmtrace_llamaindex import LLMTraceInstrumentor

            inst = LLMTraceInstrumentor(tracer)
            cbs = None
        for _ in range(50):  # warm up both paths, create the tables
            run(None)
        if FRAMEWORK[name] != "langchain":
            inst.instrument()
        for _ in range(50):
            run(cbs)
        tracer.flush()
        if FRAMEWORK[name] != "langchain":
            inst.uninstrument()
        base_med, base_loop, traced_med, amort, fg_ratio, am_ratio = [], [], [], [], [], []
        for _ in range(args.rounds):
            per, base_total = timed(run, None, args.n)
            base_med.append(statistics.median(per))
            base_loop.append(base_total / args.n)
            if FRAMEWORK[name] != "langchain":
                inst.instrument()
            per, total = timed(run, cbs, args.n)
            t0 = time.perf_counter()
            tracer.flush()
            drain = time.perf_counter() - t0
            if FRAMEWORK[name] != "langchain":
                inst.uninstrument()
            traced_med.append(statistics.median(per))
            amort.append((total + drain) / args.n)
            fg_ratio.append(traced_med[-1] / base_med[-1])
            am_ratio.append((total + drain) / base_total)
        calls = 50 + args.n * args.rounds
        with tracer._store.engine.connect() as conn:
            llm_rows = conn.execute(sa.select(sa.func.count()).select_from(S.llm_calls)).scalar()
            traces = conn.execute(sa.select(sa.func.count()).select_from(S.traces)).scalar()
            per_trace = conn.execute(sa.select(sa.func.count()).select_from(S.spans)
                                     .group_by(S.spans.c.trace_id)).scalars().all()
        expected = EXPECTED_LLM_CALLS[name] * calls
        health = tracer.health()
        tracer.close()
        b, bl, t, a = (statistics.median(x) * 1e6 for x in (base_med, base_loop, traced_med, amort))
        # every LLM call and every span: one trace per call, each with the same span tree
        all_spans = traces == calls and len(per_trace) == calls and len(set(per_trace)) == 1
        ok = ("ok" if llm_rows == expected and all_spans and health["dropped"] == 0 and health["failed"] == 0
              and health["open_spans"] == 0 else "MISSING")
        fg, am = statistics.median(fg_ratio), statistics.median(am_ratio)
        print(f"{name + ' ' + DESCRIPTIONS[name]:<52} {b:>11.0f} {bl:>9.0f} {t:>10.0f} {fg:>7.2f}x {a:>12.0f} {am:>10.2f}x "
              f"{llm_rows:>6}/{expected} {ok}  ({sum(per_trace)} spans, {per_trace[0] if per_trace else 0} per call)",
              flush=True)


def across_processes(args) -> None:
    import re
    import subprocess

    found: dict[str, list[tuple[float, float, str]]] = {}
    cmd = [sys.executable, os.path.abspath(__file__), "--n", str(args.n), "--rounds", str(args.rounds),
           "--workloads", args.workloads, "--capture", args.capture]
    for i in range(args.processes):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.match(r"(W\d) .* ([\d.]+)x +\d+ +([\d.]+)x +\S+ (\S+)  \(", line)
            if m:
                found.setdefault(m.group(1), []).append((float(m.group(2)), float(m.group(3)), m.group(4)))
        print(f"process {i + 1}: " + "  ".join(f"{w} fg {v[-1][0]:.2f}x amortized {v[-1][1]:.2f}x"
                                                for w, v in found.items()), flush=True)
    print(f"median over {args.processes} processes (capture={args.capture}):")
    for w, values in found.items():
        fg = statistics.median(v[0] for v in values)
        am = sorted(v[1] for v in values)
        ok = "all records in the database" if all(v[2] == "ok" for v in values) else "MISSING records"
        print(f"  {w} {DESCRIPTIONS[w]:<50} foreground {fg:.2f}x  amortized {statistics.median(am):.2f}x "
              f"(range {am[0]:.2f}-{am[-1]:.2f})  {ok}")


if __name__ == "__main__":
    main()
