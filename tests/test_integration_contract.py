"""The public contract integrations use (llmtrace.integration): the shared extraction helpers on the
shapes providers and frameworks really report, and a channel whose tracer was closed."""

from __future__ import annotations

import time

from pydantic import BaseModel

import llmtrace
from llmtrace import integration as I


def test_usage_blocks_of_every_shape_read_the_same():
    # OpenAI: prompt_tokens counts the cached part
    openai = {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
              "prompt_tokens_details": {"cached_tokens": 1000}, "completion_tokens_details": {"reasoning_tokens": 30}}
    assert I.tokens_from_usage(openai) == {"input": 1200, "output": 80, "total": 1280, "input_cached": 1000,
                                           "input_cache_write": None, "reasoning": 30}
    # Anthropic's own block: input_tokens is only the uncached part
    anthropic = {"input_tokens": 200, "output_tokens": 50, "cache_read_input_tokens": 1000,
                 "cache_creation_input_tokens": 300}
    assert I.tokens_from_usage(anthropic) == {"input": 1500, "output": 50, "total": 1550, "input_cached": 1000,
                                              "input_cache_write": 300, "reasoning": None}
    # LangChain's usage_metadata: input_tokens counts reads and writes already
    langchain = {"input_tokens": 1500, "output_tokens": 50, "total_tokens": 1550,
                 "input_token_details": {"cache_read": 1000, "cache_creation": 300}}
    assert I.tokens_from_usage(langchain) == I.tokens_from_usage(anthropic)
    # nothing reported: null, never 0
    assert I.tokens_from_usage(None) == dict.fromkeys(I.TOKEN_FIELDS)
    assert I.tokens_from_usage({"completion_tokens": True}) == dict.fromkeys(I.TOKEN_FIELDS)


def test_tool_specs_and_arguments_from_the_shapes_frameworks_pass():
    class Weather(BaseModel):
        """Weather in a city."""

        city: str

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    openai = {"type": "function", "function": {"name": "weather", "description": "Weather in a city.", "parameters": schema}}
    anthropic = {"name": "weather", "description": "Weather in a city.", "input_schema": schema}
    assert I.tool_spec(openai) == I.tool_spec(anthropic) == {"name": "weather", "description": "Weather in a city.",
                                                             "parameters": schema}

    class ToolObject:  # a framework's tool: a name, a description, a pydantic args schema
        name, description, args_schema = "weather", "Weather in a city.", Weather

    assert I.tool_spec(ToolObject())["parameters"] == Weather.model_json_schema()
    assert I.tool_args('{"city": "Paris"}') == {"city": "Paris"}
    assert I.tool_args({"city": "Paris"}) == {"city": "Paris"}
    assert I.tool_args('{"city": "Par') == '{"city": "Par'  # invalid arguments are the record
    assert I.json_schema_of(Weather) == Weather.model_json_schema() and I.json_schema_of("x") is None


def test_one_secret_rule_keeps_token_counts():
    params = {"api_key": "sk-x", "openai_api_key": "sk-y", "max_tokens": 64, "max_completion_tokens": 10,
              "temperature": 0.2, "Authorization": "Bearer z", "session_token": "t"}
    assert I.without_secrets(params) == {"max_tokens": 64, "max_completion_tokens": 10, "temperature": 0.2}


def test_a_channel_of_a_closed_tracer_drops_without_waiting(sqlite_url):
    tracer = llmtrace.Tracer(sqlite_url)
    channel = I.connect(tracer)
    tracer.close()
    assert channel.closed
    started = time.perf_counter()
    for i in range(20_000):  # past any queue bound: nothing waits for room that will never come
        channel.submit((I.RETRY, I.now(), f"span-{i}"))
    assert time.perf_counter() - started < 0.5
    assert tracer.health()["queue_depth"] == 0


def test_every_column_has_a_writer_and_the_field_tables_name_real_columns(sqlite_tracer):
    """The record's field tables (llmtrace.base.fields) name real columns, and every column of the
    llm_calls table is written (or declared reserved, with the reason in fields.py)."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from llmtrace.base import fields
    from llmtrace.store import schema
    from llmtrace_langchain import LLMTraceCallbackHandler

    calls = {c.name for c in schema.llm_calls.columns}
    assert set(fields.TOKEN_COLUMNS.values()) | set(fields.LATENCY_COLUMNS.values()) <= calls
    assert set(fields.TRACE_COLUMN_OF.values()) <= {c.name for c in schema.traces.columns}
    handler = LLMTraceCallbackHandler(sqlite_tracer)
    GenericFakeChatModel(messages=iter([AIMessage("hi")])).invoke("hello", config={"callbacks": [handler]})
    assert sqlite_tracer.flush(10)
    import sqlalchemy as sa

    with sa.create_engine(sqlite_tracer.url).connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM llmtrace_llm_calls")).mappings().one()
    # what a fake model leaves unsaid stays null; every other column has a value or is reserved
    unsaid = {*fields.TOKEN_COLUMNS.values(), "ttft_ms", "retrieval_ms", "tools_ms", "finish_reason", "error_type",
              "fallback_from", "model_version", "provider", "generations"}
    reserved = set(fields.RESERVED_COLUMNS["llmtrace_llm_calls"])
    assert {k for k, v in row.items() if v is None} <= unsaid | reserved
    assert all(row[c] is None for c in reserved)
