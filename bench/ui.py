"""How fast llmtrace ui's pages are on a 1,000,000-call SQLite store, each beside the bare query.

    python bench/ui.py [--db bench/.data/read-1m.db] [--repeat 15]

Uses the store of ``bench/read.py`` (generated there once: ``python bench/read.py``). Each page is
timed as the server makes it (routing, security middleware, the read facade, the template: the
ASGI app called in-process), and again over real HTTP through uvicorn on 127.0.0.1; beside it, in
the same run, the bare sqlite3 queries that read the same rows. Goals: the list under 200 ms, a
trace page under 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import statistics
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))


def median_ms(fn, repeat: int) -> float:
    fn()  # warm: the first call also imports and compiles the templates
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default=os.path.join(HERE, ".data", "read-1m.db"))
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    if not os.path.exists(args.db):
        sys.exit(f"no store at {args.db}: run python bench/read.py first (it generates the 1M-call store once)")
    from starlette.testclient import TestClient

    from llmtrace.ui import create_app

    url = f"sqlite:///{args.db}"
    raw = sqlite3.connect(args.db)
    n_calls = raw.execute("SELECT count(*) FROM llmtrace_llm_calls").fetchone()[0]
    print(f"store: {n_calls:,} LLM calls, {raw.execute('SELECT count(*) FROM llmtrace_traces').fetchone()[0]:,} traces")
    rnd = random.Random(3)
    ids = [r[0] for r in raw.execute("SELECT trace_id FROM llmtrace_traces ORDER BY random() LIMIT 100")]
    source = raw.execute("SELECT source_id FROM llmtrace_chunks LIMIT 1").fetchone()[0]
    session = raw.execute("SELECT session_id FROM llmtrace_traces ORDER BY started_at DESC LIMIT 1").fetchone()[0]
    results = []

    def report(name: str, ours: float, base: float | None, goal: float | None = None) -> None:
        line = f"{name:<52} {ours:8.1f} ms"
        if base is not None:
            line += f"   bare query {base:7.1f} ms"
        if goal is not None:
            line += f"   goal < {goal:.0f} ms: {'ok' if ours < goal else 'MISSED'}"
        print(line)
        results.append({"name": name, "ms": round(ours, 2), "bare_ms": None if base is None else round(base, 2),
                        "goal_ms": goal})

    def bare_list(where: str = "", params: tuple = (), count: bool = True) -> None:
        rows = raw.execute(f"SELECT * FROM llmtrace_traces t {where} ORDER BY started_at DESC, trace_id LIMIT 51",
                           params).fetchall()
        marks = ",".join("?" * len(rows))
        tids = tuple(r[0] for r in rows)
        raw.execute(f"SELECT trace_id, model, model_version, provider, started_at, input_tokens, output_tokens, "
                    f"input_cached_tokens FROM llmtrace_llm_calls WHERE trace_id IN ({marks})", tids).fetchall()
        raw.execute(f"SELECT trace_id, action, score FROM llmtrace_feedback WHERE trace_id IN ({marks}) ORDER BY at",
                    tids).fetchall()
        raw.execute(f"SELECT trace_id, error_type FROM llmtrace_spans WHERE trace_id IN ({marks}) AND error_type IS NOT "
                    f"NULL", tids).fetchall()
        if count:
            raw.execute(f"SELECT count(*) FROM (SELECT 1 FROM llmtrace_traces t {where} LIMIT 1001)", params).fetchall()

    tables = ("traces", "spans", "llm_calls", "tool_calls", "chunks", "validations", "feedback", "contents")

    def bare_trace(tid: str) -> None:
        for table in tables:
            raw.execute(f"SELECT * FROM llmtrace_{table} WHERE trace_id = ?", (tid,)).fetchall()

    app = create_app(url)
    with TestClient(app, base_url="http://127.0.0.1:8700") as client:
        def get(path: str) -> None:
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:500])

        print("-- in-process (the server's own time) --")
        report("list: newest 50 (with the total count)", median_ms(lambda: get("/"), args.repeat),
               median_ms(lambda: raw.execute("SELECT count(*) FROM llmtrace_traces").fetchall() and bare_list(
                   count=False), args.repeat), 200)
        page = client.get("/?limit=50").text
        deep = "/"
        for _ in range(20):  # twenty pages down, by the "older" link
            marker = page.find('id="next"')
            start = page.rfind('href="', 0, marker) + 6
            deep = page[start:page.find('"', start)].replace("&amp;", "&")
            page = client.get(deep).text
        cursor_at = raw.execute("SELECT started_at FROM llmtrace_traces ORDER BY started_at DESC LIMIT 1 OFFSET 1000"
                                ).fetchone()[0]
        report("list: page 21 (keyset cursor)", median_ms(lambda: get(deep), args.repeat),
               median_ms(lambda: bare_list("WHERE started_at <= ?", (cursor_at,), count=False), args.repeat), 200)
        since = (datetime.now(timezone.utc) - timedelta(days=1)).replace(tzinfo=None).isoformat(sep=" ")
        for label, query, where, params in (
                ("--since 24h", "since=24h", "WHERE started_at >= ?", (since,)),
                ("feature=refunds", "feature=refunds", "WHERE feature = ?", ("refunds",)),
                ("status=error", "status=error", "WHERE status = ?", ("error",)),
                ("action=edited (the user's last action)", "action=edited",
                 "WHERE EXISTS (SELECT 1 FROM llmtrace_feedback f WHERE f.trace_id = t.trace_id AND f.action = ?)",
                 ("edited",)),
                ("chunk=<source id>", f"chunk={quote(source)}",
                 "WHERE trace_id IN (SELECT trace_id FROM llmtrace_chunks WHERE source_id = ?)", (source,)),
                ("session=<id>", f"session={quote(session)}", "WHERE session_id = ?",
                 (session,)),
                ("model=gpt-4o", "model=gpt-4o",
                 "WHERE EXISTS (SELECT 1 FROM llmtrace_llm_calls c WHERE c.trace_id = t.trace_id AND c.model = ?)",
                 ("gpt-4o",)),
                ("q=kettle (text search)", "q=kettle",
                 "WHERE EXISTS (SELECT 1 FROM llmtrace_contents c WHERE c.trace_id = t.trace_id AND c.body LIKE ?)",
                 ("%kettle%",))):
            report(f"list: {label}", median_ms(lambda q=query: get("/?" + q), max(3, args.repeat // 3)),
                   median_ms(lambda w=where, p=params: bare_list(w, p), max(3, args.repeat // 3)), 200)
        it = iter(ids * (args.repeat + 2))
        report("trace page (random traces)", median_ms(lambda: get("/trace/" + next(it)), args.repeat * 3),
               median_ms(lambda: bare_trace(next(it)), args.repeat * 3), 100)
        report("trace JSON (/api/trace)", median_ms(lambda: get("/api/trace/" + next(it)), args.repeat * 3),
               median_ms(lambda: bare_trace(next(it)), args.repeat * 3))
        session_ids = [r[0] for r in raw.execute("SELECT trace_id FROM llmtrace_traces WHERE session_id = ?", (session,))]
        report("session page", median_ms(lambda: get("/session/" + quote(session)), max(3, args.repeat // 3)),
               median_ms(lambda: [bare_trace(t) for t in session_ids], max(3, args.repeat // 3)))
        week = (datetime.now(timezone.utc) - timedelta(days=7)).replace(tzinfo=None).isoformat(sep=" ")
        window = ("SELECT c.span_id, c.trace_id, c.started_at, c.model, c.model_version, c.provider, c.input_tokens, "
                  "c.output_tokens, c.input_cached_tokens, c.latency_ms, c.ttft_ms, c.status, c.error_type, "
                  "t.feature, t.prompt_version FROM llmtrace_llm_calls c LEFT JOIN llmtrace_traces t ON "
                  "t.trace_id = c.trace_id WHERE c.started_at >= ?")
        report("stats page, 7 days (5 groupings, one read)", median_ms(lambda: get("/stats?since=7d"), 2),
               median_ms(lambda: raw.execute(window, (week,)).fetchall(), 2))
        a, b = rnd.sample(ids, 2)
        report("compare two traces", median_ms(lambda: get(f"/compare?a={a}&b={b}"), args.repeat),
               median_ms(lambda: (bare_trace(a), bare_trace(b)), args.repeat))

    print("-- over HTTP (uvicorn on 127.0.0.1, urllib; what a browser waits for) --")
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(url), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    def fetch(path: str) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            r.read()

    report("HTTP list: newest 50", median_ms(lambda: fetch("/"), args.repeat), None, 200)
    it2 = iter(ids * (args.repeat + 2))
    report("HTTP trace page", median_ms(lambda: fetch("/trace/" + next(it2)), args.repeat * 3), None, 100)
    server.should_exit = True
    thread.join(10)
    print(json.dumps({"calls": n_calls, "results": results}))


if __name__ == "__main__":
    main()
