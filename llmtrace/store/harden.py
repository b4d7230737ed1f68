"""``llmtrace db harden``: PostgreSQL protections for a shared production database.

- a role that can read every llmtrace table but the content table (dashboards, analysts), and not
  the user-id hash key either: with it, anyone could hash guessed user ids and compare. The key's
  row of ``llmtrace_meta`` is hidden from the role by a row-level security policy (other roles,
  the owner that records, are not affected). Better still, keep the key out of the database:
  ``LLMTRACE_HASH_KEY`` (see the README);
- no UPDATE or DELETE on the audit chain, ever;
- no DELETE on metadata rows, and content deleted only by ``purge`` (which sets
  ``llmtrace.purge`` for its own transaction).

Running it again is safe (every statement is idempotent); run it again after an upgrade.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from llmtrace.base.errors import ConfigError
from llmtrace.base.privacy import USER_HASH_KEY
from llmtrace.store import schema
from llmtrace.store.engine import Database

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def harden_sql(reader_role: str = "llmtrace_reader") -> list[str]:
    if not _ROLE.match(reader_role):
        raise ConfigError(f"role name {reader_role!r} must be lower-case letters, digits and _")
    metadata_tables = [t.name for t in schema.METADATA.sorted_tables if t.name != schema.contents.name]
    stmts = [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{reader_role}') THEN "
        f"CREATE ROLE {reader_role} NOLOGIN; END IF; END $$",
        f"GRANT USAGE ON SCHEMA {{schema}} TO {reader_role}",
        *[f"GRANT SELECT ON {t} TO {reader_role}" for t in metadata_tables],
        f"REVOKE ALL ON {schema.contents.name} FROM {reader_role}",
        # the hash key's row: hidden from the reader role only (a restrictive policy for it, and a
        # permissive one for everyone, so enabling row security changes nothing for other roles)
        f"ALTER TABLE {schema.meta.name} ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS llmtrace_meta_visible ON {schema.meta.name}",
        f"CREATE POLICY llmtrace_meta_visible ON {schema.meta.name} USING (true) WITH CHECK (true)",
        f"DROP POLICY IF EXISTS llmtrace_meta_no_key_{reader_role} ON {schema.meta.name}",
        f"CREATE POLICY llmtrace_meta_no_key_{reader_role} ON {schema.meta.name} AS RESTRICTIVE FOR SELECT TO {reader_role} "
        f"USING (key <> '{USER_HASH_KEY}')",
        """CREATE OR REPLACE FUNCTION llmtrace_forbid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'llmtrace: % on % is not allowed (hardened store)', TG_OP, TG_TABLE_NAME; END $$""",
        """CREATE OR REPLACE FUNCTION llmtrace_purge_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('llmtrace.purge', true), '') <> 'on' THEN
    RAISE EXCEPTION 'llmtrace: content is deleted only by llmtrace purge (hardened store)';
  END IF;
  RETURN OLD;
END $$""",
        f"DROP TRIGGER IF EXISTS llmtrace_audit_append_only ON {schema.audit.name}",
        f"CREATE TRIGGER llmtrace_audit_append_only BEFORE UPDATE OR DELETE ON {schema.audit.name} "
        "FOR EACH ROW EXECUTE FUNCTION llmtrace_forbid()",
        f"DROP TRIGGER IF EXISTS llmtrace_content_purge_only ON {schema.contents.name}",
        f"CREATE TRIGGER llmtrace_content_purge_only BEFORE DELETE ON {schema.contents.name} "
        "FOR EACH ROW EXECUTE FUNCTION llmtrace_purge_only()",
    ]
    for t in metadata_tables:
        if t in (schema.audit.name, schema.meta.name, schema.migrations.name):
            continue
        stmts.append(f"DROP TRIGGER IF EXISTS llmtrace_no_delete ON {t}")
        stmts.append(f"CREATE TRIGGER llmtrace_no_delete BEFORE DELETE ON {t} FOR EACH ROW "
                     "EXECUTE FUNCTION llmtrace_forbid()")
    return stmts


def harden(store: Database, reader_role: str = "llmtrace_reader", dry_run: bool = False) -> list[str]:
    if store.dialect != "postgresql":
        raise ConfigError(f"db harden is for PostgreSQL; this store is {store.dialect}. On other databases use "
                          "their own grants, and llmtrace audit verify to detect changes.")
    store.ensure_schema()
    with store.engine.begin() as conn:
        db_schema = str(conn.execute(sa.text("SELECT current_schema()")).scalar())
        stmts = [s.replace("{schema}", db_schema) for s in harden_sql(reader_role)]
        if not dry_run:
            for stmt in stmts:
                conn.execute(sa.text(stmt))
    return stmts
