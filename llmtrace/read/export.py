"""Feedback-labelled eval sets: LLM calls whose trace got a user action, as JSON lines.

Labels follow the user's action: accepted -> positive, edited -> corrected (the correction is the
reference answer), retried / abandoned -> negative. Rows with the same input are written once.
Only what the store holds is exported: content that capture or expiry kept out stays out. A
correction is a label the user gave, kept on its own retention: a corrected call whose input has
expired is still exported, with ``inputs`` null and the correction as its reference (except in the
``openai`` format, whose lines are chat examples and need the messages).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from llmtrace.base.errors import ConfigError
from llmtrace.read.document import load_trace
from llmtrace.read.queries import time_bound
from llmtrace.store import schema
from llmtrace.store.engine import Database

LABELS = {"accepted": "positive", "edited": "corrected", "retried": "negative", "abandoned": "negative"}
FORMATS = ("jsonl", "openai", "dataset", "parquet")
FILTERS = ("labels", "actions", "feature", "model", "prompt_version", "since", "until", "validation", "last_call_only")


def check_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """The eval-set filters, named and shaped as ``eval_rows`` takes them; anything else is a ConfigError."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise ConfigError(f"unknown eval-set filter(s) {unknown}; the filters are {', '.join(FILTERS)}")
    out = dict(filters)
    for name in ("labels", "actions"):
        value = out.get(name)
        if value is not None:
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} is a list of names, e.g. {name}=['corrected']; not {value!r}")
            out[name] = tuple(value)
    for name in ("feature", "model", "prompt_version"):
        if out.get(name) is not None and not isinstance(out[name], str):
            raise ConfigError(f"{name} is a name (a str), not {type(out[name]).__name__}")
    for name in ("since", "until"):
        if out.get(name) is not None:
            out[name] = time_bound(out[name], name)
    if not isinstance(out.get("last_call_only", True), bool):
        raise ConfigError(f"last_call_only is True or False, not {out['last_call_only']!r}")
    return out


def eval_rows(store: Database, *, prices: Any = None, **filters: Any) -> list[dict[str, Any]]:
    """The feedback-labelled rows, deduplicated by input, oldest action first (filters: ``FILTERS``)."""
    return _eval_rows(store, prices, **check_filters(filters))


def _eval_rows(store: Database, prices: Any, *, labels: tuple[str, ...] | None = None,
               actions: tuple[str, ...] | None = None, feature: str | None = None, model: str | None = None,
               prompt_version: str | None = None, since: datetime | None = None, until: datetime | None = None,
               validation: str | None = None, last_call_only: bool = True) -> list[dict[str, Any]]:
    wanted = set(labels) if labels else {"positive", "negative", "corrected"}
    unknown = wanted - set(LABELS.values())
    if unknown:
        raise ConfigError(f"unknown label(s) {sorted(unknown)}; labels are positive, negative, corrected")
    if actions is not None and not set(actions) <= set(LABELS):
        raise ConfigError(f"actions are some of {sorted(LABELS)}; got {sorted(actions)}")
    if validation not in (None, "passed", "failed"):
        raise ConfigError(f"validation is 'passed', 'failed' or None, not {validation!r}")
    store.ensure_schema()
    t, f = schema.traces, schema.feedback
    stmt = (sa.select(f.c.trace_id, f.c.action, f.c.at).join(t, t.c.trace_id == f.c.trace_id)
            .where(f.c.action.in_(list(LABELS))).order_by(f.c.at))
    for column, value in ((t.c.feature, feature), (t.c.prompt_version, prompt_version)):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(t.c.started_at >= since)
    if until is not None:
        stmt = stmt.where(t.c.started_at < until)
    with store.engine.connect() as conn:
        latest = {row.trace_id: row.action for row in conn.execute(stmt)}  # the user's last word counts
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for trace_id, action in latest.items():
        label = LABELS[action]
        if label not in wanted or (actions is not None and action not in actions):
            continue
        doc = load_trace(store, trace_id, prices).to_dict()
        calls = [c for c in doc["llm_calls"] if c["status"] == "ok" and (model is None or c["model"] == model)]
        for call in calls[-1:] if last_call_only else calls:
            row = _row(doc, call, label)
            if row is None or row["input_hash"] in seen:
                continue
            checks = [v["passed"] for v in call["validations"] + doc["validations"]]
            if validation == "failed" and all(checks):
                continue
            if validation == "passed" and not all(checks):
                continue
            seen.add(row["input_hash"])
            out.append(row)
    return out


