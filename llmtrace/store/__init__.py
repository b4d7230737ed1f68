"""The database: tables, engine, migrations, batched inserts, retention, the audit chain.

Imports only ``base``; ``capture`` writes through it and ``read`` reads through it.
"""
