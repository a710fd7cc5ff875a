"""``fedcast bench peers``: Flower's SecAgg+ driven in-process, next to fedcast, at N=3, n=100."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcast.bench import peers
from fedcast.bench.peers import PeersBenchConfig, run_peers_bench
from fedcast.cli import main
from fedcast.shared.errors import ConfigurationError


def test_without_flower_the_bench_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "flower_version", lambda: None)
    with pytest.raises(ConfigurationError, match=r"pip install 'fedcast\[peers\]'"):
        run_peers_bench(PeersBenchConfig(n_clients=(3,), n_params=(100,)))


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="unknown settings"):
        PeersBenchConfig(settings=("flower-9/9",))
    with pytest.raises(ConfigurationError, match="at least 3"):
        PeersBenchConfig(n_clients=(2,))
    with pytest.raises(ConfigurationError, match="min_online=4"):  # fedcast's clients would refuse N=3
        PeersBenchConfig(n_clients=(3, 5), min_online=4)
    PeersBenchConfig(n_clients=(3,), min_online=4, settings=("flower-3/2",))  # no fedcast cell: fine


def test_fedcast_only_runs_without_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "flower_version", lambda: None)
    rows = run_peers_bench(PeersBenchConfig(n_clients=(3, 4), n_params=(100,), settings=("fedcast",)))
    assert [(r["system"], r["n_clients"]) for r in rows] == [("fedcast", 3), ("fedcast", 4)]
    for row in rows:
        # the aggregator chooses S: the clients' minimum |S| (3 by default), not N, bounds collusion
        assert row["collusion"] == "aggregator + 1 (min |S| 3 - 2)"
        assert row["dropouts"] == "before the challenge, >= 3 left; retry"
        assert row["version"] == "elgamal v2 |N|=2048"
        # 100 params: K_i + 2 data segments (mod N^2), A_i, B_i, the proof's t (mod N) and z (65 B)
        assert row["upload_bytes"] == 3 * 512 + 3 * 256 + 65
        assert row["client_sent_bytes"] == row["upload_bytes"] + 3 * 256 + 65 + 32


def test_flower_secaggplus_next_to_fedcast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedcast[peers]')")
    out = tmp_path / "peers.json"
    argv = ["bench", "peers", "--clients", "3", "4", "--params", "100", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    assert "flower-3/2" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [(r["setting"], r["n_clients"]) for r in rows] == [
        (s, n) for n in (3, 4) for s in ("flower-3/2", "flower-all/half", "fedcast")
    ]
    by_cell = {(r["setting"], r["n_clients"]): r for r in rows}
    # the effective SecAgg+ parameters come from Flower's own setup message
    assert (by_cell["flower-3/2", 4]["shares"], by_cell["flower-3/2", 4]["threshold"]) == (3, 2)
    assert (by_cell["flower-all/half", 4]["shares"], by_cell["flower-all/half", 4]["threshold"]) == (4, 2)
    for row in rows:
        assert row["client_s"] > 0 and row["server_s"] > 0
        assert row["client_sent_bytes"] >= row["upload_bytes"] > 100  # more than the vector's 100 values
        assert row["collusion"] and row["dropouts"]
    assert by_cell["fedcast", 4]["collusion"] == "aggregator + 1 (min |S| 3 - 2)"
    assert all(r["version"].startswith("1.41") for r in rows if r["system"] == "flower-secagg+")


def test_cli_min_online_sets_fedcast_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "peers.json"
    argv = ["bench", "peers", "--settings", "fedcast", "--clients", "4", "--params", "100"]
    assert main([*argv, "--min-online", "4", "--json", str(out), "--quiet"]) == 0
    assert "fedcast" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())
    assert row["collusion"] == "aggregator + 2 (min |S| 4 - 2)"
    assert row["dropouts"] == "before the challenge, >= 4 left; retry"
