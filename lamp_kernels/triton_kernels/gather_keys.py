"""Refinement pass for fp32/fp64 layers: the keys of the few bins where a cut can fall (one more read).

The solver's plan leaves each fp32/fp64 layer a candidate bin range; this pass copies the alive keys in
those ranges into one compact buffer (block-local prefix sums place them, one atomic per block reserves the
space), then sorts them per layer. Sizes are known beforehand from the histogram counts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels_torch import gather_bin_keys_ref
from . import layer_table
from .keys import BITS, layout, load_alive, load_keys

BLOCK = 1 << 11


@triton.jit
def _gather_keys_kernel(numels, w_ptrs, mask_ptrs, tile_layer, tile_start, bin_lo, bin_hi, cursors, out,
                        INT: tl.constexpr, KEY_MASK: tl.constexpr, SHIFT: tl.constexpr,
                        TILE: tl.constexpr, BLOCK: tl.constexpr):
    layer, start, n, w_ptr, mask_ptr = layer_table.program_tile(numels, w_ptrs, mask_ptrs, tile_layer, tile_start)
    lo = tl.load(bin_lo + layer)
    hi = tl.load(bin_hi + layer)
    for i in range(0, TILE, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        alive = load_alive(mask_ptr, offs, offs < n)
        key = load_keys(w_ptr, offs, alive, INT, KEY_MASK)
        b = key >> SHIFT
        take = alive & (b >= lo) & (b <= hi)
        count = tl.sum(take.to(tl.int64), 0)
        if count > 0:
            base = tl.atomic_add(cursors + layer, count)  # cursors start at each layer's offset in out
            tl.store(out + base + tl.cumsum(take.to(tl.int64), 0) - 1, key, mask=take)


def gather_keys(weights: list[torch.Tensor], masks: list[torch.Tensor | None], regions: list[tuple[int, int]],
                sizes: list[int], table: layer_table.LayerTable | None = None,
                block: int = BLOCK) -> list[torch.Tensor]:
    """Sorted int64 keys of layer i's alive elements in bins regions[i] = (lo, hi) (sizes[i] of them, from
    the histogram), for contiguous same-dtype layers on one device, in one launch."""
    device = weights[0].device
    total = sum(sizes)
    out = torch.empty(total, dtype=torch.int64, device=device)
    offsets = torch.tensor([0] + sizes, dtype=torch.int64).cumsum(0)
    table = table or layer_table.build(weights, masks, layer_table.DEFAULT_TILE)
    block = min(block, table.tile)  # a program's tile is whole blocks
    assert table.tile % block == 0
    if total:
        _, shift, _ = layout(weights[0].dtype)
        int_type, key_mask = BITS[weights[0].dtype]
        lo = torch.tensor([r[0] for r in regions], dtype=torch.int64, device=device)
        hi = torch.tensor([r[1] for r in regions], dtype=torch.int64, device=device)
        cursors = offsets[:-1].to(device)
        _gather_keys_kernel[(table.tiles,)](table.numels, table.w_ptrs, table.mask_ptrs, table.tile_layer,
                                            table.tile_start, lo, hi, cursors, out, INT=int_type,
                                            KEY_MASK=key_mask, SHIFT=shift, TILE=table.tile, BLOCK=block)
    # sort by key, then stably by layer: every layer's keys end up sorted in its own segment
    layer_of = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                       torch.tensor(sizes, device=device), output_size=total)
    keys, order = torch.sort(out)
    segments = keys[torch.sort(layer_of[order], stable=True).indices]
    return list(torch.split(segments, sizes))


def gather_keys_ref(weights, masks, regions):
    return [gather_bin_keys_ref(w, m, lo, hi) for w, m, (lo, hi) in zip(weights, masks, regions)]
