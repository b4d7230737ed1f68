"""The Tracer: settings, the store, the writer, trace contexts, feedback and validations."""

from __future__ import annotations

import atexit
import contextvars
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger

from llmtrace.base.alerting import Alert, AlertEngine, AlertRules, AlertSink
from llmtrace.base.config import (
    CAPTURE_MODES,
    SETTING_NAMES,
    UNSET,
    Capture,
    Settings,
    _Unset,
    check_prices,
    check_timeout,
    make_settings,
)
from llmtrace.base.cost import PriceBook, default_pricebook, prices_from_env
from llmtrace.base.errors import ConfigError, DataLossWarning, StoreError
from llmtrace.base.ids import ordered_id
from llmtrace.base.privacy import USER_HASH_KEY, Processor
from llmtrace.capture import events
from llmtrace.capture.content import Content
from llmtrace.capture.labels import check_metadata, check_tags, check_trace_id, feedback_fields, validation_fields
from llmtrace.capture.live_alerts import LiveAlerts
from llmtrace.capture.recorder import Recorder
from llmtrace.capture.redact import processor_list
from llmtrace.capture.writer import Writer
from llmtrace.read.facade import Store
from llmtrace.store.engine import Database, new_secret
from llmtrace.store.inserts import storable_text

if TYPE_CHECKING:
    from llmtrace.read.document import Trace
    from llmtrace.store.audit import Report

_MAX_ID = 128

_live: weakref.WeakSet[Tracer] = weakref.WeakSet()


class TraceScope:
    """``with tracer.trace(...) as t:`` — everything inside is one trace; ``t.trace_id`` is its id."""

    def __init__(self, tracer: Tracer, ctx: events.TraceContext) -> None:
        self._tracer = tracer
        self._ctx = ctx
        self._token: contextvars.Token[events.TraceContext | None] | None = None

    @property
    def trace_id(self) -> str:
        return self._ctx.trace_id

    @property
    def span_id(self) -> str:
        return self._ctx.span_id or ""

    def __enter__(self) -> TraceScope:
        self._token = events.current_trace.set(self._ctx)
        self._tracer._submit((events.START, time.perf_counter_ns(), self._ctx.span_id, None, "chain",
                              self._ctx.name or "trace", self._ctx, None, None, None, None))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        t = time.perf_counter_ns()
        if exc is not None:
            self._tracer._submit((events.ERROR, t, self._ctx.span_id, exc, None))
        else:
            self._tracer._submit((events.END, t, self._ctx.span_id, None, None, None))
        if self._token is not None:
            try:
                events.current_trace.reset(self._token)
            except ValueError:  # exited in another context (e.g. a generator): just clear it
                events.current_trace.set(None)
            self._token = None

    async def __aenter__(self) -> TraceScope:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.__exit__(exc_type, exc, tb)


