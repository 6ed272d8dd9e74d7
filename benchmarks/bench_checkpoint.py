"""lamp-prune on a Llama-3.2-1B-shaped bf16 checkpoint (synthetic weights, 3 shards, ~2.5 GB), on CPU.

Measured in one run, alternating, medians of --repeats:
  * read+write: every shard read and written back in 64 MiB chunks (the floor for any tool that rewrites it)
  * lamp-prune in-process (the job's own wall time) and as a command (interpreter and torch start-up
    included), against the read+write loop in-process and as a command of its own
  * peak resident memory of the command, against the largest shard
  * torchrun with 2 gloo ranks: the output must be byte-identical to the single-process output
  * the layer-local selections (checkpoint_local.py: the per-row rule, row balance, N:M, OWL) as commands:
    wall time and peak resident memory, against the read+write command
Writes benchmarks/results/cpu-checkpoint-<date>.json. Usage: python benchmarks/bench_checkpoint.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
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
from safetensors.torch import save_file

import lamp_kernels
from lamp_kernels.checkpoint import PruneJob, prune_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from machine import git_commit  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SPARSITY = 0.5
LOCAL_CASES = {  # the layer-local selections, by their flags
    "uniform, per row": ["--method", "uniform", "--granularity", "row"],
    "uniform, per row, row balance 0.8": ["--method", "uniform", "--granularity", "row", "--row-balance", "0.8"],
    "erk, 2:4": ["--method", "erk", "--nm", "2:4"],
    "owl, per row": ["--method", "owl", "--granularity", "row"],
}


def llama32_1b_tensors():
    """(name, shape) of Llama-3.2-1B's stored tensors (lm_head is tied to the embeddings, not stored)."""
    yield "model.embed_tokens.weight", (128256, 2048)
    for i in range(16):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (2048,)
        for n, s in (("q_proj", (2048, 2048)), ("k_proj", (512, 2048)), ("v_proj", (512, 2048)),
                     ("o_proj", (2048, 2048))):
            yield p + f"self_attn.{n}.weight", s
        yield p + "post_attention_layernorm.weight", (2048,)
        for n, s in (("gate_proj", (8192, 2048)), ("up_proj", (8192, 2048)), ("down_proj", (2048, 8192))):
            yield p + f"mlp.{n}.weight", s
    yield "model.norm.weight", (2048,)


def llama7b_tensors():
    """(name, shape) of LLaMA-7B's stored tensors (32 blocks, hidden 4096, MLP 11008, untied head): 13.5 GB bf16."""
    yield "model.embed_tokens.weight", (32000, 4096)
    for i in range(32):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (4096,)
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield p + f"self_attn.{n}.weight", (4096, 4096)
        yield p + "post_attention_layernorm.weight", (4096,)
        for n, s in (("gate_proj", (11008, 4096)), ("up_proj", (11008, 4096)), ("down_proj", (4096, 11008))):
            yield p + f"mlp.{n}.weight", s
    yield "model.norm.weight", (4096,)
    yield "lm_head.weight", (32000, 4096)


def make_checkpoint(root: Path, shards: int = 3, tensors=llama32_1b_tensors) -> None:
    g = torch.Generator().manual_seed(0)
    specs = list(tensors())
    total = sum(torch.Size(s).numel() * 2 for _, s in specs)
    per, files, current, size = total / shards, [], {}, 0
    for name, shape in specs:
        current[name] = (torch.randn(shape, generator=g) * 0.02).bfloat16()
        size += current[name].numel() * 2
        if size >= per * (len(files) + 1) or name == specs[-1][0]:
            files.append(current)
            current = {}
    names = [f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))]
    root.mkdir(parents=True)
    weight_map = {}
    for fname, tensors in zip(names, files):
        save_file(tensors, str(root / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in tensors})
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 2048}))


