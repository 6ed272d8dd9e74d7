"""The library's ops, declared with ``torch.library``: the one dispatch point of every compiled path.

Each op takes a list of same-dtype layers on one device. Its default kernel is pure torch and works on
every device (kernels_torch.py, or the reference for scores); compiled kernels register per device:

    op                  CPU (csrc/cpu, ``_C``)        CUDA
    bin_summaries       C++ histograms, sparse        bf16/fp16: the CUDA library's shared-memory histogram when
                                                      it is built, else Triton; fp32/fp64: Triton; compacted
                                                      on the device
    gather_bin_keys     C++                           Triton
    apply_cuts          C++                           Triton
    zero_cuts_          C++                           Triton
    bin_summaries_scaled  C++: each importance made in  the default: the float32 keys made, then
    gather_bin_keys_scaled  an L1 block as the weight   the plain op (ColumnScaled keys,
    apply_cuts_scaled     is read (scaled_keys.h)       importance.py)
    cut_and_gather      C++: gather_bin_keys and        the pure-torch default (selection.layer_masks
    fix_cuts_             apply_cuts in one pass, then  calls them for CPU layers only)
                          the candidates decided
    lamp_scores         C++ radix sort + exact scan   the CUDA library (csrc/cuda, cuda_backend.py)
    row_order_values    C++ per-unit sort + scan      the CUDA library, rows as sort segments (cuda_rows.py)
    row_lamp_scores     C++ per-unit sort + scan      the CUDA library, rows as sort segments (cuda_rows.py)
    row_cut_masks       C++ per-unit selection        the pure-torch default (a stable sort per row)
    row_cut_masks_scaled  C++: each unit's importances   the default: the float32 keys made, then
                          made as it is cut               row_cut_masks (ColumnScaled keys)
    row_value_window    C++ per-unit sort + scan,     the pure-torch default (streamed_selection.py runs
                          values not kept               on CPU tensors only)

The row ops view each layer as [rows, numel / rows] units (rows.py): granularity="row", and the bounded
selections with one unit per layer.

So prune_masks, layer_sparsities, prune_, distributed selection and ``lamp-prune`` take the same compiled
path on whatever device the weights are. The CUDA kernels load their code on first use; when it is missing
they raise an error that says how to get it (no silent fallback to the slow twins on a GPU). If the C++
extension is missing the package still imports, warns once, and the reference backend serves every call.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import kernels_torch, reference, rows

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
_lib.define("bin_summaries(Tensor[] weights, Tensor?[] masks) -> (Tensor, Tensor, Tensor, Tensor)")
_lib.define("gather_bin_keys(Tensor[] weights, Tensor?[] masks, int[] bin_lo, int[] bin_hi, int[] sizes) -> Tensor")
_lib.define("apply_cuts(Tensor[] weights, Tensor?[] masks, int[] cut_keys, int[] ties) -> Tensor[]")
_lib.define("zero_cuts_(Tensor(a!)[] weights, Tensor?[] masks, int[] cut_keys, int[] ties) -> ()")
# Column-scaled importance keys fl32(|w| * s_j) (importance.ColumnScaled), computed as the weights are read.
_lib.define("bin_summaries_scaled(Tensor[] weights, Tensor?[] masks, Tensor[] scales) "
            "-> (Tensor, Tensor, Tensor, Tensor)")
_lib.define("gather_bin_keys_scaled(Tensor[] weights, Tensor?[] masks, Tensor[] scales, int[] bin_lo, int[] bin_hi, "
            "int[] sizes) -> Tensor")
_lib.define("apply_cuts_scaled(Tensor[] weights, Tensor?[] masks, Tensor[] scales, int[] cut_keys, int[] ties) "
            "-> Tensor[]")
# The masks path in one pass (selection.py): provisional masks plus the candidates, then the candidates fixed.
_lib.define("cut_and_gather(Tensor[] weights, Tensor?[] masks, Tensor[] scales, int[] bin_lo, int[] bin_hi, "
            "int[] sizes) -> (Tensor[], Tensor, Tensor, Tensor)")
_lib.define("fix_cuts_(Tensor(a!)[] masks, Tensor keys, Tensor positions, int[] sizes, int[] cut_keys, int[] ties) "
            "-> ()")
_lib.define("lamp_scores(Tensor[] weights, Tensor?[] masks, bool float64) -> Tensor[]")
_lib.define("row_order_values(Tensor[] keys, Tensor?[] masks, int[] rows, bool lamp) -> Tensor[]")
_lib.define("row_lamp_scores(Tensor[] keys, Tensor?[] masks, int[] rows, bool float64) -> Tensor[]")
_lib.define("row_cut_masks(Tensor[] keys, Tensor?[] masks, int[] rows, Tensor[] counts) -> Tensor[]")
_lib.define("row_cut_masks_scaled(Tensor[] weights, Tensor?[] masks, Tensor[] scales, int[] rows, Tensor[] counts) "
            "-> Tensor[]")
_lib.define("row_value_window(Tensor[] keys, Tensor?[] masks, int[] rows, bool lamp, int lo, int hi, int limit, "
            "int buckets) -> (Tensor[], Tensor[], Tensor[], Tensor)")


def reference_lamp_scores(weights: list[Tensor], masks: list[Tensor | None], float64: bool) -> list[Tensor]:
    """The reference's scores as float32 (or float64): the op's default kernel and the reference backend."""
    dtype = torch.float64 if float64 else torch.float32
    return [reference.lamp_scores(w, m).to(dtype) for w, m in zip(weights, masks)]


def _scaled_keys(weights: list[Tensor], scales: list[Tensor]) -> list[Tensor]:
    from .importance import scaled_importance

    for w, s in zip(weights, scales):
        if s.dtype != torch.float32 or s.shape != (w.shape[-1],) or s.device != w.device:
            raise RuntimeError("the scaled ops take one float32 scale per column, on the weight's device")
    return [scaled_importance(w, s) for w, s in zip(weights, scales)]


# Defaults: pure torch, every device. The scaled ops' defaults make the float32 keys and run the plain ops
# (Triton on CUDA); the CPU kernels compute them in L1-sized blocks instead.
_lib.impl("bin_summaries_scaled", lambda w, m, s: bin_summaries(_scaled_keys(w, s), m), "CompositeExplicitAutograd")
_lib.impl("gather_bin_keys_scaled", lambda w, m, s, *a: gather_bin_keys(_scaled_keys(w, s), m, *a),
          "CompositeExplicitAutograd")
_lib.impl("apply_cuts_scaled", lambda w, m, s, *a: apply_cuts(_scaled_keys(w, s), m, *a), "CompositeExplicitAutograd")
_lib.impl("cut_and_gather", lambda w, m, s, *a: kernels_torch.cut_and_gather_ref(_scaled_keys(w, s) if s else w, m, *a),
          "CompositeExplicitAutograd")
_lib.impl("fix_cuts_", kernels_torch.fix_cuts_ref_, "CompositeExplicitAutograd")
_lib.impl("bin_summaries", kernels_torch.bin_summaries_ref, "CompositeExplicitAutograd")
_lib.impl("gather_bin_keys", kernels_torch.gather_bin_keys_many_ref, "CompositeExplicitAutograd")
_lib.impl("apply_cuts", kernels_torch.apply_cuts_ref, "CompositeExplicitAutograd")
_lib.impl("zero_cuts_", kernels_torch.zero_cuts_ref_, "CompositeExplicitAutograd")
_lib.impl("lamp_scores", reference_lamp_scores, "CompositeExplicitAutograd")
_lib.impl("row_order_values", rows.row_order_values_ref, "CompositeExplicitAutograd")
_lib.impl("row_lamp_scores", rows.row_lamp_scores_ref, "CompositeExplicitAutograd")
_lib.impl("row_cut_masks", rows.row_cut_masks_ref, "CompositeExplicitAutograd")
_lib.impl("row_cut_masks_scaled", lambda w, m, s, r, c: row_cut_masks(_scaled_keys(w, s), m, r, c),
          "CompositeExplicitAutograd")
_lib.impl("row_value_window", rows.row_value_window_ref, "CompositeExplicitAutograd")


@torch.library.register_fake("lamp_kernels::bin_summaries", lib=_lib)
def _(weights, masks):
    limbs = kernels_torch.DTYPE_INFO[weights[0].dtype][3]
    entries = torch.library.get_ctx().new_dynamic_size()
    w = weights[0]
    return (w.new_empty((len(weights) + 1,), dtype=torch.int64), w.new_empty((entries,), dtype=torch.int64),
            w.new_empty((entries,), dtype=torch.int64), w.new_empty((entries, limbs), dtype=torch.int64))


@torch.library.register_fake("lamp_kernels::bin_summaries_scaled", lib=_lib)
def _(weights, masks, scales):
    entries = torch.library.get_ctx().new_dynamic_size()
    w = weights[0]
    return (w.new_empty((len(weights) + 1,), dtype=torch.int64), w.new_empty((entries,), dtype=torch.int64),
            w.new_empty((entries,), dtype=torch.int64), w.new_empty((entries, 2), dtype=torch.int64))


@torch.library.register_fake("lamp_kernels::gather_bin_keys_scaled", lib=_lib)
def _(weights, masks, scales, bin_lo, bin_hi, sizes):
    return weights[0].new_empty((sum(sizes),), dtype=torch.int64)


@torch.library.register_fake("lamp_kernels::apply_cuts_scaled", lib=_lib)
def _(weights, masks, scales, cut_keys, ties):
    return [torch.empty_like(w, dtype=torch.bool) for w in weights]


@torch.library.register_fake("lamp_kernels::gather_bin_keys", lib=_lib)
def _(weights, masks, bin_lo, bin_hi, sizes):
    return weights[0].new_empty((sum(sizes),), dtype=torch.int64)


@torch.library.register_fake("lamp_kernels::apply_cuts", lib=_lib)
def _(weights, masks, cut_keys, ties):
    return [torch.empty_like(w, dtype=torch.bool) for w in weights]


@torch.library.register_fake("lamp_kernels::cut_and_gather", lib=_lib)
def _(weights, masks, scales, bin_lo, bin_hi, sizes):
    n = sum(sizes)
    w = weights[0]
    return ([torch.empty_like(x, dtype=torch.bool) for x in weights], w.new_empty((n,), dtype=torch.int64),
            w.new_empty((n,), dtype=torch.int64), w.new_empty((n,), dtype=torch.int64))


@torch.library.register_fake("lamp_kernels::fix_cuts_", lib=_lib)
def _(masks, keys, positions, sizes, cut_keys, ties):
    return None


@torch.library.register_fake("lamp_kernels::zero_cuts_", lib=_lib)
def _(weights, masks, cut_keys, ties):
    return None


@torch.library.register_fake("lamp_kernels::lamp_scores", lib=_lib)
def _(weights, masks, float64):
    dtype = torch.float64 if float64 else torch.float32
    return [torch.empty_like(w, dtype=dtype) for w in weights]


@torch.library.register_fake("lamp_kernels::row_order_values", lib=_lib)
def _(keys, masks, rows, lamp):
    return [k.new_empty((k.numel(),), dtype=torch.int64) for k in keys]


@torch.library.register_fake("lamp_kernels::row_lamp_scores", lib=_lib)
def _(keys, masks, rows, float64):
    return [torch.empty_like(k, dtype=torch.float64 if float64 else torch.float32) for k in keys]


@torch.library.register_fake("lamp_kernels::row_cut_masks", lib=_lib)
def _(keys, masks, rows, counts):
    return [torch.empty_like(k, dtype=torch.bool) for k in keys]


@torch.library.register_fake("lamp_kernels::row_cut_masks_scaled", lib=_lib)
def _(weights, masks, scales, rows, counts):
    return [torch.empty_like(w, dtype=torch.bool) for w in weights]


@torch.library.register_fake("lamp_kernels::row_value_window", lib=_lib)
def _(keys, masks, rows, lamp, lo, hi, limit, buckets):
    ctx = torch.library.get_ctx()
    counts = [k.new_empty((r,), dtype=torch.int64) for k, r in zip(keys, rows)]
    return (counts, [c.new_empty(c.shape) for c in counts],
            [k.new_empty((ctx.new_dynamic_size(),), dtype=torch.int64) for k in keys],
            torch.empty((len(keys), buckets), dtype=torch.int64))


# CPU: the C++ kernels.
def _gather_cpu(weights, masks, bin_lo, bin_hi, sizes):
    out = _C.gather_bin_keys_many(weights, masks, bin_lo, bin_hi)
    if out.numel() != sum(sizes):
        raise RuntimeError("gather_bin_keys: the sizes do not match the layers' keys")
    return out


def _gather_scaled_cpu(weights, masks, scales, bin_lo, bin_hi, sizes):
    out = _C.gather_bin_keys_scaled(weights, masks, scales, bin_lo, bin_hi)
    if out.numel() != sum(sizes):
        raise RuntimeError("gather_bin_keys_scaled: the sizes do not match the layers' keys")
    return out


def _apply_cuts_cpu(weights, masks, cut_keys, ties):
    return _C.apply_cuts(weights, masks, cut_keys, ties)


def _zero_cuts_cpu(weights, masks, cut_keys, ties):
    # The kernel walks flat memory: a non-contiguous weight is zeroed in a contiguous copy, copied back.
    flat = [w if w.is_contiguous() else w.contiguous() for w in weights]
    _C.zero_cuts_(flat, masks, cut_keys, ties)
    for w, f in zip(weights, flat):
        if f is not w:
            w.copy_(f)


if _C is not None:
    _lib.impl("bin_summaries", lambda weights, masks: tuple(_C.bin_summaries(weights, masks)), "CPU")
    _lib.impl("gather_bin_keys", _gather_cpu, "CPU")
    _lib.impl("apply_cuts", _apply_cuts_cpu, "CPU")
    _lib.impl("zero_cuts_", _zero_cuts_cpu, "CPU")
    _lib.impl("bin_summaries_scaled", lambda w, m, s: tuple(_C.bin_summaries_scaled(w, m, s)), "CPU")
    _lib.impl("gather_bin_keys_scaled", _gather_scaled_cpu, "CPU")
    _lib.impl("apply_cuts_scaled", _C.apply_cuts_scaled, "CPU")
    _lib.impl("cut_and_gather", lambda *a: tuple(_C.cut_and_gather(*a)), "CPU")
    _lib.impl("fix_cuts_", _C.fix_cuts_, "CPU")
    _lib.impl("lamp_scores", _C.lamp_scores, "CPU")
    _lib.impl("row_order_values", _C.row_order_values, "CPU")
    _lib.impl("row_lamp_scores", _C.row_lamp_scores, "CPU")
    _lib.impl("row_cut_masks", _C.row_cut_masks, "CPU")
    _lib.impl("row_cut_masks_scaled", _C.row_cut_masks_scaled, "CPU")
    _lib.impl("row_value_window", lambda *a: tuple(_C.row_value_window(*a)), "CPU")


# CUDA: Triton kernels and the CUDA library, imported on first use (import lamp_kernels needs neither).
def _triton_kernels():
    try:
        from . import triton_kernels
    except ImportError as exc:
        raise RuntimeError(f"lamp_kernels: the CUDA kernels of the masks path are Triton kernels, and Triton "
                           f"cannot be imported ({exc}); install the triton that matches this torch") from exc
    return triton_kernels


def _cuda_bin_summaries(weights, masks):
    # 16-bit weights: 2^15 exact counters per layer, which the CUDA library privatises per block in shared
    # memory (Triton cannot); both are compiled kernels with identical results (tests/test_gpu.py).
    if weights[0].dtype in (torch.bfloat16, torch.float16):
        from . import cuda_library

        if cuda_library.unavailable_reason() is None:
            from . import cuda_backend

            return cuda_backend.bin_summaries16(weights, masks)
    return _triton_kernels().bin_summaries(weights, masks)


def _cuda_lamp_scores(weights, masks, float64):
    from . import cuda_backend

    return cuda_backend.lamp_scores(weights, masks, float64)


_lib.impl("bin_summaries", _cuda_bin_summaries, "CUDA")
_lib.impl("gather_bin_keys", lambda *a: _triton_kernels().gather_bin_keys(*a), "CUDA")
_lib.impl("apply_cuts", lambda *a: _triton_kernels().apply_cuts(*a), "CUDA")
_lib.impl("zero_cuts_", lambda *a: _triton_kernels().zero_cuts_(*a), "CUDA")
_lib.impl("lamp_scores", _cuda_lamp_scores, "CUDA")


def _cuda_rows():
    from . import cuda_rows

    return cuda_rows


_lib.impl("row_order_values", lambda *a: _cuda_rows().row_order_values(*a), "CUDA")
_lib.impl("row_lamp_scores", lambda *a: _cuda_rows().row_lamp_scores(*a), "CUDA")

bin_summaries = torch.ops.lamp_kernels.bin_summaries  # sparse per-layer bin counts + exact limb sums
gather_bin_keys = torch.ops.lamp_kernels.gather_bin_keys  # sorted keys of alive elements in given bins
apply_cuts = torch.ops.lamp_kernels.apply_cuts  # keep-masks from per-layer cuts
zero_cuts_ = torch.ops.lamp_kernels.zero_cuts_  # the same cuts applied in place: pruned weights := 0
lamp_scores = torch.ops.lamp_kernels.lamp_scores  # LAMP scores per layer (float32, or float64)
bin_summaries_scaled = torch.ops.lamp_kernels.bin_summaries_scaled  # the same three on ColumnScaled keys
gather_bin_keys_scaled = torch.ops.lamp_kernels.gather_bin_keys_scaled
apply_cuts_scaled = torch.ops.lamp_kernels.apply_cuts_scaled
cut_and_gather = torch.ops.lamp_kernels.cut_and_gather  # masks above candidate bins, and the candidates
fix_cuts_ = torch.ops.lamp_kernels.fix_cuts_  # then each candidate decided by its layer's cut
row_order_values = torch.ops.lamp_kernels.row_order_values  # per-unit sorted order values (int64)
row_lamp_scores = torch.ops.lamp_kernels.row_lamp_scores  # per-unit LAMP scores
row_cut_masks = torch.ops.lamp_kernels.row_cut_masks  # keep-masks from per-unit pruned counts
row_cut_masks_scaled = torch.ops.lamp_kernels.row_cut_masks_scaled  # the same on ColumnScaled keys
row_value_window = torch.ops.lamp_kernels.row_value_window  # per-unit counts around a window, and its values


def solver(codes: list[int], bins: list[Tensor], counts: list[Tensor], sums: list[Tensor], lamp: bool):
    """The exact cut solver (C++), which runs on the host over the small sparse per-layer summaries."""
    if _C is None:
        raise RuntimeError(f"lamp_kernels: the compiled solver is not available ({EXTENSION_ERROR}); {BUILD_HINT}")
    return _C.CutSolver(codes, bins, counts, sums, lamp)
