"""`fedcast demo` over the in-process transport: the same services, the same protocol code."""

from __future__ import annotations

import json

import pytest

from fedcast.cli import main
from fedcast.demo import DemoConfig, run_demo


async def test_demo_matches_its_plaintext_replay() -> None:
    result = await run_demo(
        DemoConfig(n_clients=3, rounds=8, users_per_client=2, n_items=20, insecure_small_group=True)
    )
    assert result.rounds_completed == 8 and result.transport == "inprocess"
    assert len(result.rmse_secure) == len(result.rmse_plaintext) == 8
    for secure, plain in zip(result.rmse_secure, result.rmse_plaintext, strict=True):
        assert abs(secure - plain) / plain < 0.005  # only quantization separates them
    # it learns: the first precond round already fits every user's level; on 6 users x 20 items
    # the test RMSE rises in round 2 (the items over-fit 3 ratings each), then falls below it
    assert result.rmse_secure[-1] < result.rmse_secure[0]
    assert result.members == [3] * 8
    assert result.bytes_total == sum(result.bytes_by_endpoint.values()) > 0
    assert {"aggregator", "client", "keyserver"} <= set(result.bytes_by_endpoint)


def test_demo_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--clients", "3", "--rounds", "2", "--json"]) == 0  # real 2048-bit group
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "rounds_completed",
        "rmse_secure",
        "rmse_plaintext",
        "bytes_total",
        "seconds_total",
        "transport",
    }
    assert out["rounds_completed"] == 2 and out["transport"] == "inprocess"
    assert len(out["rmse_secure"]) == 2 and out["bytes_total"] > 0