def read_write(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    dst.mkdir()
    for f in sorted(src.iterdir()):
        with open(f, "rb") as a, open(dst / f.name, "wb") as b:
            while chunk := a.read(64 << 20):
                b.write(chunk)
    return time.perf_counter() - t


# Runs a command and prints its peak RSS (KiB) and exit status. The command must be forked by a fresh process:
# a child forked by this one starts with this process's resident size as its peak (fork copies the address
# space, exec keeps the copy's high-water mark in the peak wait4 reports), which hid the command's own.
MEASURE = """import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))"""


def run_command(args: list[str], env=None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a command."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEASURE, *args], env=env, stdout=subprocess.PIPE, text=True,
                         check=True).stdout.split()
    wall = time.perf_counter() - t
    if int(out[-1]) != 0:
        raise RuntimeError(f"{args} failed")
    return wall, int(out[-2]) * 1024


def digest(root: Path) -> dict:
    out = {}
    for f in sorted(root.iterdir()):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(64 << 20):
                h.update(chunk)
        out[f.name] = h.hexdigest()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
    ap.add_argument("--read-write", nargs=2, type=Path, help=argparse.SUPPRESS)  # the baseline as a command
    args = ap.parse_args()
    if args.read_write:
        read_write(*args.read_write)
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="lamp-bench-"))
    src = work / "src"
    try:
        if not src.exists():
            t = time.perf_counter()
            make_checkpoint(src)
            print(f"made {src} in {time.perf_counter() - t:.1f} s")
        shard_sizes = [f.stat().st_size for f in src.glob("*.safetensors")]
        total = sum(shard_sizes)
        rw, rw_cmd, job_s, cmd_s, rss = [], [], [], [], []
        for r in range(args.repeats + 1):  # the first round warms the page cache and is dropped
            for d in ("copy", "copy-cmd", "out", "out-cmd"):
                shutil.rmtree(work / d, ignore_errors=True)
            # Each timed step starts with no dirty pages waiting to be written back, so none pays for
            # another's writes (the page cache still holds the source: all steps read it warm).
            os.sync()
            a = read_write(src, work / "copy")
            job = PruneJob(src, work / "out", SPARSITY, progress=False)
            os.sync()
            t = time.perf_counter()
            report = prune_checkpoint(job)
            b = time.perf_counter() - t
            os.sync()
            c, peak = run_command([sys.executable, "-m", "lamp_kernels", str(src), "--sparsity", str(SPARSITY),
                                   "--out", str(work / "out-cmd"), "--quiet"])
            os.sync()
            d, _ = run_command([sys.executable, __file__, "--read-write", str(src), str(work / "copy-cmd")])
            if r:
                rw_cmd.append(d)
                rw.append(a)
                job_s.append(b)
                cmd_s.append(c)
                rss.append(peak)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        shutil.rmtree(work / "out-2ranks", ignore_errors=True)
        os.sync()
        two_s, _ = run_command([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                "2", "-m", "lamp_kernels", str(src), "--sparsity", str(SPARSITY), "--out",
                                str(work / "out-2ranks"), "--quiet"], env=env)
        identical = digest(work / "out") == digest(work / "out-2ranks") == digest(work / "out-cmd")
        local = {}
        for label, flags in LOCAL_CASES.items():
            walls, peaks = [], []
            for r in range(args.repeats + 1):  # the first round dropped, as above
                shutil.rmtree(work / "out-local", ignore_errors=True)
                os.sync()
                wall, peak = run_command([sys.executable, "-m", "lamp_kernels", str(src), "--sparsity",
                                          str(SPARSITY), "--out", str(work / "out-local"), "--quiet", *flags])
                if r:
                    walls.append(wall)
                    peaks.append(peak)
            local[label] = {"flags": " ".join(flags), "command_s": round(statistics.median(walls), 3),
                            "over_read_write_command": round(statistics.median(walls) / statistics.median(rw_cmd),
                                                             3),
                            "peak_rss_mb": round(max(peaks) / 2**20, 1)}
            print(label, local[label], flush=True)
        med = statistics.median
        commit = git_commit()
        record = {
            "device": f"CPU, {torch.get_num_threads()} threads", "torch": torch.__version__, "commit": commit,
            "date": datetime.date.today().isoformat(), "lamp_kernels": lamp_kernels.__version__,
            "checkpoint": {"shards": len(shard_sizes), "bytes": total, "largest_shard": max(shard_sizes),
                           "tensors_pruned": len(report["layers"]), "weights_pruned": report["pruned"]},
            "read_write_s": round(med(rw), 3), "prune_job_s": round(med(job_s), 3),
            "prune_command_s": round(med(cmd_s), 3),
            "read_write_command_s": round(med(rw_cmd), 3),
            "job_over_read_write": round(med(job_s) / med(rw), 3),
            "command_over_read_write_command": round(med(cmd_s) / med(rw_cmd), 3),
            "peak_rss_mb": round(max(rss) / 2**20, 1), "largest_shard_mb": round(max(shard_sizes) / 2**20, 1),
            "rss_beyond_largest_shard_mb": round((max(rss) - max(shard_sizes)) / 2**20, 1),
            "two_ranks_command_s": round(two_s, 3), "two_ranks_byte_identical": identical,
            "job_timings_s": report["timings_s"], "local_selections": local,
        }
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"cpu-checkpoint-{record['date']}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record, indent=1))
        print(f"written to {path}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
