"""The command line, run as a user runs it: the demo, show, ls, export and their errors."""

from __future__ import annotations

import json
import subprocess
import sys

from llmtrace.cli.main import build_parser


def llmtrace(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmtrace", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_demo_show_ls_export(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    export = tmp_path / "eval.jsonl"
    demo = llmtrace("demo", "--db", url, "--export", str(export))
    assert demo.returncode == 0, demo.stderr
    assert "recorded 5 conversations" in demo.stdout
    assert "• retriever PolicyRetriever" in demo.stdout and "tool call lookup_order" in demo.stdout
    assert "restocking_fee_applied FAILED" in demo.stdout and "feedback: accepted" in demo.stdout
    assert "recorded 3 LlamaIndex policy questions" in demo.stdout and "• retriever VectorIndexRetriever" in demo.stdout
    assert "by feature (llmtrace stats --by feature):" in demo.stdout
    assert "refunds     10 LLM calls" in demo.stdout and "1 accepted, 1 edited, 1 retried, 1 abandoned" in demo.stdout
    trace_ids = [line.split()[0] for line in demo.stdout.splitlines()[1:6]]
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert sorted(r["label"] for r in rows) == ["corrected", "negative", "negative", "positive"]  # rated: no label
    corrected = next(r for r in rows if r["label"] == "corrected")
    assert corrected["reference"] == "We refund 40.00 EUR plus 4.99 EUR shipping."
    assert corrected["trace_id"] == trace_ids[2]

    shown = llmtrace("show", trace_ids[3], "--db", url, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["status"] == "error" and doc["feedback"][0]["action"] == "retried"
    assert doc["llm_calls"][-1]["parse_error"] and doc["llm_calls"][-1]["raw_completion"].startswith("Sure!")
    assert doc["llm_calls"][0]["tool_calls"][0]["name"] == "lookup_order"

    listed = llmtrace("ls", "--db", url, "--json")
    assert set(trace_ids) <= {r["trace_id"] for r in json.loads(listed.stdout)}  # plus the LlamaIndex ones


def test_unknown_trace_is_one_line_no_traceback(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert llmtrace("db", "migrate", "--db", url).returncode == 0  # an empty store
    out = llmtrace("show", "no-such-id", "--db", url)
    assert out.returncode == 1
    assert out.stderr.strip() == "llmtrace: error: no trace with id 'no-such-id' in the store"
    assert "Traceback" not in out.stderr


def test_bad_url_is_one_line(tmp_path):
    out = llmtrace("ls", "--db", "not-a-url")
    assert out.returncode == 1 and "is not a URL" in out.stderr and "Traceback" not in out.stderr


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, name
        assert "--db" in p.format_help()


def test_reading_a_store_that_is_not_there_is_a_clear_error_and_creates_nothing(tmp_path):
    path = tmp_path / "nowhere.db"
    for command in (["ls"], ["stats"], ["show", "x"], ["alerts"], ["audit", "verify"], ["purge"]):
        out = llmtrace(*command, "--db", f"sqlite:///{path}")
        assert out.returncode == 1, command
        assert out.stderr.strip() == f"llmtrace: error: no llmtrace database at {path}: nothing has been recorded there " \
                                     "(check --db / LLMTRACE_DATABASE_URL)", command
        assert not path.exists(), command


def test_every_commands_help_runs():
    for command in ("demo", "show", "ls", "stats", "alerts", "export", "purge", "db", "audit"):
        out = llmtrace(command, "--help")
        assert out.returncode == 0 and "usage: llmtrace " + command in out.stdout, (command, out.stderr)
