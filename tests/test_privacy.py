"""Nothing raw reaches disk or a log line: a corpus of PII and secrets through a LangChain app,
then a scan of the SQLite file's bytes (main file and WAL) or every server row, and the log."""

from __future__ import annotations

import io
import json
import pathlib

import pytest
import sqlalchemy as sa
from conftest import raw_engine
from fakes import ScriptedChatModel, answer, tool_call
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from loguru import logger

import llmtrace
from llmtrace.capture.redact import Redactor
from llmtrace.store import schema as S

PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAq7BFUpkGp3+XQ\n-----END RSA PRIVATE KEY-----"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwYXRpZW50LTQ0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
CORPUS = {
    "EMAIL": "nurse.jane@stmary-hospital.org",
    "PHONE": "+44 20 7946 0958",
    "CARD": "4111 1111 1111 1111",
    "SSN": "123-45-6789",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "IPV4": "10.24.8.200",
    "IPV6": "2001:db8::8a2e:370:7334",
    "OPENAI": "sk-proj-Zx9Qk2LmN4pR7sT1uV3wY5aB",
    "ANTHROPIC": "sk-ant-api03-Qm7Rt2Yx9Kp4Lw1Zs8VnX",
    "AWS": "AKIAIOSFODNN7EXAMPLE",
    "GOOGLE": "AIzaSyD-abcdefghijklmnopqrstuvwxyz12345",
    "GITHUB": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "SLACK": "xoxb-1234567890-abcdefghijkl",
    "STRIPE": "sk_live_51Habcdefghijklmnop",
    "BEARER": "Bearer abcdef0123456789ABCDEF",
    "JWT": JWT,
    "PRIVATE_KEY": "MIIEowIBAAKCAQEAq7BFUpkGp3+XQ",
    "URL_PASSWORD": "S3cretPw!x",
}


def secret_text(*keys: str) -> str:
    return " ".join(f"{k.lower()}: {CORPUS[k]}" for k in keys)


@pytest.mark.parametrize("text, placeholder", [
    (CORPUS["EMAIL"], "[EMAIL]"), (CORPUS["PHONE"], "[PHONE]"), ("call (415) 555-0132", "[PHONE]"),
    (CORPUS["CARD"], "[CARD]"), ("4012-8888-8888-1881", "[CARD]"), (CORPUS["SSN"], "[SSN]"),
    (CORPUS["IBAN"], "[IBAN]"), ("GB82WEST12345698765432", "[IBAN]"), (CORPUS["IPV4"], "[IP]"),
    (CORPUS["IPV6"], "[IP]"), ("fe80::1", "[IP]"), (CORPUS["OPENAI"], "[API_KEY]"), (CORPUS["ANTHROPIC"], "[API_KEY]"),
    (CORPUS["AWS"], "[API_KEY]"), (CORPUS["GOOGLE"], "[API_KEY]"), (CORPUS["GITHUB"], "[API_KEY]"),
    (CORPUS["SLACK"], "[API_KEY]"), (CORPUS["STRIPE"], "[API_KEY]"), (CORPUS["BEARER"], "[BEARER_TOKEN]"),
    (JWT, "[JWT]"), (PRIVATE_KEY, "[PRIVATE_KEY]"), ("postgres://app:S3cretPw!x@db:5432/x", "postgres://app:[PASSWORD]@db:5432/x"),
    ("password = hunter22", "password = [SECRET]"),
])
def test_each_detector(text, placeholder):
    out = Redactor().text(f"before {text} after")
    assert placeholder in out and out.startswith("before ") and out.endswith(" after")


@pytest.mark.parametrize("text", ["delivered 2026-11-10, total 49.00 EUR", "version 1.2.3 at 12:30:45",
                                  "trace 01a20274-f5e7-76d3-9385-30860b60449f", "run 9c1e5a2b-3407-4d6e-8a91-0b2c3d4e5f60",
                                  "trace 01a22798-a628-7000-8000-0000a80e4ef7",  # (15 digits that pass Luhn, in a UUID)
                                  "commit 3f2a9c1b0d7e4567 and sha256 4b227777d4dd1fc61c6f884f48641d02b4d121d3",
                                  "order A-1001 of 3 items", "card 1234 5678 9012 3456 fails Luhn"])
def test_no_false_positives_on_ordinary_text(text):
    assert Redactor().text(text) == text


