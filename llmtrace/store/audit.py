"""A tamper-evident audit trail: an append-only hash chain over every metadata row written.

Each write batch (and each purge) appends one entry to ``llmtrace_audit``: the list of
``[table, key, digest]`` of the rows it wrote — one digest per content owner, and per content row
the set of owners it holds — and ``hash = sha256(prev_hash | seq | kind | at | entries)``. Content
digests live in the chain, not in the content table, so the chain still verifies after content
expires; a purge chains the content rows it deletes, so a purged row is told from a deleted one.

``verify`` walks the chain, then compares the latest digest of every row with the row in the
table: an edited, deleted or out-of-band inserted row, an edited or deleted content row, an altered
or cut chain, a wiped chain with rows still there, and a store with no chain at all (audit off) are
reported, the first one first.

The limit: whoever can write the database can also rebuild the chain from the end (delete rows,
recompute every later link, rewind the head). Only something kept outside catches that: ``head``
gives the chain's last link (``llmtrace audit head``), and ``verify(anchor=...)`` checks that the
chain still holds that link, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from llmtrace.base.errors import ConfigError, StoreError
from llmtrace.base.serialize import digest, dumps, loads, stdlib_dumps
from llmtrace.store import schema
from llmtrace.store.engine import Database, utcnow

GENESIS = "0" * 64
HEAD_KEY = "audit_head"
# table -> the column(s) naming a row; chunks have no natural id but (span, rank)
KEYS: dict[str, tuple[str, ...]] = {
    "llmtrace_traces": ("trace_id",), "llmtrace_spans": ("span_id",), "llmtrace_llm_calls": ("span_id",),
    "llmtrace_tool_calls": ("id",), "llmtrace_chunks": ("span_id", "rank"), "llmtrace_validations": ("id",),
    "llmtrace_feedback": ("id",),
}
TABLES = {t.name: t for t in (schema.traces, schema.spans, schema.llm_calls, schema.tool_calls, schema.chunks,
                              schema.validations, schema.feedback)}
CONTENT = "content"
CONTENT_ROWS = schema.contents.name  # [CONTENT_ROWS, row id, owners_digest] when written, [..., PURGED] when purged
PURGED = "purged"


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


def owners_digest(owners: Any) -> str:
    """What a content row holds, for the chain: the digest of its owner ids (sorted)."""
    return sha256_text(dumps(sorted(owners)))


def content_matches(digest: str, fields: Any) -> bool:
    """Whether stored content still has the digest recorded when it was written (by this version's
    JSON writer, or by the standard library's, which wrote some floats differently)."""
    return digest == content_digest(fields) or digest == sha256_text(stdlib_dumps(fields))


def append(conn: sa.Connection, kind: str, entries: list[list[str]]) -> None:
    """Add one chained entry, serialised with any other writer through a locked head row."""
    if not entries:
        return
    m = schema.meta
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
    conn.execute(schema.audit.insert(), {"seq": seq, "at": at, "kind": kind, "entries": body, "prev_hash": prev,
                                    "hash": digest})
    conn.execute(m.update().where(m.c.key == HEAD_KEY).values(value=f"{seq}:{digest}"))


def chain_hash(prev: str, seq: int, kind: str, at: datetime, body: str) -> str:
    return sha256_text(f"{prev}|{seq}|{kind}|{_norm(at)}|{body}")


def enabled(conn: sa.Connection) -> bool:
    return conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == HEAD_KEY)).scalar() is not None


@dataclass
class Report:
    """What ``audit verify`` found: ``ok``, how many chain entries and rows it checked, every problem
    (the first one first), and whether audit was on at all."""

    ok: bool = True
    entries: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    enabled: bool = True  # False: the store has no audit chain (recorded without audit, or wiped)
    head: str | None = None  # "seq:hash" of the chain's last link: what ``llmtrace audit head`` prints

    def fail(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)

    @property
    def first(self) -> str | None:
        return self.problems[0] if self.problems else None


def parse_anchor(anchor: str) -> tuple[int, str]:
    """``"seq:hash"`` as ``llmtrace audit head`` prints it."""
    seq, sep, value = str(anchor).strip().partition(":")
    if not sep or not seq.isdigit() or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"an anchor is the line `llmtrace audit head` printed, <seq>:<sha256 hex> "
                          f"(e.g. 42:3f2a…); not {anchor!r}")
    return int(seq), value


def head(store: Database) -> str:
    """The chain's last link as ``"seq:hash"``: store it outside the database (a ticket, a log
    shipped elsewhere, a notary) and pass it to ``verify(anchor=...)`` later."""
    store.ensure_schema()
    with store.engine.connect() as conn:
        last = conn.execute(sa.select(schema.audit.c.seq, schema.audit.c.hash).order_by(schema.audit.c.seq.desc()).limit(1)).first()
    if last is None:
        raise StoreError(f"audit is off for {store.display_url}: it has no audit chain (record with "
                         "Tracer(audit=True) or LLMTRACE_AUDIT=1)")
    return f"{last.seq}:{last.hash}"


