"""Exact pruning cuts from per-layer summaries (DESIGN-NOTES §2): the path every compiled backend takes.

    1. summarize each layer, on its device           -> counts (+ exact sums) per 16-bit bin, a few hundred KB
    2. CutSolver.plan on the host                     -> a small candidate region of bins per layer
    3. gather the keys of those bins (fp32/fp64)      -> one more read of the layers that need it
    4. CutSolver.finish                               -> one exact cut (key, ties) per layer
    5. apply_cut / zero_cut_ per layer, on its device -> masks, or weights zeroed in place

Summaries are additive, so they can come from tensors in memory, from a checkpoint streamed one tensor at a
time (checkpoint.py), or be summed over ranks (distributed.py); solve() does not care where they came from.
Weights never move or get concatenated: only summaries, candidate keys and cuts travel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import allocation, ops
from .kernels_torch import DTYPE_INFO, NONFINITE_BIN, magnitude_keys
from .layers import MAGNITUDE_LIMIT, Layers, pruned_count

GatherMany = Callable[[list[tuple[int, int, int, int]]], dict[int, torch.Tensor]]


@dataclass
class Summary:
    """One layer's histogram: alive elements per bin and the limbs of their exact sums of squares (CPU)."""

    dtype: torch.dtype
    numel: int
    counts: torch.Tensor
    sums: torch.Tensor

    @property
    def alive(self) -> int:
        return int(self.counts.sum())


@dataclass
class Cuts:
    cuts: list[tuple[int, int]]  # per layer: keep alive weights with key > cut_key, or == cut_key after `ties`
    pruned: list[int]  # per layer, already-masked weights included
    numels: list[int]  # the size of the layer each count refers to (the whole layer, for a row shard)
    threshold: float | None  # the k-th score (|w| for global) when a global selection chose one


def summarize(w: torch.Tensor, mask: torch.Tensor | None) -> Summary:
    counts, sums = ops.bin_summary(w, mask)
    return Summary(w.dtype, w.numel(), counts.cpu(), sums.cpu())


def _bin_of(value: float, dtype: torch.dtype) -> int:
    key = int(torch.tensor([value], dtype=dtype).view(DTYPE_INFO[dtype][4])[0])
    return key >> DTYPE_INFO[dtype][2]


def check_summary(s: Summary, name: str) -> None:
    """NaN/Inf among alive weights, and fp64 magnitudes outside [2^-496, 2^496), read off the bins. The
    limits are powers of two, so they fall on bin boundaries and the check is exact."""
    if int(s.counts[NONFINITE_BIN[s.dtype]:].sum()):
        raise ValueError(f"{name} has NaN or Inf weights")
    if s.dtype != torch.float64:
        return
    if int(s.counts[_bin_of(MAGNITUDE_LIMIT, s.dtype):].sum()):
        raise ValueError(f"{name}: a magnitude is outside [2^-496, 2^496) (2^496 or more); "
                         "its square leaves float64's normal range")
    low = _bin_of(1.0 / MAGNITUDE_LIMIT, s.dtype)
    nonzero_below = int(s.counts[1:low].sum()) or int(s.sums[0].sum())  # bin 0: zeros and subnormals
    if int(s.counts[low:].sum()) == 0 and nonzero_below:
        raise ValueError(f"{name}: the largest magnitude is outside [2^-496, 2^496) (below 2^-496); "
                         "its square leaves float64's normal range")


def solve(summaries: list[Summary], names: list[str], shapes: list[tuple[int, ...]], sparsity: float,
          method: str, gather: Callable[[int, int, int], torch.Tensor], gather_many: GatherMany | None = None) -> Cuts:
    """Per-layer cuts for `method` at `sparsity`. gather(i, bin_lo, bin_hi) returns the sorted keys of layer
    i's alive weights in those bins; it is called for fp32/fp64 layers whose cut lies in such bins. A backend
    that gathers many layers in one pass passes gather_many instead: [(i, lo, hi, size)] -> {i: keys}."""
    for s, name in zip(summaries, names):
        check_summary(s, name)
    numels = [s.numel for s in summaries]
    masked = [s.numel - s.alive for s in summaries]
    solver = ops.solver([DTYPE_INFO[s.dtype][0] for s in summaries], [s.counts for s in summaries],
                        [s.sums for s in summaries], method == "lamp")
    if method in ("lamp", "global"):
        regions = solver.plan_global(pruned_count(sparsity, sum(numels)) - sum(masked))
    else:
        targets = allocation.layer_counts(method, shapes, sparsity)
        regions = solver.plan_counts([max(0, t - m) for t, m in zip(targets, masked)])
    if gather_many is not None:
        requests = [(i, lo, hi, int(summaries[i].counts[lo:hi + 1].sum()))
                    for i, (need, lo, hi) in enumerate(regions) if need]
        found = gather_many(requests) if requests else {}
        gathered = [found.get(i, torch.empty(0, dtype=torch.int64)) for i in range(len(regions))]
    else:
        gathered = [gather(i, lo, hi) if need else torch.empty(0, dtype=torch.int64)
                    for i, (need, lo, hi) in enumerate(regions)]
    result = solver.finish(gathered)
    threshold = solver.threshold
    return Cuts([(key, ties) for key, ties, _ in result], [m + p for m, (_, _, p) in zip(masked, result)],
                numels, None if math.isnan(threshold) else threshold)


@dataclass
class LayerSource:
    """Layers as the solver needs them, wherever their weights are (memory, disk, another device)."""

    names: list[str]
    dtypes: list[torch.dtype]
    shapes: list[tuple[int, ...]]
    summarize: Callable[[int], Summary]  # layer i's summary
    gather: Callable[[int, int, int], torch.Tensor]  # layer i's sorted alive keys in bins [lo, hi], on CPU
    count_key: Callable[[int, int], int]  # alive weights of layer i whose key equals the given one
    gather_many: GatherMany | None = None  # batched gather, where the backend has one (see solve)

    @classmethod
    def from_layers(cls, layers: Layers) -> LayerSource:
        def count_key(i: int, key: int) -> int:
            eq = magnitude_keys(layers.tensors[i]) == key
            m = layers.masks[i]
            return int((eq if m is None else eq & m.reshape(-1)).sum())

        return cls(layers.names, [w.dtype for w in layers.tensors], [tuple(w.shape) for w in layers.tensors],
                   lambda i: summarize(layers.tensors[i], layers.masks[i]),
                   lambda i, lo, hi: ops.gather_bin_keys(layers.tensors[i], layers.masks[i], lo, hi).cpu(),
                   count_key)


def find_cuts(source: LayerSource, sparsity: float, method: str, group=None) -> Cuts:
    """Cuts of the source's layers; with a process group, of the model those layers are part of."""
    if group is not None:
        from .distributed import distributed_cuts

        return distributed_cuts(source, sparsity, method, group)
    summaries = [source.summarize(i) for i in range(len(source.names))]
    return solve(summaries, source.names, source.shapes, sparsity, method, source.gather, source.gather_many)


def layer_cuts(layers: Layers, sparsity: float, method: str, group=None) -> Cuts:
    return find_cuts(LayerSource.from_layers(layers), sparsity, method, group)


def prune_masks(layers: Layers, sparsity: float, method: str, group=None) -> list[torch.Tensor]:
    cuts = layer_cuts(layers, sparsity, method, group).cuts
    return [ops.apply_cut(w, m, key, ties) for (key, ties), w, m in zip(cuts, layers.tensors, layers.masks)]
