"""Plots (skipped without matplotlib) and the BENCHMARKS.md generator, on tiny bench rows."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from fedcast.bench import docs
from fedcast.bench.docs import Section, machine_report, markdown_table, render_markdown
from fedcast.bench.fedmf import TABLE_COLUMNS, FedMFBenchConfig, run_fedmf_bench
from fedcast.bench.plots import plot_bench, require_matplotlib
from fedcast.cli import main
from shared.errors import ConfigurationError

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(
    not HAVE_MATPLOTLIB, reason="matplotlib is not installed (pip install 'fedcast[bench]'): plots not tested"
)


@pytest.fixture(scope="module")
def fedmf_rows() -> list[dict]:
    config = FedMFBenchConfig(**{**FedMFBenchConfig.small().__dict__, "iterations": 1})
    return run_fedmf_bench(config)


@needs_matplotlib
def test_fedmf_plot_is_written(fedmf_rows: list[dict], tmp_path: Path) -> None:
    (path,) = plot_bench("fedmf", fedmf_rows, tmp_path)
    assert path == tmp_path / "fedmf.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_matplotlib
def test_cli_plot_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "scale", "--small", "--quiet", "--params", "200", "--clients", "3", "--no-pi"]
    assert main([*args, "--plot", str(tmp_path)]) == 0
    capsys.readouterr()
    assert (tmp_path / "scale.png").stat().st_size > 0


def test_missing_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'fedcast\[bench\]'"):
        require_matplotlib()


def test_a_bench_without_plots_draws_nothing(tmp_path: Path) -> None:
    assert plot_bench("masks", [{"x": 1}], tmp_path) == []


def test_markdown_table_formats_missing_values_and_pipes() -> None:
    text = markdown_table([{"a": None, "b": "x|y", "c": 1234.5}], [("a", "A"), ("b", "B"), ("c", "C")])
    assert text.splitlines() == ["| A | B | C |", "|---|---|---|", "| - | x\\|y | 1,234 |"]


def test_render_markdown_has_machine_commands_tables_and_links(
    fedmf_rows: list[dict], tmp_path: Path
) -> None:
    plot = tmp_path / "bench" / "fedmf.png"
    sections = [
        Section(
            "fedmf",
            "FedMF",
            "fedcast bench fedmf --small",
            fedmf_rows,
            list(TABLE_COLUMNS),
            ["a note"],
            ["some prose"],
            [plot],
        ),
        Section("e2e", "e2e bench", "fedcast bench e2e", error="ConnectionError: no broker"),
    ]
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    text = render_markdown(
        sections,
        machine_report(),
        now,
        now,
        quick=True,
        out=tmp_path / "BENCHMARKS.md",
        plot_dir=tmp_path / "bench",
    )
    assert text.startswith("# Benchmarks\n")
    assert "Generated 2026-11-21 00:00 UTC" in text and "QUICK" in text and "cores" in text
    assert "## FedMF: `fedcast bench fedmf --small`" in text
    assert "| elgamal-512 |" in text and "* a note" in text and "some prose" in text
    assert "![fedmf: fedmf](bench/fedmf.png)" in text and "bench/fedmf.json" in text
    assert "Not run on this machine: ConnectionError: no broker" in text


def test_external_benches_are_imported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("fedcast.bench.fake")

    class FakeBenchConfig:
        @classmethod
        def quick(cls) -> FakeBenchConfig:
            return cls()

    def run_fake_bench(config: FakeBenchConfig, *, progress: object = None) -> list[dict]:
        assert isinstance(config, FakeBenchConfig)
        return [{"n": 1, "s": 0.5}]

    def broken(config: object, *, progress: object = None) -> list[dict]:
        raise RuntimeError("no broker here")

    fake.FakeBenchConfig = FakeBenchConfig  # type: ignore[attr-defined]
    fake.run_fake_bench = run_fake_bench  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fedcast.bench.fake", fake)
    section = docs._external("fake", True, lambda _m: None)
    assert (
        section is not None
        and section.rows == [{"n": 1, "s": 0.5}]
        and section.columns == [("n", "n"), ("s", "s")]
    )
    fake.run_fake_bench = broken  # type: ignore[attr-defined]
    section = docs._external("fake", True, lambda _m: None)
    assert section is not None and section.error == "RuntimeError: no broker here"
    assert docs._external("does_not_exist", True, lambda _m: None) is None
