"""One attack context over the stored 512-bit test modulus (and a 512-bit v1 group) per session."""

from __future__ import annotations

import pytest

from fedcast.attacks.context import AttackContext
from fedcast.shared.crypto.group import GroupParams


@pytest.fixture(scope="session")
def attack_context(small_group: GroupParams) -> AttackContext:
    return AttackContext(small_group, seed=0)
