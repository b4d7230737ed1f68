"""``llmtrace.Store``: everything you can ask of a recorded database, without recording anything.

The CLI, notebooks, the eval-set export and the UI read through this; ``Tracer``'s read methods
flush what the tracer has queued and then delegate here. A Store starts no writer thread and never
creates or migrates tables: a database that is not there is a ``StoreError`` that says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from llmtrace.base.alerting import Alert, AlertRules
from llmtrace.base.config import DEFAULT_URL, database_url
from llmtrace.base.cost import PriceBook, default_pricebook, prices_from_env
from llmtrace.base.errors import ConfigError, StoreError
from llmtrace.base.privacy import USER_HASH_KEY, hash_user_id, is_user_hash
from llmtrace.store.engine import Database

if TYPE_CHECKING:
    from llmtrace.read.document import Trace
    from llmtrace.read.find import TracePage
    from llmtrace.store.audit import Report

class Store:
    """A recorded llmtrace database, for reading.

    ``Store(url=None, *, prices=None)``: with no URL, ``LLMTRACE_DATABASE_URL``, else
    ``sqlite:///llmtrace.db``. ``prices``: your own prices per model (see ``Tracer``).
    """

    def __init__(self, url: str | None = None, *, prices: dict[str, dict[str, float]] | None = None,
                 hash_key: str | None = None) -> None:
        self._db = Database(database_url(url), create=False)
        prices = prices if prices is not None else prices_from_env()
        self.prices: PriceBook = PriceBook(prices) if prices else default_pricebook()
        configured = hash_key or os.environ.get("LLMTRACE_HASH_KEY") or None
        self._hash_key: Callable[[], str | None] = (lambda: configured) if configured else self._stored_key
        self._readable: bool | None = None

    @classmethod
    def _of(cls, database: Database, prices: PriceBook, hash_key: Callable[[], str | None]) -> Store:
        """A Tracer's reader: its own engine, prices and user-id hash key."""
        self = cls.__new__(cls)
        self._db, self.prices, self._hash_key = database, prices, hash_key
        self._readable = None
        return self

    def _stored_key(self) -> str | None:
        return self._db.meta_get(USER_HASH_KEY)

    @property
    def url(self) -> str:
        return self._db.display_url

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._db.dispose()

    # -- one trace ------------------------------------------------------------------------------

    def get_trace(self, trace_id: str) -> Trace:
        """The recorded trace; ``.to_dict()`` is the SIGNALS.md document. Raises ``TraceNotFound``.

        Under a database role that may not read the content table (``llmtrace db harden``'s
        reader), the document has every count, time and id, and each call's content is ``null``
        with ``content_missing: "not_readable"``."""
        from llmtrace.read.document import load_trace

        trace_id = check_id(trace_id)
        if self.content_readable():
            return load_trace(self._db, trace_id, self.prices)
        return _load_without_content(self._db, trace_id, self.prices)

    def content_readable(self) -> bool:
        """Whether this connection may read the content table (a metadata-only role may not)."""
        if self._readable is None:
            self._readable = _can_read_content(self._db)
        return self._readable

    # -- many traces ----------------------------------------------------------------------------

    def find_traces(self, *, limit: int = 20, since: Any = None, until: Any = None, order: str = "newest",
                    **filters: Any) -> list[dict[str, Any]]:
        """The newest (``order="oldest"``: oldest) traces matching every filter given, one summary
        dict each (see ``Tracer.find_traces``)."""
        return self.list_traces(limit=limit, since=since, until=until, order=order, count=False, **filters).traces

    def list_traces(self, *, limit: int = 50, cursor: str | None = None, since: Any = None, until: Any = None,
                    order: str = "newest", count: bool = True, **filters: Any) -> TracePage:
        """A page of ``find_traces``: ``.traces``, ``.next_cursor`` (pass it as ``cursor`` for the
        next page; None on the last) and ``.total`` (how many match; at least that many when
        ``.total_capped``; None when only reading every match could tell: cost and text filters)."""
        from llmtrace.read.find import list_traces
        from llmtrace.read.queries import time_bound

        filters = self._user_filter(filters)
        if filters.get("text") is not None and not self.content_readable():
            raise StoreError("text search reads the content table, which this database role may not read "
                             "(a metadata-only reader of llmtrace db harden): search with a role that may")
        return list_traces(self._db, self.prices, limit=limit, cursor=cursor, since=time_bound(since),
                           until=time_bound(until, "until"), order=order, count=count, **filters)

    def session(self, session_id: str, *, limit: int = 200) -> dict[str, Any]:
        """One conversation: its traces oldest first (at most ``limit``), each with the user's
        question, the answer and the user's action (``question`` / ``answer`` are None with
        ``content_missing`` saying why when the content cannot be shown)."""
        from llmtrace.read.find import check_limit, list_traces

        if not isinstance(session_id, str) or not session_id.strip():
            raise ConfigError(f"session_id must be a non-empty str, not {session_id!r}")
        page = list_traces(self._db, self.prices, limit=check_limit(limit), order="oldest", count=False,
                           session_id=session_id)
        turns = []
        for n, row in enumerate(page.traces, 1):
            doc = self.get_trace(row["trace_id"]).to_dict()
            turns.append({**row, "turn": n, **turn_of(doc)})
        return {"session_id": session_id, "turns": turns, "more": page.next_cursor is not None}

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """Two traces side by side: ``{"a": doc, "b": doc, "sections": [{"title", "rows": [{"field",
        "a", "b", "same"}]}]}`` for the trace (status, latency, tokens, cost, the user's action)
        and each pair of LLM calls in order (model, params, tokens, latency, input, output)."""
        return compare_docs(self.get_trace(a).to_dict(), self.get_trace(b).to_dict())

    def filter_values(self) -> dict[str, list[str]]:
        """Values of feature, prompt version, environment, team and model seen in recent traces."""
        from llmtrace.read.find import recent_values

        return recent_values(self._db)

    def stats(self, by: str | Iterable[str] | None = "model", *, since: Any = None, until: Any = None,
              **filters: Any) -> list[dict[str, Any]]:
        """LLM calls grouped ``by`` model, feature, prompt-version, day... (see ``Tracer.stats``)."""
        from llmtrace.read.queries import time_bound
        from llmtrace.read.stats import compute_stats

        return compute_stats(self._db, self.prices, by=by, since=time_bound(since), until=time_bound(until, "until"),
                             **_text_filters(self._user_filter(filters)))

    def stats_views(self, views: Iterable[str | Iterable[str] | None], *, since: Any = None, until: Any = None,
                    **filters: Any) -> list[list[dict[str, Any]]]:
        """``stats`` grouped several ways over one read of the calls: ``stats_views(["model", "day"])``
        gives what ``stats("model")`` and ``stats("day")`` give, for the price of one."""
        from llmtrace.read.queries import time_bound
        from llmtrace.read.stats import compute_views

        return compute_views(self._db, self.prices, views=views, since=time_bound(since),
                             until=time_bound(until, "until"), **_text_filters(self._user_filter(filters)))

    def stats_dataframe(self, by: str | Iterable[str] | None = "model", **kwargs: Any):
        """``stats(...)`` as a pandas DataFrame (``pip install 'llmtrace-core[eval]'``)."""
        from llmtrace.read.export import dataframe

        return dataframe(self.stats(by, **kwargs))

    def alerts(self, *, since: Any = "24h", until: Any = None, rules: AlertRules | None = None,
               warmup: Any = "1d", **filters: Any) -> list[Alert]:
        """The alerts the recorded calls fire, oldest first (see ``Tracer.alerts``)."""
        from llmtrace.read.alerts import evaluate
        from llmtrace.read.queries import time_bound
        from llmtrace.store.retention import parse_age

        if rules is not None and not isinstance(rules, AlertRules):
            raise ConfigError("rules must be an llmtrace.AlertRules(...)")
        return evaluate(self._db, self.prices, rules or AlertRules(), since=time_bound(since),
                        until=time_bound(until, "until"), warmup=parse_age(warmup) or timedelta(0),
                        **_text_filters(self._user_filter(filters)))

    # -- eval sets ------------------------------------------------------------------------------

    def export_eval_set(self, path: str, *, format: str = "jsonl", **filters: Any) -> int:
        """Write feedback-labelled examples to ``path``; returns the number of rows (see ``Tracer.export_eval_set``)."""
        from llmtrace.read.export import export_eval_set

        return export_eval_set(self._db, path, format=format, prices=self.prices, **_times(filters))

    def eval_dataframe(self, **filters: Any):
        """The eval rows as a pandas DataFrame (``pip install 'llmtrace-core[eval]'``)."""
        from llmtrace.read.export import eval_rows, to_dataframe

        return to_dataframe(eval_rows(self._db, prices=self.prices, **_times(filters)))

    def eval_dataset(self, **filters: Any):
        """The eval rows as a Hugging Face ``datasets.Dataset`` (``pip install 'llmtrace-core[hf]'``)."""
        from llmtrace.read.export import eval_rows, to_hf_dataset

        return to_hf_dataset(eval_rows(self._db, prices=self.prices, **_times(filters)))

    # -- the database ---------------------------------------------------------------------------

    def verify_audit(self) -> Report:
        """Walk the audit chain and compare it with the tables; ``.ok``, ``.first``, ``.problems``."""
        from llmtrace.store.audit import verify

        return verify(self._db)

    def schema_version(self) -> int:
        return self._db.schema_version()

    def _user_filter(self, filters: dict[str, Any]) -> dict[str, Any]:
        filters = dict(filters)
        user = filters.pop("user", None)
        if user is not None:
            if not isinstance(user, (str, int)) or isinstance(user, bool):
                raise ConfigError(f"user must be a user id (a str) or its stored hash u_..., not {user!r}")
            if is_user_hash(str(user)):
                filters["user_hash"] = str(user)
            else:
                key = self._hash_key()
                if not key:  # (db harden's reader role cannot see the key; or no user id was ever recorded)
                    raise ConfigError("cannot hash this user id here: the database's user-id hash key is not "
                                      "readable (or no user id was recorded yet); pass the stored hash (u_...) "
                                      "or set LLMTRACE_HASH_KEY")
                filters["user_hash"] = hash_user_id(user, key)
        return filters


