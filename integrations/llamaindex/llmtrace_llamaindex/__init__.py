"""LlamaIndex integration for llmtrace: ``LLMTraceInstrumentor(tracer).instrument()``."""

from llmtrace_llamaindex._instrumentor import LLMTraceInstrumentor

__all__ = ["LLMTraceInstrumentor"]
