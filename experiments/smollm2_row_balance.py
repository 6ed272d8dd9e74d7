"""Row balance: does letting a layer's rows keep different fractions beat Wanda's per-row rule on SmolLM2-135M?

Wanda's row rule prunes the same fraction of every output row; one threshold per layer (uniform per layer) is
much worse on LLMs. `row_balance=beta` (options.py) is the path between them: each layer prunes the row
rule's total, with row r's threshold proportional to t_r^beta (t_r its cut under the row rule), so beta = 1
is the row rule and beta = 0 one threshold per layer. beta is chosen on the tuning slice, alone (uniform layer
sparsities) and inside OWL (M, lambda as chosen by smollm2_owl_tuning.py), then the choices and the row rule
are scored on the report and confirmation slices (the token sets of smollm2_owl_tuning.py and
smollm2_owl_confirm.py). Wanda importance as lamp_kernels.ColumnScaled, the 210 block Linear weights, one-shot.

    python experiments/smollm2_row_balance.py
Writes docs/results/smollm2-row-balance.json after every run and resumes from it (delete it to start over).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).parent))
import handbook  # noqa: E402
from smollm2_calibration import WINDOW, perplexity  # noqa: E402
from smollm2_lamp_allocation import SLICES  # noqa: E402  (report, tuning and confirmation tokens)
from smollm2_owl_tuning import OUT as OWL_TUNING  # noqa: E402
from smollm2_owl_tuning import wanda_setup  # noqa: E402

import lamp_kernels as lk  # noqa: E402

OUT = ROOT / "docs" / "results" / "smollm2-row-balance.json"
SPARSITIES = [0.3, 0.5, 0.6, 0.7]
BETAS = [0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
OWL_BETAS = [0.6, 0.7, 0.8, 0.9, 1.0]


def window_nlls(model, tokens: torch.Tensor) -> list[float]:
    """Mean next-token NLL of each window (perplexity's windows: exp of their mean is the perplexity), so that
    two selections can be compared window by window on the same tokens."""
    n = tokens.numel() // WINDOW
    x = tokens[: n * WINDOW].view(n, WINDOW)
    with torch.inference_mode():
        logits = model(x, use_cache=False).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none").mean(1)
    return [round(float(v), 6) for v in nll]


def main() -> None:
    owl_chosen = json.loads(OWL_TUNING.read_text())["chosen"]  # {"0.5": {"owl_m": .., "owl_lambda": ..}, "0.7": ..}
    result = json.loads(OUT.read_text()) if OUT.exists() else {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32)", "importance": "wanda",
        "calibration_tokens": 8192, "slices": SLICES, "betas": BETAS, "owl_betas": OWL_BETAS,
        "owl": owl_chosen, "tuning": {}, "report": {}, "confirmation": {}, "chosen": {}, "row_density": {}}

    def save():
        OUT.write_text(json.dumps(result, indent=1) + "\n")

    model, tokenizer, params, names, dense, importance = wanda_setup(result["calibration_tokens"])
    tokens = handbook.evaluation_tokens(tokenizer, SLICES["confirmation"][1])
    slices = {k: tokens[a:b] for k, (a, b) in SLICES.items()}

    def selection(s: float, beta: float, owl: bool) -> dict:
        kw = dict(importance=importance, granularity="row", row_balance=beta)
        if owl:
            return dict(method="owl", **kw, **owl_chosen[str(s)])
        return dict(method="uniform", **kw)

    def label(beta: float, owl: bool) -> str:
        return f"{'OWL' if owl else 'uniform'} beta={beta}"

    def score(where: str, s: float, beta: float, owl: bool = False) -> float:
        key = f"{label(beta, owl)} | {s}"
        if key not in result[where]:
            t = time.perf_counter()
            masks = lk.prune_masks(dense, s, **selection(s, beta, owl))
            with torch.no_grad():
                for n in names:
                    params[n].copy_(dense[n] * masks[n])
            result[where][key] = {"perplexity": perplexity(model, slices[where]),
                                  "seconds": round(time.perf_counter() - t, 1)}
            if where != "tuning":
                result[where][key]["window_nll"] = window_nlls(model, slices[where])
            if where == "tuning":  # how far the rows' kept fractions spread: quantiles over all rows of all layers
                kept = torch.cat([m.reshape(m.shape[0], -1).float().mean(1) for m in masks.values()])
                q = torch.quantile(kept, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]))
                result["row_density"][key] = [round(float(x), 4) for x in q]
            save()
            print(f"{where} | {key}: {result[where][key]['perplexity']:.2f}", flush=True)
        return result[where][key]["perplexity"]

    for s in SPARSITIES:
        grid = {(beta, False): score("tuning", s, beta) for beta in BETAS}
        if str(s) in owl_chosen:
            grid.update({(beta, True): score("tuning", s, beta, True) for beta in OWL_BETAS})
        alone = min(BETAS, key=lambda b: grid[(b, False)])
        best = min(grid, key=grid.get)
        result["chosen"][str(s)] = {"alone": label(alone, False), "best": label(*best)}
        for where in ("report", "confirmation"):
            score(where, s, 1.0)
            score(where, s, alone)
            score(where, s, *best)
        save()
    with torch.no_grad():
        for n in names:
            params[n].copy_(dense[n])
    save()


if __name__ == "__main__":
    main()
