"""What every layer shares: errors, settings, ids, JSON, error classes, prices, field names, privacy rules.

Imports nothing else of llmtrace's (the layers above import from here, never the reverse).
"""
