"""Charts as SVG drawn on the server: no chart library, no script, nothing fetched at run time.

Colours come from classes in the stylesheet (``s0``, ``s1``, ... per series); every label and
tooltip is escaped (feature names and prompt versions are the user's text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup, escape

W, H = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 74, 12, 16, 36
Number = float | int | None


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _frame(title: str, y_max: float, fmt: Callable[[float], str], labels: Sequence[str]) -> list[str]:
    plot_h = H - TOP - BOTTOM
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>"]
    for i in range(5):
        y = TOP + plot_h * i / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(fmt(y_max * (4 - i) / 4))}</text>")
    n = len(labels)
    step = max(1, (n + 7) // 8)  # at most about eight labels under the axis
    slot = (W - LEFT - RIGHT) / max(n, 1)
    for i, label in enumerate(labels):
        if i % step == 0 or i == n - 1:
            x = LEFT + slot * (i + 0.5)
            out.append(f'<text class="axis" x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
                       f"{escape(_clip(label, 14))}</text>")
    return out


def _clip(text: Any, n: int) -> str:
    text = "–" if text is None else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def bars(title: str, labels: Sequence[str], values: Sequence[Number], fmt: Callable[[float], str] = str,
         cls: str = "s0") -> Markup:
    """A vertical bar per label; a missing value is no bar (and says so in its tooltip)."""
    present = [v for v in values if v is not None]
    y_max = _nice_max(max(present, default=0))
    out = _frame(title, y_max, fmt, labels)
    plot_h = H - TOP - BOTTOM
    slot = (W - LEFT - RIGHT) / max(len(labels), 1)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        tip = f"{_clip(label, 60)}: {'no data' if value is None else fmt(value)}"
        h = 0 if value is None else plot_h * value / y_max
        x = LEFT + slot * i + slot * 0.12
        out.append(f'<rect class="bar {cls}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{slot * 0.76:.1f}" '
                   f'height="{max(h, 0):.1f}"><title>{escape(tip)}</title></rect>')
    out.append("</svg>")
    return Markup("".join(out))


def lines(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[Number]]],
          fmt: Callable[[float], str] = str) -> Markup:
    """One line per series over the labels, with a dot per point and a legend."""
    present = [v for _name, values in series for v in values if v is not None]
    y_max = _nice_max(max(present, default=0))
    out = _frame(title, y_max, fmt, labels)
    plot_h = H - TOP - BOTTOM
    slot = (W - LEFT - RIGHT) / max(len(labels), 1)
    for k, (name, values) in enumerate(series):
        points = [(LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * v / y_max, label, v)
                  for i, (label, v) in enumerate(zip(labels, values, strict=True)) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _l, _v in points)
            out.append(f'<polyline class="line s{k}" points="{path}"/>')
        for x, y, label, v in points:
            out.append(f'<circle class="dot s{k}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                       f"<title>{escape(f'{name} · {_clip(label, 60)}: {fmt(v)}')}</title></circle>")
        lx = LEFT + 8 + k * 150
        out.append(f'<rect class="bar s{k}" x="{lx}" y="2" width="10" height="8"/>'
                   f'<text class="legend" x="{lx + 14}" y="10">{escape(_clip(name, 20))}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def stacked(title: str, rows: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> Markup:
    """A horizontal 100% bar per row (e.g. the feedback mix of each group), parts in order."""
    row_h, label_w, width_all = 22, 170, 900
    height = TOP + row_h * max(len(rows), 1) + 26
    out = [f'<svg class="chart stacked" viewBox="0 0 {width_all} {height}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>"]
    names: list[str] = []
    for i, (label, parts) in enumerate(rows):
        y = TOP + i * row_h
        total = sum(n for _name, n in parts)
        out.append(f'<text class="axis" x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(_clip(label, 22))}</text>')
        x = float(label_w)
        width = width_all - label_w - RIGHT
        if total == 0:
            out.append(f'<text class="axis" x="{x + 4}" y="{y + 14}">no feedback</text>')
        for k, (name, n) in enumerate(parts):
            if name not in names:
                names.append(name)
            if not total or not n:
                continue
            w = width * n / total
            out.append(f'<rect class="bar s{k}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}">'
                       f"<title>{escape(f'{_clip(label, 60)} · {name}: {n} of {total}')}</title></rect>")
            x += w
    legend_y = TOP + row_h * max(len(rows), 1) + 12
    for k, name in enumerate(names):
        lx = label_w + k * 110
        out.append(f'<rect class="bar s{k}" x="{lx}" y="{legend_y - 8}" width="10" height="8"/>'
                   f'<text class="legend" x="{lx + 14}" y="{legend_y}">{escape(name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def hbars(rows: Sequence[tuple[str, Number]], fmt: Callable[[float], str] = str) -> Markup:
    """A labelled horizontal bar per row on one scale (a call's latency breakdown); a value that was
    not observed says so instead of drawing a zero."""
    row_h, label_w, value_w, width = 18, 150, 70, 420
    present = [v for _l, v in rows if v is not None]
    top = max(present, default=0) or 1
    out = [f'<svg class="hbars" viewBox="0 0 {width} {row_h * len(rows)}" role="img" aria-label="latency breakdown">']
    for i, (label, value) in enumerate(rows):
        y = i * row_h
        out.append(f'<text class="axis" x="0" y="{y + 13}">{escape(label)}</text>')
        if value is None:
            out.append(f'<text class="axis none" x="{label_w}" y="{y + 13}">not observed</text>')
            continue
        w = (width - label_w - value_w) * value / top
        out.append(f'<rect class="bar s{i}" x="{label_w}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row_h - 8}"/>'
                   f'<text class="axis" x="{label_w + w + 6:.1f}" y="{y + 13}">{escape(fmt(value))}</text>')
    out.append("</svg>")
    return Markup("".join(out))
