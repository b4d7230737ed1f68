"""The ``llmtrace`` command: a thin shell over the library (read facade for reading, Tracer for writing)."""

from llmtrace.cli.main import main

__all__ = ["main"]