def test_keyed_hash_keeps_equal_values_joinable():
    r = Redactor(hash_key="k")
    a, b, c = r.text("a@x.io"), r.text("a@x.io"), r.text("b@x.io")
    assert a == b != c and a.startswith("[EMAIL:")


def test_full_mode_still_removes_secrets():
    r = Redactor(pii=False)
    assert r.text(CORPUS["OPENAI"]) == "[API_KEY]" and r.text(CORPUS["EMAIL"]) == CORPUS["EMAIL"]


def run_app(tracer) -> str:
    from llmtrace_langchain import LLMTraceCallbackHandler

    handler = LLMTraceCallbackHandler(tracer)

    @tool
    def lookup_patient(email: str, card: str) -> str:
        """Find a patient."""
        return f"patient record: ssn {CORPUS['SSN']}, iban {CORPUS['IBAN']}, " + secret_text("IPV4", "IPV6")

    @tool
    def page_doctor(phone: str) -> str:
        """Page the doctor on call."""
        raise RuntimeError(f"pager gateway refused {phone} with key {CORPUS['SLACK']}")

    model = ScriptedChatModel(script=[
        answer("", tool_calls=[tool_call("lookup_patient", {"email": CORPUS["EMAIL"], "card": CORPUS["CARD"]}, "c1"),
                               tool_call("page_doctor", {"phone": CORPUS["PHONE"]}, "c2")]),
        answer("Dose 5 mg. Contact " + CORPUS["EMAIL"] + " " + secret_text("GITHUB", "STRIPE")),
    ]).bind(api_key=CORPUS["OPENAI"], user=CORPUS["EMAIL"])

    def retrieve(q: str) -> list[Document]:
        return [Document(id="chart-1", page_content="chart of " + CORPUS["EMAIL"] + " " + secret_text("AWS", "GOOGLE"))]

    def app(question: str) -> str:
        docs = RunnableLambda(retrieve, name="chart_retriever").invoke(question)
        messages = [SystemMessage("You are a clinical assistant. Key: " + CORPUS["ANTHROPIC"]),
                    HumanMessage(question + "\n" + docs[0].page_content)]
        ai = model.invoke(messages)
        messages.append(ai)
        for tc in ai.tool_calls:
            fn = {"lookup_patient": lookup_patient, "page_doctor": page_doctor}[tc["name"]]
            try:
                messages.append(fn.invoke(tc))
            except RuntimeError:
                pass
        return model.invoke(messages).content

    question = ("Neonatal dosing question from " + CORPUS["EMAIL"] + ", phone " + CORPUS["PHONE"] + " "
                + secret_text("BEARER", "JWT", "CARD") + " " + PRIVATE_KEY + " db postgres://app:" + CORPUS["URL_PASSWORD"]
                + "@db:5432/x")
    RunnableLambda(app, name="clinical_assistant").invoke(question, config={
        "callbacks": [handler], "metadata": {"llmtrace_user_id": CORPUS["EMAIL"], "contact": CORPUS["PHONE"],
                                             "token_hint": CORPUS["OPENAI"]}})
    tid = handler.last_trace_id
    tracer.record_feedback(tid, "edited", correction="call " + CORPUS["PHONE"], comment=CORPUS["EMAIL"])
    tracer.record_validation(tid, rule="no_pii_in_answer", passed=False, detail="found " + CORPUS["CARD"])
    tracer.flush()
    return tid


