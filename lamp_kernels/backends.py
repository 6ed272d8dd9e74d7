"""What each ``backend=`` value runs: the one place where a backend name becomes code.

    reference   reference.py: per-layer sorts, exact Python-integer sums (the spec)
    cpu         the summary pipeline (selection.py) through the ops; CPU tensors only
    None        the same pipeline through the ops, which dispatch on the device (C++ on CPU, Triton and the
                CUDA library on CUDA); the reference when the C++ extension is missing
    triton      the summary pipeline with the Triton kernels called directly (CUDA tensors, or CPU tensors
                under TRITON_INTERPRET=1); masks only
    cuda        the CUDA library's sort path (cuda_backend.py): scores, and masks by a radix select over the
                sorted layers on the device; CUDA tensors on one device

Per-unit selections (granularity="row", density bounds; plan.py) run the row ops (``unit_ops``): the C++
kernels on CPU, the CUDA library on CUDA, the reference's spec for backend="reference"; not the Triton kernels.

Every backend returns the same masks and counts, and the same scores to the bit.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

from . import ops, reference, selection
from .layers import Layers

NAMES = ("reference", "cpu", "cuda", "triton")


class Backend:
    name = ""
    can_zero = False  # prunes weights in place from cuts, without masks

    def scores(self, layers: Layers, float64: bool) -> list[torch.Tensor]:
        raise NotImplementedError

    def cuts(self, layers: Layers, sparsity: float, method: str, group=None) -> selection.Cuts:
        raise NotImplementedError

    def masks(self, layers: Layers, sparsity: float, method: str, group=None) -> list[torch.Tensor]:
        raise NotImplementedError

    def zero_(self, layers: Layers, sparsity: float, method: str) -> selection.Cuts:
        raise NotImplementedError

    def unit_ops(self) -> ModuleType:
        """The kernels of per-unit selections (granularity="row", density bounds): row_order_values,
        row_lamp_scores, row_cut_masks (plan.py)."""
        return ops


class ReferenceBackend(Backend):
    name = "reference"

    def scores(self, layers, float64):
        layers.check_values()
        return ops.reference_lamp_scores(layers.tensors, layers.masks, float64)

    def cuts(self, layers, sparsity, method, group=None):
        if group is not None:
            raise ValueError("the reference backend does not run distributed; use backend=None or 'cpu'")
        layers.check_values()
        _, counts = reference.pruned_counts(layers, sparsity, method)
        return selection.Cuts([], counts, layers.numels(), None)

    def masks(self, layers, sparsity, method, group=None):
        if group is not None:
            raise ValueError("the reference backend does not run distributed; use backend=None or 'cpu'")
        layers.check_values()
        return reference.prune_masks(layers, sparsity, method)


class SummaryBackend(Backend):
    """The summary pipeline of selection.py over a kernel set (the ops, or the Triton kernels)."""

    can_zero = True

    def __init__(self, name: str, kernels: ModuleType):
        self.name, self.kernels = name, kernels

    def scores(self, layers, float64):
        if self.kernels is not ops:
            raise ValueError("backend 'triton' computes masks without sorting; scores need the sort: "
                             "use backend='cuda' (or None) for lamp_scores")
        layers.check_values(skip_cuda=True)  # the CUDA library checks its layers inside its first pass
        out: list[torch.Tensor | None] = [None] * len(layers.tensors)
        for _, idx in selection.by_group(layers.tensors).items():
            try:
                scores = ops.lamp_scores([layers.detached()[i] for i in idx], [layers.masks[i] for i in idx],
                                         float64)
            except ValueError as exc:  # the CUDA kernel's value checks name the layer by its place in the call
                index = getattr(exc, "index", None)
                if index is None:
                    raise
                raise ValueError(f"{layers.names[idx[index]]} {exc}") from None
            for i, s in zip(idx, scores):
                out[i] = s
        return out

    def cuts(self, layers, sparsity, method, group=None):
        return selection.layer_cuts(layers, sparsity, method, group, self.kernels)

    def masks(self, layers, sparsity, method, group=None):
        return selection.layer_masks(layers, sparsity, method, group, self.kernels)

    def unit_ops(self):
        if self.kernels is not ops:
            raise ValueError("backend 'triton' selects whole layers from histograms; granularity='row' and density "
                             "bounds need per-row sorts: use backend=None or 'cuda' (or 'cpu' on CPU tensors)")
        return ops

    def zero_(self, layers, sparsity, method):
        cuts = self.cuts(layers, sparsity, method)
        with torch.no_grad():
            selection.zero_layer_cuts_(layers.tensors, layers.masks, cuts, self.kernels)
        return cuts


class SortBackend(Backend):
    name = "cuda"

    def scores(self, layers, float64):
        return SummaryBackend("cuda", ops).scores(layers, float64)  # the ops' CUDA kernel is this library

    def cuts(self, layers, sparsity, method, group=None):
        from . import cuda_backend

        return cuda_backend.layer_cuts(layers, sparsity, method, group)

    def masks(self, layers, sparsity, method, group=None):
        from . import cuda_backend

        return cuda_backend.prune_masks(layers, sparsity, method, group)


def _triton_unavailable(layers: Layers) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"Triton is not installed ({exc})"
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    for w, name in zip(layers.tensors, layers.names):
        if w.device.type == "cpu" and not interpret:
            return f"{name} is a CPU tensor; Triton runs CUDA tensors (or CPU ones under TRITON_INTERPRET=1)"
        if w.device.type not in ("cpu", "cuda"):
            return f"{name} is on {w.device}"
    return None


def choose(backend: str | None, layers: Layers) -> Backend:
    """The backend that runs these layers, or a ValueError/RuntimeError that says why none can."""
    if backend is not None and backend not in NAMES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {NAMES} or None")
    if backend == "reference":
        return ReferenceBackend()
    if ops._C is None:
        if backend is None:
            return ReferenceBackend()
        raise RuntimeError(f"backend {backend!r} is not available: the C++ extension failed to load "
                           f"({ops.EXTENSION_ERROR}); {ops.BUILD_HINT}")
    if backend is None:
        return SummaryBackend("compiled", ops)
    if backend == "cpu":
        for w, name in zip(layers.tensors, layers.names):
            if w.device.type != "cpu":
                raise ValueError(f"backend 'cpu' needs CPU tensors; {name} is on {w.device}")
        return SummaryBackend("cpu", ops)
    if backend == "triton":
        reason = _triton_unavailable(layers)
        if reason is not None:
            raise RuntimeError(f"backend 'triton' is not available: {reason}")
        from . import triton_kernels

        return SummaryBackend("triton", triton_kernels)
    from . import cuda_backend

    reason = cuda_backend.unavailable_reason(layers)
    if reason is not None:
        raise RuntimeError(f"backend 'cuda' is not available: {reason}")
    return SortBackend()


def available() -> list[str]:
    """Backends that can run in this installation (on this machine's devices)."""
    from . import cuda_backend

    found = ["reference"]
    if ops._C is None:
        return found
    found.append("cpu")
    if cuda_backend.unavailable_reason() is None:
        found.append("cuda")
    try:
        import triton  # noqa: F401

        if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1":
            found.append("triton")
    except ImportError:
        pass
    return found
