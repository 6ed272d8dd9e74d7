"""Importance inputs: per-layer non-negative tensors that the selection ranks in place of |w|.

``importance=`` takes the same container as the weights (a tensor, a list, or a dict with the same keys),
each entry of its weight's shape and on its device, in a floating dtype. Selection then runs on these
*keys* exactly as it runs on |w| without them (reference.py), and the masks apply to the weights. Checked
here once: a wrong container, shape, device or dtype, or a NaN, Inf or negative value (anywhere, masked
entries included: one min/max pass per layer) raises; -0.0 counts as zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .layers import MAGNITUDE_LIMIT, SUPPORTED_DTYPES, Layers


def _entries(layers: Layers, importance: Any) -> list[Any]:
    if layers.kind == "tensor":
        if not isinstance(importance, torch.Tensor):
            raise ValueError("importance must be a tensor when weights is a tensor")
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
        raise ValueError(f"importance must be a list of {len(layers.tensors)} tensors, like weights")
    return list(importance)


def check_importance_values(t: torch.Tensor, name: str) -> None:
    """Finite and >= 0 everywhere; fp64 values within the range layers.py allows for fp64 weights."""
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


def key_layers(layers: Layers, importance: Any) -> Layers:
    """The layers whose tensors are the selection keys: the validated importance, or the weights themselves."""
    if importance is None:
        return layers
    tensors = _entries(layers, importance)
    for t, w, name in zip(tensors, layers.tensors, layers.names):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: importance must be a tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name}: importance dtype {t.dtype} is not bfloat16, float16, float32 or float64")
        if t.shape != w.shape:
            raise ValueError(f"{name}: importance shape {tuple(t.shape)} != weight shape {tuple(w.shape)}")
        if t.device != w.device:
            raise ValueError(f"{name}: importance is on {t.device}, weight on {w.device}")
        check_importance_values(t, name)
    return layers.with_tensors([t.detach() for t in tensors])
