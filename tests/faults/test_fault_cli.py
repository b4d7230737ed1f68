"""Issue 17 item 9: read-only commands never create a database; reading a store that is not there
is a clear error (non-zero exit, one line naming what is missing)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", [["ls"], ["stats"], ["show", "some-trace-id"]])
def test_reading_a_database_that_does_not_exist_creates_nothing_and_fails_clearly(command, tmp_path):
    missing = tmp_path / "nonexistent.db"
    out = subprocess.run([sys.executable, "-m", "llmtrace", *command, "--db", f"sqlite:///{missing}"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no file (nor -wal / -shm) was made
    assert out.returncode != 0
    assert "nonexistent.db" in out.stderr and "Traceback" not in out.stderr, out.stderr