def check_id(trace_id: Any, max_chars: int = 128) -> str:
    """A trace id as stored: a non-empty string of at most ``max_chars`` characters."""
    if trace_id is None or (isinstance(trace_id, str) and not trace_id.strip()):
        raise ConfigError("trace_id must be a non-empty string")
    text = str(trace_id)
    if len(text) > max_chars:
        raise ConfigError(f"trace_id is at most {max_chars} characters; got {len(text)}")
    return text


def _text_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """Attribute filters of stats and alerts: each a str (a feature name, a model...) or None."""
    for name, value in filters.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a str (e.g. {name}='refunds'), not {value!r}")
    return filters


def _times(filters: dict[str, Any]) -> dict[str, Any]:
    from llmtrace.read.queries import time_bound

    out = dict(filters)
    for name in ("since", "until"):
        if out.get(name) is not None:
            out[name] = time_bound(out[name], name)
    return out


def _can_read_content(db: Database) -> bool:
    import sqlalchemy as sa

    from llmtrace.store import schema

    db.ensure_schema()
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.select(schema.contents.c.id).limit(1)).all()
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig if exc.orig is not None else exc).lower()
        if "denied" in text or "privilege" in text:
            return False
        raise StoreError(f"cannot read {db.display_url}: {type(exc.orig or exc).__name__}: "
                         f"{text.splitlines()[0][:300]}") from exc
    return True


