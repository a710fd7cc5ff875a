"""Benchmarks behind ``fedcast bench ...``: each prints a table, or JSON with ``--json``."""
