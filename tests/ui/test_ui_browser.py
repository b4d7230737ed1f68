"""llmtrace ui in headless Chromium, as a person uses it: open the list, filter, open a trace, expand
a span, read a chunk, record feedback and see it appear, open the session, open stats, compare.
Then the XSS corpus: every hostile string renders as text, nothing runs. Then the notebook view
inside a notebook's stylesheet renders as it does alone."""

from __future__ import annotations

import re

import llmtrace
from ui.ui_scenario import XSS, XSS_CHUNK, XSS_NAME, XSS_SESSION


def test_find_a_bad_answer_and_act_on_it(page, own_served, own_scenario):
    served, scenario = own_served, own_scenario
    page.goto(served.base + "/")
    rows = page.locator("#traces tbody tr")
    assert rows.count() == 6
    # filter: the refunds feature's errors, through the form; the filters land in the address
    page.fill("input[name=feature]", "refunds")
    page.select_option("select[name=status]", "error")
    page.click("#filters button[type=submit]")
    page.wait_for_url(re.compile(r"feature=refunds"))
    assert "status=error" in page.url
    assert page.locator("#traces tbody tr").count() == 2
    assert page.locator("#count").inner_text().startswith("1–2 of 2")
    # open the parse failure
    page.locator(f'tr[data-trace-id="{scenario.ids["turn3"]}"] a.tid').click()
    page.wait_for_url(re.compile(r"/trace/"))
    assert page.locator("#trace-status").inner_text() == "error"
    assert page.locator(".parse-error").first.is_visible()
    # expand a span: the retriever's outputs are hidden until its row is opened
    retriever = page.locator('details.node[data-kind="retriever"]').first
    assert not retriever.locator(".body").is_visible()
    retriever.locator("summary").first.click()
    assert retriever.locator(".body").is_visible()
    assert "Gift cards are never refundable." in retriever.locator(".body").inner_text()
    # read a chunk: its text opens under its summary line; its source id lists the traces that used it
    chunk = page.locator("details.chunktext").first
    chunk.locator("summary").click()
    assert "Refunds are accepted within 30 days of delivery." in chunk.locator("pre").inner_text()
    # record feedback, and see it on the page
    page.select_option("#feedback-form select[name=action]", "edited")
    page.fill("#feedback-form textarea[name=correction]", "The toaster is refundable within 30 days.")
    page.fill("#feedback-form textarea[name=comment]", "browser test")
    page.click("#feedback-form button[type=submit]")
    page.wait_for_url(re.compile(r"recorded=feedback"))
    assert page.locator("#notice").inner_text() == "Feedback recorded."
    feedback = page.locator("#feedback").inner_text()
    assert "The toaster is refundable within 30 days." in feedback and "browser test" in feedback
    assert "edited" in page.locator("#user-action").inner_text()
    doc = llmtrace.Store(scenario.url).get_trace(scenario.ids["turn3"]).to_dict()
    assert doc["feedback"][-1]["correction"] == "The toaster is refundable within 30 days."
    # the chunk's link: every trace that used it
    page.locator("a.chunk", has_text="pol-7#2").first.click()
    page.wait_for_url(re.compile(r"chunk=pol-7%232"))
    assert {page.locator("#traces tbody tr").nth(i).get_attribute("data-trace-id") for i in range(2)} == {
        scenario.ids["turn1"], scenario.ids["turn3"]}
    # the session: the conversation in order
    page.goto(served.base + f"/trace/{scenario.ids['turn3']}")
    page.click("#session-link")
    page.wait_for_url(re.compile(r"/session/sess-ana"))
    turns = page.locator("#turns > li")
    assert turns.count() == 3
    assert "Can I return my kettle?" in turns.nth(0).inner_text()
    assert "Your blender order A-1001 can be refunded" in turns.nth(1).inner_text()
    # stats: charts drawn, a table per feature
    page.click("header nav >> text=Stats")
    page.wait_for_url(re.compile(r"/stats"))
    assert page.locator("#charts svg.chart").count() == 4 and page.locator("#charts svg rect.bar").count() > 0
    assert page.locator("#stats-table tbody tr").count() == 3  # refunds, search, xss
    assert page.errors == [] and page.dialogs == []


def test_compare_two_ticked_traces(page, served, scenario):
    page.goto(served.base + "/?feature=refunds")
    page.check(f'input[value="{scenario.ids["turn1"]}"]')
    page.check(f'input[value="{scenario.ids["turn2"]}"]')
    page.click("text=compare ticked")
    page.wait_for_url(re.compile(r"/compare"))
    assert page.locator("#compare tr.differs").count() > 3
    assert "refunds-v6" in page.locator("#compare").inner_text()


def _assert_inert(page):
    assert page.dialogs == [], page.dialogs  # no alert() ran
    assert page.evaluate("document.scripts.length") == 0  # no <script> element made it into the page
    assert page.evaluate("document.querySelectorAll('img, [onerror], [onload]').length") == 0
    assert page.evaluate("document.querySelectorAll('style').length") == 0  # the stylesheet is linked, not inline
    assert page.locator("body").is_visible()
    assert page.evaluate("getComputedStyle(document.body).display") == "block"


