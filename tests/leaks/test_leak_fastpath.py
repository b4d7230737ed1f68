"""Fast paths make redaction cheaper, never different (issue 17 items 11 and 12).

The recording path (a Tracer storing a LangChain call's messages: the writer's walk that redacts and
shares long strings in one go, its caches, the skip for short text without a trigger character) is
compared text by text with the plain path: a fresh ``llmtrace.Redactor`` over the same text made
longer than any short-text shortcut, on the whole corpus and plain texts of every length class.
A user's own processors are compared with what they are documented to do (``re.sub``).
"""

from __future__ import annotations

import json
import re

import pytest
from fakes import ScriptedChatModel, answer
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda
from pii_corpus import PLAIN_TEXTS, corpus

import llmtrace

PAD = "\n" + " " * 600  # past every short-text shortcut; no detector reaches across a line break


def plain(text: str, *, pii: bool = True) -> str:
    """The plain path: a fresh Redactor (no cache) over the text made long (no short-text skip)."""
    out = llmtrace.Redactor(pii=pii)({"content": text + PAD})["content"]
    assert out.endswith(PAD), "the padding was changed: the comparison would not be fair"
    return out[: -len(PAD)]


def texts_of_every_class() -> list[str]:
    """The corpus as written, made long (> 512 characters), behind Unicode text, and plain texts."""
    sentences = [c.text for c in corpus(7)]
    long = [t + " " + "Notes follow without numbers. " * 18 for t in sentences[::3]]
    unicode = ["Résumé · 日本語 · emoji 🙂 — " + t for t in sentences[1::3]]
    out = [*sentences, *long, *unicode, *PLAIN_TEXTS]
    assert min(map(len, long)) > 512 and any(len(t) < 40 and not re.search(r"[0-9@:=_-]", t) for t in out)
    return out


