"""Plots and markdown tables for docs/results.md from the JSON results of iterative.py, minilm_oneshot.py,
smollm2_perplexity.py, smollm2_calibration.py and smollm2_row_balance.py.

    python experiments/plots.py     # writes docs/results/*.png and docs/results/tables.md
"""

from __future__ import annotations

import json
import re
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


PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _grouped_density(r: dict, method: str, at: str, key) -> dict:
    """Fraction of weights kept per group of layers (key(name) -> group), weighted by layer size."""
    kept, total = {}, {}
    for n in r["layers"]:
        size = r["shapes"][n][0] * r["shapes"][n][1]
        g = key(n)
        kept[g] = kept.get(g, 0.0) + (1 - r["layerwise_sparsity"][method][at][n]) * size
        total[g] = total.get(g, 0) + size
    return {g: kept[g] / total[g] for g in total}


def _projection(name: str) -> str:
    return name.split(".")[-2]


def _block(name: str) -> int:
    return int(re.search(r"layers\.(\d+)\.", name).group(1))


def smollm2(lines: list[str]) -> None:
    path = RESULTS / "smollm2-perplexity.json"
    if not path.exists():
        return
    r = json.loads(path.read_text())
    sp = r["sparsities"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for m in METHODS:  # uniform+ equals uniform here (no conv layer; the last layer keeps > 20%): dashed on top
        ax.plot([s * 100 for s in sp], r["perplexity"][m], marker="o", ms=3, label=m, color=COLORS[m],
                ls="--" if m == "uniform_plus" else "-")
    ax.axhline(r["dense"], color="black", ls="--", lw=1, label=f"dense ({r['dense']:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the block Linear weights (%)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(f"SmolLM2-135M, one-shot magnitude pruning, {r['tokens']} tokens")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(RESULTS / "smollm2-perplexity.png", dpi=120)
    plt.close(fig)
    lines.append(f"### SmolLM2-135M: perplexity after one-shot pruning of the 210 block Linear weights "
                 f"({r['tokens']} tokens, {r['window']}-token windows; dense {r['dense']:.2f})\n")
    lines.append("| method | " + " | ".join(f"{s:.0%}" for s in sp) + " |")
    lines.append("|---|" + "---:|" * len(sp))
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(f"{p:,.1f}" for p in r["perplexity"][m]) + " |")
    lines.append("")

    levels = [str(s) for s in sp]
    lines.append("Fraction of weights kept by projection type (all 30 blocks together):\n")
    lines.append("| method, sparsity | " + " | ".join(p.removesuffix("_proj") for p in PROJECTIONS) + " |")
    lines.append("|---|" + "---:|" * len(PROJECTIONS))
    for m in ("lamp", "global", "erk"):
        for at in levels:
            d = _grouped_density(r, m, at, _projection)
            lines.append(f"| {m}, {float(at):.0%} | " + " | ".join(f"{d[p]:.3f}" for p in PROJECTIONS) + " |")
    lines.append("")
    groups = [(lo, lo + 4) for lo in range(0, 30, 5)]
    lines.append("Fraction of weights kept by depth (blocks, all seven projections together):\n")
    lines.append("| method, sparsity | " + " | ".join(f"{lo}–{hi}" for lo, hi in groups) + " |")
    lines.append("|---|" + "---:|" * len(groups))
    for m in ("lamp", "global", "erk"):
        for at in levels:
            d = _grouped_density(r, m, at, lambda n: _block(n) // 5)
            lines.append(f"| {m}, {float(at):.0%} | " + " | ".join(f"{d[g]:.3f}" for g in range(len(groups))) + " |")
    lines.append("")

    shown = [at for at in ("0.5", "0.7") if at in levels]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.6 * len(shown), 3.8), sharey=True, squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, at in zip(axes[0], shown):
        for j, proj in enumerate(PROJECTIONS):
            d = _grouped_density(r, "lamp", at, lambda n: (_projection(n), _block(n)))
            blocks = sorted(b for p, b in d if p == proj)
            ax.plot(blocks, [d[(proj, b)] for b in blocks], marker="o", ms=2.5, lw=1, color=cmap(j),
                    label=proj.removesuffix("_proj"))
        ax.axhline(1 - float(at), color="black", ls="--", lw=1)
        ax.set_xlabel("block")
        ax.set_title(f"LAMP at {float(at):.0%} sparsity (dashed: uniform)", fontsize=10)
    axes[0][0].set_ylabel("fraction of weights kept")
    axes[0][0].legend(frameon=False, ncol=4, fontsize=8)
    fig.suptitle("SmolLM2-135M: layerwise density LAMP picks, by projection type and depth")
    fig.tight_layout()
    fig.savefig(RESULTS / "smollm2-lamp-layerwise.png", dpi=120)
    plt.close(fig)


CALIBRATION_COLORS = {"uniform per layer": "#7f7f7f", "Wanda's per-row rule": "#000000", "global": "#1f77b4",
                      "LAMP per layer": "#d62728", "LAMP per row": "#ff7f0e", "OWL (per-row rule)": "#2ca02c"}


def _calibration_runs(r: dict) -> dict:
    """importance -> selection label -> {sparsity: perplexity}."""
    out: dict = {}
    for key, run in r["runs"].items():
        importance, label, s = key.split(" | ")
        out.setdefault(importance, {}).setdefault(label, {})[float(s)] = run["perplexity"]
    return out


def smollm2_calibration_figure(r: dict, path: Path) -> None:
    """Perplexity vs sparsity, one panel per importance (from experiments/smollm2_calibration.py)."""
    runs = _calibration_runs(r)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), sharey=True)
    extra = iter(plt.get_cmap("tab10").colors[4:])
    for ax, importance in zip(axes, ("magnitude", "wanda")):
        for label, points in runs.get(importance, {}).items():
            xs = sorted(points)
            if len(xs) == 1:  # N:M: one point
                ax.plot([x * 100 for x in xs], [points[x] for x in xs], marker="*", ms=11, ls="none", label=label,
                        color="#9467bd")
                continue
            ax.plot([x * 100 for x in xs], [points[x] for x in xs], marker="o", ms=3, label=label,
                    color=CALIBRATION_COLORS.get(label) or next(extra))
        ax.axhline(r["dense"], color="black", ls="--", lw=1, label=f"dense ({r['dense']:.1f})")
        ax.set_yscale("log")
        ax.set_xlabel("sparsity of the block Linear weights (%)")
        ax.set_title(f"{'|w|' if importance == 'magnitude' else 'Wanda |W|·||X||'} importance")
        ax.legend(frameon=False, fontsize=8)
    axes[0].set_ylabel("perplexity (log scale)")
    fig.suptitle(f"SmolLM2-135M, one-shot, {r['tokens']} evaluation tokens; Wanda norms from "
                 f"{r['calibration_tokens']} disjoint calibration tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def smollm2_calibration(lines: list[str]) -> None:
    path = RESULTS / "smollm2-calibration.json"
    if not path.exists():
        return
    r = json.loads(path.read_text())
    smollm2_calibration_figure(r, RESULTS / "smollm2-calibration.png")
    runs = _calibration_runs(r)
    sp = r["sparsities"]
    lines.append(f"### SmolLM2-135M: perplexity by importance and selection ({r['tokens']} evaluation tokens, "
                 f"dense {r['dense']:.2f})\n")
    lines.append("| importance | selection | " + " | ".join(f"{s:.0%}" for s in sp) + " |")
    lines.append("|---|---|" + "---:|" * len(sp))
    for importance in ("magnitude", "wanda"):
        for label, points in runs.get(importance, {}).items():
            cells = [f"{points[s]:.4g}" if s in points else "" for s in sp]
            lines.append(f"| {importance} | {label} | " + " | ".join(cells) + " |")
    lines.append("")


def smollm2_row_balance() -> None:
    """Tuning-slice perplexity against row_balance, relative to the row rule (from smollm2_row_balance.py)."""
    path = RESULTS / "smollm2-row-balance.json"
    if not path.exists():
        return
    r = json.loads(path.read_text())
    tuning = r["tuning"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = iter(plt.get_cmap("tab10").colors)
    for s in (0.3, 0.5, 0.6, 0.7):
        base = tuning[f"uniform beta=1.0 | {s}"]["perplexity"]
        for kind, betas, style in (("uniform", r["betas"], "-"), ("OWL", r["owl_betas"], "--")):
            points = [(b, tuning[f"{kind} beta={b} | {s}"]["perplexity"]) for b in betas
                      if f"{kind} beta={b} | {s}" in tuning]
            if points:
                color = next(colors)
                ax.plot([b for b, _ in points], [p / base for _, p in points], style, marker="o", ms=3,
                        color=color, label=f"{s:.0%}, {'uniform layers' if kind == 'uniform' else 'OWL layers'}")
    ax.axhline(1.0, color="black", lw=1)
    ax.set_ylim(0.5, 2)  # beta = 0 at 60% and 70% lie above (2.9 and 4.3)
    ax.set_xlabel("row_balance β (1 = Wanda's per-row rule, 0 = one threshold per layer)")
    ax.set_ylabel("perplexity / the row rule's (tuning slice)")
    ax.set_title("SmolLM2-135M, Wanda importance, one-shot")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "smollm2-row-balance.png", dpi=120)
    plt.close(fig)


def main():
    lines = ["<!-- generated by experiments/plots.py -->\n"]
    iterative("fashion-mnist", lines)
    minilm(lines)
    smollm2(lines)
    smollm2_calibration(lines)
    smollm2_row_balance()
    (RESULTS / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
