"""Serving the trace browser with uvicorn: which addresses need a token, and opening a page."""

from __future__ import annotations

import os
import socket
import threading
import webbrowser
from collections.abc import Callable
from urllib.parse import quote

from llmtrace.base.errors import ConfigError
from llmtrace.ui.security import LOOPBACK_HOSTS, MIN_TOKEN_CHARS, is_loopback

DEFAULT_PORT = 8700
TOKEN_ENV = "LLMTRACE_UI_TOKEN"


def check_token(host: str, token: str | None) -> str | None:
    """The token to require: any address but loopback needs one (prompts are private data)."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the access token must be at least {MIN_TOKEN_CHARS} characters; make one with "
                          "python -c 'import secrets; print(secrets.token_urlsafe())'")
    if token is None and not is_loopback(host):
        raise ConfigError(f"refusing to serve traces on {host} without an access token: anyone who can reach it "
                          f"would read every prompt. Pass --token TOKEN (or set {TOKEN_ENV}); make one with "
                          "python -c 'import secrets; print(secrets.token_urlsafe())'")
    return token


def page_url(host: str, port: int, path: str = "/", token: str | None = None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{port}{path}"
    if token:
        url += ("&" if "?" in path else "?") + "token=" + quote(token, safe="")
    return url


def trace_path(trace_id: str) -> str:
    return "/trace/" + quote(trace_id, safe="")


def port_in_use(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else ("::1" if host == "::" else host)
    try:
        with socket.create_connection((target, port), timeout=0.3):
            return True
    except OSError:
        return False


def serve(url: str | None = None, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
          read_only: bool = False, open_path: str | None = None, opener: Callable[[str], object] = webbrowser.open,
          log_level: str = "warning", announce: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C. ``open_path``: open this page in the browser once the server is up."""
    import uvicorn

    from llmtrace.read.facade import Store
    from llmtrace.ui.app import create_app

    token = check_token(host, token)
    store = Store(url)
    store.schema_version()  # a database that is not there is an error now, not on the first page
    app = create_app(url, token=token, read_only=read_only, allowed_hosts=LOOPBACK_HOSTS, store=store)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False,
                            proxy_headers=False, lifespan="on")
    server = uvicorn.Server(config)
    address = page_url(host, port, open_path or "/", token)
    announce(f"llmtrace ui: {address}  (reading {store.url}; Ctrl-C stops)")
    if open_path is not None:
        def open_when_up() -> None:
            import time

            for _ in range(100):
                if server.started:
                    opener(address)
                    return
                time.sleep(0.05)

        threading.Thread(target=open_when_up, name="llmtrace-ui-open", daemon=True).start()
    server.run()