def record_messages(tracer, texts: list[str], capture: str | None = None) -> list[str]:
    """Record one chat call whose input is one message per text; returns the stored contents."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(tracer)
    model = ScriptedChatModel(script=[answer("ok")])
    config = {"callbacks": [h], "metadata": {"llmtrace_capture": capture} if capture else {}}
    RunnableLambda(lambda _: model.invoke([HumanMessage(t) for t in texts]), name="fast_path_app").invoke("go", config=config)
    call = tracer.get_trace(h.last_trace_id).to_dict()["llm_calls"][0]
    assert len(call["input_messages"]) == len(texts)
    return [m["content"] for m in call["input_messages"]]


@pytest.mark.parametrize("capture", ["redacted", "full"])
def test_recorded_content_equals_the_plain_redactor(sqlite_tracer, capture):
    texts = texts_of_every_class()
    stored = record_messages(sqlite_tracer, texts, capture)
    differ = [(t, s, plain(t, pii=capture == "redacted")) for t, s in zip(texts, stored, strict=True)
              if s != plain(t, pii=capture == "redacted")]
    assert not differ, f"{len(differ)} of {len(texts)} texts stored differently from the plain path, e.g. {differ[:3]}"
    assert sum("[PHONE]" in s for s in stored) > 100 if capture == "redacted" else sum("[API_KEY]" in s for s in stored) > 50


def expected_with_user_regex(text: str) -> str:
    return re.sub(r"Alice", "[REDACTED]", plain(text))


def test_user_regex_processor_runs_on_every_text(sqlite_url):
    texts = [t + " Alice" for t in texts_of_every_class()]
    with llmtrace.Tracer(sqlite_url, processors=[r"Alice"], flush_interval_seconds=0.05) as tracer:
        stored = record_messages(tracer, texts)
    differ = [(t, s) for t, s in zip(texts, stored, strict=True) if s != expected_with_user_regex(t)]
    assert not differ, f"{len(differ)} of {len(texts)} texts kept 'Alice', e.g. {differ[:4]}"


def test_hello_alice_is_redacted_by_a_user_regex(sqlite_url):
    with llmtrace.Tracer(sqlite_url, processors=[r"Alice"], flush_interval_seconds=0.05) as tracer:
        assert record_messages(tracer, ["Hello Alice"]) == ["Hello [REDACTED]"]


def test_regex_processor_on_its_own():
    assert llmtrace.regex_processor(r"Alice")({"t": "Hello Alice"}) == {"t": "Hello [REDACTED]"}
    assert llmtrace.regex_processor(r"(?i)bob", "NAME")({"t": ["hi BOB", "Bob-7"]}) == {"t": ["hi [NAME]", "[NAME]-7"]}


def drop_names(fields: dict) -> dict:
    """A user's own processor (a callable): names from the app's customer list."""
    return {k: json.loads(json.dumps(v).replace("Omar Haddad", "[CUSTOMER]")) for k, v in fields.items()}


@pytest.mark.parametrize("how", ["Tracer(capture='full')", "trace(capture='full')", "metadata llmtrace_capture=full"])
def test_full_capture_still_runs_user_processors(sqlite_url, how):
    text = "Omar Haddad paid 42 EUR for ACME-1234, mail omar@example.com"
    with llmtrace.Tracer(sqlite_url, capture="full" if how.startswith("Tracer") else "redacted",
                         processors=[drop_names, (r"ACME-\d+", "ORDER")], flush_interval_seconds=0.05) as tracer:
        if how.startswith("trace("):
            with tracer.trace(capture="full"):
                stored = record_messages(tracer, [text])
        else:
            stored = record_messages(tracer, [text], "full" if how.startswith("metadata") else None)
    # full keeps PII (the email) but the user's own steps still run
    assert stored == ["[CUSTOMER] paid 42 EUR for [ORDER], mail omar@example.com"]


def nested(depth: int, leaf, container: str = "dict"):
    for _ in range(depth):
        leaf = {"a": leaf} if container == "dict" else [leaf] if container == "list" else (leaf,)
    return leaf


@pytest.mark.parametrize("container", ["dict", "list", "tuple"])
@pytest.mark.parametrize("depth", [1, 30, 41, 42, 45, 200])
def test_redactor_fails_closed_at_any_depth(depth, container):
    secret = "mail jane.doe@example.com key sk-ant-api03-Qm7Rt2Yx9Kp4Lw1Zs8VnXabc"
    out = llmtrace.Redactor()({"x": nested(depth, secret, container)})
    text = json.dumps(out)
    assert "jane.doe@example.com" not in text and "Qm7Rt2Yx9Kp4Lw1Zs8VnX" not in text


def test_redactor_fails_closed_on_other_containers():
    out = llmtrace.Redactor()({"x": {"mail jane.doe@example.com"}, "y": frozenset({"sk-ant-api03-Qm7Rt2Yx9Kp4Lw1Zs8VnXabc"})})
    assert "jane.doe@example.com" not in repr(out) and "Qm7Rt2Yx9Kp4Lw1Zs8VnX" not in repr(out)


@pytest.fixture(scope="module")
def presidio():
    """Real Presidio with a blank spaCy pipeline and a deny-list recognizer (no model download)."""
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
    analyzer.registry.add_recognizer(PatternRecognizer(supported_entity="PERSON", deny_list=["Jane Doe"]))
    return llmtrace.PresidioRedactor(analyzer, entities=["PERSON"])


@pytest.mark.parametrize("depth", [3, 45])
def test_presidio_redactor_fails_closed_at_any_depth(presidio, depth):
    out = presidio({"x": nested(depth, "I am Jane Doe")})
    assert "Jane Doe" not in json.dumps(out)


@pytest.mark.parametrize("depth", [45, 200])
def test_recording_path_fails_closed_at_any_depth(sqlite_tracer, depth):
    """A chain input and a tool argument nested deeper than any walk: stored without the values."""
    from llmtrace_langchain import LLMTraceCallbackHandler

    h = LLMTraceCallbackHandler(sqlite_tracer)
    payload = {"deep": nested(depth, "mail jane.doe@example.com, card 4111 1111 1111 1111")}
    RunnableLambda(lambda x: "ok", name="deep_step").invoke(payload, config={"callbacks": [h]})
    doc = sqlite_tracer.get_trace(h.last_trace_id).to_dict()
    text = json.dumps(doc)
    assert doc["spans"][0]["name"] == "deep_step" and doc["spans"][0]["outputs"] == "ok"
    assert "jane.doe@example.com" not in text and "4111 1111 1111 1111" not in text


# -- every fast path against the plain path ----------------------------------------------------------
#
# The fast paths of the one redaction walk: a cache of texts seen lately, the detectors' pre-checks
# (a text no pre-check accepts is not scanned), ASCII text not folded, strings looked up in the walk
# without a call, the recording walk that shares long strings while it redacts, a tuple walked once.
# ``Redactor.plain_text`` runs every detector on every text with no cache: the reference.

_ALPHABET = ("abcdefghij ABC xyz 0123456789 0123456789 .,;:!?-/()+@=_'\"\n\t" "０１２３４５６７８９－（）＋：＠"
             "\u00a0\u202f\u3000 電話番号は です。 é ñ ü ß ٠١٢٣٤٥٦٧٨٩ ९८७")
_WORDS = ("sk-", "sk-ant-api03-", "eyJ", "Bearer ", "AKIA", "ghp_", "://", "@", "password: ", "pwd=", "Passwort: ",
          "passcode ", "パスワード：", "+1 ", "+44 ", "(0)", "DE89 ", "GB82 WEST ", "4111 1111 1111 1111", "::", "fe80::",
          "10.0.", "123-45-", "-----BEGIN PRIVATE KEY-----", "xoxb-", "_live_", "redis://:", "mail ", " and ")
_LENGTHS = (0, 1, 2, 5, 11, 40, 130, 511, 512, 513, 2_000, 9_000)  # around every threshold a fast path ever had


def random_texts(seed: int = 17, per_length: int = 60) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for n in _LENGTHS:
        for i in range(per_length):
            parts: list[str] = []
            while sum(map(len, parts)) < n:
                if i % 3 and rng.random() < 0.15:
                    parts.append(rng.choice(_WORDS))
                else:
                    parts.append("".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(1, 12))))
            out.append("".join(parts)[:n])
    return out


@pytest.mark.parametrize("pii, hash_key", [(True, None), (False, None), (True, "k")])
def test_text_fast_path_equals_the_plain_path(pii, hash_key):
    fast = llmtrace.Redactor(pii=pii, hash_key=hash_key)
    texts = texts_of_every_class() + [c.text for c in corpus(23)] + random_texts()
    first = [fast.text(t) for t in texts]
    again = [fast.text(t) for t in texts]  # (from the cache now)
    differ = [(t, f, p) for t, f, a, p in zip(texts, first, again, [llmtrace.Redactor(pii=pii, hash_key=hash_key).plain_text(t)
                                                                     for t in texts], strict=True) if not f == a == p]
    assert not differ, f"{len(differ)} of {len(texts)} texts differ from the plain path, e.g. {differ[:3]}"
    changed = sum(f != t for f, t in zip(first, texts, strict=True))
    assert changed > 500, f"only {changed} texts were changed at all: the comparison would prove little"


def nested_content(texts: list[str]) -> dict:
    """Fields as the recording path gets them, and the containers only a user hands the Redactor."""
    import dataclasses

    @dataclasses.dataclass
    class Note:
        text: str
        card: int

    class Tagged(str):
        pass

    t = iter(texts)
    return {
        "input_messages": [{"role": "user", "content": next(t)}, {"role": "assistant", "content": next(t),
                                                                  "tool_calls": [{"args": {"q": next(t), next(t): 1}}]}],
        "raw_completion": next(t), "outputs": {"a": [next(t), [next(t), {"deep": [next(t), next(t)]}]]},
        "tools_offered": ({"name": "lookup", "description": next(t)}, {"name": "x", "description": next(t)}),
        "inputs": {"set": {next(t)}, "tuple": (next(t), next(t)), "object": Note(next(t), 4111111111111111),
                   "str subclass": Tagged(next(t)), "int card": 5500000000000004, "small int": 42, "none": None,
                   "api_key": "plain value under a secret key", "nested": {"x": {"y": {"z": {"w": next(t)}}}}},
    }


def test_recording_walk_equals_the_plain_walk_then_share():
    """Redactor.shared (redact and share long strings in one walk) against Redactor(fields) then
    store.content.share, the two-step path the recorder takes when the user has processors."""
    from llmtrace.store.content import share

    base = [c.text for c in corpus(29)] + texts_of_every_class()
    long = [t + " " + "and then some more words to make it long enough to share. " * 3 for t in base]
    shared = 0
    for start in range(0, 400, 20):
        chunk = long[start:start + 20] + base[start:start + 20]
        rotated = chunk[5:] + chunk[:5]  # the same long strings again, elsewhere: references to the first
        seen_fast: dict = {}
        seen_plain: dict = {}
        fast = llmtrace.Redactor().shared(nested_content(chunk), "span-1", seen_fast)
        fast2 = llmtrace.Redactor().shared(nested_content(rotated), "span-2", seen_fast)
        plain = share(llmtrace.Redactor()(nested_content(chunk)), "span-1", seen_plain)
        plain2 = share(llmtrace.Redactor()(nested_content(rotated)), "span-2", seen_plain)
        assert (fast, fast2) == (plain, plain2)
        assert {k: _steps(v) for k, v in seen_fast.items()} == {k: _steps(v) for k, v in seen_plain.items()}
        shared += json.dumps(fast2).count('"__llmtrace_same__"')
    assert shared >= 20, "few strings were shared: the comparison would prove little"


def _steps(ref):
    """A registered first occurrence as its path list (kept as a linked tuple until used)."""
    if isinstance(ref, list):
        return ref
    steps = []
    while ref is not None:
        ref, key = ref
        steps.append(key)
    return steps[::-1]


def test_a_tuple_walked_once_equals_a_fresh_walk():
    tools = ({"name": "lookup", "description": "mail jane.doe@example.com, key sk-ant-api03-Qm7Rt2Yx9Kp4Lw1Zs8VnXabc"},)
    fast = llmtrace.Redactor()
    first = fast.shared({"tools_offered": tools}, "s1", {})
    second = fast.shared({"tools_offered": tools}, "s2", {})  # the same object: walked once
    assert first == second == llmtrace.Redactor()({"tools_offered": tools})
    assert "jane.doe" not in json.dumps(first) and "Qm7Rt2Yx9Kp4Lw1Zs8VnX" not in json.dumps(first)


def test_redactor_walks_everything_it_is_given():
    """Keys, numbers a card hides in, objects, str subclasses, cycles: nothing comes back unlooked-at."""
    fields = nested_content(["mail jane.doe@example.com"] * 30)
    cyclic: dict = {"note": "call +44 20 7946 0958"}
    cyclic["self"] = cyclic
    out = llmtrace.Redactor()({**fields, "cyclic": cyclic, "jane.doe@example.com": "a key as a field name stays"})
    text = json.dumps(out, default=str)
    assert "jane.doe" not in text.replace('"jane.doe@example.com": "a key', "") and "7946" not in text
    assert "4111111111111111" not in text and "5500000000000004" not in text and out["inputs"]["small int"] == 42
    assert out["inputs"]["api_key"] == "[SECRET]" and out["cyclic"]["self"] == "[CYCLE]"
    assert out["input_messages"][1]["tool_calls"][0]["args"] == {"q": "mail [EMAIL]", "mail [EMAIL]": 1}


@pytest.mark.parametrize("capture", ["redacted", "full"])
def test_recording_with_processors_equals_recording_without(sqlite_url, capture):
    """The recorder's two content paths (one walk, or the processor chain then sharing) store the same."""
    texts = [t + " " + "long enough to be shared as a reference " * 4 for t in texts_of_every_class()[:300]]
    texts = texts + texts[:50]  # repeats: stored as references to their first occurrence
    stored = {}
    for name, processors in (("one walk", None), ("chain", [lambda fields: fields])):
        with llmtrace.Tracer(sqlite_url.replace(".db", f"-{len(stored)}.db"), capture=capture, processors=processors,
                             flush_interval_seconds=0.05) as tracer:
            stored[name] = record_messages(tracer, texts)
    assert stored["one walk"] == stored["chain"]
