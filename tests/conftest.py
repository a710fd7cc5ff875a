"""Shared fixtures: small stored moduli for speed, one real 2048-bit modulus for fidelity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fedcast.shared.crypto.group import GroupParams

DATA = Path(__file__).parent / "data"

settings.register_profile(
    "fedcast", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("fedcast")


def stored_modulus(bits: int) -> int:
    """One of the moduli stored in tests/data/moduli.json (512, 1024 or 2048 bits)."""
    return int(json.loads((DATA / "moduli.json").read_text())[str(bits)], 16)


@pytest.fixture(scope="session")
def small_group() -> GroupParams:
    """A stored 512-bit modulus (insecure_test_group(512, seed=0)). INSECURE, for fast tests."""
    return GroupParams.from_modulus(stored_modulus(512), allow_insecure=True)


@pytest.fixture(scope="session")
def group_1024() -> GroupParams:
    """A stored 1024-bit modulus (insecure_test_group(1024, seed=0)). INSECURE."""
    return GroupParams.from_modulus(stored_modulus(1024), allow_insecure=True)


@pytest.fixture(scope="session")
def group_2048() -> GroupParams:
    """A real 2048-bit modulus generated once by generate_group() (factors never stored)."""
    return GroupParams.from_modulus(stored_modulus(2048))
