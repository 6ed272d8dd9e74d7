"""Per-layer pruning counts of the baselines whose layerwise sparsity is fixed in advance (paper §4).

Each function maps layer shapes and a global sparsity to how many weights each layer prunes (already
pruned ones included); the layer is then pruned in its (|w|, flat index) order like every other method.
These are shape arithmetic only and are shared by every backend.

Differences from the official code (``tools/pruners.py``), which takes the fraction of the *surviving*
weights to prune in one step: here ``sparsity`` is always the total target over all weights, so repeated
calls at rising sparsities give iterative pruning; counts are computed in float64, not float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .layers import pruned_count

Shape = Sequence[int]

# Gale et al. (2019): the last layer keeps at least this fraction of its weights under uniform+.
LAST_LAYER_MIN_DENSITY = 0.2


def uniform_counts(shapes: Sequence[Shape], sparsity: float) -> list[int]:
    """round(sparsity * n_i) in every layer."""
    return [pruned_count(sparsity, math.prod(s)) for s in shapes]


def uniform_plus_counts(shapes: Sequence[Shape], sparsity: float) -> list[int]:
    """Uniform, but the first layer stays dense when it is a convolution (>= 3 dims) and the last layer keeps
    at least round(0.2 n_last) weights; the others share the rest uniformly. Raises ValueError when the
    sparsity cannot be met under these constraints (as the official code does)."""
    sizes = [math.prod(s) for s in shapes]
    k = pruned_count(sparsity, sum(sizes))
    counts = [0] * len(sizes)
    first = 1 if len(shapes[0]) >= 3 else 0
    prunable = list(range(first, len(sizes)))
    total = sum(sizes[i] for i in prunable)
    if k == 0:
        return counts
    if k > total:
        raise ValueError(f"uniform_plus cannot reach sparsity {sparsity}: the first conv layer stays dense")
    frac = k / total
    last = len(sizes) - 1
    last_keep = round(LAST_LAYER_MIN_DENSITY * sizes[last])
    if last in prunable and round((1.0 - frac) * sizes[last]) < last_keep:
        counts[last] = sizes[last] - last_keep
        middle = [i for i in prunable if i != last]
        rest = k - counts[last]
        middle_total = sum(sizes[i] for i in middle)
        if rest > middle_total:
            raise ValueError(f"uniform_plus cannot reach sparsity {sparsity}: "
                             "the last layer keeps at least 20% of its weights")
        frac = rest / middle_total if middle_total else 0.0
        prunable = middle
    for i in prunable:
        counts[i] = round(frac * sizes[i])
    return counts


def erk_scale(shape: Shape) -> int:
    """Evci et al.'s Erdős–Rényi-kernel numerator: n_{l-1} + n_l + w_l + h_l, i.e. the sum of the weight's
    dimensions (out + in for a Linear; out + in + kernel sizes for a conv; n for a vector)."""
    return sum(shape) if len(shape) else 1


def erk_counts(shapes: Sequence[Shape], sparsity: float) -> list[int]:
    """Surviving weights proportional to erk_scale (density proportional to erk_scale / n). A layer whose
    share exceeds its size is kept dense and the rest re-shared, largest overflow first, as in the official
    code; survivors are rounded per layer. A layer with no elements takes no share (its dimensions would
    otherwise claim survivors it cannot hold, and the others would be pruned harder)."""
    sizes = [math.prod(s) for s in shapes]
    scales = [erk_scale(s) for s in shapes]
    survive = sum(sizes) - pruned_count(sparsity, sum(sizes))
    dense = {i for i, n in enumerate(sizes) if n == 0}
    while True:
        rest = [i for i in range(len(sizes)) if i not in dense]
        budget = survive - sum(sizes[i] for i in dense)
        scale_sum = sum(scales[i] for i in rest)
        share = {i: round(budget * scales[i] / scale_sum) if scale_sum else 0 for i in rest}
        over = [(share[i] / sizes[i], -i) for i in rest if share[i] > sizes[i]]
        if not over:
            break
        dense.add(-max(over)[1])
    return [0 if i in dense else sizes[i] - share[i] for i in range(len(sizes))]


@dataclass(frozen=True)
class Ratios:
    """A per-layer budget computed elsewhere (OWL): each layer prunes round(sparsities[i] * n_i) of its
    weights (round(sparsities[i] * row length) per row at row granularity). Passed as the ``method`` of the
    selection pipeline, which treats it like the named budgets above."""

    sparsities: tuple[float, ...]


def layer_counts(method: str | Ratios, shapes: Sequence[Shape], sparsity: float) -> list[int]:
    if isinstance(method, Ratios):
        return [pruned_count(r, math.prod(s)) for r, s in zip(method.sparsities, shapes)]
    return {"uniform": uniform_counts, "uniform_plus": uniform_plus_counts, "erk": erk_counts}[method](
        shapes, sparsity)


def layer_ratios(method: str | Ratios, shapes: Sequence[Shape], sparsity: float) -> list[float]:
    """Each layer's sparsity under a budget method, for the per-row rule: uniform gives the sparsity itself,
    a Ratios budget its own values, uniform+ and ERK their per-layer count divided by the layer's size."""
    if isinstance(method, Ratios):
        return list(method.sparsities)
    if method == "uniform":
        return [sparsity] * len(shapes)
    return [c / math.prod(s) if math.prod(s) else 0.0 for c, s in zip(layer_counts(method, shapes, sparsity), shapes)]


