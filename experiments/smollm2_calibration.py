"""Calibration-aware one-shot pruning of SmolLM2-135M-Instruct: perplexity for {magnitude, Wanda} importance x
{uniform per layer, Wanda's per-row rule, global, LAMP per layer, LAMP per row, OWL} at 30/50/60/70%, and the
2:4 pattern; then, with Wanda importance at 50% and 70%, density bounds on the LAMP selections and OWL with
other values of M. Public API only (lamp_kernels.prune_masks, layer_sparsities, calibration.input_norms).

The 210 block Linear weights are pruned (embeddings and the tied head stay dense). Calibration: the first
--calibration-tokens tokens of the calibration part of the Debian Administrator's Handbook, in 512-token
windows; evaluation: the first --tokens tokens of its evaluation part (examples/handbook.py: the two parts are
the two halves of the book, so the slices are disjoint), non-overlapping 512-token windows, float32,
perplexity = exp(mean next-token NLL), each window scored on its own.

    python experiments/smollm2_calibration.py [--tokens 2048] [--calibration-tokens 8192]
Writes docs/results/smollm2-calibration.json after every configuration and resumes from it (delete it to
start over); `python experiments/smollm2_calibration.py --plot` redraws the figure and the table only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import handbook  # noqa: E402
import smollm2  # noqa: E402

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.calibration import input_norms, wanda_importance  # noqa: E402

SPARSITIES = [0.3, 0.5, 0.6, 0.7]
WINDOW = 512
OUT = ROOT / "docs" / "results" / "smollm2-calibration.json"
# label -> prune_masks arguments (besides weights, sparsity, importance)
SELECTIONS = {
    "uniform per layer": dict(method="uniform"),
    "Wanda's per-row rule": dict(method="uniform", granularity="row"),
    "global": dict(method="global"),
    "LAMP per layer": dict(method="lamp"),
    "LAMP per row": dict(method="lamp", granularity="row"),
    "OWL (per-row rule)": dict(method="owl", granularity="row"),
}
NM = {"2:4": dict(method="uniform", nm=(2, 4))}
# Wanda importance only, at 50% and 70%: density bounds (layer density within 0.1 of the target) on the LAMP
# selections, and OWL's sensitivity to M (lambda = 0.08; M = 5 is the default above).
EXTRAS = {
    "LAMP per layer, density 1-s +- 0.1": lambda s: dict(method="lamp", min_density=1 - s - 0.1,
                                                          max_density=1 - s + 0.1),
    "LAMP per row, layer density 1-s +- 0.1": lambda s: dict(method="lamp", granularity="row",
                                                              min_density=1 - s - 0.1, max_density=1 - s + 0.1),
    **{f"OWL M={m:g}": (lambda m: lambda s: dict(method="owl", granularity="row", owl_m=m))(m) for m in (3, 7, 10)},
}


def perplexity(model, tokens: torch.Tensor) -> float:
    """smollm2.perplexity's definition, with the windows in one batch (each still scored on its own)."""
    n = tokens.numel() // WINDOW
    x = tokens[: n * WINDOW].view(n, WINDOW)
    with torch.inference_mode():
        logits = model(x, use_cache=False).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()
    return math.exp(nll / (n * (WINDOW - 1)))


def configurations():
    for importance in ("magnitude", "wanda"):
        for label, kwargs in SELECTIONS.items():
            for s in SPARSITIES:
                yield f"{importance} | {label} | {s}", importance, s, kwargs
        for label, kwargs in NM.items():
            yield f"{importance} | {label} | 0.5", importance, 0.5, kwargs
    for label, make in EXTRAS.items():
        for s in (0.5, 0.7):
            yield f"wanda | {label} | {s}", "wanda", s, make(s)


def run(args) -> dict:
    done = json.loads(args.out.read_text()) if args.out.exists() else {}
    if done and (done.get("tokens"), done.get("calibration_tokens")) != (args.tokens, args.calibration_tokens):
        raise SystemExit(f"{args.out} was made with other token counts; delete it to start over")
    model, tokenizer = smollm2.load(smollm2.checkpoint_dir())
    params = dict(model.named_parameters())
    names = [n for n in params if re.match(smollm2.BLOCK_WEIGHT, n)]
    dense = {n: params[n].detach().clone() for n in names}
    evaluation = handbook.evaluation_tokens(tokenizer, args.tokens)
    result = done or {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32)", "tokens": args.tokens,
                      "calibration_tokens": args.calibration_tokens, "window": WINDOW, "sparsities": SPARSITIES,
                      "layers": names, "runs": {}, "threads": torch.get_num_threads(), "torch": torch.__version__}

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    if "dense" not in result:
        result["dense"] = perplexity(model, evaluation)
        save()
    print(f"dense {result['dense']:.2f}", flush=True)
    cache = args.out.with_suffix(".norms.pt")
    if cache.exists():
        norms = torch.load(cache)
    else:
        batches = handbook.calibration_tokens(tokenizer, args.calibration_tokens).view(-1, 1, WINDOW)
        modules = {n[: -len(".weight")]: model.get_submodule(n[: -len(".weight")]) for n in names}
        t = time.perf_counter()
        norms = input_norms(model, list(batches), modules, progress=False)
        result["calibration_s"] = round(time.perf_counter() - t, 1)
        torch.save(norms, cache)
        save()
    importance = {"magnitude": None,
                  "wanda": {n: wanda_importance(dense[n], norms[n[: -len(".weight")]]) for n in names}}
    for key, which, s, kwargs in configurations():
        if key in result["runs"]:
            continue
        t = time.perf_counter()
        masks = lk.prune_masks(dense, s, importance=importance[which], **kwargs)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            for n in names:
                params[n].copy_(dense[n] * masks[n])
        ppl = perplexity(model, evaluation)
        density = [round(float(m.float().mean()), 6) for m in masks.values()]
        result["runs"][key] = {"perplexity": ppl, "prune_masks_s": round(seconds, 3), "density": density}
        save()
        print(f"{key}: {ppl:.2f} ({seconds:.1f} s to select)", flush=True)
    with torch.no_grad():
        for n in names:
            params[n].copy_(dense[n])
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--calibration-tokens", type=int, default=8192)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot", action="store_true", help="only redraw the figure and table from the JSON")
    args = ap.parse_args(argv)
    result = json.loads(args.out.read_text()) if args.plot else run(args)
    from plots import smollm2_calibration_figure

    smollm2_calibration_figure(result, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
