"""Bad arguments get an llmtrace error that says what to pass (issue 17 item 16).

Every public method, given a value it cannot use, raises an ``llmtrace.LLMTraceError`` subclass
whose message names the argument; never a foreign ``OverflowError`` / ``TypeError`` /
``AttributeError`` from deep inside, and never silent acceptance of a value that then does
something else than asked (a filter ignored, a purge that deletes nothing). The CLI turns the
same mistakes into one line on stderr and exit 1, without a traceback.
"""

from __future__ import annotations

import re

import pytest
from leak_app import cli

import llmtrace

BAD_CALLS = [
    # (id, call on a tracer, what the message must name), marks for today's failures
    ("record_feedback score=10**400", lambda t: t.record_feedback("t-1", "rated", score=10**400), r"score", None),
    ("record_feedback score=nan", lambda t: t.record_feedback("t-1", "rated", score=float("nan")), r"score", None),
    ("record_feedback score='4'", lambda t: t.record_feedback("t-1", "rated", score="4"), r"score", None),
    ("record_feedback trace_id=object()", lambda t: t.record_feedback(trace_id=object(), action="accepted"), r"trace_id", None),
    ("record_feedback trace_id=bytes", lambda t: t.record_feedback(b"t-1", "accepted"), r"trace_id", None),
    ("record_feedback action=5", lambda t: t.record_feedback("t-1", 5), r"action", None),
    ("record_feedback correction=5", lambda t: t.record_feedback("t-1", "edited", correction=5), r"correction", None),
    ("record_feedback comment=['x']", lambda t: t.record_feedback("t-1", "accepted", comment=["x"]), r"comment", None),
    ("record_feedback source=object()", lambda t: t.record_feedback("t-1", "accepted", source=object()), r"source", None),
    ("record_validation passed='yes'", lambda t: t.record_validation("t-1", rule="r", passed="yes"), r"passed", None),
    ("record_validation rule=5", lambda t: t.record_validation("t-1", rule=5, passed=True), r"rule", None),
    ("record_validation span_id=object()", lambda t: t.record_validation("t-1", rule="r", passed=True, span_id=object()),
     r"span_id", None),
    ("find_traces limit='x'", lambda t: t.find_traces(limit="x"), r"limit", None),
    ("find_traces limit=10**400", lambda t: t.find_traces(limit=10**400), r"limit", None),
    ("find_traces limit=-1", lambda t: t.find_traces(limit=-1), r"limit", None),
    ("find_traces since='yesterday-ish'", lambda t: t.find_traces(since="yesterday-ish"), r"since", None),
    ("find_traces since=10**400", lambda t: t.find_traces(since=10**400), r"since", None),
    ("find_traces status='nope'", lambda t: t.find_traces(status="nope"), r"status", None),
    ("find_traces min_cost='cheap'", lambda t: t.find_traces(min_cost="cheap"), r"min_cost",
     None),
    ("find_traces text=5", lambda t: t.find_traces(text=5), r"text", None),
    ("find_traces nope=1", lambda t: t.find_traces(nope=1), r"nope", None),
    ("stats by='nope'", lambda t: t.stats(by="nope"), r"group by", None),
    ("stats by=5", lambda t: t.stats(by=5), r"group by|\bby\b", None),
    ("stats since='yesterday-ish'", lambda t: t.stats(since="yesterday-ish"), r"since", None),
    ("stats until=10**400", lambda t: t.stats(until=10**400), r"until", None),
    ("export_eval_set format='nope'", lambda t: t.export_eval_set("unused.jsonl", format="nope"), r"format", None),
    ("export_eval_set since='yesterday-ish'", lambda t: t.export_eval_set("unused.jsonl", since="yesterday-ish"), r"since",
     None),
    ("export_eval_set labels=['nope']", lambda t: t.export_eval_set("unused.jsonl", labels=["nope"]), r"label", None),
    ("export_eval_set validation='nope'", lambda t: t.export_eval_set("unused.jsonl", validation="nope"), r"validation", None),
    ("export_eval_set nope=1", lambda t: t.export_eval_set("unused.jsonl", nope=1), r"nope", None),
    ("export_eval_set path=None", lambda t: t.export_eval_set(None), r"path", None),
    ("purge older_than='yesterday-ish'", lambda t: t.purge(older_than="yesterday-ish"), r"age|older_than", None),
    ("purge older_than=10**400", lambda t: t.purge(older_than=10**400), r"age|older_than", None),
    ("purge batch_size=0", lambda t: t.purge(batch_size=0), r"batch_size", None),
    ("purge batch_size='x'", lambda t: t.purge(batch_size="x"), r"batch_size", None),
    ("alerts since='nope'", lambda t: t.alerts(since="nope"), r"since", None),
    ("alerts rules=5", lambda t: t.alerts(rules=5), r"rules|AlertRules", None),
    ("get_trace trace_id=None", lambda t: t.get_trace(None), r"trace_id", None),
    ("get_trace trace_id=object()", lambda t: t.get_trace(object()), r"trace_id", None),
    ("trace capture='nope'", lambda t: t.trace(capture="nope"), r"capture", None),
    ("trace trace_id=object()", lambda t: t.trace(trace_id=object()), r"trace_id", None),
    ("trace metadata=[1]", lambda t: t.trace(metadata=[1]), r"metadata", None),
    ("flush timeout='soon'", lambda t: t.flush(timeout="soon"), r"timeout", None),
    ("flush timeout=10**400", lambda t: t.flush(timeout=10**400), r"timeout", None),
]

