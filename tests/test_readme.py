"""The README's settings table lists every setting of Tracer (docs that cannot drift)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import llmtrace

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_tracer_setting_is_in_the_readme():
    params = [p for p in inspect.signature(llmtrace.Tracer).parameters if p not in ("url", "on_alert", "alert_rules")]
    table = set(re.findall(r"^\| `([a-z_]+)`", README, re.MULTILINE))
    assert set(params) - table == set(), "README settings table is missing these Tracer settings"
