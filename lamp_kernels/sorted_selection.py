"""Exact global selection over units whose order values are sorted (the row and bounded selections on CUDA;
on CPU tensors streamed_selection makes the same selection without keeping the values).

Input: per layer an int64 tensor [rows, cols] whose rows are ascending (ops.row_order_values: 0 = masked
out, else 1 + the float64 bits of the score), the number k of weights to prune, and optionally per-layer
bounds least_i <= pruned_i <= most_i. Output: per layer the number of weights pruned in each row (int64
[rows]), for the order (value, layer, row, position) of reference.select:

    1. T = the smallest value t with  f(t) = sum_i clamp(#{values_i <= t}, least_i, most_i) >= k: a strided sample
       of the rows brackets it, a < T <= b, checked exactly; without bounds T is then the (k - f(a))-th
       smallest of the values in (a, b], else bisection over [a + 1, b] (or the whole 63-bit range for small
       inputs) finds it, one host synchronisation per step, each a batched searchsorted per layer;
    2. layer i prunes clamp(#{< T}) plus, in layer order, its share of the remaining k at value T;
    3. inside a layer, a count between #{< T} and #{<= T} is split over rows by taking the elements equal
       to T row by row; a count clamped outside that range is split by the same selection run on that
       layer alone (its own T) (split_at_threshold, which streamed_selection shares).

Pure torch on the values' device: CPU and CUDA alike, and testable without a GPU.
"""

from __future__ import annotations

import math

import torch

_SAMPLED_MIN = 1 << 20  # fewer values: bisection alone (64 steps) is cheap


def _count_le(values: list[torch.Tensor], t: int) -> torch.Tensor:
    """#{values_i <= t} per layer, int64 [L] on the first layer's device."""
    device = values[0].device
    parts = []
    for v in values:
        probe = torch.full((v.shape[0], 1), t, dtype=torch.int64, device=v.device)
        parts.append(torch.searchsorted(v, probe, right=True).sum().to(device))
    return torch.stack(parts)


def _clamped(values: list[torch.Tensor], t: int, least: torch.Tensor, most: torch.Tensor) -> int:
    return int(torch.clamp(_count_le(values, t), least, most).sum())


