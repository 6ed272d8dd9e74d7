"""Pass 1 of the masks path: per-layer histograms of |w| bit patterns (DESIGN-NOTES §2.3).

bf16/fp16: one bin per value (2^15 bins), counts only: an exact counting sort. fp32/fp64: the top 16 bits
of the key (2^16 bins) with the exact sum of M^2 per bin (M the integer significand) as 27-bit limbs, which
the solver scales by the bin's exponent; the cut inside a bin is found by the refinement pass (gather_keys).
Integer atomics make the result independent of scheduling: identical to kernels_torch.bin_summary_ref.

The atomics are relaxed (no ordering is needed between counters, and the default acq_rel semantics fence
every one), counts are int32, and full tiles load without a bounds mask so that loads are 16 bytes wide.
The dense per-layer histograms of a chunk of layers are compacted on the device to the sparse summaries the
solver takes (only nonempty bins), so one copy of the small result goes to the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels_torch import bin_summary_ref, compact_summaries, concat_summaries, sparse_summary
from . import layer_table
from .keys import BITS, layout, load_alive, load_keys

BLOCK = 1 << 11
SUMMARY_BUDGET = 128 << 20  # device bytes of dense histograms per launch; more layers go in chunks


@triton.jit
def _histogram_block(w_ptr, m_ptr, has_mask, offs, n, row, counts, sums, KEY_MASK: tl.constexpr,
                     SHIFT: tl.constexpr, LIMBS: tl.constexpr, FULL: tl.constexpr):
    valid = offs < n
    alive = load_alive(m_ptr, offs, valid, has_mask, FULL)
    key = load_keys(w_ptr, offs, valid, FULL, KEY_MASK)
    b = row + (key >> SHIFT)
    tl.atomic_add(counts + b, 1, mask=alive, sem="relaxed")
    if LIMBS == 2:  # fp32: M < 2^24, M^2 < 2^48 in two 27-bit limbs
        frac = key & 0x7FFFFF
        m = tl.where((key >> 23) > 0, frac | 0x800000, frac)
        sq = m * m
        tl.atomic_add(sums + 2 * b, sq & 0x7FFFFFF, mask=alive, sem="relaxed")
        tl.atomic_add(sums + 2 * b + 1, sq >> 27, mask=alive, sem="relaxed")
    if LIMBS == 4:  # fp64: M = a 2^27 + b < 2^53, M^2 = a^2 2^54 + 2ab 2^27 + b^2, limbs < 2^28
        frac = key & 0xFFFFFFFFFFFFF
        m = tl.where((key >> 52) > 0, frac | 0x10000000000000, frac)
        hi = m >> 27
        lo = m & 0x7FFFFFF
        bb = lo * lo
        ab2 = 2 * hi * lo
        aa = hi * hi
        tl.atomic_add(sums + 4 * b, bb & 0x7FFFFFF, mask=alive, sem="relaxed")
        tl.atomic_add(sums + 4 * b + 1, (bb >> 27) + (ab2 & 0x7FFFFFF), mask=alive, sem="relaxed")
        tl.atomic_add(sums + 4 * b + 2, (ab2 >> 27) + (aa & 0x7FFFFFF), mask=alive, sem="relaxed")
        tl.atomic_add(sums + 4 * b + 3, aa >> 27, mask=alive, sem="relaxed")


@triton.jit
def _histogram_kernel(numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, counts, sums,
                      KEY_MASK: tl.constexpr, SHIFT: tl.constexpr, BINS: tl.constexpr, LIMBS: tl.constexpr,
                      TILE: tl.constexpr, BLOCK: tl.constexpr, VEC: tl.constexpr, ALIGNED: tl.constexpr):
    layer, start, n, w_ptr, m_ptr, has_mask = layer_table.program_tile(
        tl.program_id(0), numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, TILE, VEC, ALIGNED)
    row = layer.to(tl.int64) * BINS
    if start + TILE <= n:  # a full tile: unmasked, vectorisable loads
        for i in range(0, TILE, BLOCK):
            offs = start + i + tl.arange(0, BLOCK)
            _histogram_block(w_ptr, m_ptr, has_mask, offs, n, row, counts, sums, KEY_MASK, SHIFT, LIMBS, True)
    else:
        for i in range(0, TILE, BLOCK):
            offs = start + i + tl.arange(0, BLOCK)
            _histogram_block(w_ptr, m_ptr, has_mask, offs, n, row, counts, sums, KEY_MASK, SHIFT, LIMBS, False)


def launch(weights: list[torch.Tensor], masks: list[torch.Tensor | None], table: layer_table.LayerTable,
           block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense (counts int32[L, B], sums int64[L, B, max(limbs, 1)]) of contiguous same-dtype layers on one
    device, in one launch over the table."""
    dtype = weights[0].dtype
    bins, shift, limbs = layout(dtype)
    device = weights[0].device
    counts = torch.zeros(len(weights), bins, dtype=torch.int32, device=device)
    sums = torch.zeros(len(weights), bins, max(limbs, 1), dtype=torch.int64, device=device)
    block = min(block, table.tile)  # a program's tile is whole blocks
    assert table.tile % block == 0
    if table.tiles:
        _histogram_kernel[(table.tiles,)](*table.args(), counts, sums, KEY_MASK=BITS[dtype][1], SHIFT=shift,
                                          BINS=bins, LIMBS=limbs, TILE=table.tile, BLOCK=block,
                                          VEC=layer_table.vec(dtype), ALIGNED=table.aligned)
    return counts, sums


def bin_summaries(weights: list[torch.Tensor], masks: list[torch.Tensor | None], tile: int | None = None,
                  block: int = BLOCK):
    """The op lamp_kernels::bin_summaries on the device: (offsets int64[L + 1], bins int64[E],
    counts int64[E], sums int64[E, limbs]), nonempty bins of every layer, layer by layer."""
    ws = [w.detach().contiguous() for w in weights]
    ms = [None if m is None else m.contiguous() for m in masks]
    bins, _, limbs = layout(ws[0].dtype)
    per_chunk = max(1, SUMMARY_BUDGET // (bins * (4 + 8 * max(limbs, 1))))
    parts = []
    with layer_table.on(ws[0].device):
        for c in range(0, len(ws), per_chunk):
            cw, cm = ws[c:c + per_chunk], ms[c:c + per_chunk]
            counts, sums = launch(cw, cm, layer_table.build(cw, cm, tile or layer_table.DEFAULT_TILE), block)
            parts.append(compact_summaries(counts, sums[:, :, :limbs]))
        return concat_summaries(parts)


def histograms_ref(weights: list[torch.Tensor], masks: list[torch.Tensor | None]):
    """Dense (counts, sums) per layer, stacked, the plain way (what launch returns, counts as int64, limbs
    normalised as compact_summaries leaves them)."""
    rows = [bin_summary_ref(w, m) for w, m in zip(weights, masks)]
    return torch.stack([c for c, _ in rows]), torch.stack([s for _, s in rows])


def bin_summaries_ref(weights, masks):
    return [sparse_summary(*bin_summary_ref(w, m)) for w, m in zip(weights, masks)]
