"""Exact pruning cuts from per-layer summaries (DESIGN-NOTES §2): the path every compiled backend takes.

    1. summarize the layers, on their devices         -> per layer, its nonempty bins: count (+ exact sums)
    2. CutSolver.plan on the host                      -> a small candidate region of bins per layer
    3. gather the keys of those bins (fp32/fp64)       -> one more read of the layers that need it
    4. CutSolver.finish                                -> one exact cut (key, ties) per layer
    5. apply_cuts / zero_cuts_, on the layers' devices -> masks, or weights zeroed in place

For masks on the CPU, steps 3 and 5 are one pass over the layers that need 3 (layer_masks).

A summary lists only nonempty bins, so it costs memory and solver time in proportion to the layer (at most
2^15..2^16 entries), and a layer of 9 weights costs 9 entries. Summaries are additive, so they can come from
tensors in memory, from a checkpoint streamed one tensor at a time (checkpoint.py), or be summed over ranks
(distributed.py); solve() does not care where they came from. Weights never move or get concatenated: only
summaries, candidate keys and cuts travel, each in one device-to-host copy per group of same-dtype layers.

The kernels come from a *kernel set*: ``ops`` (the torch.library ops, which dispatch on the device: C++ on
CPU, Triton on CUDA) or ``triton_kernels`` itself (backend="triton", also on CPU under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from . import allocation, ops
from .importance import check_importance_values, check_scanned_values, scaled_error, scaled_importance
from .kernels_torch import DTYPE_INFO, NONFINITE_BIN, bin_of, magnitude_keys
from .layers import MAGNITUDE_LIMIT, Layers, pruned_count

# requests (layer, bin_lo, bin_hi, size) -> {layer: its sorted alive keys in those bins, int64 on the CPU}
Gather = Callable[[list[tuple[int, int, int, int]]], dict[int, torch.Tensor]]
Densities = tuple[float | None, float | None]  # (min_density, max_density) of a bounded selection


@dataclass
class Summary:
    """One layer's nonempty bins (ascending), their alive counts and the limbs of their exact sums of squares
    (int64, on the CPU)."""

    dtype: torch.dtype
    numel: int
    bins: torch.Tensor  # int64[E]
    counts: torch.Tensor  # int64[E]
    sums: torch.Tensor  # int64[E, limbs]
    alive: int  # counts.sum()
    last_bin: int  # bins[-1], or -1 when every weight is masked out
    scaled: bool = False  # the keys are a ColumnScaled importance (float32), not the weights themselves

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts int64[B], sums int64[B, limbs]) over every bin of the dtype."""
        _, bins, _, limbs, _, _ = DTYPE_INFO[self.dtype]
        counts = torch.zeros(bins, dtype=torch.int64)
        sums = torch.zeros(bins, limbs, dtype=torch.int64)
        counts[self.bins] = self.counts
        sums[self.bins] = self.sums
        return counts, sums

    @classmethod
    def from_dense(cls, dtype: torch.dtype, numel: int, counts: torch.Tensor, sums: torch.Tensor,
                   scaled: bool = False) -> Summary:
        bins = torch.nonzero(counts).reshape(-1)
        return cls(dtype, numel, bins, counts[bins], sums[bins], int(counts.sum()),
                   int(bins[-1]) if bins.numel() else -1, scaled)


@dataclass
class Cuts:
    cuts: list[tuple[int, int]]  # per layer: keep alive weights with key > cut_key, or == cut_key after `ties`
    pruned: list[int]  # per layer, already-masked weights included
    numels: list[int]  # the size of the layer each count refers to (the whole layer, for a row shard)
    threshold: float | None  # the k-th score (|w| for global) when a global selection chose one


def to_host(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """int64 tensors of one device on the CPU, in one device-to-host copy (a single synchronisation)."""
    if all(t.device.type == "cpu" for t in tensors):
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors]).cpu()
    return [part.reshape(t.shape) for part, t in zip(torch.split(flat, [t.numel() for t in tensors]), tensors)]


