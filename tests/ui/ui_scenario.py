"""A store a person would browse: a three-turn support session across two prompt versions (a RAG
answer, a tool call, a parse failure), a rate-limited call, a rated answer, and a trace whose
every text — prompt, tool result, chunk id and text, name, metadata, session id, feedback — is an
XSS or template-injection string. Recorded through the real LangChain integration."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from fakes import REFUND_JSON, PolicyRetriever, ScriptedChatModel, answer, rag_chain, simple_chain, tool_call
from langchain_core.documents import Document
from langchain_core.tools import tool

import llmtrace

# Each would run script or change the page if it were interpreted instead of shown as text.
XSS = {
    "script": "<script>alert('xss-script')</script>",
    "img": '"><img src=x onerror=alert("xss-img")>',
    "js_url": "javascript:alert('xss-url')",
    "template": "{{7*7}} ${7*7} {% if 1 %}x{% endif %}",
    "css": "</style><style>body{display:none}</style>",
    "json": '"}]}</script><!-- \u2028 end',
    "svg": "<svg onload=alert('xss-svg')>",
}
XSS_SESSION = 'sess-"><svg onload=alert(6)>'
XSS_NAME = "<script>alert('name')</script>{{7*7}}"
XSS_CHUNK = "javascript:alert('chunk')"


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order by id."""
    return f"order {order_id}: blender, delivered 2026-11-10, 49.00 EUR"


@tool
def evil_tool(query: str) -> str:
    """A tool whose result is hostile."""
    return XSS["img"] + " " + XSS["svg"]


class RateLimitError(Exception):
    status_code = 429


@dataclass
class Scenario:
    url: str
    ids: dict[str, str] = field(default_factory=dict)


def _tool_loop(model, tools, question_key: str = "question"):
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.runnables import RunnableLambda

    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)

    def loop(question: str) -> str:
        messages = [SystemMessage("You handle refunds. Be brief."), HumanMessage(question)]
        while True:
            ai = bound.invoke(messages)
            messages.append(ai)
            if not ai.tool_calls:
                return ai.content
            for tc in ai.tool_calls:
                messages.append(by_name[tc["name"]].invoke(tc))

    return RunnableLambda(loop, name="refund_agent")


def build(url: str) -> Scenario:
    from llmtrace_langchain import LLMTraceCallbackHandler

    sc = Scenario(url)
    with llmtrace.Tracer(url, capture="full", content_ttl_days=None, flush_interval_seconds=0.05) as t:
        h = LLMTraceCallbackHandler(t)
        cfg = {"callbacks": [h]}
        common = {"user_id": "u-ana", "session_id": "sess-ana", "feature": "refunds"}
        with t.trace(name="support-answer", prompt_version="refunds-v6", **common) as s:
            rag_chain(ScriptedChatModel(script=[answer(REFUND_JSON)])).invoke("Can I return my kettle?", config=cfg)
        sc.ids["turn1"] = s.trace_id
        t.record_feedback(s.trace_id, "accepted")
        with t.trace(name="support-answer", prompt_version="refunds-v7", **common) as s:
            _tool_loop(ScriptedChatModel(script=[
                answer("", tool_calls=[tool_call("lookup_order", {"order_id": "A-1001"}, "call_1")], finish="tool_calls"),
                answer("Your blender order A-1001 can be refunded: 49.00 EUR."),
            ]), [lookup_order]).invoke("Refund for order A-1001?", config=cfg)
        sc.ids["turn2"] = s.trace_id
        t.record_feedback(s.trace_id, "edited", correction="Your blender order A-1001 is refunded: 49.00 EUR.")
        with pytest.raises(Exception), t.trace(name="support-answer", prompt_version="refunds-v7", **common) as s:  # noqa: B017
            rag_chain(ScriptedChatModel(script=[answer("Sure! Here you go: {eligible: yes}")])).invoke(
                "And the toaster?", config=cfg)
        sc.ids["turn3"] = s.trace_id
        t.record_feedback(s.trace_id, "retried")
        t.record_validation(s.trace_id, rule="cites_policy", passed=False, detail="no policy id cited")
        with pytest.raises(RateLimitError), t.trace(name="quick-answer", feature="refunds", prompt_version="refunds-v7") as s:
            simple_chain(ScriptedChatModel(script=[RateLimitError("429 Too Many Requests")])).invoke(
                {"question": "hello?"}, config=cfg)
        sc.ids["error"] = s.trace_id
        with t.trace(name="quick-answer", feature="search", prompt_version="search-v1") as s:
            simple_chain(ScriptedChatModel(script=[answer("Kettles ship in 2 days.")])).invoke(
                {"question": "when do kettles ship?"}, config=cfg)
        sc.ids["rated"] = s.trace_id
        t.record_feedback(s.trace_id, "rated", score=4)
        t.record_feedback(s.trace_id, "escalated", comment="sent to a human")
        # the hostile one: every field a person or a tool controls
        docs = [Document(id=XSS_CHUNK, page_content=XSS["img"], metadata={"score": 0.9}),
                Document(id="kb/<b>bold</b>.md", page_content=XSS["css"], metadata={"score": 0.5})]
        with t.trace(name=XSS_NAME, session_id=XSS_SESSION, feature="xss", prompt_version=XSS["template"],
                     tags=[XSS["script"]], metadata={"note": XSS["js_url"], "json": XSS["json"], XSS["svg"]: "key"}) as s:
            PolicyRetriever(docs=docs).invoke(XSS["js_url"], config=cfg)
            _tool_loop(ScriptedChatModel(script=[
                answer("", tool_calls=[tool_call("evil_tool", {"query": XSS["script"]}, "call_x")], finish="tool_calls"),
                answer(XSS["script"] + " " + XSS["template"] + " " + XSS["json"]),
            ]), [evil_tool]).invoke(XSS["script"] + " " + XSS["css"], config=cfg)
        sc.ids["xss"] = s.trace_id
        t.record_feedback(s.trace_id, "edited", correction=XSS["script"], comment=XSS["img"] + XSS["template"])
        t.record_validation(s.trace_id, rule=XSS["svg"], passed=False, detail=XSS["css"])
        assert t.flush(10)
    return sc
