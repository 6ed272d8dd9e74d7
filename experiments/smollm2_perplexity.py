"""One-shot magnitude pruning of SmolLM2-135M-Instruct: perplexity vs sparsity for the five methods, and the
layerwise densities each method picks. Public API only (lamp_kernels.prune_masks, layer_sparsities).

The 210 block Linear weights (q/k/v/o, gate/up/down of 30 blocks; embeddings and the tied head kept dense)
are pruned at each sparsity; perplexity on the first --tokens tokens of the evaluation part of the Debian
Administrator's Handbook (examples/handbook.py), in non-overlapping 512-token windows, float32.

    python experiments/smollm2_perplexity.py [--tokens 4096]
Writes docs/results/smollm2-perplexity.json (experiments/plots.py turns it into the plots and tables).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import handbook  # noqa: E402
import smollm2  # noqa: E402

import lamp_kernels as lk  # noqa: E402

SPARSITIES = [0.3, 0.4, 0.5, 0.6, 0.7]
WINDOW = 512
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "smollm2-perplexity.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model, tokenizer = smollm2.load(smollm2.checkpoint_dir())
    tokens = handbook.evaluation_tokens(tokenizer, args.tokens)
    params = dict(model.named_parameters())
    names = [n for n in params if re.match(smollm2.BLOCK_WEIGHT, n)]
    dense = {n: params[n].detach().clone() for n in names}
    dense_ppl = smollm2.perplexity(model, tokens, WINDOW)
    print(f"dense {dense_ppl:.2f}", flush=True)

    perplexity, seconds = {}, {}
    for method in lk.METHODS:
        perplexity[method], seconds[method] = [], []
        for s in SPARSITIES:
            t = time.perf_counter()
            masks = lk.prune_masks(dense, s, method)
            seconds[method].append(round(time.perf_counter() - t, 3))
            with torch.no_grad():
                for n in names:
                    params[n].copy_(dense[n] * masks[n])
            perplexity[method].append(smollm2.perplexity(model, tokens, WINDOW))
            print(f"{method} {s:.0%}: {perplexity[method][-1]:.2f}", flush=True)
    with torch.no_grad():
        for n in names:
            params[n].copy_(dense[n])

    layerwise = {m: {str(s): lk.layer_sparsities(dense, s, m) for s in SPARSITIES} for m in lk.METHODS}
    out = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32)", "tokens": args.tokens,
           "window": WINDOW, "text": "Debian Administrator's Handbook, evaluation part (examples/handbook.py)",
           "sparsities": SPARSITIES, "dense": dense_ppl, "perplexity": perplexity, "prune_masks_s": seconds,
           "layers": names, "shapes": {n: list(dense[n].shape) for n in names}, "layerwise_sparsity": layerwise,
           "seconds": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
           "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['seconds']:.0f} s; written to {args.out}")
    return out


if __name__ == "__main__":
    main()
