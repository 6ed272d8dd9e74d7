"""`lamp-prune` (also `python -m lamp_kernels`): prune a safetensors checkpoint on disk.

    lamp-prune SRC --sparsity S --out DST [--method lamp|global|uniform|uniform_plus|erk|owl]
               [--min-density D] [--max-density D] [--granularity layer|row] [--nm N:M]
               [--row-balance B] [--owl-m M] [--owl-lambda L]
               [--include REGEX]... [--exclude REGEX]... [--device auto|cpu|cuda]
               [--report FILE] [--plot FILE] [--dry-run] [--force]
               [--importance magnitude|wanda --calibration FILE.txt [--calibration-tokens N]
                [--calibration-window W]]

Under torchrun (WORLD_SIZE > 1) the shards are split over the ranks: one global selection, each rank writes
its own shards. Errors print one line naming the file or tensor and exit with status 2; nothing is written.
SIGINT, SIGTERM and SIGHUP remove the temporary output and exit with status 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from .api import ALL_METHODS
from .checkpoint import DEFAULT_EXCLUDE, PruneJob, prune_checkpoint
from .options import OWL_LAMBDA, OWL_M
from .safetensors_io import CheckpointError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lamp-prune",
        description="Prune a safetensors checkpoint (a file, or a directory of shards with "
                    "model.safetensors.index.json) by LAMP or a baseline, streaming one tensor at a time.",
        epilog=f"Default selection: floating tensors with >= 2 dims named *.weight, except names matching "
               f"{DEFAULT_EXCLUDE!r} (embeddings, lm_head). --include replaces that rule.")
    p.add_argument("src", type=Path, help="checkpoint file or directory (never modified)")
    p.add_argument("--sparsity", type=float, required=True, help="fraction of the selected weights to prune")
    p.add_argument("--out", type=Path, help="output file or directory (same layout as SRC)")
    p.add_argument("--method", choices=ALL_METHODS, default="lamp",
                   help="lamp (default), global magnitude, or a per-tensor budget: uniform, uniform_plus, erk, "
                        "owl (outlier-weighted layerwise sparsity, Yin et al. 2024)")
    p.add_argument("--min-density", type=float, metavar="D",
                   help="lamp/global: every tensor keeps at least ceil(D * its size) weights")
    p.add_argument("--max-density", type=float, metavar="D",
                   help="lamp/global: every tensor keeps at most floor(D * its size) weights")
    p.add_argument("--granularity", choices=["layer", "row"], default="layer",
                   help="row, with a budget method: each output row prunes its tensor's sparsity (Wanda's rule: "
                        "--method uniform --granularity row --importance wanda is Wanda)")
    p.add_argument("--nm", type=_nm, metavar="N:M",
                   help="budget methods: keep the N most important of every M consecutive weights of a row "
                        "(2:4, say), then prune further if the sparsity asks for more")
    p.add_argument("--row-balance", type=float, default=1.0, metavar="B",
                   help="with --granularity row, in [0, 1]: below 1 each tensor prunes the row rule's total with "
                        "one threshold per row proportional to the row's cut^B (1, the default: the row rule)")
    p.add_argument("--owl-m", type=float, metavar="M", help=f"--method owl: outlier threshold (default {OWL_M})")
    p.add_argument("--owl-lambda", type=float, metavar="L",
                   help=f"--method owl: block densities within the target +- L (default {OWL_LAMBDA})")
    p.add_argument("--include", action="append", default=[], metavar="REGEX", help="select tensors by name")
    p.add_argument("--exclude", action="append", default=[], metavar="REGEX", help="leave tensors out by name")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--report", type=Path, help="write a JSON report (per layer: elements, pruned, density)")
    p.add_argument("--plot", type=Path, help="write a plot of layerwise survival (.png, .svg, .pdf, ...)")
    p.add_argument("--dry-run", action="store_true", help="select and report only; write no checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--importance", choices=["magnitude", "wanda"], default="magnitude",
                   help="rank weights by |w| (default) or by Wanda's |W_ij| * ||X_j||; wanda needs a transformers "
                        "checkpoint directory and --calibration")
    p.add_argument("--calibration", type=Path, metavar="FILE.txt", help="text whose tokens calibrate --importance "
                                                                          "wanda")
    p.add_argument("--calibration-tokens", type=int, default=8192, metavar="N",
                   help="calibration tokens, from the start of the file (default 8192)")
    p.add_argument("--calibration-window", type=int, default=512, metavar="W",
                   help="tokens per calibration forward pass (default 512)")
    return p


def _nm(text: str) -> tuple[int, int]:
    n, sep, m = text.partition(":")
    try:
        if sep:
            return int(n), int(m)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected N:M with whole numbers (2:4, say), got {text!r}")


def _owl_parameters(args) -> dict:
    """OWL's parameters for the job; given with another method they are an error (they would do nothing)."""
    given = {k: v for k, v in (("owl_m", args.owl_m), ("owl_lambda", args.owl_lambda)) if v is not None}
    if given and args.method != "owl":
        raise CheckpointError("--owl-m and --owl-lambda are parameters of --method owl")
    return given


