"""Property-based fuzzing of every outside input (hypothesis).

A package (unlike the rest of ``tests/``) so that its ``conftest.py`` is imported as
``fuzz.conftest`` and does not replace the top-level ``conftest`` module that test
modules import helpers from.
"""
