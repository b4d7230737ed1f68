"""The ``llmtrace`` command: a thin shell over the library. Errors become one line, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from urllib.parse import quote

from llmtrace.base.config import DEFAULT_URL
from llmtrace.base.errors import ConfigError, LLMTraceError
from llmtrace.base.fields import ACTIONS, ALERT_RULES, STATUSES
from llmtrace.cli.output import add_output_flags, col, console, emit, ms, pct, usd


def _db_default() -> str:
    return os.environ.get("LLMTRACE_DATABASE_URL") or DEFAULT_URL


def _store(args):
    """The read facade: reading starts no writer and never creates a database."""
    from llmtrace.read.facade import Store

    return Store(args.db)


def _database(args, create: bool = False):
    from llmtrace.store.engine import Database

    return Database(args.db, create=create)


def cmd_demo(args) -> int:
    from importlib.metadata import entry_points

    from llmtrace.base.errors import ConfigError

    # The demo is an app built on LangChain and LlamaIndex, which the core never imports: it lives in
    # the llmtrace-examples package and is found through its entry point.
    found = sorted(entry_points(group="llmtrace.demo"), key=lambda ep: ep.name)
    if not found:
        raise ConfigError("the demo lives in the llmtrace-examples package: pip install llmtrace-examples "
                          "(or run `python3 dev.py demo` in a clone, which installs it)")
    run_demo = found[0].load()
    run_demo(args.db, show=not args.quiet, export_path=args.export)
    return 0


def cmd_show(args) -> int:
    if args.open:
        return _open_in_browser(args, "/trace/" + quote(args.trace_id, safe=""))
    with _store(args) as store:
        trace = store.get_trace(args.trace_id)
        if args.json:
            print(trace.to_json())
            return 0
        from llmtrace.read.text import render_text

        text = render_text(trace.to_dict(), full=args.full)
    _print_tree(text)
    return 0


def _print_tree(text: str) -> None:
    """The tree, errors and failures in red on a terminal (plain when piped or NO_COLOR)."""
    from rich.text import Text

    out = console()
    if not out.is_terminal or out.no_color:
        sys.stdout.write(text + "\n")
        return
    for line in text.splitlines():
        bad = "✗" in line or "FAILED" in line or "parse error" in line or line.lstrip().startswith("error ")
        out.print(Text(line, style="red" if bad else ("bold" if line.startswith("trace ") else "")), soft_wrap=True)


def _open_in_browser(args, path: str) -> int:
    """Open a page of the trace browser: in a running ``llmtrace ui`` of this database, else in one
    started here (which runs until Ctrl-C)."""
    import webbrowser

    from llmtrace.ui.server import page_url, port_in_use

    if port_in_use(args.host, args.port):
        import urllib.request

        try:
            with urllib.request.urlopen(page_url(args.host, args.port, "/healthz"), timeout=2) as r:
                same = json.load(r).get("db") == _store(args).url
        except Exception:  # another program on that port, or a ui that needs a token
            same = False
        if not same:
            raise ConfigError(f"port {args.port} is taken by something other than llmtrace ui on {args.db}: "
                              "pass --port to start one elsewhere")
        url = page_url(args.host, args.port, path)
        print(f"opening {url}")
        webbrowser.open(url)
        return 0
    return _serve(args, open_path=path)


def _serve(args, open_path: str | None = None) -> int:
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from llmtrace.ui import MISSING_EXTRA

        raise ConfigError(MISSING_EXTRA) from None
    from llmtrace.ui.server import serve

    serve(args.db, host=args.host, port=args.port, token=getattr(args, "token", None),
          read_only=getattr(args, "read_only", False), open_path=open_path)
    return 0


def cmd_ui(args) -> int:
    return _serve(args, open_path="/" if args.open else None)


def _red_if(cond):
    return lambda r: "red" if cond(r) else None


_ACTION_STYLE = {"accepted": "green", "edited": "blue", "retried": "yellow", "abandoned": "red"}


def cmd_ls(args) -> int:
    with _store(args) as store:
        rows = store.find_traces(
            limit=args.limit, since=args.since, until=args.until, feature=args.feature, team=args.team, model=args.model,
            prompt_version=args.prompt_version, user=args.user, status=args.status, error_type=args.error_type,
            validation_failed=args.validation_failed, action=args.action, min_cost=args.min_cost,
            min_latency_ms=args.min_latency, chunk_source=args.chunk, text=args.search, session_id=args.session,
            environment=args.environment, name=args.name)
    columns = [
        col("started (UTC)", lambda r: (r["started_at"] or "")[:19].replace("T", " "), left=True, priority=1),
        col("trace id", "trace_id", left=True, priority=0),
        col("status", "status", left=True, priority=2, style=_red_if(lambda r: r["status"] == "error")),
        col("ms", lambda r: ms(r["latency_ms"]), priority=3), col("calls", "llm_calls", priority=8),
        col("tokens in/out", lambda r: f"{r['input_tokens'] or 0}/{r['output_tokens'] or 0}"
            if r["input_tokens"] is not None or r["output_tokens"] is not None else None, priority=7),
        col("cost", lambda r: usd(r["cost_usd"]), priority=6), col("feature", "feature", left=True, priority=9, shrink=True),
        col("models", lambda r: ", ".join(r["models"]), left=True, priority=11, shrink=True),
        col("errors", lambda r: ", ".join(r["errors"]), left=True, priority=10, shrink=True,
            style=_red_if(lambda r: bool(r["errors"]))),
        col("user action", lambda r: r["action"] or (r["feedback"][-1]["action"] if r["feedback"] else None), left=True,
            priority=4, style=lambda r: _ACTION_STYLE.get(r["action"] or "")),
        col("name", "name", left=True, priority=5, shrink=True),
    ]
    emit(args, rows, columns, f"{len(rows)} trace(s), newest first", f"no matching traces in {args.db}")
    return 0


def cmd_stats(args) -> int:
    from llmtrace.read.stats import parse_by

    dims = parse_by(args.by)
    with _store(args) as store:
        rows = store.stats(dims, since=args.since, until=args.until, feature=args.feature, model=args.model,
                           team=args.team, prompt_version=args.prompt_version, user=args.user)
    columns = [col(d, d.replace("-", "_"), left=True, priority=0, shrink=True) for d in dims] + [
        col("calls", "calls", priority=1),
        col("in tok/call", "avg_input_tokens", priority=7), col("out tok/call", "avg_output_tokens", priority=8),
        col("cost", lambda r: usd(r["cost_usd"]) if not r["unpriced_calls"] or r["cost_usd"] is None
            else f"{usd(r['cost_usd'])}+?", priority=2),
        col("p50 ms", lambda r: ms(r["latency_p50_ms"]), priority=5), col("p95 ms", lambda r: ms(r["latency_p95_ms"]), priority=3),
        col("p99 ms", lambda r: ms(r["latency_p99_ms"]), priority=9), col("ttft p95", lambda r: ms(r["ttft_p95_ms"]), priority=10),
        col("errors", lambda r: pct(r["error_rate"]), priority=4, style=_red_if(lambda r: r["error_rate"] > 0)),
        col("by type", lambda r: ", ".join(f"{k} {v}" for k, v in list(r["errors_by_type"].items())[:3]), left=True,
            priority=13, shrink=True, style=_red_if(lambda r: bool(r["errors_by_type"]))),
        col("parse ✗", lambda r: pct(r["parse_failure_rate"]), priority=11,
            style=_red_if(lambda r: r["parse_failure_rate"] > 0)),
        col("valid ✗", lambda r: pct(r["validation_failure_rate"]), priority=12,
            style=_red_if(lambda r: r["validation_failure_rate"] > 0)),
        col("acc/edit/retry/aband", lambda r: "/".join(str(r[f"feedback_{a}"]) for a in ACTIONS), priority=6),
    ]
    window = f" since {args.since}" if args.since else ""
    emit(args, rows, columns, f"LLM calls by {', '.join(dims) or 'all'}{window}", f"no LLM calls{window} in {args.db}")
    return 0


def cmd_alerts(args) -> int:
    from llmtrace.base.alerting import AlertRules

    rules = AlertRules(rules=tuple(args.rule)) if args.rule else None
    with _store(args) as store:
        alerts = store.alerts(since=args.since, until=args.until, rules=rules, feature=args.feature, model=args.model)
    rows = [a.to_dict() for a in alerts]
    columns = [col("at (UTC)", lambda r: r["at"][:19].replace("T", " "), left=True), col("rule", "rule", left=True),
               col("feature", "feature", left=True), col("trace id", "trace_id", left=True),
               col("what", "message", left=True)]
    args.wide = True  # an alert is read whole: its message is never cut to the terminal
    emit(args, rows, columns, f"{len(rows)} alert(s) since {args.since}", f"no alerts since {args.since} in {args.db}")
    return 1 if rows and args.exit_code else 0


def cmd_export(args) -> int:
    with _store(args) as store:
        labels = tuple(args.label) if args.label else None
        n = store.export_eval_set(args.output, format=args.format, labels=labels, feature=args.feature,
                                  model=args.model, prompt_version=args.prompt_version, validation=args.validation,
                                  actions=tuple(args.action) if args.action else None, since=args.since,
                                  until=args.until)
    print(f"exported {n} row(s) to {args.output}")
    return 0


def cmd_purge(args) -> int:
    from llmtrace.store.retention import purge

    db = _database(args)
    try:
        result = purge(db, older_than=args.older_than, dry_run=args.dry_run, batch_size=args.batch_size,
                       labels=args.labels)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(result))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {result['content_rows']} content row(s) of {result['traces']} trace(s); metadata kept")
    return 0


def cmd_audit(args) -> int:
    from llmtrace.store import audit

    db = _database(args)
    try:
        if args.action == "head":
            print(audit.head(db))
            return 0
        report = audit.verify(db, anchor=args.anchor)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps({"ok": report.ok, "audit": report.enabled, "entries": report.entries, "rows": report.rows,
                          "head": report.head, "problems": report.problems}))
    elif not report.enabled:
        print(report.first)  # ("audit is off for this store: ...")
    elif report.ok:
        anchored = f"; anchor {args.anchor.split(':')[0]} holds" if args.anchor else ""
        print(f"audit chain ok: {report.entries} entries cover {report.rows} rows{anchored}")
    else:
        print(f"audit chain BROKEN: {report.first}")
        for line in report.problems[1:]:
            print(f"  also: {line}")
    return 0 if report.ok else 1


def cmd_db(args) -> int:
    if args.action == "migrate":
        db = _database(args, create=True)
        try:
            db.ensure_schema()
            print(f"{db.display_url}: llmtrace schema version {db.schema_version()}")
        finally:
            db.dispose()
        return 0
    from llmtrace.store.harden import harden

    db = _database(args, create=True)  # (harden makes the tables it protects; it refuses anything but PostgreSQL first)
    try:
        stmts = harden(db, args.reader_role, dry_run=args.print)
    finally:
        db.dispose()
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
    p = add("show", "Show one trace as a tree, or as the SIGNALS.md document with --json, or its page in the "
                    "browser with --open.", cmd_show)
    p.add_argument("trace_id")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print the trace document as JSON")
    how.add_argument("--full", action="store_true", help="print every message and whole content (default: cut to a line)")
    how.add_argument("--open", action="store_true", help="open the trace's page of llmtrace ui in the browser (starts "
                                                         "the ui when none runs on --port)")
    _ui_address_flags(p)
    p = add("ls", "Find traces, newest first: every filter given must match.", cmd_ls)
    p.add_argument("--limit", type=int, default=20, help="how many traces (default 20)")
    p.add_argument("--since", help="started since: 7d, 12h, 30m, or a date/time (2026-11-01)")
    p.add_argument("--until", help="started before this (same forms as --since)")
    p.add_argument("--feature")
    p.add_argument("--team")
    p.add_argument("--model", help="a call used this model (name or exact version)")
    p.add_argument("--prompt-version")
    p.add_argument("--user", help="a user id (hashed like the stored one) or a stored hash u_...")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--error-type", help="a span failed with this error type (timeout, rate_limit, auth, ...)")
    p.add_argument("--validation-failed", action="store_true", help="a parse or validation check failed")
    p.add_argument("--action", help="the user's last action (accepted, edited, retried, abandoned), or any feedback "
                                    "saying rated or a custom action")
    p.add_argument("--session", help="traces of this session (conversation) id")
    p.add_argument("--environment")
    p.add_argument("--name", help="traces with this name")
    p.add_argument("--min-cost", type=float, help="total cost at least this many USD")
    p.add_argument("--min-latency", type=float, help="trace latency at least this many milliseconds")
    p.add_argument("--chunk", help="used a retrieved chunk with this source id")
    p.add_argument("--search", help="words in the stored (redacted) content: prompts, answers, tool args, chunks")
    add_output_flags(p)
    p = add("stats", "Calls, tokens, cost, latency/TTFT percentiles, error, parse and validation failure rates "
                     "and the users' feedback mix, grouped.", cmd_stats)
    p.add_argument("--by", default="model", help="group by model, version, provider, feature, team, user, prompt-version, "
                                                 "environment, day, hour or turn (a session's n-th trace: shows prompts "
                                                 "growing with the conversation); comma-separated for several "
                                                 "(default: model)")
    p.add_argument("--since", help="only calls since: 7d, 12h, 30m, or a date/time (2026-11-01)")
    p.add_argument("--until", help="only calls before this (same forms as --since)")
    p.add_argument("--feature")
    p.add_argument("--model")
    p.add_argument("--team")
    p.add_argument("--prompt-version")
    p.add_argument("--user", help="a user id (hashed like the stored one) or a stored hash u_...")
    add_output_flags(p)
    p = add("ui", "Browse traces in a local web page: the list with filters, each trace's spans and signals, "
                  "sessions, stats with charts, two traces compared; record feedback from the page.", cmd_ui)
    _ui_address_flags(p)
    p.add_argument("--token", help="access token every request must carry (required for any address but loopback; "
                                   "default $LLMTRACE_UI_TOKEN)")
    p.add_argument("--read-only", action="store_true", help="no feedback or validation forms")
    p.add_argument("--open", action="store_true", help="open the page in the browser")
    p = add("alerts", "Evaluate the alert rules over recorded calls: cost spike (3x the average of the feature and model), latency "
                      "spike (2x p95), error rate over 5%%/hour, tokens near the context limit.", cmd_alerts)
    p.add_argument("--since", default="24h", help="alerts fired by calls since: 24h (default), 7d, or a date/time")
    p.add_argument("--until", help="only calls before this (same forms as --since)")
    p.add_argument("--rule", action="append", choices=ALERT_RULES,
                   help="only these rules (repeatable; default all)")
    p.add_argument("--feature")
    p.add_argument("--model")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when an alert fires (for cron and CI checks)")
    add_output_flags(p, wide=False)
    p = add("export", "Export feedback-labelled LLM calls as an eval set.", cmd_export)
    p.add_argument("-o", "--output", required=True, help="file to write")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "openai", "dataset", "parquet"],
                   help="jsonl (whole rows), openai (chat messages + the reference answer), dataset (inputs / "
                        "expected_output), parquet")
    p.add_argument("--validation", choices=["passed", "failed"], help="only calls whose validations all passed / one failed")
    p.add_argument("--action", action="append", choices=ACTIONS,
                   help="only traces whose user's last action is this (repeatable)")
    p.add_argument("--label", action="append", choices=["positive", "negative", "corrected"],
                   help="only these labels (repeatable)")
    p.add_argument("--since", help="only traces started since: 7d, 12h, 30m, or a date/time (2026-11-01)")
    p.add_argument("--until", help="only traces started before this (same forms as --since)")
    p.add_argument("--feature")
    p.add_argument("--model")
    p.add_argument("--prompt-version")
    p = add("purge", "Delete content past its expiry (no prompt); counts, timings and ids stay.", cmd_purge)
    p.add_argument("--older-than", help="also purge content older than this: 7d, 12h, 30m")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per transaction (default 1000)")
    p.add_argument("--labels", action="store_true", help="with --older-than: also feedback corrections and comments "
                                                          "(kept by default: they are the eval sets' references)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("db", "migrate: create or upgrade the llmtrace tables now. harden (PostgreSQL): a metadata-only reader "
                  "role, append-only audit, purge-only deletes.", cmd_db)
    p.add_argument("action", choices=["migrate", "harden"])
    p.add_argument("--reader-role", default="llmtrace_reader", help="role that may read metadata (default llmtrace_reader)")
    p.add_argument("--print", action="store_true", help="print the SQL instead of running it")
    p = add("audit", "Check the tamper-evident audit chain (Tracer(audit=True)) against the tables.", cmd_audit)
    p.add_argument("action", choices=["verify", "head"],
                   help="verify: report the first problem, exit 1 if any (or if audit is off); head: print the "
                        "chain's last link, to keep outside the database for verify --anchor")
    p.add_argument("--anchor", help="verify: a line `llmtrace audit head` printed earlier; fails if the chain no "
                                    "longer holds that link (a chain rebuilt from the end)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _ui_address_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8700, help="port (default 8700)")


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
