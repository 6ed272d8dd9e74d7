"""A fresh, larger test of smollm2_owl_tuning.py's choice: does OWL (with the M and lambda chosen on the tuning
slice) beat Wanda's per-row rule on tokens that played no part in any choice?

Four disjoint token sets of the Debian Administrator's Handbook (examples/handbook.py):
  calibration   the first 8,192 tokens of the calibration half (the cached input norms);
  report        tokens 0-2,047 of the evaluation half, and
  tuning        tokens 2,048-4,095 (both used by smollm2_owl_tuning.py);
  confirmation  tokens 4,096-12,287 of the evaluation half (16 windows of 512): scored here only, after the
                choice was made, for the dense model, the row rule, the chosen OWL and OWL's paper defaults.
Wanda importance (as lamp_kernels.ColumnScaled), the 210 block Linear weights, one-shot.

    python experiments/smollm2_owl_confirm.py
Writes docs/results/smollm2-owl-confirm.json after every run and resumes from it (delete it to start over).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).parent))
import handbook  # noqa: E402
from smollm2_calibration import perplexity  # noqa: E402
from smollm2_owl_tuning import OUT as TUNING_OUT  # noqa: E402
from smollm2_owl_tuning import wanda_setup  # noqa: E402

import lamp_kernels as lk  # noqa: E402

OUT = ROOT / "docs" / "results" / "smollm2-owl-confirm.json"
FIRST, TOKENS = 4096, 8192


def main() -> None:
    chosen = json.loads(TUNING_OUT.read_text())["chosen"]
    result = json.loads(OUT.read_text()) if OUT.exists() else {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32)", "importance": "wanda",
        "calibration_tokens": 8192, "confirmation_tokens": [FIRST, FIRST + TOKENS], "chosen": chosen,
        "perplexity": {}}

    def save():
        OUT.write_text(json.dumps(result, indent=1) + "\n")

    model, tokenizer, params, names, dense, importance = wanda_setup(result["calibration_tokens"])
    tokens = handbook.evaluation_tokens(tokenizer, FIRST + TOKENS)[FIRST:]

    def score(key: str, s: float | None, kwargs: dict) -> None:
        if key in result["perplexity"]:
            return
        t = time.perf_counter()
        with torch.no_grad():
            masks = lk.prune_masks(dense, s, importance=importance, **kwargs) if s is not None else None
            for n in names:
                params[n].copy_(dense[n] if masks is None else dense[n] * masks[n])
        result["perplexity"][key] = {"perplexity": perplexity(model, tokens),
                                     "seconds": round(time.perf_counter() - t, 1)}
        save()
        print(f"{key}: {result['perplexity'][key]['perplexity']:.2f}", flush=True)

    score("dense", None, {})
    for s in (0.5, 0.7):
        m, lam = chosen[str(s)]["owl_m"], chosen[str(s)]["owl_lambda"]
        score(f"row rule | {s}", s, dict(method="uniform", granularity="row"))
        score(f"OWL M={m} lambda={lam} (chosen on the tuning slice) | {s}", s,
              dict(method="owl", granularity="row", owl_m=m, owl_lambda=lam))
        score(f"OWL M=5 lambda=0.08 (paper defaults) | {s}", s, dict(method="owl", granularity="row"))
    with torch.no_grad():
        for n in names:
            params[n].copy_(dense[n])
    save()


if __name__ == "__main__":
    main()
