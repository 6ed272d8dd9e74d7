"""CPU benchmarks: lamp_kernels against the official algorithm on real layer shapes, on a quiet machine and with one
core busy.

Every compiled-path case is timed quiet and beside a spin-loop process that this script starts and stops itself
(one core busy), in alternating rounds (quiet, busy, quiet, ...) so that a drift of the machine's speed during the
run falls on both; the medians over all rounds are compared. While busy, the CPU time this process and the spin
loop each got is recorded (in CPUs: CPU seconds per second): the scheduler's split of the machine. Each case also
times a memcpy of the same bytes (what the case must read and write at least, copied in chunks of at most 512 MiB
between buffers allocated beforehand), so its GB/s is put next to the machine's copy speed measured in the same
run. Extra memory is the peak resident memory of a first call in a fresh process, beyond what was resident before
and the outputs it returns.

Prints a table and writes the rows to benchmarks/results/cpu-<date>.json (cpu-<date>-<commit>.json when another
commit's run of that day is there), with the machine's load average
before and after the run (figures are only comparable on a quiet machine).
Usage: python benchmarks/bench_cpu.py [--quick] [--skip-llama] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
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
from machine import cpu_model, git_commit  # noqa: E402

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.official import official_lamp_masks, official_layer_scores  # noqa: E402

RESULTS = Path(__file__).parent / "results"
COPY_CHUNK = 512 * 2**20


def times_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def median_ms(fn, repeats):
    fn()  # warm-up
    return statistics.median(times_ms(fn, repeats))


class BusyCore:
    """A spin-loop process on one core for the duration of a with-block."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # let it start spinning
        return self

    def cpu_seconds(self):
        """CPU time the spin loop has had so far (its schedstat: nanoseconds on a CPU)."""
        return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[0]) / 1e9

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def quiet_and_busy(fn, repeats, rounds=3):
    """(quiet median ms, busy median ms, CPUs this process got while busy, CPUs the spin loop got), over
    `rounds` alternating rounds of ceil(repeats / rounds) calls each way."""
    per_round = -(-repeats // rounds)
    fn()  # warm-up
    quiet, busy, wall, own, spin = [], [], 0.0, 0.0, 0.0
    for _ in range(rounds):
        quiet += times_ms(fn, per_round)
        with BusyCore() as core:
            fn()  # the first call after the spin loop starts: the scheduler settles
            t, c, sc = time.perf_counter(), time.process_time(), core.cpu_seconds()  # (all of this process's threads)
            busy += times_ms(fn, per_round)
            wall += time.perf_counter() - t
            own += time.process_time() - c
            spin += core.cpu_seconds() - sc
    return statistics.median(quiet), statistics.median(busy), own / wall, spin / wall


def memcpy_ms(total_bytes, repeats=5):
    """Time to copy total_bytes / 2 bytes (total_bytes read + written), in chunks of at most 512 MiB."""
    half = max(1, total_bytes // 2)
    chunk = min(half, COPY_CHUNK)
    src = torch.empty(chunk, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src).fill_(0)
    full, rest = divmod(half, chunk)

    def copy():
        for _ in range(full):
            dst.copy_(src)
        if rest:
            dst[:rest].copy_(src[:rest])

    return median_ms(copy, repeats)


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


def llama_mlp():
    return [(8192, 2048)]


# name -> (shapes, dtype, call, output bytes per weight)
MODELS = {
    "llama3.2-1b-mlp-bf16": (llama_mlp, torch.bfloat16),
    "llama3.2-1b-mlp-fp32": (llama_mlp, torch.float32),
    "vgg16-fp32": (S.vgg16_cifar, torch.float32),
    "resnet18-fp32": (S.resnet18_cifar, torch.float32),
    "llama3.2-1b-bf16": (S.llama32_1b, torch.bfloat16),
}
CALLS = {
    "scores": (lambda ws: lk.lamp_scores(ws), 4),
    "masks": (lambda ws: lk.prune_masks(ws, 0.9 if ws[0].dtype == torch.float32 else 0.5), 1),
}


def measure_memory(model, task):
    """Extra MiB of a first call, measured in a fresh interpreter."""
    out = subprocess.run([sys.executable, __file__, "--memory", model, task], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


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


def index_budget_mb(ws):
    """Twice the largest layer's keys and 32-bit indices: the extra memory allowed to the scores."""
    w = max(ws, key=lambda t: t.numel())
    return 2 * w.numel() * (w.element_size() + 4) / 2**20


def run_cases(quick: bool, skip_llama: bool, only: list[str] | None):
    reps = 3 if quick else 7
    rows = []

    def add(name, fn, bytes_moved, baseline=None, baseline_fn=None, baseline_reps=3, memory=None, budget=None,
            note="", repeats=reps):
        if only and not any(o in name for o in only):
            return
        print(f"{name} ...", flush=True)
        ours, busy, own_cpus, spin_cpus = quiet_and_busy(fn, repeats, 1 if quick else 3)
        base_ms = median_ms(baseline_fn, baseline_reps) if baseline_fn is not None and not quick else None
        copy = memcpy_ms(bytes_moved)
        rows.append({
            "name": name, "ours_ms": round(ours, 2), "busy_ms": round(busy, 2), "busy_ratio": round(busy / ours, 2),
            "baseline": baseline, "baseline_ms": None if base_ms is None else round(base_ms, 1),
            "speedup": None if base_ms is None else round(base_ms / ours, 1),
            "bytes": bytes_moved, "gbs": round(bytes_moved / (ours / 1e3) / 1e9, 2),
            "memcpy_ms": round(copy, 2), "memcpy_gbs": round(bytes_moved / (copy / 1e3) / 1e9, 2),
            "x_memcpy": round(ours / copy, 1), "peak_mem_mb": None if memory is None else round(memory, 1),
            "mem_budget_mb": None if budget is None else round(budget, 1),
            "busy_cpus_ours": round(own_cpus, 2), "busy_cpus_spin_loop": round(spin_cpus, 2), "note": note,
        })
        r = rows[-1]
        print(f"  {r['ours_ms']} ms quiet, {r['busy_ms']} ms busy ({r['busy_ratio']}x; CPUs: ours {own_cpus:.2f}, "
              f"spin loop {spin_cpus:.2f}), baseline {r['baseline_ms']} "
              f"ms, {r['gbs']} GB/s vs memcpy {r['memcpy_gbs']} GB/s, extra {r['peak_mem_mb']} MiB", flush=True)

    def scores_case(model, baseline_reps=3, repeats=reps, note=""):
        if only and not any(o in f"{model}-scores" for o in only):
            return
        shapes, dtype = MODELS[model]
        ws = S.make_weights(shapes(), dtype)
        n = sum(w.numel() for w in ws)
        # one read of the weights, four bytes written per weight (the scores)
        add(f"{model}-scores", lambda: lk.lamp_scores(ws), nbytes(ws) + 4 * n, "official per-layer sort+cumsum",
            lambda: [official_layer_scores(w) for w in ws], baseline_reps,
            measure_memory(model, "scores"), index_budget_mb(ws), note, repeats)

    scores_case("llama3.2-1b-mlp-bf16")
    scores_case("llama3.2-1b-mlp-fp32")
    for model in ("vgg16-fp32", "resnet18-fp32"):
        scores_case(model)
        if only and not any(o in f"{model}-masks" for o in only):
            continue
        shapes, dtype = MODELS[model]
        ws = S.make_weights(shapes(), dtype)
        n = sum(w.numel() for w in ws)
        # masks: two reads of the weights (summary + mask pass) and one byte written per weight
        add(f"{model}-masks", lambda: lk.prune_masks(ws, 0.9), 2 * nbytes(ws) + n,
            "official LAMP (sort+cumsum, cat+topk)", lambda: official_lamp_masks(ws, 0.9), 3,
            measure_memory(model, "masks"))
        add(f"{model}-global-masks", lambda: lk.prune_masks(ws, 0.9, "global"), 2 * nbytes(ws) + n,
            "torch prune.global_unstructured", lambda: global_unstructured(ws, 0.9), 3)

    if not skip_llama:
        model = "llama3.2-1b-bf16"
        scores_case(model, baseline_reps=1, repeats=3)
        if not only or any(o in f"{model}-masks" for o in only):
            ws = S.make_weights(S.llama32_1b(), torch.bfloat16)
            n = sum(w.numel() for w in ws)
            add(f"{model}-masks", lambda: lk.prune_masks(ws, 0.5), 2 * nbytes(ws) + n,
                "official LAMP on 1 of 16 blocks (not run on the whole model)",
                lambda: official_lamp_masks(ws[:7], 0.5), 1, measure_memory(model, "masks"), repeats=3,
                note="baseline_ms is for 1/16 of the model; no speedup claimed")
            if rows and rows[-1]["name"] == f"{model}-masks":
                rows[-1]["speedup"] = None
            add(f"{model}-layer-sparsities", lambda: lk.layer_sparsities(ws, 0.5), nbytes(ws), repeats=3)
    return rows


def load_average():
    return round(os.getloadavg()[0], 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no baselines")
    ap.add_argument("--skip-llama", action="store_true", help="skip the whole-model Llama cases")
    ap.add_argument("--only", nargs="*", help="run the cases whose name contains one of these")
    ap.add_argument("--memory", nargs=2, metavar=("MODEL", "TASK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory:
        model, task = args.memory
        shapes, dtype = MODELS[model]
        fn, out_bytes_per_weight = CALLS[task]
        ws = S.make_weights(shapes(), dtype)
        print(peak_extra_mb(lambda: fn(ws), out_bytes_per_weight * sum(w.numel() for w in ws)))
        return
    load_before = load_average()
    rows = run_cases(args.quick, args.skip_llama, args.only)
    record = {"device": f"CPU: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "commit": git_commit(), "date": datetime.date.today().isoformat(),
              "load_average_before": load_before, "load_average_after": load_average(), "cases": rows}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"cpu-{record['date']}.json"
    if path.exists() and json.loads(path.read_text()).get("commit") != record["commit"]:
        path = RESULTS / f"cpu-{record['date']}-{record['commit']}.json"  # another commit's run of the day stays
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{record['device']}, torch {record['torch']}, commit {record['commit']}, "
          f"1-minute load {load_before} before, {record['load_average_after']} after")
    print("| case | ours (ms) | one core busy (ms) | baseline | baseline (ms) | speedup | GB/s | memcpy GB/s "
          "| extra memory (MiB) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        mem = "–" if r["peak_mem_mb"] is None else str(r["peak_mem_mb"])
        if r["mem_budget_mb"] is not None:
            mem += f" (≤ {r['mem_budget_mb']})"
        print(f"| {r['name']} | {r['ours_ms']} | {r['busy_ms']} ({r['busy_ratio']}×) | {r['baseline'] or '–'} | "
              f"{r['baseline_ms'] if r['baseline_ms'] else '–'} | "
              f"{str(r['speedup']) + '×' if r['speedup'] else '–'} | {r['gbs']} | {r['memcpy_gbs']} | {mem} |")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
