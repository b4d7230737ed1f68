"""A small store with known answers for stats, trace search and alerts.

Rows go straight into llmtrace's tables (the read side is under test, not the writer), each
fixture under its own ``environment`` so the shared PostgreSQL and MariaDB databases keep tests
apart. Prices are overrides, so every cost below is computed by hand:

    model-a: $1 / $2 per million input / output tokens, cached input $0.50; model-b: $10 / $30;
    mystery: no price.

    trace  feature  team     user   prompt  session day  calls (model in/out/cached, latency, ttft, status)
    T1     refunds  support  alice  v1      s1      -2   a 100/10/0 100ms; a 200/20/0 200ms (parse failed)
    T2     refunds  support  bob    v1      s1      -2   a 300/30/100 300ms ttft 50       (trace-level check failed)
    T3     refunds  support  alice  v2      s1      -1   b 1000/100/0 1000ms timeout error
    T4     search   growth   carol  v1      s2      -1   b 400/40/0 400ms ttft 80          (check on the call failed)
    T5     search   growth   carol  v1      s2       0   mystery 500/50/0 500ms rate_limit error
    T6     search   growth   -      -       -        0   a no tokens 50ms

    feedback: T1 accepted then edited; T2 retried; T3 rated 4; T4 accepted; T5 abandoned.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa

from llmtrace.base.privacy import hash_user_id
from llmtrace.base.serialize import dumps
from llmtrace.store import schema as S
from llmtrace.store.engine import utcnow

PRICES = {"model-a": {"input_mtok": 1.0, "output_mtok": 2.0, "cache_read_mtok": 0.5},
          "model-b": {"input_mtok": 10.0, "output_mtok": 30.0}}

TRACES = [  # id, feature, team, user, prompt version, session, day, status
    ("T1", "refunds", "support", "alice", "v1", "s1", -2, "ok"),
    ("T2", "refunds", "support", "bob", "v1", "s1", -2, "ok"),
    ("T3", "refunds", "support", "alice", "v2", "s1", -1, "error"),
    ("T4", "search", "growth", "carol", "v1", "s2", -1, "ok"),
    ("T5", "search", "growth", "carol", "v1", "s2", 0, "error"),
    ("T6", "search", "growth", None, None, None, 0, "ok"),
]
CALLS = [  # trace, call, model, in, out, cached, latency, ttft, status, error type
    ("T1", 1, "model-a", 100, 10, 0, 100.0, None, "ok", None),
    ("T1", 2, "model-a", 200, 20, 0, 200.0, None, "ok", None),
    ("T2", 1, "model-a", 300, 30, 100, 300.0, 50.0, "ok", None),
    ("T3", 1, "model-b", 1000, 100, 0, 1000.0, None, "error", "timeout"),
    ("T4", 1, "model-b", 400, 40, 0, 400.0, 80.0, "ok", None),
    ("T5", 1, "mystery", 500, 50, 0, 500.0, None, "error", "rate_limit"),
    ("T6", 1, "model-a", None, None, None, 50.0, None, "ok", None),
]


class Store:
    """What a test needs to know about its fixture: ids, times, the environment, the hash key."""

    def __init__(self, url: str, hash_key: str) -> None:
        self.url = url
        self.env = f"env-{uuid.uuid4().hex[:12]}"
        self.key = hash_key
        self.day0 = (utcnow() - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
        self.ids = {name: f"{name}-{uuid.uuid4().hex[:10]}" for name, *_ in TRACES}

    def at(self, day: int, minutes: float = 0) -> datetime:
        return self.day0 + timedelta(days=day, minutes=minutes)

    def span(self, trace: str, call: int) -> str:
        return f"{self.ids[trace]}-c{call}"

    def user(self, name: str) -> str:
        return hash_user_id(name, self.key)


def build(url: str, hash_key: str) -> Store:
    st = Store(url, hash_key)
    engine = sa.create_engine(url)
    traces, spans, calls, vals, fbs, chunks, contents = [], [], [], [], [], [], []
    starts = {}
    for n, (name, feature, team, user, pv, session, day, status) in enumerate(TRACES):
        start = st.at(day, minutes=n)  # T1 before T2 on the same day
        starts[name] = start
        traces.append({"trace_id": st.ids[name], "name": f"{feature}-app", "started_at": start,
                       "ended_at": start + timedelta(seconds=2), "latency_ms": 2000.0 if name != "T3" else 5000.0,
                       "status": status, "user_hash": st.user(user) if user else None,
                       "session_id": f"{st.env}-{session}" if session else None, "feature": feature, "team": team,
                       "environment": st.env, "prompt_version": pv, "capture": "redacted"})
    for name, call, model, inp, out, cached, latency, ttft, status, error in CALLS:
        sid = st.span(name, call)
        start = starts[name] + timedelta(seconds=call)
        calls.append({"span_id": sid, "trace_id": st.ids[name], "started_at": start, "model": model,
                      "model_version": f"{model}-2026" if model != "mystery" else None, "provider": "test",
                      "input_tokens": inp, "output_tokens": out, "total_tokens": None if inp is None else inp + out,
                      "input_cached_tokens": cached, "latency_ms": latency, "ttft_ms": ttft, "status": status,
                      "error_type": error, "retry_count": 0, "streamed": ttft is not None})
        spans.append({"span_id": sid, "trace_id": st.ids[name], "kind": "llm", "name": model, "started_at": start,
                      "ended_at": start + timedelta(milliseconds=latency), "latency_ms": latency, "status": status,
                      "error_type": error})
    spans.append({"span_id": f"{st.ids['T1']}-r", "trace_id": st.ids["T1"], "kind": "retriever", "name": "Policies",
                  "started_at": starts["T1"], "ended_at": starts["T1"] + timedelta(milliseconds=5), "status": "ok"})
    chunks.append({"trace_id": st.ids["T1"], "span_id": f"{st.ids['T1']}-r", "rank": 0, "source_id": f"{st.env}/refund-policy.md",
                   "score": 0.9, "retrieved_at": starts["T1"]})
    spans.append({"span_id": f"{st.ids['T1']}-p", "trace_id": st.ids["T1"], "kind": "parser", "name": "JsonOutputParser",
                  "started_at": starts["T1"] + timedelta(seconds=3), "status": "error", "error_type": "other",
                  "link_span_id": st.span("T1", 2)})

    def val(trace, span, rule, passed, source="user"):
        vals.append({"id": uuid.uuid4().hex, "trace_id": st.ids[trace], "span_id": span, "rule": rule, "passed": passed,
                     "source": source, "at": starts[trace] + timedelta(seconds=30)})

    val("T1", st.span("T1", 2), "schema", False, "parser")
    val("T2", None, "policy", False)
    val("T3", st.span("T3", 1), "grounded", True)
    val("T4", st.span("T4", 1), "grounded", False)

    def fb(trace, action, minutes, score=None):
        fbs.append({"id": uuid.uuid4().hex, "trace_id": st.ids[trace], "action": action, "score": score,
                    "source": "user", "at": starts[trace] + timedelta(minutes=minutes)})

    fb("T1", "accepted", 1)
    fb("T1", "edited", 2)
    fb("T2", "retried", 1)
    fb("T3", "rated", 1, score=4)
    fb("T4", "accepted", 1)
    fb("T5", "abandoned", 1)

    def content(trace, body, expires_in_days=30):
        contents.append({"id": uuid.uuid4().hex, "trace_id": st.ids[trace], "body": dumps(body), "size": 1,
                         "created_at": starts[trace], "expires_at": utcnow() + timedelta(days=expires_in_days)})

    content("T1", {st.span("T1", 1): {"input_messages": [{"role": "user", "content": "Can I return the Blue Kettle?"}],
                                      "raw_completion": "Yes, within 30 days."}})
    content("T4", {st.span("T4", 1): {"input_messages": [{"role": "user", "content": 'Search "quoted" 50% off_sale'}],
                                      "raw_completion": "Found 3 items."}})
    content("T5", {st.span("T5", 1): {"raw_completion": "Blue Kettle is out of stock"}}, expires_in_days=-1)  # expired
    with engine.begin() as conn:
        for table, rows in ((S.traces, traces), (S.spans, spans), (S.llm_calls, calls), (S.validations, vals),
                            (S.feedback, fbs), (S.chunks, chunks), (S.contents, contents)):
            names = [c.name for c in table.columns if c.name != "id" or table is not S.chunks]
            conn.execute(table.insert(), [{n: row.get(n) for n in names} for row in rows])
    engine.dispose()
    return st


def remove(st: Store) -> None:
    """Take the fixture's rows out again: the server databases are shared by the whole test session
    (its expired content would otherwise show up in other tests' purges)."""
    engine = sa.create_engine(st.url)
    ids = list(st.ids.values())
    with engine.begin() as conn:
        for table in (S.traces, S.spans, S.llm_calls, S.validations, S.feedback, S.chunks, S.contents):
            conn.execute(table.delete().where(table.c.trace_id.in_(ids)))
    engine.dispose()
