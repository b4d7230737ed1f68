"""Fixtures of the fault-injection tests (issue 17): servers behind a fault proxy, SQLite locked by
another process, child processes to break and kill. The machinery itself is in faultkit.py.

(tests/faults is a package, ``faults``, so that this conftest does not take the module name
``conftest`` from tests/conftest.py, which other test files import.)
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from .faultkit import Child, FaultProxy, SqliteLock, server_reachable

SERVERS = {
    "postgresql": os.environ.get("LLMTRACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("LLMTRACE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
_why_not: dict[str, str | None] = {}


def server_url(name: str) -> str:
    """The server's URL, or skip (fail under CI=true) when it is not reachable."""
    if name not in _why_not:
        _why_not[name] = server_reachable(SERVERS[name])
    reason = _why_not[name]
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return SERVERS[name]


@pytest.fixture
def pg_url() -> str:
    return server_url("postgresql")


@pytest.fixture
def mariadb_url() -> str:
    return server_url("mariadb")


@pytest.fixture
def fault_proxy():
    """``fault_proxy(url) -> (proxy, url through the proxy)``; every proxy is closed afterwards."""
    made: list[FaultProxy] = []

    def make(url: str) -> tuple[FaultProxy, str]:
        proxy = FaultProxy(sa.engine.make_url(url).port or 5432)
        made.append(proxy)
        return proxy, proxy.via(url)

    yield make
    for p in made:
        p.close()


@pytest.fixture
def pg_proxy(pg_url, fault_proxy):
    """(proxy, URL) of the test PostgreSQL database through a fault proxy."""
    return fault_proxy(pg_url)


@pytest.fixture
def sqlite_lock():
    """``sqlite_lock(path, seconds=30, mode="IMMEDIATE")``: another process holds the file's write lock."""
    held: list[SqliteLock] = []

    def take(path, seconds: float = 30.0, mode: str = "IMMEDIATE") -> SqliteLock:
        lock = SqliteLock(path, seconds, mode)
        held.append(lock)
        return lock

    yield take
    for lock in held:
        lock.release()


@pytest.fixture
def child():
    """``child(command, cwd=None, env=None, **args)``: a fault_child.py process, killed afterwards if still running."""
    started: list[Child] = []

    def start(command: str, cwd=None, env=None, **args) -> Child:
        c = Child(command, cwd=cwd, env=env, **args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()
