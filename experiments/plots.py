"""Plots and markdown tables for docs/results.md from the JSON results of iterative.py and minilm_oneshot.py.

    python experiments/plots.py     # writes docs/results/*.png and docs/results/tables.md
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
METHODS = ["lamp", "global", "uniform", "uniform_plus", "erk"]
COLORS = {"lamp": "#d62728", "global": "#1f77b4", "uniform": "#7f7f7f", "uniform_plus": "#2ca02c", "erk": "#9467bd"}


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def iterative(name: str, lines: list[str]) -> None:
    path = RESULTS / f"iterative-{name}.json"
    if not path.exists():
        return
    r = json.loads(path.read_text())
    density = r["density"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for m in METHODS:
        acc = [[run["accuracy"][i] * 100 for run in r["runs"][m]] for i in range(len(density))]
        mu = [mean_std(a)[0] for a in acc]
        sd = [mean_std(a)[1] for a in acc]
        ax.errorbar([d * 100 for d in density], mu, yerr=sd, label=m, color=COLORS[m], marker="o", ms=3, capsize=2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{r['dataset']}: iterative pruning (20% per round), {len(r['runs']['lamp'])} seeds")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(RESULTS / f"iterative-{name}-tradeoff.png", dpi=120)
    plt.close(fig)

    shown = [i for i in range(len(density)) if i in (5, 10, 14, 17, 20) or i == len(density) - 1]
    shown = sorted(set(shown))
    lines.append(f"### {r['dataset']}: test accuracy (%), mean ± std over {len(r['runs']['lamp'])} seeds\n")
    lines.append("| method | " + " | ".join(f"{density[i] * 100:.2f}% left" for i in shown) + " |")
    lines.append("|---|" + "---:|" * len(shown))
    for m in METHODS:
        cells = []
        for i in shown:
            mu, sd = mean_std([run["accuracy"][i] * 100 for run in r["runs"][m]])
            cells.append(f"{mu:.2f} ± {sd:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    dense = [run["accuracy"][0] * 100 for run in r["runs"]["lamp"]]
    lines.append(f"\nDense: {mean_std(dense)[0]:.2f} ± {mean_std(dense)[1]:.2f}. Full run: {r['seconds']:.0f} s "
                 f"on {r['threads']} CPU threads.\n")

    last = len(density) - 1
    layers = list(r["runs"]["lamp"][0]["layer_density"][last - 1])
    rounds = [i for i in (10, 14, last) if i <= last]
    fig, axes = plt.subplots(1, len(rounds), figsize=(4.2 * len(rounds), 3.4), sharey=True)
    width = 0.8 / 3
    for ax, i in zip(axes, rounds):
        for j, m in enumerate(["lamp", "global", "erk"]):
            vals = [statistics.mean(run["layer_density"][i - 1][n] for run in r["runs"][m]) for n in layers]
            ax.bar([k + (j - 1) * width for k in range(len(layers))], vals, width, label=m, color=COLORS[m])
        ax.set_xticks(range(len(layers)), [n.removesuffix(".weight") for n in layers])
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(f"{density[i] * 100:.2f}% of weights left")
    axes[0].set_ylabel("fraction of weights kept")
    axes[0].legend(frameon=False)
    fig.suptitle(f"{r['dataset']}: layerwise survival (mean over seeds)")
    fig.tight_layout()
    fig.savefig(RESULTS / f"iterative-{name}-layerwise.png", dpi=120)
    plt.close(fig)
    lines.append(f"Layerwise survival at {density[last] * 100:.2f}% left (mean over seeds):\n")
    lines.append("| layer | " + " | ".join(["lamp", "global", "erk", "uniform_plus"]) + " |")
    lines.append("|---|---:|---:|---:|---:|")
    for n in layers:
        vals = [statistics.mean(run["layer_density"][last - 1][n] for run in r["runs"][m])
                for m in ("lamp", "global", "erk", "uniform_plus")]
        lines.append(f"| {n} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    lines.append("")


def minilm(lines: list[str]) -> None:
    path = RESULTS / "minilm-oneshot.json"
    if not path.exists():
        return
    r = json.loads(path.read_text())
    sp = r["sparsities"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for m in METHODS:
        ax.plot([s * 100 for s in sp], [c["mean"] for c in r["cosine"][m]], marker="o", ms=3, label=m,
                color=COLORS[m])
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("mean cosine similarity to dense")
    ax.set_title(f"all-MiniLM-L6-v2, one-shot pruning, {r['sentences']} sentences")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(RESULTS / "minilm-oneshot-tradeoff.png", dpi=120)
    plt.close(fig)
    lines.append(f"### all-MiniLM-L6-v2: mean cosine similarity of pruned to dense embeddings ({r['sentences']} "
                 "sentences; ± std over sentences)\n")
    lines.append("| method | " + " | ".join(f"{s:.0%}" for s in sp) + " |")
    lines.append("|---|" + "---:|" * len(sp))
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in r["cosine"][m]) + " |")
    lines.append("")

    layers = r["layers"]
    short = [n.removeprefix("encoder.layer.").removesuffix(".weight").replace("attention.self.", "")
             .replace("attention.output.dense", "attn.out").replace("intermediate.dense", "ffn.in")
             .replace("output.dense", "ffn.out") for n in layers]
    levels = list(r["layerwise_sparsity"]["lamp"])
    fig, axes = plt.subplots(len(levels), 1, figsize=(10, 2.6 * len(levels)), sharex=True)
    width = 0.8 / 3
    for ax, at in zip(axes, levels):
        for j, m in enumerate(["lamp", "global", "erk"]):
            vals = [1 - r["layerwise_sparsity"][m][at][n] for n in layers]
            ax.bar([i + (j - 1) * width for i in range(len(layers))], vals, width, label=m, color=COLORS[m])
        ax.set_ylabel("kept")
        ax.set_title(f"{float(at):.0%} sparsity", fontsize=10)
    axes[-1].set_xticks(range(len(layers)), short, rotation=90, fontsize=7)
    axes[0].legend(frameon=False, ncol=3)
    fig.suptitle("all-MiniLM-L6-v2: layerwise survival (fraction of weights kept)")
    fig.tight_layout()
    fig.savefig(RESULTS / "minilm-layerwise.png", dpi=120)
    plt.close(fig)


def main():
    lines = ["<!-- generated by experiments/plots.py -->\n"]
    iterative("fashion-mnist", lines)
    minilm(lines)
    (RESULTS / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
