"""What the LangChain conformance tests share: a tool, a schema for structured output, and how to
run a model in each mode (invoke / ainvoke / stream / astream) against the loopback server."""

from __future__ import annotations

import asyncio

from langchain_core.tools import tool
from pydantic import BaseModel, Field

from .conf_wire import Reply


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny, 24 C in {city}"


class Person(BaseModel):
    """A person the user asked about."""

    name: str = Field(description="full name")
    born: int = Field(description="year of birth")


ADA = {"name": "Ada Lovelace", "born": 1815}


def run(model_call, mode: str, inp, config):
    """invoke / ainvoke / stream / astream one runnable; returns the final message or output."""
    if mode == "invoke":
        return model_call.invoke(inp, config=config)
    if mode == "ainvoke":
        return asyncio.run(model_call.ainvoke(inp, config=config))
    if mode == "stream":
        out = None
        for chunk in model_call.stream(inp, config=config):
            out = chunk if out is None else out + chunk
        return out

    async def collect():
        out = None
        async for chunk in model_call.astream(inp, config=config):
            out = chunk if out is None else out + chunk
        return out

    return asyncio.run(collect())


def warm(wire, model, mode: str) -> None:
    """One untraced call first, so the client exists and TTFT measures the provider, not setup."""
    wire.queue(Reply(text="warm"))
    if mode.startswith("a"):
        asyncio.run(model.ainvoke("warm-up"))
    else:
        model.invoke("warm-up")
    wire.reset()
