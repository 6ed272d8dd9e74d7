"""The CUDA library's sort path (DESIGN-NOTES §2.2, §2.4): scores, and backend="cuda" masks.

    bin_summaries16  (the CUDA kernel of lamp_kernels::bin_summaries for bf16/fp16) exact counts of every
                  |w| bit pattern, privatised per block in shared memory, compacted on the device
    lamp_scores   (the CUDA kernel of the op lamp_kernels::lamp_scores) per layer: a radix sort of order keys
                  with a 32-bit index, one fused exact scan that writes the scores in flat order; a large
                  layer is sorted alone (device-wide sort), small ones share one segmented sort
    cuts / masks  the same sort and scan keep each layer's sorted order values; the global cut is a radix
                  select over all layers on the device (no concatenation, any total size); masks follow
                  from the per-layer cut counts and the sort's permutation

Every buffer comes from torch's caching allocator on the layers' device, every launch goes to the current
stream, and a call synchronises with the host once, at the end, to read the value checks (NaN/Inf and the
fp64 range, made inside the key pass) and, for masks, the cut counts. Memory beyond the outputs: twice the
largest layer's keys and indices (the sort's double buffer) plus CUB's and the scan's small temporaries;
masks keep 12 bytes per weight (sorted order values and permutation) until the cut is known, so for
LLM-sized models the sort-free summary path (the default) is the right tool for masks.
"""

from __future__ import annotations

import torch

from . import allocation, cuda_library
from .kernels_torch import compact_summaries, concat_summaries
from .layers import Layers, pruned_count
from .selection import Cuts

CODES = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2, torch.float64: 3}
KEY_BYTES = {0: 2, 1: 2, 2: 4, 3: 8}
SMALL_LAYER = 1 << 16  # layers up to this size share a segmented sort (one thread block per segment)
SMALL_BATCH = 1 << 22  # a batch of small layers may hold this many elements even if no layer is that large
MAX_LAYER = 2**31 - 1  # 32-bit index payload and CUB's item count
TILE = 4096  # LAMP_CUDA_SCAN_TILE

NONFINITE, FP64_HUGE, FP64_IN_RANGE, FP64_TINY = 1, 2, 4, 8


