"""Retention: purge deletes expired content in batches, keeps metadata, and the record says why."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
from conftest import raw_engine
from fakes import ScriptedChatModel, answer, simple_chain

import llmtrace
from llmtrace.store import schema as S


def record(tracer, n: int) -> list[str]:
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(tracer)
    ids = []
    for i in range(n):
        simple_chain(ScriptedChatModel(script=[answer(f"answer {i}")])).invoke({"question": "q"}, config={"callbacks": [h]})
        ids.append(h.last_trace_id)
        tracer.flush()  # one content row per trace
    return ids


def test_purge_older_than_in_batches(tracer):
    ids = record(tracer, 5)
    assert tracer.purge(older_than="7d", dry_run=True)["content_rows"] == 0
    import time

    time.sleep(1.1)
    before = tracer.purge(older_than="1s", dry_run=True)
    assert before["content_rows"] >= 5 and before["dry_run"] == 1
    result = tracer.purge(older_than="1s", batch_size=2)
    assert result["content_rows"] == before["content_rows"] and result["traces"] >= 5
    doc = tracer.get_trace(ids[0]).to_dict()
    call = doc["llm_calls"][0]
    assert call["raw_completion"] is None and call["content_missing"] == "purged"
    assert call["tokens"]["output"] == 30 and call["latency_ms"]["total"] > 0  # metadata stays
    assert tracer.purge(older_than="1s")["content_rows"] == 0


def test_purge_removes_expired_content_only(sqlite_url):
    with llmtrace.Tracer(sqlite_url, content_ttl_days=1e-9) as short:
        old = record(short, 2)
    with llmtrace.Tracer(sqlite_url) as tracer:
        kept = record(tracer, 1)
        assert tracer.get_trace(old[0]).to_dict()["llm_calls"][0]["content_missing"] == "expired"
        assert tracer.purge()["content_rows"] == 2
        assert tracer.get_trace(old[0]).to_dict()["llm_calls"][0]["content_missing"] == "purged"
        assert tracer.get_trace(kept[0]).to_dict()["llm_calls"][0]["raw_completion"] == "answer 0"


@pytest.mark.parametrize("bad", ["soon", "-3d", 0])
def test_bad_age_is_a_clear_error(sqlite_tracer, bad):
    with pytest.raises(llmtrace.ConfigError, match="age"):
        sqlite_tracer.purge(older_than=bad)


def test_purge_cli(sqlite_url):
    with llmtrace.Tracer(sqlite_url, content_ttl_days=1e-9) as t:
        record(t, 2)
    run = [sys.executable, "-m", "llmtrace", "purge", "--db", sqlite_url]
    dry = subprocess.run([*run, "--dry-run", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(dry.stdout) == {"content_rows": 2, "traces": 2, "dry_run": 1}
    done = subprocess.run(run, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "deleted 2 content row(s) of 2 trace(s); metadata kept"


def test_old_database_migrates_to_the_same_columns(tmp_path):
    blank = f"sqlite:///{tmp_path / 'blank.db'}"
    old = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(old)
    with engine.begin() as conn:  # a version-1 database: no purge column, no expiry index
        S.METADATA.create_all(conn)
        conn.execute(sa.text("DROP INDEX ix_llmtrace_contents_expires_at"))
        conn.execute(sa.text("ALTER TABLE llmtrace_traces DROP COLUMN content_purged_at"))
        conn.execute(S.migrations.insert(), {"version": 1, "name": "initial tables"})
    engine.dispose()

    def shape(url):
        with llmtrace.Tracer(url) as t:
            assert t.schema_version() == S.SCHEMA_VERSION
            insp = sa.inspect(raw_engine(t.url))
            return {name: ({c["name"] for c in insp.get_columns(name)}, {i["name"] for i in insp.get_indexes(name)})
                    for name in insp.get_table_names()}

    assert shape(old) == shape(blank)


def test_mechanism_writer_purges_periodically_when_asked(sqlite_url, monkeypatch):
    import time

    from llmtrace.capture import writer as _writer

    monkeypatch.setattr(_writer, "_SWEEP_EVERY_S", 0.05)
    with llmtrace.Tracer(sqlite_url, content_ttl_days=1e-9, purge_interval_seconds=0.1,
                         flush_interval_seconds=0.05) as t:
        [tid] = record(t, 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if t.get_trace(tid).to_dict()["llm_calls"][0]["content_missing"] == "purged":
                break
            time.sleep(0.1)
        assert t.get_trace(tid).to_dict()["llm_calls"][0]["content_missing"] == "purged"


def test_production_needs_a_hash_key(sqlite_url, monkeypatch):
    monkeypatch.delenv("LLMTRACE_HASH_KEY", raising=False)
    with pytest.raises(llmtrace.ConfigError, match="LLMTRACE_HASH_KEY"):
        llmtrace.Tracer(sqlite_url, environment="production")
    monkeypatch.setenv("LLMTRACE_HASH_KEY", "a" * 64)
    llmtrace.Tracer(sqlite_url, environment="production").close()


# -- labels a user gave live on their own retention (issue 17 item 15) --------------------------------

def record_corrected(tracer, correction: str = "You have 12 days.") -> str:
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(tracer)
    simple_chain(ScriptedChatModel(script=[answer("You have 30 days.")])).invoke({"question": "q"}, config={"callbacks": [h]})
    tracer.record_feedback(h.last_trace_id, "edited", correction=correction, comment="too long")
    tracer.flush()
    return h.last_trace_id


def feedback_of(tracer, tid: str) -> list[tuple]:
    return [(f["correction"], f["comment"]) for f in tracer.get_trace(tid).to_dict()["feedback"]]


def content_rows(tracer, trace_id: str) -> list[tuple]:
    """(kind, expires_at, body) of a trace's content rows (a server database holds other tests' rows too)."""
    c = S.contents
    with raw_engine(tracer.url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(c.c.kind, c.c.expires_at, c.c.body).where(c.c.trace_id == trace_id))]


def test_labels_are_a_row_of_their_own_kept_by_default(tracer):
    """On every database: the correction is not in the prompt's row, and its row does not expire."""
    tid = record_corrected(tracer)
    rows = content_rows(tracer, tid)
    labels = [r for r in rows if r[0] == "labels"]
    assert len(labels) == 1 and labels[0][1] is None and '"fb:' in labels[0][2] and "12 days" in labels[0][2]
    assert all('"fb:' not in body and "12 days" not in body for kind, _exp, body in rows if kind is None)
    assert all(exp is not None for kind, exp, _body in rows if kind is None)  # (content: 30 days)
    assert tracer.purge(older_than=1e-9)["content_rows"] >= 1
    assert feedback_of(tracer, tid) == [("You have 12 days.", "too long")]
    assert [r[0] for r in content_rows(tracer, tid)] == ["labels"]


