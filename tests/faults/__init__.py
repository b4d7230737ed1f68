"""Fault-injection tests (issue 17). A package, so that its conftest.py does not shadow tests/conftest.py."""
