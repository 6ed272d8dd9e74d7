"""GPU benchmarks of the compiled paths against the official algorithm, on real layer shapes.

Every case is verified before it is timed: its result is compared with the CPU backend's on the same weights
(the CPU backend equals the reference bit for bit in the test suite; the reference itself is too slow at
these sizes), and each row records what it was verified against and whether it matched. A case that does
not match is recorded as such, and not timed.

    resnet18-fp32-masks, vgg16-fp32-masks   backend None (Triton kernels) and 'cuda', vs the official LAMP
    llama7b-bf16-scores                      lamp_scores (the CUDA library) vs the official per-layer sort +
                                             cumsum + scatter (its cat + topk cannot run at this size)
    llama7b-bf16-masks, llama7b-fp32-masks   backend None (bf16: the CUDA library's shared-memory histogram)
                                             and 'triton' (every pass in Triton), 224 layers resident (6.5B
                                             weights); no baseline can run (the official concatenation
                                             exceeds 2^31 scores)
    llama3.2-1b-checkpoint                   `lamp-prune --device cuda` on a Llama-3.2-1B-shaped bf16
                                             checkpoint written here, vs a plain read+write of its shards
                                             (--full: a LLaMA-7B-shaped 13 GB checkpoint)

Times are medians of CUDA-event-timed runs after a warm-up. bound_ms: the bytes that must move at the
device's measured copy bandwidth; peak_mem_mib: the most device memory allocated during one call beyond
inputs and outputs. --quick: 2 LLaMA blocks, no fp32 LLaMA, no checkpoint. --dry-run: CPU tensors, tiny
shapes, host timers; checks this script's own logic on a machine without a GPU.

Usage: python benchmarks/bench_gpu.py [--quick | --full | --dry-run] [--out DIR]
Writes benchmarks/results/<device>-<date>.json (and a copy in DIR); a dry run writes only to DIR.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from shapes import llama7b, make_weights, numel, resnet18_cifar, vgg16_cifar  # noqa: E402

import lamp_kernels as lk  # noqa: E402
from lamp_kernels.official import official_lamp_masks, official_layer_scores  # noqa: E402

PEAK_GBS = {"H200": 4800.0, "H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H100": 3350.0, "A100": 2039.0}


class Timer:
    """Median milliseconds of fn(): CUDA events on a GPU, a host clock in a dry run."""

    def __init__(self, gpu: bool):
        self.gpu = gpu

    def sync(self):
        if self.gpu:
            torch.cuda.synchronize()

    def median_ms(self, fn, repeats: int = 5) -> float:
        fn()
        self.sync()
        times = []
        for _ in range(repeats):
            if self.gpu:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - t))
        return statistics.median(times)

    def peak_extra_mib(self, fn, output_bytes: int) -> float | None:
        if not self.gpu:
            return None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base - output_bytes
        del out
        return round(max(0.0, peak / 2**20), 1)


def nbytes(ws) -> int:
    return sum(w.numel() * w.element_size() for w in ws)


def copy_gbs(gpu: bool) -> float:
    n = 1 << (30 if gpu else 26)
    x = torch.empty(n, dtype=torch.uint8, device="cuda" if gpu else "cpu")
    y = torch.empty_like(x)
    ms = Timer(gpu).median_ms(lambda: y.copy_(x))
    return 2 * n / ms / 1e6


def to_device(ws, device):
    return [w.to(device) for w in ws]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(a, b))


class Bench:
    def __init__(self, args):
        self.gpu = not args.dry_run
        self.device = "cuda" if self.gpu else "cpu"
        self.timer = Timer(self.gpu)
        self.copy = copy_gbs(self.gpu)
        name = torch.cuda.get_device_name() if self.gpu else "dry-run (CPU tensors)"
        self.device_name = name
        self.peak = next((v for k, v in PEAK_GBS.items() if k in name), None)
        self.rows: list[dict] = []

    def add(self, case: str, backend: str, ours_ms: float | None, baseline: str, baseline_ms: float | None,
            bytes_moved: int, mem: float | None, verified_against: str, verified: bool, note: str = ""):
        bound = bytes_moved / self.copy / 1e6
        row = {"name": case, "backend": backend, "verified_against": verified_against, "verified": verified,
               "ours_ms": None if ours_ms is None else round(ours_ms, 3), "baseline": baseline,
               "baseline_ms": None if baseline_ms is None else round(baseline_ms, 3),
               "speedup": round(baseline_ms / ours_ms, 1) if baseline_ms and ours_ms else None,
               "bytes_moved": bytes_moved, "bound_ms": round(bound, 3),
               "fraction_of_copy_bandwidth": round(bound / ours_ms, 3) if ours_ms else None,
               "fraction_of_peak_hbm": round(bytes_moved / self.peak / 1e6 / ours_ms, 3)
               if ours_ms and self.peak else None,
               "peak_mem_mib": mem, "note": note}
        self.rows.append(row)
        status = "ok" if verified else "MISMATCH (not timed)"
        print(f"{case:26s} {backend:8s} {'-' if ours_ms is None else f'{ours_ms:9.3f}':>9} ms  "
              f"baseline {'-' if baseline_ms is None else f'{baseline_ms:.3f}'} ms  bound {bound:.3f} ms  "
              f"extra {mem} MiB  verified vs {verified_against}: {status} {note}", flush=True)

    # --- cases -----------------------------------------------------------------------------------------

    def small_models(self):
        # On a GPU, None is the Triton path (the ops' CUDA kernels); in a dry run Triton runs interpreted.
        backends = [None, "cuda"] if self.gpu else [None, "triton"]
        models = (("resnet18-fp32-masks", resnet18_cifar()), ("vgg16-fp32-masks", vgg16_cifar()))
        for case, shapes in models:
            if not self.gpu:
                shapes = shapes[:3]
            host = make_weights(shapes, torch.float32)
            ws = to_device(host, self.device)
            want = lk.prune_masks(host, 0.9, backend="cpu")
            base = self.timer.median_ms(lambda: official_lamp_masks(ws, 0.9))
            n = numel(shapes)
            for b in backends:
                ok = same(lk.prune_masks(ws, 0.9, backend=b), want)
                ours = self.timer.median_ms(lambda: lk.prune_masks(ws, 0.9, backend=b)) if ok else None
                # the summary path reads the weights 3 times (histogram, gather, mask); the sort path twice
                moved = nbytes(ws) * (2 if b == "cuda" else 3) + n
                mem = self.timer.peak_extra_mib(lambda: lk.prune_masks(ws, 0.9, backend=b), n) if ok else None
                self.add(case, b or "default", ours, "official LAMP (per-layer sort+cumsum, cat+topk)", base,
                         moved, mem, "cpu backend masks", ok)

    def llama_scores(self, blocks: int):
        shapes = llama7b(blocks) if self.gpu else [(64, 64), (172, 64)]
        ws = self.weights(shapes, torch.bfloat16)
        n = numel(shapes)
        case = f"llama7b{'' if blocks == 32 else f'-{blocks}blocks'}-bf16-scores"
        if not self.gpu:
            case = "tiny-bf16-scores"
        got = lk.lamp_scores(ws)
        sample = sorted({0, len(ws) // 2, len(ws) - 1})  # one layer of each place; the CPU is slow at 6.5B
        want = lk.lamp_scores([ws[i].cpu() for i in sample], backend="cpu")
        ok = same([got[i] for i in sample], want)
        del got

        def official():
            for w in ws:
                official_layer_scores(w)

        base = self.timer.median_ms(official, repeats=3)
        ours = self.timer.median_ms(lambda: lk.lamp_scores(ws), repeats=3) if ok else None
        mem = self.timer.peak_extra_mib(lambda: lk.lamp_scores(ws), 4 * n) if ok else None
        self.add(case, "cuda" if self.gpu else "cpu", ours, "official per-layer sort+cumsum+scatter", base,
                 nbytes(ws) + 4 * n, mem, f"cpu backend scores of layers {sample}", ok)

    def llama_masks(self, blocks: int, dtype: torch.dtype):
        shapes = llama7b(blocks) if self.gpu else [(64, 64), (172, 64)]
        ws = self.weights(shapes, dtype)
        n = numel(shapes)
        tag = "bf16" if dtype == torch.bfloat16 else "fp32"
        case = f"llama7b{'' if blocks == 32 else f'-{blocks}blocks'}-{tag}-masks" if self.gpu else f"tiny-{tag}-masks"
        host = [w.cpu() for w in ws]
        want = lk.prune_masks(host, 0.5, backend="cpu")
        del host
        passes = 2 if dtype == torch.bfloat16 else 3  # histogram (+ gather for fp32) + mask pass
        # default: the ops (bf16: the CUDA library's shared-memory histogram); triton: Triton for every pass
        for backend in (None, "triton"):
            got = lk.prune_masks(ws, 0.5, backend=backend)
            ok = same(got, want)
            del got
            ours = self.timer.median_ms(lambda: lk.prune_masks(ws, 0.5, backend=backend), repeats=3) if ok else None
            mem = self.timer.peak_extra_mib(lambda: lk.prune_masks(ws, 0.5, backend=backend), n) if ok else None
            self.add(case, backend or "default", ours, "none can run (official: > 2^31 scores to concatenate)", None,
                     passes * nbytes(ws) + n, mem, "cpu backend masks, every layer", ok,
                     "gather pass reads only layers whose cut falls inside a bin" if dtype == torch.float32 else "")

    def weights(self, shapes, dtype):
        if not self.gpu:
            return make_weights(shapes, dtype)
        g = torch.Generator(device="cuda").manual_seed(0)
        return [(torch.randn(s, generator=g, device="cuda") * (2.0 / s[1]) ** 0.5).to(dtype) for s in shapes]

    def checkpoint(self, full: bool):
        from bench_checkpoint import llama7b_tensors, llama32_1b_tensors, make_checkpoint

        with tempfile.TemporaryDirectory(dir=os.environ.get("LAMP_BENCH_TMP")) as tmp:
            root = Path(tmp)
            src = root / "ckpt"
            make_checkpoint(src, shards=3, tensors=llama7b_tensors if full else llama32_1b_tensors)
            size = sum(f.stat().st_size for f in src.glob("*.safetensors"))

            def read_write():
                for f in sorted(src.glob("*.safetensors")):
                    with open(f, "rb") as a, open(root / "copy", "wb") as b:
                        while chunk := a.read(64 << 20):
                            b.write(chunk)
                (root / "copy").unlink()

            def prune(device: str, out: Path) -> float:
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "lamp_kernels", str(src), "--sparsity", "0.5", "--out",
                                str(out), "--device", device, "--quiet"], check=True, cwd=ROOT)
                return 1e3 * (time.perf_counter() - t)

            prune("cpu", root / "out-cpu")
            prune(self.device, root / "out-dev")
            ok = all((root / "out-cpu" / f.name).read_bytes() == f.read_bytes()
                     for f in sorted((root / "out-dev").glob("*.safetensors")))
            rw, ours = [], []
            for _ in range(3):  # alternate, so both see the same page-cache state
                t = time.perf_counter()
                read_write()
                rw.append(1e3 * (time.perf_counter() - t))
                ours.append(prune(self.device, root / "out-dev"))
            self.add("llama7b-checkpoint" if full else "llama3.2-1b-checkpoint", f"lamp-prune --device {self.device}",
                     statistics.median(ours) if ok else None, "plain read+write of the shards (64 MiB chunks)",
                     statistics.median(rw), 2 * size, None, "lamp-prune --device cpu output, byte for byte", ok,
                     "command wall time incl. interpreter start; ratio to read+write is the goal")


def main():
    ap = argparse.ArgumentParser()
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no GPU: use --dry-run")
    if args.dry_run:  # Triton kernels on CPU tensors (chosen when the kernels are first imported)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    bench = Bench(args)
    print(f"device: {bench.device_name}; copy bandwidth {bench.copy:.0f} GB/s; peak {bench.peak} GB/s", flush=True)
    blocks = 2 if args.quick or args.dry_run else 32
    cases = [bench.small_models, lambda: bench.llama_scores(blocks), lambda: bench.llama_masks(blocks, torch.bfloat16)]
    if not args.quick:
        cases.append(lambda: bench.llama_masks(blocks, torch.float32))
        if bench.gpu:
            cases.append(lambda: bench.checkpoint(args.full))
    errors = []
    for case in cases:  # one failing case is recorded and the others still run
        try:
            case()
        except Exception as exc:  # noqa: BLE001 -- the record says what failed
            errors.append(f"{type(exc).__name__}: {exc}"[:2000])
            print(f"!! case failed: {errors[-1]}", flush=True)
        if bench.gpu:
            torch.cuda.empty_cache()
    import triton

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    date = datetime.date.today().isoformat()
    record = {"device": bench.device_name, "torch": torch.__version__, "cuda": torch.version.cuda,
              "triton": triton.__version__, "commit": commit, "date": date, "mode":
              "dry-run" if args.dry_run else "quick" if args.quick else "full" if args.full else "default",
              "peak_hbm_gbs": bench.peak, "copy_gbs": round(bench.copy, 1), "cases": bench.rows, "errors": errors}
    if bench.gpu:
        from lamp_kernels import cuda_library

        record["cuda_library"] = cuda_library.info()
    text = json.dumps(record, indent=1) + "\n"
    slug = bench.device_name.replace(" ", "-").replace("/", "-")
    name = f"{'dry-run' if args.dry_run else slug}-{date}{'-quick' if args.quick else ''}.json"
    if not args.dry_run:
        (ROOT / "benchmarks" / "results" / name).write_text(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_text(text)
    print(f"wrote {name}")
    return 1 if errors or not all(r["verified"] for r in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
