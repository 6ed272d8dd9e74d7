"""Prune a safetensors checkpoint on disk with bounded memory (the `lamp-prune` command's engine).

Pass 1 reads the selected tensors one at a time into per-layer summaries (selection.py); the solver picks
one cut per tensor (fp32/fp64 tensors whose cut falls inside a bin are read once more for that bin's keys);
pass 2 writes every shard front to back, zeroing each selected tensor by its cut in place. Peak memory is the
largest tensor plus the sparse summaries (the bins each tensor occupies). Under torch.distributed the shards
are split over the ranks, one selection spans them all, and each rank writes its own shards.

Safety: the source is only read, and every argument is checked before anything is written (path_checks.py);
output goes to this run's private temporary directory beside the destination and is moved into place at the
end, refusing a destination that changed meanwhile (staging.py); on any error or interrupt the temporary output
is removed. Links in the source are copied as links, never followed out of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__, checkpoint_local, ops, selection, staging
from .api import ALL_METHODS
from .importance import ColumnScaled, checked_scale, scaled_importance
from .layers import check_sparsity
from .naming import DEFAULT_EXCLUDE
from .options import OWL_LAMBDA, OWL_M, Options, check_options
from .path_checks import check_output, check_side_output
from .safetensors_io import (
    FLOAT_DTYPES,
    INDEX_NAME,
    Checkpoint,
    CheckpointError,
    TensorEntry,
    with_mapped,
    write_shard,
)


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
            if e.numel >= 2**31:  # the contract's limit on one layer (32-bit positions in every backend)
                raise CheckpointError(f"{e.file}: tensor {e.name} has {e.numel} elements; a pruned tensor must "
                                      "have fewer than 2^31")
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
    report_path: Path | None = None  # JSON report, written before the output is moved into place
    plot_path: Path | None = None  # layerwise survival plot (any format matplotlib writes, by extension)
    notices: list[str] = field(default_factory=list)  # warnings for the user (stale or concurrent runs)
    target: Path | None = field(default=None, init=False)  # dst's absolute location
    seen: tuple | None = field(default=None, init=False)  # what was at target when the run started
    # name, tensor -> the importance the selection ranks instead of |w|: a tensor like it, or a ColumnScaled
    # (Wanda's, from calibration norms: computed by the kernels as they read the tensor); asked per tensor when
    # needed, never kept. None: magnitude.
    importance: Callable[[str, torch.Tensor], Any] | None = None
    importance_name: str = "magnitude"  # what the report says the selection ranked
    # The selection's options, prune_masks' meaning (options.py): density bounds per tensor (lamp and global),
    # granularity, N:M, OWL's parameters, row balance
    min_density: float | None = None
    max_density: float | None = None
    granularity: str = "layer"
    nm: tuple[int, int] | None = None
    owl_m: float = OWL_M
    owl_lambda: float = OWL_LAMBDA
    row_balance: float = 1.0
    options: Options | None = field(default=None, init=False)  # the checked options (check())

    def check(self) -> None:
        """Every argument, before anything is read or written."""
        self.sparsity = check_sparsity(self.sparsity)
        if self.method not in ALL_METHODS:
            raise CheckpointError(f"unknown method {self.method!r}; choose one of {', '.join(ALL_METHODS)}")
        if self.importance is not None and self.group is not None:  # the layer table would carry weight dtypes
            raise CheckpointError("an importance other than magnitude runs in a single process (no group)")
        try:
            self.options = check_options(self.method, self.granularity, self.min_density, self.max_density,
                                         self.nm, self.owl_m, self.owl_lambda, None, self.row_balance)
        except ValueError as exc:
            raise CheckpointError(_as_flags(str(exc))) from None
        if self.options.granularity == "row" and self.method == "lamp":
            raise CheckpointError("--granularity row with --method lamp (one selection over the LAMP scores of "
                                  "every row) is not streamed by lamp-prune; prune in memory with "
                                  "prune_masks(..., granularity='row'), or use a budget method per row")
        if self.options.nm is not None and self.method in ("lamp", "global"):
            raise CheckpointError(f"--nm with --method {self.method} (one selection over every tensor after the N:M "
                                  "pattern) is not streamed by lamp-prune; prune in memory with prune_masks(..., "
                                  "nm=(N, M)), or use a budget method")
        if self.method == "owl" and self.group is not None:
            raise CheckpointError("--method owl runs in a single process (not under torchrun)")
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise CheckpointError(f"invalid regular expression {pattern!r} in --include/--exclude "
                                      f"({exc})") from None
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda") or (self.device == "cuda" and not torch.cuda.is_available()):
            raise CheckpointError(f"device {self.device!r} is not available here")
        if not self.dry_run:
            if self.dst is None:
                raise CheckpointError("--out is required (or use --dry-run)")
            self.target = check_output(self.src, self.dst)
        check_side_output(self.report_path, "--report", self.src, self.target)
        check_side_output(self.plot_path, "--plot", self.src, self.target)
        if self.report_path is not None and self.plot_path is not None and \
                os.path.abspath(self.report_path) == os.path.abspath(self.plot_path):
            raise CheckpointError("--report and --plot name the same file")
        if self.plot_path is not None:
            _check_plot_format(self.plot_path)

    def claim_destination(self) -> None:
        """Once the checkpoint is known good (rank 0): repair what a run killed in the middle of a replace
        left (staging.recover), refuse an existing destination without --force, and record what is there."""
        staging.recover(self.target, self.notices.append)
        self.refuse_existing()
        self.seen = staging.identity(self.target)

    def refuse_existing(self) -> None:
        """An existing destination without --force -> CheckpointError (after check(); nothing for a dry run)."""
        if not self.dry_run and os.path.lexists(self.target) and not self.force:
            raise CheckpointError(f"{self.dst} exists; pass --force to replace it")


_FLAGS = {"min_density": "--min-density", "max_density": "--max-density", "granularity='row'": "--granularity row",
          "granularity": "--granularity", "row_balance": "--row-balance", "owl_m": "--owl-m",
          "owl_lambda": "--owl-lambda", "nm=(N, M)": "--nm N:M"}
# One pass, longest keyword first, whole words only: a flag once written is never rewritten.
_KEYWORDS = re.compile("|".join(rf"(?<![\w-]){re.escape(k)}(?!\w)" for k in sorted(_FLAGS, key=len, reverse=True)))


def _as_flags(message: str) -> str:
    """An options.py message with its keyword arguments named as lamp-prune's flags."""
    return _KEYWORDS.sub(lambda m: _FLAGS[m.group(0)], message)


