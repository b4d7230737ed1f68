"""The writer's two SQLite insert paths store the same rows, and it picks the one the moment needs;
flush writes on the calling thread, gives up on time, and loses nothing it gave up on."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from conftest import raw_engine

import llmtrace
from llmtrace.capture import sink as W  # (where batches are written: write_rows is patched there)
from llmtrace.capture.backlog import Batch
from llmtrace.store import inserts as I
from llmtrace.store import schema as S
from llmtrace.store.engine import Database
from llmtrace.store.inserts import Rows


def _json_ok() -> bool:
    with sqlite3.connect(":memory:") as conn:
        try:
            return conn.execute("SELECT value->>0 FROM json_each('[[7]]')").fetchone()[0] == 7
        except sqlite3.Error:
            return False


JSON_OK = _json_ok()


@pytest.fixture(autouse=True)
def _spill_here(tmp_path, monkeypatch):
    """Records a test leaves unwritten go to its own directory, not the working directory."""
    monkeypatch.setenv("LLMTRACE_SPILL_DIR", str(tmp_path / "spill"))
NOW = 1_790_000_000_000_005_000  # 2026-09-21, 5 microseconds past the second: leading zeros matter
TEXT = 'quotes " and \\ backslash, newline\nünïcödé ✓ 🚀, {"json": [1, 2]}'


def _value(column: sa.Column, i: int):
    """A value of the column's type, varied by row: None, edge-case text, floats, bools, times."""
    if i == 2 and not column.primary_key and column.name not in ("trace_id", "id"):
        return None
    if isinstance(column.type, sa.DateTime):
        return NOW + i * 1_000_001_000 if i != 1 else datetime(2026, 1, 2, 3, 4, 5, 678901)  # ns, or a datetime
    if isinstance(column.type, sa.Boolean):
        return i % 2 == 0
    if isinstance(column.type, sa.Integer):
        return 2**53 + i if column.name != "size" else i
    if isinstance(column.type, sa.Float):
        return [0.1 + 0.2, 1e-7, 123456.789012345][i]
    return f"{column.name}-{i}-{TEXT}"[: getattr(column.type, "length", None) or 10_000]


def _rows() -> Rows:
    rows = Rows()
    for name in I.INSERT_ORDER:
        table = I.TABLES[name]
        cols = [c for c in table.columns if c.autoincrement is not True]
        getattr(rows, name).extend({c.name: _value(c, i) for c in cols} for i in range(3))
    rows.traces.extend({**{c.name: _value(c, i) for c in S.traces.columns}, "_fresh": True} for i in range(3))
    return rows


def _dump(store: Database) -> dict[str, list[tuple]]:
    out = {}
    with store.engine.connect() as conn:
        for table in (*I.TABLES.values(), S.traces):
            cols = [c.name for c in table.columns if c.autoincrement is not True]
            out[table.name] = conn.exec_driver_sql(
                f"SELECT {', '.join(cols)}, {', '.join(f'typeof({c})' for c in cols)} FROM {table.name} "
                f"ORDER BY {cols[0]}").fetchall()
    return out


