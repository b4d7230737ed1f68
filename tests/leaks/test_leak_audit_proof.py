"""Prove it (issue 17 item 14): ``llmtrace audit verify`` and ``tracer.verify_audit()`` against the
tampering they miss today, on a real SQLite file changed with plain SQL as an intruder would.

- a content row deleted out of band (not by purge);
- the whole chain wiped while the rows it covered are still there;
- a store recorded without audit (verify must say audit is off, not "ok");
- a chain cut back by a forger who also rewinds the head: only an anchor kept elsewhere catches it.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import sqlalchemy as sa
from fakes import REFUND_JSON, ScriptedChatModel, answer, rag_chain
from leak_app import cli

import llmtrace

AUDIT_OFF = re.compile(r"audit\b.*\b(is off|was off|not enabled|not on|disabled|never enabled)", re.IGNORECASE | re.DOTALL)


def record(tracer) -> str:
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(tracer)
    rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke("refund for order A-1?", config={"callbacks": [h]})
    tracer.record_feedback(h.last_trace_id, "edited", correction="You have 12 days left.", comment="kept it short")
    tracer.record_validation(h.last_trace_id, rule="refund_window", passed=True, detail="12 <= 30")
    assert tracer.flush(10)
    return h.last_trace_id


def sql(url: str, statement: str, **params) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def scalar(url: str, statement: str):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(statement)).scalar()
    finally:
        engine.dispose()


@pytest.fixture
def audited(sqlite_url):
    """A store recorded with audit on, verified clean."""
    with llmtrace.Tracer(sqlite_url, audit=True, flush_interval_seconds=0.05) as tracer:
        record(tracer)
        record(tracer)
        report = tracer.verify_audit()
    assert report.ok and report.entries >= 1 and report.rows >= 20, report.problems
    code, out, _ = cli("audit", "verify", "--db", sqlite_url)
    assert code == 0 and out.startswith("audit chain ok"), out
    return sqlite_url


def verify_both(url: str):
    """(tracer.verify_audit() report, CLI exit code, CLI output)."""
    with llmtrace.Tracer(url, audit=True, flush_interval_seconds=0.05) as tracer:
        report = tracer.verify_audit()
    code, out, err = cli("audit", "verify", "--db", url)
    return report, code, out + err


def test_a_deleted_content_row_is_detected(audited):
    assert scalar(audited, "SELECT count(*) FROM llmtrace_contents") >= 2
    sql(audited, "DELETE FROM llmtrace_contents WHERE id = (SELECT min(id) FROM llmtrace_contents)")
    report, code, out = verify_both(audited)
    assert not report.ok and any(re.search(r"content .*deleted", p) for p in report.problems), report.problems
    assert code == 1 and out.startswith("audit chain BROKEN"), out


def test_a_purge_is_not_taken_for_a_deletion(sqlite_url):
    """The control for the test above: content deleted by purge (a chained event) still verifies."""
    with llmtrace.Tracer(sqlite_url, audit=True, content_ttl_days=1e-9, flush_interval_seconds=0.05) as tracer:
        record(tracer)
        assert tracer.purge()["content_rows"] >= 1
        report = tracer.verify_audit()
    assert report.ok, report.problems


@pytest.mark.parametrize("wiped", [
    "the chain's entries",  # the head (in llmtrace_meta) still says how long the chain was
    "the entries and the head",
])
def test_a_wiped_chain_with_rows_present_fails(audited, wiped):
    sql(audited, "DELETE FROM llmtrace_audit")
    if wiped == "the entries and the head":
        sql(audited, "DELETE FROM llmtrace_meta WHERE key = 'audit_head'")
    assert scalar(audited, "SELECT count(*) FROM llmtrace_llm_calls") == 2
    report, code, out = verify_both(audited)
    assert not report.ok, f"verify says ok over {report.entries} entries and {report.rows} rows"
    assert code == 1 and "0 entries cover 0 rows" not in out, out


def test_verify_on_a_store_without_audit_says_audit_is_off(sqlite_url):
    with llmtrace.Tracer(sqlite_url, flush_interval_seconds=0.05) as tracer:
        record(tracer)
        try:
            report = tracer.verify_audit()
        except llmtrace.LLMTraceError as exc:
            said = str(exc)
        else:
            assert report.ok is not True, "verify_audit() reports ok on a store that has no audit chain"
            said = " ".join(report.problems)
    assert AUDIT_OFF.search(said), said
    code, out, err = cli("audit", "verify", "--db", sqlite_url)
    assert code != 0 and not out.startswith("audit chain ok") and AUDIT_OFF.search(out + err), (code, out, err)


def test_an_outside_anchor_catches_a_chain_cut_back_by_a_forger(sqlite_url):
    with llmtrace.Tracer(sqlite_url, audit=True, flush_interval_seconds=0.05) as tracer:
        tid = record(tracer)
        tracer.record_feedback(tid, "accepted")  # its own batch: the last link holds only this row
        assert tracer.flush(10)
    code, out, err = cli("audit", "head", "--db", sqlite_url)
    assert code == 0 and out.strip(), err
    anchor = out.strip().splitlines()[-1]  # what the operator stores elsewhere
    code, out, err = cli("audit", "verify", "--db", sqlite_url, "--anchor", anchor)
    assert code == 0, out + err
    # the forger removes the last row and the link that recorded it, and rewinds the head to the
    # link before: a chain that is consistent from the inside
    last = scalar(sqlite_url, "SELECT max(seq) FROM llmtrace_audit")
    entries = json.loads(scalar(sqlite_url, f"SELECT entries FROM llmtrace_audit WHERE seq = {last}"))
    assert [e[0] for e in entries] == ["llmtrace_feedback"]
    prev = scalar(sqlite_url, f"SELECT prev_hash FROM llmtrace_audit WHERE seq = {last}")
    sql(sqlite_url, "DELETE FROM llmtrace_feedback WHERE id = :id", id=entries[0][1])
    sql(sqlite_url, f"DELETE FROM llmtrace_audit WHERE seq = {last}")
    sql(sqlite_url, "UPDATE llmtrace_meta SET value = :v WHERE key = 'audit_head'", v=f"{last - 1}:{prev}")
    code, out, err = cli("audit", "verify", "--db", sqlite_url, "--anchor", anchor)
    assert code == 1 and "anchor" in (out + err).lower(), out + err
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "--anchor" in readme, "the README says what an anchor proves and what the chain alone cannot"
