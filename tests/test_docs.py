"""Docs that cannot drift: every field a real trace document has is named in docs/SIGNALS.md, and
docs/architecture.md names every package and module of the core."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fakes import ScriptedChatModel, answer, tool_call
from tests.test_langchain_tools import hand_loop, lookup_order

ROOT = Path(__file__).resolve().parent.parent


def _keys(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            if k not in ("params", "metadata", "inputs", "outputs", "args", "result", "parsed", "raw_completion",
                         "input_messages", "tools_offered", "error", "detail"):
                yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def test_every_field_of_a_trace_document_is_in_signals_md(sqlite_tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(sqlite_tracer)
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "call_1")], finish="tool_calls"),
        answer("Your order A-1 can be refunded."),
    ])
    hand_loop(model, [lookup_order]).invoke("refund A-1?", config={"callbacks": [handler]})
    sqlite_tracer.record_feedback(handler.last_trace_id, "edited", correction="Refunded.")
    sqlite_tracer.record_validation(handler.last_trace_id, rule="cites_policy", passed=False, detail="none cited")
    doc = sqlite_tracer.get_trace(handler.last_trace_id).to_dict()
    text = (ROOT / "docs" / "SIGNALS.md").read_text()
    named = set(re.findall(r'"([a-z_]+)"\s*:', text)) | set(re.findall(r"`(?:[a-z_]+\.)*([a-z_]+)", text))
    missing = sorted(set(_keys(doc)) - named)
    assert not missing, f"fields of the document not described in docs/SIGNALS.md: {missing}"


def test_architecture_md_names_every_module_of_the_core():
    text = (ROOT / "docs" / "architecture.md").read_text()
    core = ROOT / "llmtrace"
    for path in sorted(core.rglob("*.py")):
        if path.name == "__init__.py" or path.parent.name in ("templates", "static"):
            continue
        assert re.search(rf"`{re.escape(path.stem)}`|\b{re.escape(path.stem)}\b", text), \
            f"docs/architecture.md does not mention {path.relative_to(ROOT)}"
