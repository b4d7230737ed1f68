"""The LlamaIndex internals llmtrace_llamaindex relies on, each named here so that an upgrade that
moves one fails loudly (issue 14: "where the handler needs a framework internal, a test names it").

Each test checks the internal itself, not llmtrace: the scenario suites check what the record looks
like with it."""

from __future__ import annotations

import asyncio
import sys

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler


class Exits(BaseSpanHandler):
    """What the dispatcher tells a span handler when a span ends, and who called it."""

    def new_span(self, *args, **kwargs):
        return None

    def prepare_to_exit_span(self, *args, **kwargs):
        return None

    def prepare_to_drop_span(self, *args, **kwargs):
        return None

    def span_exit(self, id_, bound_args, instance=None, result=None, **kwargs):
        caller = sys._getframe(2)  # (this method, the dispatcher's span_exit, its caller)
        self.exits.append((id_, result, caller.f_code.co_name, caller.f_locals.get("future")))

    def span_drop(self, id_, bound_args, instance=None, err=None, **kwargs):
        self.drops.append((id_, err))


def test_a_failed_future_ends_its_span_with_result_none_from_handle_future_result():
    """A method that returns a Future (``Workflow.run`` on llama-index-workflows < 2) has its span
    ended by the dispatcher's ``handle_future_result`` callback, with ``result=None`` when the
    Future failed; that callback's frame holds the Future (``future``), whose error the handler reads."""
    dispatcher = get_dispatcher("llmtrace_internals_test")
    handler = Exits()
    object.__setattr__(handler, "exits", [])
    object.__setattr__(handler, "drops", [])
    dispatcher.add_span_handler(handler)

    @dispatcher.span
    def start() -> asyncio.Future:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        future.set_exception(ValueError("step failed"))
        return future

    async def main():
        with pytest.raises(ValueError, match="step failed"):
            await start()

    try:
        asyncio.run(main())
    finally:
        dispatcher.span_handlers = [h for h in dispatcher.span_handlers if h is not handler]
    [(id_, result, caller, future)] = handler.exits
    assert id_.startswith("test_a_failed_future") and result is None and handler.drops == []
    assert caller == "handle_future_result"
    assert isinstance(future, asyncio.Future) and isinstance(future.exception(), ValueError)