NEW_TRACER = [
    ("Tracer url=5", dict(url=5), r"url", None),
    ("Tracer capture='nope'", dict(capture="nope"), r"capture", None),
    ("Tracer queue_size='x'", dict(queue_size="x"), r"queue_size", None),
    ("Tracer content_ttl_days=10**400", dict(content_ttl_days=10**400), r"content_ttl_days", None),
    ("Tracer content_ttl_days=nan", dict(content_ttl_days=float("nan")), r"content_ttl_days", None),
    ("Tracer flush_interval_seconds=nan", dict(flush_interval_seconds=float("nan")), r"flush_interval_seconds", None),
    ("Tracer processors=5", dict(processors=5), r"processor", None),
    ("Tracer processors=['(']", dict(processors=["("]), r"processor|regex|pattern", None),
    ("Tracer processors=[5]", dict(processors=[5]), r"processor", None),
    ("Tracer prices=5", dict(prices=5), r"prices", None),
]

OTHER_PUBLIC = [
    ("Redactor hash_key=5", lambda: llmtrace.Redactor(hash_key=5), r"hash_key", None),
    ("Redactor()(['a'])", lambda: llmtrace.Redactor()(["a"]), r"fields|dict", None),
    ("regex_processor('(')", lambda: llmtrace.regex_processor("("), r"regex|pattern", None),
    ("regex_processor(5)", lambda: llmtrace.regex_processor(5), r"regex|pattern", None),
    ("AlertRules cost_spike_factor='x'", lambda: llmtrace.AlertRules(cost_spike_factor="x"), r"cost_spike_factor", None),
    ("add_json_sink(5)", lambda: llmtrace.add_json_sink(5), r"sink", None),
]


def _params(rows):
    return [pytest.param(*row[:3], id=row[0], marks=row[3] or ()) for row in rows]


