"""The last pass: each layer's cut applied to its weights, as a boolean mask or in place (pruned := 0).

A cut (cut_key, ties) keeps alive elements with key > cut_key, and those with key == cut_key after the
first `ties` of them in flat order (the contract's tie rule). That flat rank is what makes this pass more
than a comparison, for layers whose cut splits a tie group (ties > 0): each tile counts its elements equal
to cut_key, and needs the count of all earlier tiles of its layer. It gets it by decoupled look-back:

  * a program takes its tile from an atomic ticket counter, so tiles are handed out in the order programs
    actually start, never in an order the hardware might not honour (programs of a grid need not start in
    index order, e.g. under MPS or on a shared GPU);
  * it publishes its own count at once (AGGREGATE), then walks back over the earlier tiles of its layer,
    adding their published counts until it meets one that carries the inclusive count of everything before
    it (INCLUSIVE), and publishes its own inclusive count. Every tile it waits for belongs to a program
    that started before it and publishes its count without waiting for anything, so the walk always ends.

Layers whose cut splits no tie group (ties = 0) skip all of this. Full tiles load and store without a
bounds mask, so that accesses are 16 bytes wide. The in-place variant writes only the weights it zeroes and
allocates nothing the size of a layer, for models that barely fit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import kernels_torch
from . import layer_table
from .keys import BITS, load_alive, load_keys

BLOCK = 1 << 11
AGGREGATE = tl.constexpr(1 << 61)  # status flags of a tile (the count itself is < 2^31)
INCLUSIVE = tl.constexpr(1 << 62)


@triton.jit
def _count_block(w_ptr, m_ptr, has_mask, offs, n, cut, KEY_MASK: tl.constexpr, FULL: tl.constexpr):
    valid = offs < n
    alive = load_alive(m_ptr, offs, valid, has_mask, FULL)
    key = load_keys(w_ptr, offs, valid, FULL, KEY_MASK)
    return tl.sum((alive & (key == cut)).to(tl.int64), 0)


@triton.jit
def _cut_block(w_ptr, m_ptr, has_mask, o_ptr, offs, n, cut, n_ties, before, KEY_MASK: tl.constexpr,
               ZERO: tl.constexpr, TIES: tl.constexpr, FULL: tl.constexpr):
    """Keep/prune decisions for one block; returns `before` plus this block's keys equal to the cut."""
    valid = offs < n
    alive = load_alive(m_ptr, offs, valid, has_mask, FULL)
    key = load_keys(w_ptr, offs, valid, FULL, KEY_MASK)
    if TIES:
        equal = alive & (key == cut)
        rank = before + tl.cumsum(equal.to(tl.int64), 0) - 1  # among equal keys, in flat order
        keep = alive & ((key > cut) | (equal & (rank >= n_ties)))
        before += tl.sum(equal.to(tl.int64), 0)
    else:
        keep = alive & (key >= cut)
    if ZERO:
        tl.store(w_ptr + offs, (key * 0).to(w_ptr.dtype.element_ty), mask=valid & ~keep)
    elif FULL:
        tl.store(o_ptr + offs, keep.to(tl.uint8))
    else:
        tl.store(o_ptr + offs, keep.to(tl.uint8), mask=valid)
    return before


@triton.jit
def _cut_tile(w_ptr, m_ptr, has_mask, o_ptr, start, n, cut, n_ties, before, KEY_MASK: tl.constexpr,
              ZERO: tl.constexpr, TIES: tl.constexpr, TILE: tl.constexpr, BLOCK: tl.constexpr):
    if start + TILE <= n:
        for i in range(0, TILE, BLOCK):
            before = _cut_block(w_ptr, m_ptr, has_mask, o_ptr, start + i + tl.arange(0, BLOCK), n, cut, n_ties,
                                before, KEY_MASK, ZERO, TIES, True)
    else:
        for i in range(0, TILE, BLOCK):
            before = _cut_block(w_ptr, m_ptr, has_mask, o_ptr, start + i + tl.arange(0, BLOCK), n, cut, n_ties,
                                before, KEY_MASK, ZERO, TIES, False)


