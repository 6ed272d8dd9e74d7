"""backend="cuda": sort-based scores and masks with the CUDA kernels of csrc/cuda (DESIGN-NOTES §2.2, §2.4).

    lamp_scores   per layer: CUB radix sort of (alive, |w|) keys with a 32-bit index, one fused exact scan
                  that writes the scores in flat order (small layers share one segmented sort)
    prune_masks   the same sort and scan keep each layer's sorted order values; the global cut is a radix
                  select over all layers on the device (no concatenation, any total size); masks follow
                  from the per-layer cut counts and the sort's permutation

The extension is ``lamp_kernels._cuda`` (built by setup.py where torch has CUDA), or, on a GPU machine with
a plain install, compiled on first use with ``torch.utils.cpp_extension.load`` (needs nvcc and ninja).
Memory: scores need twice the largest layer's keys and indices beyond their output; masks keep 12 bytes per
weight (sorted order values and permutation) until the cut is known, so for LLM-sized models the Triton
backend's sort-free masks are the right tool.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import allocation
from .layers import Layers, pruned_count
from .selection import Cuts

_ext = None
_error: str | None = None
SOURCES = Path(__file__).resolve().parent.parent / "csrc" / "cuda"


def _load():
    """The compiled module, or None with _error set. Tried once per process."""
    global _ext, _error
    if _ext is not None or _error is not None:
        return _ext
    if not torch.cuda.is_available():
        _error = "no CUDA device"
        return None
    try:
        from . import _cuda  # type: ignore[attr-defined]

        _ext = _cuda
    except ImportError as built_error:
        try:  # a GPU machine with a plain install: build it now
            from torch.utils.cpp_extension import load

            _ext = load("lamp_kernels_cuda", [str(SOURCES / f) for f in
                                              ("cuda_bindings.cpp", "lamp_scores.cu", "global_cut.cu")],
                        extra_cuda_cflags=["-O3", "-std=c++17"], extra_cflags=["-O3", "-std=c++17"])
        except Exception as exc:  # noqa: BLE001 -- any build failure means the backend is unavailable
            _error = f"the CUDA extension is not built ({built_error}) and the JIT build failed ({exc})"
    return _ext


def unavailable_reason(layers: Layers | None = None) -> str | None:
    if layers is not None:
        for w, name in zip(layers.tensors, layers.names):
            if w.device.type != "cuda":
                return f"{name} is on {w.device}; backend 'cuda' runs CUDA tensors"
        if len({w.device for w in layers.tensors}) > 1:
            return "backend 'cuda' needs all layers on one GPU"
    if torch.version.cuda is None:
        return "this torch has no CUDA"
    return None if _load() is not None else _error


def _by_dtype(layers: Layers) -> dict[torch.dtype, list[int]]:
    groups: dict[torch.dtype, list[int]] = {}
    for i, w in enumerate(layers.tensors):
        groups.setdefault(w.dtype, []).append(i)
    return groups


def lamp_scores(layers: Layers, float64: bool) -> list[torch.Tensor]:
    out: list[torch.Tensor | None] = [None] * len(layers.tensors)
    for idx in _by_dtype(layers).values():
        scores = _ext.lamp_scores([layers.tensors[i].detach() for i in idx], [layers.masks[i] for i in idx], float64)
        for i, s in zip(idx, scores):
            out[i] = s
    return out


def _sorted(layers: Layers, lamp: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    values: list[torch.Tensor | None] = [None] * len(layers.tensors)
    perms: list[torch.Tensor | None] = [None] * len(layers.tensors)
    for idx in _by_dtype(layers).values():
        v, p = _ext.sorted_order([layers.tensors[i].detach() for i in idx], [layers.masks[i] for i in idx], lamp)
        for i, vi, pi in zip(idx, v, p):
            values[i], perms[i] = vi, pi
    return values, perms


def _cut_counts(layers: Layers, sparsity: float, method: str):
    """(per-layer pruned counts on the device, permutations, threshold or None)."""
    if method in ("lamp", "global"):
        values, perms = _sorted(layers, method == "lamp")
        pruned, t = _ext.global_cut(values, pruned_count(sparsity, sum(layers.numels())))
        bits = int(t.item())
        threshold = None if bits == 0 else torch.tensor([bits - 1], dtype=torch.int64).view(torch.float64).item()
        return pruned, perms, threshold
    values, perms = _sorted(layers, False)  # per-layer counts: magnitude order
    masked = torch.stack([torch.searchsorted(v, torch.ones((), dtype=v.dtype, device=v.device)) for v in values])
    targets = torch.tensor(allocation.layer_counts(method, [tuple(w.shape) for w in layers.tensors], sparsity),
                           device=masked.device)
    return torch.maximum(targets, masked), perms, None


def layer_cuts(layers: Layers, sparsity: float, method: str, group=None) -> Cuts:
    if group is not None:
        raise ValueError("backend 'cuda' does not run distributed; use backend='triton' or None")
    layers.check_values()
    pruned, _, threshold = _cut_counts(layers, sparsity, method)
    return Cuts([], pruned.tolist(), layers.numels(), threshold)


def prune_masks(layers: Layers, sparsity: float, method: str, group=None) -> list[torch.Tensor]:
    if group is not None:
        raise ValueError("backend 'cuda' does not run distributed; use backend='triton' or None")
    layers.check_values()
    pruned, perms, _ = _cut_counts(layers, sparsity, method)
    return [_ext.mask_from_cut(p, pruned, i, list(w.shape)) for i, (p, w) in enumerate(zip(perms, layers.tensors))]
