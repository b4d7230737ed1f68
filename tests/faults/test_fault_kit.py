"""The fault kit itself: each fault is real before any test relies on it."""

from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy as sa

from .faultkit import FaultProxy, SqliteLock


def _connect(url: str, timeout: int = 2):
    args = {"connect_timeout": timeout}
    if sa.engine.make_url(url).get_backend_name() != "postgresql":
        args["read_timeout"] = timeout  # (PyMySQL's connect_timeout ends at the TCP handshake)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=args)
    return engine, engine.connect()


@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_the_proxy_passes_refuses_cuts_and_blackholes(server, request, fault_proxy):
    url = request.getfixturevalue("pg_url" if server == "postgresql" else "mariadb_url")
    proxy, via = fault_proxy(url)
    engine, conn = _connect(via)
    assert conn.exec_driver_sql("SELECT 1").scalar() == 1

    proxy.refuse()  # new connections fail at once; the open one keeps working
    t0 = time.monotonic()
    with pytest.raises(sa.exc.OperationalError):
        _connect(via)
    assert time.monotonic() - t0 < 1.5
    assert conn.exec_driver_sql("SELECT 2").scalar() == 2

    assert proxy.cut() >= 1  # the open one is gone
    with pytest.raises(sa.exc.DBAPIError):
        conn.exec_driver_sql("SELECT 3").scalar()
    conn.invalidate()

    proxy.blackhole()  # accepted, never answered: only the client's own timeout ends the wait
    t0 = time.monotonic()
    with pytest.raises(sa.exc.OperationalError):
        _connect(via, timeout=1)
    assert 0.9 <= time.monotonic() - t0 < 5  # (libpq waits at least 2 s)

    proxy.pass_through()
    engine2, conn2 = _connect(via)
    assert conn2.exec_driver_sql("SELECT 4").scalar() == 4
    conn2.close()
    engine.dispose()
    engine2.dispose()


def test_a_blackholed_connection_resumes_when_the_route_comes_back(pg_url):
    with FaultProxy(sa.engine.make_url(pg_url).port) as proxy:
        engine, conn = _connect(proxy.via(pg_url))
        proxy.blackhole()
        import threading

        got = []
        t = threading.Thread(target=lambda: got.append(conn.exec_driver_sql("SELECT 5").scalar()), daemon=True)
        t.start()
        t.join(0.5)
        assert t.is_alive() and not got  # held
        proxy.pass_through()
        t.join(5)
        assert got == [5]
        conn.close()
        engine.dispose()


def test_the_lock_holder_blocks_writers_of_another_process_until_released(tmp_path):
    path = tmp_path / "locked.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    with SqliteLock(path, seconds=30):
        db.execute("PRAGMA busy_timeout=200")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            db.execute("INSERT INTO t VALUES (1)")
        assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)  # readers are not blocked (WAL)
    db.execute("INSERT INTO t VALUES (1)")
    db.close()
