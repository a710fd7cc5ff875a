"""``fedcast attack``: the attacks of the crypto note, runnable against the old construction and v2.

Each scenario runs one attack against a construction that falls to it (protocol
version 1, re-implemented in :mod:`fedcast.attacks.legacy_v1` as an attack
target only, or v2 with one defense removed) and then the same attack code
against v2 as built in :mod:`fedcast.shared.crypto`. Whether an attack ``recovered``
anything is decided by comparing its output with the true secret values, never
assumed (:mod:`fedcast.attacks.scenarios`, :mod:`fedcast.attacks.report`).

Nothing in ``shared/`` or ``services/`` may import this package: the insecure v1
code is reachable only through ``fedcast attack``. This ``__init__`` imports
nothing, so building the CLI parser does not load any attack code.
"""

from __future__ import annotations

__all__ = ["SCENARIO_NAMES"]

#: The scenarios of ``fedcast attack --scenario``, in the order ``all`` runs them.
SCENARIO_NAMES = (
    "leakage",
    "prime-modulus",
    "segment-relations",
    "retry-differencing",
    "bad-share",
    "bad-beta",
    "cancellation",
    "copy",
    "short-exponent",
)
