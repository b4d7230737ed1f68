"""Helpers of the scenario suite: read what a test recorded, and fakes built on the frameworks' own
classes (LangChain's fake chat model, the real OpenAI client of llama-index-llms-openai talking to an
httpx MockTransport instead of the network)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import sqlalchemy as sa
from fakes import ScriptedChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult


def all_trace_ids(tracer) -> list[str]:
    """Every trace id the store has a span of, oldest first (one request should add exactly one)."""
    tracer.flush(timeout=10)
    engine = sa.create_engine(tracer.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT trace_id, MIN(started_at) AS t FROM llmtrace_spans "
                                        "GROUP BY trace_id ORDER BY t")).all()
    finally:
        engine.dispose()
    return [r[0] for r in rows]


def by_id(doc: dict) -> dict[str, dict]:
    return {s["span_id"]: s for s in doc["spans"]}


def path(doc: dict, span_id: str) -> list[str]:
    """Span names from the root down to ``span_id``, following parent_id."""
    spans = by_id(doc)
    out = []
    cur = spans.get(span_id)
    while cur is not None:
        out.append(cur["name"])
        cur = spans.get(cur["parent_id"]) if cur["parent_id"] else None
    return out[::-1]


def spans_named(doc: dict, name: str) -> list[dict]:
    return [s for s in doc["spans"] if s["name"] == name]


def errors(doc: dict) -> list[dict]:
    return [s for s in doc["spans"] if s["status"] == "error"]


class EchoChatModel(ScriptedChatModel):
    """Answers "echo: <last user message>" after ``delay`` seconds (sync and async), so requests
    running at once interleave and every answer says which request it belongs to."""

    script: list[Any] = []
    delay: float = 0.02

    def _reply(self, messages) -> AIMessage:
        return AIMessage(content=f"echo: {messages[-1].content}",
                         usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
                         response_metadata={"model_name": "gpt-4o-2024-08-06", "finish_reason": "stop"})

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        time.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        await asyncio.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])


# -- the OpenAI Chat Completions wire, for llama-index-llms-openai without a network -------------

def completion(content: str | None = None, tool_calls: list[tuple[str, str, dict]] | None = None, *,
               model: str = "gpt-4o-mini-2024-07-18", finish: str = "stop",
               usage: tuple[int, int] = (50, 7)) -> dict:
    """A Chat Completions response body; ``tool_calls`` as (id, name, args)."""
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                             for i, n, a in tool_calls]
    return {"id": "chatcmpl-scn", "object": "chat.completion", "created": 1_767_000_000, "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def scripted_openai(bodies: list[dict], sent: list[dict] | None = None, **kwargs):
    """llama_index.llms.openai.OpenAI whose HTTP client answers ``bodies`` in order; each request body
    the client sent is appended to ``sent``."""
    from llama_index.llms.openai import OpenAI

    answers = iter(bodies)

    def handle(request: httpx.Request) -> httpx.Response:
        if sent is not None:
            sent.append(json.loads(request.content))
        return httpx.Response(200, json=next(answers))

    return OpenAI(model="gpt-4o-mini", api_key="sk-scenario-test", max_retries=0,
                  http_client=httpx.Client(transport=httpx.MockTransport(handle)),
                  async_http_client=httpx.AsyncClient(transport=httpx.MockTransport(handle)), **kwargs)
