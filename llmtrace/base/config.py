"""Settings: one frozen object, precedence explicit argument > LLMTRACE_* variable > default."""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, fields
from typing import Any, Literal

from llmtrace.base.errors import ConfigError

Capture = Literal["full", "redacted", "metadata"]
CAPTURE_MODES: tuple[Capture, ...] = ("full", "redacted", "metadata")
QUEUE_POLICIES = ("block", "drop")
DEFAULT_URL = "sqlite:///llmtrace.db"


@dataclass(frozen=True)
class Settings:
    """A Tracer's settings, frozen: explicit argument > ``LLMTRACE_*`` environment variable > default."""

    url: str = DEFAULT_URL
    capture: str = "redacted"
    content_ttl_days: float | None = 30
    queue_size: int = 100_000
    on_queue_full: str = "block"  # block up to queue_block_seconds, then drop and count
    queue_block_seconds: float = 0.05  # per recording thread and call, in all (not per event)
    queue_max_bytes: int = 64 << 20  # records waiting in memory (queued + converted, unwritten); past it: spill
    batch_size: int = 5_000  # events per write; the writer also wakes when this many wait
    flush_interval_seconds: float = 1.0  # the writer writes at least this often (flush() for now)
    max_field_chars: int = 1_000_000
    hash_key: str | None = None
    environment: str | None = None
    release: str | None = None
    open_span_timeout_seconds: float = 3_600.0
    write_retries: int = 3
    purge_interval_seconds: float = 0.0  # > 0: the writer also purges expired content this often
    audit: bool = False  # join every written row to the tamper-evident hash chain (llmtrace audit verify)
    redaction_hash: bool = False  # placeholders carry a keyed hash ([EMAIL:3f2a9c1b0d]) so equal values join
    alerts: bool = False  # evaluate the alert rules live as calls are written (on by itself with on_alert=)
    read_flush_timeout_seconds: float = 10.0  # a Tracer's read methods first write what is queued, this long at most
    spill_dir: str | None = None  # unwritten records go here (default ./llmtrace-spill in the working directory)
    exit_timeout_seconds: float = 5.0  # at exit, wait this long for the database, then spill what is left


SETTING_NAMES = frozenset(f.name for f in fields(Settings))


class _Unset:
    """The default of a setting whose None means something (``content_ttl_days=None``: keep forever)."""

    def __repr__(self) -> str:
        return "<from the environment, else the default>"


UNSET = _Unset()

_ZERO_OK = ("write_retries", "purge_interval_seconds", "exit_timeout_seconds")
_ENV = {
    "url": "LLMTRACE_DATABASE_URL",
    "capture": "LLMTRACE_CAPTURE",
    "content_ttl_days": "LLMTRACE_CONTENT_TTL_DAYS",
    "queue_size": "LLMTRACE_QUEUE_SIZE",
    "on_queue_full": "LLMTRACE_ON_QUEUE_FULL",
    "hash_key": "LLMTRACE_HASH_KEY",
    "environment": "LLMTRACE_ENVIRONMENT",
    "release": "LLMTRACE_RELEASE",
    "redaction_hash": "LLMTRACE_REDACTION_HASH",
    "purge_interval_seconds": "LLMTRACE_PURGE_INTERVAL_SECONDS",
    "audit": "LLMTRACE_AUDIT",
    "alerts": "LLMTRACE_ALERTS",
    "queue_max_bytes": "LLMTRACE_QUEUE_MAX_BYTES",
    "spill_dir": "LLMTRACE_SPILL_DIR",
    "exit_timeout_seconds": "LLMTRACE_EXIT_TIMEOUT_SECONDS",
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name == "content_ttl_days":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "never")):
            return None
        ttl = _number(name, value, "a positive number of days (e.g. 30 or 0.5), or None to keep content")
        if not ttl > 0:
            raise ConfigError(f"content_ttl_days must be positive (e.g. 30 or 0.5), or None to keep content; got {value!r}")
        return ttl
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    if default is None or isinstance(default, str):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be text (a str), not {type(value).__name__}")
        return value
    kind = type(default)
    what = "a whole number" if kind is int else "a number"
    out: Any = _number(name, value, f"{what} (e.g. {default})")
    if kind is int:
        if out != int(out):
            raise ConfigError(f"{name} must be {what} (e.g. {default}), not {value!r}")
        out = int(out)
    if out < 0 or (out == 0 and name not in _ZERO_OK):
        raise ConfigError(f"{name} must be positive, not {value!r}")
    return out


