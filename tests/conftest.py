"""Fixtures: a Tracer on a real SQLite file, and on the real PostgreSQL and MariaDB servers.

Server tests skip with the reason when no server is reachable on a developer's machine; under
CI (CI=true) an unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

import llmtrace
from llmtrace.store import schema as S

SERVER_URLS = {
    "postgresql": os.environ.get("LLMTRACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("LLMTRACE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
_ready: dict[str, str | None] = {}


def _server(name: str) -> str:
    """The URL of a reachable server with fresh llmtrace tables (dropped once per session)."""
    if name not in _ready:
        url = SERVER_URLS[name]
        try:
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                S.METADATA.drop_all(conn)
            engine.dispose()
            _ready[name] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
            _ready[name] = f"{name} not reachable at {url}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    reason = _ready[name]
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return SERVER_URLS[name]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'llmtrace.db'}"
    return _server(request.param)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'llmtrace.db'}"


@pytest.fixture
def tracer(db_url):
    t = llmtrace.Tracer(db_url, flush_interval_seconds=0.05)
    yield t
    t.close()


@pytest.fixture
def sqlite_tracer(sqlite_url):
    t = llmtrace.Tracer(sqlite_url, flush_interval_seconds=0.05)
    yield t
    t.close()


@pytest.fixture
def handler(tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    return LLMTraceCallbackHandler(tracer)


def new_id() -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture
def analysis(db_url):
    """A store with known answers for stats, trace search and alerts (see tests/analysis_data.py),
    and a Tracer on it that prices the fixture's models; its rows are removed afterwards."""
    from tests import analysis_data

    tracer = llmtrace.Tracer(db_url, prices=analysis_data.PRICES, flush_interval_seconds=0.05)
    tracer.schema_version()
    st = analysis_data.build(db_url, tracer._user_hash_key())
    st.tracer = tracer
    yield st
    tracer.close()
    analysis_data.remove(st)


_engines: dict[str, sa.Engine] = {}


def raw_engine(url: str) -> sa.Engine:
    """An engine of the test's own on a tracer's database (``tracer.url``): what an outsider sees
    when reading (or tampering with) the tables by hand, without llmtrace's internals."""
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = sa.create_engine(url)
    return engine