def _check_plot_format(path: Path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CheckpointError("--plot needs matplotlib (pip install matplotlib)") from None
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise CheckpointError(f"--plot {path}: unknown image format {path.suffix or '(no extension)'}; "
                              f"use one of {', '.join('.' + f for f in sorted(formats))}")


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

    def fn_or_checkpoint_error():
        try:
            return fn()
        except OSError as exc:
            raise CheckpointError(str(exc)) from None

    return agree_on_errors(fn_or_checkpoint_error, group)


def prune_checkpoint(job: PruneJob) -> dict:
    """Run the job; returns the report (also on every rank under torch.distributed). The report and plot
    files, if asked for, are written before the output is moved into place and appear with it."""
    t0 = time.perf_counter()
    rank, world = _rank_world(job.group)
    ckpt, chosen, mine, others = _agree(lambda: _open(job, rank, world), job.group)
    written = 0 if job.dry_run else sum(ckpt.shards[i].size for i in _owned(ckpt, rank, world))
    local = checkpoint_local.is_local(job.method, job.options)
    reads = 3 if job.method == "owl" else 1  # OWL reads each tensor twice more for its block statistics
    total_bytes = reads * sum(e.nbytes for e in mine) + written
    progress = _Progress()
    if job.progress and rank == 0:
        from tqdm import tqdm

        progress.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="lamp-prune",
                            leave=False)
    device = torch.device(job.device)

    def finish(report: dict) -> dict:
        job.timings["total_s"] = round(time.perf_counter() - t0, 3)
        report["timings_s"] = dict(job.timings)
        report["bytes_read_and_written"] = progress.done
        return report

    try:
        find = _local_sparsities if local else _find_cuts
        cuts = _agree(lambda: find(job, chosen, mine, device, progress), job.group)
        job.timings["select_s"] = round(time.perf_counter() - t0, 3)
        by_name = dict(zip([e.name for e in mine], zip(cuts.cuts, cuts.pruned)))
        report = _report(job, chosen, mine, cuts, by_name)
        if job.dry_run:
            if rank == 0:
                _commit_side_outputs(_stage_side_outputs(job, finish(report)))
        else:
            _write(job, ckpt, others, by_name, local, device, progress, rank, world, lambda: finish(report))
    finally:
        if progress.bar is not None:
            progress.bar.close()
    return finish(report)


def _owned(ckpt: Checkpoint, rank: int, world: int) -> set[int]:
    return set(split_shards(ckpt.shards, world)[rank])