@pytest.mark.skipif(not JSON_OK, reason="this SQLite has no built-in JSON (needs 3.38+)")
def test_mechanism_json_and_bound_inserts_store_identical_rows(tmp_path):
    stored = {}
    for as_json in (False, True):
        store = Database(f"sqlite:///{tmp_path / f'{as_json}.db'}")
        store.ensure_schema()
        with store.engine.begin() as conn:
            W.write_rows(conn, _rows(), unobtrusive=as_json)
        stored[as_json] = _dump(store)
        store.engine.dispose()
    assert all(len(v) == 3 for v in stored[True].values())
    assert stored[True] == stored[False]  # values and their SQLite types, times to the microsecond
    spans = stored[True][S.spans.name]
    started = [c.name for c in S.spans.columns if c.autoincrement is not True].index("started_at")
    assert spans[1][started] == "2026-01-02 03:04:05.678901"
    assert spans[0][started] == datetime.fromtimestamp(NOW // 10**9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + ".000005"


@pytest.mark.skipif(not JSON_OK, reason="this SQLite has no built-in JSON (needs 3.38+)")
def test_mechanism_rows_orjson_refuses_take_the_bound_path(tmp_path, monkeypatch):
    class Score(float):  # a float subclass (numpy's float64 is one): orjson refuses it, sqlite3 binds it
        pass

    bound = []
    real = I._sqlite_multirow
    monkeypatch.setattr(I, "_sqlite_multirow", lambda conn, sql, *a: bound.append(sql) or real(conn, sql, *a))
    store = Database(f"sqlite:///{tmp_path / 'x.db'}")
    store.ensure_schema()
    rows = _rows()
    rows.chunks[0]["score"] = Score(0.25)
    with store.engine.begin() as conn:
        W.write_rows(conn, rows, unobtrusive=True)
    assert [sql for sql in bound if "llmtrace_chunks" in sql] and not [sql for sql in bound if "llmtrace_spans" in sql]
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM llmtrace_chunks WHERE score = 0.25").scalar() == 1


def test_mechanism_writer_binds_while_someone_waits_and_hands_sqlite_json_otherwise(sqlite_url, monkeypatch):
    modes = []
    real = W.write_rows

    def spy(conn, rows, audit=False, unobtrusive=False, replay=False):
        modes.append(unobtrusive)
        return real(conn, rows, audit, unobtrusive, replay)

    monkeypatch.setattr(W, "write_rows", spy)
    tracer = llmtrace.Tracer(sqlite_url, flush_interval_seconds=60)
    tracer.record_feedback("t-1", "accepted")
    assert tracer.flush(10)
    assert modes == [False]  # a flush is waiting: the fastest path
    tracer.record_feedback("t-2", "accepted")
    tracer._writer.wake.set()  # the writer's own schedule: nobody waits
    deadline = time.monotonic() + 10
    while tracer.health()["records_written"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert modes == [False, True]
    tracer.close()


def test_mechanism_a_sqlite_without_json_gets_bound_parameters(tmp_path, monkeypatch):
    class NoJson:  # a connection to a SQLite compiled without JSON
        def exec_driver_sql(self, sql, *args):
            raise sqlite3.OperationalError("no such function: json_each")

    monkeypatch.setattr(I, "_SQLITE_JSON", None)
    assert I._sqlite_has_json(NoJson()) is False and I._SQLITE_JSON is False
    store = Database(f"sqlite:///{tmp_path / 'x.db'}")
    store.ensure_schema()
    with store.engine.begin() as conn:
        W.write_rows(conn, _rows(), unobtrusive=True)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM llmtrace_spans").scalar() == 3


def _feedback_rows(tracer) -> int:
    with raw_engine(tracer.url).connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM llmtrace_feedback").scalar()


def test_mechanism_flush_writes_on_the_calling_thread(sqlite_url, monkeypatch):
    threads = []
    real = W.write_rows

    def spy(conn, rows, audit=False, unobtrusive=False, replay=False):
        threads.append(threading.current_thread())
        return real(conn, rows, audit, unobtrusive, replay)

    monkeypatch.setattr(W, "write_rows", spy)
    with llmtrace.Tracer(sqlite_url, flush_interval_seconds=60) as tracer:
        for i in range(3):
            tracer.record_feedback(f"t-{i}", "accepted")
        assert tracer.flush(10)
        assert threads == [threading.main_thread()]
        assert _feedback_rows(tracer) == 3 and tracer.health()["queue_depth"] == 0


def test_mechanism_a_flush_that_runs_out_of_time_leaves_the_batch_to_the_writer(sqlite_url, monkeypatch):
    failures = {"left": 2}
    real = W.write_rows

    def flaky(conn, rows, audit=False, unobtrusive=False, replay=False):
        if failures["left"]:
            failures["left"] -= 1
            raise sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        return real(conn, rows, audit, unobtrusive, replay)

    monkeypatch.setattr(W, "write_rows", flaky)
    with llmtrace.Tracer(sqlite_url, flush_interval_seconds=0.05, write_retries=3) as tracer:
        tracer._writer.lock.acquire()  # the writer thread waits while the flush runs
        tracer.record_feedback("t-1", "accepted")
        tracer._writer.lock.release()
        assert tracer.flush(0.01) is False  # the first retry would wait past the timeout
        assert tracer.health()["queue_depth"] == 0  # converted: it is the writer's to retry now
        tracer.record_feedback("t-2", "accepted")  # newer: written after the batch it waited behind
        assert tracer.flush(10)
        h = tracer.health()
        assert _feedback_rows(tracer) == 2 and h["failed"] == 0 and h["write_errors"] == 2


def test_mechanism_a_flush_interrupted_mid_batch_loses_nothing(sqlite_url, monkeypatch):
    calls = {"n": 0}
    real = W.write_rows

    def interrupted_once(conn, rows, audit=False, unobtrusive=False, replay=False):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(conn, rows, audit, unobtrusive, replay)

    monkeypatch.setattr(W, "write_rows", interrupted_once)
    with llmtrace.Tracer(sqlite_url, flush_interval_seconds=60) as tracer:
        tracer.record_feedback("t-1", "edited", correction="the text the user kept")
        with pytest.raises(KeyboardInterrupt):
            tracer.flush(10)
        assert tracer.flush(10)
        assert _feedback_rows(tracer) == 1
        with raw_engine(tracer.url).connect() as conn:  # the content converted before the interruption too
            assert "the text the user kept" in conn.exec_driver_sql("SELECT body FROM llmtrace_contents").scalar()


def test_a_flush_from_inside_a_batch_returns_instead_of_waiting_for_itself(sqlite_url):
    seen = []
    tracer = llmtrace.Tracer(sqlite_url, flush_interval_seconds=60, capture="redacted",
                             processors=[lambda fields: seen.append(tracer.flush(1)) or fields])
    with tracer:
        tracer.record_feedback("t-1", "edited", correction="kept")
        assert tracer.flush(10)
        assert seen == [False] and _feedback_rows(tracer) == 1


def test_mechanism_sqlite_time_text_is_what_datetime_writes():
    import random

    rng = random.Random(7)
    edges = [0, 999, 1_000, 999_999_999, 1_000_000_000, NOW, NOW + 994_999_000, 4_102_444_799_999_999_999]
    values = edges + [rng.randrange(0, 4_102_444_800 * 10**9) for _ in range(5000)]
    values += [NOW + rng.randrange(0, 3 * 10**9) for _ in range(5000)]  # (the cached prefixes, as in a batch)
    for ns in values:
        expected = (datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%d %H:%M:%S.%f")
        assert I._sqlite_time(ns) == expected, ns


def test_the_applications_sqlite3_is_left_alone(sqlite_url):
    before = dict(sqlite3.adapters)  # (module-global: an application's own adapters live here)
    with llmtrace.Tracer(sqlite_url) as tracer:
        tracer.record_validation("t-1", rule="cites-a-source", passed=True)
        tracer.record_validation("t-1", rule="no-pii", passed=False)
        assert tracer.flush(10)
        with raw_engine(tracer.url).connect() as conn:
            got = conn.exec_driver_sql("SELECT rule, passed, typeof(passed), span_id, typeof(span_id) "
                                       "FROM llmtrace_validations ORDER BY rule").fetchall()
    assert got == [("cites-a-source", 1, "integer", None, "null"), ("no-pii", 0, "integer", None, "null")]
    assert dict(sqlite3.adapters) == before


def test_mechanism_a_duplicate_row_costs_itself_not_its_batch(sqlite_url):
    with llmtrace.Tracer(sqlite_url, flush_interval_seconds=60) as tracer:
        tracer._store.ensure_schema()
        rows = _rows()
        already = Rows()
        already.spans.append(dict(rows.spans[1]))  # (a span id the batch below carries again)
        sink = tracer._writer.sink
        assert sink.attempt(Batch(already, None, 0), None)
        assert sink.attempt(Batch(rows, None, 0), None)
        h = tracer.health()
        assert h["failed"] == 1 and h["write_errors"] == 2 and "IntegrityError" in h["last_error"]  # (batch, row)
        assert h["quarantined"] == 1 and list(h["quarantine_reasons"]) == [h["last_error"]]
        stored = _dump(tracer._store)
    assert {name: len(v) for name, v in stored.items()} == {t.name: 3 for t in (*I.TABLES.values(), S.traces)}


@pytest.mark.parametrize("n", [1, 3, 4, 5, 63, 100, 257, 700])
def test_mechanism_batches_of_any_length_are_inserted_whole_in_fixed_size_statements(tmp_path, n):
    store = Database(f"sqlite:///{tmp_path / 'x.db'}")
    store.ensure_schema()
    rows = Rows()
    rows.spans.extend({"span_id": f"s-{i:04d}", "trace_id": "t", "name": "step", "kind": "chain",
                       "started_at": NOW + i * 1000, "latency_ms": i / 10} for i in range(n))
    rows.spans[-1]["error_type"] = "timeout"  # (a column only the last row fills, and only it has)
    with store.engine.begin() as conn:
        W.write_rows(conn, rows)
    with store.engine.connect() as conn:
        got = conn.exec_driver_sql("SELECT span_id, started_at, latency_ms, error_type FROM llmtrace_spans "
                                   "ORDER BY span_id").fetchall()
    assert [r[0] for r in got] == [f"s-{i:04d}" for i in range(n)]
    assert got[-1][1] == I._sqlite_time(NOW + (n - 1) * 1000) and got[-1][2] == (n - 1) / 10
    assert [r[3] for r in got] == [None] * (n - 1) + ["timeout"]
    assert {size for (head, size) in I._multirow_sql if "llmtrace_spans" in head} <= set(I._SIZES)


def test_no_column_has_a_database_default():
    # The SQLite writer leaves out the columns a batch has no value for, which then take NULL:
    # a column with a server default would silently get that default instead.
    for table in S.METADATA.sorted_tables:
        assert [c.name for c in table.columns if c.server_default is not None] == [], table.name


def test_data_loss_is_said_at_once_then_at_most_once_a_minute_per_kind(recwarn):
    from llmtrace.capture.loss import LossReporter

    now = [100.0]
    loss = LossReporter(clock=lambda: now[0])  # (time moved by hand: no sleeping)
    loss.report("dropped", "llmtrace: 1 record(s) dropped so far")
    loss.report("dropped", "llmtrace: 2 record(s) dropped so far")  # within the minute: held
    loss.report("spilled", "llmtrace: 10 row(s) spilled")  # another kind: said at once
    now[0] += 59
    loss.report("dropped", "llmtrace: 3 record(s) dropped so far")
    said = [str(w.message) for w in recwarn.list]
    assert said == ["1 record(s) dropped so far", "10 row(s) spilled"]
    assert all(w.category is llmtrace.DataLossWarning and w.filename == "llmtrace" for w in recwarn.list)
    now[0] += 2
    loss.report("dropped", "llmtrace: 4 record(s) dropped so far")  # a minute after the last: said
    loss.report("dropped", "llmtrace: 5 record(s) dropped so far")
    loss.say_held()  # (at close: the latest of what was held)
    assert [str(w.message) for w in recwarn.list][2:] == ["4 record(s) dropped so far", "5 record(s) dropped so far"]


def test_data_loss_warnings_can_be_silenced_and_never_raise(recwarn):
    import warnings

    from llmtrace.capture.loss import LossReporter

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=llmtrace.DataLossWarning)
        LossReporter().report("dropped", "llmtrace: 1 record(s) dropped")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (python -W error): still never raised into the app
        LossReporter().report("dropped", "llmtrace: 1 record(s) dropped")
    assert recwarn.list == []
