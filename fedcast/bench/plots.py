"""PNG plots of benchmark rows (``--plot DIR``), drawn with matplotlib from the ``bench`` extra.

matplotlib is imported only when a plot is asked for, so every bench runs
without it; asking for a plot without it raises a ConfigurationError that
says how to install it (``pip install 'fedcast[bench]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcast.shared.errors import ConfigurationError

__all__ = ["PLOTTERS", "plot_bench", "plot_crypto", "plot_fedmf", "plot_scale", "require_matplotlib"]

Rows = Sequence[Mapping[str, Any]]


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a clear error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigurationError(
            "--plot needs matplotlib, which is not installed: pip install 'fedcast[bench]' "
            "(or pip install 'matplotlib>=3.8')"
        ) from exc
    return plt


def _save(plt: Any, fig: Any, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fedmf(rows: Rows, out_dir: Path) -> list[Path]:
    """Time per iteration, single-core total and bytes per user, per scheme and item count (log scale)."""
    plt = require_matplotlib()
    schemes = list(dict.fromkeys(str(r["scheme"]) for r in rows))
    items = sorted({int(r["items"]) for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / max(len(schemes), 1)
    for ax, key, title in zip(
        axes,
        ("iteration_s", "single_core_s", "upload_bytes"),
        (
            "seconds per iteration (slowest user + server)",
            "single-core seconds per iteration",
            "bytes per user",
        ),
        strict=True,
    ):
        for k, scheme in enumerate(schemes):
            values = [
                next((float(r[key]) for r in rows if r["scheme"] == scheme and r["items"] == i), 0.0)
                for i in items
            ]
            positions = [x + (k - (len(schemes) - 1) / 2) * width for x in range(len(items))]
            ax.bar(positions, values, width, label=scheme)
        ax.set_yscale("log")
        ax.set_xticks(range(len(items)), [str(i) for i in items])
        ax.set_xlabel("items (x latent dimension = values per user)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    return [_save(plt, fig, out_dir, "fedmf.png")]


def plot_scale(rows: Rows, out_dir: Path) -> list[Path]:
    """Aggregator seconds and RSS against clients N, one line per parameter count n (measured cells)."""
    plt = require_matplotlib()
    cells = [r for r in rows if r.get("kind") == "aggregator" and r.get("status") == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for n in sorted({int(r["n_params"]) for r in cells}):
        line = sorted((r for r in cells if r["n_params"] == n), key=lambda r: int(r["n_clients"]))
        xs = [int(r["n_clients"]) for r in line]
        axes[0].plot(
            xs, [float(r["aggregate_s"]) + float(r["decrypt_s"]) for r in line], "o-", label=f"n={n:,}"
        )
        axes[1].plot(xs, [float(r["peak_rss_mb"]) for r in line], "o-", label=f"n={n:,}")
    for ax, title in zip(axes, ("aggregate + decrypt seconds", "aggregator peak RSS (MB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients N")
        ax.set_title(title, fontsize=10)
        if cells:
            ax.legend(fontsize=8)
    return [_save(plt, fig, out_dir, "scale.png")]


def plot_crypto(rows: Rows, out_dir: Path) -> list[Path]:
    """Client encryption seconds and bytes per parameter by scheme (``bench crypto`` rows)."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for scheme in dict.fromkeys(str(r["scheme"]) for r in rows):
        mine = [r for r in rows if r["scheme"] == scheme]
        ns = sorted({int(r["n_params"]) for r in mine})
        first = [next(r for r in mine if int(r["n_params"]) == n) for n in ns]
        axes[0].plot(ns, [max(float(r["client_encrypt_s"]), 1e-7) for r in first], "o-", label=scheme)
        axes[1].plot(ns, [float(r["bytes_per_param"]) for r in first], "o-", label=scheme)
    for ax, title in zip(axes, ("client encrypt seconds", "bytes per parameter"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters n")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return [_save(plt, fig, out_dir, "crypto.png")]


#: Bench name -> plotter; benches without an entry have no plot.
PLOTTERS: dict[str, Callable[[Rows, Path], list[Path]]] = {
    "crypto": plot_crypto,
    "fedmf": plot_fedmf,
    "scale": plot_scale,
}


def plot_bench(name: str, rows: Rows, out_dir: str | Path) -> list[Path]:
    """Draw the plots of bench ``name`` into ``out_dir``; [] for a bench without plots."""
    plotter = PLOTTERS.get(name)
    if plotter is None or not rows:
        return []
    return plotter(rows, Path(out_dir))
