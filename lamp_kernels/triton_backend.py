"""backend="triton": the sort-free masks path (DESIGN-NOTES §2.3) with Triton kernels, every pass batched.

Per (device, dtype) group of layers, one launch per pass over a shared layer-offset table:

    histogram    one read of the weights -> counts (+ exact limb sums) per bin, on the device
    (solve)      the summaries come to the host in one copy per group; the exact C++ CutSolver plans
    gather_keys  fp32/fp64 only: one more read, keys of the candidate bins of every layer that needs them
    (finish)     the solver's exact cuts, one (cut_key, ties) per layer
    cut_mask     one read + one write: boolean masks, or pruned weights zeroed in place

bf16/fp16 therefore read the weights twice and write masks once; fp32/fp64 read them three times. Device
memory beyond the outputs: the histograms of one chunk of layers (at most SUMMARY_BUDGET bytes), the table
(a few bytes per tile) and the gathered candidate keys.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import replace

import torch

from . import selection
from .layers import Layers

SUMMARY_BUDGET = 128 << 20  # device bytes of histograms per launch; more layers are done in chunks


def unavailable_reason(layers: Layers | None = None) -> str | None:
    """None when the Triton backend can run these layers (all of them, if None), else why not."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"Triton is not installed ({exc})"
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if layers is None:
        return None if interpret or torch.cuda.is_available() else "no CUDA device (and TRITON_INTERPRET is not set)"
    for w, name in zip(layers.tensors, layers.names):
        if w.device.type == "cpu" and not interpret:
            return f"{name} is a CPU tensor; Triton runs CUDA tensors (or CPU ones under TRITON_INTERPRET=1)"
        if w.device.type not in ("cpu", "cuda"):
            return f"{name} is on {w.device}"
    return None


def _groups(layers: Layers) -> dict[tuple, list[int]]:
    groups = defaultdict(list)
    for i, w in enumerate(layers.tensors):
        groups[(w.device, w.dtype)].append(i)
    return groups


def _chunks(indices: list[int], layer_bytes: int) -> list[list[int]]:
    per = max(1, SUMMARY_BUDGET // layer_bytes)
    return [indices[i:i + per] for i in range(0, len(indices), per)]


class TritonLayers:
    """Contiguous views of the layers (a copy only for non-contiguous ones) and the launches over them."""

    def __init__(self, layers: Layers):
        from .triton_kernels import layer_table

        self.layers = layers
        self.weights = [w.detach() if w.is_contiguous() else w.detach().contiguous() for w in layers.tensors]
        self.masks = [None if m is None else m.contiguous() for m in layers.masks]
        self.groups = _groups(layers)
        self.tables = {g: layer_table.build([self.weights[i] for i in idx], [self.masks[i] for i in idx],
                                            layer_table.DEFAULT_TILE) for g, idx in self.groups.items()}

    def summaries(self) -> list[selection.Summary]:
        from .triton_kernels import histogram, keys, layer_table

        out: list[selection.Summary | None] = [None] * len(self.weights)
        for (device, dtype), idx in self.groups.items():
            bins, _, limbs = keys.layout(dtype)
            for chunk in _chunks(idx, bins * (1 + max(limbs, 1)) * 8):  # int64 counts + limb sums
                ws, ms = [self.weights[i] for i in chunk], [self.masks[i] for i in chunk]
                table = self.tables[(device, dtype)] if len(chunk) == len(idx) else \
                    layer_table.build(ws, ms, layer_table.DEFAULT_TILE)
                counts, sums = histogram.histograms(ws, ms, table)
                counts, sums = counts.cpu(), sums.cpu()  # the one device-to-host copy of this chunk
                for j, i in enumerate(chunk):
                    out[i] = selection.Summary(dtype, self.weights[i].numel(), counts[j], sums[j])
        return out

    def gather_many(self, requests: list[tuple[int, int, int, int]]) -> dict[int, torch.Tensor]:
        """requests: (layer, bin_lo, bin_hi, size); one launch per group. Sorted keys on the host."""
        from .triton_kernels import gather_keys

        by_group = defaultdict(list)
        for r in requests:
            w = self.weights[r[0]]
            by_group[(w.device, w.dtype)].append(r)
        out = {}
        for reqs in by_group.values():
            ws, ms = [self.weights[r[0]] for r in reqs], [self.masks[r[0]] for r in reqs]
            keys = gather_keys.gather_keys(ws, ms, [(r[1], r[2]) for r in reqs], [r[3] for r in reqs])
            for r, k in zip(reqs, keys):
                out[r[0]] = k.cpu()
        return out

    def cuts(self, sparsity: float, method: str, group=None) -> selection.Cuts:
        summaries = self.summaries()
        source = replace(selection.LayerSource.from_layers(self.layers), summarize=lambda i: summaries[i],
                         gather_many=self.gather_many)
        return selection.find_cuts(source, sparsity, method, group)

    def masks_from(self, cuts: selection.Cuts) -> list[torch.Tensor]:
        from .triton_kernels import cut_mask

        out: list[torch.Tensor | None] = [None] * len(self.weights)
        for g, idx in self.groups.items():
            masks = cut_mask.cut_masks([self.weights[i] for i in idx], [self.masks[i] for i in idx],
                                       [cuts.cuts[i] for i in idx], self.tables[g])
            for i, m in zip(idx, masks):
                out[i] = m
        return out

    def zero_from_(self, cuts: selection.Cuts) -> None:
        """Zero the pruned weights of the original tensors in place (no mask allocated)."""
        from .triton_kernels import cut_mask

        for g, idx in self.groups.items():
            cut_mask.zero_cuts_([self.weights[i] for i in idx], [self.masks[i] for i in idx],
                                [cuts.cuts[i] for i in idx], self.tables[g])
        for w, mine in zip(self.layers.tensors, self.weights):
            if mine.data_ptr() != w.data_ptr():  # a non-contiguous layer was zeroed in its copy
                with torch.no_grad():
                    w.copy_(mine)
