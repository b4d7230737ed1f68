"""``llmtrace ui``: a local trace browser over the read facade (``pip install 'llmtrace-core[ui]'``).

    llmtrace ui                              # http://127.0.0.1:8700, $LLMTRACE_DATABASE_URL or sqlite:///llmtrace.db
    llmtrace ui --db postgresql+psycopg://…/traces --port 9000
    llmtrace show TRACE_ID --open            # that trace's page in the browser

From Python: ``llmtrace.ui.create_app(url)`` is an ASGI app (Starlette); ``serve(url)`` runs it.
Pages: the trace list (filters in the URL), a trace (span tree beside a waterfall, the nine signals
of each LLM call, feedback and validation forms), a session, stats with charts and a before/after
of two prompt versions, and two traces compared. Safe by default: see ``llmtrace.ui.security``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp

MISSING_EXTRA = "the trace browser needs its extra: pip install 'llmtrace-core[ui]' (Starlette, uvicorn, Jinja2)"


def create_app(url: str | None = None, **kwargs: Any) -> ASGIApp:
    """The trace browser as an ASGI app; see ``llmtrace.ui.app.create_app``."""
    from llmtrace.ui.app import create_app as _create

    return _create(url, **kwargs)


def serve(url: str | None = None, **kwargs: Any) -> None:
    """Run the trace browser until interrupted; see ``llmtrace.ui.server.serve``."""
    from llmtrace.ui.server import serve as _serve

    _serve(url, **kwargs)


__all__ = ["MISSING_EXTRA", "create_app", "serve"]
