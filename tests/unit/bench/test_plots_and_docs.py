"""Plots (skipped without matplotlib) and the BENCHMARKS.md generator, on tiny bench rows."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

from fedcast.bench import docs
from fedcast.bench.docs import Section, machine_report, markdown_table, render_markdown
from fedcast.bench.fedmf import TABLE_COLUMNS, FedMFBenchConfig, run_fedmf_bench
from fedcast.bench.plots import plot_bench, require_matplotlib
from fedcast.cli import main
from fedcast.shared.errors import ConfigurationError

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


# -- the FedMF section: same-run ratios as the headline, the paper's figures as a reference ------------


def _as_paillier_1024(rows: list[dict]) -> list[dict]:
    """The small run's rows with its Paillier FullText renamed to the 1024-bit baseline (tiny sizes)."""
    out = []
    for row in rows:
        copy = dict(row)
        if copy["scheme"] == "paillier-512-full":
            copy["scheme"] = docs.BASELINE_SCHEME
        out.append(copy)
    return out


def test_ratios_read_as_faster_or_slower() -> None:
    assert docs._times(24.0, "faster", "slower") == "24.0x faster"
    assert docs._times(0.5, "faster", "slower") == "2.0x slower"


def test_same_run_ratios_divide_the_baseline_by_each_row() -> None:
    rows = [
        {
            "scheme": "elgamal-2048",
            "items": 40,
            "iteration_s": 0.5,
            "single_core_s": 30.0,
            "upload_bytes": 3e4,
        },
        {
            "scheme": "paillier-1024-full",
            "items": 40,
            "iteration_s": 12.0,
            "single_core_s": 4300.0,
            "upload_bytes": 1.024e6,
        },
        {
            "scheme": "elgamal-2048",
            "items": 80,
            "iteration_s": 0.8,
            "single_core_s": 40.0,
            "upload_bytes": 6e4,
        },
    ]
    docs.same_run_ratios(rows)
    assert rows[0]["vs_paillier_iteration"] == pytest.approx(24.0)
    assert rows[0]["vs_paillier_single_core"] == pytest.approx(4300 / 30)
    assert rows[0]["vs_paillier_bytes"] == pytest.approx(1.024e6 / 3e4)
    assert rows[1]["vs_paillier_iteration"] == pytest.approx(1.0)
    # no baseline at 80 items in this run: no ratio, never one against another item count
    assert rows[2]["vs_paillier_iteration"] is None and rows[2]["vs_paillier_bytes"] is None


def test_fedmf_table_shows_same_run_ratios_instead_of_reference_ratios() -> None:
    columns = docs._fedmf_columns(TABLE_COLUMNS)
    keys = [k for k, _ in columns]
    assert not {"speedup_iteration", "speedup_single_core", "bytes_ratio"} & set(keys)
    assert [k for k, _ in docs.SAME_RUN_COLUMNS] == [k for k in keys if k.startswith("vs_paillier")]
    assert keys.index("vs_paillier_iteration") == [k for k, _ in TABLE_COLUMNS].index("speedup_iteration")