def owl_densities(outlier_ratios: Sequence[float], sizes: Sequence[int], sparsity: float,
                  lam: float) -> list[float]:
    """OWL's block densities (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity"): the outlier ratios are
    mapped linearly onto [0, 2 lam], then shifted so the size-weighted mean density is 1 - sparsity (the
    paper's plain mean over blocks, for blocks of equal size), and clipped to [0, 1]. Equal ratios (or one
    block) give every block density 1 - sparsity."""
    lo, hi = min(outlier_ratios), max(outlier_ratios)
    spread = [0.0 if hi == lo else (r - lo) / (hi - lo) * 2 * lam for r in outlier_ratios]
    total = sum(sizes)
    mean = sum(d * n for d, n in zip(spread, sizes)) / total if total else 0.0
    return [min(1.0, max(0.0, d - mean + 1.0 - sparsity)) for d in spread]


def prune_bounds(sizes: Sequence[int], min_density: float | None,
                 max_density: float | None) -> tuple[list[int], list[int]]:
    """(least, most) weights each layer may prune: a layer of n keeps at least ceil(min_density * n) and at
    most floor(max_density * n), computed exactly from the floats given (0.3 * 10 keeps 3, not 4)."""
    lo_d = Fraction(0) if min_density is None else Fraction(min_density)
    hi_d = Fraction(1) if max_density is None else Fraction(max_density)
    least = [n - math.floor(hi_d * n) for n in sizes]
    most = [n - math.ceil(lo_d * n) for n in sizes]
    return least, most


def check_bounds(names: Sequence[str], sizes: Sequence[int], masked: Sequence[int], k: int,
                 least: Sequence[int], most: Sequence[int]) -> None:
    """ValueError when no selection of k weights (already-masked ones included) meets the bounds."""
    for name, n, m, lo, hi in zip(names, sizes, masked, least, most):
        if lo > hi:
            raise ValueError(f"{name}: no density of its {n} weights lies within min_density/max_density")
        if m > hi:
            raise ValueError(f"{name}: its masks already prune {m} of {n} weights, more than min_density allows "
                             f"({hi})")
    if sum(least) > k:
        raise ValueError(f"max_density forces at least {sum(least)} weights pruned, more than the {k} that the "
                         f"sparsity asks for")
    if sum(most) < k:
        raise ValueError(f"min_density lets at most {sum(most)} weights be pruned, fewer than the {k} that the "
                         f"sparsity asks for")