@triton.jit
def _cut_mask_kernel(numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, tile_prev, o_base, o_offs,
                     cut_keys, ties, ticket, status, KEY_MASK: tl.constexpr, ZERO: tl.constexpr,
                     TILE: tl.constexpr, BLOCK: tl.constexpr, VEC: tl.constexpr, ALIGNED: tl.constexpr):
    t = tl.atomic_add(ticket, 1, sem="relaxed")  # this program's tile, in the order programs start
    layer, start, n, w_ptr, m_ptr, has_mask = layer_table.program_tile(
        t, numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, TILE, VEC, ALIGNED)
    o_off = tl.load(o_offs + layer)
    if ALIGNED:
        o_off = tl.multiple_of(o_off, 16)
    o_ptr = o_base + o_off
    cut = tl.load(cut_keys + layer)
    n_ties = tl.load(ties + layer)
    if n_ties > 0:
        count = start * 0
        if start + TILE <= n:
            for i in range(0, TILE, BLOCK):
                count += _count_block(w_ptr, m_ptr, has_mask, start + i + tl.arange(0, BLOCK), n, cut, KEY_MASK,
                                      True)
        else:
            for i in range(0, TILE, BLOCK):
                count += _count_block(w_ptr, m_ptr, has_mask, start + i + tl.arange(0, BLOCK), n, cut, KEY_MASK,
                                      False)
        before = count * 0
        p = tl.load(tile_prev + t).to(tl.int64)
        if p >= 0:
            tl.atomic_xchg(status + t, count | AGGREGATE, sem="release")
            while p >= 0:  # look back over this layer's earlier tiles
                s = tl.atomic_add(status + p, 0, sem="acquire")
                while s == 0:
                    s = tl.atomic_add(status + p, 0, sem="acquire")
                before += s & (AGGREGATE - 1)
                if s >= INCLUSIVE:
                    p = p * 0 - 1
                else:
                    p = tl.load(tile_prev + p).to(tl.int64)
        tl.atomic_xchg(status + t, (before + count) | INCLUSIVE, sem="release")
        _cut_tile(w_ptr, m_ptr, has_mask, o_ptr, start, n, cut, n_ties, before, KEY_MASK, ZERO, True, TILE, BLOCK)
    else:
        _cut_tile(w_ptr, m_ptr, has_mask, o_ptr, start, n, cut, n_ties, start * 0, KEY_MASK, ZERO, False, TILE,
                  BLOCK)


def _launch(weights, masks, outs, cut_keys, ties, zero: bool, tile: int | None, block: int) -> None:
    with layer_table.on(weights[0].device):
        _launch_here(weights, masks, outs, cut_keys, ties, zero, tile, block)


def _launch_here(weights, masks, outs, cut_keys, ties, zero: bool, tile: int | None, block: int) -> None:
    device, dtype = weights[0].device, weights[0].dtype
    table = layer_table.build(weights, masks, tile or layer_table.DEFAULT_TILE)
    block = min(block, table.tile)  # a program's tile is whole blocks
    assert table.tile % block == 0
    if not table.tiles:
        return
    if outs:
        o_base = min(outs, key=lambda o: o.data_ptr()).reshape(-1).view(torch.uint8)
        o_offs = [o.data_ptr() - o_base.data_ptr() for o in outs]
        aligned = table.aligned and all(o.data_ptr() % layer_table.ALIGN == 0 for o in outs)
    else:
        o_base, o_offs, aligned = table.m_base, [0] * len(weights), table.aligned
    _cut_mask_kernel[(table.tiles,)](
        table.numels, table.w_base, table.w_offs, table.m_base, table.m_offs, table.tile_layer, table.tile_start,
        table.tile_prev, o_base, torch.tensor(o_offs, dtype=torch.int64).to(device),
        torch.tensor(cut_keys, dtype=torch.int64).to(device), torch.tensor(ties, dtype=torch.int64).to(device),
        torch.zeros(1, dtype=torch.int32, device=device), torch.zeros(table.tiles, dtype=torch.int64, device=device),
        KEY_MASK=BITS[dtype][1], ZERO=zero, TILE=table.tile, BLOCK=block, VEC=layer_table.vec(dtype),
        ALIGNED=aligned)


def apply_cuts(weights: list[torch.Tensor], masks: list[torch.Tensor | None], cut_keys: list[int],
               ties: list[int], tile: int | None = None, block: int = BLOCK) -> list[torch.Tensor]:
    """The op lamp_kernels::apply_cuts on the device: keep masks (bool, each layer's shape) of same-dtype
    layers on one device, in one launch."""
    ws = [w.detach().contiguous() for w in weights]
    ms = [None if m is None else m.contiguous() for m in masks]
    outs = [torch.empty(w.shape, dtype=torch.bool, device=w.device) for w in ws]
    _launch(ws, ms, outs, cut_keys, ties, False, tile, block)
    return outs


def zero_cuts_(weights: list[torch.Tensor], masks: list[torch.Tensor | None], cut_keys: list[int],
               ties: list[int], tile: int | None = None, block: int = BLOCK) -> None:
    """The op lamp_kernels::zero_cuts_ on the device: in place, every weight its cut does not keep (pruned,
    or masked out) becomes +0. A non-contiguous layer is zeroed in a contiguous copy, then written back."""
    ws = [w.detach() if w.is_contiguous() else w.detach().contiguous() for w in weights]
    ms = [None if m is None else m.contiguous() for m in masks]
    _launch(ws, ms, None, cut_keys, ties, True, tile, block)
    with torch.no_grad():
        for w, mine in zip(weights, ws):
            if mine.data_ptr() != w.data_ptr():
                w.copy_(mine)


apply_cuts_ref = kernels_torch.apply_cuts_ref  # the readable twins
zero_cuts_ref_ = kernels_torch.zero_cuts_ref_
