"""CPU benchmarks: lamp_kernels against the official algorithm on real layer shapes.

Prints a table (median of repeats, speedup over the baseline, achieved GB/s against this machine's measured
copy bandwidth, peak memory beyond inputs and outputs) and writes the rows to
benchmarks/results/cpu-<date>.json. Usage: python benchmarks/bench_cpu.py [--quick] [--skip-llama]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, str(Path(__file__).parent))
import shapes as S  # noqa: E402

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.official import official_lamp_masks, official_layer_scores  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_extra_mb(fn, output_bytes):
    """Peak resident memory during a first call of fn() beyond what was resident before it and the outputs
    it returns. Run in a fresh process (see measure_memory): in a warm one, freed pages stay cached. The heap
    is trimmed first so that memory freed while making the inputs does not hide what the call allocates."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample)
    t.start()
    out = fn()
    done.set()
    t.join()
    peak[0] = max(peak[0], rss_bytes())
    del out
    return max(0.0, (peak[0] - base - output_bytes) / 2**20)


MEMORY_CASES = {
    "vgg16-masks": (S.vgg16_cifar, torch.float32, lambda ws: lk.prune_masks(ws, 0.9), 1),
    "vgg16-scores": (S.vgg16_cifar, torch.float32, lambda ws: lk.lamp_scores(ws), 4),
    "resnet18-masks": (S.resnet18_cifar, torch.float32, lambda ws: lk.prune_masks(ws, 0.9), 1),
    "llama-masks": (S.llama32_1b, torch.bfloat16, lambda ws: lk.prune_masks(ws, 0.5), 1),
}


def measure_memory(case):
    """(extra MiB, ms) of a first call, measured in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, "--memory", case], capture_output=True, text=True, check=True)
    mb, ms = out.stdout.strip().splitlines()[-1].split()
    return float(mb), float(ms)


def copy_bandwidth_gbs():
    """Achieved memory bandwidth of a large tensor copy (bytes read + written per second)."""
    x = torch.empty(256 * 2**20, dtype=torch.uint8).fill_(1)
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x), 5)
    return 2 * x.numel() / (ms / 1e3) / 1e9


def global_unstructured(weights, sparsity):
    holders = []
    for w in weights:
        m = nn.Module()
        m.weight = nn.Parameter(w.clone(), requires_grad=False)
        holders.append(m)
    prune.global_unstructured([(m, "weight") for m in holders], prune.L1Unstructured, amount=sparsity)
    return [m.weight_mask for m in holders]


def nbytes(ws):
    return sum(w.numel() * w.element_size() for w in ws)


def run_cases(quick: bool, skip_llama: bool):
    bw = copy_bandwidth_gbs()
    reps = 3 if quick else 7
    rows = []

    def add(name, ours_ms, baseline, baseline_ms, bytes_moved, mem_mb, note=""):
        rows.append({
            "name": name, "ours_ms": round(ours_ms, 2), "baseline": baseline,
            "baseline_ms": None if baseline_ms is None else round(baseline_ms, 1),
            "speedup": None if baseline_ms is None else round(baseline_ms / ours_ms, 1),
            "gbs": round(bytes_moved / (ours_ms / 1e3) / 1e9, 2),
            "bound_ms": round(bytes_moved / (bw * 1e9) * 1e3, 2),
            "peak_mem_mb": None if mem_mb is None else round(mem_mb, 1), "note": note,
        })

    for model, shapes in (("vgg16", S.vgg16_cifar()), ("resnet18", S.resnet18_cifar())):
        ws = S.make_weights(shapes, torch.float32)
        n = S.numel(shapes)
        # masks: two reads of the weights (summary + mask pass) and one byte written per weight
        ours = median_ms(lambda: lk.prune_masks(ws, 0.9), reps)
        base = median_ms(lambda: official_lamp_masks(ws, 0.9), max(3, reps // 2))
        add(f"{model}-fp32-masks", ours, "official LAMP (sort+cumsum, cat+topk)", base, 2 * nbytes(ws) + n,
            measure_memory(f"{model}-masks")[0])
        ours = median_ms(lambda: lk.prune_masks(ws, 0.9, "global"), reps)
        base = median_ms(lambda: global_unstructured(ws, 0.9), max(3, reps // 2))
        add(f"{model}-fp32-global-masks", ours, "torch prune.global_unstructured", base, 2 * nbytes(ws) + n,
            None)
        # scores: one read, 4 bytes written per weight (the sort's traffic is not counted in the bound)
        ours = median_ms(lambda: lk.lamp_scores(ws), reps)
        base = median_ms(lambda: [official_layer_scores(w) for w in ws], max(3, reps // 2))
        add(f"{model}-fp32-scores", ours, "official per-layer sort+cumsum", base, nbytes(ws) + 4 * n,
            measure_memory("vgg16-scores")[0] if model == "vgg16" else None)

    if not skip_llama:
        shapes = S.llama32_1b()
        ws = S.make_weights(shapes, torch.bfloat16)
        n = S.numel(shapes)
        ours = median_ms(lambda: lk.prune_masks(ws, 0.5), 3)
        mem, first_ms = measure_memory("llama-masks")
        one_block = ws[:7]
        base = median_ms(lambda: official_lamp_masks(one_block, 0.5), 1) if not quick else None
        add("llama3.2-1b-bf16-masks", ours, "official LAMP on 1 of 16 blocks (not run on the whole model)",
            base, 2 * nbytes(ws) + n, mem,
            note=f"first call in a fresh process: {first_ms:.0f} ms (allocating the masks' pages included); "
            + ("baseline_ms is for 1/16 of the model" if base else ""))
        if base is not None:
            rows[-1]["speedup"] = None
        ours = median_ms(lambda: lk.layer_sparsities(ws, 0.5), 3)
        add("llama3.2-1b-bf16-layer-sparsities", ours, "none", None, nbytes(ws), None)
    return bw, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no Llama baseline")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--memory", choices=sorted(MEMORY_CASES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory:
        make, dtype, fn, out_bytes_per_weight = MEMORY_CASES[args.memory]
        shapes = make()
        ws = S.make_weights(shapes, dtype)
        t = time.perf_counter()
        mb = peak_extra_mb(lambda: fn(ws), out_bytes_per_weight * S.numel(shapes))
        print(mb, (time.perf_counter() - t) * 1e3)
        return
    bw, rows = run_cases(args.quick, args.skip_llama)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    record = {"device": f"CPU: {cpu}, {torch.get_num_threads()} threads", "torch": torch.__version__,
              "commit": commit, "date": datetime.date.today().isoformat(), "copy_bandwidth_gbs": round(bw, 2),
              "cases": rows}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"cpu-{record['date']}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{record['device']}, torch {record['torch']}, commit {commit}, copy bandwidth {bw:.1f} GB/s")
    print("| case | ours (ms) | baseline | baseline (ms) | speedup | GB/s | bound (ms) | extra mem (MiB) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['ours_ms']} | {r['baseline']} | {r['baseline_ms'] if r['baseline_ms'] else '-'} | "
              f"{str(r['speedup']) + 'x' if r['speedup'] else '-'} | {r['gbs']} | {r['bound_ms']} | "
              f"{r['peak_mem_mb'] if r['peak_mem_mb'] is not None else '-'} |")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
