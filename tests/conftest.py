"""Shared fixtures: small deterministic groups for speed, one real 2048-bit group for fidelity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from shared.crypto.group import GroupParams, insecure_test_group

DATA = Path(__file__).parent / "data"

settings.register_profile(
    "fedcast", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("fedcast")


@pytest.fixture(scope="session")
def small_group() -> GroupParams:
    """512-bit p / 128-bit q, deterministic. INSECURE, for fast protocol tests."""
    return insecure_test_group(512, 128, seed=0)


@pytest.fixture(scope="session")
def group_2048() -> GroupParams:
    """A real 2048/256 group generated once with generate_group() and stored (validated on load)."""
    return GroupParams.from_dict(json.loads((DATA / "group-2048.json").read_text()))


@pytest.fixture(scope="session")
def group_2048_dsa() -> GroupParams:
    """A real 2048/256 FIPS 186-4 DSA group (what session-1 key services generated): p - 1 has
    small factors, so its elements are checked one exponentiation each, never in batches."""
    return GroupParams.from_dict(json.loads((DATA / "group-2048-dsa.json").read_text()))
