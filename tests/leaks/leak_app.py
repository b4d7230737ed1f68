"""The app the leak tests record, and the places they look for what it leaked.

``record_corpus`` runs a real LangChain app over one corpus per channel: the user's messages, the
model's answer echoing them, the arguments the model gives a tool and what the tool returns, the
documents a retriever finds, errors a step raises, run names, trace metadata and tags, feedback
comments and corrections, validation details. ``sinks`` then collects every way out of llmtrace:
the database's rows, its file and write-ahead log as bytes, loguru's lines, ``LLMTRACE_DEBUG``
output, the CLI and every export format.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import runpy
import sys
from dataclasses import dataclass, field

import sqlalchemy as sa
from fakes import PolicyRetriever, ScriptedChatModel, answer, tool_call
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from pii_corpus import Case

# channels recorded inside the main trace, and the ones with a trace of their own
APP_CHANNELS = ("prompt", "echo", "tool_args", "tool_result", "retriever", "error", "feedback", "validation")
SIDE_CHANNELS = ("metadata", "metadata_key", "tags", "run_name")
CHANNELS = (*APP_CHANNELS, *SIDE_CHANNELS)


def cli(*args: str) -> tuple[int, str, str]:
    """``python -m llmtrace ARGS`` in this process (the real entry point, without a new interpreter)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["llmtrace", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module("llmtrace", run_name="__main__", alter_sys=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@dataclass
class Recorded:
    trace_ids: list[str]
    sinks: dict[str, str] = field(default_factory=dict)


def record_corpus(tracer, chans: dict[str, list[Case]]) -> list[str]:
    """Run the app over the corpora; returns the trace ids (main trace first)."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(tracer)
    texts = {ch: [c.text for c in cases] for ch, cases in chans.items()}

    @tool
    def crm_lookup(notes: list[str]) -> str:
        """Look up the customer's notes in the CRM."""
        return "\n".join(texts.get("tool_result", []))

    docs = [Document(id=f"note-{i}", page_content=t, metadata={"score": 0.5}) for i, t in enumerate(texts.get("retriever", []))]
    retriever = PolicyRetriever(docs=docs)
    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("crm_lookup", {"notes": texts.get("tool_args", [])}, "call_crm_1")]),
        answer("\n".join(texts.get("echo", []))),
    ])

    def failing_check(text: str) -> str:
        raise ValueError(f"note rejected: {text}")

    def app(question: str) -> str:
        found = retriever.invoke(question)
        messages = [SystemMessage("You are the support assistant. Answer from the notes."),
                    *[HumanMessage(t) for t in texts.get("prompt", [])],
                    HumanMessage(f"{len(found)} notes found")]
        ai = model.invoke(messages)
        messages.append(ai)
        for tc in ai.tool_calls:
            messages.append(crm_lookup.invoke(tc))
        for t in texts.get("error", []):
            try:
                RunnableLambda(failing_check, name="check_note").invoke(t)
            except ValueError:
                pass
        return model.invoke(messages).content

    ids = []
    RunnableLambda(app, name="support_bot").invoke("what do the notes say?", config={"callbacks": [handler]})
    ids.append(handler.last_trace_id)
    if texts.get("metadata") or texts.get("metadata_key"):
        meta = {f"note_{i:03d}": t for i, t in enumerate(texts.get("metadata", []))}
        meta.update({t: "seen" for t in texts.get("metadata_key", [])})
        RunnableLambda(lambda x: "saved", name="profile_update").invoke("save", config={"callbacks": [handler],
                                                                                         "metadata": meta})
        ids.append(handler.last_trace_id)
    if texts.get("tags"):  # (a LangChain root run's own tags are not recorded: see test_langchain_root_tags_are_recorded)
        with tracer.trace(name="tagged", tags=texts["tags"]) as scope:
            RunnableLambda(lambda x: "tagged", name="tagging").invoke("tag", config={"callbacks": [handler]})
        ids.append(scope.trace_id)
    if texts.get("run_name"):
        def steps(x: str) -> str:
            for t in texts["run_name"]:
                RunnableLambda(lambda y: y, name="step").invoke(x, config={"run_name": t})
            return "done"
        RunnableLambda(steps, name="named_steps").invoke("go", config={"callbacks": [handler]})
        ids.append(handler.last_trace_id)
    main = ids[0]
    for i, t in enumerate(texts.get("feedback", [])):
        if i % 2 == 0:
            tracer.record_feedback(main, "edited", correction=t)
        else:
            tracer.record_feedback(main, "edited", correction="see the comment", comment=t)
    for t in texts.get("validation", []):
        tracer.record_validation(main, rule="no_pii_in_answer", passed=False, detail=t)
    return ids


def db_rows_text(url: str) -> str:
    """Every row of every llmtrace table, as text."""
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(repr(tuple(r)) + "\n" + "\n".join(str(v) for v in r if isinstance(v, str))
                             for t in meta.sorted_tables if t.name.startswith("llmtrace")
                             for r in conn.execute(sa.select(t)))
    finally:
        engine.dispose()


def sqlite_files_text(url: str) -> dict[str, str]:
    """The SQLite file and its write-ahead log, as bytes decoded (what a disk image would show)."""
    path = pathlib.Path(url.removeprefix("sqlite:///"))
    out = {}
    for name, p in (("db file", path), ("wal file", path.with_name(path.name + "-wal"))):
        out[name] = p.read_bytes().decode("utf-8", "replace") if p.exists() else ""
    return out


def exports_text(tracer, tmp: pathlib.Path) -> dict[str, str]:
    out = {}
    for fmt in ("jsonl", "openai", "dataset"):
        path = tmp / f"eval.{fmt}.jsonl"
        n = tracer.export_eval_set(str(path), format=fmt)
        assert n >= 1, f"the {fmt} export is empty: the leak scan of it would prove nothing"
        out[f"export {fmt}"] = path.read_text(encoding="utf-8")
    import pandas as pd  # (the parquet export: its text read back, since the file itself is compressed)

    path = tmp / "eval.parquet"
    assert tracer.export_eval_set(str(path), format="parquet") >= 1
    out["export parquet"] = "\n".join(str(v) for row in pd.read_parquet(path).itertuples(index=False) for v in row)
    return out


def cli_text(url: str, trace_ids: list[str]) -> dict[str, str]:
    out = {"cli ls --json": "", "cli show --json": "", "cli show": ""}
    code, stdout, stderr = cli("ls", "--db", url, "--json", "--limit", "50")
    assert code == 0, stderr
    out["cli ls --json"] = stdout + stderr
    for tid in trace_ids:
        for flag, name in ((["--json"], "cli show --json"), ([], "cli show")):
            code, stdout, stderr = cli("show", tid, "--db", url, *flag)
            assert code == 0, stderr
            out[name] += stdout + stderr
    return out


def as_json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False)
