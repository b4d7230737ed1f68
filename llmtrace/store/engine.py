"""The database: one engine per Tracer, SQLite tuned for a writer plus readers, numbered migrations.

Network I/O is bounded where the driver allows it (connect timeouts, TCP keepalives, a socket
timeout on MySQL, statement and lock timeouts per write on PostgreSQL), so a silent server never
holds a thread forever; ``transient`` tells an outage (wait, retry) from a bad batch (write row by
row). Migrations run under a lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock, MySQL
``GET_LOCK``) in one transaction where the database has transactional DDL; a database whose schema
is newer than this code is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from llmtrace.base.errors import ConfigError, StoreError
from llmtrace.store import schema


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def create_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except Exception as exc:
        raise ConfigError(f"cannot parse database url {url!r}: {exc}") from None
    kwargs: dict = {"hide_parameters": True}  # parameters are content: never in an error message
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = _network_timeouts(parsed)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except Exception as exc:  # most often a missing driver
        raise ConfigError(
            f"cannot open {parsed.render_as_string(hide_password=True)}: {exc}. "
            "Install the driver (e.g. pip install 'psycopg[binary]' or pymysql)."
        ) from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# The commit that takes the write-ahead log past this many pages checkpoints it itself (~64 MB);
# normally the writer's checkpoint thread has done it long before (see _checkpoint).
WAL_AUTOCHECKPOINT_PAGES = 16_384
BUSY_TIMEOUT_S = 30.0  # SQLite: how long a statement waits for another process's lock (a write sets its own)
CONNECT_TIMEOUT_S = 10  # PostgreSQL / MySQL: a server that accepts and never answers fails the connect after this
SOCKET_TIMEOUT_S = 120  # MySQL: a read or write that hears nothing this long fails (PyMySQL, mysqlclient)
WRITE_STATEMENT_TIMEOUT_S = 30  # PostgreSQL: a batch's statements and lock waits end after this (SET LOCAL)


def _network_timeouts(url: sa.URL) -> dict:
    """Connect timeout and TCP keepalives (the driver's own names), unless the URL sets them."""
    given = set(url.query)
    driver = url.get_driver_name()
    if url.get_backend_name() == "postgresql" and driver in ("psycopg", "psycopg2", "psycopg2cffi"):
        # libpq: keepalives find a dead peer on an idle connection; tcp_user_timeout ends a send
        # the peer never acknowledges (a dead route); connect_timeout a server that never answers.
        wanted = {"connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 30,
                  "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 60_000}
    elif url.get_backend_name() in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        wanted = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": SOCKET_TIMEOUT_S,
                  "write_timeout": SOCKET_TIMEOUT_S}
    else:
        return {}
    return {k: v for k, v in wanted.items() if k not in given}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    try:
        _wal(cur)  # readers never block the writer
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=OFF")
    finally:
        cur.close()


def _wal(cur: sqlite3.Cursor, wait_s: float = 5.0) -> None:
    """Switch the file to write-ahead logging, once (the mode is kept in the file). The switch needs
    the file to itself and SQLite does not wait for it (no busy handler): processes opening a fresh
    file at once are told "database is locked" at once, so it is tried again for a while."""
    if cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


# -- what a failed write means ----------------------------------------------------------------

TRANSIENT, BAD, UNKNOWN = "transient", "bad", "unknown"

# SQLite: another process holds the lock, the file cannot be written right now (permissions, disk).
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "readonly", "read-only", "disk is full",
                     "interrupted", "out of memory")
# PostgreSQL SQLSTATE classes and codes: connection, rollback (deadlock, serialization), resources,
# operator intervention (statement timeout, shutdown), system, lock not available, read-only standby.
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_PG_TRANSIENT_CODES = ("55P03", "55006", "25006", "25P03")
# MySQL / MariaDB error numbers: cannot connect, gone away, lost connection, too many connections,
# shutdown, lock wait timeout, deadlock, read-only, disk full, query interrupted, killed, idle timeout.
_MYSQL_TRANSIENT = {1021, 1040, 1053, 1205, 1213, 1290, 1317, 1792, 1927, 2002, 2003, 2005, 2006, 2013, 2014,
                    2026, 2047, 2055, 3024, 4031}


