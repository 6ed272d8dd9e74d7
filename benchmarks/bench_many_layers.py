"""Many tiny layers: time and memory of prune_masks on 10,000 layers of 9 weights (goal: < 1 s, < 200 MiB),
per method and dtype, against the reference backend. Sparse summaries make a layer cost its size.

Usage: python benchmarks/bench_many_layers.py   (prints a table; each run in a fresh process for memory)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch, lamp_kernels as lk
dtype, method, backend = getattr(torch, sys.argv[1]), sys.argv[2], sys.argv[3]
layers = [t.to(dtype) for t in torch.randn(10_000, 3, 3, generator=torch.Generator().manual_seed(0)).unbind(0)]
lk.prune_masks(layers[:4], 0.5, method, backend=backend)  # warm up: first-call costs out of the figure
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
masks = lk.prune_masks(layers, 0.5, method, backend=backend)
seconds = time.perf_counter() - start
extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"seconds": seconds, "extra_mib": extra, "pruned": sum(int((~m).sum()) for m in masks)}))
"""


def run(dtype: str, method: str, backend: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, dtype, method, backend], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{'dtype':9} {'method':8} {'cpu s':>7} {'MiB':>6} {'reference s':>12}")
    for dtype in ("float32", "bfloat16"):
        for method in ("lamp", "global", "uniform", "erk"):
            ours, ref = run(dtype, method, "cpu"), run(dtype, method, "reference")
            assert ours["pruned"] == ref["pruned"]
            print(f"{dtype:9} {method:8} {ours['seconds']:7.3f} {ours['extra_mib']:6.1f} {ref['seconds']:12.3f}")
    print(f"peak RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