class Tracer:
    """Records LLM calls into SQL tables. One per process is typical; handlers share it.

    ``Tracer(url=None, *, capture="redacted", content_ttl_days=30, **settings)``: with no URL,
    ``LLMTRACE_DATABASE_URL``, else ``sqlite:///llmtrace.db``.
    """

    def __init__(self, url: str | None = None, *, capture: Capture | None = None,
                 content_ttl_days: float | None | _Unset = UNSET, processors: list[Processor | str] | None = None,
                 prices: dict[str, dict[str, float]] | None = None, on_alert: AlertSink | None = None,
                 alert_rules: AlertRules | None = None,
                 queue_size: int | None = None, on_queue_full: Literal["block", "drop"] | None = None,
                 queue_block_seconds: float | None = None, batch_size: int | None = None,
                 flush_interval_seconds: float | None = None, max_field_chars: int | None = None,
                 hash_key: str | None = None, environment: str | None = None, release: str | None = None,
                 open_span_timeout_seconds: float | None = None, write_retries: int | None = None,
                 purge_interval_seconds: float | None = None, audit: bool | None = None,
                 redaction_hash: bool | None = None, alerts: bool | None = None,
                 read_flush_timeout_seconds: float | None = None, queue_max_bytes: int | None = None,
                 spill_dir: str | None = None, exit_timeout_seconds: float | None = None) -> None:
        """Every setting but ``url`` is keyword-only; one left out (None) comes from its ``LLMTRACE_*``
        environment variable, else its default (see the README's settings table)."""
        settings = {k: v for k, v in locals().items()
                    if k in SETTING_NAMES and k not in ("url", "content_ttl_days") and v is not None}
        if content_ttl_days is not UNSET:
            settings["content_ttl_days"] = content_ttl_days
        self.settings: Settings = make_settings(url, **settings)
        checked_processors = processor_list(processors)
        prices = check_prices(prices) if prices is not None else prices_from_env()
        self._prices = PriceBook(prices) if prices else default_pricebook()
        self._store = Database(self.settings.url)
        self._wall_offset = time.time_ns() - time.perf_counter_ns()  # wall-clock ns = perf_counter_ns() + this
        self._hash_key: str | None = self.settings.hash_key
        self._hash_key_retry_at = 0.0
        if on_alert is not None and not callable(on_alert):
            raise ConfigError(f"on_alert must be a callable taking an llmtrace.Alert, not {on_alert!r}")
        if alert_rules is not None and not isinstance(alert_rules, AlertRules):
            raise ConfigError("alert_rules must be an llmtrace.AlertRules(...)")
        self._alert_rules = alert_rules or AlertRules()
        self._on_alert = on_alert
        self._reader = Store._of(self._store, self._prices, self._user_hash_key)
        self._writer = self._new_writer(checked_processors)
        self._writer.start()
        self._closed = False
        _live.add(self)
        _install_process_hooks()

    def _new_writer(self, processors: list[Processor]) -> Writer:
        s = self.settings
        def problem(where: str, exc: Exception) -> None:
            self._writer.problem(where, exc)

        content = Content(capture=s.capture, ttl_days=s.content_ttl_days, max_field_chars=s.max_field_chars,
                          processors=processors, hash_key=self._user_hash_key, redaction_hash=s.redaction_hash,
                          on_problem=problem)
        recorder = Recorder(wall_offset_ns=self._wall_offset, content=content, hash_key=self._user_hash_key,
                            environment=s.environment, release=s.release, on_problem=problem)
        recorder.audit = s.audit
        recorder.prices = self._prices
        if s.alerts or self._on_alert is not None:
            recorder.alerts = LiveAlerts(AlertEngine(self._alert_rules, self._prices), self._on_alert,
                                         lambda where, exc: self._writer.problem(where, exc))
        return Writer(self._store, recorder, queue_size=s.queue_size, on_full=s.on_queue_full,
                      block_seconds=s.queue_block_seconds, batch_size=s.batch_size,
                      interval=s.flush_interval_seconds, retries=s.write_retries,
                      open_span_timeout=s.open_span_timeout_seconds, purge_interval=s.purge_interval_seconds,
                      max_bytes=s.queue_max_bytes, spill_dir=s.spill_dir)

    # -- used by integrations (private, but stable between llmtrace packages) -----------------

    def _submit(self, ev: tuple) -> None:
        self._writer.submit(ev)

    def _user_hash_key(self) -> str:
        """The user-id hash key: configured, else this database's (made once, shared by every process).
        While the database cannot be read, asking again waits 30 s: the writer goes on meanwhile."""
        if self._hash_key is None:
            now = time.monotonic()
            if now < self._hash_key_retry_at:
                raise StoreError("the user-id hash key was not readable a moment ago (the database is away)")
            try:
                self._hash_key = self._store.meta_value(USER_HASH_KEY, new_secret)
            except Exception:
                self._hash_key_retry_at = now + 30.0
                raise
        return self._hash_key

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def url(self) -> str:
        return self.settings.url

    # -- public -------------------------------------------------------------------------------

    def trace(self, name: str | None = None, trace_id: str | None = None, user_id: Any = None, *,
              session_id: str | None = None, feature: str | None = None, team: str | None = None,
              prompt_version: str | None = None, tags: list[str] | None = None,
              metadata: dict[str, Any] | None = None, capture: str | None = None) -> TraceScope:
        """A context manager making everything inside (several chains, app code) one trace."""
        if capture is not None and capture not in CAPTURE_MODES:
            raise ConfigError(f"capture must be one of {CAPTURE_MODES}, not {capture!r}")
        generated = trace_id is None
        trace_id = _check_id(trace_id) if trace_id is not None else ordered_id()
        metadata, tags = check_metadata(metadata), check_tags(tags)
        attrs = {k: v for k, v in {
            "user_id": user_id, "session_id": session_id, "feature": feature, "team": team,
            "prompt_version": prompt_version, "tags": tags, "metadata": metadata, "capture": capture,
        }.items() if v is not None}
        return TraceScope(self, events.TraceContext(trace_id, ordered_id(), name, attrs, generated))

    def record_feedback(self, trace_id: str, action: str, *, score: float | None = None,
                        correction: str | None = None, comment: str | None = None, source: str = "user") -> None:
        """Attach the user's action to a trace, now or hours later, from any process.

        The trace need not be written yet: feedback that arrives first shows once the trace does.
        """
        trace_id = _check_id(trace_id)
        fields = feedback_fields(action, score, correction, comment, source)
        size = _size(fields)
        self._writer.submit_sized((events.FEEDBACK, time.perf_counter_ns(), trace_id, fields, size), size)

    def record_validation(self, trace_id: str, *, rule: str, passed: bool, detail: Any = None,
                          span_id: str | None = None) -> None:
        """Record the outcome of a validation rule your code ran over a trace's answer."""
        trace_id = _check_id(trace_id)
        fields = validation_fields(rule, passed, detail, span_id)
        size = _size(fields)
        self._writer.submit_sized((events.VALIDATION, time.perf_counter_ns(), trace_id, fields, size), size)

    # -- reading (what is queued is written first; then the read facade answers) ----------------

    @property
    def store(self) -> Store:
        """The read facade on this tracer's database (``llmtrace.Store``): reads without flushing first."""
        return self._reader

    def _read(self) -> Store:
        self.flush(timeout=self.settings.read_flush_timeout_seconds)
        return self._reader

    def get_trace(self, trace_id: str) -> Trace:
        """The recorded trace; ``.to_dict()`` is the SIGNALS.md document. Raises ``TraceNotFound``."""
        if isinstance(trace_id, str):
            trace_id = storable_text(trace_id, nul=self._store.dialect == "postgresql")  # (as stored)
        return self._read().get_trace(_check_id(trace_id))

    def export_eval_set(self, path: str, *, format: str = "jsonl", **filters: Any) -> int:
        """Write feedback-labelled examples to ``path``; returns the number of rows.

        Formats: ``jsonl``, ``openai``, ``dataset``, ``parquet``. Filters: ``labels`` (positive /
        negative / corrected), ``feature``, ``model``, ``prompt_version``, ``since``, ``until``,
        ``validation`` ("passed" / "failed"), ``last_call_only``.
        """
        return self._read().export_eval_set(path, format=format, **filters)

    def eval_dataframe(self, **filters: Any):
        """The same rows as a pandas DataFrame (``pip install 'llmtrace-core[eval]'``)."""
        return self._read().eval_dataframe(**filters)

    def eval_dataset(self, **filters: Any):
        """The same rows as a Hugging Face ``datasets.Dataset`` (``pip install 'llmtrace-core[hf]'``)."""
        return self._read().eval_dataset(**filters)

    def stats(self, by: str | list[str] | None = "model", *, since: Any = None, until: Any = None,
              **filters: Any) -> list[dict[str, Any]]:
        """LLM calls grouped ``by`` model, version, provider, feature, team, user, prompt-version,
        environment, day, hour or turn (several: ``"feature,model"``), one dict per group: calls,
        tokens, cost, latency and TTFT p50/p95/p99, error rate by type, parse and validation failure
        rates, feedback mix. ``since``/``until``: '7d', a date or datetime. Filters: ``feature``,
        ``model``, ``team``, ``prompt_version``, ``environment``, ``user`` (the raw id or its hash)."""
        return self._read().stats(by, since=since, until=until, **filters)

    def stats_dataframe(self, by: str | list[str] | None = "model", **kwargs: Any):
        """``stats(...)`` as a pandas DataFrame (``pip install 'llmtrace-core[eval]'``)."""
        return self._read().stats_dataframe(by, **kwargs)

    def find_traces(self, *, limit: int = 20, since: Any = None, until: Any = None, **filters: Any) -> list[dict[str, Any]]:
        """The newest traces matching every filter given, one summary dict each (id, name, time,
        status, latency, feature, calls, models, tokens, cost, error types, the user's last action).

        Filters: ``feature``, ``team``, ``environment``, ``model``, ``prompt_version``, ``user`` (raw id or hash),
        ``status`` (ok / error), ``error_type``, ``validation_failed=True``, ``action`` (the
        user's last: accepted / edited / retried / abandoned), ``min_cost`` (USD), ``min_latency_ms``,
        ``chunk_source`` (a retrieved chunk's source id), ``text`` (words in the stored, redacted
        content), ``since`` / ``until`` ('7d', a date or datetime)."""
        return self._read().find_traces(limit=limit, since=since, until=until, **filters)

    def alerts(self, *, since: Any = "24h", until: Any = None, rules: AlertRules | None = None,
               warmup: Any = "1d", **filters: Any) -> list[Alert]:
        """The alerts the recorded calls fire (cost spike, latency spike, error rate, context limit),
        oldest first. Calls in ``warmup`` before ``since`` build the baselines without firing.
        ``rules`` defaults to the tracer's ``alert_rules``; filters: ``feature``, ``model``, ``team``,
        ``prompt_version``, ``environment``."""
        return self._read().alerts(since=since, until=until, rules=rules or self._alert_rules, warmup=warmup,
                                   **filters)

    def purge(self, *, older_than: Any = None, dry_run: bool = False, batch_size: int = 1000,
              labels: bool = False) -> dict[str, int]:
        """Delete content past its expiry (or older than ``older_than``: '7d', '12h', days); metadata stays.
        The labels users gave (feedback corrections and comments) are kept unless ``labels=True``.

        Returns ``{"content_rows": n, "traces": m, "dry_run": 0|1}``.
        """
        from llmtrace.store.retention import purge

        self.flush(timeout=self.settings.read_flush_timeout_seconds)
        return purge(self._store, older_than=older_than, dry_run=dry_run, batch_size=batch_size, labels=labels)

    def verify_audit(self) -> Report:
        """Walk the audit chain and compare it with the tables; ``.ok``, ``.first``, ``.problems``."""
        return self._read().verify_audit()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything recorded so far is written, ``timeout`` seconds at most (database
        waits included). False if anything is still unwritten (queued, waiting for the database,
        spilled to a local file) or was lost (dropped, quarantined) since the previous flush."""
        return self._writer.flush(check_timeout(timeout))

    def close(self, timeout: float | None = 10) -> None:
        """Write what is queued (``timeout`` seconds at most), spill what is left to a local file
        (said on stderr), stop the writer and release the database."""
        if self._closed:
            return
        self._closed = True
        self._writer.stop(timeout)
        self._store.dispose()
        _live.discard(self)

    def health(self) -> dict[str, Any]:
        """Counts of what was written, dropped and failed, and the queue depth right now."""
        return self._writer.health()

    def schema_version(self) -> int:
        return self._store.schema_version()

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Tracer({self._store.engine.url.render_as_string(hide_password=True)!r})"

    def _after_fork(self) -> None:
        # The child has the parent's queue but no writer threads: the parent writes its own events.
        self._store.after_fork()
        self._writer.after_fork()


def _check_id(trace_id: Any) -> str:
    return check_trace_id(trace_id, _MAX_ID)


def _size(fields: dict[str, Any]) -> int:
    """About what a feedback's or validation's fields hold (their text), counted against the
    queue's byte bound while they wait: known here for the price of a few ``len`` calls."""
    return 200 + sum(len(v) for v in fields.values() if isinstance(v, str))


