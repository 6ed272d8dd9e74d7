"""make demo: prune the all-MiniLM-L6-v2 sentence encoder checkpoint (ships offline) with `lamp-prune`, by LAMP
and the paper's baselines at several sparsities, one-shot (no retraining); then compare each pruned
checkpoint's sentence embeddings with the dense model's, and show the layerwise survival each method chose.

Outputs (reports, a survival plot) go to out/minilm/; pruned checkpoints are deleted after evaluation."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import minilm  # noqa: E402
from sentences import SENTENCES  # noqa: E402  (the 200 fixed sentences of docs/results.md)

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.cli import main as lamp_prune  # noqa: E402

SPARSITIES = [0.2, 0.4, 0.6, 0.8]
SURVIVAL_AT = 0.6
OUT = Path(__file__).resolve().parent.parent / "out" / "minilm"
# The pooler is not used by the sentence embedding (mean pooling), so it is left out of the pruning.
ARGS = ["--exclude", "^pooler", "--quiet", "--force"]


def embed(model_path: Path, batch_sentences) -> torch.Tensor:
    model, encode = minilm.load(model_path)
    with torch.no_grad():
        return model(*encode(batch_sentences))


def main() -> None:
    src = minilm.model_dir()
    OUT.mkdir(parents=True, exist_ok=True)
    dense = embed(src, SENTENCES)
    print(f"all-MiniLM-L6-v2 from {src.name}/ ({len(SENTENCES)} sentences); backends: "
          f"{', '.join(lk.available_backends())}\n")
    print("Mean cosine similarity of pruned to dense sentence embeddings (one-shot, no retraining)")
    print(f"| method | {' | '.join(f'{s:.0%}' for s in SPARSITIES)} | lamp-prune time |")
    print("|---|" + "---:|" * (len(SPARSITIES) + 1))
    reports = {}
    for method in lk.METHODS:
        cells, times = [], []
        for s in SPARSITIES:
            dst, report = OUT / f"{method}-{s:g}", OUT / f"{method}-{s:g}.json"
            argv = [str(src), "--sparsity", str(s), "--method", method, "--out", str(dst), "--report", str(report)]
            if method == "lamp" and s == SURVIVAL_AT:
                argv += ["--plot", str(OUT / f"lamp-{s:g}-survival.png")]
            t = time.perf_counter()
            with open("/dev/null", "w") as quiet:
                stdout, sys.stdout = sys.stdout, quiet
                try:
                    rc = lamp_prune(argv + ARGS)
                finally:
                    sys.stdout = stdout
            if rc != 0:
                cells.append("n/a")
                continue
            times.append(time.perf_counter() - t)
            cells.append(f"{(embed(dst, SENTENCES) * dense).sum(-1).mean().item():.4f}")
            reports[(method, s)] = json.loads(report.read_text())
            shutil.rmtree(dst)
        print(f"| {method} | {' | '.join(cells)} | {1e3 * sum(times) / max(1, len(times)):.0f} ms |")
    print(f"\n(each cell: `lamp-prune {src.name} --sparsity S --method M --out DST {' '.join(ARGS[:2])}`)")

    shown = [m for m in ("lamp", "global", "erk", "uniform_plus") if (m, SURVIVAL_AT) in reports]
    print(f"\nLayerwise survival (fraction of weights kept) at {SURVIVAL_AT:.0%} sparsity")
    print(f"| layer | {' | '.join(shown)} |")
    print("|---|" + "---:|" * len(shown))
    layers = [x["name"] for x in reports[(shown[0], SURVIVAL_AT)]["layers"]]
    density = {m: {x["name"]: x["density"] for x in reports[(m, SURVIVAL_AT)]["layers"]} for m in shown}
    for name in layers:
        short = name.removeprefix("encoder.layer.").removesuffix(".weight")
        print(f"| {short} | " + " | ".join(f"{density[m][name]:.3f}" for m in shown) + " |")
    print(f"\nReports and the LAMP survival plot: {OUT}")


if __name__ == "__main__":
    main()
