"""Runnable examples for llmtrace: ``llmtrace demo`` (an offline support bot recorded end to end)."""

from llmtrace_examples.demo import run_demo

__all__ = ["run_demo"]
