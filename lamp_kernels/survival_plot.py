"""A PNG of layerwise survival (fraction of weights kept per layer), like the paper's Fig. 5."""

from __future__ import annotations

from pathlib import Path


def plot_survival(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(layers) + 2), 3.6))
    ax.bar(range(len(layers)), [x["density"] for x in layers], width=0.85, color="#3b6ea8")
    ax.axhline(report["density"], color="#c44", lw=1, ls="--", label=f"overall {report['density']:.3f}")
    ax.set_xlabel("layer (checkpoint order)")
    ax.set_ylabel("fraction of weights kept")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_title(f"{report['method']} at sparsity {report['sparsity']:g}: layerwise survival")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
