"""Units: a layer viewed as [rows, numel / rows], each row with its own order (masked-out first, then (key,
column)). granularity="row" uses the output rows (options.rows_of); a bounded selection at granularity="layer"
uses rows = 1, the whole layer one unit. These are the default (pure) kernels of the row ops in ops.py; the
C++ kernels (csrc/cpu/row_kernels.cpp) and the CUDA path (cuda_rows.py) must return identical tensors.

    row_order_values_ref(keys, masks, rows, lamp) -> int64[numel] per layer, unit by unit along its order:
        0 masked out, else 1 + float64 bits of the LAMP score (lamp) or of the key's value; ascending per unit
    row_lamp_scores_ref(keys, masks, rows, float64) -> per-unit LAMP scores, flat order
    row_cut_masks_ref(keys, masks, rows, counts) -> keep masks: unit r prunes the first counts[r] of its order
    row_value_window_ref(keys, masks, rows, lamp, lo, hi, limit, buckets) -> (le_lo, le_hi, inside, hist): per
        unit #{order values <= lo} and <= hi (int64 [rows] per layer), the values in (lo, hi] unit by unit
        along each order (all empty if more than `limit`), and per layer their histogram over `buckets`
        buckets of width 2^window_shift(lo, hi, buckets) from lo + 1 (int64 [layers, buckets])
"""

from __future__ import annotations

import torch

from . import reference
from .kernels_torch import magnitude_keys

_CHUNK = 1 << 22


def masked_per_row(mask: torch.Tensor | None, rows: int, numel: int, device=None) -> torch.Tensor:
    """Masked-out elements in each of a layer's rows (int64 [rows]; zeros without a mask). On CPU tensors one
    C++ pass (torch's per-row sums of a bool tensor take 20 times as long)."""
    from . import ops  # here, not at the top: ops imports this module

    if mask is None:
        return torch.zeros(rows, dtype=torch.int64, device=device)
    if mask.device.type == "cpu" and ops._C is not None:
        return ops._C.masked_per_row([mask], [rows])[0]
    cols = numel // rows if rows else 0
    return cols - torch.count_nonzero(mask.reshape(rows, cols), dim=1)


def _unit_ranges(numel: int, rows: int) -> list[range]:
    cols = numel // rows if rows else 0
    return [range(r * cols, (r + 1) * cols) for r in range(rows)]


def row_order_values_ref(keys: list[torch.Tensor], masks: list[torch.Tensor | None], rows: list[int],
                         lamp: bool) -> list[torch.Tensor]:
    out = []
    for key, mask, r in zip(keys, masks, rows):
        values = torch.zeros(key.numel(), dtype=torch.int64)
        for unit in _unit_ranges(key.numel(), r):
            _, scores = reference._unit_scores(key, mask, unit, lamp)
            bits = torch.tensor([0.0 if s is None else s for s in scores], dtype=torch.float64).view(torch.int64) + 1
            alive = torch.tensor([s is not None for s in scores], dtype=torch.bool)
            values[unit.start:unit.stop] = torch.where(alive, bits, 0)
        out.append(values.to(key.device))
    return out


def row_lamp_scores_ref(keys: list[torch.Tensor], masks: list[torch.Tensor | None], rows: list[int],
                        float64: bool) -> list[torch.Tensor]:
    dtype = torch.float64 if float64 else torch.float32
    out = []
    for key, mask, r in zip(keys, masks, rows):
        scores = torch.zeros(key.numel(), dtype=torch.float64)
        for unit in _unit_ranges(key.numel(), r):
            order, along = reference._unit_scores(key, mask, unit, True)
            scores[order] = torch.tensor([0.0 if s is None else s for s in along], dtype=torch.float64)
        out.append(scores.to(dtype).reshape(key.shape).to(key.device))
    return out


def row_cut_masks_ref(keys: list[torch.Tensor], masks: list[torch.Tensor | None], rows: list[int],
                      counts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Pure torch on any device: a stable sort of each row's keys (masked ones as -1) gives its order."""
    out = []
    for key, mask, r, count in zip(keys, masks, rows, counts):
        cols = key.numel() // r if r else 0
        keep = torch.ones(r, cols, dtype=torch.bool, device=key.device)
        flat = key.detach().reshape(-1)
        step = max(1, _CHUNK // max(cols, 1))
        for s in range(0, r, step):
            part = magnitude_keys(flat[s * cols:(s + step) * cols]).reshape(-1, cols)
            if mask is not None:
                part = torch.where(mask.reshape(r, cols)[s:s + step], part, -1)
            order = torch.sort(part, dim=1, stable=True).indices
            kept = torch.arange(cols, device=key.device)[None, :] >= count[s:s + step, None].to(key.device)
            keep[s:s + step].scatter_(1, order, kept)
        if mask is not None:
            keep &= mask.reshape(r, cols)
        out.append(keep.reshape(key.shape))
    return out


def window_shift(lo: int, hi: int, buckets: int) -> int:
    """The least shift with (hi - lo - 1) >> shift < buckets (0 without buckets): row_value_window's buckets."""
    shift = 0
    while buckets and shift < 63 and (hi - lo - 1) >> shift >= buckets:
        shift += 1
    return shift


def row_value_window_ref(keys: list[torch.Tensor], masks: list[torch.Tensor | None], rows: list[int], lamp: bool,
                         lo: int, hi: int, limit: int, buckets: int):
    if not 0 <= lo < hi or limit < 0 or buckets < 0:
        raise RuntimeError("row_value_window: needs 0 <= lo < hi, limit and buckets >= 0")
    shift = window_shift(lo, hi, buckets)
    le_lo, le_hi, inside, hist = [], [], [], []
    for values, r in zip(row_order_values_ref(keys, masks, rows, lamp), rows):
        units = values.reshape(r, values.numel() // r if r else 0)
        le_lo.append((units <= lo).sum(1))
        le_hi.append((units <= hi).sum(1))
        found = units[(units > lo) & (units <= hi)]  # row-major: unit by unit, ascending in each
        inside.append(found)
        h = torch.zeros(buckets, dtype=torch.int64, device=values.device)
        if buckets:
            h.index_add_(0, (found - lo - 1) >> shift, torch.ones_like(found))
        hist.append(h)
    if sum(f.numel() for f in inside) > limit:
        inside = [f[:0] for f in inside]
    return le_lo, le_hi, inside, torch.stack(hist) if hist else torch.empty(0, buckets, dtype=torch.int64)
