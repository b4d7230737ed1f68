"""Scenario coverage of the shapes peers test (a package, so its conftest does not shadow tests/conftest.py)."""
