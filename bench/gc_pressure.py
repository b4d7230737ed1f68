"""What tracing costs a long-running app in garbage collection: continuous calls, no flush between.

    python bench/gc_pressure.py [--workloads W1,W3] [--n 4000]

Per workload, N calls untraced, then N calls traced into SQLite, in one process, each block
without a pause (as a busy server runs). Printed per block: the garbage collections of each
generation on the application's thread, the time they took per call, and the live objects after.
Untraced LangChain calls free what they allocate and trigger no collections at all; traced ones
keep framework objects alive until the writer converts them, and every object promoted to the old
generation brings the next full collection (hundreds of milliseconds on a large heap) closer.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from breakdown import GCClock  # noqa: E402
from workloads import BUILDERS, FRAMEWORK  # noqa: E402

import llmtrace  # noqa: E402


def block(run, callbacks, n: int, clock: GCClock) -> tuple[float, float, list[int]]:
    clock.take()
    t0 = time.perf_counter()
    for _ in range(n):
        run(callbacks)
    wall = time.perf_counter() - t0
    seconds, counts = clock.take()
    return wall / n, seconds / n, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="W1,W3")
    ap.add_argument("--n", type=int, default=4000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="llmtrace-gc-")
    clock = GCClock()
    print(f"python {sys.version.split()[0]}, {args.n} calls per block, SQLite in {tmp}")
    print(f"{'':10} {'µs/call':>8} {'gc µs/call':>10} {'collections gen0/1/2':>21} {'live objects':>13}")
    for name in args.workloads.split(","):
        if FRAMEWORK[name] != "langchain":
            print(f"{name}: LangChain workloads only")
            continue
        from llmtrace_langchain import LLMTraceCallbackHandler

        run = BUILDERS[name]()
        tracer = llmtrace.Tracer(f"sqlite:///{tmp}/{name}.db")
        handler = LLMTraceCallbackHandler(tracer)
        for _ in range(50):
            run(None)
            run([handler])
        tracer.flush()
        gc.collect()
        rows = []
        for label, cbs in (("untraced", None), ("traced", [handler])):
            per, gc_per, counts = block(run, cbs, args.n, clock)
            tracer.flush()
            rows.append((per, gc_per))
            print(f"{name} {label:<8} {per * 1e6:>7.0f} {gc_per * 1e6:>10.1f} {'/'.join(map(str, counts)):>21} "
                  f"{len(gc.get_objects()):>13}")
        print(f"{name} traced/untraced: {rows[1][0] / rows[0][0]:.2f}x per call, of which garbage collection "
              f"{rows[1][1] / rows[0][0]:.2f}x")
        tracer.close()


if __name__ == "__main__":
    main()
