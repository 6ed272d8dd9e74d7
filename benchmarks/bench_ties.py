"""prune_masks on SmolLM2-135M's 210 block weights (106M float32 values de-quantised from Q4_1, so heavily tied:
17-50 weights per distinct |w| in a layer) against the same call on the same weights with a tiny random
jitter that breaks every tie. Question: do ties this heavy slow the exact selection down? Goal: lamp and
global within 2x of the jittered time.

The jitter keeps the order of distinct magnitudes and moves each weight as little as float32 allows: inside
each layer, the |w| bit patterns are sorted with a random order among equal values and then raised just
enough to become strictly increasing (a running max of key - rank, plus the rank), so a run of c equal values
becomes c consecutive floats. Every |w| in a layer is then distinct (checked); exact zeros become tiny
subnormals. On SmolLM2 that is ~80 ulps on average, a few hundred at most, and a relative change below 1e-4
(printed).

For each method: median of --repeats calls, tied and jittered calls alternating (so background load hits both
alike); 50% sparsity, the CPU backend, default threads. Wall time and the process's CPU time (all threads)
are both recorded: on a shared machine the CPU time is the steadier measure of the work done.
Writes benchmarks/results/ties-cpu-<date>.json.

    python benchmarks/bench_ties.py [--repeats 5] [--sparsity 0.5]
Needs the converted checkpoint (examples/smollm2.py; `make demo` makes it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

import lamp_kernels as lk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import smollm2  # noqa: E402
from machine import cpu_model, git_commit  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def block_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The 210 block Linear weights, in checkpoint order (shard by shard, as lamp-prune orders them)."""
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(checkpoint / shard), "pt") as f:
            for name in f.keys():
                if re.match(smollm2.BLOCK_WEIGHT, name):
                    out[name] = f.get_tensor(name)
    return out


def break_ties(w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """w with every |w| made distinct by the smallest raise of its bit pattern that keeps the order of distinct
    values (equal values ordered at random). Float32, finite, non-negative bit patterns are monotone in |w|."""
    bits = w.abs().view(torch.int32).flatten().long()
    order = torch.randperm(bits.numel(), generator=generator)
    order = order[torch.sort(bits[order], stable=True).indices]  # by |w|, random among equals
    rank = torch.arange(bits.numel())
    raised = torch.cummax(bits[order] - rank, 0).values + rank  # strictly increasing, >= the original
    new = torch.empty_like(bits)
    new[order] = raised
    return torch.copysign(new.int().view(torch.float32).view(w.shape), w)


def distinct_fraction(ws: dict[str, torch.Tensor]) -> float:
    return sum(w.abs().unique().numel() for w in ws.values()) / sum(w.numel() for w in ws.values())


def device_name() -> str:
    return f"CPU: {cpu_model()}, {torch.get_num_threads()} threads"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--methods", nargs="+", default=list(lk.METHODS))
    args = ap.parse_args(argv)

    tied = block_weights(smollm2.checkpoint_dir())
    g = torch.Generator().manual_seed(0)
    jittered = {k: break_ties(w, g) for k, w in tied.items()}
    worst = max(((j - w).abs() / w.abs().clamp_min(1e-30)).max().item()
                for w, j in zip(tied.values(), jittered.values()) if w.count_nonzero())
    assert all(j.abs().unique().numel() == j.numel() for j in jittered.values()), "a tie survived the jitter"
    values = sum(w.numel() for w in tied.values())
    load_at_start = os.getloadavg()[0]
    print(f"{len(tied)} block weights, {values} values; distinct |w| per value: tied {distinct_fraction(tied):.4f}, "
          f"jittered 1.0 (largest relative change {worst:.2e}); load average {load_at_start:.2f}", flush=True)

    rows = []
    for method in args.methods:
        wall, cpu = {"tied": [], "jittered": []}, {"tied": [], "jittered": []}
        for _ in range(args.repeats):
            for name, ws in (("tied", tied), ("jittered", jittered)):
                t, c = time.perf_counter(), time.process_time()
                lk.prune_masks(ws, args.sparsity, method)
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        row = {"method": method, "tied_s": round(med["tied"], 3), "jittered_s": round(med["jittered"], 3),
               "ratio": round(med["tied"] / med["jittered"], 2),
               "tied_cpu_s": round(med_cpu["tied"], 3), "jittered_cpu_s": round(med_cpu["jittered"], 3),
               "cpu_ratio": round(med_cpu["tied"] / med_cpu["jittered"], 2),
               "tied_all_s": [round(x, 3) for x in wall["tied"]],
               "jittered_all_s": [round(x, 3) for x in wall["jittered"]]}
        rows.append(row)
        print(f"{method:13s} wall: tied {row['tied_s']:.3f} s, jittered {row['jittered_s']:.3f} s, "
              f"ratio {row['ratio']:.2f} | cpu time (all threads): tied {row['tied_cpu_s']:.3f} s, "
              f"jittered {row['jittered_cpu_s']:.3f} s, ratio {row['cpu_ratio']:.2f}", flush=True)

    commit = git_commit()
    record = {"question": "prune_masks on 106M heavily tied float32 weights vs the same weights with every tie "
                          "broken by a tiny jitter", "model": "SmolLM2-135M-Instruct (Q4_1 de-quantised), 210 "
                          "block Linear weights", "values": values, "sparsity": args.sparsity,
              "repeats": args.repeats, "device": device_name(), "torch": torch.__version__,
              "lamp_kernels": lk.__version__, "backends": lk.available_backends(), "commit": commit,
              "date": datetime.date.today().isoformat(), "load_average_start": round(load_at_start, 2),
              "load_average_end": round(os.getloadavg()[0], 2),
              "distinct_fraction_tied": round(distinct_fraction(tied), 5), "cases": rows}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ties-cpu-{record['date']}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{record['device']}, torch {record['torch']}, commit {commit}; written to {path}")
    return record


if __name__ == "__main__":
    main()
