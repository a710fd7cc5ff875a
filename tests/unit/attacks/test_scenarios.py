"""Every attack of the crypto note: recovered against the old construction, not against v2.

``recovered`` is computed by each scenario from the true secret values; these tests check
both directions and the numbers the details report.
"""

from __future__ import annotations

import pytest

from fedcast.attacks import SCENARIO_NAMES
from fedcast.attacks.context import AttackContext
from fedcast.attacks.report import Finding
from fedcast.attacks.scenarios import SCENARIOS, run_scenarios
from fedcast.shared.errors import ConfigurationError

WEAK = {
    "leakage": ["plaintext"],
    "prime-modulus": ["v1"],
    "segment-relations": ["v1", "v2-without-fdh-bases"],
    "retry-differencing": ["v1"],
    "bad-share": ["v1"],
    "bad-beta": ["v2-without-element-rule"],
    "cancellation": ["v2-without-proofs"],
    "copy": ["v2-without-copy-checks"],
    "short-exponent": ["v2-without-256-bit-exponents"],
}

# What each detail must say (numbers from the comparison with the truth), weak first, v2 last.
DETAILS = {
    "leakage": ["recovered client 0's 17 ratings", "RMSE"],
    "prime-modulus": ["opened 4 of 4 segments", "opened 0 of 4 segments"],
    "segment-relations": ["recovered 3 of 3", "recovered 3 of 3", "recovered 0 of 3"],
    "retry-differencing": ["max error 0", "3 of 3 ClientMachines refused the fake retry"],
    "bad-share": ["culprit named: none", "culprit named: c2; 3 of 3 honest ClientMachines accepted"],
    "bad-beta": ["opened 4 of 4 data segments", "opened 0 of 4 segments"],
    "cancellation": ["opened 4 of 4", "2 of 2 honest members refused"],
    "copy": ["4 of 4 victim segments recovered exactly", "refused 3 of 3 ways"],
    "short-exponent": ["4 of 4 segments opened", "0 of 4 segments opened"],
}


@pytest.fixture(scope="module")
def findings(attack_context: AttackContext) -> dict[str, list[Finding]]:
    return {name: SCENARIOS[name](attack_context) for name in SCENARIO_NAMES}


def test_the_registry_is_the_cli_list() -> None:
    assert tuple(SCENARIOS) == SCENARIO_NAMES == tuple(WEAK)


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_recovered_against_the_old_construction_not_against_v2(
    findings: dict[str, list[Finding]], name: str
) -> None:
    result = findings[name]
    assert [f.scenario for f in result] == [name] * len(result)
    assert [f.construction for f in result] == [*WEAK[name], "v2"]
    weak, v2 = result[:-1], result[-1]
    assert all(f.recovered for f in weak), weak
    assert not v2.recovered, v2
    for finding, fragment in zip(result, DETAILS[name], strict=True):
        assert fragment in finding.detail, finding.detail


def test_run_scenarios_selects_and_orders(attack_context: AttackContext) -> None:
    picked = run_scenarios(attack_context, ["bad-beta", "prime-modulus"])
    assert [f.scenario for f in picked] == ["prime-modulus", "prime-modulus", "bad-beta", "bad-beta"]
    with pytest.raises(ConfigurationError):
        run_scenarios(attack_context, ["no-such-attack"])