def export_eval_set(store: Database, path: str | Path, *, format: str = "jsonl", prices: Any = None,
                    **filters: Any) -> int:
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ConfigError(f"path is the file to write, e.g. 'eval.jsonl'; not {path!r}")
    if format not in FORMATS:
        raise ConfigError(f"export format {format!r} is not available; use one of {FORMATS}")
    rows = eval_rows(store, prices=prices, **filters)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "parquet":
        to_dataframe(rows).to_parquet(out, index=False)
        return len(rows)
    written = 0
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            line = _shape(row, format)
            if line is not None:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                written += 1
    return written


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """One table row: nested inputs and outputs as JSON text, so every engine reads them."""
    return {k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v) for k, v in row.items()}


def to_dataframe(rows: list[dict[str, Any]]):
    return dataframe([_flat(r) for r in rows], columns=list(_COLUMNS))


def dataframe(rows: list[dict[str, Any]], columns: list[str] | None = None):
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("DataFrames and Parquet need pandas and pyarrow: pip install 'llmtrace[eval]'") from None
    return pd.DataFrame(rows, columns=columns)


def to_hf_dataset(rows: list[dict[str, Any]]):
    try:
        import datasets
    except ImportError:
        raise ConfigError("a Hugging Face Dataset needs the datasets package: pip install 'llmtrace[hf]'") from None
    return datasets.Dataset.from_list([_flat(r) for r in rows]) if rows else datasets.Dataset.from_dict(
        {c: [] for c in _COLUMNS})


_COLUMNS = ("trace_id", "span_id", "label", "input_hash", "inputs", "output", "parsed", "reference", "validations",
            "feature", "model", "model_version", "prompt_version", "feedback")


def _shape(row: dict[str, Any], format: str) -> dict[str, Any] | None:
    """jsonl: the whole row; openai: a chat fine-tuning / eval line (none without the input
    messages); dataset: inputs + expected_output."""
    if format == "openai":
        if row["inputs"] is None:
            return None
        answer = row["reference"] if row["reference"] is not None else row["output"]
        messages = [{k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id", "name") if m.get(k) is not None}
                    for m in row["inputs"]["messages"] if isinstance(m, dict)]
        out: dict[str, Any] = {"messages": [*messages, {"role": "assistant", "content": answer}],
                               "metadata": {"trace_id": row["trace_id"], "label": row["label"]}}
        if row["inputs"]["tools"]:
            out["tools"] = [{"type": "function", "function": t} for t in row["inputs"]["tools"]]
        return out
    if format == "dataset":  # LangSmith / Langfuse dataset items
        return {"inputs": row["inputs"], "expected_output": row["reference"],
                "metadata": {"trace_id": row["trace_id"], "span_id": row["span_id"], "label": row["label"],
                             "output": row["output"], "model": row["model"], "prompt_version": row["prompt_version"]}}
    return row


def _row(doc: dict[str, Any], call: dict[str, Any], label: str) -> dict[str, Any] | None:
    correction = next((fb["correction"] for fb in reversed(doc["feedback"]) if fb["action"] == "edited"), None)
    inputs: dict[str, Any] | None
    if call["input_messages"] is None:
        # content not captured or expired: only a correction (a label, kept apart) still teaches something
        if label != "corrected" or correction is None:
            return None
        inputs = None
        digest = hashlib.sha256(f"no input:{doc['trace_id']}:{call['span_id']}".encode()).hexdigest()
    else:
        inputs = {"messages": call["input_messages"], "tools": call["tools_offered"], "retrieved": [
            {"source_id": r["source_id"], "content": r["content"]} for r in call["retrieved"]]}
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "trace_id": doc["trace_id"], "span_id": call["span_id"], "label": label, "input_hash": digest,
        "inputs": inputs, "output": call["raw_completion"], "parsed": call["parsed"],
        "reference": correction if label == "corrected" else (call["raw_completion"] if label == "positive" else None),
        "validations": [{"rule": v["rule"], "passed": v["passed"]} for v in call["validations"] + doc["validations"]],
        "feature": doc["feature"], "model": call["model"], "model_version": call["model_version"],
        "prompt_version": doc["prompt_version"], "feedback": [fb["action"] for fb in doc["feedback"]],
    }
