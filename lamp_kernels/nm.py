"""N:M sparsity: in every group of M consecutive weights along a row, the M - N least important are pruned.

The order inside a group is (masked-out first, key, position), as everywhere in this library; so the pattern is
deterministic under ties, and a weight already masked out is the first to go. Rows are those of
options.rows_of (dim 0 of a tensor with >= 2 dims); a row's length must be a multiple of M. CPU tensors (M up
to 64) go through one C++ pass (ops._C.nm_keep: each element's rank in its group); elsewhere pure torch on the
keys' device, a stable sort of a chunk of groups at a time. reference.nm_masks is the spec.
"""

from __future__ import annotations

import torch

from . import ops
from .kernels_torch import magnitude_keys
from .options import rows_of

_CHUNK_GROUPS = 1 << 20
_MAX_COMPILED_GROUP = 64


def nm_masks(keys: list[torch.Tensor], masks: list[torch.Tensor | None], names: list[str], n: int,
             m: int, scales: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """The given masks, with the N:M pattern's pruned weights masked out too (bool, keys' shapes). scales[i]
    set: layer i's keys are the column-scaled importances of keys[i] (importance.ColumnScaled), made by the C++
    pass as it reads the weight, or one layer at a time elsewhere."""
    for key, name in zip(keys, names):
        cols = key.numel() // rows_of(tuple(key.shape)) if key.numel() else 0
        if cols % m:
            raise ValueError(f"{name}: rows of {cols} weights do not split into groups of {m}")
    scales = scales or [None] * len(keys)
    return [_nm_keep(key.detach(), mask, n, m, s) for key, mask, s in zip(keys, masks, scales)]


def _nm_keep(key: torch.Tensor, mask: torch.Tensor | None, n: int, m: int,
             scale: torch.Tensor | None = None) -> torch.Tensor:
    if key.device.type == "cpu" and ops._C is not None and m <= _MAX_COMPILED_GROUP:
        return ops._C.nm_keep(key, mask, n, m) if scale is None else ops._C.nm_keep_scaled(key, mask, scale, n, m)
    if scale is not None:
        from .importance import scaled_importance

        key = scaled_importance(key, scale)
    return nm_keep_torch(key, mask, n, m)


def nm_keep_torch(key: torch.Tensor, mask: torch.Tensor | None, n: int, m: int) -> torch.Tensor:
    """One layer's keep-mask, in pure torch: a stable sort of each group of m (its rank keys: masked-out -1)."""
    flat = key.reshape(-1)
    keep = torch.ones(flat.numel() // m, m, dtype=torch.bool, device=key.device)
    alive = None if mask is None else mask.reshape(-1, m)
    for s in range(0, keep.shape[0], _CHUNK_GROUPS):
        part = magnitude_keys(flat[s * m:(s + _CHUNK_GROUPS) * m]).reshape(-1, m)
        if alive is not None:
            part = torch.where(alive[s:s + _CHUNK_GROUPS], part, -1)  # masked out sorts first
        first = torch.sort(part, dim=1, stable=True).indices[:, : m - n]
        keep[s:s + _CHUNK_GROUPS].scatter_(1, first, False)
    if alive is not None:
        keep &= alive
    return keep.reshape(key.shape)
