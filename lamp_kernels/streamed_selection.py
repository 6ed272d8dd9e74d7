"""The exact selection of sorted_selection.select_counts without keeping the order values (CPU kernels).

sorted_selection needs every unit's order values at once: 8 bytes per weight (7.3 GiB for Llama-3.2-1B). Here
the units' values are recomputed, pass by pass, by ops.row_value_window, which keeps only per-unit counts and
the values inside a window (lo, hi]:

    1. a window around the threshold is estimated from the order values of a strided sample of every layer's
       rows (ops.row_order_values on those rows alone, about _SAMPLE values);
    2. one pass over all units counts, per unit, the values <= lo and <= hi and collects those between. With
       f(t) the clamped count of sorted_selection (sum_i clamp(#{values_i <= t}, least_i, most_i)), the
       threshold T (the smallest t with f(t) >= k) lies in the window when f(lo) < k <= f(hi); it is then
       found among the collected values. A window that misses it is replaced by the side that holds it, and
       one holding more than the limit's values by the bucket of its histogram where f crosses k: another
       pass each time (each narrows the bracket; a good sample needs none);
    3. per unit #{< T} and #{== T} from its counts and its collected values; then the counts as in
       select_counts: ties at T taken in layer order, then row by row, and a layer whose count a bound moved
       selected on its own.

Memory: per-unit counts, the sample's values, and at most the limit's values of the window (n / 64, at least
2^20), instead of 8 bytes per weight. Same counts as sorted_selection.select_counts on ops.row_order_values
(tests/test_rows.py).
"""

from __future__ import annotations

import torch

from . import ops
from .rows import masked_per_row, window_shift
from .sorted_selection import split_at_threshold

_SAMPLED_MIN = 1 << 20  # fewer values: one pass with the whole range as the window collects them all
_SAMPLE = 1 << 24  # order values computed for the sample, about
_MARGIN = 256  # the estimated window spans the threshold's estimated rank -+ n / _MARGIN
_BUCKETS = 4096  # at least 2, so that each narrowing pass shrinks the window
_TOP = (1 << 63) - 1  # above every order value


def runs_on(tensors: list[torch.Tensor], kernels) -> bool:
    """Whether the streamed selection serves these layers: CPU tensors and the C++ kernels (elsewhere the
    order values are kept: the CUDA library computes them, sorted_selection selects on the device)."""
    return kernels is ops and ops._C is not None and all(t.device.type == "cpu" for t in tensors)


