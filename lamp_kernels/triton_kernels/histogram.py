"""Pass 1 of the masks path: per-layer histograms of |w| bit patterns (DESIGN-NOTES §2.3).

bf16/fp16: one bin per value (2^15 bins), counts only: an exact counting sort. fp32/fp64: the top 16 bits
of the key (2^16 bins) with the exact sum of M^2 per bin (M the integer significand) as 27-bit limbs, which
the solver scales by the bin's exponent; the cut inside a bin is found by the refinement pass (gather_keys).
Integer atomics make the result independent of scheduling: identical to kernels_torch.bin_summary_ref.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels_torch import bin_summary_ref
from . import layer_table
from .keys import BITS, layout, load_alive, load_keys

BLOCK = 1 << 11


@triton.jit
def _histogram_kernel(numels, w_ptrs, mask_ptrs, tile_layer, tile_start, counts, sums,
                      INT: tl.constexpr, KEY_MASK: tl.constexpr, SHIFT: tl.constexpr, BINS: tl.constexpr,
                      LIMBS: tl.constexpr, TILE: tl.constexpr, BLOCK: tl.constexpr):
    layer, start, n, w_ptr, mask_ptr = layer_table.program_tile(numels, w_ptrs, mask_ptrs, tile_layer, tile_start)
    row = layer.to(tl.int64) * BINS
    for i in range(0, TILE, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        valid = offs < n
        alive = load_alive(mask_ptr, offs, valid)
        key = load_keys(w_ptr, offs, alive, INT, KEY_MASK)
        b = row + (key >> SHIFT)
        tl.atomic_add(counts + b, 1, mask=alive)
        if LIMBS == 2:  # fp32: M < 2^24, M^2 < 2^48 in two 27-bit limbs
            frac = key & 0x7FFFFF
            m = tl.where((key >> 23) > 0, frac | 0x800000, frac)
            sq = m * m
            tl.atomic_add(sums + 2 * b, sq & 0x7FFFFFF, mask=alive)
            tl.atomic_add(sums + 2 * b + 1, sq >> 27, mask=alive)
        if LIMBS == 4:  # fp64: M = a 2^27 + b < 2^53, M^2 = a^2 2^54 + 2ab 2^27 + b^2, limbs < 2^28
            frac = key & 0xFFFFFFFFFFFFF
            m = tl.where((key >> 52) > 0, frac | 0x10000000000000, frac)
            hi = m >> 27
            lo = m & 0x7FFFFFF
            bb = lo * lo
            ab2 = 2 * hi * lo
            aa = hi * hi
            tl.atomic_add(sums + 4 * b, bb & 0x7FFFFFF, mask=alive)
            tl.atomic_add(sums + 4 * b + 1, (bb >> 27) + (ab2 & 0x7FFFFFF), mask=alive)
            tl.atomic_add(sums + 4 * b + 2, (ab2 >> 27) + (aa & 0x7FFFFFF), mask=alive)
            tl.atomic_add(sums + 4 * b + 3, aa >> 27, mask=alive)


def histograms(weights: list[torch.Tensor], masks: list[torch.Tensor | None],
               table: layer_table.LayerTable | None = None, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int64[L, B], sums int64[L, B, limbs]) of contiguous same-dtype layers on one device, in one
    launch; row i equals bin_summary_ref(weights[i], masks[i])."""
    dtype = weights[0].dtype
    bins, shift, limbs = layout(dtype)
    device = weights[0].device
    counts = torch.zeros(len(weights), bins, dtype=torch.int64, device=device)
    sums = torch.zeros(len(weights), bins, max(limbs, 1), dtype=torch.int64, device=device)
    table = table or layer_table.build(weights, masks, layer_table.DEFAULT_TILE)
    block = min(block, table.tile)  # a program's tile is whole blocks
    assert table.tile % block == 0
    if table.tiles:
        int_type, key_mask = BITS[dtype]
        _histogram_kernel[(table.tiles,)](table.numels, table.w_ptrs, table.mask_ptrs, table.tile_layer,
                                          table.tile_start, counts, sums, INT=int_type, KEY_MASK=key_mask,
                                          SHIFT=shift, BINS=bins, LIMBS=limbs, TILE=table.tile, BLOCK=block)
    return counts, sums[:, :, :limbs]


def histograms_ref(weights: list[torch.Tensor], masks: list[torch.Tensor | None]):
    rows = [bin_summary_ref(w, m) for w, m in zip(weights, masks)]
    return torch.stack([c for c, _ in rows]), torch.stack([s for _, s in rows])
