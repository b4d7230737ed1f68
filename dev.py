#!/usr/bin/env python3
"""Set up and run llmtrace on a fresh machine with only Python and pip.

    python3 dev.py demo     # create .venv, install what the demo needs, record the demo app, show a trace, export an eval set
    python3 dev.py test     # create .venv, install everything, run ruff, mypy, the layer contract and the whole test suite

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
PACKAGES = [ROOT / "integrations" / "langchain", ROOT / "integrations" / "llamaindex", ROOT / "examples"]
PROJECTS = [ROOT / "pyproject.toml", *(p / "pyproject.toml" for p in PACKAGES)]
# What each command installs: the demo only the library (with its trace browser), its integrations and the example app;
# the tests also the dev extra (provider clients, database drivers, Presidio, pandas, notebooks...).
EXTRAS = {"demo": "[ui]", "test": "[dev]"}
TYPED = ["llmtrace", "integrations/langchain/llmtrace_langchain", "integrations/llamaindex/llmtrace_llamaindex"]


def ensure_env(command: str) -> None:
    stamp = VENV / ".llmtrace-installed"
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in PROJECTS)).hexdigest()
    have = stamp.read_text().split() if stamp.exists() and PY.exists() else []
    # a test install covers the demo; a demo install does not cover the tests
    if have and have[0] == digest and (have[1] == "test" or command == "demo"):
        return
    if not PY.exists():
        print(f"[1/2] creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    what = "llmtrace, its LangChain and LlamaIndex integrations and the demo app"
    if command == "test":
        what += ", and the test tools (provider clients, database drivers, Presidio, notebooks: a few minutes)"
    print(f"[2/2] installing {what} ...", flush=True)
    editable = [arg for p in PACKAGES for arg in ("-e", str(p))]
    subprocess.run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "on",
                    "-e", f"{ROOT}{EXTRAS[command]}", *editable], check=True)
    stamp.write_text(f"{digest} {command}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_env(command)
    if command == "demo":
        return subprocess.run([str(BIN / "llmtrace"), "demo", *rest]).returncode
    steps = [
        ("ruff", [str(PY), "-m", "ruff", "check", str(ROOT)]),
        ("mypy", [str(PY), "-m", "mypy", *TYPED]),
        ("layers", [str(BIN / "lint-imports")]),
    ]
    failed = [name for name, cmd in steps if subprocess.run(cmd, cwd=ROOT).returncode != 0]
    tests = subprocess.run([str(PY), "-m", "pytest", "-q", *rest], cwd=ROOT).returncode
    if failed:
        print(f"dev.py test: {', '.join(failed)} failed", file=sys.stderr)
    return tests or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
