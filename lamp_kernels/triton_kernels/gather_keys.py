"""Refinement pass for fp32/fp64 layers: the keys of the few bins where a cut can fall (one more read).

The solver's plan leaves each fp32/fp64 layer a candidate bin range; this pass copies the alive keys in
those ranges into one compact buffer (block-local prefix sums place them, one relaxed atomic per block
reserves the space), then sorts them per layer. Sizes are known beforehand from the histogram counts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels_torch import gather_bin_keys_many_ref
from . import layer_table
from .keys import BITS, layout, load_alive, load_keys

BLOCK = 1 << 11


@triton.jit
def _gather_block(w_ptr, m_ptr, has_mask, offs, n, lo, hi, cursor, out, KEY_MASK: tl.constexpr,
                  SHIFT: tl.constexpr, FULL: tl.constexpr):
    valid = offs < n
    alive = load_alive(m_ptr, offs, valid, has_mask, FULL)
    key = load_keys(w_ptr, offs, valid, FULL, KEY_MASK)
    b = key >> SHIFT
    take = alive & (b >= lo) & (b <= hi)
    count = tl.sum(take.to(tl.int64), 0)
    if count > 0:
        base = tl.atomic_add(cursor, count, sem="relaxed")  # cursors start at each layer's offset in out
        tl.store(out + base + tl.cumsum(take.to(tl.int64), 0) - 1, key, mask=take)


@triton.jit
def _gather_keys_kernel(numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, bin_lo, bin_hi, cursors,
                        out, KEY_MASK: tl.constexpr, SHIFT: tl.constexpr, TILE: tl.constexpr, BLOCK: tl.constexpr,
                        VEC: tl.constexpr, ALIGNED: tl.constexpr):
    layer, start, n, w_ptr, m_ptr, has_mask = layer_table.program_tile(
        tl.program_id(0), numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, TILE, VEC, ALIGNED)
    lo = tl.load(bin_lo + layer)
    hi = tl.load(bin_hi + layer)
    if lo <= hi:  # layers with nothing to gather have an empty range
        if start + TILE <= n:
            for i in range(0, TILE, BLOCK):
                offs = start + i + tl.arange(0, BLOCK)
                _gather_block(w_ptr, m_ptr, has_mask, offs, n, lo, hi, cursors + layer, out, KEY_MASK, SHIFT, True)
        else:
            for i in range(0, TILE, BLOCK):
                offs = start + i + tl.arange(0, BLOCK)
                _gather_block(w_ptr, m_ptr, has_mask, offs, n, lo, hi, cursors + layer, out, KEY_MASK, SHIFT,
                              False)


def gather_bin_keys(weights: list[torch.Tensor], masks: list[torch.Tensor | None], bin_lo: list[int],
                    bin_hi: list[int], sizes: list[int], tile: int | None = None, block: int = BLOCK) -> torch.Tensor:
    """The op lamp_kernels::gather_bin_keys on the device: layer i's sorted int64 keys of its alive elements
    in bins [bin_lo[i], bin_hi[i]] (sizes[i] of them, from the histogram), concatenated in layer order; one
    launch over all the layers."""
    ws = [w.detach().contiguous() for w in weights]
    ms = [None if m is None else m.contiguous() for m in masks]
    device = ws[0].device
    total = sum(sizes)
    out = torch.empty(total, dtype=torch.int64, device=device)
    with layer_table.on(device):
        _launch(ws, ms, bin_lo, bin_hi, sizes, out, tile, block)
    # sort by key, then stably by layer: every layer's keys end up sorted in its own segment
    layer_of = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                       torch.tensor(sizes, device=device), output_size=total)
    keys, order = torch.sort(out)
    return keys[torch.sort(layer_of[order], stable=True).indices]


def _launch(ws, ms, bin_lo, bin_hi, sizes, out, tile, block) -> None:
    device, total = ws[0].device, out.numel()
    if total:
        table = layer_table.build(ws, ms, tile or layer_table.DEFAULT_TILE)
        block = min(block, table.tile)  # a program's tile is whole blocks
        assert table.tile % block == 0
        _, shift, _ = layout(ws[0].dtype)
        offsets = torch.tensor([0] + sizes, dtype=torch.int64).cumsum(0)
        cursors = offsets[:-1].to(device)
        lo = torch.tensor(bin_lo, dtype=torch.int64).to(device)
        hi = torch.tensor(bin_hi, dtype=torch.int64).to(device)
        _gather_keys_kernel[(table.tiles,)](*table.args(), lo, hi, cursors, out, KEY_MASK=BITS[ws[0].dtype][1],
                                            SHIFT=shift, TILE=table.tile, BLOCK=block,
                                            VEC=layer_table.vec(ws[0].dtype), ALIGNED=table.aligned)


gather_bin_keys_ref = gather_bin_keys_many_ref  # the readable twin (kernels_torch)
