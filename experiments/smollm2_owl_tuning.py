"""OWL's (M, lambda) chosen on a held-out tuning slice, then compared with Wanda's per-row rule on the report
slice: can a layer-adaptive selection beat the row rule at 50% and 70% on SmolLM2-135M without being tuned
on the tokens it is scored on?

Three disjoint token sets of the Debian Administrator's Handbook (examples/handbook.py):
  calibration  the first 8,192 tokens of the calibration half (the input norms of smollm2_calibration.py,
               cached next to its JSON);
  tuning       tokens 2,048-4,095 of the evaluation half: every (M, lambda) of the grid is scored here;
  report       tokens 0-2,047 of the evaluation half (section 4's slice): only the row rule and the
               (M, lambda) that won on the tuning slice are scored here.
Wanda importance (|W_ij| * ||X_j||, as lamp_kernels.ColumnScaled), the 210 block Linear weights, one-shot.

    python experiments/smollm2_owl_tuning.py
Writes docs/results/smollm2-owl-tuning.json after every run and resumes from it (delete it to start over).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).parent))
import handbook  # noqa: E402
import smollm2  # noqa: E402
from smollm2_calibration import OUT as CALIBRATION_OUT  # noqa: E402
from smollm2_calibration import perplexity  # noqa: E402

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.calibration import input_norms  # noqa: E402

OUT = ROOT / "docs" / "results" / "smollm2-owl-tuning.json"
SPARSITIES = [0.5, 0.7]
# The first grid was M <= 20, lambda <= 0.2; both sparsities chose a setting on its edge, so it was widened
# (twice: lambda = 0.3 won at 70% on the second).
M_VALUES = [3, 5, 7, 10, 15, 20, 25, 30, 40]
LAMBDAS = [0.02, 0.05, 0.08, 0.12, 0.2, 0.25, 0.3, 0.4]
SLICE = 2048


def wanda_setup(calibration_tokens: int = 8192):
    """SmolLM2-135M, its block Linear weights (their names, parameters and dense copies) and Wanda importance
    (lamp_kernels.ColumnScaled) from the input norms over the calibration tokens, cached beside
    smollm2_calibration.py's JSON (not committed) and computed when missing."""
    model, tokenizer = smollm2.load(smollm2.checkpoint_dir())
    params = dict(model.named_parameters())
    names = [n for n in params if re.match(smollm2.BLOCK_WEIGHT, n)]
    dense = {n: params[n].detach().clone() for n in names}
    cache = CALIBRATION_OUT.with_suffix(".norms.pt")
    if cache.exists():
        norms = torch.load(cache)
    else:
        batches = handbook.calibration_tokens(tokenizer, calibration_tokens).view(-1, 1, 512)
        modules = {n[: -len(".weight")]: model.get_submodule(n[: -len(".weight")]) for n in names}
        norms = input_norms(model, list(batches), modules, progress=False)
        torch.save(norms, cache)
    importance = {n: lk.ColumnScaled(norms[n[: -len(".weight")]]) for n in names}
    return model, tokenizer, params, names, dense, importance


def main() -> None:
    result = json.loads(OUT.read_text()) if OUT.exists() else {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32)", "importance": "wanda",
        "calibration_tokens": 8192, "tuning_tokens": [SLICE, 2 * SLICE], "report_tokens": [0, SLICE],
        "m_values": M_VALUES, "lambdas": LAMBDAS, "tuning": {}, "report": {}}
    result["m_values"], result["lambdas"] = M_VALUES, LAMBDAS  # a resumed run may have widened the grid

    def save():
        OUT.write_text(json.dumps(result, indent=1) + "\n")

    model, tokenizer, params, names, dense, importance = wanda_setup(result["calibration_tokens"])
    tokens = handbook.evaluation_tokens(tokenizer, 2 * SLICE)
    slices = {"report": tokens[:SLICE], "tuning": tokens[SLICE:]}

    def score(where: str, key: str, s: float, kwargs: dict) -> float:
        if key not in result[where]:
            t = time.perf_counter()
            masks = lk.prune_masks(dense, s, importance=importance, **kwargs)
            with torch.no_grad():
                for n in names:
                    params[n].copy_(dense[n] * masks[n])
            result[where][key] = {"perplexity": perplexity(model, slices[where]),
                                  "seconds": round(time.perf_counter() - t, 1)}
            save()
            print(f"{where} | {key}: {result[where][key]['perplexity']:.2f}", flush=True)
        return result[where][key]["perplexity"]

    row_rule = dict(method="uniform", granularity="row")
    for s in SPARSITIES:
        score("tuning", f"row rule | {s}", s, row_rule)
        grid = {(m, lam): score("tuning", f"OWL M={m} lambda={lam} | {s}", s,
                                dict(method="owl", granularity="row", owl_m=m, owl_lambda=lam))
                for m in M_VALUES for lam in LAMBDAS}
        m, lam = min(grid, key=grid.get)
        result.setdefault("chosen", {})[str(s)] = {"owl_m": m, "owl_lambda": lam}
        score("report", f"row rule | {s}", s, row_rule)
        score("report", f"OWL M={m} lambda={lam} (chosen on the tuning slice) | {s}", s,
              dict(method="owl", granularity="row", owl_m=m, owl_lambda=lam))
    with torch.no_grad():
        for n in names:
            params[n].copy_(dense[n])
    save()


if __name__ == "__main__":
    main()