def test_purge_with_labels_deletes_them_too(sqlite_tracer):
    tid = record_corrected(sqlite_tracer)
    assert sqlite_tracer.purge(older_than=1e-9)["content_rows"] >= 1
    assert feedback_of(sqlite_tracer, tid) == [("You have 12 days.", "too long")]

    assert sqlite_tracer.purge(older_than=1e-9, labels=True)["content_rows"] == 1
    assert feedback_of(sqlite_tracer, tid) == [(None, None)]  # the action stays, the words are gone
    assert content_rows(sqlite_tracer, tid) == []


def test_a_label_never_shares_text_with_the_prompt(sqlite_tracer):
    """A long correction equal to text the trace stored already is stored whole, not as a reference
    into content that expires before it."""
    long_answer = "You have thirty days to return an order, counted from the day it was delivered to you. " * 3
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    simple_chain(ScriptedChatModel(script=[answer(long_answer)])).invoke({"question": "q"}, config={"callbacks": [h]})
    sqlite_tracer.record_feedback(h.last_trace_id, "edited", correction=long_answer)
    sqlite_tracer.flush()
    sqlite_tracer.purge(older_than=1e-9)
    assert feedback_of(sqlite_tracer, h.last_trace_id) == [(long_answer, None)]


def test_rows_written_before_labels_had_rows_of_their_own_keep_them_through_a_purge(sqlite_url):
    """A store from before schema 7 holds the correction in the trace's content row: purge moves the
    labels to a row of their own before it deletes the rest."""
    with llmtrace.Tracer(sqlite_url, audit=True) as tracer:
        tid = record_corrected(tracer)
        engine = raw_engine(tracer.url)
        with engine.begin() as conn:  # make it look old: one mixed row, as schema 6 wrote it
            rows = conn.execute(sa.select(S.contents)).all()
            owners = {}
            for r in rows:
                owners.update(json.loads(r.body))
            conn.execute(S.contents.delete())
            conn.execute(S.contents.insert(), {"id": "old-row", "trace_id": tid, "body": json.dumps(owners), "kind": None,
                                               "created_at": rows[0].created_at, "expires_at": rows[0].expires_at})
        assert feedback_of(tracer, tid) == [("You have 12 days.", "too long")]
        assert tracer.purge(older_than=1e-9) == {"content_rows": 1, "traces": 1, "dry_run": 0}
        assert feedback_of(tracer, tid) == [("You have 12 days.", "too long")]
        doc = tracer.get_trace(tid).to_dict()
        assert doc["llm_calls"][0]["raw_completion"] is None
        [(kind, expires, body)] = content_rows(tracer, tid)
        assert kind == "labels" and expires is None and list(json.loads(body)) == [o for o in owners if o.startswith("fb:")]


def test_purge_cli_labels_flag(sqlite_url):
    with llmtrace.Tracer(sqlite_url) as t:
        record_corrected(t)
    run = [sys.executable, "-m", "llmtrace", "purge", "--db", sqlite_url, "--older-than", "0.000001", "--json"]
    first = subprocess.run(run, capture_output=True, text=True, check=True)
    assert json.loads(first.stdout)["content_rows"] == 1  # the prompt's row; the labels stay
    second = subprocess.run([*run, "--labels"], capture_output=True, text=True, check=True)
    assert json.loads(second.stdout)["content_rows"] == 1  # now the labels
    bad = subprocess.run([*run[:-1], "--batch-size", "0"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("llmtrace: error: batch_size")
