"""Issue 17 item 8: schema creation and migration under concurrency, and a schema from the future.

Several processes open the same fresh database at the same instant (each a fresh file, or a
fresh PostgreSQL database made for the round and dropped after). None may see an error, and the
database ends with one schema: each migration recorded once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

import llmtrace

from .faultkit import Child, create_database, drop_database

PROCESSES = 4
ROUNDS = {"sqlite": 3, "postgresql": 2}  # warm racers collide in nearly every round (3 of 4 fail, typically)


@pytest.fixture(scope="module")
def racers():
    """Processes started once (imports take seconds on a busy machine), raced round after round."""
    started = [Child("race") for _ in range(PROCESSES)]
    try:
        for racer in started:
            racer.expect("ready", timeout=60)
        yield started
    finally:
        for racer in started:
            racer.close()


def _race(racers, url: str) -> list[dict]:
    """One round: every racer opens ``url`` at the same instant; their reports, with their trace ids."""
    start_at = time.time() + 0.4
    tags = [f"race-{uuid.uuid4().hex[:8]}-{i}" for i in range(len(racers))]
    for racer, tag in zip(racers, tags, strict=True):
        racer.say(json.dumps({"url": url, "start_at": start_at, "trace_id": tag}))
    return [dict(racer.expect("done", timeout=60), trace_id=tag) for racer, tag in zip(racers, tags, strict=True)]


def _migrations(url: str) -> dict[int, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT version, COUNT(*) FROM llmtrace_migrations GROUP BY version")).all())
    finally:
        engine.dispose()


def _trace_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT trace_id FROM llmtrace_traces")).scalars())
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_opening_a_fresh_database_at_once_all_succeed_with_one_schema(backend, racers, tmp_path, request):
    failures = []
    for round_ in range(ROUNDS[backend]):
        if backend == "sqlite":
            url, cleanup = f"sqlite:///{tmp_path / f'race-{round_}.db'}", None
        else:
            server = request.getfixturevalue("pg_url")
            name = f"test_h3_race_{os.getpid()}_{round_}"
            url, cleanup = create_database(server, name), (server, name)
        try:
            results = _race(racers, url)
            for r in results:
                h = r["health"]
                if r["errors"] or r["flushed"] is not True or h["write_errors"] or h["failed"]:
                    failures.append((round_, r["errors"], h["last_error"], h["write_errors"]))
            versions = _migrations(url)
            assert versions and set(versions.values()) == {1}, versions  # each migration recorded once
            assert {r["version"] for r in results} == {max(versions)}
            assert _trace_ids(url) == {r["trace_id"] for r in results}
        finally:
            if cleanup:
                drop_database(*cleanup)
    assert all("Traceback" not in racer.stderr for racer in racers)
    assert failures == []


def test_a_database_newer_than_the_code_is_refused_with_a_clear_error(sqlite_url):
    with llmtrace.Tracer(sqlite_url) as t:
        known = t.schema_version()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO llmtrace_migrations (version, name, applied_at) VALUES (:v, 'from a newer llmtrace', :t)"),
                     {"v": known + 1, "t": datetime(2030, 1, 1)})

    errors: list[Exception] = []
    try:
        tracer = llmtrace.Tracer(sqlite_url, flush_interval_seconds=60)
    except llmtrace.LLMTraceError as exc:
        errors.append(exc)
    else:
        with tracer.trace(name="must not be written"):
            pass
        flushed = tracer.flush(timeout=5)
        try:
            tracer.schema_version()
        except llmtrace.LLMTraceError as exc:
            errors.append(exc)
        tracer.close(timeout=1)
        assert flushed is False
    assert errors, "opened and used a database whose schema is newer than this llmtrace"
    message = str(errors[0])
    assert str(known + 1) in message and re.search("newer|upgrade", message, re.I), message
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM llmtrace_traces")).scalar() == 0  # nothing written into it
    engine.dispose()


# -- a database made by the previous schema version (tests/fixtures/make_schema_v4_db.py) ----------

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "llmtrace-schema-v4.db"


def _old_copy(tmp_path) -> str:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    return f"sqlite:///{path}"


def _shape(url: str) -> dict:
    engine = sa.create_engine(url)
    try:
        insp = sa.inspect(engine)
        return {name: ({c["name"] for c in insp.get_columns(name)}, {i["name"] for i in insp.get_indexes(name)})
                for name in insp.get_table_names()}
    finally:
        engine.dispose()


def test_a_database_made_by_the_previous_schema_version_is_migrated_and_read(tmp_path):
    url = _old_copy(tmp_path)
    assert _migrations(url) == {1: 1, 2: 1, 3: 1, 4: 1}  # (what llmtrace at schema version 4 wrote)
    with llmtrace.Tracer(url, hash_key="fixture-hash-key") as tracer:
        doc = tracer.get_trace("v4-chain").to_dict()  # recorded by the old code, read by today's
        with tracer.trace(name="after the migration", trace_id="v5-scope", feature="refunds"):
            pass
        assert tracer.flush(10)
        assert tracer.schema_version() == max(_migrations(url))
        new = tracer.get_trace("v5-scope").to_dict()
    [call] = doc["llm_calls"]
    assert call["raw_completion"] == "Refunds take 5 days (policy R-7)." and doc["feature"] == "refunds"
    assert call["tokens"]["input_cache_write"] is None  # a column the old schema did not have: not observed
    assert [(f["action"], f["correction"]) for f in doc["feedback"]] == [("edited", "Refunds take 5 business days.")]
    assert [(v["rule"], v["passed"]) for v in doc["validations"]] == [("cites-a-policy", True)]
    assert (new["name"], new["feature"]) == ("after the migration", "refunds")
    assert set(_migrations(url).values()) == {1}
    blank = f"sqlite:///{tmp_path / 'blank.db'}"
    with llmtrace.Tracer(blank) as t:
        t.schema_version()
    assert _shape(url) == _shape(blank)  # the old database migrated to exactly what a blank one gets


def test_llmtrace_db_migrate_upgrades_the_previous_schema_version(tmp_path):
    url = _old_copy(tmp_path)
    before = _shape(url)
    # a reader never changes a database: it says how to upgrade it, and leaves it as it was
    with pytest.raises(llmtrace.StoreError, match=r"older than this llmtrace .*llmtrace db migrate"):
        llmtrace.Store(url).find_traces()
    ls = subprocess.run([sys.executable, "-m", "llmtrace", "ls", "--db", url], capture_output=True, text=True, timeout=60)
    assert ls.returncode == 1 and "llmtrace db migrate" in ls.stderr and "Traceback" not in ls.stderr
    assert _shape(url) == before
    out = subprocess.run([sys.executable, "-m", "llmtrace", "db", "migrate", "--db", url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    latest = max(_migrations(url))
    assert f"schema version {latest}" in out.stdout and latest > 4
    assert llmtrace.Store(url).get_trace("v4-chain").to_dict()["feature"] == "refunds"  # readable once migrated


def test_a_migration_that_cannot_run_loses_nothing(tmp_path, sqlite_lock):
    """The old database is locked by another process when the tracer first writes: the migration
    cannot take its lock. The records wait (flush says False), are spilled at close, and the next
    tracer on the same database, once it is free, migrates it and writes them."""
    url = _old_copy(tmp_path)
    lock = sqlite_lock(sa.engine.make_url(url).database, seconds=30)
    tracer = llmtrace.Tracer(url, flush_interval_seconds=60)
    with tracer.trace(name="while locked", trace_id="during-lock"):
        pass
    tracer.record_feedback("during-lock", "accepted")
    assert tracer.flush(1) is False
    assert "StoreError" in tracer.health()["last_error"]
    tracer.close(timeout=0)
    assert tracer.health()["spilled"] == tracer.health()["unwritten"] > 0
    assert _migrations(url) == {1: 1, 2: 1, 3: 1, 4: 1}  # untouched: nothing half-done
    lock.release()
    with llmtrace.Tracer(url) as later:  # same URL, same working directory: it finds the spill file
        deadline = time.monotonic() + 10
        while not later.flush(1) and time.monotonic() < deadline:
            pass
        doc = later.get_trace("during-lock").to_dict()
        assert later.health()["replayed"] > 0
    assert doc["name"] == "while locked" and [f["action"] for f in doc["feedback"]] == ["accepted"]
    assert set(_migrations(url).values()) == {1} and max(_migrations(url)) > 4
