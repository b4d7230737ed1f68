"""The audit chain: every written row chained; edits, deletions, out-of-band inserts, content
edits and chain alterations are each detected; a purge followed by verify passes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa
from conftest import SERVER_URLS, _server, raw_engine
from fakes import REFUND_JSON, ScriptedChatModel, answer, rag_chain, tool_call
from test_langchain_tools import hand_loop, lookup_order

import llmtrace
from llmtrace.store import schema as S


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def fresh_url(request, tmp_path):
    """A database of its own: verify reads every row, so no other test's rows may be there."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    _server(request.param)  # skips (or fails under CI) when the server is not reachable
    base = SERVER_URLS[request.param]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        if request.param == "postgresql":
            conn.execute(sa.text("DROP SCHEMA IF EXISTS llmtrace_audit_t CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA llmtrace_audit_t"))
            url = base + "?options=-csearch_path%3Dllmtrace_audit_t"
        else:
            conn.execute(sa.text("DROP DATABASE IF EXISTS llmtrace_audit_t"))
            conn.execute(sa.text("CREATE DATABASE llmtrace_audit_t"))
            url = base.rsplit("/", 1)[0] + "/llmtrace_audit_t"
    engine.dispose()
    return url


def record(tracer) -> list[str]:
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(tracer)
    ids = []
    rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke("q", config={"callbacks": [h]})
    ids.append(h.last_trace_id)
    model = ScriptedChatModel(script=[answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "c1")]),
                                      answer("done")])
    hand_loop(model, [lookup_order]).invoke("refund A-1?", config={"callbacks": [h]})
    ids.append(h.last_trace_id)
    tracer.record_feedback(ids[0], "edited", correction="fixed")
    tracer.record_validation(ids[1], rule="amount_ok", passed=True, detail="fine")
    tracer.flush()
    return ids


def tamper(tracer, sql: str, **params) -> None:
    with raw_engine(tracer.url).begin() as conn:
        conn.execute(sa.text(sql), params)


def test_untouched_chain_verifies(fresh_url):
    with llmtrace.Tracer(fresh_url, audit=True) as t:
        record(t)
        report = t.verify_audit()
    assert report.ok, report.problems
    assert report.entries >= 1 and report.rows >= 15


@pytest.mark.parametrize("case, sql, expect", [
    ("edit a row", "UPDATE llmtrace_llm_calls SET input_tokens = 1 WHERE input_tokens = 120",
     "llmtrace_llm_calls row .* was changed"),
    ("delete a row", "DELETE FROM llmtrace_feedback", "llmtrace_feedback row .* was deleted"),
    ("insert a row", "INSERT INTO llmtrace_validations (id, trace_id, rule) VALUES ('forged', 't', 'x')",
     "llmtrace_validations row forged is not in the audit trail"),
    ("edit a tool call", "UPDATE llmtrace_tool_calls SET status = 'ok2'", "llmtrace_tool_calls row .* was changed"),
    ("edit content", "UPDATE llmtrace_contents SET body = REPLACE(body, 'done', 'DONE')", "content of .* was changed"),
    ("alter the chain", "UPDATE llmtrace_audit SET entries = REPLACE(entries, 'llmtrace_spans', 'llmtrace_spanz')",
     "audit entry #\\d+ was altered"),
])
def test_tampering_is_detected(fresh_url, case, sql, expect):
    with llmtrace.Tracer(fresh_url, audit=True) as t:
        record(t)
        assert t.verify_audit().ok
        tamper(t, sql)
        report = t.verify_audit()
    assert not report.ok, case
    assert any(__import__("re").search(expect, p) for p in report.problems), report.problems


def test_cutting_the_end_of_the_chain_is_detected(sqlite_url):
    with llmtrace.Tracer(sqlite_url, audit=True) as t:
        record(t)
        record(t)
        with raw_engine(t.url).begin() as conn:
            last = conn.execute(sa.select(sa.func.max(S.audit.c.seq))).scalar()
            conn.execute(S.audit.delete().where(S.audit.c.seq == last))
        report = t.verify_audit()
    assert not report.ok and any("entries were deleted from the end" in p for p in report.problems)


