"""The command line as a person meets it: tables that fit 80 and 120 columns, colour on a terminal
and plain text in a pipe, whole content on request, CSV that programs can read, --help on every
command, and ``llmtrace ui`` / ``show --open`` serving the pages."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

import llmtrace
from llmtrace.cli.main import build_parser
from ui.conftest import free_port

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: str, columns: int | None = None, env: dict | None = None, timeout: float = 60):
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS")}
    if columns:
        environ["COLUMNS"] = str(columns)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmtrace", *args], capture_output=True, text=True, timeout=timeout,
                          env=environ)


@pytest.mark.parametrize("width", [80, 120])
def test_ls_and_stats_fit_the_terminal(scenario, width):
    ls = run("ls", "--db", scenario.url, columns=width)
    assert ls.returncode == 0, ls.stderr
    lines = ls.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    for tid in scenario.ids.values():  # the id is never cut: it is what you copy into `show`
        assert sum(tid in line for line in lines) == 1
    assert "more column(s): --wide" in lines[0]
    stats = run("stats", "--db", scenario.url, "--by", "feature,prompt-version", columns=width)
    assert stats.returncode == 0, stats.stderr
    assert max(len(line.rstrip()) for line in stats.stdout.splitlines()) <= width
    assert "refunds" in stats.stdout and "calls" in stats.stdout and "cost" in stats.stdout
    if width == 120:
        assert "user action" in lines[2] and "edited" in ls.stdout  # room for the user's action
        assert "p95 ms" in stats.stdout


def test_wide_shows_every_column_and_names_are_cut_with_an_ellipsis(scenario):
    wide = run("ls", "--db", scenario.url, "--wide", columns=80)
    header = wide.stdout.splitlines()[2]
    for title in ("started (UTC)", "trace id", "status", "calls", "tokens in/out", "cost", "feature", "models", "errors",
                  "user action", "name"):
        assert title in header
    assert "more column(s)" not in wide.stdout
    narrow = run("ls", "--db", scenario.url, "--feature", "xss", columns=120)
    assert "…" in narrow.stdout  # the hostile trace's long name, cut


def test_colour_on_a_terminal_plain_in_a_pipe(scenario):
    piped = run("ls", "--db", scenario.url, "--status", "error", columns=120)
    assert not ANSI.search(piped.stdout)
    coloured = run("ls", "--db", scenario.url, "--status", "error", columns=120, env={"FORCE_COLOR": "1"})
    assert "\x1b[31merror" in coloured.stdout  # the status in red
    shown = run("show", scenario.ids["turn3"], "--db", scenario.url, env={"FORCE_COLOR": "1"})
    red = [ANSI.sub("", line) for line in shown.stdout.splitlines() if line.startswith("\x1b[31m")]
    assert any("parse error" in line for line in red) and any("schema FAILED" in line for line in red)
    plain = run("show", scenario.ids["turn3"], "--db", scenario.url, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not ANSI.search(plain.stdout)


def test_show_full_prints_whole_content(scenario):
    tid = scenario.ids["turn1"]
    short = run("show", tid, "--db", scenario.url)
    full = run("show", tid, "--db", scenario.url, "--full")
    assert full.returncode == 0, full.stderr
    context = "Opened electronics carry a 15% restocking fee."
    assert context not in short.stdout  # the default cuts a message to a line
    assert context in full.stdout and "Gift cards are never refundable." in full.stdout
    assert '"days_left": 12' in full.stdout  # the parsed output, whole
    assert "retrieved kb/electronics.md (score 0.74): Opened electronics carry a 15% restocking fee." in full.stdout


def test_csv_writes_lists_as_json(scenario):
    out = run("ls", "--db", scenario.url, "--csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    row = next(r for r in rows if r["trace_id"] == scenario.ids["rated"])
    assert json.loads(row["models"]) == ["gpt-4o-2024-08-06"]
    assert json.loads(row["feedback"]) == [{"action": "rated", "score": 4.0}, {"action": "escalated", "score": None}]
    assert json.loads(next(r for r in rows if r["trace_id"] == scenario.ids["error"])["errors"]) == ["rate_limit"]
    stats = list(csv.DictReader(io.StringIO(run("stats", "--db", scenario.url, "--csv").stdout)))
    assert all(isinstance(json.loads(r["errors_by_type"]), dict) for r in stats)


def test_ls_by_session_and_any_action(scenario):
    ids = scenario.ids
    out = json.loads(run("ls", "--db", scenario.url, "--session", "sess-ana", "--json").stdout)
    assert [r["trace_id"] for r in out] == [ids["turn3"], ids["turn2"], ids["turn1"]]
    assert [r["trace_id"] for r in json.loads(run("ls", "--db", scenario.url, "--action", "escalated",
                                                  "--json").stdout)] == [ids["rated"]]
    bad = run("ls", "--db", scenario.url, "--action", "liked")
    assert bad.returncode == 1 and "action is one of" in bad.stderr and "Traceback" not in bad.stderr


def test_export_since_and_until(scenario, tmp_path):
    out = tmp_path / "eval.jsonl"
    everything = run("export", "--db", scenario.url, "-o", str(out)).stdout.split()[1]
    assert int(everything) >= 3  # accepted, edited, retried (and whatever other tests added)
    assert run("export", "--db", scenario.url, "-o", str(out), "--since", "1h").stdout.split()[1] == everything
    assert run("export", "--db", scenario.url, "-o", str(out), "--until", "2000-01-01").stdout.startswith("exported 0")
    bad = run("export", "--db", scenario.url, "-o", str(out), "--since", "soon")
    assert bad.returncode == 1 and "since is an age like" in bad.stderr


def test_help_on_every_command():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"ui", "show", "ls", "stats", "export"} <= set(sub.choices)
    for name in sub.choices:
        out = run(name, "--help")
        assert out.returncode == 0 and f"usage: llmtrace {name}" in out.stdout, (name, out.stderr)
    assert "--open" in run("show", "--help").stdout and "--token" in run("ui", "--help").stdout


def test_ui_refuses_an_open_address_without_a_token_and_a_missing_database(tmp_path):
    out = run("ui", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--host", "0.0.0.0", env={"LLMTRACE_UI_TOKEN": ""})
    assert out.returncode == 1 and "refusing to serve traces on 0.0.0.0 without an access token" in out.stderr
    missing = tmp_path / "nowhere.db"
    out = run("ui", "--db", f"sqlite:///{missing}")
    assert out.returncode == 1 and "no llmtrace database at" in out.stderr and not missing.exists()


def _wait_for(path, deadline: float = 20.0) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def test_show_open_serves_the_trace_page_and_opens_it(scenario, tmp_path):
    port = free_port()
    opened = tmp_path / "opened.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env["BROWSER"] = f"{sys.executable} -c \"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\" %s"
    proc = subprocess.Popen([sys.executable, "-m", "llmtrace", "show", scenario.ids["turn2"], "--open", "--db",
                             scenario.url, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = _wait_for(opened)
        assert url == f"http://127.0.0.1:{port}/trace/{scenario.ids['turn2']}"
        with urllib.request.urlopen(url, timeout=5) as r:
            page = r.read().decode()
        assert scenario.ids["turn2"] in page and "lookup_order" in page
        # a second `show --open` finds that ui and only opens the page
        opened.unlink()
        again = run("show", scenario.ids["turn1"], "--open", "--db", scenario.url, "--port", str(port),
                    env={"BROWSER": env["BROWSER"]})
        assert again.returncode == 0, again.stderr
        assert _wait_for(opened) == f"http://127.0.0.1:{port}/trace/{scenario.ids['turn1']}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_llmtrace_ui_serves_until_stopped(scenario):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmtrace", "ui", "--db", scenario.url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"llmtrace ui: http://127.0.0.1:{port}/") and "Ctrl-C stops" in line
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health = json.load(r)
                break
            except OSError:
                time.sleep(0.05)
        assert health["db"] == llmtrace.Store(scenario.url).url
    finally:
        proc.terminate()
        assert proc.wait(10) is not None
