"""GPU benchmarks of the 'cuda' and 'triton' backends against the official algorithm, on real layer shapes.

Writes benchmarks/results/<device>-<date>.json:
    {"device", "torch", "triton", "commit", "date", "peak_gbs", "copy_gbs",
     "cases": [{"name", "backend", "ours_ms", "baseline", "baseline_ms", "bound_ms", "peak_mem_mb", "note"}]}
ours_ms / baseline_ms: medians of CUDA-event-timed runs after a warm-up; bound_ms: the bytes that must move
at the device's peak HBM bandwidth; peak_mem_mb: the most device memory allocated during one call beyond the
inputs and the outputs. Usage: python benchmarks/bench_gpu.py [--quick] (quick: 2 LLaMA-7B blocks).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from shapes import llama7b, resnet18_cifar, vgg16_cifar  # noqa: E402

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.official import official_lamp_masks, official_layer_scores  # noqa: E402

PEAK_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}  # HBM peaks (SXM parts)


def median_ms(fn, repeats=5):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def peak_extra_mb(fn, output_bytes):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base - output_bytes
    del out
    return max(0.0, peak / 2**20)


def copy_gbs():
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x))
    return 2 * x.numel() / ms / 1e6


def weights_on_gpu(shapes, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [(torch.randn(s, generator=g, device="cuda", dtype=torch.float32) * (2.0 / s[1]) ** 0.5).to(dtype)
            if dtype != torch.float32 else torch.randn(s, generator=g, device="cuda") * (2.0 / s[1]) ** 0.5
            for s in shapes]


def nbytes(ws):
    return sum(w.numel() * w.element_size() for w in ws)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_GBS.items() if k in name), None)
    copy = copy_gbs()
    peak = peak or copy
    cases = []

    def add(case, backend, ours, baseline, baseline_ms, bytes_moved, mem, note=""):
        row = {"name": case, "backend": backend, "ours_ms": round(ours, 3), "baseline": baseline,
               "baseline_ms": None if baseline_ms is None else round(baseline_ms, 3),
               "bound_ms": round(bytes_moved / peak / 1e6, 3), "peak_mem_mb": round(mem, 1), "note": note}
        cases.append(row)
        speed = f"{baseline_ms / ours:.1f}x" if baseline_ms else "-"
        print(f"{case:24s} {backend:7s} {ours:9.3f} ms  baseline {baseline_ms if baseline_ms else '-'} ms ({speed})"
              f"  bound {row['bound_ms']} ms  extra {mem:.0f} MiB {note}", flush=True)

    backends = [b for b in ("cuda", "triton") if b in lk.available_backends()]
    for case, shapes in (("resnet18-fp32-masks", resnet18_cifar()), ("vgg16-fp32-masks", vgg16_cifar())):
        ws = weights_on_gpu(shapes, torch.float32)
        base = median_ms(lambda: official_lamp_masks(ws, 0.9))
        n = sum(w.numel() for w in ws)
        for b in backends:
            ours = median_ms(lambda: lk.prune_masks(ws, 0.9, backend=b))
            # weights read by sort + scan (cuda) or histogram + gather + mask (triton); the masks written
            moved = nbytes(ws) * (2 if b == "cuda" else 3) + n
            add(case, b, ours, "official (per-layer sort+cumsum, cat+topk)", base, moved,
                peak_extra_mb(lambda: lk.prune_masks(ws, 0.9, backend=b), n))
        del ws
    blocks = 2 if args.quick else 32
    shapes = llama7b(blocks)
    ws = weights_on_gpu(shapes, torch.bfloat16)
    n = sum(w.numel() for w in ws)
    if "cuda" in backends:
        def official_scores():
            for w in ws:
                official_layer_scores(w)
        base = median_ms(official_scores, repeats=3)
        ours = median_ms(lambda: lk.lamp_scores(ws, backend="cuda"), repeats=3)
        add(f"llama7b{'-2blocks' if args.quick else ''}-bf16-scores", "cuda", ours,
            "official per-layer sort+cumsum+scatter (its cat+topk cannot run at this size)", base,
            nbytes(ws) + 4 * n, peak_extra_mb(lambda: lk.lamp_scores(ws, backend="cuda"), 4 * n))
    if "triton" in backends:
        ours = median_ms(lambda: lk.prune_masks(ws, 0.5, backend="triton"), repeats=3)
        add(f"llama7b{'-2blocks' if args.quick else ''}-bf16-masks", "triton", ours,
            "none can run (official: > 2^31 scores to concatenate)", None, 2 * nbytes(ws) + n,
            peak_extra_mb(lambda: lk.prune_masks(ws, 0.5, backend="triton"), n))
    del ws
    if "triton" in backends:
        ws = weights_on_gpu(shapes, torch.float32)
        ours = median_ms(lambda: lk.prune_masks(ws, 0.5, backend="triton"), repeats=3)
        add(f"llama7b{'-2blocks' if args.quick else ''}-fp32-masks", "triton", ours,
            "none can run (official: > 2^31 scores to concatenate)", None, 3 * nbytes(ws) + n,
            peak_extra_mb(lambda: lk.prune_masks(ws, 0.5, backend="triton"), n))
        del ws
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    import triton

    date = datetime.date.today().isoformat()
    record = {"device": name, "torch": torch.__version__, "triton": triton.__version__, "commit": commit or "unknown",
              "date": date, "peak_gbs": peak, "copy_gbs": round(copy, 1), "cases": cases}
    out = ROOT / "benchmarks" / "results" / f"{name.replace(' ', '-')}-{date}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
