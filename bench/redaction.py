"""What redaction costs per call: capture="redacted" (the default) against "metadata" (no content).

    python bench/redaction.py [--n 100] [--rounds 11] [--workloads W1,W2,W3,W4] [--texts-only]

Per round: a block of calls traced with capture=metadata, then one with capture=redacted, each
followed by its flush, in one process. The figure is the median over rounds of
amortized(redacted) / amortized(metadata) per call, plus both against the untraced call.

The workloads send the same prompt every call, so the redactor's cache answers and those figures
are the walk over a call's content, not the detectors. The second table is the detectors: a
``Redactor`` over text it has not seen (each text made unique), in microseconds per text, best of
five passes: the workloads' prompt and answer, and sentences full of values to find.
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


def new_texts() -> None:
    from workloads import ANSWER_500, SYSTEM_PROMPT

    pii = ("Call me at +1 415 555 0132. Mail jane.doe@example.com, card 4111 1111 1111 1111, IBAN DE89 3704 0044 "
           "0532 0130 00, host 203.0.113.77, password: hunter2!x, key sk-ant-api03-Qm7Rt2Yx9Kp4Lw1Zs8VnXabc. ")
    kinds = {"2 KB prompt (prose)": SYSTEM_PROMPT, "500-char answer (prose)": ANSWER_500,
             "200 chars, 7 values to find": pii, "2 KB, Japanese with phone numbers": "電話番号は03-1234-5678です。" * 90}
    print(f"\n{'new text (cache miss)':<40} {'chars':>6} {'us/text':>8}")
    for name, text in kinds.items():
        best = float("inf")
        for rnd in range(5):
            redactor = llmtrace.Redactor()
            variants = [f"{text} #{rnd}.{i}" for i in range(300)]
            t0 = time.perf_counter()
            for v in variants:
                redactor.text(v)
            best = min(best, (time.perf_counter() - t0) / len(variants))
        print(f"{name:<40} {len(text):>6} {best * 1e6:>8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    ap.add_argument("--texts-only", action="store_true", help="only the detectors over new text")
    args = ap.parse_args()
    if args.texts_only:
        new_texts()
        return
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
    new_texts()


if __name__ == "__main__":
    main()
