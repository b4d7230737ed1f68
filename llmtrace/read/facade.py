"""``llmtrace.Store``: everything you can ask of a recorded database, without recording anything.

The CLI, notebooks, the eval-set export and the UI read through this; ``Tracer``'s read methods
flush what the tracer has queued and then delegate here. A Store starts no writer thread and never
creates or migrates tables: a database that is not there is a ``StoreError`` that says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from llmtrace.base.alerting import Alert, AlertRules
from llmtrace.base.config import DEFAULT_URL, database_url
from llmtrace.base.cost import PriceBook, default_pricebook, prices_from_env
from llmtrace.base.errors import ConfigError
from llmtrace.base.privacy import USER_HASH_KEY, hash_user_id, is_user_hash
from llmtrace.store.engine import Database

_NO_USER = "0" * 64  # a user filter on a database that has never hashed a user id matches nothing


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

    @classmethod
    def _of(cls, database: Database, prices: PriceBook, hash_key: Callable[[], str | None]) -> Store:
        """A Tracer's reader: its own engine, prices and user-id hash key."""
        self = cls.__new__(cls)
        self._db, self.prices, self._hash_key = database, prices, hash_key
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

    def get_trace(self, trace_id: str):
        """The recorded trace; ``.to_dict()`` is the SIGNALS.md document. Raises ``TraceNotFound``."""
        from llmtrace.read.document import load_trace

        return load_trace(self._db, check_id(trace_id), self.prices)

    # -- many traces ----------------------------------------------------------------------------

    def find_traces(self, *, limit: int = 20, since: Any = None, until: Any = None, **filters: Any) -> list[dict[str, Any]]:
        """The newest traces matching every filter given, one summary dict each (see ``Tracer.find_traces``)."""
        from llmtrace.read.find import find_traces
        from llmtrace.read.queries import time_bound

        return find_traces(self._db, self.prices, limit=limit, since=time_bound(since),
                           until=time_bound(until, "until"), **self._user_filter(filters))

    def stats(self, by: str | Iterable[str] | None = "model", *, since: Any = None, until: Any = None,
              **filters: Any) -> list[dict[str, Any]]:
        """LLM calls grouped ``by`` model, feature, prompt-version, day... (see ``Tracer.stats``)."""
        from llmtrace.read.queries import time_bound
        from llmtrace.read.stats import compute_stats

        return compute_stats(self._db, self.prices, by=by, since=time_bound(since), until=time_bound(until, "until"),
                             **self._user_filter(filters))

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
                        **self._user_filter(filters))

    # -- eval sets ------------------------------------------------------------------------------

    def export_eval_set(self, path: str, *, format: str = "jsonl", **filters: Any) -> int:
        """Write feedback-labelled examples to ``path``; returns the number of rows (see ``Tracer.export_eval_set``)."""
        from llmtrace.read.export import export_eval_set

        return export_eval_set(self._db, path, format=format, prices=self.prices, **filters)

    def eval_dataframe(self, **filters: Any):
        """The eval rows as a pandas DataFrame (``pip install 'llmtrace-core[eval]'``)."""
        from llmtrace.read.export import eval_rows, to_dataframe

        return to_dataframe(eval_rows(self._db, prices=self.prices, **filters))

    def eval_dataset(self, **filters: Any):
        """The eval rows as a Hugging Face ``datasets.Dataset`` (``pip install 'llmtrace-core[hf]'``)."""
        from llmtrace.read.export import eval_rows, to_hf_dataset

        return to_hf_dataset(eval_rows(self._db, prices=self.prices, **filters))

    # -- the database ---------------------------------------------------------------------------

    def verify_audit(self):
        """Walk the audit chain and compare it with the tables; ``.ok``, ``.first``, ``.problems``."""
        from llmtrace.store.audit import verify

        return verify(self._db)

    def schema_version(self) -> int:
        return self._db.schema_version()

    def _user_filter(self, filters: dict[str, Any]) -> dict[str, Any]:
        user = filters.pop("user", None)
        if user is not None:
            if is_user_hash(str(user)):
                filters["user_hash"] = str(user)
            else:
                key = self._hash_key()
                filters["user_hash"] = hash_user_id(user, key) if key else _NO_USER
        return filters


def check_id(trace_id: Any, max_chars: int = 128) -> str:
    """A trace id as stored: a non-empty string of at most ``max_chars`` characters."""
    if trace_id is None or (isinstance(trace_id, str) and not trace_id.strip()):
        raise ConfigError("trace_id must be a non-empty string")
    text = str(trace_id)
    if len(text) > max_chars:
        raise ConfigError(f"trace_id is at most {max_chars} characters; got {len(text)}")
    return text


__all__ = ["DEFAULT_URL", "Store", "check_id"]
