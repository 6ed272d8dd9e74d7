"""Inputs: the container a user passes (one tensor, a list, or a name->tensor dict), validated once.

Every public function goes through :class:`Layers`, so every backend sees the same checks and returns
results in the caller's container. Inputs are never modified.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)

# Magnitudes outside [2^-496, 2^496) would let a sum of up to 2^31 squares leave float64's normal range
# (the exact sums are rounded to normal float64 numbers); only fp64 weights can get there.
MAGNITUDE_LIMIT = 2.0**496


try:
    from numpy import bool_ as np_bool
except ImportError:  # numpy is optional: without it no numpy bool can be passed

    class np_bool:  # type: ignore[no-redef]
        pass


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}, dtype {value.dtype} on {value.device}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def pruned_count(sparsity: float, n: int) -> int:
    """k = round(sparsity * n), rounding half to even (Python's ``round``)."""
    return int(round(sparsity * n))


def check_sparsity(sparsity: Any) -> float:
    """The sparsity as a float in [0, 1]. Accepted: a real number (Python int/float, NumPy integer/floating
    scalar, fractions.Fraction, ...: numbers.Real) or a one-element real torch tensor; not bool."""
    if isinstance(sparsity, torch.Tensor) and sparsity.numel() == 1 and sparsity.device.type != "meta" \
            and not (sparsity.dtype == torch.bool or sparsity.is_complex()):
        sparsity = sparsity.item()
    if isinstance(sparsity, (bool, np_bool)) or not isinstance(sparsity, numbers.Real):
        raise ValueError("sparsity must be a real number in [0, 1] (a Python, NumPy or one-element torch "
                         f"scalar), got {_describe(sparsity)}")
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
    # Column-scaled importance keys (importance.ColumnScaled): where scales[i] is set, layer i is ranked by
    # fl32(|tensors[i]| * scales[i][j]) (j the column), computed by the kernels as they read the weight.
    scales: list[torch.Tensor | None] | None = None
    # Importance tensors whose values (finite, >= 0) are still to be checked: importance.key_layers with
    # defer_values=True leaves them to the summary pass of the plain CPU selection (selection.summarize_layers),
    # and importance.checked() checks them for every other path.
    unchecked: frozenset[int] = frozenset()
    # Layers whose alive values are known to be finite (importance tensors checked everywhere, masked entries
    # included; column-scaled importances checked as they were made; layers through values_checked):
    # check_values does not read them again, except float64 ones (their range check is on the alive values).
    values_ok: frozenset[int] = frozenset()
    _detached: list[torch.Tensor] | None = None

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
            if w.device.type == "meta":
                raise ValueError(f"{name} is a meta tensor (a shape without data): load or materialise the "
                                 "weights before pruning")
            if w.dtype not in SUPPORTED_DTYPES:
                raise TypeError(f"{name}: dtype {w.dtype} is not a floating type this library prunes "
                                "(bfloat16, float16, float32, float64)")
            if w.numel() >= 2**31:
                raise ValueError(f"{name}: {w.numel()} elements; a single layer must have fewer than 2^31")
            if m is None:
                continue
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise ValueError(f"{name}: mask must be a bool tensor (True = alive)")
            if m.device.type == "meta":
                raise ValueError(f"{name}: mask is a meta tensor (a shape without data)")
            if m.shape != w.shape:
                raise ValueError(f"{name}: mask shape {tuple(m.shape)} != weight shape {tuple(w.shape)}")
            if m.device != w.device:
                raise ValueError(f"{name}: mask is on {m.device}, weight on {w.device}")

    def values_checked(self) -> Layers:
        """check_values, and the same layers marked so that later checks do not read them again."""
        self.check_values()
        return dataclasses.replace(self, values_ok=frozenset(range(len(self.tensors))))

    def check_values(self, skip_cuda: bool = False) -> None:
        """NaN/Inf among alive weights -> ValueError naming the layer; fp64 magnitude range likewise. A
        column-scaled layer (``scales``) is checked on its importances, which are float32 (NaN/Inf: a NaN/Inf
        weight, or a product past float32's range).
        skip_cuda: leave CUDA layers to kernels that check inside a pass they make anyway (no host sync)."""
        # values_ok layers are not read again, but float64 ones are: the range check is on the alive values,
        # which the importance check (over every entry) does not bound from below
        # (column-scaled layers' keys are float32: no range check, so no second read either)
        known = {i for i in self.values_ok if self.tensors[i].dtype != torch.float64 or self._scale(i) is not None}
        skip = {i for i, w in enumerate(self.tensors) if skip_cuda and w.device.type == "cuda"} | known
        if len(skip) == len(self.tensors):
            return
        found = self.alive_max_abs(skip)
        # column-scaled layers first, then the others, each in layer order: the order in which the paths that
        # make the importances (Layers.materialized, and so the reference) check them
        order = sorted(range(len(self.tensors)), key=lambda i: self._scale(i) is None)
        for i in order:
            max_abs = found[i]
            if i in skip:
                continue
            if not math.isfinite(max_abs) and self._scale(i) is not None:
                from .importance import scaled_error

                raise ValueError(scaled_error(self.names[i]))
            if not math.isfinite(max_abs):
                raise ValueError(f"{self.names[i]} has NaN or Inf weights")
            if self.tensors[i].dtype == torch.float64 and self._scale(i) is None:
                self.check_fp64_range(i, max_abs)

    def alive_max_abs(self, skip: set[int] = frozenset()) -> list[float]:
        """The largest |w| over each layer's alive weights (0 if none), inf where one of them is NaN or Inf.
        Layers in ``skip`` are not read (0). A column-scaled layer's: the largest of its alive importances.

        CPU layers go through the C++ kernels in one pass on their own thread pool: torch's reductions would
        run on its OpenMP threads, which then spin for milliseconds and take a core from the kernels that
        follow. Other devices (or no extension): torch."""
        from . import ops  # here, not at the top: ops imports modules that import this one

        out = [0.0] * len(self.tensors)
        on_cpu = ([i for i, w in enumerate(self.tensors) if w.device.type == "cpu" and i not in skip]
                  if ops._C is not None else [])
        for scaled in (False, True):
            idx = [i for i in on_cpu if (self._scale(i) is not None) == scaled]
            if not idx:
                continue
            ws, ms = [self.tensors[i].detach() for i in idx], [self.masks[i] for i in idx]
            found = (ops._C.alive_max_abs_scaled(ws, ms, [self._scale(i) for i in idx]) if scaled
                     else ops._C.alive_max_abs(ws, ms))
            for i, v in zip(idx, found):
                out[i] = v
        for i in sorted(set(range(len(self.tensors))) - set(on_cpu) - set(skip)):
            w, m = self.tensors[i], self.masks[i]
            if w.numel() == 0:
                continue
            if self._scale(i) is not None:
                from .importance import scaled_importance

                w = scaled_importance(w, self._scale(i))  # one layer's importances at a time
            a = w.detach().abs()
            if m is not None:
                a = torch.where(m, a, torch.zeros((), dtype=a.dtype, device=a.device))
            out[i] = float(a.max()) if bool(torch.isfinite(a).all()) else math.inf
        return out

    def check_fp64_rows(self, rows: list[int]) -> None:
        """LAMP within each of a layer's rows squares that row's values: a float64 row whose largest alive |value|
        is nonzero but below 2^-496 would sum squares that underflow to 0 -> ValueError naming the layer and
        the row (check_values looks at each layer's largest value only)."""
        for i, (w, m, r) in enumerate(zip(self.tensors, self.masks, rows)):
            if w.dtype != torch.float64 or r <= 1 or not w.numel():
                continue
            a = w.detach().abs().reshape(r, -1)
            if m is not None:
                a = torch.where(m.reshape(r, -1), a, torch.zeros((), dtype=a.dtype, device=a.device))
            top = a.amax(1)
            bad = torch.nonzero((top > 0) & (top < 1.0 / MAGNITUDE_LIMIT)).reshape(-1)
            if bad.numel():
                row = int(bad[0])
                raise ValueError(f"{self.names[i]}: the largest value of row {row}, {float(top[row]):g}, is below "
                                 "2^-496; its square leaves float64's normal range (LAMP per row sums them)")

    def check_fp64_range(self, i: int, max_abs: float) -> None:
        if max_abs >= MAGNITUDE_LIMIT or 0.0 < max_abs < 1.0 / MAGNITUDE_LIMIT:
            raise ValueError(f"{self.names[i]}: largest |w| = {max_abs:g} is outside [2^-496, 2^496); "
                             "its square leaves float64's normal range")

    def with_masks(self, masks: list[torch.Tensor | None]) -> Layers:
        """The same layers with other masks (already validated by the caller)."""
        return Layers(self.tensors, list(masks), self.names, self.kind, self.keys, self.scales, self.unchecked,
                      self.values_ok)

    def _scale(self, i: int) -> torch.Tensor | None:
        return None if self.scales is None else self.scales[i]

    def scaled(self) -> bool:
        return self.scales is not None and any(s is not None for s in self.scales)

    def materialized(self) -> Layers:
        """Layers whose tensors are the keys themselves: each column-scaled importance made a float32 tensor
        (for the paths that rank tensors: the reference, row selections, N:M, OWL, scores, the GPU kernels)."""
        if not self.scaled():
            return self
        from .importance import check_scaled_products, scaled_importance

        tensors = [w if s is None else scaled_importance(w, s) for w, s in zip(self.tensors, self.scales)]
        made = [i for i, s in enumerate(self.scales) if s is not None]
        keys = Layers(tensors, self.masks, self.names, self.kind, self.keys, None, self.unchecked, self.values_ok)
        check_scaled_products(keys, made)
        return Layers(tensors, self.masks, self.names, self.kind, self.keys, None, self.unchecked,
                      self.values_ok | frozenset(made))

    def detached(self) -> list[torch.Tensor]:
        """The tensors without autograd history (views of the same memory), made once per Layers."""
        if self._detached is None:
            self._detached = [w.detach() for w in self.tensors]
        return self._detached

    def numels(self) -> list[int]:
        return [w.numel() for w in self.tensors]

    def masked_counts(self) -> list[int]:
        # count_nonzero, not sum: torch sums a bool tensor through an int64 copy of it (8 bytes per element)
        return [0 if m is None else m.numel() - int(torch.count_nonzero(m)) for m in self.masks]

    def pack(self, values: Sequence[Any]) -> Any:
        """Per-layer results back in the caller's container."""
        if self.kind == "tensor":
            return values[0]
        if self.kind == "dict":
            return dict(zip(self.keys, values))
        return list(values)
