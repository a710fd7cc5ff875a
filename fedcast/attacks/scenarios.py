"""The scenario registry of ``fedcast attack --scenario``, and the FedMF leakage scenario.

Every scenario takes an :class:`~fedcast.attacks.context.AttackContext` and returns
one :class:`~fedcast.attacks.report.Finding` per construction: first the one that
falls (protocol v1, plaintext FedMF, or v2 without the defense in question), last v2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedcast.attacks import SCENARIO_NAMES
from fedcast.attacks.challenge import cancellation, copied_upload
from fedcast.attacks.context import AttackContext
from fedcast.attacks.passive import bad_beta, prime_modulus, segment_relations, short_exponent
from fedcast.attacks.report import Finding
from fedcast.attacks.rounds import bad_share, retry_differencing
from fedcast.shared.encoding import FixedPointEncoding
from fedcast.shared.errors import ConfigurationError
from fedcast.shared.params import SystemParams

__all__ = ["SCENARIOS", "Scenario", "leakage", "run_scenarios"]

Scenario = Callable[[AttackContext], list[Finding]]

_RECOVERED_RMSE = 1e-3  # ratings on a 1-5 scale: below this the attack read them off


def leakage(ctx: AttackContext) -> list[Finding]:
    """FedMF section 4: two consecutive plaintext uploads give away a user's ratings.

    Run on plaintext FedMF and through the real v2 scheme (:class:`fedcast.shared.schemes.ElGamalSum`),
    where the aggregator decrypts only sums over the online set.
    """
    from fedcast.shared.learning.experiments import run_attack_demo
    from fedcast.shared.schemes import ElGamalSum

    params = SystemParams(ctx.group, FixedPointEncoding(16, 8.0))
    result = run_attack_demo(ctx.seed, secure=ElGamalSum(params, seed=ctx.seed))
    n, rmse = len(result["items"]), float(result["recovery_rmse"])
    secure_rmse = float(result["secure_aggregate_recovery_rmse"])
    return [
        Finding(
            "leakage",
            "plaintext",
            bool(result["rated_items_recovered"]) and rmse < _RECOVERED_RMSE,
            f"from two plaintext uploads the server recovered client 0's {n} ratings, RMSE {rmse:.1e}",
        ),
        Finding(
            "leakage",
            "v2",
            secure_rmse < _RECOVERED_RMSE,
            f"the aggregator decrypts only sums over "
            f"{result['secure_online_set_size']} clients; the same attack on them: RMSE {secure_rmse:.2f}",
        ),
    ]


SCENARIOS: dict[str, Scenario] = {
    "leakage": leakage,
    "prime-modulus": prime_modulus,
    "segment-relations": segment_relations,
    "retry-differencing": retry_differencing,
    "bad-share": bad_share,
    "bad-beta": bad_beta,
    "cancellation": cancellation,
    "copy": copied_upload,
    "short-exponent": short_exponent,
}


def run_scenarios(ctx: AttackContext, names: Sequence[str]) -> list[Finding]:
    """Run the named scenarios (``all`` for every one) in registry order."""
    wanted = SCENARIO_NAMES if "all" in names else tuple(names)
    unknown = sorted(set(wanted) - set(SCENARIOS))
    if unknown:
        raise ConfigurationError(f"unknown attack scenarios {unknown}; known: {list(SCENARIOS)}")
    return [finding for name in SCENARIO_NAMES if name in wanted for finding in SCENARIOS[name](ctx)]
