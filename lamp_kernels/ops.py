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


# Declared with torch.library.Library rather than torch.library.custom_op: calls go straight through the
# dispatcher, without custom_op's first-call import of torch._dynamo (about a second per process).
_lib = torch.library.Library("lamp_kernels", "DEF")
_lib.define("bin_summary(Tensor w, Tensor? mask) -> (Tensor, Tensor)")
_lib.define("gather_bin_keys(Tensor w, Tensor? mask, int bin_lo, int bin_hi) -> Tensor")
_lib.define("apply_cut(Tensor w, Tensor? mask, int cut_key, int ties) -> Tensor")
_lib.define("zero_cut_(Tensor(a!) w, Tensor? mask, int cut_key, int ties) -> ()")
_lib.define("lamp_scores(Tensor[] weights, Tensor?[] masks, bool float64) -> Tensor[]")


def reference_lamp_scores(weights: list[Tensor], masks: list[Tensor | None], float64: bool) -> list[Tensor]:
    """The reference's scores as float32 (or float64): the op's default kernel and the reference backend."""
    dtype = torch.float64 if float64 else torch.float32
    return [reference.lamp_scores(w, m).to(dtype) for w, m in zip(weights, masks)]


# Defaults: pure torch, every device.
_lib.impl("bin_summary", kernels_torch.bin_summary_ref, "CompositeExplicitAutograd")
_lib.impl("gather_bin_keys", kernels_torch.gather_bin_keys_ref, "CompositeExplicitAutograd")
_lib.impl("apply_cut", kernels_torch.apply_cut_ref, "CompositeExplicitAutograd")
_lib.impl("zero_cut_", kernels_torch.zero_cut_ref, "CompositeExplicitAutograd")
_lib.impl("lamp_scores", reference_lamp_scores, "CompositeExplicitAutograd")


@torch.library.register_fake("lamp_kernels::bin_summary", lib=_lib)
def _(w, mask):
    _, bins, _, limbs, _, _ = kernels_torch.DTYPE_INFO[w.dtype]
    return w.new_empty((bins,), dtype=torch.int64), w.new_empty((bins, limbs), dtype=torch.int64)


@torch.library.register_fake("lamp_kernels::gather_bin_keys", lib=_lib)
def _(w, mask, bin_lo, bin_hi):
    n = torch.library.get_ctx().new_dynamic_size()
    return w.new_empty((n,), dtype=torch.int64)


@torch.library.register_fake("lamp_kernels::apply_cut", lib=_lib)
def _(w, mask, cut_key, ties):
    return torch.empty_like(w, dtype=torch.bool)


@torch.library.register_fake("lamp_kernels::zero_cut_", lib=_lib)
def _(w, mask, cut_key, ties):
    return None


@torch.library.register_fake("lamp_kernels::lamp_scores", lib=_lib)
def _(weights, masks, float64):
    dtype = torch.float64 if float64 else torch.float32
    return [torch.empty_like(w, dtype=dtype) for w in weights]


def _zero_cut_cpu(w: Tensor, mask: Tensor | None, cut_key: int, ties: int) -> None:
    if w.is_contiguous():
        _C.zero_cut_(w, mask, cut_key, ties)
    else:  # the kernel walks flat memory: work on a contiguous copy
        tmp = w.contiguous()
        _C.zero_cut_(tmp, mask, cut_key, ties)
        w.copy_(tmp)


# Overrides: the compiled kernels.
if _C is not None:
    _lib.impl("bin_summary", lambda w, mask: tuple(_C.bin_summary(w, mask)), "CPU")
    _lib.impl("gather_bin_keys", _C.gather_bin_keys, "CPU")
    _lib.impl("apply_cut", _C.apply_cut, "CPU")
    _lib.impl("zero_cut_", _zero_cut_cpu, "CPU")
    _lib.impl("lamp_scores", _C.lamp_scores, "CPU")

bin_summary = torch.ops.lamp_kernels.bin_summary  # per-bin alive counts + exact limb sums (kernels_torch)
gather_bin_keys = torch.ops.lamp_kernels.gather_bin_keys  # sorted keys of alive elements in bins [lo, hi]
apply_cut = torch.ops.lamp_kernels.apply_cut  # keep-mask of one layer from its cut
zero_cut_ = torch.ops.lamp_kernels.zero_cut_  # the same cut applied in place: pruned weights := 0
lamp_scores = torch.ops.lamp_kernels.lamp_scores  # LAMP scores per layer (float32, or float64)


def solver(codes: list[int], counts: list[Tensor], sums: list[Tensor], lamp: bool):
    """The exact cut solver (C++), which runs on the host over the small per-layer summaries."""
    if _C is None:
        raise RuntimeError(f"lamp_kernels: the compiled solver is not available ({EXTENSION_ERROR}); {BUILD_HINT}")
    return _C.CutSolver(codes, counts, sums, lamp)
