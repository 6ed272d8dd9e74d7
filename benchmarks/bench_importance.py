"""Speed goals of calibration-aware pruning, on this machine's CPU:

1. masks with importance given, Llama-3.2-1B shapes (bf16 weights, float32 importance |W| * s_j with
   log-normal column scales), against the magnitude path on the same weights: LAMP per layer (goal: within
   2x), the importance given two ways -- as float32 tensors (4 bytes per weight, made beforehand) and as
   ColumnScaled(s) (computed by the kernels as they read the weights) -- the three timed alternately round
   after round so that the load of a shared machine hits them alike (medians, and the median of the
   per-round ratios; both ways verified to give the same masks); then global, LAMP per row, LAMP within
   density bounds, Wanda's per-row rule (also with row_balance=0.8), OWL and 2:4 once each for reference; every
   global selection verified to prune the exact count; those budget selections also with ColumnScaled importance
   (the masks verified equal to the float32 tensors'), with the peak memory of a first call in a fresh process
   beyond the inputs and the masks it returns;
2. calibration of SmolLM2-135M over 8k tokens (16 windows of 512) with calibration.input_norms (goal: within
   3 minutes on 2 cores); the norms are compared with a cached earlier run when one is given.

The machine's load average is recorded with each row (other jobs share the 2 cores).
Usage: python benchmarks/bench_importance.py [--blocks 16] [--repeats 5] [--skip-calibration]
Appends a run to benchmarks/results/importance-<date>.json (a list of runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import shapes as S  # noqa: E402
from machine import cpu_model, git_commit  # noqa: E402

import lamp_kernels as lk  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def median_s(fn, repeats: int):
    out = fn()  # warm-up (and the result to verify)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def load() -> float:
    return os.getloadavg()[0]


def model(blocks: int):
    """Llama-3.2-1B-shaped bf16 weights and log-normal column scales (the same every call)."""
    weights = S.make_weights(S.llama32_1b(blocks), torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    return weights, [torch.exp(torch.randn(w.shape[1], generator=g)) for w in weights]


def unmade_selections(weights, importance) -> dict:
    """Wanda's per-row rule, OWL (per-row rule inside, 7 layers a block) and 2:4 with the given importance:
    the selections besides LAMP per layer that keep a ColumnScaled importance unmade on CPU tensors; and the
    row rule with row_balance=0.8, which makes one layer's importances at a time."""
    blocks = [i // 7 for i in range(len(weights))]
    return {"Wanda's per-row rule": lambda: lk.prune_masks(weights, 0.5, "uniform", importance=importance,
                                                           granularity="row"),
            "row rule, row_balance=0.8": lambda: lk.prune_masks(weights, 0.5, "uniform", importance=importance,
                                                                granularity="row", row_balance=0.8),
            "OWL (per-row rule)": lambda: lk.prune_masks(weights, 0.5, "owl", importance=importance,
                                                         granularity="row", blocks=blocks),
            "2:4": lambda: lk.prune_masks(weights, 0.5, "uniform", importance=importance, nm=(2, 4))}


def peak_memory_mib(blocks: int, label: str) -> float:
    """Peak extra memory of a first call of a ColumnScaled selection, in a fresh process (bench_cpu's
    peak_extra_mb: beyond what was resident before and the masks returned)."""
    out = subprocess.run([sys.executable, __file__, "--memory", str(blocks), label], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def masks_rows(blocks: int, repeats: int) -> list[dict]:
    shapes = S.llama32_1b(blocks)
    weights, scales = model(blocks)
    n = S.numel(shapes)
    importance = [w.abs().float() * s for w, s in zip(weights, scales)]
    column_scaled = [lk.ColumnScaled(s) for s in scales]
    fns = {"magnitude": lambda: lk.prune_masks(weights, 0.5),
           "importance": lambda: lk.prune_masks(weights, 0.5, importance=importance),
           "column_scaled": lambda: lk.prune_masks(weights, 0.5, importance=column_scaled)}
    for fn in fns.values():  # warm-up, and the exact count
        assert sum(int((~m).sum()) for m in fn()) == round(0.5 * n)
    assert all(torch.equal(a, b) for a, b in zip(fns["importance"](), fns["column_scaled"]()))
    times: dict[str, list[float]] = {name: [] for name in fns}
    before = load()
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    rows = []
    for name, given in (("importance", "float32 tensors"), ("column_scaled", "ColumnScaled")):
        ratios = [b / a for a, b in zip(times["magnitude"], times[name])]
        rows.append({
            "case": f"llama3.2-1b x{blocks / 16:g}: LAMP per layer, importance ({given}) vs magnitude, alternating",
            "magnitude_s": round(statistics.median(times["magnitude"]), 3),
            "importance_s": round(statistics.median(times[name]), 3),
            "ratio_of_medians": round(statistics.median(times[name]) / statistics.median(times["magnitude"]), 2),
            "median_ratio": round(statistics.median(ratios), 2), "rounds": repeats,
            "importance_input_mib": round(sum(t.numel() * t.element_size() for t in
                                              (importance if name == "importance" else scales)) / 2**20, 1),
            "all_s": {k: [round(x, 3) for x in times[k]] for k in ("magnitude", name)}, "weights": n,
            "load_avg_before": round(before, 2), "load_avg_after": round(load(), 2)})
        print(rows[-1], flush=True)
    base = rows[0]["magnitude_s"]
    cases = [
        ("importance, global", lambda: lk.prune_masks(weights, 0.5, "global", importance=importance)),
        ("importance, Wanda's per-row rule", unmade_selections(weights, importance)["Wanda's per-row rule"]),
        ("importance, LAMP per row",
         lambda: lk.prune_masks(weights, 0.5, importance=importance, granularity="row")),
        ("importance, LAMP per layer within densities 0.3-0.7",
         lambda: lk.prune_masks(weights, 0.5, importance=importance, min_density=0.3, max_density=0.7)),
        ("importance, OWL (per-row rule)", unmade_selections(weights, importance)["OWL (per-row rule)"]),
        ("importance, row rule, row_balance=0.8", unmade_selections(weights, importance)["row rule, row_balance=0.8"]),
        ("importance, 2:4", unmade_selections(weights, importance)["2:4"]),
    ]
    for label, fn in unmade_selections(weights, column_scaled).items():
        cases.append((f"ColumnScaled, {label}", fn))
    for label, fn in cases:
        before = load()
        seconds, masks = median_s(fn, 1)
        pruned = sum(int((~m).sum()) for m in masks)
        if label.endswith("global") or "LAMP per" in label:
            assert pruned == round(0.5 * n), (label, pruned)
        extra = {}
        if label.startswith("ColumnScaled"):
            same = unmade_selections(weights, importance)[label.split(", ", 1)[1]]()
            assert all(torch.equal(a, b) for a, b in zip(masks, same)), label
            del same
            extra = {"equals_float32_tensors": True,
                     "peak_extra_mib": round(peak_memory_mib(blocks, label.split(", ", 1)[1]), 1)}
        del masks
        rows.append({"case": f"llama3.2-1b x{blocks / 16:g}: {label}", "seconds": round(seconds, 3),
                     "vs_magnitude": round(seconds / base, 2), "pruned": pruned, "weights": n, **extra,
                     "load_avg_before": round(before, 2), "load_avg_after": round(load(), 2)})
        print(rows[-1], flush=True)
    return rows


def calibration_row(cached: Path | None) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    import handbook
    import smollm2

    from lamp_kernels.calibration import input_norms

    model, tokenizer = smollm2.load(smollm2.checkpoint_dir())
    batches = list(handbook.calibration_tokens(tokenizer, 8192).view(16, 1, 512))
    modules = {n: m for n, m in model.named_modules() if n.startswith("model.layers.") and n.endswith("_proj")}
    before = load()
    t = time.perf_counter()
    norms = input_norms(model, batches, modules, progress=False)
    seconds = time.perf_counter() - t
    row = {"case": "calibration: SmolLM2-135M, 8192 tokens (16 x 512), 210 Linear layers",
           "seconds": round(seconds, 1), "tokens_per_s": round(8192 / seconds, 1),
           "load_avg_before": round(before, 2), "load_avg_after": round(load(), 2)}
    if cached is not None and cached.exists():
        old = torch.load(cached)
        row["equals_cached_norms"] = all(torch.equal(norms[k], old[k]) for k in norms)
    print(row, flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=16, help="Llama-3.2-1B blocks (16 = the whole model)")
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds of the goal comparison")
    ap.add_argument("--skip-calibration", action="store_true")
    ap.add_argument("--cached-norms", type=Path, default=ROOT / "docs" / "results" / "smollm2-calibration.norms.pt")
    ap.add_argument("--memory", nargs=2, metavar=("BLOCKS", "SELECTION"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory:
        from bench_cpu import peak_extra_mb

        weights, scales = model(int(args.memory[0]))
        fn = unmade_selections(weights, [lk.ColumnScaled(s) for s in scales])[args.memory[1]]
        print(peak_extra_mb(fn, sum(w.numel() for w in weights)))
        return
    rows = masks_rows(args.blocks, args.repeats)
    if not args.skip_calibration:
        rows.append(calibration_row(args.cached_norms))
    out = {"date": datetime.date.today().isoformat(), "device": "cpu", "cpu": cpu_model(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "commit": git_commit(), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"importance-{out['date']}.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs = runs if isinstance(runs, list) else [runs]
    path.write_text(json.dumps(runs + [out], indent=1) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
