"""Cost of an LLM call from its token counts: the genai-prices table, plus the user's own prices.

Prices are looked up once per (model, provider, day) and applied with plain arithmetic, so
costing a trace is cheap; tiered prices (long-context surcharges) go through genai-prices' own
calculation. A model with no known price costs ``None`` and is warned about once, never guessed.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from loguru import logger

from llmtrace.base.errors import ConfigError

_PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_OVERRIDE_KEYS = (*_PRICE_KEYS, "context_window")

# (input, output, cache reads, cache writes) -> USD; input counts every billed input token, reads and writes included
_MAX_CACHED = 4096
Pricer = Callable[[int | None, int | None, int | None, int | None], float | None]


class PriceBook:
    """``PriceBook({"my-finetune": {"input_mtok": 3.0, "output_mtok": 12.0, "cache_read_mtok": 1.5}})``.

    Override prices are USD per million tokens and win over the maintained table. An entry may
    also (or only) give ``context_window``, the model's token limit, for the context-limit alert.
    Cache writes cost ``cache_write_mtok`` when given, else the input price.
    """

    def __init__(self, overrides: dict[str, dict[str, float]] | None = None) -> None:
        self.overrides: dict[str, tuple[float, float, float | None, float | None]] = {}
        self.windows: dict[str, int] = {}
        for model, prices in (overrides or {}).items():
            if (not isinstance(prices, dict) or not prices or ("input_mtok" in prices) != ("output_mtok" in prices)
                    or (("cache_read_mtok" in prices or "cache_write_mtok" in prices) and "input_mtok" not in prices)):
                raise ConfigError(f"prices for {model!r} need input_mtok and output_mtok (USD per million tokens), "
                                  f"optionally cache_read_mtok, cache_write_mtok and context_window; got {prices!r}")
            unknown = set(prices) - set(_OVERRIDE_KEYS)
            if unknown:
                raise ConfigError(f"unknown price keys {sorted(unknown)} for {model!r}; use {_OVERRIDE_KEYS}")
            try:
                if "input_mtok" in prices:
                    self.overrides[model] = (float(prices["input_mtok"]), float(prices["output_mtok"]),
                                             _optional(prices.get("cache_read_mtok")),
                                             _optional(prices.get("cache_write_mtok")))
                if prices.get("context_window") is not None:
                    self.windows[model] = int(prices["context_window"])
            except (TypeError, ValueError):
                raise ConfigError(f"prices for {model!r} must be numbers; got {prices!r}") from None
        self._found: dict[tuple[str, str | None, date | None], Any] = {}
        self._windows_found: dict[tuple[str, str | None], int | None] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def cost(self, *, model: str | None, version: str | None, provider: str | None, input_tokens: int | None,
             output_tokens: int | None, cached_tokens: int | None = None, cache_write_tokens: int | None = None,
             at: datetime | None = None) -> float | None:
        if input_tokens is None and output_tokens is None:
            return None
        price = self.pricer(model=model, version=version, provider=provider, at=at)
        return None if price is None else price(input_tokens, output_tokens, cached_tokens, cache_write_tokens)

    def pricer(self, *, model: str | None, version: str | None, provider: str | None,
               at: datetime | None = None) -> Pricer | None:
        """The price function ``(input, output, cache reads, cache writes) -> USD`` of one model on one day, or None
        (with one warning per model) when no price is known. Aggregations look it up once per group."""
        names = [n for n in (version, model) if n]
        for name in names:
            if name in self.overrides:
                return partial(_simple, self.overrides[name])
        for name in names:
            price = self._lookup(name, provider, at)
            if price is not None:
                return partial(_simple if isinstance(price, tuple) else _tiered, price)
        label = names[0] if names else "an unnamed model"
        with self._lock:
            first = label not in self._warned
            self._warned.add(label)
        if first:
            logger.warning("llmtrace: no price known for {} (provider {}): its cost is null; add it with "
                           "Tracer(prices={{...}})", label, provider)
        return None

    def context_window(self, *, model: str | None, version: str | None = None, provider: str | None = None) -> int | None:
        """The model's context window in tokens (override, else genai-prices' table), or None if unknown."""
        names = [n for n in (version, model) if n]
        for name in names:
            if name in self.windows:
                return self.windows[name]
        for name in names:
            key = (name, provider)
            with self._lock:
                if key in self._windows_found:
                    found = self._windows_found[key]
                    if found is not None:
                        return found
                    continue
            found = _window_from_table(name, provider)
            with self._lock:
                self._windows_found[key] = found
            if found is not None:
                return found
        return None

    def _lookup(self, name: str, provider: str | None, at: datetime | None) -> Any:
        key = (name, provider, at.date() if at else None)
        with self._lock:
            if key in self._found:
                return self._found[key]
        price = _from_table(name, provider, at)
        with self._lock:
            if len(self._found) >= _MAX_CACHED:  # (one per model and day: bounded in a long-lived process)
                self._found.clear()
            self._found[key] = price
        return price


def _from_table(name: str, provider: str | None, at: datetime | None) -> Any:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    for provider_id in ([provider, None] if provider else [None]):
        try:
            result = calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=name, provider_id=provider_id,
                                genai_request_timestamp=at)
        except Exception:  # unknown model or provider
            continue
        mp = result.model_price
        values = [getattr(mp, k, None) for k in _PRICE_KEYS]
        if all(v is None or _is_number(v) for v in values) and values[0] is not None and values[1] is not None:
            return tuple(None if v is None else float(v) for v in values)
        return mp  # tiered: let genai-prices do the arithmetic
    return None


def _window_from_table(name: str, provider: str | None) -> int | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    for provider_id in ([provider, None] if provider else [None]):
        try:
            window = calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=name, provider_id=provider_id).model.context_window
        except Exception:
            continue
        return int(window) if window else None
    return None


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _simple(price: tuple, input_tokens: int | None, output_tokens: int | None, cached: int | None = None,
            cache_write: int | None = None) -> float:
    per_in, per_out, per_cached, per_write = price
    inp = input_tokens or 0
    cached = min(cached or 0, inp) if per_cached is not None else 0  # (no read price: reads cost as input)
    written = min(cache_write or 0, inp - cached)
    total = ((inp - cached - written) * per_in + cached * (per_cached or 0.0)
             + written * (per_write if per_write is not None else per_in) + (output_tokens or 0) * per_out)
    return round(total / 1e6, 10)


def _tiered(model_price: Any, input_tokens: int | None, output_tokens: int | None, cached: int | None = None,
            cache_write: int | None = None) -> float | None:
    from genai_prices import Usage

    try:
        usage = Usage(input_tokens=input_tokens or 0, output_tokens=output_tokens or 0, cache_read_tokens=cached or 0,
                      cache_write_tokens=cache_write or 0)
        return float(model_price.calc_price(usage)["total_price"])
    except Exception:
        return None


def prices_from_env() -> dict[str, dict[str, float]] | None:
    """``LLMTRACE_PRICES``: price overrides as JSON, inline or in a file (the CLI's way to price
    private models): ``{"my-finetune": {"input_mtok": 3, "output_mtok": 12}}``."""
    raw = os.environ.get("LLMTRACE_PRICES", "").strip()
    if not raw:
        return None
    try:
        text = raw if raw.startswith("{") else Path(raw).read_text(encoding="utf-8")
        prices = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LLMTRACE_PRICES must be JSON or the path of a JSON file like "
                          f'{{"my-model": {{"input_mtok": 3, "output_mtok": 12}}}}: {exc}') from None
    if not isinstance(prices, dict):
        raise ConfigError("LLMTRACE_PRICES must be a JSON object: model name -> prices")
    return prices


_default: PriceBook | None = None


def default_pricebook() -> PriceBook:
    global _default
    if _default is None:
        _default = PriceBook()
    return _default
