"""Worked examples of fedcast model plugins (not installed; run from the repo root or set PYTHONPATH)."""