def stored_text(tracer, url: str) -> str:
    if url.startswith("sqlite"):
        path = pathlib.Path(url.removeprefix("sqlite:///"))
        blobs = [p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
        return b"".join(blobs).decode("utf-8", "replace")
    with raw_engine(tracer.url).connect() as conn:
        return "\n".join(repr(tuple(r)) for t in S.METADATA.sorted_tables for r in conn.execute(sa.select(t)))


def test_redacted_mode_stores_no_raw_pii_or_secret(db_url):
    log = io.StringIO()
    sink = logger.add(log, level="DEBUG")
    logger.enable("llmtrace")
    try:
        with llmtrace.Tracer(db_url) as tracer:
            tid = run_app(tracer)
            doc = tracer.get_trace(tid).to_dict()
            stored = stored_text(tracer, db_url)
    finally:
        logger.disable("llmtrace")
        logger.remove(sink)
    for name, value in CORPUS.items():
        assert value not in stored, f"raw {name} reached the database"
        assert value not in log.getvalue(), f"raw {name} reached the log"
    assert "hunter" not in stored
    # the record is still useful: placeholders where the values were, everything else intact
    call = doc["llm_calls"][0]
    assert "[EMAIL]" in call["input_messages"][1]["content"] and "Neonatal dosing question" in call["input_messages"][1]["content"]
    assert call["params"]["api_key"] == "[SECRET]" and call["params"]["user"] == "[EMAIL]"
    assert [tc["args"] for tc in call["tool_calls"]] == [{"email": "[EMAIL]", "card": "[CARD]"}, {"phone": "[PHONE]"}]
    assert "[SSN]" in call["tool_calls"][0]["result"] and call["tool_calls"][1]["status"] == "error"
    assert doc["metadata"] == {"contact": "[PHONE]", "token_hint": "[SECRET]"}
    assert doc["feedback"][0]["correction"] == "call [PHONE]" and doc["validations"][0]["detail"] == "found [CARD]"


def test_metadata_mode_stores_no_content(sqlite_url):
    with llmtrace.Tracer(sqlite_url, capture="metadata") as tracer:
        tid = run_app(tracer)
        doc = tracer.get_trace(tid).to_dict()
        stored = stored_text(tracer, sqlite_url)
    for word in ("Neonatal", "clinical assistant", "patient record", "chart of", "Dose 5 mg"):
        assert word not in stored
    for value in CORPUS.values():
        assert value not in stored
    assert doc["llm_calls"][0]["tokens"]["input"] == 120 and len(doc["llm_calls"]) == 2


def test_a_failing_processor_fails_closed(sqlite_url):
    def broken(fields):
        raise ValueError("bug in my processor")

    with llmtrace.Tracer(sqlite_url, processors=[broken, r"ACME-\d+"]) as tracer:
        tid = run_app(tracer)
        doc = tracer.get_trace(tid).to_dict()
        assert tracer.health()["processing_errors"] > 0
    assert doc["llm_calls"][0]["input_messages"] == "[PROCESSOR_FAILED]"
    assert llmtrace.Trace(doc).render()  # a placeholder where a list was expected still renders


def test_user_regex_processor(sqlite_url):
    from fakes import simple_chain

    from llmtrace_langchain import LLMTraceCallbackHandler

    with llmtrace.Tracer(sqlite_url, processors=[(r"ACME-\d+", "ORDER")]) as tracer:
        h = LLMTraceCallbackHandler(tracer)
        simple_chain(ScriptedChatModel(script=[answer("ok")])).invoke({"question": "where is ACME-123?"},
                                                                     config={"callbacks": [h]})
        call = tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]
    assert call["input_messages"][-1]["content"] == "where is [ORDER]?"


def run_llamaindex_app(tracer) -> str:
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM

    from llmtrace_llamaindex import LLMTraceInstrumentor

    Settings.embed_model = MockEmbedding(embed_dim=8)
    docs = [Document(text="Patient chart: " + secret_text("EMAIL", "PHONE", "SSN", "IBAN", "OPENAI"), id_="chart-1"),
            Document(text="Billing: " + secret_text("CARD", "AWS", "JWT", "IPV4"), id_="bill-1")]
    index = VectorStoreIndex.from_documents(docs)
    inst = LLMTraceInstrumentor(tracer).instrument()
    try:
        # MockLLM without max_tokens echoes its prompt: the completion carries every value too
        index.as_query_engine(llm=MockLLM(), similarity_top_k=2).query(
            "Dosing question for " + CORPUS["EMAIL"] + " " + secret_text("BEARER", "GITHUB"))
    finally:
        inst.uninstrument()
    tracer.flush()
    return inst.last_trace_id


def test_llamaindex_app_stores_no_raw_pii_or_secret(db_url):
    with llmtrace.Tracer(db_url) as tracer:
        tid = run_llamaindex_app(tracer)
        doc = tracer.get_trace(tid).to_dict()
        stored = stored_text(tracer, db_url)
    for name, value in CORPUS.items():
        if name in ("EMAIL", "PHONE", "SSN", "IBAN", "OPENAI", "CARD", "AWS", "JWT", "IPV4", "BEARER", "GITHUB"):
            assert value not in stored, f"raw {name} reached the database"
    call = doc["llm_calls"][0]
    assert "[EMAIL]" in call["raw_completion"] and "[SSN]" in call["raw_completion"]
    assert any("[CARD]" in (r["content"] or "") for r in call["retrieved"])