def transient(exc: BaseException) -> str:
    """What a failed write says: ``TRANSIENT`` (the database cannot take writes now: wait and
    retry, however long), ``BAD`` (something in this batch: write it row by row, set aside the row
    that fails alone) or ``UNKNOWN`` (retry a few times, then ask the database whether it is up)."""
    if isinstance(exc, StoreError):  # the schema could not be made ready: not the rows' fault
        return TRANSIENT
    if isinstance(exc, (sa.exc.DisconnectionError, sa.exc.TimeoutError)):
        return TRANSIENT
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
            return TRANSIENT
        orig = exc.orig
        if isinstance(exc, (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError, sa.exc.NotSupportedError)):
            return BAD
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(code, str):
            return TRANSIENT if code[:2] in _PG_TRANSIENT_CLASSES or code in _PG_TRANSIENT_CODES else UNKNOWN
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int):
            return TRANSIENT if args[0] in _MYSQL_TRANSIENT else UNKNOWN
        text = str(orig).lower()
        if any(w in text for w in _SQLITE_TRANSIENT):
            return TRANSIENT
        if isinstance(exc, sa.exc.OperationalError) and exc.orig is not None and not str(exc.orig).strip():
            return TRANSIENT
        if isinstance(exc, sa.exc.OperationalError) and ("connect" in text or "server" in text or "closed" in text
                                                         or "timeout" in text or "terminat" in text):
            return TRANSIENT
        return UNKNOWN
    if isinstance(exc, (UnicodeError, OverflowError)):
        return BAD  # a value the driver cannot send (a lone surrogate, an integer past 64 bits)
    if isinstance(exc, (OSError, TimeoutError)):
        return TRANSIENT
    return UNKNOWN


def _migration_1(conn: sa.Connection) -> None:
    schema.METADATA.create_all(conn, checkfirst=True)


def _migration_2(conn: sa.Connection) -> None:
    """Retention: traces remember when their content was purged; purge finds rows by expiry."""
    inspector = sa.inspect(conn)
    if "content_purged_at" not in {c["name"] for c in inspector.get_columns("llmtrace_traces")}:
        col_type = schema.traces.c.content_purged_at.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE llmtrace_traces ADD COLUMN content_purged_at {col_type}"))
    _create_index(conn, schema.contents, "ix_llmtrace_contents_expires_at")


def _migration_3(conn: sa.Connection) -> None:
    """The audit chain's table; on MySQL/MariaDB, DOUBLE instead of single-precision FLOAT."""
    schema.audit.create(conn, checkfirst=True)
    if conn.dialect.name in ("mysql", "mariadb"):
        for table in schema.METADATA.sorted_tables:
            for col in table.columns:
                if isinstance(col.type, sa.Float) and table.name != "llmtrace_audit":
                    conn.execute(sa.text(f"ALTER TABLE {table.name} MODIFY {col.name} DOUBLE NULL"))


def _migration_4(conn: sa.Connection) -> None:
    """Stats and alerts read LLM calls by time: an index on their start."""
    _create_index(conn, schema.llm_calls, "ix_llmtrace_llm_calls_started_at")


def _migration_5(conn: sa.Connection) -> None:
    """Cache-write tokens (Anthropic's cache_creation_input_tokens), billed apart from reads."""
    _add_column(conn, schema.llm_calls, "input_cache_write_tokens")


def _migration_6(conn: sa.Connection) -> None:
    """Links decided when written: where an error started, which retrievers fed a call."""
    _add_column(conn, schema.spans, "error_from")
    _add_column(conn, schema.llm_calls, "retrieved_from")


def _migration_7(conn: sa.Connection) -> None:
    """Labels a user gave (feedback corrections and comments) are content rows of their own kind."""
    _add_column(conn, schema.contents, "kind")


def _migration_8(conn: sa.Connection) -> None:
    """A session's and a user's traces are read by those ids, newest first: indexes on them."""
    _create_index(conn, schema.traces, "ix_llmtrace_traces_session")
    _create_index(conn, schema.traces, "ix_llmtrace_traces_user")


