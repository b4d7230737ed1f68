"""The user-id hash key is out of a reader's reach (issue 17 item 13), on the real PostgreSQL.

User ids are stored as a keyed hash so that whoever reads the tables cannot tell who a user is.
Whoever can read the key as well can hash guessed ids ("u-17", an email, a phone number) and
compare: the role ``llmtrace db harden`` creates for dashboards and analysts must not reach it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
import sqlalchemy as sa
from fakes import ScriptedChatModel, answer, simple_chain
from leak_app import cli

import llmtrace

PG_URL = os.environ.get("LLMTRACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCHEMA = "llmtrace_leaks_hash_key"
ROLE = "llmtrace_reader_leaks"  # roles are cluster-wide: a name no other test uses
GUESSED_USER = "jane.doe@example.com"


@pytest.fixture
def pg_url():
    """A schema of its own in the PostgreSQL test database, and no reader role left behind."""
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL is not reachable at {PG_URL}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    yield PG_URL + ("&" if "?" in PG_URL else "?") + f"options=-csearch_path%3D{SCHEMA}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ROLE}).scalar():
            conn.execute(sa.text(f"DROP OWNED BY {ROLE}"))
            conn.execute(sa.text(f"DROP ROLE {ROLE}"))
    engine.dispose()


def user_hash(user_id: str, key: str) -> str:
    """What an attacker computes for a guessed id, given the key (the project's code is public)."""
    return "u_" + hmac.new(key.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:24]


def every_string(conn: sa.Connection, tables: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for table in tables:
        try:
            with conn.begin_nested():
                rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).all()
        except sa.exc.ProgrammingError:  # permission denied: out of reach
            out[table] = []
            continue
        out[table] = [v for r in rows for v in r if isinstance(v, str)]
    return out


def test_the_reader_role_cannot_read_the_user_hash_key(pg_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(pg_url, flush_interval_seconds=0.05) as tracer:
        h = LLMTraceCallbackHandler(tracer)
        simple_chain(ScriptedChatModel(script=[answer("ok")])).invoke(
            {"question": "refund?"}, config={"callbacks": [h], "metadata": {"llmtrace_user_id": GUESSED_USER}})
        stored_hash = tracer.get_trace(h.last_trace_id).to_dict()["user_id"]
    assert stored_hash.startswith("u_") and GUESSED_USER not in stored_hash
    code, out, err = cli("db", "harden", "--db", pg_url, "--reader-role", ROLE)
    assert code == 0, err

    engine = sa.create_engine(pg_url)
    try:
        tables = sa.inspect(engine).get_table_names()
        with engine.connect() as conn:  # the owner: find where the key is kept, wherever that is
            keys = {v for values in every_string(conn, tables).values() for v in values
                    if user_hash(GUESSED_USER, v) == stored_hash}
        with engine.connect() as conn:
            conn.execute(sa.text(f"SET ROLE {ROLE}"))
            # the reader role works: it reads the metadata it is for ...
            assert conn.execute(sa.text("SELECT user_hash FROM llmtrace_traces")).scalar() == stored_hash
            readable = every_string(conn, tables)
            assert readable["llmtrace_contents"] == []  # (denied: the scan respects what the role may read)
            conn.execute(sa.text("RESET ROLE"))
    finally:
        engine.dispose()
    # ... but nothing that lets it test a guessed id against the hashes
    within_reach = sorted(t for t, values in readable.items() for v in values if v in keys)
    assert not within_reach, (f"the reader role reads the hash key in {within_reach}: hashing the guess "
                              f"{GUESSED_USER!r} with it gives {stored_hash}, the stored user_id")
