"""Prune a safetensors checkpoint on disk with bounded memory (the `lamp-prune` command's engine).

Pass 1 reads the selected tensors one at a time into per-layer summaries (selection.py); the solver picks
one cut per tensor (fp32/fp64 tensors whose cut falls inside a bin are read once more for that bin's keys);
pass 2 writes every shard front to back, zeroing each selected tensor by its cut in place. Peak memory is the
largest tensor plus the sparse summaries (the bins each tensor occupies). Under torch.distributed the shards
are split over the ranks, one selection spans them all, and each rank writes its own shards.

Safety: the source is only read; output goes to a temporary path beside the destination and is renamed
into place at the end; on any error the temporary output is removed and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__, ops, selection
from .api import METHODS
from .layers import check_sparsity
from .safetensors_io import (
    FLOAT_DTYPES,
    INDEX_NAME,
    Checkpoint,
    CheckpointError,
    TensorEntry,
    with_mapped,
    write_shard,
)

# Not pruned unless asked for: token/position embeddings and the output head.
DEFAULT_EXCLUDE = r"embed|(^|\.)(wte|wpe)\.|lm_head"


def select(entries: Sequence[TensorEntry], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list:
    """Default: floating tensors with >= 2 dims named *.weight, minus DEFAULT_EXCLUDE. --include patterns
    replace that rule (re.search on the name); --exclude patterns remove names. A selected tensor that is
    not floating is an error."""
    chosen = []
    for e in entries:
        if include:
            take = any(re.search(p, e.name) for p in include)
        else:
            take = (e.dtype in FLOAT_DTYPES and len(e.shape) >= 2 and e.name.endswith(".weight")
                    and not re.search(DEFAULT_EXCLUDE, e.name))
        if take and not any(re.search(p, e.name) for p in exclude):
            if e.dtype not in FLOAT_DTYPES:
                raise CheckpointError(f"{e.file}: tensor {e.name} is {e.dtype}, not a floating type")
            chosen.append(e)
    return chosen


def split_shards(shards, world: int) -> list[list[int]]:
    """Shard indices per rank, balancing bytes (largest first, to the lightest rank)."""
    loads, owned = [0] * world, [[] for _ in range(world)]
    for i in sorted(range(len(shards)), key=lambda i: (-shards[i].size, i)):
        r = min(range(world), key=lambda r: (loads[r], r))
        loads[r] += shards[i].size
        owned[r].append(i)
    return [sorted(o) for o in owned]


@dataclass
class _Progress:
    bar: object = None
    done: int = 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)


@dataclass
class PruneJob:
    src: Path
    dst: Path | None
    sparsity: float
    method: str = "lamp"
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    device: str = "auto"
    dry_run: bool = False
    force: bool = False
    progress: bool = True
    group: object = None
    timings: dict = field(default_factory=dict)
    # name, tensor -> the importance the selection ranks instead of |w| (e.g. Wanda's, from calibration norms);
    # computed per tensor when needed, never kept. None: magnitude.
    importance: Callable[[str, torch.Tensor], torch.Tensor] | None = None

    def check(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        if self.method not in METHODS:
            raise CheckpointError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda") or (self.device == "cuda" and not torch.cuda.is_available()):
            raise CheckpointError(f"device {self.device!r} is not available here")
        if self.dry_run:
            return
        if self.dst is None:
            raise CheckpointError("--out is required (or use --dry-run)")
        src, dst = self.src.resolve(), self.dst.resolve()
        if dst == src or src in dst.parents:
            raise CheckpointError(f"{self.dst}: the output must not be the source or inside it")
        if dst.exists() and not self.force:
            raise CheckpointError(f"{self.dst} exists; pass --force to replace it")


def _rank_world(group) -> tuple[int, int]:
    if group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(group), dist.get_world_size(group)


def _agree(fn, group):
    """Run fn() on every rank and raise everywhere if it failed anywhere (distributed.agree_on_errors)."""
    if group is None:
        return fn()
    from .distributed import agree_on_errors

    return agree_on_errors(fn, group)


def prune_checkpoint(job: PruneJob) -> dict:
    """Run the job; returns the report (also on every rank under torch.distributed)."""
    t0 = time.perf_counter()
    rank, world = _rank_world(job.group)
    ckpt, chosen, mine = _agree(lambda: _open(job, rank, world), job.group)
    written = 0 if job.dry_run else sum(ckpt.shards[i].size for i in _owned(ckpt, rank, world))
    total_bytes = sum(e.nbytes for e in mine) + written
    progress = _Progress()
    if job.progress and rank == 0:
        from tqdm import tqdm

        progress.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="lamp-prune",
                            leave=False)
    device = torch.device(job.device)
    try:
        cuts = _agree(lambda: _find_cuts(job, mine, device, progress), job.group)
        job.timings["select_s"] = round(time.perf_counter() - t0, 3)
        by_name = dict(zip([e.name for e in mine], zip(cuts.cuts, cuts.pruned)))
        report = _report(job, chosen, mine, cuts, by_name)
        if not job.dry_run:
            t1 = time.perf_counter()
            _write(job, ckpt, by_name, device, progress, rank, world)
            job.timings["write_s"] = round(time.perf_counter() - t1, 3)
    finally:
        if progress.bar is not None:
            progress.bar.close()
    job.timings["total_s"] = round(time.perf_counter() - t0, 3)
    report["timings_s"] = dict(job.timings)
    report["bytes_read_and_written"] = progress.done
    return report


def _owned(ckpt: Checkpoint, rank: int, world: int) -> set[int]:
    return set(split_shards(ckpt.shards, world)[rank])


def _open(job: PruneJob, rank: int, world: int):
    job.check()
    ckpt = Checkpoint.open(job.src)
    chosen = select(list(ckpt.entries()), job.include, job.exclude)
    if not chosen:
        raise CheckpointError(f"{job.src}: no tensors selected for pruning")
    owned = {ckpt.shards[i].path for i in _owned(ckpt, rank, world)}
    return ckpt, chosen, [e for e in chosen if e.file in owned]


def _find_cuts(job: PruneJob, mine: list[TensorEntry], device: torch.device, progress) -> selection.Cuts:
    def keys(i: int, t: torch.Tensor) -> torch.Tensor:
        return t if job.importance is None else job.importance(mine[i].name, t)

    def with_tensor(i: int, fn):  # fn sees a read-only view of the file; summaries are new tensors
        out = with_mapped(mine[i], lambda t: fn(keys(i, t.to(device))))
        progress(mine[i].nbytes)
        return out

    def count_key(i: int, key: int) -> int:  # only row-sharded layers need it; checkpoint names are unique
        from .kernels_torch import magnitude_keys

        return with_tensor(i, lambda t: int((magnitude_keys(t) == key).sum()))

    def summarize(indices: list[int]) -> list[selection.Summary]:  # one tensor in memory at a time
        return [with_tensor(i, lambda t: selection.summarize_layers([t], [None])[0]) for i in indices]

    def gather(requests) -> dict[int, torch.Tensor]:
        return {r[0]: with_tensor(r[0], lambda t: selection.gather_layers([t], [None], [(0, *r[1:])])[0])
                for r in requests}

    source = selection.LayerSource([e.name for e in mine], [e.torch_dtype for e in mine], [e.shape for e in mine],
                                   summarize, gather, count_key)
    try:
        return selection.find_cuts(source, job.sparsity, job.method, job.group)
    except ValueError as exc:  # name the file of the tensor the message is about
        msg = str(exc)
        for e in mine:
            if msg.startswith(e.name):
                raise CheckpointError(f"{e.file}: tensor {msg}") from None
        raise CheckpointError(msg) from None


def _report(job: PruneJob, chosen, mine, cuts, by_name) -> dict:
    layers = []
    if job.group is not None:  # every rank reports every layer
        import torch.distributed as dist

        parts: list = [None] * dist.get_world_size(job.group)
        dist.all_gather_object(parts, {n: p for n, (_, p) in by_name.items()}, group=job.group)
        pruned = {k: v for part in parts for k, v in part.items()}
    else:
        pruned = {n: p for n, (_, p) in by_name.items()}
    for e in chosen:
        layers.append({"name": e.name, "file": e.file.name, "shape": list(e.shape), "dtype": e.dtype,
                       "elements": e.numel, "pruned": pruned[e.name],
                       "density": round(1 - pruned[e.name] / e.numel, 6) if e.numel else 1.0})
    elements, total_pruned = sum(x["elements"] for x in layers), sum(x["pruned"] for x in layers)
    return {"tool": f"lamp_kernels {__version__}", "source": str(job.src),
            "output": None if job.dry_run else str(job.dst), "method": job.method, "sparsity": job.sparsity,
            "threshold": cuts.threshold, "device": job.device, "world_size": _rank_world(job.group)[1],
            "elements": elements, "pruned": total_pruned,
            "density": round(1 - total_pruned / elements, 6) if elements else 1.0, "layers": layers}


def _write(job: PruneJob, ckpt: Checkpoint, by_name: dict, device: torch.device, progress, rank, world) -> None:
    dst = job.dst
    tmp = dst.parent / f".{dst.name}.lamp-prune-tmp"

    buffer = torch.empty(0, dtype=torch.uint8)  # reused for every tensor: no fresh pages per tensor

    def prune(entry: TensorEntry, source: torch.Tensor) -> torch.Tensor | None:
        nonlocal buffer
        if entry.name not in by_name:
            return None
        (key, ties), _ = by_name[entry.name]
        if buffer.numel() < entry.nbytes:
            buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
        out = buffer[:entry.nbytes].view(source.dtype).reshape(source.shape)
        if job.importance is not None:  # the cut is on the importance: mask from it, zeros into the weights
            keep = ops.apply_cuts([job.importance(entry.name, source.to(device))], [None], [key], [ties])[0]
            out.copy_(source)
            out.masked_fill_(~keep.cpu(), 0)
        elif device.type == "cpu":
            out.copy_(source)
            ops.zero_cuts_([out], [None], [key], [ties])
        else:
            t = source.to(device)
            ops.zero_cuts_([t], [None], [key], [ties])
            out.copy_(t)
        return out

    def write_mine():
        if rank == 0:
            _remove(tmp)
            if ckpt.is_dir:
                tmp.mkdir(parents=True)
        if job.group is not None:
            import torch.distributed as dist

            dist.barrier(group=job.group)
        for i in sorted(_owned(ckpt, rank, world)):
            shard = ckpt.shards[i]
            write_shard(shard, tmp / shard.path.name if ckpt.is_dir else tmp, prune, progress)
        if rank == 0 and ckpt.is_dir:
            _copy_other_files(ckpt, tmp, job)

    try:
        _agree(write_mine, job.group)
        if rank == 0:
            if dst.exists():  # --force: replace it only once the new output is complete
                old = dst.parent / f".{dst.name}.lamp-prune-old"
                _remove(old)
                os.replace(dst, old)
                os.replace(tmp, dst)
                _remove(old)
            else:
                os.replace(tmp, dst)
    except BaseException:
        if rank == 0:
            _remove(tmp)
        raise


def _copy_other_files(ckpt: Checkpoint, out: Path, job: PruneJob) -> None:
    shard_names = {s.path.name for s in ckpt.shards}
    for item in ckpt.source.iterdir():
        if item.name in shard_names or item.name == INDEX_NAME:
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)
    if ckpt.index is not None:
        index = json.loads(json.dumps(ckpt.index))
        index.setdefault("metadata", {})["pruned_by"] = (
            f"lamp_kernels {__version__}: method={job.method} sparsity={job.sparsity}")
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
