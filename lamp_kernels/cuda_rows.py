"""The row ops on CUDA tensors (ops.row_order_values, ops.row_lamp_scores) through the CUDA library's C ABI,
with each unit (row) a segment of the library's segmented sort.

Per layer, one call of each: make_keys over the whole layer (order keys and the layer's flat index), one sort
whose segments are the layer's rows (the device-wide sort when the layer is one unit), then the fused exact
scan with one segment-table entry per row: it scatters scores to the layer's flat order, or writes each row's
order values into that row of an int64 [rows, cols] tensor. Global magnitude's order values come from the
library's key_order_values on the same sorted keys. The value checks of the key pass are read back once per
call. Built only on the library's documented entry points (lamp_cuda.h); nothing in csrc/cuda changes.

Not run on a GPU yet: only the segment tables and the host-side bookkeeping are exercised without one.
"""

from __future__ import annotations

import ctypes

import torch

from . import cuda_library
from .cuda_backend import CODES, KEY_BYTES, TILE, _pinned_to, _validate, raise_on_flags


def segment_table(rows: int, cols: int, scores_ptr: int, values_ptr: int) -> tuple[list[int], int]:
    """(lamp_cuda_segment entries as int64[6] per row, total scan tiles) for one layer of rows x cols packed
    from offset 0: row j starts at j * cols, its tiles after those of rows < j; scores (flat order) are shared
    by every row, values point at the row's slice."""
    per_row = (cols + TILE - 1) // TILE
    table = []
    for j in range(rows):
        table += [j * cols, cols, j * per_row, scores_ptr, values_ptr + 8 * j * cols if values_ptr else 0, 0]
    return table, rows * per_row


def segment_offsets(rows: int, cols: int) -> list[int]:
    return [j * cols for j in range(rows + 1)]


def _sort_layer(lib, w: torch.Tensor, mask: torch.Tensor | None, rows: int, flags: torch.Tensor, slot: int, stream):
    """Keys and indices of one layer sorted row by row: (sorted keys ptr, sorted index ptr, buffers to keep)."""
    code = CODES[w.dtype]
    kb, n = KEY_BYTES[code], w.numel()
    keys = torch.empty(2 * n * kb, dtype=torch.uint8, device=w.device)
    index = torch.empty(2 * n, dtype=torch.int32, device=w.device)
    k0, k1 = keys.data_ptr(), keys.data_ptr() + n * kb
    i0, i1 = index.data_ptr(), index.data_ptr() + n * 4
    lib.call("lamp_cuda_make_keys", code, w.data_ptr(), 0 if mask is None else mask.data_ptr(), n, k0, i0,
             flags.data_ptr() + 4 * slot, stream)
    offsets = _pinned_to(segment_offsets(rows, n // rows), w.device) if rows > 1 else None
    temp = torch.empty(max(1, lib.size("lamp_cuda_sort_temp_bytes", code, n, max(rows, 1))), dtype=torch.uint8,
                       device=w.device)
    in_alt = ctypes.c_int(0)
    lib.call("lamp_cuda_sort_pairs", code, temp.data_ptr(), temp.numel(), k0, k1, i0, i1, n, rows,
             0 if offsets is None else offsets.data_ptr(), ctypes.byref(in_alt), stream)
    sorted_keys, sorted_index = (k1, i1) if in_alt.value else (k0, i0)
    return sorted_keys, sorted_index, (keys, index, offsets, temp)


def _run(keys: list[torch.Tensor], masks: list[torch.Tensor | None], rows: list[int], *, scores_dtype=None,
         lamp: bool = True) -> list[torch.Tensor]:
    lib = cuda_library.load()
    _validate(keys, masks)
    device = keys[0].device
    ws = [k.detach().contiguous() for k in keys]
    ms = [None if m is None else m.contiguous() for m in masks]
    flags = torch.zeros(len(ws), dtype=torch.int32, device=device)
    outs = []
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        for i, (w, m, r) in enumerate(zip(ws, ms, rows)):
            n = w.numel()
            if scores_dtype is not None:
                out = torch.zeros(w.shape, dtype=scores_dtype, device=device)
            else:
                out = torch.zeros(n, dtype=torch.int64, device=device)
            outs.append(out)
            if n == 0:
                continue
            code = CODES[w.dtype]
            sorted_keys, sorted_index, keep = _sort_layer(lib, w, m, r, flags, i, stream)
            if scores_dtype is None and not lamp:  # global magnitude: the sorted keys give the values
                perm = torch.empty(n, dtype=torch.int32, device=device)
                lib.call("lamp_cuda_key_order_values", code, sorted_keys, sorted_index, n, out.data_ptr(),
                         perm.data_ptr(), stream)
                continue
            table, tiles = segment_table(r, n // r, out.data_ptr() if scores_dtype is not None else 0,
                                         0 if scores_dtype is not None else out.data_ptr())
            segs = _pinned_to(table, device)
            temp = torch.empty(max(1, lib.size("lamp_cuda_scan_temp_bytes", code, tiles)), dtype=torch.uint8,
                               device=device)
            lib.call("lamp_cuda_scan", code, sorted_keys, sorted_index, segs.data_ptr(), r, tiles,
                     int(scores_dtype == torch.float64), temp.data_ptr(), stream)
            del keep
        raise_on_flags(flags.tolist(), [w.dtype for w in ws])  # the call's one synchronisation
    return outs


def row_order_values(keys, masks, rows, lamp):
    """The op lamp_kernels::row_order_values on CUDA tensors (one device)."""
    return _run(keys, masks, rows, lamp=lamp)


def row_lamp_scores(keys, masks, rows, float64):
    """The op lamp_kernels::row_lamp_scores on CUDA tensors (one device)."""
    return _run(keys, masks, rows, scores_dtype=torch.float64 if float64 else torch.float32)