def _open(job: PruneJob, rank: int, world: int):
    job.check()
    ckpt = Checkpoint.open(job.src)
    chosen = select(list(ckpt.entries()), job.include, job.exclude)
    if not chosen:
        raise CheckpointError(f"{job.src}: no tensors selected for pruning")
    others = other_files(ckpt) if ckpt.is_dir and rank == 0 and not job.dry_run else []
    if rank == 0 and not job.dry_run:
        job.claim_destination()
    owned = {ckpt.shards[i].path for i in _owned(ckpt, rank, world)}
    return ckpt, chosen, [e for e in chosen if e.file in owned], others


def _keyed(job: PruneJob, name: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(tensor, scale) the kernels rank: the tensor itself (magnitude), its importance tensor, or the tensor with
    the float32 scale of a ColumnScaled importance."""
    if job.importance is None:
        return t, None
    imp = job.importance(name, t)
    if isinstance(imp, ColumnScaled):
        return t, checked_scale(imp, t, name)
    return imp, None


@dataclass
class _Sparsities:
    """A layer-local selection's outcome (checkpoint_local.py), in the place of selection.Cuts: each tensor's
    sparsity where Cuts has its cut, what it prunes, and no global threshold."""

    cuts: list[float]
    pruned: list[int]
    threshold: float | None = None


def _local_sparsities(job: PruneJob, chosen: list[TensorEntry], mine: list[TensorEntry], device: torch.device,
                      progress) -> _Sparsities:
    """Every tensor's sparsity (from all selected tensors' shapes, or OWL's statistics), then pass 1 over this
    rank's tensors: values checked, pruned counted."""
    def read(entry: TensorEntry, fn):  # fn(tensor, importance or None)
        return _read(entry, device, progress, lambda t: fn(t, _importance_of(job, entry.name, t)))

    try:
        ratios = dict(zip([e.name for e in chosen], checkpoint_local.sparsities(
            [e.name for e in chosen], [e.shape for e in chosen], job.sparsity, job.method, job.options,
            lambda i, fn: read(chosen[i], fn))))
        mine_ratios = [ratios[e.name] for e in mine]
        pruned = [read(e, lambda t, imp: checkpoint_local.pruned(e.name, t, imp, r, job.options))
                  for e, r in zip(mine, mine_ratios)]
    except CheckpointError:
        raise
    except ValueError as exc:
        raise _naming_file(exc, mine) from None
    return _Sparsities(mine_ratios, pruned)


def _read(entry: TensorEntry, device: torch.device, progress, fn):
    """fn(tensor on the device) for one selected tensor read through a short-lived map of its file; its bytes
    counted as read."""
    out = with_mapped(entry, lambda t: fn(t.to(device)))
    progress(entry.nbytes)
    return out


def _importance_of(job: PruneJob, name: str, t: torch.Tensor) -> Any:
    return None if job.importance is None else job.importance(name, t)


def _naming_file(exc: ValueError, entries: list[TensorEntry]) -> CheckpointError:
    """A CheckpointError for a selection's ValueError, naming the file of the tensor it is about."""
    msg = str(exc)
    for e in entries:
        if msg.startswith(e.name):
            return CheckpointError(f"{e.file}: tensor {msg}")
    return CheckpointError(msg)


def _find_cuts(job: PruneJob, chosen: list[TensorEntry], mine: list[TensorEntry], device: torch.device,
               progress) -> selection.Cuts:
    def with_tensor(i: int, fn):  # fn(tensor, scale) sees a read-only view of the file; summaries are new tensors
        return _read(mine[i], device, progress, lambda t: fn(*_keyed(job, mine[i].name, t)))

    def count_key(i: int, key: int) -> int:  # only row-sharded layers need it; checkpoint names are unique
        from .kernels_torch import magnitude_keys

        return with_tensor(i, lambda t, s: int((magnitude_keys(t if s is None else scaled_importance(t, s))
                                                == key).sum()))

    def scales(s: torch.Tensor | None) -> list | None:
        return None if s is None else [s]

    def summarize(indices: list[int]) -> list[selection.Summary]:  # one tensor in memory at a time
        return [with_tensor(i, lambda t, s: selection.summarize_layers([t], [None], scales=scales(s))[0])
                for i in indices]

    def gather(requests) -> dict[int, torch.Tensor]:
        return {r[0]: with_tensor(r[0], lambda t, s: selection.gather_layers([t], [None], [(0, *r[1:])],
                                                                             scales=scales(s))[0])
                for r in requests}

    source = selection.LayerSource([e.name for e in mine], [e.torch_dtype for e in mine], [e.shape for e in mine],
                                   summarize, gather, count_key)
    try:
        bounded = job.min_density is not None or job.max_density is not None
        return selection.find_cuts(source, job.sparsity, job.method, job.group,
                                   (job.min_density, job.max_density) if bounded else None)
    except CheckpointError:
        raise
    except ValueError as exc:
        raise _naming_file(exc, mine) from None


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
            "importance": job.importance_name, "min_density": job.min_density, "max_density": job.max_density,
            "granularity": job.options.granularity, "nm": None if job.options.nm is None else list(job.options.nm),
            "row_balance": job.options.row_balance,
            "owl": {"m": job.options.owl_m, "lambda": job.options.owl_lambda} if job.method == "owl" else None,
            "threshold": cuts.threshold, "device": job.device,
            "world_size": _rank_world(job.group)[1], "elements": elements, "pruned": total_pruned,
            "density": round(1 - total_pruned / elements, 6) if elements else 1.0, "layers": layers}


