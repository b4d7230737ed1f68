"""The pages of llmtrace ui over HTTP: what each shows for the scenario's traces, filters in the
URL, pages of the list, content that is missing shown with its reason, the security headers, the
access token, CSRF, and feedback recorded from a form."""

from __future__ import annotations

import html
import re

import pytest
from starlette.testclient import TestClient

import llmtrace
from llmtrace.ui import create_app


def listed(response) -> list[str]:
    assert response.status_code == 200, response.text[:2000]
    return re.findall(r'data-trace-id="([^"]+)"', response.text)


def text_of(response) -> str:
    """The page's text, tags removed and entities decoded: what a person reads."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.text)).split())


def test_list_newest_first_with_summaries(client, scenario):
    ids = scenario.ids
    assert listed(client.get("/")) == [ids[k] for k in ("xss", "rated", "error", "turn3", "turn2", "turn1")]
    row = re.search(rf'data-trace-id="{ids["turn2"]}".*?</tr>', client.get("/").text, re.S).group(0)
    assert "support-answer" in row and "240 / 60" in row and "edited" in row and "gpt-4o-2024-08-06" in row
    assert "$0.00" in row  # priced: gpt-4o-2024-08-06 from genai-prices
    assert "1–6 of 6 trace(s)" in text_of(client.get("/"))


@pytest.mark.parametrize(("query", "expected"), [
    ("feature=search", ["rated"]),
    ("status=error", ["error", "turn3"]),
    ("action=edited", ["xss", "turn2"]),
    ("action=rated", ["rated"]),
    ("action=escalated", ["rated"]),  # a custom action
    ("session=sess-ana", ["turn3", "turn2", "turn1"]),
    ("prompt_version=refunds-v6", ["turn1"]),
    ("error_type=rate_limit", ["error"]),
    ("chunk=pol-7%232", ["turn3", "turn1"]),  # the RAG answers used chunk pol-7#2
    ("q=KETTLE", ["rated", "turn1"]),  # words in the content, any case
    ("validation_failed=1", ["xss", "turn3"]),
    ("model=gpt-4o-2024-08-06&feature=refunds&status=ok", ["turn2", "turn1"]),
    ("min_latency=100000", []),
])
def test_each_filter_lives_in_the_url(client, scenario, query, expected):
    assert listed(client.get("/?" + query)) == [scenario.ids[k] for k in expected]


def test_bad_filter_says_what_to_pass(client):
    r = client.get("/?since=yesterday-ish")
    assert r.status_code == 400
    assert "since is an age like '7d', '12h', '30m', or a date/time like '2026-11-01'" in text_of(r)
    r = client.get("/?min_cost=lots")
    assert r.status_code == 400 and "min cost is a number, not 'lots'" in text_of(r)
    assert "action is one of" in text_of(client.get("/?action=liked"))


def test_pages_of_the_list_follow_each_other(client, scenario):
    seen: list[str] = []
    url = "/?limit=2&feature=refunds"
    for _ in range(5):
        r = client.get(url)
        seen += listed(r)
        more = re.search(r'href="([^"]+)" id="next"', r.text)
        if not more:
            break
        url = html.unescape(more.group(1))
        assert "feature=refunds" in url  # the filters stay in the next page's address
    assert seen == [scenario.ids[k] for k in ("error", "turn3", "turn2", "turn1")]
    assert "3–4 of 4" in text_of(client.get(url))


@pytest.mark.xfail(strict=True, reason="issue 14 item 2: a tools-only answer's raw_completion is now {content: null, "
                                       "tool_calls: [...]}, not '': ui/templates/trace.html's == '' check must follow")
def test_trace_page_shows_the_nine_signals_of_a_tool_call(client, scenario):
    r = client.get(f"/trace/{scenario.ids['turn2']}")
    assert r.status_code == 200
    page = text_of(r)
    doc = llmtrace.Store(scenario.url).get_trace(scenario.ids["turn2"]).to_dict()
    first, second = doc["llm_calls"]
    assert "LLM call 1" in page and "LLM call 2" in page
    assert "asked gpt-4o" in page and "answered gpt-4o-2024-08-06" in page  # model asked vs version answered
    assert "You handle refunds. Be brief." in page and "Refund for order A-1001?" in page  # system prompt, messages
    assert "lookup_order" in page and '"order_id": "A-1001"' in page  # the tool's arguments...
    assert "order A-1001: blender, delivered 2026-11-10, 49.00 EUR" in page  # ...joined to its result
    assert "no text: the model asked for 1 tool call(s)" in page
    assert "Your blender order A-1001 can be refunded: 49.00 EUR." in page  # the raw completion
    assert f"{first['tokens']['input']} in" in page and "cached 20" in page
    assert "The user's action: edited" in page and "Your blender order A-1001 is refunded: 49.00 EUR." in page
    assert 'href="/session/sess-ana"' in r.text
    assert len(re.findall(r'<details class="node', r.text)) == len(doc["spans"])  # the span tree, one node per span
    assert second["latency_ms"]["tools"] is not None and "tool round-trips" in page


def test_trace_page_shows_a_parse_failure_beside_the_raw_completion(client, scenario):
    r = client.get(f"/trace/{scenario.ids['turn3']}")
    page = text_of(r)
    assert "Sure! Here you go: {eligible: yes}" in page  # raw completion, as the model wrote it
    assert "parse error" in page and "OutputParserException" in page
    assert "schema FAILED" in page and "cites_policy FAILED" in page and "no policy id cited" in page
    assert re.search(r'<div class="lost">', r.text)
    assert 'href="/?chunk=pol-7%232"' in r.text  # every chunk links to the traces that used it
    assert "Refunds are accepted within 30 days of delivery." in page and "0.910" in page


def test_json_of_a_trace_is_the_document(client, scenario):
    r = client.get(f"/api/trace/{scenario.ids['turn1']}")
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == llmtrace.Store(scenario.url).get_trace(scenario.ids["turn1"]).to_dict()


def test_unknown_trace_is_a_404_that_says_so(client):
    r = client.get("/trace/no-such-id")
    assert r.status_code == 404 and "no trace with id 'no-such-id' in the store" in text_of(r)


def test_session_page_is_the_conversation_in_order(client, scenario):
    r = client.get("/session/sess-ana")
    page = text_of(r)
    questions = [page.index(q) for q in ("Can I return my kettle?", "Refund for order A-1001?", "And the toaster?")]
    assert questions == sorted(questions)
    assert "Your blender order A-1001 can be refunded: 49.00 EUR." in page
    assert "Sure! Here you go: {eligible: yes}" in page and "parse failed" in page
    assert re.findall(r'class="act (\w+)"', r.text) == ["accepted", "edited", "retried"]


def test_stats_page_charts_and_prompt_version_before_after(client):
    r = client.get("/stats?since=30d&by=feature&feature=refunds")
    assert r.status_code == 200
    assert r.text.count('<svg class="chart') == 5  # calls, cost, latency, failures, feedback mix
    table = re.search(r'<table class="stats ba" id="versions">.*?</table>', r.text, re.S).group(0)
    assert "refunds-v6" in table and "refunds-v7" in table
    calls = re.search(r"<th>LLM calls</th><td class=\"n\">([^<]+)</td><td class=\"n\">([^<]+)</td>", table)
    assert calls.groups() == ("1", "4")  # v6: one RAG call; v7: two tool-loop calls, the parse failure, the 429
    assert "error rate" in table and "traces accepted" in table
    assert "LLM calls per day" in r.text
    assert "LLM calls per hour" in client.get("/stats?since=24h").text  # a short window by the hour
    bad = client.get("/stats?by=nope")
    assert bad.status_code == 400 and "cannot group by ['nope']" in text_of(bad)


def test_compare_marks_what_differs(client, scenario):
    r = client.get(f"/compare?t={scenario.ids['turn1']}&t={scenario.ids['turn3']}")
    assert r.status_code == 200
    sections = re.split(r'<tr class="section">', r.text)
    trace = dict((field, mark) for mark, field in re.findall(r'<tr class="(same|differs)"><th>([^<]+)</th>', sections[1]))
    call = dict((field, mark) for mark, field in re.findall(r'<tr class="(same|differs)"><th>([^<]+)</th>', sections[2]))
    assert trace["status"] == "differs" and trace["prompt version"] == "differs" and trace["name"] == "same"
    assert call["raw completion"] == "differs" and call["parse error"] == "differs" and call["model asked"] == "same"
    assert call["system prompt"] == "same"
    one = client.get(f"/compare?t={scenario.ids['turn1']}")
    assert one.status_code == 400 and "tick exactly two traces" in text_of(one)


def test_security_headers_on_every_page(client, scenario):
    for url in ("/", f"/trace/{scenario.ids['turn1']}", "/stats", "/static/ui.css", "/trace/nope"):
        r = client.get(url)
        csp = r.headers["content-security-policy"]
        assert "script-src 'none'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, url
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY", url
        assert r.headers["referrer-policy"] == "same-origin", url
    assert "no-store" in client.get("/").headers["cache-control"]


def test_only_loopback_names_without_a_token(scenario):
    """A page of another site whose name points at 127.0.0.1 (DNS rebinding) gets nothing."""
    with TestClient(create_app(scenario.url), base_url="http://evil.example:8700") as c:
        r = c.get("/")
        assert r.status_code == 400 and "unknown Host header" in r.text and "support-answer" not in r.text
    with TestClient(create_app(scenario.url), base_url="http://localhost:8700") as c:
        assert c.get("/").status_code == 200


def test_access_token(scenario):
    token = "s3cret-token-for-tests-0123"
    with TestClient(create_app(scenario.url, token=token), base_url="http://10.1.2.3:8700") as c:
        r = c.get("/")
        assert r.status_code == 401 and "support-answer" not in r.text
        assert c.get("/?token=wrong-token-wrong-token").status_code == 401
        assert c.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        r = c.get(f"/stats?token={token}&since=7d", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/stats?since=7d"  # out of the address bar
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/").status_code == 200  # the cookie carries it now


def test_serving_elsewhere_than_loopback_needs_a_token(monkeypatch):
    from llmtrace.ui.server import check_token

    monkeypatch.delenv("LLMTRACE_UI_TOKEN", raising=False)
    with pytest.raises(llmtrace.ConfigError, match="refusing to serve traces on 0.0.0.0 without an access token"):
        check_token("0.0.0.0", None)
    with pytest.raises(llmtrace.ConfigError, match="at least 16 characters"):
        check_token("0.0.0.0", "short")
    assert check_token("127.0.0.1", None) is None and check_token("0.0.0.0", "x" * 20) == "x" * 20
    monkeypatch.setenv("LLMTRACE_UI_TOKEN", "y" * 20)
    assert check_token("192.168.1.5", None) == "y" * 20


def _csrf(client, trace_id: str) -> str:
    r = client.get(f"/trace/{trace_id}")
    return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)


def test_feedback_from_the_page_is_recorded_through_the_api(own_scenario):
    scenario = own_scenario
    with TestClient(create_app(scenario.url), base_url="http://127.0.0.1:8700") as client:
        tid = scenario.ids["turn1"]
        token = _csrf(client, tid)
        r = client.post("/act/feedback", data={"csrf": token, "trace_id": tid, "action": "rated", "score": "3.5",
                                               "comment": "checked by QA", "source": "qa"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/trace/{tid}?recorded=feedback#feedback"
        fb = llmtrace.Store(scenario.url).get_trace(tid).to_dict()["feedback"][-1]
        assert (fb["action"], fb["score"], fb["comment"], fb["source"]) == ("rated", 3.5, "checked by QA", "qa")
        page = text_of(client.get(f"/trace/{tid}?recorded=feedback"))
        assert "Feedback recorded." in page and "checked by QA" in page
        r = client.post("/act/validation", data={"csrf": token, "trace_id": tid, "rule": "tone_ok", "passed": "true",
                                                 "detail": "polite"}, follow_redirects=False)
        assert r.status_code == 303
        val = llmtrace.Store(scenario.url).get_trace(tid).to_dict()["validations"][-1]
        assert (val["rule"], val["passed"], val["detail"]) == ("tone_ok", True, "polite")


def test_a_bad_form_is_not_recorded_and_says_why(client, scenario):
    tid = scenario.ids["turn1"]
    token = _csrf(client, tid)
    before = len(llmtrace.Store(scenario.url).get_trace(tid).to_dict()["feedback"])
    r = client.post("/act/feedback", data={"csrf": token, "trace_id": tid, "action": "edited"})
    assert r.status_code == 400 and "action 'edited' needs the text the user kept" in text_of(r)
    r = client.post("/act/feedback", data={"csrf": token, "trace_id": tid, "action": "rated", "score": "many"})
    assert r.status_code == 400 and "score is a number" in text_of(r)
    assert len(llmtrace.Store(scenario.url).get_trace(tid).to_dict()["feedback"]) == before


def test_csrf_a_form_from_elsewhere_is_refused(client, scenario):
    tid = scenario.ids["turn1"]
    before = len(llmtrace.Store(scenario.url).get_trace(tid).to_dict()["feedback"])
    data = {"trace_id": tid, "action": "accepted"}
    assert client.post("/act/feedback", data=data).status_code == 403  # no token
    assert client.post("/act/feedback", data={**data, "csrf": "x" * 32}).status_code == 403  # not this browser's
    token = _csrf(client, tid)
    r = client.post("/act/feedback", data={**data, "csrf": token}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403  # the right token, sent by another site's page
    assert len(llmtrace.Store(scenario.url).get_trace(tid).to_dict()["feedback"]) == before


def test_read_only_has_no_forms(scenario):
    with TestClient(create_app(scenario.url, read_only=True), base_url="http://127.0.0.1") as c:
        r = c.get(f"/trace/{scenario.ids['turn1']}")
        assert "feedback-form" not in r.text and "--read-only" in r.text
        token = re.search(r"llmtrace_ui_csrf=([^;]+)", r.headers["set-cookie"]).group(1)
        r = c.post("/act/feedback", data={"csrf": token, "trace_id": scenario.ids["turn1"], "action": "accepted"})
        assert r.status_code == 403


@pytest.mark.parametrize("capture", ["expired", "metadata", "redacted"])
def test_content_that_is_not_there_is_shown_with_its_reason(tmp_path, capture):
    from fakes import ScriptedChatModel, answer, simple_chain

    from llmtrace_langchain import LLMTraceCallbackHandler

    url = f"sqlite:///{tmp_path / 'c.db'}"
    settings = {"expired": {"content_ttl_days": 1e-9}, "metadata": {"capture": "metadata"},
                "redacted": {"capture": "redacted"}}[capture]
    with llmtrace.Tracer(url, flush_interval_seconds=0.05, **settings) as t:
        h = LLMTraceCallbackHandler(t)
        simple_chain(ScriptedChatModel(script=[answer("Write to ana@example.com")])).invoke(
            {"question": "mail ana@example.com"}, config={"callbacks": [h]})
        tid = h.last_trace_id
    with TestClient(create_app(url), base_url="http://127.0.0.1") as c:
        r = c.get(f"/trace/{tid}")
    page = text_of(r)
    if capture == "redacted":
        assert '<mark class="redacted"' in r.text and "Write to [EMAIL" in page and "ana@example.com" not in page
        return
    label = {"expired": "expired (content retention ended)", "metadata": "never captured (capture=metadata)"}[capture]
    assert f"Content of this trace: {label}" in page
    assert r.text.count(f'data-missing="{"expired" if capture == "expired" else "not_captured"}"') >= 4  # each field says why
    assert "tokens in / out" in page and "120 / 30" in page  # the metadata is all there
