"""Inputs: the container a user passes (one tensor, a list, or a name->tensor dict), validated once.

Every public function goes through :class:`Layers`, so every backend sees the same checks and returns
results in the caller's container. Inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)

# Magnitudes outside [2^-496, 2^496) would let a sum of up to 2^31 squares leave float64's normal range
# (the exact sums are rounded to normal float64 numbers); only fp64 weights can get there.
MAGNITUDE_LIMIT = 2.0**496


def pruned_count(sparsity: float, n: int) -> int:
    """k = round(sparsity * n), rounding half to even (Python's ``round``)."""
    return int(round(sparsity * n))


def check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ValueError(f"sparsity must be a number in [0, 1], got {sparsity!r}")
    s = float(sparsity)
    if math.isnan(s) or not 0.0 <= s <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    return s


@dataclass
class Layers:
    """Validated layers: ``tensors[i]`` with optional ``masks[i]`` (bool, True = alive), named ``names[i]``."""

    tensors: list[torch.Tensor]
    masks: list[torch.Tensor | None]
    names: list[str]
    kind: str  # "tensor", "list" or "dict"
    keys: list[Any]

    @classmethod
    def from_inputs(cls, weights: Any, masks: Any = None) -> Layers:
        if isinstance(weights, torch.Tensor):
            kind, keys, tensors = "tensor", [None], [weights]
            mask_list = [masks] if masks is not None else [None]
            if masks is not None and not isinstance(masks, torch.Tensor):
                raise ValueError("masks must be a tensor when weights is a tensor")
        elif isinstance(weights, dict):
            kind, keys, tensors = "dict", list(weights.keys()), list(weights.values())
            mask_list = cls._dict_masks(keys, masks)
        elif isinstance(weights, (list, tuple)):
            kind, keys, tensors = "list", list(range(len(weights))), list(weights)
            mask_list = cls._list_masks(len(tensors), masks)
        else:
            raise TypeError(f"weights must be a tensor, a list or a dict of tensors, got {type(weights).__name__}")
        if not tensors:
            raise ValueError("no layers given")
        names = [str(k) if kind == "dict" else f"layer {k}" if kind == "list" else "the tensor" for k in keys]
        layers = cls(tensors, mask_list, names, kind, keys)
        layers._check()
        return layers

    @staticmethod
    def _dict_masks(keys: list, masks: Any) -> list:
        if masks is None:
            return [None] * len(keys)
        if not isinstance(masks, dict):
            raise ValueError("masks must be a dict with the same keys as weights")
        unknown = set(masks) - set(keys)
        if unknown:
            raise ValueError(f"masks has keys that weights does not: {sorted(map(str, unknown))[:5]}")
        return [masks.get(k) for k in keys]

    @staticmethod
    def _list_masks(n: int, masks: Any) -> list:
        if masks is None:
            return [None] * n
        if not isinstance(masks, (list, tuple)) or len(masks) != n:
            raise ValueError(f"masks must be a list of {n} tensors (or None entries)")
        return list(masks)

    def _check(self) -> None:
        for w, m, name in zip(self.tensors, self.masks, self.names):
            if not isinstance(w, torch.Tensor):
                raise TypeError(f"{name}: expected a tensor, got {type(w).__name__}")
            if w.dtype not in SUPPORTED_DTYPES:
                raise TypeError(f"{name}: dtype {w.dtype} is not a floating type this library prunes "
                                "(bfloat16, float16, float32, float64)")
            if w.numel() >= 2**31:
                raise ValueError(f"{name}: {w.numel()} elements; a single layer must have fewer than 2^31")
            if m is None:
                continue
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise ValueError(f"{name}: mask must be a bool tensor (True = alive)")
            if m.shape != w.shape:
                raise ValueError(f"{name}: mask shape {tuple(m.shape)} != weight shape {tuple(w.shape)}")
            if m.device != w.device:
                raise ValueError(f"{name}: mask is on {m.device}, weight on {w.device}")

    def check_values(self) -> None:
        """NaN/Inf among alive weights -> ValueError naming the layer; fp64 magnitude range likewise."""
        for i, max_abs in enumerate(self.alive_max_abs()):
            if not math.isfinite(max_abs):
                raise ValueError(f"{self.names[i]} has NaN or Inf weights")
            if self.tensors[i].dtype == torch.float64:
                self.check_fp64_range(i, max_abs)

    def alive_max_abs(self) -> list[float]:
        """The largest |w| over each layer's alive weights (0 if none), inf where one of them is NaN or Inf.

        CPU layers go through the C++ kernels in one pass on their own thread pool: torch's reductions would
        run on its OpenMP threads, which then spin for milliseconds and take a core from the kernels that
        follow. Other devices (or no extension): torch."""
        from . import ops  # here, not at the top: ops imports modules that import this one

        out = [0.0] * len(self.tensors)
        on_cpu = [i for i, w in enumerate(self.tensors) if w.device.type == "cpu"] if ops._C is not None else []
        if on_cpu:
            found = ops._C.alive_max_abs([self.tensors[i].detach() for i in on_cpu], [self.masks[i] for i in on_cpu])
            for i, v in zip(on_cpu, found):
                out[i] = v
        for i in sorted(set(range(len(self.tensors))) - set(on_cpu)):
            w, m = self.tensors[i], self.masks[i]
            if w.numel() == 0:
                continue
            a = w.detach().abs()
            if m is not None:
                a = torch.where(m, a, torch.zeros((), dtype=a.dtype, device=a.device))
            out[i] = float(a.max()) if bool(torch.isfinite(a).all()) else math.inf
        return out

    def check_fp64_range(self, i: int, max_abs: float) -> None:
        if max_abs >= MAGNITUDE_LIMIT or 0.0 < max_abs < 1.0 / MAGNITUDE_LIMIT:
            raise ValueError(f"{self.names[i]}: largest |w| = {max_abs:g} is outside [2^-496, 2^496); "
                             "its square leaves float64's normal range")

    def numels(self) -> list[int]:
        return [w.numel() for w in self.tensors]

    def masked_counts(self) -> list[int]:
        return [0 if m is None else int(m.numel() - m.sum()) for m in self.masks]

    def pack(self, values: Sequence[Any]) -> Any:
        """Per-layer results back in the caller's container."""
        if self.kind == "tensor":
            return values[0]
        if self.kind == "dict":
            return dict(zip(self.keys, values))
        return list(values)