def _load_without_content(db: Database, trace_id: str, prices: PriceBook) -> Trace:
    """``load_trace`` for a role that may not read the content table: the same document, every
    content field null and each call's ``content_missing`` "not_readable" (unless never captured)."""
    import sqlalchemy as sa

    from llmtrace.base.errors import TraceNotFound
    from llmtrace.read import document
    from llmtrace.store import schema

    db.ensure_schema()
    with db.engine.connect() as conn:
        trace_row = conn.execute(sa.select(schema.traces).where(schema.traces.c.trace_id == trace_id)).first()
        spans = document._rows(conn, schema.spans, trace_id, schema.spans.c.started_at)
        if trace_row is None and not spans:
            raise TraceNotFound(trace_id)
        llms = {r["span_id"]: r for r in document._rows(conn, schema.llm_calls, trace_id)}
        tools = document._rows(conn, schema.tool_calls, trace_id, schema.tool_calls.c.position)
        chunk_rows = document._rows(conn, schema.chunks, trace_id, schema.chunks.c.rank)
        vals = document._rows(conn, schema.validations, trace_id, schema.validations.c.at)
        fbs = document._rows(conn, schema.feedback, trace_id, schema.feedback.c.at)
    doc = document._assemble(trace_id, dict(trace_row._mapping) if trace_row else None, spans, llms, tools, chunk_rows, vals,
                      fbs, {})
    document._add_costs(doc, prices)
    for call in doc["llm_calls"]:
        if call["content_missing"] != "not_captured":
            call["content_missing"] = "not_readable"
    doc["content_readable"] = False
    return document.Trace(doc)


