"""The library's ops, declared with ``torch.library``.

Each op's default kernel is pure torch and works on every device (kernels_torch.py, or the reference for
scores); compiled kernels register as per-device overrides. If the C++ extension is missing the package
still imports, warns once, and the reference backend serves every call.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import kernels_torch, reference

try:
    from . import _C  # type: ignore[attr-defined]

    EXTENSION_ERROR: str | None = None
except ImportError as exc:  # not built, or built against another torch
    _C = None
    EXTENSION_ERROR = str(exc)
    warnings.warn(
        "lamp_kernels: the C++ extension is not available, using the slow float64 reference backend "
        f"({exc}). Build it with: pip install --no-build-isolation -e .",
        RuntimeWarning,
        stacklevel=2,
    )

BUILD_HINT = "build it with `pip install --no-build-isolation -e .` against this torch"


@torch.library.custom_op("lamp_kernels::bin_summary", mutates_args=())
def bin_summary(w: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per-bin alive counts and exact limb sums of squared significands (see kernels_torch)."""
    return kernels_torch.bin_summary_ref(w, mask)


@bin_summary.register_fake
def _(w, mask):
    _, bins, _, limbs, _, _ = kernels_torch.DTYPE_INFO[w.dtype]
    return w.new_empty((bins,), dtype=torch.int64), w.new_empty((bins, limbs), dtype=torch.int64)


@torch.library.custom_op("lamp_kernels::gather_bin_keys", mutates_args=())
def gather_bin_keys(w: Tensor, mask: Tensor | None, bin_lo: int, bin_hi: int) -> Tensor:
    """Sorted keys of the alive elements in bins [bin_lo, bin_hi]."""
    return kernels_torch.gather_bin_keys_ref(w, mask, bin_lo, bin_hi)


@gather_bin_keys.register_fake
def _(w, mask, bin_lo, bin_hi):
    n = torch.library.get_ctx().new_dynamic_size()
    return w.new_empty((n,), dtype=torch.int64)


@torch.library.custom_op("lamp_kernels::apply_cut", mutates_args=())
def apply_cut(w: Tensor, mask: Tensor | None, cut_key: int, ties: int) -> Tensor:
    """Boolean keep-mask of one layer from its cut (see kernels_torch.apply_cut_ref)."""
    return kernels_torch.apply_cut_ref(w, mask, cut_key, ties)


@apply_cut.register_fake
def _(w, mask, cut_key, ties):
    return torch.empty_like(w, dtype=torch.bool)


@torch.library.custom_op("lamp_kernels::lamp_scores", mutates_args=())
def lamp_scores(weights: list[Tensor], masks: list[Tensor | None], float64: bool) -> list[Tensor]:
    """LAMP scores of each layer (float32, or float64 when asked)."""
    dtype = torch.float64 if float64 else torch.float32
    return [reference.lamp_scores(w, m).to(dtype) for w, m in zip(weights, masks)]


@lamp_scores.register_fake
def _(weights, masks, float64):
    dtype = torch.float64 if float64 else torch.float32
    return [torch.empty_like(w, dtype=dtype) for w in weights]


if _C is not None:
    bin_summary.register_kernel("cpu")(lambda w, mask: tuple(_C.bin_summary(w, mask)))
    gather_bin_keys.register_kernel("cpu")(_C.gather_bin_keys)
    apply_cut.register_kernel("cpu")(_C.apply_cut)
    lamp_scores.register_kernel("cpu")(lambda weights, masks, float64: _C.lamp_scores(weights, masks, float64))


def solver(codes: list[int], counts: list[Tensor], sums: list[Tensor], lamp: bool):
    """The exact cut solver (C++), which runs on the host over the small per-layer summaries."""
    if _C is None:
        raise RuntimeError(f"lamp_kernels: the compiled solver is not available ({EXTENSION_ERROR}); {BUILD_HINT}")
    return _C.CutSolver(codes, counts, sums, lamp)