def by_group(tensors: list[torch.Tensor], indices: list[int] | None = None,
             scales: list[torch.Tensor | None] | None = None) -> dict[tuple, list[int]]:
    """Indices of the tensors grouped by (device, dtype, column-scaled), in order: one kernel launch per group."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in range(len(tensors)) if indices is None else indices:
        groups[(tensors[i].device, tensors[i].dtype, scales is not None and scales[i] is not None)].append(i)
    return groups


def _scaled_call(plain, scaled, idx: list[int], scales: list[torch.Tensor | None] | None):
    """The kernel for a group from by_group: the plain op, or its column-scaled twin with the group's scales
    as its third argument."""
    if scales is None or scales[idx[0]] is None:
        return plain
    group_scales = [scales[i] for i in idx]
    return lambda weights, masks, *rest: scaled(weights, masks, group_scales, *rest)


def summarize_layers(weights: list[torch.Tensor], masks: list[torch.Tensor | None], kernels: ModuleType = ops,
                     scales: list[torch.Tensor | None] | None = None,
                     unchecked: list[str | None] | None = None) -> list[Summary]:
    """Summaries of the layers: one kernel call and one device-to-host copy per by_group group.
    unchecked[i]: the name of layer i when it is an importance tensor whose values are still to be checked
    (Layers.unchecked); the C++ kernels scan them in the same pass (ops._C.bin_summaries_scanned), other
    kernels check them first (importance.check_importance_values). A bad value raises ValueError."""
    out: list[Summary | None] = [None] * len(weights)
    scans = {}  # layer -> (top bin, negative): value checks run in layer order once every group is summarised
    for (device, dtype, scaled), idx in by_group(weights, None, scales).items():
        ws, ms = [weights[i] for i in idx], [masks[i] for i in idx]
        pending = [(j, i) for j, i in enumerate(idx) if unchecked is not None and unchecked[i] is not None]
        if pending and kernels is ops and ops._C is not None and device.type == "cpu" and not scaled:
            *found, top_bins, negative = ops._C.bin_summaries_scanned(ws, ms)
            scans.update({i: (int(top_bins[j]), bool(negative[j])) for j, i in pending})
        else:
            for _, i in pending:
                check_importance_values(weights[i], unchecked[i])
            found = _scaled_call(kernels.bin_summaries, ops.bin_summaries_scaled, idx, scales)(ws, ms)
        offsets, bins, counts, sums = to_host(*found)
        # per-layer totals and last bins in bulk: a model may have thousands of tiny layers
        # (a serial cumsum and tiny ops: torch's parallel ops start its OpenMP threads, which cost ~1 ms to wake
        # and then spin beside the next kernel's threads)
        running = counts.cumsum(0)[(offsets - 1).clamp(min=0)] if counts.numel() else offsets * 0
        alive = torch.where(offsets > 0, running, 0).diff().tolist()
        ends = offsets[1:]
        last = torch.where(ends > offsets[:-1], bins[(ends - 1).clamp(min=0)] if bins.numel() else ends * 0, -1)
        offsets, last = offsets.tolist(), last.tolist()
        key_dtype = torch.float32 if scaled else dtype
        for j, i in enumerate(idx):
            a, b = offsets[j], offsets[j + 1]
            out[i] = Summary(key_dtype, weights[i].numel(), bins[a:b], counts[a:b], sums[a:b], alive[j], last[j],
                             scaled)
    for i in sorted(scans):
        check_scanned_values(weights[i], unchecked[i], *scans[i])
    return out


def gather_layers(weights: list[torch.Tensor], masks: list[torch.Tensor | None],
                  requests: list[tuple[int, int, int, int]], kernels: ModuleType = ops,
                  scales: list[torch.Tensor | None] | None = None) -> dict[int, torch.Tensor]:
    """Sorted alive keys of the requested bins: one kernel call and one copy per by_group group."""
    found = {}
    by_layer = {r[0]: r for r in requests}
    for _, idx in by_group(weights, [r[0] for r in requests], scales).items():
        reqs = [by_layer[i] for i in idx]
        gather = _scaled_call(kernels.gather_bin_keys, ops.gather_bin_keys_scaled, idx, scales)
        keys = gather([weights[i] for i in idx], [masks[i] for i in idx], [r[1] for r in reqs], [r[2] for r in reqs],
                      [r[3] for r in reqs])
        for i, k in zip(idx, torch.split(to_host(keys)[0], [r[3] for r in reqs])):
            found[i] = k
    return found


def check_summary(s: Summary, name: str) -> None:
    """NaN/Inf among alive weights, and fp64 magnitudes outside [2^-496, 2^496), read off the bins. The
    limits are powers of two, so they fall on bin boundaries and the check is exact."""
    if s.last_bin >= NONFINITE_BIN[s.dtype]:
        raise ValueError(scaled_error(name) if s.scaled else f"{name} has NaN or Inf weights")
    if s.dtype != torch.float64 or s.last_bin < 0:
        return
    if s.last_bin >= bin_of(MAGNITUDE_LIMIT, s.dtype):
        raise ValueError(f"{name}: a magnitude is outside [2^-496, 2^496) (2^496 or more); "
                         "its square leaves float64's normal range")
    low = bin_of(1.0 / MAGNITUDE_LIMIT, s.dtype)
    if s.last_bin < low:  # nothing in range: an error unless every weight is zero (bin 0 with sum 0)
        nonzero = bool((s.bins > 0).any()) or bool(s.sums[s.bins == 0].any())
        if nonzero:
            raise ValueError(f"{name}: the largest magnitude is outside [2^-496, 2^496) (below 2^-496); "
                             "its square leaves float64's normal range")


def solve(summaries: list[Summary], names: list[str], shapes: list[tuple[int, ...]], sparsity: float,
          method: str, gather: Gather, densities: Densities | None = None) -> Cuts:
    """Per-layer cuts for `method` at `sparsity`. gather(requests) returns the sorted alive keys of the
    requested bins of fp32/fp64 layers whose cut lies inside a bin. densities (lamp and global): every layer's
    density bounds (prune_masks' min_density, max_density), checked feasible here, after the values."""
    # column-scaled layers first, each group in layer order: the order of the paths that make the importances
    for s, name in sorted(zip(summaries, names), key=lambda pair: not pair[0].scaled):
        check_summary(s, name)
    numels = [s.numel for s in summaries]
    masked = [s.numel - s.alive for s in summaries]
    solver = ops.solver([DTYPE_INFO[s.dtype][0] for s in summaries], [s.bins for s in summaries],
                        [s.counts for s in summaries], [s.sums for s in summaries], method == "lamp")
    if method in ("lamp", "global") and densities is not None:
        least, most = allocation.prune_bounds(numels, *densities)
        k = pruned_count(sparsity, sum(numels))
        allocation.check_bounds(names, numels, masked, k, least, most)
        # in alive weights: a layer's masked ones count towards its least first (sorted_selection's rule)
        least = [max(0, lo - m) for lo, m in zip(least, masked)]
        most = [hi - m for hi, m in zip(most, masked)]
        regions = solver.plan_global(max(k - sum(masked), sum(least)), least, most)
    elif method in ("lamp", "global"):
        regions = solver.plan_global(pruned_count(sparsity, sum(numels)) - sum(masked))
    else:
        targets = allocation.layer_counts(method, shapes, sparsity)
        regions = solver.plan_counts([max(0, t - m) for t, m in zip(targets, masked)])
    requests = []
    for i, (need, lo, hi) in enumerate(regions):
        if need:
            s = summaries[i]
            inside = (s.bins >= lo) & (s.bins <= hi)
            requests.append((i, lo, hi, int(s.counts[inside].sum())))
    found = gather(requests) if requests else {}
    empty = torch.empty(0, dtype=torch.int64)
    result = solver.finish([found.get(i, empty) for i in range(len(regions))])
    threshold = solver.threshold
    return Cuts([(key, ties) for key, ties, _ in result], [m + p for m, (_, _, p) in zip(masked, result)],
                numels, None if math.isnan(threshold) else threshold)


@dataclass
class LayerSource:
    """Layers as the solver needs them, wherever their weights are (memory, disk, another device)."""

    names: list[str]
    dtypes: list[torch.dtype]
    shapes: list[tuple[int, ...]]
    summarize: Callable[[list[int]], list[Summary]]  # the summaries of the given layers
    gather: Gather  # sorted alive keys of the requested bins, on the CPU
    count_key: Callable[[int, int], int]  # alive weights of layer i whose key equals the given one
    scaled: list[bool] | None = None  # layers whose keys are a ColumnScaled importance (for error messages)

    @classmethod
    def from_layers(cls, layers: Layers, kernels: ModuleType = ops) -> LayerSource:
        weights, scales = layers.detached(), layers.scales

        def summarize(indices: list[int]) -> list[Summary]:
            return summarize_layers([weights[i] for i in indices], [layers.masks[i] for i in indices], kernels,
                                    None if scales is None else [scales[i] for i in indices],
                                    [layers.names[i] if i in layers.unchecked else None for i in indices])

        def gather(requests):
            return gather_layers(weights, layers.masks, requests, kernels, scales)

        def count_key(i: int, key: int) -> int:
            keys = weights[i] if scales is None or scales[i] is None else scaled_importance(weights[i], scales[i])
            eq = magnitude_keys(keys) == key
            m = layers.masks[i]
            return int((eq if m is None else eq & m.reshape(-1)).sum())

        scaled = [scales is not None and scales[i] is not None for i in range(len(weights))]
        dtypes = [torch.float32 if scaled[i] else w.dtype for i, w in enumerate(weights)]
        return cls(layers.names, dtypes, [tuple(w.shape) for w in weights], summarize, gather, count_key, scaled)


def find_cuts(source: LayerSource, sparsity: float, method: str, group=None,
              densities: Densities | None = None) -> Cuts:
    """Cuts of the source's layers; with a process group, of the model those layers are part of."""
    if group is not None:
        from .distributed import distributed_cuts

        return distributed_cuts(source, sparsity, method, group, densities)
    summaries = source.summarize(list(range(len(source.names))))
    return solve(summaries, source.names, source.shapes, sparsity, method, source.gather, densities)


def layer_cuts(layers: Layers, sparsity: float, method: str, group=None, kernels: ModuleType = ops,
               densities: Densities | None = None) -> Cuts:
    return find_cuts(LayerSource.from_layers(layers, kernels), sparsity, method, group, densities)


def apply_layer_cuts(layers: Layers, cuts: Cuts, kernels: ModuleType = ops,
                     indices: list[int] | None = None) -> list[torch.Tensor | None]:
    """Keep-masks of the layers (or of the given ones, None for the others) from their cuts: one kernel call
    per by_group group."""
    out: list[torch.Tensor | None] = [None] * len(layers.tensors)
    weights = layers.detached()
    for _, idx in by_group(weights, indices, layers.scales).items():
        apply = _scaled_call(kernels.apply_cuts, ops.apply_cuts_scaled, idx, layers.scales)
        masks = apply([weights[i] for i in idx], [layers.masks[i] for i in idx], [cuts.cuts[i][0] for i in idx],
                      [cuts.cuts[i][1] for i in idx])
        for i, m in zip(idx, masks):
            out[i] = m
    return out


# The fused masks pass holds 24 bytes per candidate (keys in flat order, positions, sorted keys) where the gather
# holds 8: it is taken when the candidates are at most 1/16 of the group's weights (real layers: about 1/600).
FUSED_CANDIDATES = 16


def layer_masks(layers: Layers, sparsity: float, method: str, group=None,
                kernels: ModuleType = ops, densities: Densities | None = None) -> list[torch.Tensor]:
    """Keep-masks of a selection. On the CPU kernels, the layers whose cuts need their candidate keys gathered
    (fp32/fp64 keys) are cut in that same pass (ops.cut_and_gather): their masks keep what lies above the
    candidate bins, the solver gets the candidates' keys, and ops.fix_cuts_ decides the candidates once the
    cuts are known -- one read of those layers instead of two. Elsewhere (or with candidates above
    1/FUSED_CANDIDATES of the weights): the cuts, then apply_cuts."""
    if group is not None or kernels is not ops or any(t.device.type != "cpu" for t in layers.tensors):
        return apply_layer_cuts(layers, layer_cuts(layers, sparsity, method, group, kernels, densities), kernels)
    source = LayerSource.from_layers(layers, kernels)
    weights, scales = layers.detached(), layers.scales
    made: dict[int, torch.Tensor] = {}
    pending = []  # per cut_and_gather call: (layers, candidate keys in flat order, their positions, sizes)
    regions: dict[int, tuple[int, int, torch.Tensor]] = {}  # layer -> (bin_lo, bin_hi, its sorted candidates)

    def gather(requests):
        found = {}
        by_layer = {r[0]: r for r in requests}
        for (_, _, scaled), idx in by_group(weights, [r[0] for r in requests], scales).items():
            reqs = [by_layer[i] for i in idx]
            sizes = [r[3] for r in reqs]
            if sum(sizes) * FUSED_CANDIDATES > sum(weights[i].numel() for i in idx):
                found.update(gather_layers(weights, layers.masks, reqs, kernels, scales))  # many candidates
                continue
            masks, ordered, flat, positions = ops.cut_and_gather(
                [weights[i] for i in idx], [layers.masks[i] for i in idx], [scales[i] for i in idx] if scaled else [],
                [r[1] for r in reqs], [r[2] for r in reqs], sizes)
            for i, m, keys, r in zip(idx, masks, torch.split(ordered, sizes), reqs):
                made[i], found[i], regions[i] = m, keys, (r[1], r[2], keys)
            pending.append((idx, flat, positions, sizes))
        return found

    summaries = source.summarize(list(range(len(weights))))
    cuts = solve(summaries, source.names, source.shapes, sparsity, method, gather, densities)
    outside = {i for i in made if not _cut_in_region(cuts.cuts[i][0], *regions[i], summaries[i])}
    for idx, flat, positions, sizes in pending:
        if outside.intersection(idx):  # never from the solver, whose cuts lie in their regions: apply_cuts then
            for i in idx:
                del made[i]
            continue
        ops.fix_cuts_([made[i] for i in idx], flat, positions, sizes, [cuts.cuts[i][0] for i in idx],
                      [cuts.cuts[i][1] for i in idx])
    out = apply_layer_cuts(layers, cuts, kernels, [i for i in range(len(weights)) if i not in made])
    return [made[i] if i in made else m for i, m in enumerate(out)]


def _cut_in_region(cut_key: int, bin_lo: int, bin_hi: int, candidates: torch.Tensor, summary: Summary) -> bool:
    """Whether a cut decides only candidates of the region (cut_and_gather's masks are right elsewhere): a
    candidate's key, keep-all with nothing alive below the region, or prune-all with nothing alive above it."""
    if cut_key < 0:
        return not bool((summary.bins < bin_lo).any())
    if cut_key >= 2**63 - 1:
        return not bool((summary.bins > bin_hi).any())
    return candidates.numel() > 0 and int(candidates[0]) <= cut_key <= int(candidates[-1])


def zero_layer_cuts_(weights: list[torch.Tensor], masks: list[torch.Tensor | None], cuts: Cuts,
                     kernels: ModuleType = ops) -> None:
    """In place: every weight the cuts do not keep becomes +0; one kernel call per (device, dtype) group."""
    for _, idx in by_group(weights).items():
        kernels.zero_cuts_([weights[i] for i in idx], [masks[i] for i in idx], [cuts.cuts[i][0] for i in idx],
                           [cuts.cuts[i][1] for i in idx])