def verify(store: Database, *, limit: int = 20, anchor: str | None = None) -> Report:
    """Walk the chain and compare it with the tables (and with ``anchor``, a head kept elsewhere)."""
    wanted = parse_anchor(anchor) if anchor is not None else None
    store.ensure_schema()
    report = Report()
    latest: dict[tuple[str, str], tuple[str, int]] = {}
    with store.engine.connect() as conn:
        prev, expected_seq = GENESIS, 1
        anchored: str | None = None
        for entry in conn.execute(sa.select(schema.audit).order_by(schema.audit.c.seq)):
            report.entries += 1
            if entry.seq != expected_seq:
                report.fail(f"audit entry #{expected_seq} is missing (next is #{entry.seq}): the chain was cut")
            if entry.prev_hash != prev:
                report.fail(f"audit entry #{entry.seq} does not link to the entry before it: the chain was altered")
            if chain_hash(entry.prev_hash, entry.seq, entry.kind, entry.at, entry.entries) != entry.hash:
                report.fail(f"audit entry #{entry.seq} was altered after it was written")
            if wanted is not None and entry.seq == wanted[0]:
                anchored = entry.hash
            prev, expected_seq = entry.hash, entry.seq + 1
            for table, key, digest in loads(entry.entries) or []:
                latest[(table, key)] = (digest, entry.seq)
        head_row = conn.execute(sa.select(schema.meta.c.value).where(schema.meta.c.key == HEAD_KEY)).scalar()
        report.head = f"{expected_seq - 1}:{prev}" if report.entries else None
        if head_row is not None and head_row != f"{expected_seq - 1}:{prev}":
            report.fail(f"the chain's head says {head_row.split(':')[0]} entries but {expected_seq - 1} remain: "
                        "entries were deleted from the end")
        if wanted is not None:
            if anchored is None:
                report.fail(f"the anchor {wanted[0]}:{wanted[1][:12]}… is not in the chain (it ends at "
                            f"#{expected_seq - 1}): links were removed and the chain rebuilt since the anchor was taken")
            elif anchored != wanted[1]:
                report.fail(f"audit entry #{wanted[0]} differs from the anchor: the chain was rewritten since the "
                            "anchor was taken")
        if not report.entries and head_row is None:
            report.enabled = False
            rows = sum(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0 for t in TABLES.values())
            report.fail(f"audit is off for this store: it has no audit chain, and its {rows} row(s) are not covered "
                        "(it was recorded without Tracer(audit=True) / LLMTRACE_AUDIT=1, or its chain was wiped)")
            report.problems = report.problems[:limit]
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
                    report.fail(f"{name} row {key} is not in the audit trail: inserted out of band "
                                "(or written before audit was on)")
                elif found[0] != row_digest(name, row):
                    report.fail(f"{name} row {key} was changed after audit entry #{found[1]} recorded it")
        for (name, key), (_digest, seq) in latest.items():
            if name in TABLES and (name, key) not in seen:  # (purge events also chain a count)
                report.fail(f"{name} row {key}, recorded in audit entry #{seq}, was deleted")
        present: set[str] = set()
        for r in conn.execute(sa.select(schema.contents.c.id, schema.contents.c.body)):
            present.add(r.id)
            owners = loads(r.body) or {}
            for owner, fields in owners.items():
                found = latest.get((CONTENT, owner))
                if found is None:
                    report.fail(f"content of {owner} is not in the audit trail: inserted out of band")
                elif not content_matches(found[0], fields):
                    report.fail(f"content of {owner} was changed after audit entry #{found[1]} recorded it")
            recorded = latest.get((CONTENT_ROWS, r.id))
            if recorded is None:
                continue  # (rows written before content rows were chained: their owners are checked above)
            if recorded[0] == PURGED:
                report.fail(f"content row {r.id} was purged in audit entry #{recorded[1]} but is there again: "
                            "inserted out of band")
            elif recorded[0] != owners_digest(owners):
                report.fail(f"content row {r.id} was changed after audit entry #{recorded[1]} recorded it: "
                            "content was added to it or removed from it")
        for (name, key), (digest_, seq) in latest.items():
            if name == CONTENT_ROWS and digest_ != PURGED and key not in present:
                report.fail(f"content row {key}, recorded in audit entry #{seq}, was deleted out of band "
                            "(purge records what it deletes)")
    report.problems = report.problems[:limit]
    return report
