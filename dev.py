#!/usr/bin/env python3
"""Set up and run llmtrace on a fresh machine with only Python and pip.

    python3 dev.py demo     # create .venv, install, record the demo app, show a trace, export an eval set
    python3 dev.py test     # create .venv, install, run ruff and the whole test suite

Installs into ./.venv (once; again when a pyproject.toml changes). Extra arguments go to the command.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
INTEGRATIONS = [ROOT / "integrations" / "langchain", ROOT / "integrations" / "llamaindex"]
PROJECTS = [ROOT / "pyproject.toml", *(p / "pyproject.toml" for p in INTEGRATIONS)]


def ensure_env() -> None:
    stamp = VENV / ".llmtrace-installed"
    want = hashlib.sha256(b"".join(p.read_bytes() for p in PROJECTS)).hexdigest()
    if stamp.exists() and stamp.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing llmtrace, its LangChain and LlamaIndex integrations and the test tools ...", flush=True)
    editable = [arg for p in INTEGRATIONS for arg in ("-e", str(p))]
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-e", f"{ROOT}[dev]", *editable], check=True)
    stamp.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_env()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return subprocess.run([str(BIN / "llmtrace"), "demo", *rest]).returncode
    lint = subprocess.run([str(PY), "-m", "ruff", "check", str(ROOT)], cwd=ROOT).returncode
    tests = subprocess.run([str(PY), "-m", "pytest", "-q", *rest], cwd=ROOT).returncode
    return tests or lint


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
