"""LangChain integration for llmtrace: ``LLMTraceCallbackHandler(tracer)``."""

from llmtrace_langchain._handler import LLMTraceCallbackHandler

__all__ = ["LLMTraceCallbackHandler"]
