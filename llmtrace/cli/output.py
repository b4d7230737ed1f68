"""How the CLI prints rows of data: a table that fits the terminal for people, ``--json`` and
``--csv`` for programs.

Every data command declares its columns: a title, how to get the text from a row, and a priority.
A table shows the columns that fit the terminal's width (``COLUMNS`` or the terminal's size, 80
when it cannot tell), most important first, and cuts the flexible ones (names, models) with an
ellipsis; ``--wide`` shows every column however wide. Errors and failures are coloured on a
terminal and plain when piped (or with ``NO_COLOR``). ``--json`` and ``--csv`` carry every field of
the rows, not only the ones shown; in CSV a list or a mapping is written as JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One column of a table the CLI prints: its title, how to get its text from a row, its place."""

    title: str
    get: Callable[[dict[str, Any]], Any]
    left: bool = False
    priority: int = 50  # 0 is always shown; higher numbers go first when the terminal is narrow
    shrink: bool = False  # cut with an ellipsis rather than dropped
    style: Callable[[dict[str, Any]], str | None] | None = None  # a rich style for the cell


def col(title: str, get: Callable[[dict[str, Any]], Any] | str, left: bool = False, *, priority: int = 50,
        shrink: bool = False, style: Callable[[dict[str, Any]], str | None] | None = None) -> Column:
    return Column(title, (lambda row: row.get(get)) if isinstance(get, str) else get, left, priority, shrink, style)


def add_output_flags(p: argparse.ArgumentParser, wide: bool = True) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print the rows as JSON (every field)")
    group.add_argument("--csv", action="store_true", help="print the rows as CSV (every field; lists as JSON)")
    if wide:
        p.add_argument("--wide", action="store_true", help="show every column, however wide (default: the columns "
                                                           "that fit the terminal)")


def console(width: int | None = None):
    from rich.console import Console

    return Console(highlight=False, width=width, soft_wrap=False)


_MIN_SHRUNK = 8
_OVERHEAD_PER_COLUMN = 3  # rich's SIMPLE_HEAD: a space each side and a separator


def fit(columns: list[Column], texts: list[list[str]], width: int) -> tuple[list[int], dict[int, int]]:
    """The columns to show (indexes, in their declared order) and the width to cut each shrinkable
    one to, so that the table fits ``width``: least important columns are dropped first."""
    natural = [max([len(c.title)] + [len(row[i]) for row in texts]) for i, c in enumerate(columns)]
    # a column that is always shown (a group's name) keeps up to 24 characters before others are added
    minimum = [min(natural[i], max(_MIN_SHRUNK, len(c.title), 24 if c.priority == 0 else 0)) if c.shrink else natural[i]
               for i, c in enumerate(columns)]
    shown = list(range(len(columns)))
    while True:
        need = sum(minimum[i] for i in shown) + _OVERHEAD_PER_COLUMN * len(shown) + 1
        droppable = [i for i in shown if columns[i].priority > 0]
        if need <= width or not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    room = width - sum(natural[i] for i in shown if not columns[i].shrink) - _OVERHEAD_PER_COLUMN * len(shown) - 1
    flexible = [i for i in shown if columns[i].shrink]
    cuts: dict[int, int] = {}
    for i in sorted(flexible, key=lambda i: columns[i].priority):  # the most important gets its width first
        others = sum(minimum[j] for j in flexible if j != i and j not in cuts)
        cuts[i] = max(minimum[i], min(natural[i], room - others))
        room -= cuts[i]
    return shown, cuts


def _style(column: Column, row: dict[str, Any]) -> str:
    return (column.style(row) or "") if column.style is not None else ""


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(n - 1, 0)] + "…"


def emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[Column], title: str,
         empty: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    if getattr(args, "csv", False):
        sys.stdout.write(to_csv(rows))
        return
    if not rows:
        print(empty)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out = console()
    texts = [[_text(c.get(row)) for c in columns] for row in rows]
    cuts: dict[int, int] = {}
    if getattr(args, "wide", False):
        shown = list(range(len(columns)))
        width = max(out.width, sum(max([len(c.title)] + [len(t[i]) for t in texts]) for i, c in enumerate(columns))
                    + _OVERHEAD_PER_COLUMN * len(columns) + 1)
    else:
        shown, cuts = fit(columns, texts, out.width)
        width = out.width
    hidden = len(columns) - len(shown)
    caption = f"{title}" + (f"  ({hidden} more column(s): --wide)" if hidden else "")
    table = Table(title=caption, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    for i in shown:
        c = columns[i]
        table.add_column(c.title, justify="left" if c.left else "right", no_wrap=True, overflow="ellipsis")
    for row, cells in zip(rows, texts, strict=True):
        table.add_row(*(Text(_cut(cells[i], cuts[i]) if i in cuts else cells[i], style=_style(columns[i], row))
                        for i in shown))
    console(width).print(table)


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.6f}".rstrip("0").rstrip(".") if abs(value) < 0.01 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value)


def pct(value: float | None) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def ms(value: float | None) -> str | None:
    return None if value is None else (f"{value:,.0f}" if value >= 10 else f"{value:.2f}")


def usd(value: float | None) -> str | None:
    if value is None:
        return None
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}".rstrip("0")


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Flat CSV; a list or mapping (models, errors_by_type, feedback) is written as JSON."""
    buf = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (list, dict, tuple)) else v)
                         for k, v in row.items()})
    return buf.getvalue()
