"""Exact pruning masks from per-layer summaries (DESIGN-NOTES §2): the path every compiled backend takes.

    1. bin_summary per layer, on the layer's device  -> counts (+ exact sums) per 16-bit bin, a few hundred KB
    2. CutSolver.plan on the host                     -> a small candidate region of bins per layer
    3. gather_bin_keys (fp32/fp64 layers only)        -> the keys in those bins, one more read
    4. CutSolver.finish                               -> one exact cut (key, ties) per layer
    5. apply_cut per layer, on its device             -> the boolean masks

Weights never move or get concatenated: only summaries and cuts cross devices.
"""

from __future__ import annotations

import torch

from . import allocation, ops
from .kernels_torch import DTYPE_INFO, NONFINITE_BIN
from .layers import Layers, pruned_count


def layer_cuts(layers: Layers, sparsity: float, method: str) -> tuple[list[tuple[int, int]], list[int]]:
    """Per layer: the cut (cut_key, ties) and the number of weights pruned (already-masked ones included)."""
    counts, sums = [], []
    for i, (w, m) in enumerate(zip(layers.tensors, layers.masks)):
        c, s = ops.bin_summary(w, m)
        c, s = c.cpu(), s.cpu()
        if int(c[NONFINITE_BIN[w.dtype]:].sum()):
            raise ValueError(f"{layers.names[i]} has NaN or Inf weights")
        counts.append(c)
        sums.append(s)
    for i, w in enumerate(layers.tensors):
        if w.dtype == torch.float64:
            a = w.detach().abs() if layers.masks[i] is None else w.detach().abs() * layers.masks[i]
            layers.check_fp64_range(i, float(a.max()) if a.numel() else 0.0)
    numels = layers.numels()
    masked = [n - int(c.sum()) for n, c in zip(numels, counts)]
    solver = ops.solver([DTYPE_INFO[w.dtype][0] for w in layers.tensors], counts, sums, method == "lamp")
    if method in ("lamp", "global"):
        regions = solver.plan_global(pruned_count(sparsity, sum(numels)) - sum(masked))
    else:
        targets = allocation.layer_counts(method, [tuple(w.shape) for w in layers.tensors], sparsity)
        regions = solver.plan_counts([max(0, t - m) for t, m in zip(targets, masked)])
    gathered = [
        ops.gather_bin_keys(w, m, lo, hi).cpu() if gather else torch.empty(0, dtype=torch.int64)
        for (gather, lo, hi), w, m in zip(regions, layers.tensors, layers.masks)
    ]
    cuts = solver.finish(gathered)
    return [(key, ties) for key, ties, _ in cuts], [m + p for m, (_, _, p) in zip(masked, cuts)]


def prune_masks(layers: Layers, sparsity: float, method: str) -> list[torch.Tensor]:
    cuts, _ = layer_cuts(layers, sparsity, method)
    return [ops.apply_cut(w, m, key, ties) for (key, ties), w, m in zip(cuts, layers.tensors, layers.masks)]
