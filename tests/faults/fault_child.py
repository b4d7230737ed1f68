"""A process the fault tests start, break and kill: ``python fault_child.py COMMAND 'JSON ARGS'``.

It reports on stdout as JSON lines ``{"event": ...}`` and, where it must wait for the parent
(which breaks the database in between), reads a line from stdin. Commands:

- ``record``: record LangChain traces without end, flushing every ``flush_every``; after each
  flush that returned True, print the ids it covered (``committed``). Killed with SIGKILL.
- ``exit``: record ``n`` traces, say ``ready``, wait for "go", then end normally (exit drains).
- ``burst``: a Tracer with the writer stalled by the parent, then ``n`` feedback events of
  ``size`` characters each, all different; print the memory it took and the slowest call.
- ``loss``: lose records (queue ``drop`` with a stalled writer, or a database that fails) and end
  normally; the parent reads stderr.
- ``race``: rounds told by the parent: at the same instant as the other racers, open a fresh
  database, record a trace, flush, report.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: fakes.py

import llmtrace  # noqa: E402


def say(event: str, **data) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def wait_for_parent() -> str:
    return sys.stdin.readline().strip()


def _chain():
    from fakes import ScriptedChatModel, answer, simple_chain

    from llmtrace_langchain import LLMTraceCallbackHandler

    return simple_chain(ScriptedChatModel(script=[answer("the refund is approved")])), LLMTraceCallbackHandler


def _record_one(chain, handler, tid: str, question: str) -> None:
    chain.invoke({"question": question}, config={"callbacks": [handler], "metadata": {"llmtrace_trace_id": tid}})


def cmd_record(a: dict) -> None:
    chain, Handler = _chain()
    tracer = llmtrace.Tracer(a["url"], flush_interval_seconds=0.02)
    handler = Handler(tracer)
    question = "Where is my refund? " * (a.get("question_chars", 2000) // 20)
    pending: list[str] = []
    i = 0
    say("started")
    while True:
        tid = f"{a['prefix']}{i:07d}"
        _record_one(chain, handler, tid, question)
        pending.append(tid)
        i += 1
        if len(pending) >= a["flush_every"]:
            if tracer.flush(timeout=30):
                say("committed", ids=pending)
                pending = []


def cmd_exit(a: dict) -> None:
    chain, Handler = _chain()
    settings = a.get("settings", {})
    tracer = llmtrace.Tracer(a["url"], **settings)
    handler = Handler(tracer)
    tracer.schema_version()  # connected and ready before the parent breaks the database
    ids = []
    for i in range(a["n_before"]):
        tid = f"{a['prefix']}{i:05d}"
        _record_one(chain, handler, tid, "q")
        ids.append(tid)
    tracer.flush(timeout=10)
    say("ready", ids=ids)
    wait_for_parent()
    for i in range(a["n_after"]):  # recorded while the database is broken: left for the exit
        tid = f"{a['prefix']}{a['n_before'] + i:05d}"
        _record_one(chain, handler, tid, "q")
        ids.append(tid)
    say("exiting", ids=ids, health=tracer.health())
    # a normal end: the interpreter's exit drains what is left


def cmd_burst(a: dict) -> None:
    tracer = llmtrace.Tracer(a["url"], **a.get("settings", {}))
    tracer.schema_version()
    say("ready")
    wait_for_parent()  # the parent has stalled the database
    tracer.record_feedback("burst-first", "accepted")
    time.sleep(0.3)  # the writer takes it and hangs in its write
    base = ("0123456789abcdefghijklmnopqrstuvwxyz" * (a["size"] // 36 + 2))
    size, n = a["size"], a["n"]
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    rss0 = _status_kb("VmRSS")
    tracemalloc.start()
    slowest = 0.0
    t_all = time.perf_counter()
    for i in range(n):
        k = i % 1000
        text = base[k:k + size - 12] + f"{i:012d}"  # a new string each time: nothing shared
        t0 = time.perf_counter()
        tracer.record_feedback(f"burst-{i}", "edited", correction=text)
        slowest = max(slowest, time.perf_counter() - t0)
        del text
    elapsed = time.perf_counter() - t_all
    time.sleep(0.5)
    current, peak = tracemalloc.get_traced_memory()
    say("measured", n=n, size=size, offered_bytes=n * size, rss_before=rss0 * 1024,
        rss_after=_status_kb("VmRSS") * 1024, peak_rss=_status_kb("VmHWM") * 1024,
        traced_current=current, traced_peak=peak, slowest_call_s=slowest, burst_s=elapsed, health=tracer.health())
    sys.stdout.flush()
    os._exit(0)  # the database is still stalled: no exit drain


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cmd_loss(a: dict) -> None:
    if a["mode"] == "drop":
        tracer = llmtrace.Tracer(a["url"], queue_size=20, on_queue_full="drop", flush_interval_seconds=0.02)
        tracer.record_feedback("loss-first", "accepted")
        time.sleep(0.3)  # the writer takes it and waits for the lock the parent holds
        for i in range(a["n"]):
            tracer.record_feedback(f"loss-{i}", "accepted")
    elif a["mode"] == "ok":
        tracer = llmtrace.Tracer(a["url"], flush_interval_seconds=0.02)
        chain, Handler = _chain()
        handler = Handler(tracer)
        for i in range(a["n"]):
            _record_one(chain, handler, f"fine-{i}", "q")
    else:  # "fail": the database refuses every write
        tracer = llmtrace.Tracer(a["url"], flush_interval_seconds=60)  # one batch, written by the flush below
        chain, Handler = _chain()
        handler = Handler(tracer)
        for i in range(a["n"]):
            _record_one(chain, handler, f"lost-{i}", "q")
    flushed = tracer.flush(timeout=a.get("flush_timeout", 15))
    say("done", flushed=flushed, health=tracer.health())
    tracer.close()


def cmd_race(a: dict) -> None:
    """Rounds told by the parent, one JSON line each ({"url", "start_at", "trace_id"}): at
    ``start_at`` (wall clock, shared by every racer), open the fresh database, record, flush, report."""
    say("ready")
    while True:
        line = wait_for_parent()
        if not line:
            return
        r = json.loads(line)
        time.sleep(max(0.0, r["start_at"] - time.time()))
        errors = []
        tracer = llmtrace.Tracer(r["url"], flush_interval_seconds=0.02)
        try:
            with tracer.trace(name="race", trace_id=r["trace_id"]):
                pass
            tracer.record_feedback(r["trace_id"], "accepted")
            flushed = tracer.flush(timeout=30)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            flushed = None
            errors.append(f"record: {type(exc).__name__}: {exc}")
        try:
            version = tracer.schema_version()
        except Exception as exc:  # noqa: BLE001
            version = None
            errors.append(f"schema_version: {type(exc).__name__}: {exc}")
        tracer.close()
        say("done", flushed=flushed, version=version, errors=errors, health=tracer.health())


if __name__ == "__main__":
    command, args = sys.argv[1], json.loads(sys.argv[2])
    {"record": cmd_record, "exit": cmd_exit, "burst": cmd_burst, "loss": cmd_loss, "race": cmd_race}[command](args)
