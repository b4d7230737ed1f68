"""Read-side speed with a large store: get_trace, stats, ls filters and alerts over 1,000,000 LLM calls.

    python bench/read.py [--calls 1000000] [--db bench/.data/read-1m.db] [--rebuild]

The store is generated once (and reused): 30 days of a support app, two LLM calls per trace, a
root span, a retriever with three chunks on half the traces, one content row per trace, failed
checks, feedback on 30% of traces, 2% errors, eight features, five thousand users, sessions whose
prompts grow with each turn. Rows go straight into llmtrace's tables (created by the real
migrations): writing a million calls through the writer would measure the writer, not the reads.

Each figure is printed with a baseline measured in the same run on the same file: the bare
sqlite3 query that fetches the same rows (for get_trace: the seven by-trace-id selects; for
stats and alerts: the window's call rows joined to their traces), so the ratio is what llmtrace's
assembly, pricing and aggregation cost on top of reading the data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import llmtrace

FEATURES = ["refunds", "orders", "shipping", "billing", "returns", "account", "warranty", "policy-qa"]
MODELS = [("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", 0.55), ("gpt-4o", "gpt-4o-2024-08-06", "openai", 0.25),
          ("claude-3-5-sonnet", "claude-3-5-sonnet-20241022", "anthropic", 0.15), ("acme-ft", None, "acme", 0.05)]
ERRORS = ["rate_limit", "timeout", "server_error", "context_length"]
WORDS = ("refund order parcel invoice kettle toaster blender warranty return label courier address card charge "
         "discount voucher delivery damaged missing late broken cancel subscription account password").split()
DAYS = 30


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def generate(path: str, n_calls: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    llmtrace.Tracer(f"sqlite:///{path}").close()  # the real tables, indexes and migrations
    with llmtrace.Tracer(f"sqlite:///{path}") as tracer:
        tracer.schema_version()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now = time.time()
    start = now - DAYS * 86400
    n_traces = n_calls // 2
    users = [f"u_{rnd.getrandbits(96):024x}" for _ in range(5000)]
    sessions = [f"s-{i}" for i in range(n_traces // 5)]
    turn_of: dict[str, int] = {}
    weights = [m[3] for m in MODELS]
    batch: dict[str, list] = {k: [] for k in ("traces", "spans", "calls", "chunks", "contents", "feedback", "vals")}

    def flush() -> None:
        db.executemany("INSERT INTO llmtrace_traces (trace_id, name, started_at, ended_at, latency_ms, status, user_hash, "
                       "session_id, feature, team, environment, prompt_version, capture) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch["traces"])
        db.executemany("INSERT INTO llmtrace_spans (span_id, trace_id, parent_id, kind, name, started_at, ended_at, "
                       "latency_ms, status, error_type, position) VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch["spans"])
        db.executemany("INSERT INTO llmtrace_llm_calls (span_id, trace_id, started_at, model, model_version, provider, "
                       "input_tokens, output_tokens, total_tokens, input_cached_tokens, latency_ms, ttft_ms, "
                       "retrieval_ms, finish_reason, status, error_type, retry_count, streamed) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch["calls"])
        db.executemany("INSERT INTO llmtrace_chunks (trace_id, span_id, rank, source_id, score, retriever, retrieved_at) "
                       "VALUES (?,?,?,?,?,?,?)", batch["chunks"])
        db.executemany("INSERT INTO llmtrace_contents (id, trace_id, body, size, created_at, expires_at) "
                       "VALUES (?,?,?,?,?,?)", batch["contents"])
        db.executemany("INSERT INTO llmtrace_feedback (id, trace_id, action, score, source, at) VALUES (?,?,?,?,?,?)",
                       batch["feedback"])
        db.executemany("INSERT INTO llmtrace_validations (id, trace_id, span_id, rule, passed, source, at) "
                       "VALUES (?,?,?,?,?,?,?)", batch["vals"])
        db.commit()
        for rows in batch.values():
            rows.clear()

    times = sorted(start + rnd.random() * DAYS * 86400 for _ in range(n_traces))
    for i, t0 in enumerate(times):
        tid = f"{rnd.getrandbits(128):032x}"
        feature = FEATURES[i % len(FEATURES)]
        session = sessions[rnd.randrange(len(sessions))]
        turn = turn_of[session] = turn_of.get(session, 0) + 1
        model, version, provider, _w = rnd.choices(MODELS, weights)[0]
        failed = rnd.random() < 0.02
        root, retr = f"{tid}-root", f"{tid}-r"
        spans, t = batch["spans"], t0
        rag = i % 2 == 0
        if rag:
            r_ms = rnd.uniform(5, 60)
            spans.append((retr, tid, root, "retriever", "PolicyRetriever", _ts(t), _ts(t + r_ms / 1e3), r_ms, "ok", None, 0))
            for rank in range(3):
                batch["chunks"].append((tid, retr, rank, f"kb/{feature}/{rnd.randrange(400)}.md", rnd.random(),
                                        "PolicyRetriever", _ts(t)))
            t += r_ms / 1e3
        body = {}
        for c in range(2):
            sid = f"{tid}-c{c}"
            inp = 200 + 150 * min(turn, 20) + rnd.randrange(300)
            out = rnd.randrange(20, 400)
            lat = rnd.lognormvariate(6.5, 0.5)  # ~700 ms median
            streamed = rnd.random() < 0.5
            err = rnd.choice(ERRORS) if failed and c == 1 else None
            spans.append((sid, tid, root, "llm", model, _ts(t), _ts(t + lat / 1e3), lat, "error" if err else "ok", err, c + 1))
            batch["calls"].append((sid, tid, _ts(t), model, version, provider, None if err else inp,
                                   None if err else out, None if err else inp + out, rnd.choice((0, 0, inp // 2)), lat,
                                   lat * rnd.uniform(0.1, 0.4) if streamed else None, r_ms if rag and c == 0 else None,
                                   None if err else "stop", "error" if err else "ok", err, 0, streamed))
            question = " ".join(rnd.choices(WORDS, k=12)) + (" zanzibar" if rnd.random() < 0.001 else "")
            body[sid] = {"input_messages": [{"role": "system", "content": f"You answer {feature} questions."},
                                            {"role": "user", "content": question}],
                         "raw_completion": " ".join(rnd.choices(WORDS, k=25))}
            if rnd.random() < 0.5:
                batch["vals"].append((f"{sid}-v", tid, sid, "grounded", rnd.random() > 0.1, "user", _ts(t + 1)))
            t += lat / 1e3
        total = (t - t0) * 1e3
        spans.append((root, tid, None, "chain", f"{feature}_assistant", _ts(t0), _ts(t), total, "error" if failed else "ok",
                      ERRORS[0] if failed else None, 4))
        batch["traces"].append((tid, f"{feature}_assistant", _ts(t0), _ts(t), total, "error" if failed else "ok",
                                users[rnd.randrange(len(users))], session, feature, "support", "production",
                                f"{feature}-v{1 + i * 3 // n_traces}", "redacted"))
        text = json.dumps(body, separators=(",", ":"))
        batch["contents"].append((f"{tid}-b", tid, text, len(text), _ts(t), _ts(t + 30 * 86400)))
        if rnd.random() < 0.3:
            action = rnd.choices(("accepted", "edited", "retried", "abandoned"), (60, 20, 15, 5))[0]
            batch["feedback"].append((f"{tid}-f", tid, action, None, "user", _ts(t + 60)))
        if len(batch["traces"]) >= 20_000:
            flush()
            print(f"  {i + 1:,} / {n_traces:,} traces", end="\r", file=sys.stderr)
    flush()
    db.execute("ANALYZE")
    db.commit()
    db.close()
    print(file=sys.stderr)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--db", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".data", "read-1m.db"))
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.db), exist_ok=True)
    url = f"sqlite:///{args.db}"
    if args.rebuild or not os.path.exists(args.db):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.db + suffix):
                os.remove(args.db + suffix)
        t0 = time.perf_counter()
        generate(args.db, args.calls)
        print(f"generated {args.calls:,} LLM calls in {time.perf_counter() - t0:.0f} s -> {args.db} "
              f"({os.path.getsize(args.db) / 2**20:,.0f} MiB)")
    raw = sqlite3.connect(args.db)
    n_calls = raw.execute("SELECT count(*) FROM llmtrace_llm_calls").fetchone()[0]
    print(f"store: {n_calls:,} LLM calls, {raw.execute('SELECT count(*) FROM llmtrace_traces').fetchone()[0]:,} traces")
    ids = [r[0] for r in raw.execute("SELECT trace_id FROM llmtrace_traces ORDER BY random() LIMIT 200")]
    rows = []

    def report(name, ours, base=None):
        line = f"{name:<44} {statistics.median(ours) * 1e3:9.1f} ms"
        if base:
            line += f"   baseline {statistics.median(base) * 1e3:8.1f} ms   ratio {statistics.median(ours) / statistics.median(base):5.2f}x"
        print(line)
        rows.append({"name": name, "ms": statistics.median(ours) * 1e3,
                     "baseline_ms": statistics.median(base) * 1e3 if base else None})

    tracer = llmtrace.Tracer(url)
    tracer.schema_version()
    it = iter(ids * 3)
    tables = ("traces", "spans", "llm_calls", "tool_calls", "chunks", "validations", "feedback", "contents")

    def bare_trace():
        tid = next(it)
        for table in tables:
            raw.execute(f"SELECT * FROM llmtrace_{table} WHERE trace_id = ?", (tid,)).fetchall()

    base = timed(bare_trace, len(ids))
    ours = timed(lambda: tracer.get_trace(next(it)).to_dict(), len(ids))
    report("get_trace(id).to_dict()  (p50 of 200)", ours, base)
    print(f"{'get_trace p95':<44} {sorted(ours)[int(len(ours) * 0.95)] * 1e3:9.1f} ms")

    since = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=7)
    window_sql = ("SELECT c.span_id, c.trace_id, c.started_at, c.model, c.model_version, c.provider, c.input_tokens, "
                  "c.output_tokens, c.input_cached_tokens, c.latency_ms, c.ttft_ms, c.status, c.error_type, "
                  "c.finish_reason, t.feature, t.team, t.user_hash, t.prompt_version, t.session_id, t.environment "
                  "FROM llmtrace_llm_calls c LEFT JOIN llmtrace_traces t ON t.trace_id = c.trace_id "
                  "WHERE c.started_at >= ?")
    n_window = raw.execute("SELECT count(*) FROM llmtrace_llm_calls WHERE started_at >= ?",
                           (since.isoformat(sep=" "),)).fetchone()[0]
    print(f"stats window --since 7d: {n_window:,} LLM calls")
    base = timed(lambda: raw.execute(window_sql, (since.isoformat(sep=" "),)).fetchall(), 3)
    for by in ("model", "feature", "day", "prompt-version", "user", "turn"):
        report(f"stats(by={by!r}, since='7d')", timed(lambda by=by: tracer.stats(by, since="7d"), 3), base)
    report("stats(by='model') over all 30 days", timed(lambda: tracer.stats("model"), 1))

    cli = [sys.executable, "-m", "llmtrace", "stats", "--db", url, "--since", "7d", "--by", "feature", "--json"]
    report("CLI: llmtrace stats --since 7d --by feature", timed(lambda: subprocess.run(cli, check=True, capture_output=True), 3))

    base = timed(lambda: raw.execute("SELECT * FROM llmtrace_traces ORDER BY started_at DESC LIMIT 20").fetchall(), 5)
    user = raw.execute("SELECT user_hash FROM llmtrace_traces LIMIT 1").fetchone()[0]
    source = raw.execute("SELECT source_id FROM llmtrace_chunks LIMIT 1").fetchone()[0]
    for label, filters in (("newest 20", {}), ("--feature refunds", {"feature": "refunds"}),
                           ("--user <hash>", {"user": user}), ("--model gpt-4o", {"model": "gpt-4o"}),
                           ("--status error --error-type timeout", {"status": "error", "error_type": "timeout"}),
                           ("--action edited", {"action": "edited"}), ("--validation-failed", {"validation_failed": True}),
                           ("--min-cost 0.01", {"min_cost": 0.01}), ("--min-latency 3000", {"min_latency_ms": 3000}),
                           ("--chunk <source>", {"chunk_source": source}),
                           ("--search kettle", {"text": "kettle"}),
                           ("--search zanzibar --since 7d (rare word)", {"text": "zanzibar", "since": "7d"}),
                           ("--search zanzibar (rare word, 30 days)", {"text": "zanzibar"})):
        report(f"ls {label}", timed(lambda f=filters: tracer.find_traces(**f), 3), base)

    since24 = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=2)
    base = timed(lambda: raw.execute(window_sql + " ORDER BY c.started_at", (since24.isoformat(sep=" "),)).fetchall(), 3)
    found = tracer.alerts(since="24h")
    report(f"alerts(since='24h') [{len(found)} fired]", timed(lambda: tracer.alerts(since="24h"), 3), base)
    tracer.close()
    print(json.dumps({"calls": n_calls, "results": rows}))


if __name__ == "__main__":
    main()
