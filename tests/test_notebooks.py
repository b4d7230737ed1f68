"""The notebooks tell the story end to end on the demo's data: executed here so they never rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_clean(path, tmp_path):
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    if path.name == "replay_a_trace.ipynb":  # it shows the rich trace view
        assert any("text/html" in o.get("data", {}) for cell in book.cells for o in cell.get("outputs", []))


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} == {"replay_a_trace.ipynb", "export_eval_set.ipynb"}
