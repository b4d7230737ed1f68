"""Where the amortized overhead goes: app-thread CPU, garbage collection, writer CPU.

    python bench/breakdown.py [--workloads W1,W4] [--rounds 12] [--n 100]

Per workload, alternating untraced and traced blocks in one process (traced blocks end with
tracer.flush()), medians per call of: wall time, the app thread's CPU time, the time the app
thread spent in garbage collection (and how many collections of each generation ran), and the
writer thread's CPU time. Untraced runs of these workloads trigger almost no collections; the
difference is what queued events that keep framework objects alive cost the application.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import BUILDERS, FRAMEWORK  # noqa: E402

import llmtrace  # noqa: E402


class GCClock:
    """Time spent in collections on the main thread, and how many ran per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.counts = [0, 0, 0]
        self._t0 = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.counts[info["generation"]] += 1

    def take(self) -> tuple[float, list[int]]:
        out = (self.seconds, self.counts)
        self.seconds, self.counts = 0.0, [0, 0, 0]
        return out


def thread_cpu(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="W1,W4")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    clock = GCClock()
    print(f"{'':<4} {'wall µs':>16} {'app cpu µs':>16} {'app gc µs':>16} {'gc runs gen0/1/2':>18} {'writer cpu µs':>14}")
    for name in args.workloads.split(","):
        run = BUILDERS[name]()
        tracer = llmtrace.Tracer(f"sqlite:///{tempfile.mkdtemp(prefix='llmtrace-breakdown-')}/{name}.db")
        if FRAMEWORK[name] == "langchain":
            from llmtrace_langchain import LLMTraceCallbackHandler

            cbs, on, off = [LLMTraceCallbackHandler(tracer)], (lambda: None), (lambda: None)
        else:
            from llmtrace_llamaindex import LLMTraceInstrumentor

            inst = LLMTraceInstrumentor(tracer)
            cbs, on, off = None, inst.instrument, inst.uninstrument
        for _ in range(50):
            run(None)
        on()
        for _ in range(50):
            run(cbs)
        tracer.flush()
        off()
        writer = tracer._writer.thread
        rows = {k: [] for k in ("uw", "uc", "ug", "tw", "tc", "tg", "wc")}
        runs = {"u": [0, 0, 0], "t": [0, 0, 0]}
        for _ in range(args.rounds):
            clock.take()
            w0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(args.n):
                run(None)
            rows["uw"].append((time.perf_counter() - w0) / args.n)
            rows["uc"].append((time.thread_time() - c0) / args.n)
            g, counts = clock.take()
            rows["ug"].append(g / args.n)
            runs["u"] = [a + b for a, b in zip(runs["u"], counts, strict=True)]
            on()
            x0, w0, c0 = thread_cpu(writer), time.perf_counter(), time.thread_time()
            for _ in range(args.n):
                run(cbs)
            tracer.flush()
            rows["tw"].append((time.perf_counter() - w0) / args.n)
            rows["tc"].append((time.thread_time() - c0) / args.n)
            rows["wc"].append((thread_cpu(writer) - x0) / args.n)
            off()
            g, counts = clock.take()
            rows["tg"].append(g / args.n)
            runs["t"] = [a + b for a, b in zip(runs["t"], counts, strict=True)]
        m = {k: statistics.median(v) * 1e6 for k, v in rows.items()}
        tracer.close()
        print(f"{name}   untraced {m['uw']:>7.0f} {m['uc']:>16.0f} {m['ug']:>16.1f} {'/'.join(map(str, runs['u'])):>18} {'':>14}")
        print(f"{'':<4} traced {m['tw']:>9.0f} {m['tc']:>16.0f} {m['tg']:>16.1f} {'/'.join(map(str, runs['t'])):>18} "
              f"{m['wc']:>14.0f}   wall ratio {m['tw'] / m['uw']:.2f}x")


if __name__ == "__main__":
    main()
