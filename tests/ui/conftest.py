"""Fixtures of the UI tests: the scenario store (built once), the UI served by uvicorn on a free
loopback port, and headless Chromium driven by Playwright.

Browser tests skip with the reason on a machine without Chromium, never under CI=true (.ci/run
installs Debian's chromium there)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest

from ui.ui_scenario import Scenario, build

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def _skip_or_fail(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def scenario(tmp_path_factory) -> Scenario:
    return build(f"sqlite:///{tmp_path_factory.mktemp('ui') / 'scenario.db'}")


@pytest.fixture
def own_scenario(tmp_path) -> Scenario:
    """A scenario store of the test's own, for tests that record feedback (the shared one stays as built)."""
    return build(f"sqlite:///{tmp_path / 'own.db'}")


@pytest.fixture
def own_served(own_scenario):
    from llmtrace.ui import create_app

    with Served(create_app(own_scenario.url)) as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def served(scenario):
    from llmtrace.ui import create_app

    with Served(create_app(scenario.url)) as s:
        yield s


@pytest.fixture(scope="session")
def browser():
    if CHROMIUM is None:
        _skip_or_fail("no Chromium on this machine (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser tab that records every dialog (alert/confirm) and console error."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    tab = context.new_page()
    tab.dialogs = []
    tab.errors = []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.set_default_timeout(10_000)
    yield tab
    context.close()


@pytest.fixture
def client(scenario):
    """The app in-process over HTTP semantics (Starlette's TestClient), as a loopback browser."""
    from starlette.testclient import TestClient

    from llmtrace.ui import create_app

    with TestClient(create_app(scenario.url), base_url="http://127.0.0.1:8700") as c:
        yield c
