"""A tamper-evident audit trail: an append-only hash chain over every metadata row written.

Each write batch (and each purge) appends one entry to ``llmtrace_audit``: the list of
``[table, key, digest]`` of the rows it wrote — including one digest per content owner — and
``hash = sha256(prev_hash | seq | kind | at | entries)``. Content digests live in the chain, not in
the content table, so the chain still verifies after content expires or is purged.

``verify`` walks the chain, then compares the latest digest of every row with the row in the
table: an edited, deleted or out-of-band inserted row, an edited content field or an altered
chain entry is reported, the first one first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from llmtrace.base.serialize import digest, dumps, loads, stdlib_dumps
from llmtrace.store import schema as S
from llmtrace.store.engine import Database, utcnow

GENESIS = "0" * 64
HEAD_KEY = "audit_head"
# table -> the column(s) naming a row; chunks have no natural id but (span, rank)
KEYS: dict[str, tuple[str, ...]] = {
    "llmtrace_traces": ("trace_id",), "llmtrace_spans": ("span_id",), "llmtrace_llm_calls": ("span_id",),
    "llmtrace_tool_calls": ("id",), "llmtrace_chunks": ("span_id", "rank"), "llmtrace_validations": ("id",),
    "llmtrace_feedback": ("id",),
}
TABLES = {t.name: t for t in (S.traces, S.spans, S.llm_calls, S.tool_calls, S.chunks, S.validations, S.feedback)}
CONTENT = "content"


sha256_text = digest  # one hasher for the project: see _serialize.digest


def _norm(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)


def row_key(table: str, row: dict[str, Any]) -> str:
    return "#".join(str(row.get(c)) for c in KEYS[table])


def row_digest(table: str, row: dict[str, Any]) -> str:
    cols = [c.name for c in TABLES[table].columns if not (table == "llmtrace_chunks" and c.name == "id")]
    return sha256_text(json.dumps([table, *(_norm(row.get(c)) for c in cols)], ensure_ascii=False,
                                  separators=(",", ":")))


def content_digest(fields: Any) -> str:
    return sha256_text(dumps(fields))


def content_matches(digest: str, fields: Any) -> bool:
    """Whether stored content still has the digest recorded when it was written (by this version's
    JSON writer, or by the standard library's, which wrote some floats differently)."""
    return digest == content_digest(fields) or digest == sha256_text(stdlib_dumps(fields))


def append(conn: sa.Connection, kind: str, entries: list[list[str]]) -> None:
    """Add one chained entry, serialised with any other writer through a locked head row."""
    if not entries:
        return
    m = S.meta
    head = conn.execute(sa.select(m.c.value).where(m.c.key == HEAD_KEY).with_for_update()).scalar()
    if head is None:
        seq, prev = 0, GENESIS
        conn.execute(m.insert(), {"key": HEAD_KEY, "value": f"0:{GENESIS}"})
        conn.execute(sa.select(m.c.value).where(m.c.key == HEAD_KEY).with_for_update()).scalar()
    else:
        seq_text, prev = head.split(":", 1)
        seq = int(seq_text)
    seq += 1
    at = utcnow()
    body = dumps(entries)
    digest = chain_hash(prev, seq, kind, at, body)
    conn.execute(S.audit.insert(), {"seq": seq, "at": at, "kind": kind, "entries": body, "prev_hash": prev,
                                    "hash": digest})
    conn.execute(m.update().where(m.c.key == HEAD_KEY).values(value=f"{seq}:{digest}"))


def chain_hash(prev: str, seq: int, kind: str, at: datetime, body: str) -> str:
    return sha256_text(f"{prev}|{seq}|{kind}|{_norm(at)}|{body}")


def enabled(conn: sa.Connection) -> bool:
    return conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == HEAD_KEY)).scalar() is not None


@dataclass
class Report:
    ok: bool = True
    entries: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)

    @property
    def first(self) -> str | None:
        return self.problems[0] if self.problems else None


def verify(store: Database, *, limit: int = 20) -> Report:
    store.ensure_schema()
    report = Report()
    latest: dict[tuple[str, str], tuple[str, int]] = {}
    with store.engine.connect() as conn:
        prev, expected_seq = GENESIS, 1
        for entry in conn.execute(sa.select(S.audit).order_by(S.audit.c.seq)):
            report.entries += 1
            if entry.seq != expected_seq:
                report.fail(f"audit entry #{expected_seq} is missing (next is #{entry.seq}): the chain was cut")
            if entry.prev_hash != prev:
                report.fail(f"audit entry #{entry.seq} does not link to the entry before it: the chain was altered")
            if chain_hash(entry.prev_hash, entry.seq, entry.kind, entry.at, entry.entries) != entry.hash:
                report.fail(f"audit entry #{entry.seq} was altered after it was written")
            prev, expected_seq = entry.hash, entry.seq + 1
            for table, key, digest in loads(entry.entries) or []:
                latest[(table, key)] = (digest, entry.seq)
        head = conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == HEAD_KEY)).scalar()
        if head is not None and head != f"{expected_seq - 1}:{prev}":
            report.fail(f"the chain's head says {head.split(':')[0]} entries but {expected_seq - 1} remain: "
                        "entries were deleted from the end")
        if not latest:
            return report
        seen: set[tuple[str, str]] = set()
        for name, table in TABLES.items():
            for found_row in conn.execute(sa.select(table)):
                row = dict(found_row._mapping)
                key = row_key(name, row)
                seen.add((name, key))
                report.rows += 1
                found = latest.get((name, key))
                if found is None:
                    report.fail(f"{name} row {key} is not in the audit trail: inserted out of band")
                elif found[0] != row_digest(name, row):
                    report.fail(f"{name} row {key} was changed after audit entry #{found[1]} recorded it")
        for (name, key), (_digest, seq) in latest.items():
            if name in TABLES and (name, key) not in seen:  # (purge events also chain a count)
                report.fail(f"{name} row {key}, recorded in audit entry #{seq}, was deleted")
        for r in conn.execute(sa.select(S.contents.c.id, S.contents.c.body)):
            for owner, fields in (loads(r.body) or {}).items():
                found = latest.get((CONTENT, owner))
                if found is None:
                    report.fail(f"content of {owner} is not in the audit trail: inserted out of band")
                elif not content_matches(found[0], fields):
                    report.fail(f"content of {owner} was changed after audit entry #{found[1]} recorded it")
    report.problems = report.problems[:limit]
    return report