def test_llamaindex_metadata_mode_stores_no_content(sqlite_url):
    with llmtrace.Tracer(sqlite_url, capture="metadata") as tracer:
        run_llamaindex_app(tracer)
        stored = stored_text(tracer, sqlite_url)
    for word in ("Patient chart", "Billing", "Dosing question"):
        assert word not in stored


def presidio_analyzer():
    """Presidio with a blank spaCy pipeline and a deny-list recognizer: real Presidio, no model download."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, PatternRecognizer
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class BlankSpacy(SpacyNlpEngine):
        def __init__(self):
            super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])
            self.nlp = {"en": spacy.blank("en")}

        def load(self):
            pass

    analyzer = AnalyzerEngine(nlp_engine=BlankSpacy(), supported_languages=["en"])
    analyzer.registry.add_recognizer(PatternRecognizer(supported_entity="PERSON", deny_list=["Jane Doe", "Omar Haddad"]))
    analyzer.registry.add_recognizer(PatternRecognizer(
        supported_entity="LOCATION", patterns=[__import__("presidio_analyzer").Pattern("street", r"\d+[A-Z]? \w+ Street", 0.9)]))
    return analyzer


def test_presidio_processor_for_names_and_addresses(sqlite_url):
    from fakes import simple_chain

    from llmtrace_langchain import LLMTraceCallbackHandler

    presidio = llmtrace.PresidioRedactor(presidio_analyzer(), entities=["PERSON", "LOCATION"])
    with llmtrace.Tracer(sqlite_url, processors=[presidio]) as tracer:
        h = LLMTraceCallbackHandler(tracer)
        simple_chain(ScriptedChatModel(script=[answer("Noted, Jane Doe.")])).invoke(
            {"question": "I am Jane Doe, 221B Baker Street, mail jane@x.io"}, config={"callbacks": [h]})
        call = tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]
        stored = stored_text(tracer, sqlite_url)
    assert call["input_messages"][-1]["content"] == "I am [PERSON], [LOCATION], mail [EMAIL]"
    assert call["raw_completion"] == "Noted, [PERSON]."
    assert "Jane Doe" not in stored and "Baker Street" not in stored


def test_bad_input_never_breaks_recording(sqlite_url):
    import math

    from langchain_core.runnables import RunnableLambda

    from llmtrace_langchain import LLMTraceCallbackHandler

    cyclic: dict = {"name": "loop"}
    cyclic["self"] = cyclic
    deep: list = []
    node = deep
    for _ in range(200):
        node.append([])
        node = node[0]

    class Opaque:
        def __repr__(self):
            raise RuntimeError("no repr for you")

    huge = "x" * 3_000_000
    weird = {"cyclic": cyclic, "bytes": b"\x00\xff binary", "nan": math.nan, "inf": -math.inf, "deep": deep,
             "surrogate": "lone \ud800 surrogate", "opaque": Opaque(), "set": {1, 2}, "huge": huge}
    with llmtrace.Tracer(sqlite_url, max_field_chars=100_000) as tracer:
        h = LLMTraceCallbackHandler(tracer)
        out = RunnableLambda(lambda x: len(x["huge"]), name="weird_step").invoke(weird, config={"callbacks": [h]})
        assert out == 3_000_000
        doc = tracer.get_trace(h.last_trace_id).to_dict()
        health = tracer.health()
    assert health["failed"] == 0 and health["processing_errors"] == 0
    [span] = doc["spans"]
    capped = span["inputs"]
    assert capped["__capped__"] is True and capped["length"] > 3_000_000 and len(capped["sha256"]) == 64
    assert span["outputs"] == 3_000_000


def test_bad_input_fields_are_readable_when_small(sqlite_tracer):
    import math

    from langchain_core.runnables import RunnableLambda

    from llmtrace_langchain import LLMTraceCallbackHandler

    cyclic: dict = {"name": "loop"}
    cyclic["self"] = cyclic
    h = LLMTraceCallbackHandler(sqlite_tracer)
    RunnableLambda(lambda x: "ok", name="step").invoke(
        {"cyclic": cyclic, "bytes": b"\x00\xff", "nan": math.nan, "surrogate": "a\ud800b"}, config={"callbacks": [h]})
    inputs = sqlite_tracer.get_trace(h.last_trace_id).to_dict()["spans"][0]["inputs"]
    assert '"<cycle>"' in json.dumps(inputs["cyclic"])  # marked, bounded, never a RecursionError
    assert inputs["bytes"]["__bytes__"] == 2 and inputs["nan"] == "nan"
    assert inputs["surrogate"].startswith("a") and inputs["surrogate"].endswith("b")


def test_trace_scope_capture_mode(sqlite_tracer):
    from fakes import simple_chain

    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    with sqlite_tracer.trace(capture="metadata") as t:
        simple_chain(ScriptedChatModel(script=[answer("secret answer")])).invoke({"question": "q"}, config={"callbacks": [h]})
    with sqlite_tracer.trace(capture="full") as full:
        simple_chain(ScriptedChatModel(script=[answer("mail a@b.io")])).invoke({"question": "q"}, config={"callbacks": [h]})
    meta_doc = sqlite_tracer.get_trace(t.trace_id).to_dict()
    assert meta_doc["capture"] == "metadata" and meta_doc["llm_calls"][0]["raw_completion"] is None
    assert sqlite_tracer.get_trace(full.trace_id).to_dict()["llm_calls"][0]["raw_completion"] == "mail a@b.io"
    with pytest.raises(llmtrace.ConfigError):
        sqlite_tracer.trace(capture="everything")


def test_ids_are_never_taken_for_numbers():
    # Trace and run ids land in content and metadata (a replay's "replay_of"): one in ten UUIDs
    # whose digit groups pass Luhn once looked like a card number to the redactor.
    import hashlib
    import random
    import uuid

    from llmtrace.base.ids import ordered_id

    rng = random.Random(11)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(10_000)]
    ids += [ordered_id() for _ in range(10_000)]
    # digests too (commit ids, content hashes): hex with a country code and two digits in it is no IBAN
    ids += [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5_000)]
    ids += [hashlib.sha1(str(i).encode()).hexdigest().upper() for i in range(5_000)]
    r = Redactor()
    changed = [i for i in ids if r.text(f"trace {i} ended") != f"trace {i} ended"]
    assert changed == []


def test_user_processors_reach_trace_metadata_and_tags(sqlite_url):
    """Trace metadata and tags are content apps fill from user data: the built-in rules and the
    user's own processors apply to them (keys too), in full capture as well."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    for capture in ("redacted", "full"):
        with llmtrace.Tracer(sqlite_url, capture=capture, processors=[r"Alice", (r"T-\d+", "TICKET")]) as tracer:
            h = LLMTraceCallbackHandler(tracer)
            with tracer.trace(tags=["for Alice", "T-42"], metadata={"customer": "Alice", "alice@example.com": "owner",
                                                                      "db": "postgres://app:S3cretPw!x@db:5432/x"}) as t:
                RunnableLambda(lambda x: x, name="step").invoke("x", config={"callbacks": [h]})
            doc = tracer.get_trace(t.trace_id).to_dict()
        email_key = "[EMAIL]" if capture == "redacted" else "alice@example.com"
        assert doc["tags"] == ["for [REDACTED]", "[TICKET]"], capture
        assert doc["metadata"] == {"customer": "[REDACTED]", email_key: "owner",
                                   "db": "postgres://app:[PASSWORD]@db:5432/x"}, capture