def _limit(n: int) -> int:
    return max(1 << 20, n // 64)


class _Request:
    """One selection: the units of every layer, k and the bounds, and f (the clamped count)."""

    def __init__(self, keys, masks, rows, lamp, k, least, most):
        self.keys, self.masks, self.rows, self.lamp = keys, masks, rows, lamp
        self.n = sum(w.numel() for w in keys)
        self.least = torch.tensor(least if least is not None else [0] * len(keys), dtype=torch.int64)
        self.most = torch.tensor(most if most is not None else [w.numel() for w in keys], dtype=torch.int64)
        self.unbounded = not bool(self.least.any()) and all(m >= w.numel() for m, w in zip(self.most.tolist(), keys))
        self.k = k

    def f(self, per_layer: torch.Tensor) -> int:
        return int(torch.clamp(per_layer, self.least, self.most).sum())

    def window(self, lo: int, hi: int):
        return ops.row_value_window(self.keys, self.masks, self.rows, self.lamp, lo, hi, _limit(self.n), _BUCKETS)


def _sampled_window(req: _Request) -> tuple[int, int] | None:
    """(a, b): the values where the estimated f reaches k - n / _MARGIN and k + n / _MARGIN, from every
    stride-th row of each layer (f's counts scaled by the layer's rows over its sampled rows)."""
    if req.n < _SAMPLED_MIN:
        return None
    stride = -(-req.n // _SAMPLE)
    picks, pick_masks, pick_rows, scale = [], [], [], []
    for w, m, r in zip(req.keys, req.masks, req.rows):
        cols = w.numel() // r
        picks.append(w.reshape(r, cols)[::stride].contiguous())
        pick_masks.append(None if m is None else m.reshape(r, cols)[::stride].contiguous())
        pick_rows.append(picks[-1].shape[0])
        scale.append(r / pick_rows[-1])
    # The sampled rows of all layers of one width stacked into one tensor, with each row's layer: a count is
    # one searchsorted per width, however many layers there are.
    widths: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for i, (v, r) in enumerate(zip(ops.row_order_values(picks, pick_masks, pick_rows, req.lamp), pick_rows)):
        rows_of_layer, layer_of_row = widths.setdefault(v.numel() // r, ([], []))
        rows_of_layer.append(v.reshape(r, v.numel() // r))
        layer_of_row.append(torch.full((r,), i, dtype=torch.int64))
    del picks, pick_masks
    stacked = [(torch.cat(v), torch.cat(layer)) for v, layer in widths.values()]
    scale_t = torch.tensor(scale, dtype=torch.float64)

    def estimate(t: int) -> float:
        counts = torch.zeros(len(req.keys), dtype=torch.int64)
        for v, layer in stacked:
            probe = torch.full((v.shape[0], 1), t, dtype=torch.int64)
            counts.index_add_(0, layer, torch.searchsorted(v, probe, right=True).reshape(-1))
        return float(torch.clamp(counts * scale_t, req.least, req.most).sum())

    def first_reaching(target: float) -> int:  # the smallest t with estimate(t) >= target (_TOP if none)
        lo, hi = 0, _TOP
        while lo < hi:
            mid = (lo + hi) // 2
            if estimate(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

    margin = req.n / _MARGIN
    a, b = max(first_reaching(req.k - margin) - 1, 0), first_reaching(req.k + margin)
    return (a, b) if a < b else None


def _split(req: _Request, lt_rows: list[torch.Tensor], eq_rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, pruned per row at the threshold whose #{< T} and #{== T} per row are given."""
    return split_at_threshold(lt_rows, eq_rows, req.k, req.least, req.most, lambda i, pruned: select_counts(
        [req.keys[i]], [req.masks[i]], [req.rows[i]], req.lamp, pruned)[0])


def _narrowed(req: _Request, lo: int, hi: int, le_lo: list[torch.Tensor], hist: torch.Tensor) -> tuple[int, int]:
    """The bucket of a bracketing window (f(lo) < k <= f(hi)) where f reaches k, as (lo', hi'] bracketing it."""
    shift = window_shift(lo, hi, _BUCKETS)
    upto = torch.stack([c.sum() for c in le_lo])[:, None] + torch.cumsum(hist, 1)  # f's counts at each bucket's top
    reached = torch.clamp(upto, req.least[:, None], req.most[:, None]).sum(0) >= req.k
    j = int(torch.nonzero(reached)[0])
    return lo + (j << shift), min(lo + ((j + 1) << shift), hi)


def _threshold_in(req: _Request, f_lo: int, le_lo: list[torch.Tensor], inside: list[torch.Tensor]) -> int:
    """T among the collected values of a bracketing window."""
    if req.unbounded:  # f counts: T is the (k - f(lo))-th smallest value in the window
        return int(torch.kthvalue(torch.cat(inside), req.k - f_lo).values)
    ordered = [torch.sort(v).values for v in inside]
    candidates = torch.unique(torch.cat(ordered))
    base = torch.stack([c.sum() for c in le_lo])
    lo, hi = 0, candidates.numel() - 1  # f(candidates[-1]) = f(hi) >= k
    while lo < hi:
        mid = (lo + hi) // 2
        t = candidates[mid]
        counts = base + torch.stack([torch.searchsorted(v, t, right=True) for v in ordered])
        if req.f(counts) >= req.k:
            hi = mid
        else:
            lo = mid + 1
    return int(candidates[lo])


def select_counts(keys: list[torch.Tensor], masks: list[torch.Tensor | None], rows: list[int], lamp: bool, k: int,
                  least: list[int] | None = None, most: list[int] | None = None) -> list[torch.Tensor]:
    """Per layer, pruned elements per row (masked ones included): sorted_selection.select_counts on the order
    values of ops.row_order_values(keys, masks, rows, lamp), which are never all kept. Every layer must hold at
    least one row; bounds must be feasible (allocation.check_bounds)."""
    req = _Request(keys, masks, rows, lamp, k, least, most)
    masked_rows = [masked_per_row(m, r, w.numel()) for w, m, r in zip(keys, masks, rows)]
    masked = torch.stack([c.sum() for c in masked_rows])
    req.k = max(k, int(torch.maximum(masked, req.least).sum()))
    most_pruned = req.f(torch.tensor([w.numel() for w in keys], dtype=torch.int64))
    if most_pruned < req.k:  # the callers check the bounds first (allocation.check_bounds)
        raise ValueError(f"streamed_selection: {req.k} elements cannot be pruned within the bounds (at most "
                         f"{most_pruned})")
    if int(req.least.sum()) >= req.k or req.f(masked) >= req.k:  # T = 0: only masked-out elements are at or below
        return _split(req, [torch.zeros_like(c) for c in masked_rows], masked_rows)
    lo, hi = 0, _TOP  # f(lo) < k <= f(hi), narrowed pass by pass
    window = _sampled_window(req) or (lo, hi)
    while True:
        a, b = window
        le_a, le_b, inside, hist = req.window(a, b)
        f_a = req.f(torch.stack([c.sum() for c in le_a]))
        f_b = req.f(torch.stack([c.sum() for c in le_b]))
        if f_a >= req.k:  # T <= a
            hi, window = a, (lo, a)
            continue
        if f_b < req.k:  # T > b
            lo, window = b, (b, hi)
            continue
        lo, hi = a, b
        held = sum(int((y - x).sum()) for x, y in zip(le_a, le_b))
        if hi - lo == 1:  # one value in the window: T
            return _split(req, le_a, [y - x for x, y in zip(le_a, le_b)])
        if held <= _limit(req.n):
            break
        window = _narrowed(req, lo, hi, le_a, hist)
    t = _threshold_in(req, f_a, le_a, inside)
    lt_rows, eq_rows = [], []
    for x, y, v in zip(le_a, le_b, inside):
        unit = torch.repeat_interleave(torch.arange(x.numel()), y - x)  # each value's unit (runs in unit order)
        lt_rows.append(x.index_add(0, unit, (v < t).long()))
        eq_rows.append(torch.zeros_like(x).index_add_(0, unit, (v == t).long()))
    return _split(req, lt_rows, eq_rows)
