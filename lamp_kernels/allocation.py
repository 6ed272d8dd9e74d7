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


def layer_counts(method: str, shapes: Sequence[Shape], sparsity: float) -> list[int]:
    return {"uniform": uniform_counts, "uniform_plus": uniform_plus_counts, "erk": erk_counts}[method](
        shapes, sparsity)
