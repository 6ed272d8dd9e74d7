"""The last pass: each layer's cut applied to its weights, as a boolean mask or in place (pruned := 0).

A cut (cut_key, ties) keeps alive elements with key > cut_key, and those with key == cut_key after the
first `ties` of them in flat order (the contract's tie rule). That flat rank is what makes this pass more
than a comparison: each tile counts its elements equal to cut_key, waits for the running count of the
tiles before it in the same layer (tile_prev, always an earlier program: programs start in order, so the
wait ends), adds its own and publishes it (stored +1 so that 0 means "not yet"). Layers whose cut splits no
tie group (ties = 0) skip the chain. The in-place variant writes only the weights it zeroes and allocates
nothing the size of a layer, for models that barely fit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels_torch import apply_cut_ref, zero_cut_ref
from . import layer_table
from .keys import BITS, load_alive, load_keys

BLOCK = 1 << 11


@triton.jit
def _cut_mask_kernel(numels, w_ptrs, mask_ptrs, out_ptrs, tile_layer, tile_start, tile_prev, cut_keys, ties,
                     chain, INT: tl.constexpr, KEY_MASK: tl.constexpr, ZERO: tl.constexpr,
                     TILE: tl.constexpr, BLOCK: tl.constexpr):
    layer, start, n, w_ptr, mask_ptr = layer_table.program_tile(numels, w_ptrs, mask_ptrs, tile_layer, tile_start)
    cut = tl.load(cut_keys + layer)
    n_ties = tl.load(ties + layer)
    before = start * 0  # int64: equal keys in this layer before the current position
    if n_ties > 0:
        count = start * 0
        for i in range(0, TILE, BLOCK):
            offs = start + i + tl.arange(0, BLOCK)
            alive = load_alive(mask_ptr, offs, offs < n)
            key = load_keys(w_ptr, offs, alive, INT, KEY_MASK)
            count += tl.sum((alive & (key == cut)).to(tl.int64), 0)
        pid = tl.program_id(0)
        prev = tl.load(tile_prev + pid)
        if prev >= 0:
            seen = tl.atomic_add(chain + prev, 0)
            while seen == 0:
                seen = tl.atomic_add(chain + prev, 0)
            before = seen - 1
        tl.atomic_xchg(chain + pid, before + count + 1)
    for i in range(0, TILE, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        valid = offs < n
        alive = load_alive(mask_ptr, offs, valid)
        key = load_keys(w_ptr, offs, alive, INT, KEY_MASK)
        equal = alive & (key == cut)
        rank = before + tl.cumsum(equal.to(tl.int64), 0) - 1
        keep = alive & ((key > cut) | (equal & (rank >= n_ties)))
        before += tl.sum(equal.to(tl.int64), 0)
        if ZERO:
            w = w_ptr.to(tl.pointer_type(INT))
            tl.store(w + offs, tl.zeros([BLOCK], INT), mask=valid & ~keep)
        else:
            out = tl.load(out_ptrs + layer).to(tl.pointer_type(tl.int8))
            tl.store(out + offs, keep.to(tl.int8), mask=valid)


def _launch(weights, masks, outs, cuts, zero: bool, table, block: int) -> None:
    device = weights[0].device
    table = table or layer_table.build(weights, masks, layer_table.DEFAULT_TILE)
    block = min(block, table.tile)  # a program's tile is whole blocks
    assert table.tile % block == 0
    if not table.tiles:
        return
    int_type, key_mask = BITS[weights[0].dtype]
    out_ptrs = torch.tensor([o.data_ptr() for o in outs] if outs else [0] * len(weights), dtype=torch.int64)
    cut_keys = torch.tensor([c[0] for c in cuts], dtype=torch.int64, device=device)
    ties = torch.tensor([c[1] for c in cuts], dtype=torch.int64, device=device)
    chain = torch.zeros(table.tiles, dtype=torch.int64, device=device)
    _cut_mask_kernel[(table.tiles,)](table.numels, table.w_ptrs, table.mask_ptrs, out_ptrs.to(device),
                                     table.tile_layer, table.tile_start, table.tile_prev, cut_keys, ties, chain,
                                     INT=int_type, KEY_MASK=key_mask, ZERO=zero, TILE=table.tile, BLOCK=block)


def cut_masks(weights: list[torch.Tensor], masks: list[torch.Tensor | None], cuts: list[tuple[int, int]],
              table: layer_table.LayerTable | None = None, block: int = BLOCK) -> list[torch.Tensor]:
    """Keep masks (bool, each layer's shape) of contiguous same-dtype layers on one device, in one launch."""
    outs = [torch.empty(w.shape, dtype=torch.bool, device=w.device) for w in weights]
    _launch(weights, masks, outs, cuts, False, table, block)
    return outs


def zero_cuts_(weights: list[torch.Tensor], masks: list[torch.Tensor | None], cuts: list[tuple[int, int]],
               table: layer_table.LayerTable | None = None, block: int = BLOCK) -> None:
    """In place: every weight the cut does not keep (pruned, or masked out) becomes +0."""
    _launch(weights, masks, None, cuts, True, table, block)


def cut_masks_ref(weights, masks, cuts):
    return [apply_cut_ref(w, m, key, t) for w, m, (key, t) in zip(weights, masks, cuts)]


def zero_cuts_ref_(weights, masks, cuts):
    for w, m, (key, t) in zip(weights, masks, cuts):
        zero_cut_ref(w, m, key, t)
