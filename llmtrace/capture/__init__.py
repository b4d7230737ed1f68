"""The write path: the bounded queue integrations submit events to, the writer thread, and the
recorder that turns events into rows (linking, redaction, content) before ``store`` writes them.

Imports ``base`` and ``store``; never ``read`` or ``cli``.
"""