def test_xss_corpus_renders_as_text(page, served, scenario):
    tid = scenario.ids["xss"]
    page.goto(served.base + f"/trace/{tid}")
    _assert_inert(page)
    body = page.locator("main").text_content()  # (collapsed details too: metadata, span inputs)
    for name, text in XSS.items():
        if name != "json":  # (the JSON one holds a line separator, shown but not comparable as one line)
            assert text in body, name
    assert XSS_NAME in page.locator("h1").inner_text()
    assert page.title().startswith(XSS_NAME)
    assert XSS_SESSION in page.locator("#meta").inner_text()
    # a chunk whose id is a javascript: URL links to a filtered list, never to the URL itself
    link = page.locator("a.chunk", has_text=XSS_CHUNK).first
    assert link.get_attribute("href").startswith("/?chunk=javascript%3A")
    link.click()
    page.wait_for_url(re.compile(r"/\?chunk="))
    _assert_inert(page)
    assert page.locator("#traces tbody tr").count() == 1
    for url in ("/", "/?feature=xss", f"/session/{XSS_SESSION}", f"/compare?a={tid}&b={scenario.ids['turn1']}",
                "/stats?feature=xss&by=prompt-version", f"/?q={XSS['script']}"):
        page.goto(served.base + url.replace("#", "%23"))
        _assert_inert(page)
    assert XSS["template"] in page.locator("#traces").inner_text()  # the hostile prompt version, as text
    page.goto(served.base + f"/session/{XSS_SESSION}".replace('"', "%22").replace(">", "%3E").replace("<", "%3C"))
    assert XSS["script"] in page.locator("#turns").inner_text()
    _assert_inert(page)
    assert page.errors == []


def test_xss_in_feedback_typed_into_the_page(page, own_served, own_scenario):
    served, scenario = own_served, own_scenario
    tid = scenario.ids["rated"]
    page.goto(served.base + f"/trace/{tid}")
    page.fill("#feedback-form input[name=custom_action]", "<img src=x onerror=alert(9)>")
    page.fill("#feedback-form textarea[name=comment]", XSS["script"] + XSS["img"])
    page.click("#feedback-form button[type=submit]")
    page.wait_for_url(re.compile(r"recorded=feedback"))
    _assert_inert(page)
    text = page.locator("#feedback").inner_text()
    assert "<img src=x onerror=alert(9)>" in text and XSS["script"] + XSS["img"] in text
    page.goto(served.base + "/")
    _assert_inert(page)
    assert "<img src=x onerror=alert(9)>" in page.locator(f'tr[data-trace-id="{tid}"]').inner_text()


# A notebook's rules, as JupyterLab (.jp-RenderedHTMLCommon) and classic Notebook (.rendered_html)
# ship them for HTML outputs: right-aligned cells, fixed table layout, striped rows, words broken
# anywhere in <pre>, and a few more that would change the view.
NOTEBOOK_CSS = """
.jp-RenderedHTMLCommon table, .rendered_html table {border-collapse:collapse;border-spacing:0;border:none;
  font-size:12px;table-layout:fixed;margin-left:auto;margin-right:auto}
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon tr, .rendered_html td, .rendered_html tr {
  text-align:right;vertical-align:middle;padding:0.5em 0.5em;line-height:normal;white-space:normal;max-width:none;border:none}
.jp-RenderedHTMLCommon tbody tr:nth-child(odd) {background:#f5f5f5}
.jp-RenderedHTMLCommon tbody tr:hover {background:rgba(66,165,245,.2)}
.jp-RenderedHTMLCommon pre, .jp-OutputArea-output pre {word-break:break-all;white-space:pre;line-height:normal;
  font-size:10px;padding:20px;background:yellow}
.jp-RenderedHTMLCommon h4 {font-size:20px;margin-top:3em}
.jp-RenderedHTMLCommon * + table {margin-top:1em}
.jp-RenderedHTMLCommon div, .jp-RenderedHTMLCommon span {text-align:right;font-size:18px}
.jp-RenderedHTMLCommon b {font-weight:300}
"""
PROPERTIES = ["text-align", "word-break", "white-space", "table-layout", "font-size", "font-weight", "line-height",
              "padding-left", "padding-top", "margin-top", "background-color", "vertical-align", "border-bottom-width",
              "width", "height", "margin-left"]


def test_notebook_view_is_the_same_inside_a_notebook(page, scenario):
    trace = llmtrace.Store(scenario.url).get_trace(scenario.ids["turn3"])
    view = trace._repr_html_()
    styles = []
    for wrapped in (view, f'<style>{NOTEBOOK_CSS}</style><div class="jp-RenderedHTMLCommon jp-OutputArea-output '
                          f'rendered_html">{view}</div>'):
        page.set_content(f"<!doctype html><html><body style='width:1100px'>{wrapped}</body></html>")
        styles.append(page.evaluate("""(props) => [...document.querySelectorAll('.llmt, .llmt *')].map(e => {
            const s = getComputedStyle(e); return [e.tagName, ...props.map(p => s.getPropertyValue(p))]; })""",
                                    PROPERTIES))
    alone, inside = styles
    assert len(alone) == len(inside) > 50
    differences = [(a[0], p, x, y) for a, b in zip(alone, inside, strict=True)
                   for p, x, y in zip(PROPERTIES, a[1:], b[1:], strict=True) if x != y]
    assert differences == []
    assert {row[1] for row in alone if row[0] == "TD"} == {"left"}
