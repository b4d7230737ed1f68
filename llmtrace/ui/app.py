"""The pages of ``llmtrace ui``: a Starlette app over the read facade (``llmtrace.Store``).

Reading goes through ``Store`` (no writer thread, never creates a database); recording feedback or
a validation from a page goes through ``Tracer.record_feedback`` / ``record_validation``, the same
public calls an application makes, with a Tracer started on the first write.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote

import sqlalchemy as sa
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from llmtrace.base.classify import HINTS
from llmtrace.base.errors import ConfigError, InvalidFeedback, LLMTraceError, StoreError, TraceNotFound
from llmtrace.base.fields import ACTIONS, FEEDBACK_ACTIONS
from llmtrace.read.facade import Store
from llmtrace.ui import charts
from llmtrace.ui.render import environment, ms, num, usd
from llmtrace.ui.security import CSRF_FIELD, LOOPBACK_HOSTS, Guard, csrf_ok

# URL parameter of the list page -> find_traces filter
LIST_PARAMS = {"feature": "feature", "team": "team", "environment": "environment", "model": "model",
               "prompt_version": "prompt_version", "user": "user", "session": "session_id", "name": "name",
               "status": "status", "error_type": "error_type", "action": "action", "chunk": "chunk_source",
               "q": "text"}
NUMBER_PARAMS = {"min_cost": "min_cost", "min_latency": "min_latency_ms"}
STATS_FILTERS = ("feature", "model", "prompt_version", "team", "environment")
PAGE_SIZE = 50
MAX_FORM_BYTES = 1_000_000
FLUSH_SECONDS = 10.0


class UI:
    """What the pages share: the store, the templates, and a Tracer for writes (started lazily)."""

    def __init__(self, store: Store, *, read_only: bool = False) -> None:
        self.store = store
        self.env = environment()
        self.read_only = read_only
        self._tracer: Any = None
        self._lock = threading.Lock()
        self._values: tuple[float, dict[str, list[str]]] | None = None

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("error", None)
        context.setdefault("notice", None)
        context.setdefault("page", name)
        html = self.env.get_template(f"{name}.html").render(
            db_url=self.store.url, csrf=request.scope.get("state", {}).get("csrf", ""), **context)
        return HTMLResponse(html, status_code=status_code)

    def message(self, request: Request, heading: str, message: str, status_code: int) -> HTMLResponse:
        return self.page(request, "message", status_code, heading=heading, message=message)

    def values(self) -> dict[str, list[str]]:
        """Filter suggestions, read at most once a minute."""
        import time

        now = time.monotonic()
        if self._values is None or now - self._values[0] > 60:
            self._values = (now, self.store.filter_values())
        return self._values[1]

    def writable(self) -> tuple[bool, str]:
        if self.read_only:
            return False, "Read-only: llmtrace ui was started with --read-only."
        if not self.store.content_readable():
            return False, ("Read-only: this database role may not read content (a metadata-only reader of "
                           "llmtrace db harden), so it may not record feedback either.")
        return True, ""

    def tracer(self) -> Any:
        with self._lock:
            if self._tracer is None:
                from llmtrace._tracer import Tracer

                self._tracer = Tracer(self.store._db.url, flush_interval_seconds=0.05)
            return self._tracer

    def close(self) -> None:
        with self._lock:
            if self._tracer is not None:
                self._tracer.close()
                self._tracer = None
        self.store.close()


# -- the trace list -------------------------------------------------------------------------------

def _list_filters(query: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the form's values as given, the find_traces arguments); a bad number is a ConfigError."""
    form: dict[str, Any] = {k: query.get(k, "").strip() for k in (*LIST_PARAMS, *NUMBER_PARAMS, "since", "until", "limit")}
    form["validation_failed"] = query.get("validation_failed", "") in ("1", "true", "on")
    args: dict[str, Any] = {LIST_PARAMS[k]: v for k, v in form.items() if k in LIST_PARAMS and v}
    for k, name in NUMBER_PARAMS.items():
        if form[k]:
            try:
                args[name] = float(form[k])
            except ValueError:
                raise ConfigError(f"{k.replace('_', ' ')} is a number, not {form[k]!r}") from None
    if form["validation_failed"]:
        args["validation_failed"] = True
    for k in ("since", "until"):
        if form[k]:
            args[k] = form[k]
    try:
        args["limit"] = int(form["limit"]) if form["limit"] else PAGE_SIZE
    except ValueError:
        raise ConfigError(f"per page is a whole number, not {form['limit']!r}") from None
    return form, args