class LayerValueError(ValueError):
    """A layer of the call failed the value checks; ``index`` is its position in the call."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def unavailable_reason(layers: Layers | None = None) -> str | None:
    if layers is not None:
        for w, name in zip(layers.tensors, layers.names):
            if w.device.type != "cuda":
                return f"{name} is on {w.device}; backend 'cuda' runs CUDA tensors"
        if len({w.device for w in layers.tensors}) > 1:
            return "backend 'cuda' needs all layers on one GPU"
    if torch.version.cuda is None:
        return "this torch has no CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device"
    reason = cuda_library.unavailable_reason()
    if reason is not None:
        return reason
    device = layers.tensors[0].device if layers is not None else torch.device("cuda", torch.cuda.current_device())
    try:
        cuda_library.load().check_device(device.index if device.index is not None else torch.cuda.current_device())
    except cuda_library.CudaLibraryError as exc:
        return f"{exc}; {cuda_library.BUILD_HINT}"
    return None


def _validate(weights: list[torch.Tensor], masks: list[torch.Tensor | None]) -> None:
    """Everything the library would otherwise receive as a bad raw pointer, as a clear Python error."""
    if not weights:
        raise ValueError("no layers given")
    device = weights[0].device
    for i, (w, m) in enumerate(zip(weights, masks)):
        if w.device.type != "cuda" or w.device != device:
            raise ValueError(f"layer {i} is on {w.device}; one call takes CUDA layers on one device ({device})")
        if w.dtype not in CODES:
            raise TypeError(f"layer {i}: dtype {w.dtype} is not bfloat16, float16, float32 or float64")
        if w.numel() > MAX_LAYER:
            raise ValueError(f"layer {i}: {w.numel()} elements; the CUDA sort takes fewer than 2^31 per layer")
        if m is not None and (m.dtype != torch.bool or m.shape != w.shape or m.device != w.device):
            raise ValueError(f"layer {i}: the mask must be a bool tensor of the layer's shape on its device")


def _pinned_to(values: list[int], device: torch.device) -> torch.Tensor:
    """A small int64 table on the device, copied from pinned memory without waiting for the stream."""
    host = torch.tensor(values, dtype=torch.int64)
    if torch.cuda.is_available():
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def _batches(sizes: list[int], capacity: int) -> list[list[int]]:
    """Large layers alone; small ones packed in order into batches of at most `capacity` elements."""
    out: list[list[int]] = []
    filled = capacity
    for i, n in enumerate(sizes):
        if n > SMALL_LAYER:
            out.append([i])
            continue
        if filled + n > capacity or not out or len(out[-1]) == 1 and sizes[out[-1][0]] > SMALL_LAYER:
            out.append([])
            filled = 0
        out[-1].append(i)
        filled += n
    return out


class _Sorted:
    """Outputs of one sort-and-scan call over same-dtype layers on one device."""

    def __init__(self, n: int):
        self.scores: list[torch.Tensor | None] = [None] * n
        self.values: list[torch.Tensor | None] = [None] * n
        self.perms: list[torch.Tensor | None] = [None] * n
        self.flags: torch.Tensor | None = None


def sort_and_scan(weights: list[torch.Tensor], masks: list[torch.Tensor | None], *, scores: bool = False,
                  float64: bool = False, order: bool = False, lamp: bool = True) -> _Sorted:
    """Sorts every layer (same dtype, one device) and runs the fused scan. scores: score tensors (float64 or
    float32) per layer. order: (order values int64[n], permutation int32[n]) per layer, in sorted order, for
    the global cut (lamp: score order, else |w| order). No host synchronisation."""
    lib = cuda_library.load()
    _validate(weights, masks)
    device = weights[0].device
    code = CODES[weights[0].dtype]
    kb = KEY_BYTES[code]
    ws = [w.detach().contiguous() for w in weights]
    ms = [None if m is None else m.contiguous() for m in masks]
    out = _Sorted(len(ws))
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        sizes = [w.numel() for w in ws]
        # Buffers hold the largest layer (the memory bound: twice its keys and indices) or, for models of
        # small layers only, a batch of SMALL_BATCH elements, so that equal small layers still share a sort.
        capacity = max(max(sizes), min(sum(n for n in sizes if n <= SMALL_LAYER), SMALL_BATCH), 1)
        batches = _batches(sizes, capacity)
        keys = torch.empty(2 * capacity * kb, dtype=torch.uint8, device=device)
        index = torch.empty(2 * capacity, dtype=torch.int32, device=device)
        k0, k1 = keys.data_ptr(), keys.data_ptr() + capacity * kb
        i0, i1 = index.data_ptr(), index.data_ptr() + capacity * 4
        out.flags = torch.zeros(len(ws), dtype=torch.int32, device=device)
        max_segments = max(len(b) for b in batches)
        sort_temp = torch.empty(max(1, lib.size("lamp_cuda_sort_temp_bytes", code, capacity, max_segments)),
                                dtype=torch.uint8, device=device)
        for batch in batches:
            offsets, table, tiles = [0], [], 0
            for i in batch:
                n, off = sizes[i], offsets[-1]
                mask_ptr = 0 if ms[i] is None else ms[i].data_ptr()
                lib.call("lamp_cuda_make_keys", code, ws[i].data_ptr(), mask_ptr, n, k0 + off * kb, i0 + off * 4,
                         out.flags.data_ptr() + 4 * i, stream)
                if scores:
                    out.scores[i] = torch.empty(ws[i].shape, dtype=torch.float64 if float64 else torch.float32,
                                                device=device)
                if order:
                    out.values[i] = torch.empty(n, dtype=torch.int64, device=device)
                    out.perms[i] = torch.empty(n, dtype=torch.int32, device=device)
                table += [off, n, tiles, _ptr(out.scores[i]), _ptr(out.values[i]), _ptr(out.perms[i])]
                offsets.append(off + n)
                tiles += (n + TILE - 1) // TILE
            n_batch = offsets[-1]
            seg_offsets = _pinned_to(offsets, device) if len(batch) > 1 else None
            in_alt = _sort(lib, code, sort_temp, k0, k1, i0, i1, n_batch, len(batch), seg_offsets, stream)
            sorted_keys, sorted_index = (k1, i1) if in_alt else (k0, i0)
            if scores or lamp:
                segs = _pinned_to(table, device)
                scan_temp = torch.empty(max(1, lib.size("lamp_cuda_scan_temp_bytes", code, tiles)), dtype=torch.uint8,
                                        device=device)
                lib.call("lamp_cuda_scan", code, sorted_keys, sorted_index, segs.data_ptr(), len(batch), tiles,
                         int(float64), scan_temp.data_ptr(), stream)
            else:  # global magnitude: the sorted keys are the order values
                for i, off in zip(batch, offsets):
                    lib.call("lamp_cuda_key_order_values", code, sorted_keys + off * kb, sorted_index + off * 4,
                             sizes[i], out.values[i].data_ptr(), out.perms[i].data_ptr(), stream)
    return out


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _sort(lib, code, temp, k0, k1, i0, i1, n, segments, seg_offsets, stream) -> bool:
    import ctypes

    in_alt = ctypes.c_int(0)
    lib.call("lamp_cuda_sort_pairs", code, temp.data_ptr(), temp.numel(), k0, k1, i0, i1, n, segments,
             0 if seg_offsets is None else seg_offsets.data_ptr(), ctypes.byref(in_alt), stream)
    return bool(in_alt.value)


HISTOGRAM_CHUNK = 1 << 20  # elements per tile of the 16-bit histogram (one block's share before it flushes)
HISTOGRAM_BUDGET = 128 << 20  # device bytes of dense int32 histograms per launch; more layers go in chunks


def bin_summaries16(weights: list[torch.Tensor], masks: list[torch.Tensor | None]) -> tuple[torch.Tensor, ...]:
    """The op lamp_kernels::bin_summaries for bf16/fp16 layers on one device: (offsets, bins, counts, sums)
    of each layer's nonempty bins (one bin per bit pattern, no sums: exact counts are the whole summary)."""
    lib = cuda_library.load()
    _validate(weights, masks)
    if weights[0].dtype not in (torch.bfloat16, torch.float16):
        raise TypeError("bin_summaries16 takes bf16/fp16 layers")
    device = weights[0].device
    ws = [w.detach().contiguous() for w in weights]
    ms = [None if m is None else m.contiguous() for m in masks]
    bins = 1 << 15
    per_chunk = max(1, HISTOGRAM_BUDGET // (4 * bins))
    parts = []
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        for c in range(0, len(ws), per_chunk):
            cw, cm = ws[c:c + per_chunk], ms[c:c + per_chunk]
            tiles = [v for j, w in enumerate(cw) for start in range(0, w.numel(), HISTOGRAM_CHUNK) for v in (j, start)]
            counts = torch.zeros(len(cw), bins, dtype=torch.int32, device=device)
            # Freed tables are reused only by later work on this stream (torch's caching allocator).
            w_ptrs, m_ptrs = _pinned_to([w.data_ptr() for w in cw], device), _pinned_to([_ptr(m) for m in cm], device)
            numels, table = _pinned_to([w.numel() for w in cw], device), _pinned_to(tiles or [0], device)
            lib.call("lamp_cuda_histogram16", w_ptrs.data_ptr(), m_ptrs.data_ptr(), numels.data_ptr(), table.data_ptr(),
                     len(tiles) // 2, HISTOGRAM_CHUNK, counts.data_ptr(), stream)
            parts.append(compact_summaries(counts, counts.new_zeros((len(cw), bins, 0), dtype=torch.int64)))
    return concat_summaries(parts)


def raise_on_flags(flags: list[int], dtypes: list[torch.dtype]) -> None:
    """The value checks of the key pass, read back: NaN/Inf among alive weights; fp64 magnitudes whose
    squares leave float64's normal range (layers.py's rule)."""
    for i, (f, dtype) in enumerate(zip(flags, dtypes)):
        if f & NONFINITE:
            raise LayerValueError(i, "has NaN or Inf weights")
        if dtype == torch.float64 and (f & FP64_HUGE or (f & FP64_TINY and not f & FP64_IN_RANGE)):
            raise LayerValueError(i, "a magnitude is outside [2^-496, 2^496); its square leaves float64's normal "
                                     "range")


def lamp_scores(weights: list[torch.Tensor], masks: list[torch.Tensor | None], float64: bool) -> list[torch.Tensor]:
    """The op lamp_kernels::lamp_scores on CUDA tensors (same dtype, one device)."""
    result = sort_and_scan(weights, masks, scores=True, float64=float64)
    raise_on_flags(result.flags.tolist(), [w.dtype for w in weights])  # the call's one synchronisation
    return result.scores


def _named(layers: Layers, fn):
    try:
        return fn()
    except LayerValueError as exc:
        raise ValueError(f"{layers.names[exc.index]} {exc}") from None


def _cut_counts(layers: Layers, sparsity: float, method: str):
    """(per-layer pruned counts int64[L] on the device, permutations, threshold order value int64[1] or None,
    flags int32[L]); nothing synchronised yet."""
    lib = cuda_library.load()
    ws, ms = layers.detached(), layers.masks
    device = ws[0].device
    values: list[torch.Tensor | None] = [None] * len(ws)
    perms: list[torch.Tensor | None] = [None] * len(ws)
    flags = torch.zeros(len(ws), dtype=torch.int32, device=device)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, w in enumerate(ws):
        by_dtype.setdefault(w.dtype, []).append(i)
    lamp = method == "lamp"
    for idx in by_dtype.values():
        got = sort_and_scan([ws[i] for i in idx], [ms[i] for i in idx], order=True, lamp=lamp)
        for j, i in enumerate(idx):
            values[i], perms[i] = got.values[j], got.perms[j]
        flags[idx] = got.flags
    with torch.cuda.device(device):
        if method in ("lamp", "global"):
            stream = torch.cuda.current_stream(device).cuda_stream
            pointers = _pinned_to([v.data_ptr() for v in values], device)
            numels = _pinned_to([v.numel() for v in values], device)
            pruned = torch.empty(len(ws), dtype=torch.int64, device=device)
            threshold = torch.empty(1, dtype=torch.int64, device=device)
            workspace = torch.empty(lib.size("lamp_cuda_global_cut_workspace_bytes", len(ws)), dtype=torch.uint8,
                                    device=device)
            lib.call("lamp_cuda_global_cut", pointers.data_ptr(), numels.data_ptr(), len(ws),
                     pruned_count(sparsity, sum(layers.numels())), pruned.data_ptr(), threshold.data_ptr(),
                     workspace.data_ptr(), stream)
            return pruned, perms, threshold, flags
        one = torch.ones((), dtype=torch.int64, device=device)
        masked = torch.stack([torch.searchsorted(v, one) for v in values])  # order value 0 = masked out
        targets = torch.tensor(allocation.layer_counts(method, [tuple(w.shape) for w in ws], sparsity),
                               dtype=torch.int64).to(device)
        return torch.maximum(targets, masked), perms, None, flags


def _read_back(layers: Layers, pruned, threshold, flags) -> tuple[list[int], float | None]:
    """The call's one device-to-host copy: flags, cut counts and threshold together."""
    parts = [flags.to(torch.int64), pruned] + ([threshold] if threshold is not None else [])
    host = torch.cat(parts).cpu().tolist()
    L = len(layers.tensors)
    _named(layers, lambda: raise_on_flags(host[:L], [w.dtype for w in layers.tensors]))
    counts = host[L:2 * L]
    bits = host[2 * L] if threshold is not None else 0
    value = None if bits == 0 else torch.tensor([bits - 1], dtype=torch.int64).view(torch.float64).item()
    return counts, value


def layer_cuts(layers: Layers, sparsity: float, method: str, group=None) -> Cuts:
    if group is not None:
        raise ValueError("backend 'cuda' does not run distributed; use backend=None or 'triton'")
    pruned, _, threshold, flags = _cut_counts(layers, sparsity, method)
    counts, value = _read_back(layers, pruned, threshold, flags)
    return Cuts([], counts, layers.numels(), value)


def prune_masks(layers: Layers, sparsity: float, method: str, group=None) -> list[torch.Tensor]:
    if group is not None:
        raise ValueError("backend 'cuda' does not run distributed; use backend=None or 'triton'")
    lib = cuda_library.load()
    pruned, perms, threshold, flags = _cut_counts(layers, sparsity, method)
    _read_back(layers, pruned, threshold, flags)  # raises before any mask is made
    device = layers.tensors[0].device
    out = []
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        for i, (p, w) in enumerate(zip(perms, layers.tensors)):
            mask = torch.empty(w.shape, dtype=torch.bool, device=device)
            lib.call("lamp_cuda_mask_from_cut", p.data_ptr(), p.numel(), pruned.data_ptr() + 8 * i, mask.data_ptr(),
                     stream)
            out.append(mask)
    return out