def _write(job: PruneJob, ckpt: Checkpoint, others: list, by_name: dict, local: bool, device: torch.device,
           progress, rank: int, world: int, finish) -> None:
    """by_name: tensor name -> (cut, pruned): the cut is (key, ties), or with `local` the tensor's sparsity."""
    buffer = torch.empty(0, dtype=torch.uint8)  # reused for every tensor: no fresh pages per tensor

    def prune(entry: TensorEntry, source: torch.Tensor) -> torch.Tensor | None:
        nonlocal buffer
        if entry.name not in by_name:
            return None
        cut, counted = by_name[entry.name]
        if buffer.numel() < entry.nbytes:
            buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
        out = buffer[:entry.nbytes].view(source.dtype).reshape(source.shape)
        if local:  # cut: the tensor's sparsity; its mask made from it alone
            t = source.to(device)
            keep = checkpoint_local.keep_mask(entry.name, t, _importance_of(job, entry.name, t), cut, job.options)
            pruned = keep.numel() - int(keep.count_nonzero())
            if pruned != counted:  # the report would be wrong: stop (this run's output is then removed)
                raise CheckpointError(f"{entry.file}: tensor {entry.name}: its mask prunes {pruned} weights, pass 1 "
                                      f"counted {counted} (did the file change during the run, or does flush-to-zero "
                                      "differ between threads?)")
            _masked_copy(out, source, keep.cpu())
            return out
        key, ties = cut
        if job.importance is not None:  # the cut is on the importance: mask from it, zeros into the weights
            t, s = _keyed(job, entry.name, source.to(device))
            keep = (ops.apply_cuts([t], [None], [key], [ties]) if s is None
                    else ops.apply_cuts_scaled([t], [None], [s], [key], [ties]))[0]
            _masked_copy(out, source, keep.cpu())
        elif device.type == "cpu":
            out.copy_(source)
            ops.zero_cuts_([out], [None], [key], [ties])
        else:
            t = source.to(device)
            ops.zero_cuts_([t], [None], [key], [ties])
            out.copy_(t)
        return out

    stage: staging.Staging | None = None
    side: list[tuple[Path, Path]] = []

    def create() -> str | None:  # rank 0 makes this run's private directory
        nonlocal stage
        if rank != 0:
            return None
        with staging.signals_blocked():  # no stop between making the directory and knowing it is ours
            stage = staging.Staging.create(job.target, job.seen)
        if ckpt.is_dir:
            stage.output.mkdir()
        return str(stage.root)

    def write_mine(root: Path) -> None:
        t1 = time.perf_counter()
        output = root / staging.OUTPUT
        for i in sorted(_owned(ckpt, rank, world)):
            shard = ckpt.shards[i]
            write_shard(shard, output / shard.path.name if ckpt.is_dir else output, prune, progress)
        if rank == 0 and ckpt.is_dir:
            _copy_other_files(ckpt, others, output, job)
        job.timings["write_s"] = round(time.perf_counter() - t1, 3)

    def commit() -> None:  # rank 0: report and plot staged, then the output moved into place, then they
        nonlocal side
        if rank == 0:
            if ckpt.is_dir:  # now that every rank has written its shards (a read-only mode would stop them)
                os.chmod(stage.output, stat.S_IMODE(os.stat(ckpt.source).st_mode))
            side = _stage_side_outputs(job, finish())
            with staging.signals_blocked():  # a stop signal waits until everything is in place
                stage.commit()
                _commit_side_outputs(side)
                side = []

    try:
        root = _agree(create, job.group)
        if job.group is not None:
            import torch.distributed as dist

            shared = [root]
            dist.broadcast_object_list(shared, src=dist.get_global_rank(job.group, 0), group=job.group)
            root = shared[0]
        _agree(lambda: write_mine(Path(root)), job.group)
        _agree(commit, job.group)
    finally:
        if stage is not None:
            stage.discard()  # the old output after a replace; everything of this run after a failure
        for tmp, _ in side:
            tmp.unlink(missing_ok=True)