def test_fedmf_section_headline_is_the_same_run_baseline(
    fedmf_rows: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedcast.bench.fedmf as fedmf

    monkeypatch.setattr(fedmf, "run_fedmf_bench", lambda config, progress=None: _as_paillier_1024(fedmf_rows))
    section = docs._fedmf(True, 2048, None, lambda _m: None)
    secure = next(r for r in section.rows if r["scheme"].startswith("elgamal"))
    assert secure["vs_paillier_iteration"] > 0 and secure["vs_paillier_bytes"] > 1
    headline = section.prose[0]
    assert headline.startswith("**Same run, same data, same machine:**")
    assert "1024-bit Paillier FullText" in headline
    # tiny sizes: fedcast may be slower here, and the headline then says so ("x slower")
    assert re.search(r"[\d.]+x (faster|slower) per iteration \(slowest user \+ server: ", headline)
    assert re.search(r"[\d.]+x (faster|slower) single-core \(all users \+ server: ", headline)
    assert re.search(r"[\d.]+x (fewer|more) bytes per user \(", headline)
    # the paper's code figures appear once, as a reference from another run, and in no ratio column
    # (matched by its opening words: a measured time such as "0.279 s" also contains "79 s")
    (reference,) = [p for p in section.prose if p.startswith("For reference only, from another run")]
    assert "79 s" in reference and "3,800 s" in reference
    assert sum("3,800 s" in p for p in section.prose) == 1
    assert not any(note.startswith("x ref:") for note in section.notes)
    assert any(note.startswith("x P-1024 full:") for note in section.notes)
    text = markdown_table(section.rows, section.columns)
    assert "x P-1024 full iter" in text and "x ref" not in text


def test_fedmf_section_without_a_baseline_says_so(
    fedmf_rows: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedcast.bench.fedmf as fedmf

    monkeypatch.setattr(fedmf, "run_fedmf_bench", lambda config, progress=None: [dict(r) for r in fedmf_rows])
    section = docs._fedmf(False, 2048, None, lambda _m: None)
    assert "no paillier-1024-full row in this run" in section.prose[0]
    assert all(r["vs_paillier_iteration"] is None for r in section.rows)


def test_generated_prose_describes_scheme_v2(fedmf_rows: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """No text of the prime-group scheme (v1) survives in what the report generator writes."""
    import fedcast.bench.crypto as crypto
    import fedcast.bench.fedmf as fedmf

    def row(scheme: str, per_param: float) -> dict:
        return {
            "scheme": scheme,
            "n_params": 100_000,
            "n_clients": 100,
            "client_encrypt_s": 0.5,
            "client_params_per_s": 2e5,
            "client_respond_s": 0.01,
            "bytes_per_param": per_param,
            "ratio_to_float32": per_param / 4,
            "aggregate_s": 1.0,
            "decrypt_s": 0.4,
            "extrapolated": False,
        }

    monkeypatch.setattr(
        crypto,
        "run_crypto_bench",
        lambda config, progress=None: [row("elgamal", 7.4), row("paillier", 512.0)],
    )
    monkeypatch.setattr(fedmf, "run_fedmf_bench", lambda config, progress=None: _as_paillier_1024(fedmf_rows))
    sections = [docs._crypto(False, 2048, lambda _m: None), docs._fedmf(False, 2048, None, lambda _m: None)]
    text = "\n".join(line for s in sections for line in [*s.prose, *s.notes])
    for v1 in ("Legendre", "|p|", "|q|", "2qq'", "q-th power", "alpha_j"):
        assert v1 not in text
    assert "proofs of knowledge" in text and "1,430 for 100,000 parameters" in text


def test_report_writes_markdown_and_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_report's structure with every bench replaced by a stand-in (the real ones take minutes)."""
    seen: list[tuple[str, int]] = []

    def fake(name: str) -> object:
        def build(quick: bool, *args: object) -> Section:
            bits = next((a for a in args if isinstance(a, int)), 2048)
            seen.append((name, bits))
            return Section(name, name.title(), f"fedcast bench {name}", [{"n": 1}], [("n", "n")], ["note"])

        return build

    for name in ("crypto", "learning", "fedmf", "scale"):
        monkeypatch.setattr(docs, f"_{name}", fake(name))
    monkeypatch.setattr(docs, "_masks", lambda quick, progress: None)
    monkeypatch.setattr(
        docs,
        "_modulus",
        lambda quick, progress: Section("modulus", "Modulus", "fedcast bench modulus", [{"n": 1}]),
    )
    monkeypatch.setattr(
        docs,
        "_external",
        lambda name, quick, progress, bits=2048: Section(name, name, name, error="no broker"),
    )
    out = tmp_path / "BENCHMARKS.md"
    sections = docs.run_report(
        quick=True, out=out, plot_dir=tmp_path / "bench", modulus_bits=3072, plots=False
    )
    assert [s.name for s in sections] == ["modulus", "crypto", "learning", "fedmf", "scale", "e2e", "peers"]
    assert {bits for _, bits in seen} == {3072}  # --modulus-bits reaches every bench
    text = out.read_text()
    assert text.count("Not run on this machine: no broker") == 2 and "## Fedmf: `fedcast bench fedmf`" in text
    assert (tmp_path / "bench" / "fedmf.json").exists() and not (tmp_path / "bench" / "e2e.json").exists()


def test_table_count_matches_the_packing() -> None:
    assert docs._table_count(100_000, 2048) == 1430  # 1,429 data segments of 70 slots + the key segment
    assert docs._table_count(70, 2048) == 2


def test_report_only_replaces_the_named_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--only fedmf`: that section is re-run and replaced in place; the others keep their numbers."""
    out = tmp_path / "BENCHMARKS.md"
    out.write_text(
        "# Benchmarks\n\nGenerated earlier.\n\n"
        "## Crypto: `fedcast bench crypto`\n\nold crypto 1.0\n\n"
        "## Fedmf: `fedcast bench fedmf`\n\nold fedmf 2.0\n\n"
        "## Scale: `fedcast bench scale`\n\nold scale 3.0\n"
    )
    ran: list[str] = []

    def fake(name: str) -> object:
        def build(quick: bool, *args: object) -> Section:
            ran.append(name)
            return Section(name, name.title(), f"fedcast bench {name}", [{"n": 7}], [("n", "n")], ["new"])

        return build

    for name in ("crypto", "learning", "fedmf", "scale"):
        monkeypatch.setattr(docs, f"_{name}", fake(name))
    docs.run_report(out=out, plot_dir=tmp_path / "bench", plots=False, only=["fedmf"])
    text = out.read_text()
    assert ran == ["fedmf"]
    assert "old crypto 1.0" in text and "old scale 3.0" in text and "old fedmf 2.0" not in text
    assert text.index("## Crypto") < text.index("## Fedmf") < text.index("## Scale")
    assert text.count("## Fedmf") == 1 and "| 7 |" in text.split("## Fedmf")[1].split("## Scale")[0]
    assert "Generated earlier." in text and "fedmf only (`fedcast bench report --only fedmf`)" in text
    with pytest.raises(ValueError, match="no bench named"):
        docs.run_report(out=out, plot_dir=tmp_path / "bench", plots=False, only=["nope"])