def _number(name: str, value: Any, what: str) -> float:
    """A finite number from an argument or an environment variable's text; else a ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be {what}, not {_short(value)}")
    try:
        out = float(value)
    except (ValueError, OverflowError):  # (text that is no number, an int beyond a float's range)
        raise ConfigError(f"{name} must be {what}, not {_short(value)}") from None
    if not math.isfinite(out) or out > 1e15:
        raise ConfigError(f"{name} must be {what}: a finite number of sensible size, not {_short(value)}")
    return out


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """A wait in seconds: None (no limit) or a finite number >= 0 that a thread can wait."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigError(f"{name} is a number of seconds (e.g. 5) or None to wait as long as it takes; "
                          f"not {_short(timeout)}")
    try:
        seconds = float(timeout)
    except OverflowError:
        seconds = math.inf
    if not 0 <= seconds <= threading.TIMEOUT_MAX:
        raise ConfigError(f"{name} is a number of seconds from 0 to {threading.TIMEOUT_MAX:.0f}, or None to wait as "
                          f"long as it takes; not {_short(timeout)}")
    return seconds


def check_sink(sink: Any) -> Any:
    """``add_json_sink(sink)``: None (stderr), a file path, a file-like object or a callable taking each line."""
    if sink is None or isinstance(sink, (str, os.PathLike)) or callable(sink) or callable(getattr(sink, "write", None)):
        return sink
    raise ConfigError(f"sink is where the JSON lines go: None (stderr), a file path, an open file (sys.stdout) or a "
                      f"function taking each line; not {_short(sink)}")


def check_prices(prices: Any) -> dict[str, dict[str, float]] | None:
    """``Tracer(prices=...)``: {model: {"input_mtok": n, "output_mtok": n, ...}}, USD per million tokens."""
    if prices is None:
        return None
    example = '{"my-ft": {"input_mtok": 3, "output_mtok": 12}}'
    if not isinstance(prices, dict):
        raise ConfigError(f"prices maps a model to its prices in USD per million tokens, e.g. {example}; "
                          f"not {_short(prices)}")
    for model, entry in prices.items():
        if not isinstance(model, str) or not isinstance(entry, dict):
            raise ConfigError(f"prices maps a model name to a dict of prices, e.g. {example}; not {_short({model: entry})}")
        for key, value in entry.items():
            _number(f"prices[{model!r}][{key!r}]", value, "a number of USD per million tokens")
    return prices


def check_url(url: Any) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"database url {url!r} is not a URL; pass e.g. 'sqlite:///llmtrace.db' or "
            "'postgresql+psycopg://user@host/db'"
        )
    return url


def database_url(url: str | None = None) -> str:
    """The database to use: ``url``, else ``LLMTRACE_DATABASE_URL``, else ``sqlite:///llmtrace.db``."""
    return check_url(url if url is not None else (os.environ.get("LLMTRACE_DATABASE_URL") or DEFAULT_URL))


def make_settings(url: str | None = None, **given: Any) -> Settings:
    """Build Settings from arguments, then environment, then defaults; reject bad values clearly."""
    known = {f.name: f.default for f in fields(Settings)}
    unknown = set(given) - set(known)
    if unknown:
        raise ConfigError(f"unknown Tracer setting(s) {sorted(unknown)}; known: {sorted(known)}")
    if url is not None:
        given["url"] = url
    values: dict[str, Any] = {}
    for name, default in known.items():
        if name in given:
            raw = given[name]
        elif name in _ENV and os.environ.get(_ENV[name]) not in (None, ""):
            raw = os.environ[_ENV[name]]
        else:
            values[name] = default
            continue
        values[name] = _coerce(name, raw, default)
    if values["capture"] not in CAPTURE_MODES:
        raise ConfigError(f"capture must be one of {CAPTURE_MODES}, not {values['capture']!r}")
    if values["on_queue_full"] not in QUEUE_POLICIES:
        raise ConfigError(f"on_queue_full must be one of {QUEUE_POLICIES}, not {values['on_queue_full']!r}")
    check_url(values["url"])
    if values["environment"] == "production" and not values["hash_key"]:
        raise ConfigError(
            "environment is 'production' but no user-id hash key is set: set LLMTRACE_HASH_KEY (or "
            "Tracer(hash_key=...)) to a long random secret, e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return Settings(**values)