def test_purge_then_verify_passes(fresh_url):
    with llmtrace.Tracer(fresh_url, audit=True, content_ttl_days=1e-9) as t:
        ids = record(t)
        assert t.purge()["content_rows"] >= 1
        report = t.verify_audit()
        assert t.get_trace(ids[0]).to_dict()["llm_calls"][0]["content_missing"] == "purged"
    assert report.ok, report.problems


def test_cli_audit_verify_exit_codes(sqlite_url):
    with llmtrace.Tracer(sqlite_url, audit=True) as t:
        record(t)
    cmd = [sys.executable, "-m", "llmtrace", "audit", "verify", "--db", sqlite_url]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("audit chain ok")
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE llmtrace_spans SET name = 'forged' WHERE kind = 'retriever'"))
    engine.dispose()
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout.startswith("audit chain BROKEN: llmtrace_spans row")


def test_two_processes_share_one_chain(sqlite_url):
    code = ("import sys; sys.path.insert(0, sys.argv[2]); import llmtrace; from test_audit import record; "
            "t = llmtrace.Tracer(sys.argv[1], audit=True); [record(t) for _ in range(3)]; t.close()")
    here = str(__import__("pathlib").Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", code, sqlite_url, here]) for _ in range(2)]
    with llmtrace.Tracer(sqlite_url, audit=True) as t:
        for _ in range(3):
            record(t)
        assert all(p.wait(120) == 0 for p in procs)
        report = t.verify_audit()
    assert report.ok, report.problems
    assert report.rows >= 9 * 15


@pytest.fixture
def pg_fresh_url(tmp_path):
    _server("postgresql")
    base = SERVER_URLS["postgresql"]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS llmtrace_harden_t CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA llmtrace_harden_t"))
    engine.dispose()
    return base + "?options=-csearch_path%3Dllmtrace_harden_t"


def _harden(url: str, role: str) -> None:
    """``llmtrace db harden`` as a user runs it."""
    from llmtrace.cli import main

    assert main(["db", "harden", "--db", url, "--reader-role", role]) == 0


def test_db_harden_on_postgresql(pg_fresh_url):
    with llmtrace.Tracer(pg_fresh_url, audit=True, content_ttl_days=1e-9) as t:
        record(t)
        _harden(t.url, "llmtrace_reader_t")
        _harden(t.url, "llmtrace_reader_t")  # idempotent
        for sql in ("DELETE FROM llmtrace_audit", "UPDATE llmtrace_audit SET kind = 'x'", "DELETE FROM llmtrace_spans",
                    "DELETE FROM llmtrace_contents"):
            with pytest.raises(sa.exc.DBAPIError, match="not allowed|only by llmtrace purge"):
                tamper(t, sql)
        assert t.purge()["content_rows"] >= 1  # the one way content may go
        record(t)  # the writer still works on a hardened store
        assert t.verify_audit().ok
        with raw_engine(t.url).begin() as conn:
            conn.execute(sa.text("SET LOCAL ROLE llmtrace_reader_t"))
            assert conn.execute(sa.text("SELECT count(*) FROM llmtrace_llm_calls")).scalar() >= 3
        with raw_engine(t.url).begin() as conn:
            conn.execute(sa.text("SET LOCAL ROLE llmtrace_reader_t"))
            with pytest.raises(sa.exc.DBAPIError, match="permission denied"):
                conn.execute(sa.text("SELECT body FROM llmtrace_contents"))


def test_db_harden_elsewhere_is_a_clear_error(sqlite_url):
    out = subprocess.run([sys.executable, "-m", "llmtrace", "db", "harden", "--db", sqlite_url],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "db harden is for PostgreSQL" in out.stderr


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmtrace", *args], capture_output=True, text=True)


def test_a_deleted_content_row_a_purge_and_an_anchor(fresh_url):
    """On every database: content deleted out of band is caught, content purged is not; the head kept
    outside catches a chain cut back to before it."""
    with llmtrace.Tracer(fresh_url, audit=True) as t:
        record(t)
        anchor = cli("audit", "head", "--db", fresh_url).stdout.strip()
        assert t.verify_audit().ok
        seq = int(anchor.split(":")[0])
        ok = cli("audit", "verify", "--db", fresh_url, "--anchor", anchor)
        assert ok.returncode == 0 and f"anchor {seq} holds" in ok.stdout, ok.stdout + ok.stderr
        with raw_engine(t.url).connect() as conn:
            victim = conn.execute(sa.select(S.contents.c.id).order_by(S.contents.c.id).limit(1)).scalar()
        tamper(t, "DELETE FROM llmtrace_contents WHERE id = :id", id=victim)
        report = t.verify_audit()
    assert not report.ok and any(f"content row {victim}" in p and "deleted out of band" in p for p in report.problems)
    # a forger who also removes the last link and rewinds the head: consistent inside, caught by the anchor
    engine = sa.create_engine(fresh_url)
    with engine.begin() as conn:
        prev = conn.execute(sa.select(S.audit.c.prev_hash).where(S.audit.c.seq == seq)).scalar()
        conn.execute(S.audit.delete().where(S.audit.c.seq == seq))
        conn.execute(S.meta.update().where(S.meta.c.key == "audit_head").values(value=f"{seq - 1}:{prev}"))
    engine.dispose()
    cut = cli("audit", "verify", "--db", fresh_url, "--anchor", anchor, "--json")
    problems = __import__("json").loads(cut.stdout)["problems"]
    assert cut.returncode == 1 and any("anchor" in p and "not in the chain" in p for p in problems), problems


def test_audit_off_is_said_not_passed(sqlite_url):
    with llmtrace.Tracer(sqlite_url) as t:
        record(t)
        report = t.verify_audit()
    assert not report.ok and not report.enabled and report.problems[0].startswith("audit is off")
    out = cli("audit", "verify", "--db", sqlite_url)
    assert out.returncode == 1 and out.stdout.startswith("audit is off for this store: ")
    assert f"its {report.problems[0].split('its ')[1].split(' ')[0]} row(s)" in out.stdout and " 0 row(s)" not in out.stdout
    head = cli("audit", "head", "--db", sqlite_url)
    assert head.returncode == 1 and head.stderr.startswith("llmtrace: error: audit is off")
    bad = cli("audit", "verify", "--db", sqlite_url, "--anchor", "not-an-anchor")
    assert bad.returncode == 1 and "anchor" in bad.stderr and "Traceback" not in bad.stderr


def test_db_harden_hides_the_user_hash_key_and_nothing_else(pg_fresh_url):
    """The reader role reads the audit head (it can verify) but not the user-id hash key; the owner
    still reads the key, so user ids hash as before."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    def user_trace(t) -> str:
        h = LLMTraceCallbackHandler(t)
        rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke(
            "q", config={"callbacks": [h], "metadata": {"llmtrace_user_id": "u-17"}})
        return t.get_trace(h.last_trace_id).to_dict()["user_id"]

    with llmtrace.Tracer(pg_fresh_url, audit=True) as t:
        before = user_trace(t)
        _harden(t.url, "llmtrace_reader_t")
    with llmtrace.Tracer(pg_fresh_url, audit=True) as t:  # a new process: it reads the key back
        assert user_trace(t) == before
        with raw_engine(t.url).begin() as conn:
            conn.execute(sa.text("SET LOCAL ROLE llmtrace_reader_t"))
            keys = set(conn.execute(sa.text("SELECT key FROM llmtrace_meta")).scalars())
        assert "audit_head" in keys and "user_hash_key" not in keys
