"""The layer-offset table that lets one launch cover many layers without concatenating them.

Program p works on tile ``tile_start[p]`` .. ``+ TILE`` of layer ``tile_layer[p]``; the layer's data is
found through ``w_ptrs`` (and ``mask_ptrs``, 0 when the layer has no mask): raw addresses, so layers stay
where they are. Tiles are ordered round-robin over layers (tile 0 of every layer, then tile 1, ...): a
launch's resident programs then spread over many layers, which spreads histogram atomics over many
counters and lets the chained tie counts of cut_mask (which link the tiles of one layer in order) advance
in parallel across layers. ``tile_prev[p]`` is the program holding the previous tile of the same layer,
or -1, and is always < p.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Elements per program: 16 blocks of 2048 on a GPU; one block under the interpreter, where each program
# is a Python loop iteration and the tests' layers are small.
DEFAULT_TILE = 1 << 10 if os.environ.get("TRITON_INTERPRET", "0") == "1" else 1 << 15


@dataclass
class LayerTable:
    tile: int  # elements per program
    numels: torch.Tensor  # int64[L]
    w_ptrs: torch.Tensor  # int64[L]
    mask_ptrs: torch.Tensor  # int64[L], 0 = no mask
    tile_layer: torch.Tensor  # int32[T]
    tile_start: torch.Tensor  # int64[T]
    tile_prev: torch.Tensor  # int32[T]

    @property
    def tiles(self) -> int:
        return self.tile_layer.numel()


@triton.jit
def program_tile(numels, w_ptrs, mask_ptrs, tile_layer, tile_start):
    """This program's (layer, first element, layer size, weight address, mask address or 0)."""
    layer = tl.load(tile_layer + tl.program_id(0))
    return (layer, tl.load(tile_start + tl.program_id(0)), tl.load(numels + layer), tl.load(w_ptrs + layer),
            tl.load(mask_ptrs + layer))


def build(weights: list[torch.Tensor], masks: list[torch.Tensor | None], tile: int) -> LayerTable:
    """Table for contiguous, same-device layers (masks: contiguous bool of the layer's shape, or None),
    computed on their device: no host work proportional to the number of tiles."""
    device = weights[0].device
    sizes = [w.numel() for w in weights]
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

    def ptrs(tensors):
        return torch.tensor([0 if t is None else t.data_ptr() for t in tensors], dtype=torch.int64).to(device)

    return LayerTable(tile, numels, ptrs(weights), ptrs(masks), layer_of[order].to(torch.int32), tile_index * tile,
                      tile_prev.to(torch.int32))


def build_ref(numels: list[int], tile: int) -> list[tuple[int, int, int]]:
    """(layer, start, prev) per program, the plain way."""
    rows, programs = [], {}
    for j in range(max([(n + tile - 1) // tile for n in numels] + [0])):
        for i, n in enumerate(numels):
            if j * tile < n:
                rows.append((i, j * tile, programs.get(i, -1)))
                programs[i] = len(rows) - 1
    return rows
