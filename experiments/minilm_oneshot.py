"""One-shot magnitude pruning (no retraining) of the all-MiniLM-L6-v2 sentence encoder: cosine similarity of
pruned to dense embeddings over 200 fixed sentences, for the five methods at sparsities 10-90%, plus the
layerwise survival of LAMP, global and ERK. Public API only (lamp_kernels.prune_, layer_sparsities).

    python experiments/minilm_oneshot.py
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "examples"))
import minilm  # noqa: E402
from sentences import SENTENCES  # noqa: E402

import lamp_kernels as lk  # noqa: E402

SPARSITIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
LAYERWISE_AT = [0.5, 0.7, 0.9]
INCLUDE = r"^encoder\."  # the 36 encoder Linear layers (the pooler is unused by mean pooling)


def main():
    t = time.perf_counter()
    model, encode = minilm.load()
    batch = encode(SENTENCES)
    with torch.no_grad():
        dense = model(*batch)
    cosine = {}
    for method in lk.METHODS:
        cosine[method] = []
        for s in SPARSITIES:
            pruned = copy.deepcopy(model)
            lk.prune_(pruned, s, method, include=INCLUDE, reparametrize=False)
            with torch.no_grad():
                sim = (pruned(*batch) * dense).sum(-1)
            cosine[method].append({"mean": sim.mean().item(), "std": sim.std().item(), "min": sim.min().item()})
        print(method, " ".join(f"{c['mean']:.3f}" for c in cosine[method]))
    weights = {n: p.detach() for n, p in model.named_parameters() if n.startswith("encoder.") and p.dim() == 2}
    layerwise = {m: {str(s): lk.layer_sparsities(weights, s, m) for s in LAYERWISE_AT}
                 for m in ("lamp", "global", "erk")}
    out = {"sentences": len(SENTENCES), "sparsities": SPARSITIES, "cosine": cosine, "layerwise_sparsity": layerwise,
           "layers": list(weights), "seconds": round(time.perf_counter() - t, 1), "torch": torch.__version__}
    path = ROOT / "docs" / "results" / "minilm-oneshot.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['seconds']:.0f} s; written to {path}")


if __name__ == "__main__":
    main()