def _bracket(values: list[torch.Tensor], k: int, least: torch.Tensor, most: torch.Tensor, top: int):
    """(a, b, f(a)) with f(a) < k <= f(b), f(t) = the clamped count at t, from a strided sample of the rows (each
    row's first value and every stride-th after it): two sample values around the k-th value, checked exactly.
    A row with c values at or below the k-th has ceil(c / stride) of them in the sample, so the k-th value's rank
    in the sample is k / stride plus between 0 and 1 per row, about half on average: a tight window around
    that is tried first, then the whole range, then a wider one. None when sampling does not pay or every
    window fails."""
    n = sum(v.numel() for v in values)
    rows = sum(v.shape[0] for v in values)
    if n < _SAMPLED_MIN:
        return None
    stride = max(1, 4 * math.isqrt(n // max(rows, 1)))
    sample = torch.cat([v[:, ::stride].reshape(-1) for v in values])
    center = k // stride + rows // 2
    for margin in (4 * math.isqrt(rows) + 16, rows // 2 + 16, 2 * rows + 64):
        j_lo, j_hi = center - margin, center + margin  # either may fall outside [1, sample size]
        if j_lo < 1 and j_hi > sample.numel():
            return None  # the window is everything: bisection costs less than gathering it
        a = int(torch.kthvalue(sample, min(j_lo, sample.numel())).values) if j_lo >= 1 else -1
        b = int(torch.kthvalue(sample, max(j_hi, 1)).values) if j_hi <= sample.numel() else top
        f_a = _clamped(values, a, least, most)
        if f_a < k <= _clamped(values, b, least, most):
            return a, b, f_a
    return None


def _kth_between(values: list[torch.Tensor], a: int, b: int, r: int) -> int:
    """The r-th smallest (1-based) of the values in (a, b] over all layers: each row's run of them gathered by
    index, then one selection."""
    parts = []
    for v in values:
        rows, cols = v.shape
        lo = torch.searchsorted(v, torch.full((rows, 1), a, dtype=torch.int64, device=v.device), right=True)
        hi = torch.searchsorted(v, torch.full((rows, 1), b, dtype=torch.int64, device=v.device), right=True)
        lengths = (hi - lo).reshape(-1)
        total = int(lengths.sum())
        if not total:
            continue
        starts = torch.arange(rows, device=v.device) * cols + lo.reshape(-1)
        skip = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths - starts, lengths)
        parts.append(v.reshape(-1)[torch.arange(total, device=v.device) - skip])
    return int(torch.kthvalue(torch.cat([p.to(values[0].device) for p in parts]), r).values)


def _threshold(values: list[torch.Tensor], k: int, least: torch.Tensor, most: torch.Tensor) -> int:
    if int(least.sum()) >= k:  # f(-1) = sum(least) already reaches k (e.g. k is the forced minimum)
        return 0
    # at the largest value the clamped count is sum(most) >= k: the caller's promise
    top = int(torch.stack([v[:, -1].max() for v in values if v.numel()]).max()) if any(
        v.numel() for v in values) else 0
    lo, hi = 0, top
    found = _bracket(values, k, least, most, top)
    if found is not None:
        a, b, f_a = found
        sizes = torch.tensor([v.numel() for v in values], device=least.device)
        if not bool(least.any()) and bool((most >= sizes).all()):  # no bounds: f counts, so T is a rank
            return _kth_between(values, a, b, k - f_a)
        lo, hi = a + 1, b
    while lo < hi:
        mid = (lo + hi) // 2
        if _clamped(values, mid, least, most) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def split_at_threshold(lt_rows: list[torch.Tensor], eq_rows: list[torch.Tensor], k: int, least: torch.Tensor,
                       most: torch.Tensor, alone) -> list[torch.Tensor]:
    """Per layer, pruned per row at the threshold T, given each row's #{< T} and #{== T}: layer i prunes
    clamp(#{< T}) plus, in layer order, its share of the rest of k at T, taking the elements equal to T row by
    row; a layer whose count a bound moved outside [#{< T}, #{<= T}] takes alone(i, count), its own selection.
    Shared with streamed_selection."""
    lt = torch.stack([c.sum().to(least.device) for c in lt_rows])
    le = lt + torch.stack([c.sum().to(least.device) for c in eq_rows])
    below = torch.clamp(lt, least, most).tolist()
    upto = torch.clamp(le, least, most).tolist()
    lt, le = lt.tolist(), le.tolist()
    need = k - sum(below)
    out = []
    for i, (lt_i, eq_i) in enumerate(zip(lt_rows, eq_rows)):
        take = min(need, upto[i] - below[i])
        need -= take
        pruned = below[i] + take
        if lt[i] <= pruned <= le[i]:  # everything below T, then the elements equal to T row by row
            before = torch.cumsum(eq_i, 0) - eq_i
            out.append(lt_i + torch.clamp(pruned - lt[i] - before, min=0).minimum(eq_i))
        else:  # a bound moved this layer's count: its own selection decides which elements
            out.append(alone(i, pruned))
    return out


def select_counts(values: list[torch.Tensor], k: int, least: list[int] | None = None,
                  most: list[int] | None = None) -> list[torch.Tensor]:
    """Per layer, pruned elements per row (masked ones included). Every layer must hold at least one row;
    bounds must be feasible (allocation.check_bounds); already-masked elements are pruned whatever k is."""
    device = values[0].device
    n = len(values)
    least_t = torch.tensor(least if least is not None else [0] * n, dtype=torch.int64, device=device)
    most_t = torch.tensor(most if most is not None else [v.numel() for v in values], dtype=torch.int64,
                          device=device)
    masked = _count_le(values, 0)
    k = max(k, int(torch.maximum(masked, least_t).sum()))
    t = _threshold(values, k, least_t, most_t)
    lt_rows, eq_rows = [], []
    for v in values:
        probe = torch.full((v.shape[0], 1), t, dtype=torch.int64, device=v.device)
        lt_rows.append(torch.searchsorted(v, probe).reshape(-1))
        eq_rows.append(torch.searchsorted(v, probe, right=True).reshape(-1) - lt_rows[-1])
    return split_at_threshold(lt_rows, eq_rows, k, least_t, most_t,
                              lambda i, pruned: select_counts([values[i]], pruned)[0])
