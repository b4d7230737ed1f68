"""The read side: a trace's SIGNALS.md document, queries, stats, trace search, alerts, cost,
eval-set export and the views (text tree, HTML). Works on rows any process wrote, without a writer.

Imports ``base`` and ``store``; never ``capture``.
"""