@pytest.fixture(scope="module")
def tracer(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad_args")
    with llmtrace.Tracer(f"sqlite:///{path / 'llmtrace.db'}", flush_interval_seconds=0.05) as t:
        yield t
        assert t.flush(5)
    assert not list(path.glob("unused*")), "a rejected export still wrote a file"


def _check(exc: BaseException, says: str) -> None:
    assert isinstance(exc, llmtrace.LLMTraceError)
    assert re.search(says, str(exc), re.IGNORECASE), f"the message does not say what to pass for {says!r}: {exc}"


@pytest.mark.parametrize("name, call, says", _params(BAD_CALLS))
def test_a_bad_argument_gets_an_llmtrace_error_naming_it(tracer, monkeypatch, tmp_path, name, call, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(llmtrace.LLMTraceError) as info:
        call(tracer)
    _check(info.value, says)


@pytest.mark.parametrize("name, settings, says", _params(NEW_TRACER))
def test_a_bad_setting_gets_a_config_error_naming_it(tmp_path, name, settings, says):
    settings = {"url": f"sqlite:///{tmp_path / 'llmtrace.db'}", **settings}
    with pytest.raises(llmtrace.ConfigError) as info:
        llmtrace.Tracer(settings.pop("url"), **settings).close()
    _check(info.value, says)


def test_an_unknown_setting_is_a_type_error_naming_it(tmp_path):
    # Tracer's signature lists every setting, so IDEs and type checkers catch a typo before it runs;
    # at run time Python names the unknown keyword.
    with pytest.raises(TypeError, match="nope"):
        llmtrace.Tracer(f"sqlite:///{tmp_path / 'llmtrace.db'}", nope=1)


@pytest.mark.parametrize("name, call, says", _params(OTHER_PUBLIC))
def test_other_public_names_reject_bad_arguments_clearly(name, call, says):
    with pytest.raises(llmtrace.LLMTraceError) as info:
        call()
    _check(info.value, says)


@pytest.mark.parametrize("args", [
    pytest.param(["ls", "--since", "yesterday-ish"], id="ls --since yesterday-ish"),
    pytest.param(["stats", "--by", "nope"], id="stats --by nope"),
    pytest.param(["purge", "--older-than", "soon"], id="purge --older-than soon"),
    pytest.param(["ls", "--limit", str(10**30)], id="ls --limit 10**30"),
    pytest.param(["purge", "--batch-size", "0"], id="purge --batch-size 0"),
])
def test_the_cli_turns_a_bad_argument_into_one_line(sqlite_url, args):
    with llmtrace.Tracer(sqlite_url) as t:
        t.record_feedback("t-1", "accepted")  # a store that exists
    try:
        code, out, err = cli(*args, "--db", sqlite_url)
    except Exception as exc:  # noqa: BLE001 - what a user would see as a traceback
        pytest.fail(f"llmtrace {' '.join(args)} raised {type(exc).__name__}: {exc}")
    assert code == 1 and err.startswith("llmtrace: error: ") and err.count("\n") == 1 and "Traceback" not in err, (code, out, err)


# The checks behind the xfails above that wait for a one-line call in llmtrace/_tracer.py or
# capture/logs.py (owned elsewhere): each already says what to pass, so wiring it in is the fix.
def _checks():
    from llmtrace.base.config import check_prices, check_sink, check_timeout
    from llmtrace.capture.labels import check_metadata, check_tags, check_trace_id
    from llmtrace.capture.redact import processor_list

    return [
        ("check_trace_id(object())", lambda: check_trace_id(object()), r"trace_id"),
        ("check_trace_id(b't-1')", lambda: check_trace_id(b"t-1"), r"trace_id"),
        ("check_trace_id(lone surrogate)", lambda: check_trace_id("caf\ud800e"), r"trace_id"),
        ("check_metadata([1])", lambda: check_metadata([1]), r"metadata"),
        ("check_metadata({1: 'x'})", lambda: check_metadata({1: "x"}), r"metadata"),
        ("check_tags('beta')", lambda: check_tags("beta"), r"tags"),
        ("check_timeout('soon')", lambda: check_timeout("soon"), r"timeout"),
        ("check_timeout(10**400)", lambda: check_timeout(10**400), r"timeout"),
        ("check_timeout(nan)", lambda: check_timeout(float("nan")), r"timeout"),
        ("check_prices(5)", lambda: check_prices(5), r"prices"),
        ("check_prices({'m': {'input_mtok': 'x'}})", lambda: check_prices({"m": {"input_mtok": "x"}}), r"prices"),
        ("processor_list(5)", lambda: processor_list(5), r"processors"),
        ("processor_list('(')", lambda: processor_list("("), r"processors"),
        ("check_sink(5)", lambda: check_sink(5), r"sink"),
    ]


@pytest.mark.parametrize("index", range(len(_checks())), ids=lambda i: _checks()[i][0])
def test_the_argument_checks_name_what_to_pass(index):
    _name, call, says = _checks()[index]
    with pytest.raises(llmtrace.LLMTraceError) as info:
        call()
    _check(info.value, says)


def test_the_argument_checks_accept_what_they_should():
    import uuid

    from llmtrace.base.config import check_prices, check_sink, check_timeout
    from llmtrace.capture.labels import check_metadata, check_tags, check_trace_id
    from llmtrace.capture.redact import processor_list

    run_id = uuid.uuid4()
    assert check_trace_id("t-1") == "t-1" and check_trace_id(run_id) == str(run_id)  # (LangChain's run ids are UUIDs)
    assert check_metadata(None) is None and check_metadata({"ticket": "T-42"}) == {"ticket": "T-42"}
    assert check_tags(("beta",)) == ["beta"]
    assert check_timeout(None) is None and check_timeout(0) == 0 and check_timeout(2.5) == 2.5
    assert check_prices({"my-ft": {"input_mtok": 3, "output_mtok": 12}}) == {"my-ft": {"input_mtok": 3, "output_mtok": 12}}
    assert len(processor_list([r"ACME-\d+", (r"x", "X"), lambda f: f])) == 3 and processor_list(None) == []
    assert check_sink(None) is None and check_sink("llmtrace.log") == "llmtrace.log"
