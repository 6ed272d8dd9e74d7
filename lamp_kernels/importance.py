"""Importance inputs: per-layer non-negative keys that the selection ranks in place of |w|.

``importance=`` takes the same container as the weights (a tensor, a list, or a dict with the same keys).
Each entry is either

- a tensor of its weight's shape, on its device, in a floating dtype: checked once (a wrong container,
  shape, device or dtype, or a NaN, Inf or negative value anywhere, masked entries included, raises; -0.0
  counts as zero). The values take one read pass (on CPU tensors the C++ kernels' vectorised scan, which
  also spares the selection its own check of the keys; a min/max per layer elsewhere), or, where
  prune_masks and layer_sparsities run the plain selection on CPU tensors, no pass of their own: the
  summary pass reads them anyway and scans
  them as it goes (``key_layers(defer_values=True)``, selection.summarize_layers), so a bad value raises
  before anything is returned, with the same message, naming the first bad layer. Deferred, the values of
  every layer are checked after the structure (container, shape, device, dtype, ColumnScaled scales) of
  every layer; or
- ``ColumnScaled(scale)``: the importance fl32(|W_ij| * scale_j), j the column (the weight's last dimension;
  Wanda's |W_ij| * ||X_j|| when scale holds the input-feature norms). The CPU kernels of the plain selection,
  of OWL, of the budget methods' per-row rule and of N:M compute each importance as they read the weight, so
  nothing full-size is made; the other paths (and the ops' defaults on CUDA) make one float32 tensor per
  layer (Layers.materialized; plan._keys_for decides). The scale is checked here (finite, >= 0 once rounded
  to float32); a product that overflows float32, or a NaN/Inf alive weight, raises when the keys are read.

Selection then runs on these *keys* exactly as it runs on |w| without them (reference.py), and the masks
apply to the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .kernels_torch import NONFINITE_BIN, bin_of
from .layers import MAGNITUDE_LIMIT, SUPPORTED_DTYPES, Layers


@dataclass(frozen=True)
class ColumnScaled:
    """Importance |W_ij| * scale_j in float32, without a full-size tensor on the CPU:
    ``prune_masks(weights, 0.5, importance={name: ColumnScaled(norms[name]) ...})``. scale: one non-negative
    finite value per column (the weight's last dimension), any floating dtype, rounded to float32 first; |W_ij|
    is converted to float32 and the product rounded once: ``w.abs().float() * scale.float()``, bit for bit with
    flush-to-zero off (torch's default)."""

    scale: torch.Tensor


def scaled_importance(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 tensor a ColumnScaled importance stands for (scale already checked: float32, on the device)."""
    return weight.detach().abs().to(torch.float32) * scale


def checked_scale(entry: ColumnScaled, w: torch.Tensor, name: str) -> torch.Tensor:
    """The entry's scale as a contiguous float32 vector, checked against the weight (ValueError/TypeError)."""
    s = entry.scale
    if not isinstance(s, torch.Tensor) or not s.is_floating_point():
        raise TypeError(f"{name}: ColumnScaled needs a floating-point tensor of scales")
    if w.dim() == 0 or s.shape != (w.shape[-1],):
        raise ValueError(f"{name}: ColumnScaled scale of shape {tuple(s.shape)}; the weight {tuple(w.shape)} needs "
                         f"one scale per column ({w.shape[-1] if w.dim() else 'a 0-d weight has no columns'})")
    if s.device != w.device:
        raise ValueError(f"{name}: ColumnScaled scale is on {s.device}, weight on {w.device}")
    s = s.detach().to(torch.float32).contiguous()
    check_importance_values(s, f"{name} (ColumnScaled scale, as float32)")
    return s


def check_scaled_products(keys, indices: list[int]) -> None:
    """NaN/Inf among the alive column-scaled importances of these layers (NaN/Inf weights, or a product past
    float32's range) -> ValueError naming the layer."""
    if not indices:
        return
    sub = Layers([keys.tensors[i] for i in indices], [keys.masks[i] for i in indices],
                 [keys.names[i] for i in indices], "list", list(indices))
    for i, top in zip(indices, sub.alive_max_abs()):
        if not math.isfinite(top):
            raise ValueError(scaled_error(keys.names[i]))


def scaled_error(name: str) -> str:
    return (f"{name}: the ColumnScaled importance |w| * scale has NaN or Inf values (a NaN/Inf weight, or a "
            "product beyond float32's range)")


def _entries(layers: Layers, importance: Any) -> list[Any]:
    if layers.kind == "tensor":
        if not isinstance(importance, (torch.Tensor, ColumnScaled)):
            raise ValueError("importance must be a tensor (or ColumnScaled) when weights is a tensor")
        return [importance]
    if layers.kind == "dict":
        if not isinstance(importance, dict):
            raise ValueError("importance must be a dict with the same keys as weights")
        missing = [k for k in layers.keys if k not in importance]
        extra = [k for k in importance if k not in set(layers.keys)]
        if missing or extra:
            raise ValueError(f"importance must have the keys of weights: missing {[str(k) for k in missing[:5]]}, "
                             f"unknown {[str(k) for k in extra[:5]]}")
        return [importance[k] for k in layers.keys]
    if not isinstance(importance, (list, tuple)) or len(importance) != len(layers.tensors):
        raise ValueError(f"importance must be a list of {len(layers.tensors)} tensors (or ColumnScaled), like "
                         "weights")
    return list(importance)


def check_importance_values(t: torch.Tensor, name: str) -> None:
    """Finite and >= 0 everywhere; fp64 values within the range layers.py allows for fp64 weights."""
    check_importance_values_many([t], [name])


def check_importance_values_many(tensors: list[torch.Tensor], names: list[str]) -> None:
    """check_importance_values of each tensor, in order. CPU tensors are scanned by the C++ kernels in one
    pass (ops._C.value_scan: the largest magnitude and whether a value is negative), and only a tensor the
    scan doubts is read again, by torch, for the error message."""
    from . import ops  # here, not at the top: ops imports modules that import this one

    on_cpu = [i for i, t in enumerate(tensors) if t.device.type == "cpu" and t.numel()] if ops._C is not None else []
    clean = set()
    if on_cpu:
        tops, negative = ops._C.value_scan([tensors[i].detach() for i in on_cpu])
        for i, top, neg in zip(on_cpu, tops, negative):
            fp64_doubt = tensors[i].dtype == torch.float64 and (top >= MAGNITUDE_LIMIT or
                                                                0.0 < top < 1.0 / MAGNITUDE_LIMIT)
            if not neg and math.isfinite(top) and not fp64_doubt:
                clean.add(i)
    for i, (t, name) in enumerate(zip(tensors, names)):
        if i not in clean:
            _check_values_by_torch(t, name)


def _check_values_by_torch(t: torch.Tensor, name: str) -> None:
    if t.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(t.detach()))
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name}: importance has NaN values")
    if lo < 0:
        raise ValueError(f"{name}: importance has negative values (smallest {lo:g}); it must be >= 0")
    if math.isinf(hi):
        raise ValueError(f"{name}: importance has Inf values")
    if t.dtype == torch.float64 and (hi >= MAGNITUDE_LIMIT or 0.0 < hi < 1.0 / MAGNITUDE_LIMIT):
        raise ValueError(f"{name}: largest importance {hi:g} is outside [2^-496, 2^496); its square leaves "
                         "float64's normal range")


def check_scanned_values(t: torch.Tensor, name: str, top_bin: int, negative: bool) -> None:
    """The value check of an importance tensor from the summary pass's scan of all its elements
    (ops._C.bin_summaries_scanned): when the scan leaves any doubt -- a negative value, a NaN/Inf bin, an fp64
    magnitude bin outside the range -- check_importance_values decides, and raises with its message."""
    low, high = (bin_of(v, t.dtype) for v in (1.0 / MAGNITUDE_LIMIT, MAGNITUDE_LIMIT))
    fp64_doubt = t.dtype == torch.float64 and not low <= top_bin < high
    if negative or top_bin >= NONFINITE_BIN[t.dtype] or fp64_doubt:
        check_importance_values(t, name)


def _check_tensor(t: Any, w: torch.Tensor, name: str, values: bool = True) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: importance must be a tensor or ColumnScaled, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name}: importance dtype {t.dtype} is not bfloat16, float16, float32 or float64")
    if t.shape != w.shape:
        raise ValueError(f"{name}: importance shape {tuple(t.shape)} != weight shape {tuple(w.shape)}")
    if t.device != w.device:
        raise ValueError(f"{name}: importance is on {t.device}, weight on {w.device}")
    if values:
        check_importance_values(t, name)
    return t.detach()


