"""Alerts as calls are written: the writer observes each LLM call row and delivers what fires."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from llmtrace.base.alerting import Alert, AlertEngine, AlertSink
from llmtrace.capture.logs import emit


class LiveAlerts:
    """The writer's side: calls are observed as they are recorded; the alerts they fire are delivered
    after their batch is written (so ``get_trace`` on the alert's trace id works in the callable),
    as a loguru WARNING line and to the user's callable. A failing callable is counted, never raised."""

    def __init__(self, engine: AlertEngine, sink: AlertSink | None, on_problem: Callable[[str, Exception], None]) -> None:
        self.engine = engine
        self.sink = sink
        self.on_problem = on_problem
        self.pending: list[Alert] = []

    def observe_row(self, row: dict[str, Any], attrs: dict[str, Any], t: float) -> None:
        self.pending.extend(self.engine.observe(
            t=t, trace_id=row["trace_id"], span_id=row["span_id"], feature=attrs.get("feature"), model=row["model"],
            version=row["model_version"], provider=row["provider"], input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"], cached_tokens=row["input_cached_tokens"],
            cache_write_tokens=row["input_cache_write_tokens"], latency_ms=row["latency_ms"], status=row["status"]))

    def deliver(self) -> None:
        alerts, self.pending = self.pending, []
        for alert in alerts:
            emit("WARNING", functools.partial(_line, alert))
            if self.sink is not None:
                try:
                    self.sink(alert)
                except Exception as exc:
                    self.on_problem("alert callable", exc)


def _line(alert: Alert) -> dict[str, Any]:
    return {"event": "alert", **alert.to_dict()}
