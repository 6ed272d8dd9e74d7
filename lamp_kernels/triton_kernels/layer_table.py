"""The layer-offset table that lets one launch cover many layers without concatenating them.

Layers stay where they are. The kernels receive one real tensor pointer per kind (``w_base``: the layer
with the lowest address, viewed as integers of the dtype's width; ``m_base`` likewise for masks) and, per
layer, the element offset of its data from that base (``w_offs``; ``m_offs``, -1 for a layer without mask).
Because the base is a real, 16-byte aligned tensor pointer and every offset is known to be a multiple of the
vector width when the table is ``aligned``, the compiler can issue 16-byte loads.

Program p works on tile ``tile_start[p]`` .. ``+ TILE`` of layer ``tile_layer[p]``. Tiles are ordered
round-robin over layers (tile 0 of every layer, then tile 1, ...), which spreads concurrent programs over
many layers (their histogram atomics over many counters, and the tie counts chained through cut_mask's
look-back over many independent chains). ``tile_prev[p]`` is the table position of the previous tile of the
same layer, or -1; it is always < p.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .keys import INT_VIEW

# Elements per program: 16 blocks of 2048 on a GPU; one block under the interpreter, where each program
# is a Python loop iteration and the tests' layers are small.
DEFAULT_TILE = 1 << 10 if os.environ.get("TRITON_INTERPRET", "0") == "1" else 1 << 15
ALIGN = 16  # bytes: the widest vector load


@dataclass
class LayerTable:
    tile: int  # elements per program
    numels: torch.Tensor  # int64[L]
    w_base: torch.Tensor  # integer view of the layer with the lowest address
    w_offs: torch.Tensor  # int64[L]: element offsets from w_base
    m_base: torch.Tensor  # uint8 view of the mask with the lowest address (a dummy when there is none)
    m_offs: torch.Tensor  # int64[L]: byte offsets from m_base, -1 = no mask
    tile_layer: torch.Tensor  # int32[T]
    tile_start: torch.Tensor  # int64[T]
    tile_prev: torch.Tensor  # int32[T]
    aligned: bool  # every layer's and mask's data starts ALIGN-byte aligned, as does every tile

    @property
    def tiles(self) -> int:
        return self.tile_layer.numel()

    def args(self) -> tuple:
        """The table's kernel arguments, in the order program_tile takes them."""
        return (self.numels, self.w_base, self.w_offs, self.m_base, self.m_offs, self.tile_layer, self.tile_start)


@triton.jit
def program_tile(t, numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, TILE: tl.constexpr,
                 VEC: tl.constexpr, ALIGNED: tl.constexpr):
    """Tile t's (layer, first element, layer size, weight pointer, mask pointer, has-mask flag). The pointers
    point at element 0 of the layer; ALIGNED tells the compiler the offsets keep VEC-element alignment."""
    layer = tl.load(tile_layer + t)
    start = tl.load(tile_start + t)
    n = tl.load(numels + layer)
    w_off = tl.load(w_offs + layer)
    m_off = tl.load(m_offs + layer)
    has_mask = m_off >= 0
    m_off = tl.maximum(m_off, 0)
    if ALIGNED:
        start = tl.multiple_of(start, TILE)
        w_off = tl.multiple_of(w_off, VEC)
        m_off = tl.multiple_of(m_off, 16)
    return layer, start, n, w_base + w_off, m_base + m_off, has_mask


def _offsets(tensors: list[torch.Tensor | None], base: torch.Tensor, width: int) -> list[int]:
    out = []
    for t in tensors:
        if t is None:
            out.append(-1)
            continue
        delta = t.data_ptr() - base.data_ptr()
        assert delta % width == 0, "tensors of one dtype start at multiples of the element size"
        out.append(delta // width)
    return out


_CACHE: OrderedDict = OrderedDict()  # tile orders depend only on addresses, sizes and the tile: reusable
_CACHE_SIZE = 8


def build(weights: list[torch.Tensor], masks: list[torch.Tensor | None], tile: int) -> LayerTable:
    """Table for contiguous, same-dtype, same-device layers (masks: contiguous bool of the layer's shape, or
    None). The tile ordering is computed on the device (no host work proportional to the number of tiles)
    and cached by the layers' addresses and sizes; the cache holds no reference to the layers themselves."""
    device, width = weights[0].device, weights[0].element_size()
    w_base = min(weights, key=lambda w: w.data_ptr()).reshape(-1).view(INT_VIEW[weights[0].dtype])
    present = [m for m in masks if m is not None]
    m_base = (min(present, key=lambda m: m.data_ptr()).reshape(-1).view(torch.uint8) if present
              else torch.zeros(ALIGN, dtype=torch.uint8, device=device))
    aligned = (all(w.data_ptr() % ALIGN == 0 for w in weights) and all(m.data_ptr() % ALIGN == 0 for m in present)
               and tile * width % ALIGN == 0)
    key = (device, weights[0].dtype, tile, tuple((w.data_ptr(), w.numel()) for w in weights),
           tuple(0 if m is None else m.data_ptr() for m in masks))
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        _CACHE[key] = _tile_order([w.numel() for w in weights], tile, device) + (
            torch.tensor(_offsets(weights, w_base, width), dtype=torch.int64).to(device),
            torch.tensor(_offsets(masks, m_base, 1), dtype=torch.int64).to(device))
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    numels, tile_layer, tile_start, tile_prev, w_offs, m_offs = _CACHE[key]
    return LayerTable(tile, numels, w_base, w_offs, m_base, m_offs, tile_layer, tile_start, tile_prev, aligned)


def _tile_order(sizes: list[int], tile: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(numels, tile_layer, tile_start, tile_prev), tiles in round-robin order over the layers."""
    total = sum((n + tile - 1) // tile for n in sizes)
    numels = torch.tensor(sizes, dtype=torch.int64, device=device)
    tiles = (numels + tile - 1) // tile
    layer_of = torch.repeat_interleave(torch.arange(len(sizes), device=device), tiles, output_size=total)
    first = torch.cumsum(tiles, 0) - tiles
    index_in_layer = torch.arange(total, device=device) - first[layer_of]
    # round-robin order: (tile index, layer) ascending; order[p] is program p's tile in layer-major order
    order = torch.argsort(index_in_layer * len(sizes) + layer_of)
    program_of = torch.empty_like(order)
    program_of[order] = torch.arange(total, device=device)
    tile_index = index_in_layer[order]
    tile_prev = torch.where(tile_index > 0, program_of[(order - 1).clamp(min=0)], -1)  # same layer's previous
    return numels, layer_of[order].to(torch.int32), tile_index * tile, tile_prev.to(torch.int32)


def build_ref(numels: list[int], tile: int) -> list[tuple[int, int, int]]:
    """(layer, start, prev) per program, the plain way."""
    rows, programs = [], {}
    for j in range(max([(n + tile - 1) // tile for n in numels] + [0])):
        for i, n in enumerate(numels):
            if j * tile < n:
                rows.append((i, j * tile, programs.get(i, -1)))
                programs[i] = len(rows) - 1
    return rows


def on(device: torch.device):
    """Launches go to `device` (its current stream), whatever the current device is."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def vec(dtype: torch.dtype) -> int:
    """Elements per 16-byte vector."""
    return ALIGN // torch.tensor([], dtype=dtype).element_size()