def _importance(args, job: PruneJob):
    """None (magnitude), or PruneJob.importance from a calibration run (checkpoint_calibration.py). The job's
    arguments are checked first, so that a bad one is refused before minutes of calibration."""
    if args.importance == "magnitude":
        if args.calibration is not None:
            raise CheckpointError("--calibration is used with --importance wanda")
        return None
    if args.calibration is None:
        raise CheckpointError("--importance wanda needs --calibration FILE.txt")
    if args.calibration_tokens < 1 or args.calibration_window < 1:
        raise CheckpointError("--calibration-tokens and --calibration-window must be positive")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CheckpointError("--importance wanda runs in a single process (not under torchrun)")
    job.check()
    job.refuse_existing()
    from . import checkpoint_calibration as cc
    from .checkpoint import Checkpoint, select

    names = [e.name for e in select(list(Checkpoint.open(args.src).entries()), args.include, args.exclude)]
    norms = cc.wanda_norms(args.src, args.calibration, names, tokens=args.calibration_tokens,
                           window=args.calibration_window, device=job.device, progress=job.progress)
    return cc.wanda_importance_of(norms)


def _process_group(device: str):
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.group.WORLD


class Interrupted(BaseException):
    """A signal asked the command to stop; raised where the program is, so cleanup code runs on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """The first of SIGINT/SIGTERM/SIGHUP raises Interrupted; later ones are ignored so cleanup can finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    job = PruneJob(args.src, args.out, args.sparsity, args.method, args.include, args.exclude, args.device,
                   args.dry_run, args.force, not args.quiet and sys.stderr.isatty(), None,
                   report_path=args.report, plot_path=args.plot, min_density=args.min_density,
                   max_density=args.max_density, granularity=args.granularity, nm=args.nm,
                   row_balance=args.row_balance)
    group, error, status = None, None, 0
    with _stop_signals_raise():
        try:
            for key, value in _owl_parameters(args).items():
                setattr(job, key, value)
            group = job.group = _process_group(args.device)
            rank = 0 if group is None else __import__("torch.distributed").distributed.get_rank()
            job.importance, job.importance_name = _importance(args, job), args.importance
            report = prune_checkpoint(job)
            if rank == 0:
                where = "dry run, nothing written" if args.dry_run else f"wrote {args.out}"
                print(f"lamp-prune: {report['method']} pruned {report['pruned']} of {report['elements']} weights "
                      f"in {len(report['layers'])} tensors (density {report['density']:.4f}) in "
                      f"{report['timings_s']['total_s']:.2f} s; {where}")
        except (CheckpointError, ValueError, TypeError, OSError, MemoryError) as exc:
            error, status = str(exc) or type(exc).__name__, 2
        except (Interrupted, KeyboardInterrupt) as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            error = f"interrupted by {signal.Signals(signum).name}; temporary output removed"
            status = 128 + signum
        finally:
            if group is not None:
                import torch.distributed as dist

                dist.destroy_process_group()
    for notice in job.notices:
        print(f"lamp-prune: warning: {' '.join(notice.split())}", file=sys.stderr)
    if error is not None:
        print(f"lamp-prune: error: {' '.join(error.split())}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
