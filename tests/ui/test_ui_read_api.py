"""The read API the UI stands on (``llmtrace.Store``): pages of traces on every database, sessions,
compare, and every bad argument an llmtrace error that says what to pass (issue 17 item 16)."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

import llmtrace


def names(analysis, rows) -> list[str]:
    back = {v: k for k, v in analysis.ids.items()}
    return [back[r["trace_id"]] for r in rows]


def test_pages_of_traces_on_every_database(analysis):
    """Keyset pages of 2 through the six fixture traces: in order, none twice, counted."""
    store = llmtrace.Store(analysis.url)
    seen, cursor, totals = [], None, set()
    while True:
        page = store.list_traces(limit=2, cursor=cursor, environment=analysis.env)
        seen += names(analysis, page.traces)
        totals.add((page.total, page.total_capped))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["T6", "T5", "T4", "T3", "T2", "T1"] and totals == {(6, False)}
    assert names(analysis, store.find_traces(environment=analysis.env, order="oldest", limit=3)) == ["T1", "T2", "T3"]
    assert names(analysis, store.find_traces(environment=analysis.env, session_id=f"{analysis.env}-s2")) == ["T5", "T4"]
    assert names(analysis, store.find_traces(environment=analysis.env, action="rated")) == ["T3"]  # rated 4
    session = store.session(f"{analysis.env}-s1")
    assert [t["trace_id"] for t in session["turns"] if t["environment"] == analysis.env] == [
        analysis.ids["T1"], analysis.ids["T2"], analysis.ids["T3"]]
    store.close()


def test_list_traces_counts_up_to_a_cap_when_a_filter_needs_a_lookup(scenario):
    store = llmtrace.Store(scenario.url)
    from llmtrace.read.find import list_traces

    page = list_traces(store._db, store.prices, limit=1, count_cap=2, feature="refunds")
    assert (page.total, page.total_capped) == (2, True) and page.next_cursor is not None
    assert store.list_traces(limit=1, feature="refunds").total == 4
    assert store.list_traces(text="kettle").total is None  # text search: not counted
    store.close()


def test_compare_and_turns(scenario):
    store = llmtrace.Store(scenario.url)
    cmp = store.compare(scenario.ids["turn1"], scenario.ids["turn2"])
    trace = {r["field"]: r for r in cmp["sections"][0]["rows"]}
    assert trace["prompt version"]["a"] == "refunds-v6" and trace["prompt version"]["b"] == "refunds-v7"
    assert not trace["prompt version"]["same"] and trace["name"]["same"]
    assert [s["title"] for s in cmp["sections"]] == ["trace", "LLM call 1", "LLM call 2"]
    second = {r["field"]: r for r in cmp["sections"][2]["rows"]}
    assert second["model asked"]["a"] is None and second["model asked"]["b"] == "gpt-4o"  # turn1 has one call
    turns = store.session("sess-ana")["turns"]
    assert [t["question"] for t in turns] == ["Context:\nRefunds are accepted within 30 days of delivery.\nOpened "
                                              "electronics carry a 15% restocking fee.\nGift cards are never "
                                              "refundable.\n\nQ: Can I return my kettle?", "Refund for order A-1001?",
                                              "Context:\nRefunds are accepted within 30 days of delivery.\nOpened "
                                              "electronics carry a 15% restocking fee.\nGift cards are never "
                                              "refundable.\n\nQ: And the toaster?"]
    assert turns[0]["answer"] == {"eligible": True, "days_left": 12, "citations": ["pol-7#2"]}
    assert turns[2]["parse_error"] and turns[2]["answer"] == "Sure! Here you go: {eligible: yes}"
    store.close()


BAD_CALLS = [  # (method, kwargs, what the message must say)
    ("find_traces", {"limit": "x"}, "limit must be a whole number of traces from 1 to 10,000, not 'x'"),
    ("find_traces", {"limit": True}, "limit must be a whole number"),
    ("find_traces", {"limit": 2.5}, "limit must be a whole number"),
    ("find_traces", {"since": "yesterday-ish"}, "since is an age like '7d'"),
    ("find_traces", {"until": [1]}, "until is an age like '7d'"),
    ("find_traces", {"min_cost": "lots"}, "min_cost must be a number of USD (0 or more), not 'lots'"),
    ("find_traces", {"min_latency_ms": float("nan")}, "min_latency_ms must be a number of milliseconds"),
    ("find_traces", {"feature": 5}, "feature must be a feature name (a str), not 5"),
    ("find_traces", {"validation_failed": "yes"}, "validation_failed must be True or False"),
    ("find_traces", {"status": "broken"}, "status is one of ('ok', 'error')"),
    ("find_traces", {"action": "liked"}, "a user's action is one of ('accepted', 'edited', 'retried', 'abandoned', "
                                         "'rated') or a custom action recorded in this store"),
    ("find_traces", {"text": "  "}, "text search needs some words"),
    ("find_traces", {"colour": "red"}, "unknown filter(s) ['colour']; filters are feature, team"),
    ("find_traces", {"order": "sideways"}, "order is one of ('newest', 'oldest')"),
    ("find_traces", {"user": ["a"]}, "user must be a user id"),
    ("list_traces", {"cursor": "page-2"}, "cursor must be the next_cursor of a page of traces"),
    ("stats", {"by": "nope"}, "cannot group by ['nope']; choose from model, version"),
    ("stats", {"by": 5}, "by is a dimension name or several"),
    ("stats", {"since": "yesterday-ish"}, "since is an age like '7d'"),
    ("stats", {"feature": 3}, "feature must be a str"),
    ("stats", {"colour": "red"}, "unknown filter(s) ['colour']"),
    ("alerts", {"since": "yesterday-ish"}, "since is an age like '7d'"),
    ("alerts", {"warmup": "a while"}, "an age is like '7d', '12h', '30m' or a number of days; not 'a while'"),
    ("alerts", {"rules": "strict"}, "rules must be an llmtrace.AlertRules(...)"),
    ("alerts", {"model": 4}, "model must be a str"),
    ("get_trace", {"trace_id": None}, "trace_id must be a non-empty string"),
    ("get_trace", {"trace_id": "x" * 200}, "trace_id is at most 128 characters"),
    ("session", {"session_id": None}, "session_id must be a non-empty str"),
    ("export_eval_set", {"path": "/tmp/never.jsonl", "since": "soon"}, "since is an age like '7d'"),
]


@pytest.mark.parametrize(("method", "kwargs", "says"), BAD_CALLS, ids=[f"{m}-{next(iter(k))}" for m, k, _ in BAD_CALLS])
def test_every_bad_argument_says_what_to_pass(scenario, method, kwargs, says):
    store = llmtrace.Store(scenario.url)
    with pytest.raises(llmtrace.LLMTraceError) as raised:
        getattr(store, method)(**kwargs)
    assert says in str(raised.value)
    store.close()


def test_the_tracer_read_methods_say_it_too(scenario):
    with llmtrace.Tracer(scenario.url) as t:
        with pytest.raises(llmtrace.ConfigError, match="limit must be a whole number"):
            t.find_traces(limit="x")
        with pytest.raises(llmtrace.ConfigError, match="cannot group by"):
            t.stats(by="nope")
        with pytest.raises(llmtrace.ConfigError, match="since is an age like"):
            t.alerts(since="yesterday-ish")


def _postgres() -> str:
    url = os.environ.get("LLMTRACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL not reachable at {url}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {url}")
    return url


def test_ui_under_the_metadata_only_reader_role():
    """db harden's reader may not read the content table: the pages show every count, time and id,
    each content field 'not readable', and no forms; text search says why it cannot run. (In a
    schema of its own, dropped afterwards: harden's triggers forbid deleting rows.)"""
    from fakes import ScriptedChatModel, answer, simple_chain
    from starlette.testclient import TestClient

    from llmtrace.store.engine import Database
    from llmtrace.store.harden import harden
    from llmtrace.ui import create_app
    from llmtrace_langchain import LLMTraceCallbackHandler

    base = _postgres()
    schema, role, login = f"ui_{uuid.uuid4().hex[:8]}", "llmtrace_ui_reader", "llmtrace_ui_login"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        conn.execute(sa.text(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') THEN "
                             f"CREATE ROLE {login} LOGIN; END IF; END $$"))
    in_schema = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    url = in_schema.render_as_string(hide_password=False)
    reader_url = in_schema.set(username=login).render_as_string(hide_password=False)
    try:
        tid = f"ui-{uuid.uuid4()}"
        with llmtrace.Tracer(url, flush_interval_seconds=0.05) as t:
            simple_chain(ScriptedChatModel(script=[answer("Refunds take 5 days.")])).invoke(
                {"question": "how long?"},
                config={"callbacks": [LLMTraceCallbackHandler(t)], "metadata": {"llmtrace_trace_id": tid}})
        db = Database(url)
        harden(db, role)
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"GRANT {role} TO {login}"))
        store = llmtrace.Store(reader_url)
        assert store.content_readable() is False
        doc = store.get_trace(tid).to_dict()
        call = doc["llm_calls"][0]
        assert call["content_missing"] == "not_readable" and call["raw_completion"] is None
        assert call["tokens"]["input"] == 120 and doc["status"] == "ok"  # the metadata is all there
        with pytest.raises(llmtrace.StoreError, match="text search reads the content table"):
            store.find_traces(text="refunds")
        store.close()
        with TestClient(create_app(reader_url), base_url="http://127.0.0.1") as c:
            r = c.get(f"/trace/{tid}")
            assert r.status_code == 200
            assert "not readable (this database role may not read content)" in r.text
            assert 'data-missing="not_readable"' in r.text and "feedback-form" not in r.text
            assert "may not record feedback" in r.text
            assert tid in c.get("/").text
            search = c.get("/?q=refunds")
            assert search.status_code == 400 and "text search reads the content table" in search.text
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_several_groupings_in_one_read_give_what_each_gives_alone(scenario):
    store = llmtrace.Store(scenario.url)
    views = ["feature", "hour", "prompt-version", None, "feature,prompt-version", "model,day"]
    assert store.stats_views(views, since="30d") == [store.stats(v, since="30d") for v in views]
    store.close()
