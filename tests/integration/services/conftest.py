"""Fixtures of the service-level broker tests: a federation factory that always cleans up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import Federation

MakeFederation = Callable[..., Federation]


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[MakeFederation]:
    """``federation(n_clients, **options)``: a Federation with a unique id under ``tmp_path``.

    Afterwards every service task is stopped, every transport closed, and the federation's
    queues and exchanges are deleted from the broker, whatever the test did.
    """
    created: list[Federation] = []

    def make(n_clients: int, **options: Any) -> Federation:
        fed = Federation(tmp_path / f"fed{len(created)}", n_clients, **options)
        created.append(fed)
        return fed

    try:
        yield make
    finally:
        for fed in created:
            await fed.cleanup()