def turn_of(doc: dict[str, Any]) -> dict[str, Any]:
    """A trace as one turn of a conversation: the user's question (the last user message of its
    first LLM call), the answer (the last call's parsed output, else its raw completion), the
    user's last action and why content is missing, if it is."""
    calls = doc["llm_calls"]
    question = answer = missing = None
    if calls:
        first, last = calls[0], calls[-1]
        messages = first["input_messages"] if isinstance(first["input_messages"], list) else []
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        question = users[-1] if users else None
        answer = last["parsed"] if last["parsed"] is not None else last["raw_completion"]
        missing = first["content_missing"] or last["content_missing"]
    else:
        root = doc["spans"][0] if doc["spans"] else {}
        question, answer = root.get("inputs"), root.get("outputs")
    feedback = doc["feedback"]
    parse_error = calls[-1]["parse_error"] if calls else None
    return {"question": question, "answer": answer, "content_missing": missing, "parse_error": parse_error,
            "last_feedback": feedback[-1] if feedback else None, "error": next(
                (c["error"] for c in calls if c.get("error")), None)}


_TRACE_FIELDS = (("status", ("status",)), ("name", ("name",)), ("started", ("started_at",)),
                 ("latency ms", ("latency_ms",)), ("feature", ("feature",)), ("prompt version", ("prompt_version",)),
                 ("LLM calls", ("totals", "llm_calls")), ("input tokens", ("totals", "input_tokens")),
                 ("output tokens", ("totals", "output_tokens")), ("cost USD", ("totals", "cost_usd")),
                 ("errors", ("totals", "errors")))
_CALL_FIELDS = (("model asked", ("model",)), ("model version", ("model_version",)), ("provider", ("provider",)),
                ("params", ("params",)), ("system prompt", ("system_prompt",)), ("input messages", ("input_messages",)),
                ("retrieved", ("retrieved",)), ("input tokens", ("tokens", "input")), ("output tokens", ("tokens", "output")),
                ("latency ms", ("latency_ms", "total")), ("ttft ms", ("latency_ms", "ttft")), ("cost USD", ("cost_usd",)),
                ("finish reason", ("finish_reason",)), ("tool calls", ("tool_calls",)),
                ("raw completion", ("raw_completion",)), ("parsed", ("parsed",)), ("parse error", ("parse_error",)),
                ("status", ("status",)), ("error", ("error",)))


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def compare_docs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """See ``Store.compare``: the fields of two trace documents, side by side, marked same or not."""
    from itertools import zip_longest

    def rows(x: Any, y: Any, fields: tuple) -> list[dict[str, Any]]:
        return [{"field": name, "a": _get(x, path), "b": _get(y, path), "same": _get(x, path) == _get(y, path)}
                for name, path in fields]

    def action(doc: dict[str, Any]) -> Any:
        return doc["feedback"][-1]["action"] if doc["feedback"] else None

    trace_rows = rows(a, b, _TRACE_FIELDS)
    trace_rows.append({"field": "user's last action", "a": action(a), "b": action(b), "same": action(a) == action(b)})
    sections = [{"title": "trace", "rows": trace_rows}]
    for n, (x, y) in enumerate(zip_longest(a["llm_calls"], b["llm_calls"]), 1):
        retrieved = [{k: c.get(k) for k in ("source_id", "score", "content")} for c in (x or {}).get("retrieved", [])]
        other = [{k: c.get(k) for k in ("source_id", "score", "content")} for c in (y or {}).get("retrieved", [])]
        section = rows(x, y, _CALL_FIELDS)
        for row in section:
            if row["field"] == "retrieved":
                row.update(a=retrieved if x else None, b=other if y else None, same=retrieved == other)
        sections.append({"title": f"LLM call {n}", "rows": section})
    return {"a": a, "b": b, "sections": sections}


__all__ = ["DEFAULT_URL", "Store", "check_id", "compare_docs", "turn_of"]
