"""The ``llmtrace`` command: a thin shell over the library. Errors become one line, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from llmtrace._config import DEFAULT_URL
from llmtrace._errors import LLMTraceError


def _db_default() -> str:
    return os.environ.get("LLMTRACE_DATABASE_URL") or DEFAULT_URL


def _tracer(args):
    from llmtrace import Tracer

    return Tracer(args.db)


def cmd_demo(args) -> int:
    from llmtrace._demo import run_demo

    run_demo(args.db, show=not args.quiet, export_path=args.export)
    return 0


def cmd_show(args) -> int:
    tracer = _tracer(args)
    try:
        trace = tracer.get_trace(args.trace_id)
        print(trace.to_json() if args.json else trace.render())
    finally:
        tracer.close()
    return 0


def cmd_ls(args) -> int:
    from llmtrace._read import list_traces

    tracer = _tracer(args)
    try:
        rows = list_traces(tracer._store, args.limit)
    finally:
        tracer.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no traces in {args.db}")
        return 0
    for r in rows:
        latency = f"{r['latency_ms']:.0f} ms" if r["latency_ms"] is not None else "–"
        print(f"{r['started_at']}  {r['trace_id']}  {r['status'] or 'open':<5} {latency:>8}  "
              f"{r['llm_calls']} call(s)  {r['feature'] or ''}  {r['name'] or ''}")
    return 0


def cmd_export(args) -> int:
    tracer = _tracer(args)
    try:
        labels = tuple(args.label) if args.label else None
        n = tracer.export_eval_set(args.output, format=args.format, labels=labels, feature=args.feature,
                                   model=args.model, prompt_version=args.prompt_version, validation=args.validation,
                                   actions=tuple(args.action) if args.action else None)
    finally:
        tracer.close()
    print(f"exported {n} row(s) to {args.output}")
    return 0


def cmd_purge(args) -> int:
    tracer = _tracer(args)
    try:
        result = tracer.purge(older_than=args.older_than, dry_run=args.dry_run, batch_size=args.batch_size)
    finally:
        tracer.close()
    if args.json:
        print(json.dumps(result))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {result['content_rows']} content row(s) of {result['traces']} trace(s); metadata kept")
    return 0


def cmd_audit(args) -> int:
    tracer = _tracer(args)
    try:
        report = tracer.verify_audit()
    finally:
        tracer.close()
    if args.json:
        print(json.dumps({"ok": report.ok, "entries": report.entries, "rows": report.rows, "problems": report.problems}))
    elif report.ok:
        print(f"audit chain ok: {report.entries} entries cover {report.rows} rows")
    else:
        print(f"audit chain BROKEN: {report.first}")
        for line in report.problems[1:]:
            print(f"  also: {line}")
    return 0 if report.ok else 1


def cmd_db(args) -> int:
    from llmtrace._harden import harden

    tracer = _tracer(args)
    try:
        stmts = harden(tracer._store, args.reader_role, dry_run=args.print)
    finally:
        tracer.close()
    if args.print:
        print(";\n".join(stmts) + ";")
    else:
        print(f"hardened: role {args.reader_role} reads metadata but not content; the audit chain is append-only; "
              "content is deleted only by purge")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmtrace", description="Record, inspect and export LLM calls.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--db", default=_db_default(), help="database URL (default: $LLMTRACE_DATABASE_URL or "
                                                           f"{DEFAULT_URL})")
        p.set_defaults(func=func)
        return p

    p = add("demo", "Record an offline demo app (a refunds assistant), attach user actions, show a trace.", cmd_demo)
    p.add_argument("--quiet", action="store_true", help="do not print the trace tree")
    p.add_argument("--export", default="llmtrace-eval.jsonl", help="where to write the demo's eval set")
    p = add("show", "Show one trace as a tree, or as the SIGNALS.md document with --json.", cmd_show)
    p.add_argument("trace_id")
    p.add_argument("--json", action="store_true", help="print the trace document as JSON")
    p = add("ls", "List the most recent traces.", cmd_ls)
    p.add_argument("--limit", type=int, default=20, help="how many traces (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("export", "Export feedback-labelled LLM calls as an eval set.", cmd_export)
    p.add_argument("-o", "--output", required=True, help="file to write")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "openai", "dataset", "parquet"],
                   help="jsonl (whole rows), openai (chat messages + the reference answer), dataset (inputs / "
                        "expected_output), parquet")
    p.add_argument("--validation", choices=["passed", "failed"], help="only calls whose validations all passed / one failed")
    p.add_argument("--action", action="append", choices=["accepted", "edited", "retried", "abandoned"],
                   help="only traces whose user's last action is this (repeatable)")
    p.add_argument("--label", action="append", choices=["positive", "negative", "corrected"],
                   help="only these labels (repeatable)")
    p.add_argument("--feature")
    p.add_argument("--model")
    p.add_argument("--prompt-version")
    p = add("purge", "Delete content past its expiry (no prompt); counts, timings and ids stay.", cmd_purge)
    p.add_argument("--older-than", help="also purge content older than this: 7d, 12h, 30m")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per transaction (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("db", "PostgreSQL protections: a metadata-only reader role, append-only audit, purge-only deletes.", cmd_db)
    p.add_argument("action", choices=["harden"])
    p.add_argument("--reader-role", default="llmtrace_reader", help="role that may read metadata (default llmtrace_reader)")
    p.add_argument("--print", action="store_true", help="print the SQL instead of running it")
    p = add("audit", "Check the tamper-evident audit chain (Tracer(audit=True)) against the tables.", cmd_audit)
    p.add_argument("action", choices=["verify"], help="verify: report the first broken link, exit 1 if any")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LLMTraceError as exc:
        print(f"llmtrace: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