def key_layers(layers: Layers, importance: Any, defer_values: bool = False) -> Layers:
    """The layers whose tensors are the selection keys: the validated importance, or the weights themselves.
    A ColumnScaled entry keeps the weight as its tensor and its scale in ``scales`` (layers.py).
    defer_values: leave the values of importance tensors unchecked (Layers.unchecked) for the caller to check
    with checked(), or in the summary pass (selection.summarize_layers); everything else is checked here."""
    if importance is None:
        return layers
    entries = _entries(layers, importance)
    tensors, scales, unchecked = [], [], []
    for i, (t, w, name) in enumerate(zip(entries, layers.tensors, layers.names)):
        if isinstance(t, ColumnScaled):
            tensors.append(w.detach())
            scales.append(checked_scale(t, w, name))
        else:
            tensors.append(_check_tensor(t, w, name, values=not defer_values))
            scales.append(None)
            unchecked += [i] if defer_values else []
    checked_now = [i for i, s in enumerate(scales) if s is None and i not in unchecked]
    return Layers(tensors, layers.masks, layers.names, layers.kind, layers.keys,
                  scales if any(s is not None for s in scales) else None, frozenset(unchecked), frozenset(checked_now))


def checked(keys: Layers) -> Layers:
    """The keys with the value checks key_layers deferred done (ValueError naming the first bad layer)."""
    if not keys.unchecked:
        return keys
    order = sorted(keys.unchecked)
    check_importance_values_many([keys.tensors[i] for i in order], [keys.names[i] for i in order])
    return Layers(keys.tensors, keys.masks, keys.names, keys.kind, keys.keys, keys.scales,
                  values_ok=keys.values_ok | keys.unchecked)
