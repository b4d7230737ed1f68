"""What redaction costs per call: capture="redacted" (the default) against "metadata" (no content).

    python bench/redaction.py [--n 100] [--rounds 11] [--workloads W1,W2,W3,W4]

Per round: a block of calls traced with capture=metadata, then one with capture=redacted, each
followed by its flush, in one process. The figure is the median over rounds of
amortized(redacted) / amortized(metadata) per call, plus both against the untraced call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import BUILDERS, DESCRIPTIONS, FRAMEWORK  # noqa: E402

import llmtrace  # noqa: E402


def block(run, cbs, n, tracer=None):
    t0 = time.perf_counter()
    for _ in range(n):
        run(cbs)
    if tracer is not None:
        tracer.flush()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="llmtrace-redaction-")
    print(f"python {sys.version.split()[0]}, n={args.n} x {args.rounds} rounds, SQLite in {tmp}")
    print(f"{'workload':<52} {'untraced µs':>11} {'metadata':>9} {'redacted':>9} {'redacted/metadata':>18}")
    for name in args.workloads.split(","):
        run = BUILDERS[name]()
        tracers = {mode: llmtrace.Tracer(f"sqlite:///{tmp}/{name}-{mode}.db", capture=mode)
                   for mode in ("metadata", "redacted")}
        if FRAMEWORK[name] == "langchain":
            from llmtrace_langchain import LLMTraceCallbackHandler

            hooks = {m: ([LLMTraceCallbackHandler(t)], None) for m, t in tracers.items()}
        else:
            from llmtrace_llamaindex import LLMTraceInstrumentor

            hooks = {m: (None, LLMTraceInstrumentor(t)) for m, t in tracers.items()}
        base, ratio, per_mode = [], [], {"metadata": [], "redacted": []}
        for mode in hooks:  # warm up both
            cbs, inst = hooks[mode]
            inst and inst.instrument()
            block(run, cbs, 30, tracers[mode])
            inst and inst.uninstrument()
        for _ in range(args.rounds):
            b = block(run, None, args.n)
            got = {}
            for mode in ("metadata", "redacted"):
                cbs, inst = hooks[mode]
                inst and inst.instrument()
                got[mode] = block(run, cbs, args.n, tracers[mode])
                inst and inst.uninstrument()
                per_mode[mode].append(got[mode] / b)
            base.append(b)
            ratio.append(got["redacted"] / got["metadata"])
        for t in tracers.values():
            t.close()
        print(f"{name + ' ' + DESCRIPTIONS[name]:<52} {statistics.median(base) * 1e6:>11.0f} "
              f"{statistics.median(per_mode['metadata']):>8.2f}x {statistics.median(per_mode['redacted']):>8.2f}x "
              f"{statistics.median(ratio):>17.2f}x")


if __name__ == "__main__":
    main()