def list_page(ui: UI, request: Request) -> HTMLResponse:
    query = dict(request.query_params)
    cursor = query.get("cursor") or None
    try:
        first_row = max(1, int(query.get("n", "1")))
    except ValueError:
        first_row = 1
    error, page_data, status = None, None, 200
    form: dict[str, Any] = {}
    try:
        form, args = _list_filters(query)
        page_data = ui.store.list_traces(cursor=cursor, **args)
    except LLMTraceError as exc:
        error, status = str(exc), 400
        form = form or {k: query.get(k, "") for k in (*LIST_PARAMS, *NUMBER_PARAMS, "since", "until", "limit")}
        form.setdefault("validation_failed", False)
    params = {k: v for k, v in form.items() if v}
    filtered = any(v for k, v in form.items() if k != "limit")
    return ui.page(request, "list", status, f=form, params=params, page_data=page_data, cursor=cursor,
                   first_row=first_row if cursor else 1, filtered=filtered, error=error, values=ui.values(),
                   actions=FEEDBACK_ACTIONS, error_types=sorted(HINTS), base_actions=ACTIONS)


# -- one trace ------------------------------------------------------------------------------------

def _tree(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans as nested nodes with their place on the waterfall (0..1000 of the trace's time)."""
    from datetime import datetime

    def t(value: str | None) -> float | None:
        if not value:
            return None
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
        except ValueError:
            return None

    spans = doc["spans"]
    start = t(doc.get("started_at"))
    starts = [s for s in (t(s["started_at"]) for s in spans) if s is not None]
    if starts:
        start = min([start, *starts]) if start is not None else min(starts)
    ends = [e for e in (t(s["ended_at"]) for s in spans) if e is not None]
    total = max([doc.get("latency_ms") or 0.0, *((e - start) for e in ends)]) if start is not None else 0.0
    calls = {c["span_id"]: i for i, c in enumerate(doc["llm_calls"], 1)}
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    many = len(spans) > 60
    for s in spans:  # parent before child (the document's order)
        parent = nodes.get(s["parent_id"]) if s["parent_id"] else None
        depth = parent["depth"] + 1 if parent else 0
        begin = t(s["started_at"])
        x = ((begin - start) / total * 1000) if (begin is not None and start is not None and total) else 0.0
        w = ((s["latency_ms"] or 0) / total * 1000) if total else 0.0
        node = {**s, "depth": min(depth, 12), "children": [], "call_no": calls.get(s["span_id"]),
                "x": f"{max(0.0, min(x, 999.0)):.1f}", "w": f"{max(2.0, min(w, 1000.0 - max(0.0, min(x, 999.0)))):.1f}"}
        nodes[s["span_id"]] = node
        (parent["children"] if parent else roots).append(node)
    for node in nodes.values():
        node["open"] = bool(node["children"]) and (not many or node["depth"] < 3)
    return roots


def _content_reason(doc: dict[str, Any]) -> str | None:
    """Why the trace's content cannot be shown, if it cannot: the same for every span."""
    if doc.get("content_readable") is False:
        return "not_readable"
    if doc.get("capture") == "metadata":
        return "not_captured"
    reasons = {c["content_missing"] for c in doc["llm_calls"]}
    if len(reasons) == 1:
        return next(iter(reasons))
    return None


def _latency(call: dict[str, Any]) -> Markup:
    lat = call["latency_ms"]
    return charts.hbars([("total", lat.get("total")), ("time to first token", lat.get("ttft")),
                         ("generation", lat.get("generation")), ("retrieval before it", lat.get("retrieval")),
                         ("tool round-trips", lat.get("tools"))], ms)


NOTICES = {"feedback": "Feedback recorded.", "validation": "Validation recorded."}


def trace_page(ui: UI, request: Request, trace_id: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    doc = ui.store.get_trace(trace_id).to_dict()
    writable, why = ui.writable()
    return ui.page(request, "trace", status, doc=doc, tree=_tree(doc), reason=_content_reason(doc),
                   latency={c["span_id"]: _latency(c) for c in doc["llm_calls"]}, writable=writable,
                   read_only_reason=why, actions=FEEDBACK_ACTIONS, error=error,
                   notice=NOTICES.get(request.query_params.get("recorded", "")))


def trace_json(ui: UI, trace_id: str) -> Response:
    doc = ui.store.get_trace(trace_id).to_dict()
    name = quote(trace_id, safe="")[:100]
    return Response(json.dumps(doc, ensure_ascii=False, indent=2), media_type="application/json",
                    headers={"content-disposition": f'inline; filename="trace-{name}.json"'})


# -- acting on a trace ----------------------------------------------------------------------------

async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ConfigError(f"the form is larger than {MAX_FORM_BYTES:,} bytes")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise ConfigError("forms are sent as application/x-www-form-urlencoded")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=50)
    return {k: v[-1] for k, v in parsed.items()}


def _record(ui: UI, what: str, form: dict[str, str]) -> None:
    trace_id = form.get("trace_id", "")
    tracer = ui.tracer()
    if what == "feedback":
        action = form.get("custom_action", "").strip() or form.get("action", "")
        score_text = form.get("score", "").strip()
        try:
            score = float(score_text) if score_text else None
        except ValueError:
            raise InvalidFeedback(f"score is a number (e.g. 4 or 0.8), not {score_text!r}") from None
        tracer.record_feedback(trace_id, action, score=score, correction=form.get("correction") or None,
                               comment=form.get("comment") or None, source=form.get("source", "").strip() or "reviewer")
    else:
        passed = {"true": True, "false": False}.get(form.get("passed", ""))
        if passed is None:
            raise ConfigError("outcome is passed or failed")
        tracer.record_validation(trace_id, rule=form.get("rule", ""), passed=passed,
                                 detail=form.get("detail") or None, span_id=form.get("span_id") or None)
    if not tracer.flush(timeout=FLUSH_SECONDS):
        problem = tracer.health().get("last_error") or "the write did not finish in time"
        raise StoreError(f"the {what} was not written yet: {problem}")


def make_act(ui: UI, what: str):
    async def act(request: Request) -> Response:
        state = request.scope.get("state", {})
        try:
            form = await _form(request)
        except ConfigError as exc:
            return ui.message(request, "Not recorded", str(exc), 400)
        if not csrf_ok(state, form.get(CSRF_FIELD), request.headers):
            return ui.message(request, "Not recorded", "This form did not come from this page (its CSRF token does not "
                              "match): reload the trace page and send it again.", 403)
        writable, why = await run_in_threadpool(ui.writable)
        trace_id = form.get("trace_id", "")
        if not writable:
            return ui.message(request, "Not recorded", why, 403)
        try:
            await run_in_threadpool(_record, ui, what, form)
        except LLMTraceError as exc:
            try:
                return await run_in_threadpool(trace_page, ui, request, trace_id, f"Not recorded: {exc}", 400)
            except TraceNotFound:
                return ui.message(request, "Not recorded", str(exc), 400)
        return RedirectResponse(f"/trace/{quote(trace_id, safe='')}?recorded={what}#{what}", status_code=303)

    return act


# -- sessions, compare, stats ---------------------------------------------------------------------

def session_page(ui: UI, request: Request, session_id: str) -> HTMLResponse:
    return ui.page(request, "session", s=ui.store.session(session_id), base_actions=ACTIONS)


def compare_page(ui: UI, request: Request) -> HTMLResponse:
    picked = request.query_params.getlist("t")
    a = request.query_params.get("a") or (picked[0] if picked else "")
    b = request.query_params.get("b") or (picked[1] if len(picked) > 1 else "")
    if picked and len(picked) != 2:
        return ui.page(request, "compare", 400, a=a, b=b, cmp=None, error=f"tick exactly two traces to compare "
                       f"({len(picked)} ticked)")
    if not (a and b):
        return ui.page(request, "compare", a=a, b=b, cmp=None)
    return ui.page(request, "compare", a=a, b=b, cmp=ui.store.compare(a, b))


def _window_hours(since: str | None, until: str | None) -> float | None:
    from datetime import datetime, timezone

    from llmtrace.read.queries import time_bound

    start = time_bound(since) if since else None
    end = time_bound(until, "until") if until else datetime.now(timezone.utc).replace(tzinfo=None)
    return None if start is None or end is None else (end - start).total_seconds() / 3600


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _share(action: str, row: dict[str, Any]) -> float | None:
    return row[f"feedback_{action}"] / row["traces"] if row["traces"] else None


# label, how to get it from a stats row, format, whether lower is better
BEFORE_AFTER: tuple[tuple[str, Callable[[dict[str, Any]], Any], Callable[[Any], str], bool | None], ...] = (
    ("LLM calls", lambda r: r["calls"], num, None),
    ("input tokens per call", lambda r: r["avg_input_tokens"], num, True),
    ("output tokens per call", lambda r: r["avg_output_tokens"], num, True),
    ("cost per call", lambda r: r["cost_usd"] / r["calls"] if r["cost_usd"] is not None and r["calls"] else None, usd, True),
    ("latency p50", lambda r: r["latency_p50_ms"], ms, True),
    ("latency p95", lambda r: r["latency_p95_ms"], ms, True),
    ("error rate", lambda r: r["error_rate"], _pct, True),
    ("parse failure rate", lambda r: r["parse_failure_rate"], _pct, True),
    ("failed check rate", lambda r: r["validation_failure_rate"], _pct, True),
    *((f"traces {a}", partial(_share, a), _pct, a != "accepted") for a in ACTIONS),
)


def _before_after(rows: list[dict[str, Any]], before: str, after: str) -> list[dict[str, str]]:
    by = {r["prompt_version"]: r for r in rows}
    b, a = by.get(before), by.get(after)
    if b is None or a is None:
        return []
    out = []
    for label, get, fmt, lower_better in BEFORE_AFTER:
        x, y = get(b), get(a)
        delta, cls = "", ""
        if x is not None and y is not None:
            diff = y - x
            if fmt is _pct:
                shown = round(diff * 100, 1)
                delta = f"{shown:+.1f} pts" if shown else "0.0 pts"
            elif x:
                shown = round(diff / x * 100)
                delta = f"{shown:+.0f}%" if shown else "0%"
            else:
                shown = 0
            if lower_better is not None and shown:
                cls = "good" if (diff < 0) == lower_better else "bad"
        out.append({"label": label, "before": fmt(x), "after": fmt(y), "delta": delta, "cls": cls})
    return out


def _natural(text: str) -> tuple:
    """'v10' after 'v9': digits compare as numbers."""
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def _pick_versions(rows: list[dict[str, Any]]) -> tuple[str, str, str] | None:
    """(feature, before, after): the busiest feature with two prompt versions, its two busiest."""
    by_feature: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        if r["prompt_version"] is not None:
            by_feature.setdefault(r["feature"] or "(no feature)", []).append((r["calls"], r["prompt_version"]))
    ranked = sorted(((sum(n for n, _v in vs), f, vs) for f, vs in by_feature.items() if len(vs) >= 2), reverse=True)
    if not ranked:
        return None
    _total, feature, vs = ranked[0]
    two = sorted((v for _n, v in sorted(vs, reverse=True)[:2]), key=_natural)
    return feature, two[0], two[1]


def stats_page(ui: UI, request: Request) -> HTMLResponse:
    from llmtrace.read.stats import DIMENSIONS

    q = request.query_params
    form = {k: q.get(k, "").strip() for k in ("since", "until", "by", *STATS_FILTERS, "before", "after")}
    form["since"] = form["since"] if "since" in q else "7d"
    form["by"] = form["by"] or "feature"
    context: dict[str, Any] = {"f": form, "dimensions": DIMENSIONS, "values": ui.values(), "total": None}
    try:
        hours = _window_hours(form["since"] or None, form["until"] or None)
        period = "hour" if hours is not None and hours <= 72 else "day"
        filters = {k: form[k] for k in STATS_FILTERS if form[k]}
        by_dim, by_time, by_version, overall, by_pair = ui.store.stats_views(
            [form["by"], period, "prompt-version", None, "feature,prompt-version"], since=form["since"] or None,
            until=form["until"] or None,
        **filters)
    except LLMTraceError as exc:
        return ui.page(request, "stats", 400, error=str(exc), **context)
    key = form["by"].replace("-", "_")
    labels = [str(r[period]) for r in by_time]
    short = [label[5:] if period == "day" else label[5:16].replace("T", " ") for label in labels]
    context.update(
        total=overall[0] if overall else None, rows=by_dim, key=key, period=period,
        charts={
            "calls": charts.bars("LLM calls", short, [r["calls"] for r in by_time], num),
            "cost": charts.bars("cost (USD)", short, [r["cost_usd"] for r in by_time], usd, cls="s1"),
            "latency": charts.lines("latency", short, [
                ("p50", [r["latency_p50_ms"] for r in by_time]), ("p95", [r["latency_p95_ms"] for r in by_time]),
                ("p99", [r["latency_p99_ms"] for r in by_time])], ms),
            "failures": charts.lines("failure rates", short, [
                ("errors", [r["error_rate"] for r in by_time]), ("parse failures", [r["parse_failure_rate"] for r in by_time]),
                ("failed checks", [r["validation_failure_rate"] for r in by_time])], _pct),
            "feedback": charts.stacked("the users' last action", [
                ("(none)" if r[key] is None else str(r[key]), [(a, r[f"feedback_{a}"]) for a in ACTIONS])
                for r in by_dim[:20]]),
        })
    versions = sorted((r["prompt_version"] for r in by_version if r["prompt_version"]), key=_natural)
    before, after = form["before"], form["after"]
    note = ""
    if not (before and after):
        picked = _pick_versions(by_pair)
        if picked:
            feature, before, after = picked
            note = (f"{feature}: its two prompt versions with the most calls in this window (the feature with the most "
                    "calls that has two); choose others above.")
    context.update(versions=versions, before=before, after=after, ba_note=note,
                   ba=_before_after(by_version, before, after) if before and after else [])
    return ui.page(request, "stats", **context)


# -- the app --------------------------------------------------------------------------------------

def create_app(url: str | None = None, *, token: str | None = None, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
               read_only: bool = False, store: Store | None = None) -> ASGIApp:
    """The trace browser as an ASGI app (``llmtrace ui`` serves it with uvicorn).

    ``token``: required on every request when given (see ``security``); ``read_only``: no forms.
    """
    from contextlib import asynccontextmanager

    ui = UI(store or Store(url), read_only=read_only)

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await run_in_threadpool(handler, request)
            except TraceNotFound as exc:
                return ui.message(request, "No such trace", str(exc), 404)
            except (ConfigError, InvalidFeedback) as exc:
                return ui.message(request, "Cannot show this", str(exc), 400)
            except StoreError as exc:
                return ui.message(request, "Cannot read the database", str(exc), 503)
            except sa.exc.SQLAlchemyError as exc:
                first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                return ui.message(request, "Cannot read the database",
                                  f"{type(exc).__name__}: {first[0][:300] if first else ''}", 503)

        return endpoint

    def health(request: Request) -> Response:
        from llmtrace import __version__

        return JSONResponse({"llmtrace_ui": __version__, "db": ui.store.url})

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await run_in_threadpool(ui.close)

    routes = [
        Route("/", guarded(lambda r: list_page(ui, r))),
        Route("/trace/{trace_id:path}", guarded(lambda r: trace_page(ui, r, r.path_params["trace_id"]))),
        Route("/api/trace/{trace_id:path}", guarded(lambda r: trace_json(ui, r.path_params["trace_id"]))),
        Route("/session/{session_id:path}", guarded(lambda r: session_page(ui, r, r.path_params["session_id"]))),
        Route("/stats", guarded(lambda r: stats_page(ui, r))),
        Route("/compare", guarded(lambda r: compare_page(ui, r))),
        Route("/act/feedback", make_act(ui, "feedback"), methods=["POST"]),
        Route("/act/validation", make_act(ui, "validation"), methods=["POST"]),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=str(files("llmtrace.ui") / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ui = ui
    return Guard(app, token=token, allowed_hosts=allowed_hosts)
