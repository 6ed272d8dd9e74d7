"""LAMP as an allocation only: each layer's sparsity from LAMP on the weights' magnitudes (which has no outlier
features to collapse on), Wanda's per-row rule inside each layer at that sparsity. Does keeping LAMP's
layer-adaptivity while leaving the ranking inside a layer to Wanda beat the row rule on SmolLM2-135M?

Layer i prunes s_i = s + alpha * (lamp_i - s) of its weights, lamp_i its fraction under LAMP at sparsity s:
alpha = 0 is Wanda's row rule, 1 LAMP's allocation, negative values move the other way (the layers LAMP keeps
dense are pruned harder). Since LAMP prunes exactly s of all weights, every alpha keeps the total at s (up to
each row's rounding). alpha is chosen on the tuning slice, as smollm2_owl_tuning.py chooses OWL's (M, lambda),
then the choice and the row rule are scored on the report slice and on the confirmation slice (the token sets
of smollm2_owl_tuning.py and smollm2_owl_confirm.py).

    python experiments/smollm2_lamp_allocation.py
Writes docs/results/smollm2-lamp-allocation.json after every run and resumes from it (delete it to start over).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).parent))
import handbook  # noqa: E402
from smollm2_calibration import perplexity  # noqa: E402
from smollm2_owl_tuning import wanda_setup  # noqa: E402

import lamp_kernels as lk  # noqa: E402

OUT = ROOT / "docs" / "results" / "smollm2-lamp-allocation.json"
SPARSITIES = [0.5, 0.7]
ALPHAS = [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
SLICES = {"report": (0, 2048), "tuning": (2048, 4096), "confirmation": (4096, 12288)}


def main() -> None:
    result = json.loads(OUT.read_text()) if OUT.exists() else {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32)", "importance": "wanda",
        "calibration_tokens": 8192, "slices": SLICES, "alphas": ALPHAS, "tuning": {}, "report": {},
        "confirmation": {}, "chosen": {}}

    def save():
        OUT.write_text(json.dumps(result, indent=1) + "\n")

    model, tokenizer, params, names, dense, importance = wanda_setup(result["calibration_tokens"])
    tokens = handbook.evaluation_tokens(tokenizer, SLICES["confirmation"][1])
    slices = {k: tokens[a:b] for k, (a, b) in SLICES.items()}

    def allocation(s: float, alpha: float) -> dict[str, float]:
        lamp = lk.layer_sparsities(dense, s, "lamp")
        return {n: min(max(s + alpha * (lamp[n] - s), 0.0), 1.0) for n in names}

    def kept_by_type(s: float, alpha: float) -> dict[str, float]:
        """The kept fraction of each matrix type (q_proj, ..., down_proj) over all blocks."""
        kept, total = defaultdict(float), defaultdict(int)
        for n, s_n in allocation(s, alpha).items():
            kind = n.split(".")[-2]
            kept[kind] += (1 - s_n) * dense[n].numel()
            total[kind] += dense[n].numel()
        return {kind: round(kept[kind] / total[kind], 4) for kind in total}

    def score(where: str, s: float, alpha: float) -> float:
        key = f"alpha={alpha} | {s}"
        if key not in result[where]:
            t = time.perf_counter()
            pruned = 0
            with torch.no_grad():
                for n, s_n in allocation(s, alpha).items():
                    mask = lk.prune_masks({n: dense[n]}, s_n, "uniform", importance={n: importance[n]},
                                          granularity="row")[n]
                    params[n].copy_(dense[n] * mask)
                    pruned += int((~mask).sum())
            result[where][key] = {"perplexity": perplexity(model, slices[where]),
                                  "sparsity": pruned / sum(dense[n].numel() for n in names),
                                  "seconds": round(time.perf_counter() - t, 1)}
            save()
            print(f"{where} | {key}: {result[where][key]['perplexity']:.2f}", flush=True)
        return result[where][key]["perplexity"]

    for s in SPARSITIES:
        grid = {alpha: score("tuning", s, alpha) for alpha in ALPHAS}
        chosen = min(grid, key=grid.get)
        result["chosen"][str(s)] = chosen
        for where in ("report", "confirmation"):
            score(where, s, 0.0)
            score(where, s, chosen)
        result.setdefault("kept_by_type", {})[str(s)] = {f"alpha={a}": kept_by_type(s, a) for a in (1.0, chosen)}
        save()
    with torch.no_grad():
        for n in names:
            params[n].copy_(dense[n])
    save()


if __name__ == "__main__":
    main()
