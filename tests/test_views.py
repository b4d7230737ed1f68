"""The notebook (HTML) and text views, for every record shape: ok, errors, streaming, tools,
parse failures, expired content; content is escaped, never executed."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fakes import REFUND_JSON, ScriptedChatModel, answer, rag_chain, simple_chain, tool_call
from test_langchain_errors import RateLimitError
from test_langchain_tools import hand_loop, lookup_order

import llmtrace


class _Check(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def shapes(tracer):
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(tracer)
    out = {}
    rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke("<script>alert(1)</script>", config={"callbacks": [h]})
    out["ok"] = h.last_trace_id
    with pytest.raises(RateLimitError):
        simple_chain(ScriptedChatModel(script=[RateLimitError("429")])).invoke({"question": "q"}, config={"callbacks": [h]})
    out["error"] = h.last_trace_id
    list(simple_chain(ScriptedChatModel(script=[answer("streamed words here")])).stream({"question": "q"}, config={"callbacks": [h]}))
    out["stream"] = h.last_trace_id
    hand_loop(ScriptedChatModel(script=[answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1"}, "c1")]),
                                        answer("done")]), [lookup_order]).invoke("refund?", config={"callbacks": [h]})
    out["tools"] = h.last_trace_id
    with pytest.raises(Exception):  # noqa: B017 - the parser's own exception type
        rag_chain(ScriptedChatModel(script=[answer("not json")])).invoke("q", config={"callbacks": [h]})
    out["parse"] = h.last_trace_id
    tracer.record_feedback(out["ok"], "edited", correction="fixed <b>answer</b>")
    return out


def test_every_shape_renders_as_html_and_text(sqlite_tracer):
    ids = shapes(sqlite_tracer)
    for shape, tid in ids.items():
        trace = sqlite_tracer.get_trace(tid)
        html = trace._repr_html_()
        parser = _Check()
        parser.feed(html)
        assert "script" not in parser.tags and "<script>" not in html, shape  # content is escaped
        assert "table" in parser.tags and "Timeline" in html, shape
        assert str(trace).startswith(f"trace {tid}"), shape
    html = sqlite_tracer.get_trace(ids["ok"])._repr_html_()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "pol-7#2" in html and "schema: passed" in html
    assert "fixed &lt;b&gt;answer&lt;/b&gt;" in html and "edited" in html
    assert "rate_limit" in sqlite_tracer.get_trace(ids["error"])._repr_html_()
    assert "lookup_order" in sqlite_tracer.get_trace(ids["tools"])._repr_html_()
    parse_html = sqlite_tracer.get_trace(ids["parse"])._repr_html_()
    assert 'class="lost"' in parse_html and "parse error" in parse_html and "schema: FAILED" in parse_html
    stream = sqlite_tracer.get_trace(ids["stream"]).to_dict()["llm_calls"][0]["latency_ms"]["ttft"]
    assert f"ttft {stream:.1f} ms" in sqlite_tracer.get_trace(ids["stream"])._repr_html_()


def test_expired_content_renders_with_its_reason(sqlite_url):
    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(sqlite_url, content_ttl_days=1e-9) as t:
        h = LLMTraceCallbackHandler(t)
        simple_chain(ScriptedChatModel(script=[answer("x")])).invoke({"question": "q"}, config={"callbacks": [h]})
        trace = t.get_trace(h.last_trace_id)
    assert "content expired" in trace._repr_html_() and "content: expired" in str(trace)