def _masked_copy(out: torch.Tensor, source: torch.Tensor, keep: torch.Tensor) -> None:
    """out := source where keep, +0 elsewhere: one C++ pass over the bits, or torch ops without the extension."""
    if ops._C is not None and out.is_contiguous() and source.is_contiguous():
        ops._C.masked_copy_(out, source, keep.contiguous())
    else:
        out.copy_(source)
        out.masked_fill_(~keep, 0)


def _stage_side_outputs(job: PruneJob, report: dict) -> list[tuple[Path, Path]]:
    """Write the report and plot under temporary names beside their targets: (temporary, target) pairs."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, write in ((job.report_path, lambda p: p.write_text(json.dumps(report, indent=1) + "\n")),
                              (job.plot_path, lambda p: _plot(report, p))):
            if target is None:
                continue
            tmp = target.parent / f".{target.name}{staging.MARK}{uuid.uuid4().hex[:8]}{target.suffix}"
            staged.append((tmp, target))
            tmp.open("x").close()
            write(tmp)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return staged


def _plot(report: dict, path: Path) -> None:
    from .survival_plot import plot_survival

    plot_survival(report, path)


def _commit_side_outputs(staged: list[tuple[Path, Path]]) -> None:
    for tmp, target in staged:
        os.replace(tmp, target)


def other_files(ckpt: Checkpoint) -> list[tuple[Path, str]]:
    """Everything in a checkpoint directory besides its shards and index, as (relative path, "dir" | "file" |
    "link"), parents before children, walked without following links. Anything else (a FIFO, a socket, a
    device) is refused: copying it could block or read without end."""
    skip = {s.path.name for s in ckpt.shards} | {INDEX_NAME}
    found: list[tuple[Path, str]] = []
    stack = [Path()]
    while stack:
        rel = stack.pop()
        with os.scandir(ckpt.source / rel) as it:
            for entry in sorted(it, key=lambda d: d.name):
                path = rel / entry.name
                if rel == Path() and entry.name in skip:
                    continue
                if entry.is_symlink():
                    found.append((path, "link"))
                elif entry.is_dir(follow_symlinks=False):
                    found.append((path, "dir"))
                    stack.append(path)
                elif entry.is_file(follow_symlinks=False):
                    found.append((path, "file"))
                else:
                    raise CheckpointError(f"{ckpt.source / path}: not a regular file, directory or symbolic link; "
                                          "lamp-prune copies only those")
    return found


def _copy_other_files(ckpt: Checkpoint, others: list[tuple[Path, str]], out: Path, job: PruneJob) -> None:
    """Copy the other files with their permission bits; a symbolic link is copied as a link (its target is
    never read, wherever it points); directories get their modes last (a read-only one could not be filled)."""
    for rel, kind in others:
        source, target = ckpt.source / rel, out / rel
        if kind == "link":
            os.symlink(os.readlink(source), target)
        elif kind == "dir":
            target.mkdir()
        else:
            shutil.copy2(source, target, follow_symlinks=False)
    if ckpt.index is not None:
        index = json.loads(json.dumps(ckpt.index))
        index.setdefault("metadata", {})["pruned_by"] = f"lamp_kernels {__version__}: {_described(job)}"
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        os.chmod(out / INDEX_NAME, stat.S_IMODE(os.stat(ckpt.source / INDEX_NAME).st_mode))
    for rel, kind in reversed(others):
        if kind == "dir":
            shutil.copystat(ckpt.source / rel, out / rel, follow_symlinks=False)


def _described(job: PruneJob) -> str:
    """The selection in one line: method, sparsity and every option not at its default."""
    o = job.options
    parts = [f"method={job.method}", f"sparsity={job.sparsity}"]
    if job.importance_name != "magnitude":
        parts.append(f"importance={job.importance_name}")
    parts += [f"{k}={v}" for k, v in (("min_density", o.min_density), ("max_density", o.max_density)) if v is not None]
    if o.granularity != "layer":
        parts.append(f"granularity={o.granularity}")
    if o.nm is not None:
        parts.append(f"nm={o.nm[0]}:{o.nm[1]}")
    if o.row_balance != 1.0:
        parts.append(f"row_balance={o.row_balance}")
    if job.method == "owl":
        parts += [f"owl_m={o.owl_m}", f"owl_lambda={o.owl_lambda}"]
    return " ".join(parts)