_default: Tracer | None = None
_default_lock = threading.Lock()


def default_tracer() -> Tracer:
    """The process-wide Tracer used by handlers created without one (from the environment)."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            _default = Tracer()
        return _default


def _drain_all(clock: Callable[[], float] = time.monotonic) -> None:
    """At interpreter exit: every live tracer writes what it can within its ``exit_timeout_seconds``
    (one deadline for all), then spills the rest and says so on stderr (``Tracer.close``)."""
    tracers = list(_live)
    if not tracers:
        return
    start = clock()
    deadline = start + max(t.settings.exit_timeout_seconds for t in tracers)
    for tracer in tracers:
        left = min(tracer.settings.exit_timeout_seconds, deadline - clock())
        try:
            tracer.close(timeout=max(0.0, left))
        except Exception as exc:  # never raised at exit; said, since records may be left behind
            _say_problem("the exit drain", tracer, exc)


def _reinit_after_fork() -> None:
    for tracer in list(_live):
        try:
            tracer._after_fork()
        except Exception as exc:  # the child goes on; its records would be lost: said
            _say_problem("restarting the writer after fork()", tracer, exc)


def _say_problem(what: str, tracer: Tracer, exc: Exception) -> None:
    message = (f"llmtrace: {what} failed for {tracer!r} ({type(exc).__name__}): records it held may not be "
               "written; see tracer.health()")
    logger.error(message)
    try:
        warnings.warn(message, DataLossWarning, stacklevel=2)
    except Exception:  # noqa: BLE001 - (-W error): the log line above stays
        pass


_hooks_installed = False
_hooks_lock = threading.Lock()  # (not _default_lock: default_tracer() holds that while it makes a Tracer)


def _install_process_hooks() -> None:
    """At the first Tracer (not at import: there is nothing to drain or restart before one): the exit
    drain, and fresh writers in a forked child."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(_drain_all)
    if hasattr(os, "register_at_fork"):  # (not on Windows)
        os.register_at_fork(after_in_child=_reinit_after_fork)
