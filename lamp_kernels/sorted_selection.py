"""Exact global selection over units whose order values are sorted (the row and bounded selections).

Input: per layer an int64 tensor [rows, cols] whose rows are ascending (ops.row_order_values: 0 = masked
out, else 1 + the float64 bits of the score), the number k of weights to prune, and optionally per-layer
bounds least_i <= pruned_i <= most_i. Output: per layer the number of weights pruned in each row (int64
[rows]), for the order (value, layer, row, position) of reference.select:

    1. T = the smallest value t with  sum_i clamp(#{values_i <= t}, least_i, most_i) >= k  (bisection over the
       63-bit values: one host synchronisation per step, each a batched searchsorted per layer);
    2. layer i prunes clamp(#{< T}) plus, in layer order, its share of the remaining k at value T;
    3. inside a layer, a count between #{< T} and #{<= T} is split over rows by taking the elements equal
       to T row by row; a count clamped outside that range is split by the same selection run on that
       layer alone (its own T).

Pure torch on the values' device: CPU and CUDA alike, and testable without a GPU.
"""

from __future__ import annotations

import torch


def _count_le(values: list[torch.Tensor], t: int) -> torch.Tensor:
    """#{values_i <= t} per layer, int64 [L] on the first layer's device."""
    device = values[0].device
    parts = []
    for v in values:
        probe = torch.full((v.shape[0], 1), t, dtype=torch.int64, device=v.device)
        parts.append(torch.searchsorted(v, probe, right=True).sum().to(device))
    return torch.stack(parts)


def _threshold(values: list[torch.Tensor], k: int, least: torch.Tensor, most: torch.Tensor) -> int:
    # at the largest value the clamped count is sum(most) >= k: the caller's promise
    lo, hi = 0, int(torch.stack([v[:, -1].max() for v in values if v.numel()]).max()) if any(
        v.numel() for v in values) else 0
    while lo < hi:
        mid = (lo + hi) // 2
        if int(torch.clamp(_count_le(values, mid), least, most).sum()) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _split_rows(v: torch.Tensor, t: int, pruned: int) -> torch.Tensor:
    """Row counts of a layer pruning `pruned` elements, everything below t and then elements equal to t in
    row order (requires #{< t} <= pruned <= #{<= t})."""
    probe = torch.full((v.shape[0], 1), t, dtype=torch.int64, device=v.device)
    lt = torch.searchsorted(v, probe).reshape(-1)
    eq = torch.searchsorted(v, probe, right=True).reshape(-1) - lt
    extra = pruned - int(lt.sum())
    before = torch.cumsum(eq, 0) - eq
    return lt + torch.clamp(extra - before, min=0).minimum(eq)


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
    lt, le = _count_le(values, t - 1), _count_le(values, t)
    below = torch.clamp(lt, least_t, most_t).tolist()
    upto = torch.clamp(le, least_t, most_t).tolist()
    lt, le = lt.tolist(), le.tolist()
    need = k - sum(below)
    rows = []
    for i, v in enumerate(values):
        take = min(need, upto[i] - below[i])
        need -= take
        pruned = below[i] + take
        if lt[i] <= pruned <= le[i]:
            rows.append(_split_rows(v, t, pruned))
        else:  # a bound moved this layer's count: its own selection decides which elements
            rows.append(select_counts([v], pruned)[0])
    return rows