def test_names_pass_the_same_rules():
    """Content.name: what the recorder is to call for run, trace, retriever and tool names."""
    from llmtrace.capture.content import Content

    problems = []
    content = Content(capture="redacted", ttl_days=30, max_field_chars=1000, processors=[llmtrace.regex_processor(r"Alice")],
                      hash_key=lambda: "k", redaction_hash=False, on_problem=lambda where, exc: problems.append(where))
    assert content.name("redacted", "summarize ticket of jane.doe@example.com for Alice") == \
        "summarize ticket of [EMAIL] for [REDACTED]"
    assert content.name("full", "call +44 20 7946 0958 with sk-ant-api03-Qm7Rt2Yx9Kp4Lw1Zs8VnXabc") == \
        "call +44 20 7946 0958 with [API_KEY]"
    assert content.name("metadata", "RunnableSequence") == "RunnableSequence" and content.name("redacted", None) is None

    def broken(fields):
        raise RuntimeError("no")

    failing = Content(capture="redacted", ttl_days=30, max_field_chars=1000, processors=[broken], hash_key=lambda: "k",
                      redaction_hash=False, on_problem=lambda where, exc: problems.append(where))
    assert failing.name("redacted", "step") == "[PROCESSOR_FAILED]" and problems == ["processor"]
