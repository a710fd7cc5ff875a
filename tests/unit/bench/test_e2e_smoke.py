"""``fedcast bench e2e``: a tiny federation of real processes over the broker, and its bookkeeping."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aio_pika
import pytest

from fedcast.bench.e2e import (
    SCHEMES,
    E2EBenchConfig,
    E2EBenchError,
    _RoundMark,
    _summarize,
)
from fedcast.bench.e2e_plaintext import decode_message, encode_message
from fedcast.bench.procs import proxied
from fedcast.cli import main

AMQP_URL = os.environ.get("FEDCAST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _mark(round_id: int, stamp: float, published: int, seconds: float | None = None) -> _RoundMark:
    return _RoundMark(round_id, 3, seconds, stamp, published, 2 * published)


def test_summary_drops_warmup_and_uses_spacing_or_metrics() -> None:
    config = E2EBenchConfig(n_clients=(3,), rounds=3, warmup_rounds=1)
    marks = [
        _mark(1, 100.0, 1_000),  # warm-up: its completion is where round 2 starts
        _mark(2, 101.0, 1_500),
        _mark(3, 103.0, 2_000, seconds=1.75),  # from /metrics: preferred over the stamps
        _mark(4, 106.0, 2_500),
    ]
    row = _summarize("fedcast", config, 3, marks, "test")
    assert row["round_seconds"] == [1.0, 1.75, 3.0]
    assert row["rounds"] == 3
    assert row["round_p50_s"] == 1.75
    assert row["published_bytes_per_round"] == 500
    assert row["delivered_bytes_per_round"] == 1000
    assert row["bytes_per_round"] == 1500


def test_summary_refuses_a_round_without_every_member() -> None:
    config = E2EBenchConfig(n_clients=(3,), rounds=1)
    marks = [_mark(1, 0.0, 0), _RoundMark(2, 2, None, 1.0, 1, 1)]
    with pytest.raises(E2EBenchError, match="2 members"):
        _summarize("fedcast", config, 3, marks, "test")


def test_plaintext_runner_messages_and_relay_url() -> None:
    assert decode_message(encode_message(3, 7, "edge-001", b"\x00\x01")) == (3, 7, "edge-001", b"\x00\x01")
    assert proxied("amqp://guest:guest@127.0.0.1:5672/", 4242) == "amqp://guest:guest@127.0.0.1:4242/"
    assert proxied("amqp://broker/vhost", 1) == "amqp://127.0.0.1:1/vhost"
    with pytest.raises(E2EBenchError):
        E2EBenchConfig(warmup_rounds=0)


async def _queue_exists(name: str) -> bool:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


@pytest.mark.broker
def test_e2e_bench_cli_runs_both_schemes_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 edge processes per scheme, 500 parameters, 1 measured round, the real 2048-bit group."""
    out = tmp_path / "e2e.json"
    argv = ["bench", "e2e", "--clients", "2", "--items", "100", "--dim", "5", "--rounds", "1"]
    argv += ["--table-memory-mb", "4", "--amqp", AMQP_URL, "--json", str(out), "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "plaintext" in table and "fedcast" in table and "no signatures" in table
    rows = json.loads(out.read_text())
    assert [r["scheme"] for r in rows] == list(SCHEMES)
    for row in rows:
        assert row["n_clients"] == 2 and row["n_params"] == 500 and row["rounds"] == 1
        assert row["round_p50_s"] > 0 and row["published_bytes_per_round"] > 0
        assert row["delivered_bytes_per_round"] > 0
        # everything the cell created on the broker is gone
        assert not asyncio.run(_queue_exists(f"fedcast.{row['federation']}.aggregator"))
    plain, secure = rows
    assert plain["bytes_ratio"] == 1.0
    # sealed float64 models and ciphertexts (> 4 B/param) against float32 both ways: strictly more
    assert secure["bytes_ratio"] > 1.0
    assert secure["latency_source"].startswith("aggregator")