def _add_column(conn: sa.Connection, table: sa.Table, name: str) -> None:
    if name not in {c["name"] for c in sa.inspect(conn).get_columns(table.name)}:
        col_type = table.c[name].type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {col_type}"))


def _create_index(conn: sa.Connection, table: sa.Table, name: str) -> None:
    if name not in {i["name"] for i in sa.inspect(conn).get_indexes(table.name)}:
        # the table's own Index object: a new sa.Index(...) would attach a second one to the table
        next(i for i in table.indexes if i.name == name).create(conn)


# Numbered migrations; a new schema change appends (version, name, function) here. A blank
# database gets today's tables from migration 1, so every later step checks before it changes.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial tables", _migration_1),
    (2, "content retention", _migration_2),
    (3, "audit chain", _migration_3),
    (4, "index llm calls by time", _migration_4),
    (5, "cache-write tokens", _migration_5),
    (6, "links decided when written", _migration_6),
    (7, "labels apart from content", _migration_7),
    (8, "index traces by session and user", _migration_8),
]
assert MIGRATIONS[-1][0] == schema.SCHEMA_VERSION


class Database:
    """One engine on one database. ``create=True`` (the Tracer's) makes and migrates the tables on
    first use; ``create=False`` (the read side's) never creates or changes anything: a database that
    is not there, or has no llmtrace tables, is a ``StoreError`` that says so."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.create = create
        if not create:
            _must_exist(url)
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name
        self._ready = False
        self._lock = threading.Lock()

    @property
    def display_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def ensure_schema(self, timeout: float | None = None) -> None:
        """Make the tables ready (``create=True``: create or migrate them; else check they are
        there). ``timeout``: how long a migration may wait for another process's lock."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if not self.create:
                self._check_readable()
                self._ready = True
                return
            try:
                self._migrate(BUSY_TIMEOUT_S if timeout is None else timeout)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot prepare the llmtrace tables in {self.display_url}: "
                                 f"{type(exc).__name__}: {_first_line(exc)}") from exc
            self._ready = True

    def _check_readable(self) -> None:
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(schema.migrations.name):
                    raise StoreError(f"{self.display_url} has no llmtrace tables: nothing has been recorded there "
                                     "(check --db / LLMTRACE_DATABASE_URL)")
                version = conn.execute(sa.select(sa.func.max(schema.migrations.c.version))).scalar() or 0
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot read {self.display_url}: {type(exc).__name__}: {_first_line(exc)}") from exc
        self._refuse_newer(version)
        if version < schema.SCHEMA_VERSION:  # (the reader selects today's columns; it never changes a database)
            raise StoreError(f"{self.display_url} has llmtrace schema version {version}, older than this llmtrace "
                             f"({schema.SCHEMA_VERSION}): upgrade it with `llmtrace db migrate --db URL` (or open it once "
                             "with a Tracer), then read it")

    def _refuse_newer(self, version: int) -> None:
        if version > schema.SCHEMA_VERSION:
            raise StoreError(f"{self.display_url} has llmtrace schema version {version}, newer than this llmtrace "
                             f"({schema.SCHEMA_VERSION}): upgrade llmtrace (pip install -U llmtrace-core) to use it"
                             + ("; nothing was written to it" if self.create else ""))

    def _applied(self, conn: sa.Connection) -> set[int] | None:
        """The migrations recorded in the database; None when it has no migrations table yet."""
        if not sa.inspect(conn).has_table(schema.migrations.name):
            return None
        return set(conn.execute(sa.select(schema.migrations.c.version)).scalars())

    def _migrate(self, timeout: float) -> None:
        """Apply the migrations this database lacks, under a lock, so that processes opening a fresh
        database at once neither collide nor apply a step twice; first refuse a newer schema."""
        with self.engine.connect() as conn:
            done = self._applied(conn)
            conn.rollback()
        if done is not None:
            self._refuse_newer(max(done, default=0))
            if all(version in done for version, _, _ in MIGRATIONS):
                return
        with self.engine.connect() as conn, self._migration_lock(conn, timeout):
            schema.migrations.create(conn, checkfirst=True)
            done = self._applied(conn) or set()  # (again: another process may have done it meanwhile)
            self._refuse_newer(max(done, default=0))
            for version, name, step in MIGRATIONS:
                if version in done:
                    continue
                step(conn)
                conn.execute(schema.migrations.insert(), {"version": version, "name": name, "applied_at": utcnow()})
                if self.dialect in ("mysql", "mariadb"):
                    conn.commit()  # (DDL commits by itself there: each step is recorded as soon as it is done)

    @contextlib.contextmanager
    def _migration_lock(self, conn: sa.Connection, timeout: float) -> Iterator[None]:
        """One migrating process at a time, and all of its steps one transaction where DDL is
        transactional (SQLite, PostgreSQL): a failed migration leaves the database as it was."""
        if self.dialect == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout={max(1, int(timeout * 1000))}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, not at the first write
                yield
                conn.commit()
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        elif self.dialect == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(timeout * 1000))}")
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})  # until commit
            yield
            conn.commit()
        elif self.dialect in ("mysql", "mariadb"):
            name = f"llmtrace_migrate_{conn.exec_driver_sql('SELECT DATABASE()').scalar()}"[:64]
            if conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": max(1, int(timeout))}).scalar() != 1:
                raise StoreError(f"another process is migrating {self.display_url}: its lock was not free within {timeout:.0f}s")
            try:
                yield
                conn.commit()
            finally:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
                conn.commit()
        else:
            yield
            conn.commit()

    @contextlib.contextmanager
    def writing(self, timeout: float) -> Iterator[sa.Connection]:
        """A write transaction whose waits end after about ``timeout`` seconds: SQLite's busy
        timeout (another process's lock), PostgreSQL's statement and lock timeouts."""
        ms = max(1, int(timeout * 1000))
        with self.engine.begin() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql(f"PRAGMA busy_timeout={ms}")
                try:
                    yield conn
                finally:  # (the connection goes back to the pool: readers get the usual wait)
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
                return
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT set_config('statement_timeout', '{ms}', true), "
                                     f"set_config('lock_timeout', '{ms}', true)")
            yield conn

    def interrupt(self, dbapi_connection: object) -> None:
        """Make a statement running on ``dbapi_connection`` in another thread return now (SQLite
        only: ``sqlite3.Connection.interrupt`` is safe to call from any thread)."""
        stop = getattr(dbapi_connection, "interrupt", None)
        if self.dialect == "sqlite" and callable(stop):
            stop()

    def schema_version(self) -> int:
        self.ensure_schema()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(schema.migrations.c.version))).scalar() or 0

    def meta_get(self, key: str) -> str | None:
        """A per-database value, or None when no process has made it yet (never creates it)."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == key)).scalar()

    def meta_value(self, key: str, make: Callable[[], str]) -> str:
        """A per-database value (e.g. the user-id hash key), created once, shared by all processes."""
        self.ensure_schema()
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == key)).scalar()
            if found is not None:
                return found
            try:
                with conn.begin_nested():
                    conn.execute(schema.meta.insert(), {"key": key, "value": make()})
            except IntegrityError:
                pass
            value = conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == key)).scalar()
            if not isinstance(value, str):
                raise StoreError(f"the {key} row of llmtrace_meta in {self.display_url} is empty")
            return value

    def dispose(self, close: bool = True) -> None:
        self.engine.dispose(close=close)

    def after_fork(self) -> None:
        """In a forked child: new connections (the parent's stay the parent's), a lock nobody holds."""
        self.engine.dispose(close=False)
        self._lock = threading.Lock()


_MIGRATION_LOCK_KEY = zlib.crc32(b"llmtrace migrations")  # the PostgreSQL advisory lock's key


def _must_exist(url: str) -> None:
    """Reading a SQLite file that is not there would create it: say so instead."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception as exc:
        raise ConfigError(f"cannot parse database url {url!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = parsed.database
        if path.startswith("file:"):
            return  # a URI filename: sqlite3 itself decides (mode=ro refuses a missing file)
        import os

        if not os.path.exists(path):
            raise StoreError(f"no llmtrace database at {path}: nothing has been recorded there "
                             "(check --db / LLMTRACE_DATABASE_URL)")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def new_secret() -> str:
    return secrets.token_hex(32)
