"""The database: one engine per Tracer, SQLite tuned for a writer plus readers, numbered migrations."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from llmtrace.base.errors import ConfigError, StoreError
from llmtrace.store import schema as S


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def create_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except Exception as exc:
        raise ConfigError(f"cannot parse database url {url!r}: {exc}") from None
    kwargs: dict = {"hide_parameters": True}  # parameters are content: never in an error message
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
    else:
        kwargs["pool_pre_ping"] = True
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


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=OFF")
    finally:
        cur.close()


def _migration_1(conn: sa.Connection) -> None:
    S.METADATA.create_all(conn, checkfirst=True)


def _migration_2(conn: sa.Connection) -> None:
    """Retention: traces remember when their content was purged; purge finds rows by expiry."""
    inspector = sa.inspect(conn)
    if "content_purged_at" not in {c["name"] for c in inspector.get_columns("llmtrace_traces")}:
        col_type = S.traces.c.content_purged_at.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE llmtrace_traces ADD COLUMN content_purged_at {col_type}"))
    _create_index(conn, S.contents, "ix_llmtrace_contents_expires_at")


def _migration_3(conn: sa.Connection) -> None:
    """The audit chain's table; on MySQL/MariaDB, DOUBLE instead of single-precision FLOAT."""
    S.audit.create(conn, checkfirst=True)
    if conn.dialect.name in ("mysql", "mariadb"):
        for table in S.METADATA.sorted_tables:
            for col in table.columns:
                if isinstance(col.type, sa.Float) and table.name != "llmtrace_audit":
                    conn.execute(sa.text(f"ALTER TABLE {table.name} MODIFY {col.name} DOUBLE NULL"))


def _migration_4(conn: sa.Connection) -> None:
    """Stats and alerts read LLM calls by time: an index on their start."""
    _create_index(conn, S.llm_calls, "ix_llmtrace_llm_calls_started_at")


def _migration_5(conn: sa.Connection) -> None:
    """Cache-write tokens (Anthropic's cache_creation_input_tokens), billed apart from reads."""
    _add_column(conn, S.llm_calls, "input_cache_write_tokens")


def _migration_6(conn: sa.Connection) -> None:
    """Links decided when written: where an error started, which retrievers fed a call."""
    _add_column(conn, S.spans, "error_from")
    _add_column(conn, S.llm_calls, "retrieved_from")


def _migration_7(conn: sa.Connection) -> None:
    """Labels a user gave (feedback corrections and comments) are content rows of their own kind."""
    _add_column(conn, S.contents, "kind")


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
]
assert MIGRATIONS[-1][0] == S.SCHEMA_VERSION


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

    def ensure_schema(self) -> None:
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
                self._migrate()
            except Exception as exc:
                raise StoreError(f"cannot prepare the llmtrace tables in {self.display_url}: {exc}") from exc
            self._ready = True

    def _check_readable(self) -> None:
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(S.migrations.name):
                    raise StoreError(f"{self.display_url} has no llmtrace tables: nothing has been recorded there "
                                     "(check --db / LLMTRACE_DATABASE_URL)")
                version = conn.execute(sa.select(sa.func.max(S.migrations.c.version))).scalar() or 0
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot read {self.display_url}: {type(exc).__name__}: {_first_line(exc)}") from exc
        if version > S.SCHEMA_VERSION:
            raise StoreError(f"{self.display_url} has llmtrace schema version {version}, newer than this llmtrace "
                             f"({S.SCHEMA_VERSION}): upgrade llmtrace to read it")

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            S.migrations.create(conn, checkfirst=True)
            done = set(conn.execute(sa.select(S.migrations.c.version)).scalars())
        for version, name, step in MIGRATIONS:
            if version in done:
                continue
            with self.engine.begin() as conn:
                step(conn)
                try:
                    with conn.begin_nested():
                        conn.execute(S.migrations.insert(), {"version": version, "name": name, "applied_at": utcnow()})
                except IntegrityError:
                    pass  # another process applied it at the same moment

    def schema_version(self) -> int:
        self.ensure_schema()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(S.migrations.c.version))).scalar() or 0

    def meta_get(self, key: str) -> str | None:
        """A per-database value, or None when no process has made it yet (never creates it)."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            return conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == key)).scalar()

    def meta_value(self, key: str, make: Callable[[], str]) -> str:
        """A per-database value (e.g. the user-id hash key), created once, shared by all processes."""
        self.ensure_schema()
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == key)).scalar()
            if found is not None:
                return found
            try:
                with conn.begin_nested():
                    conn.execute(S.meta.insert(), {"key": key, "value": make()})
            except IntegrityError:
                pass
            value = conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == key)).scalar()
            if not isinstance(value, str):
                raise StoreError(f"the {key} row of llmtrace_meta in {self.display_url} is empty")
            return value

    def dispose(self, close: bool = True) -> None:
        self.engine.dispose(close=close)


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
