"""How the CLI prints rows of data: a rich table for people, ``--json`` and ``--csv`` for programs.

Every data command declares its table columns as (title, how to get the text from a row); the
JSON and CSV outputs carry every field of the rows, not only the ones shown.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from typing import Any

Column = tuple[str, Callable[[dict[str, Any]], Any], bool]  # (title, value of a row, left-aligned)


def col(title: str, get: Callable[[dict[str, Any]], Any] | str, left: bool = False) -> Column:
    return (title, (lambda row: row.get(get)) if isinstance(get, str) else get, left)


def add_output_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print the rows as JSON (every field)")
    group.add_argument("--csv", action="store_true", help="print the rows as CSV (every field)")


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
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    for name, _get, left in columns:
        table.add_column(name, justify="left" if left else "right", no_wrap=not left)
    for row in rows:
        table.add_row(*(_text(get(row)) for _name, get, _left in columns))
    console = Console()
    # never squeeze numbers into folded columns: a table wider than the screen stays one line per row
    needed = console.measure(table, options=console.options.update(width=100_000)).maximum
    if needed > console.width:
        console = Console(width=needed)
    console.print(table)


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
    """Flat CSV: ``errors_by_type`` becomes ``type:n;type:n``."""
    buf = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (";".join(f"{t}:{n}" for t, n in v.items()) if isinstance(v, dict) else v)
                         for k, v in row.items()})
    return buf.getvalue()
