"""Public API: lamp_scores, prune_masks, layer_sparsities, and backend choice."""

from __future__ import annotations

from typing import Any

import torch

from . import ops, reference, selection
from .layers import Layers, check_sparsity

METHODS = reference.METHODS
BACKENDS = ("reference", "cpu", "cuda", "triton")


def available_backends() -> list[str]:
    """Backends that can run in this installation (on this machine's devices)."""
    from . import cuda_backend, triton_backend

    found = ["reference"]
    if ops._C is not None:
        found.append("cpu")
        if cuda_backend.unavailable_reason() is None:
            found.append("cuda")
        if triton_backend.unavailable_reason() is None:
            found.append("triton")
    return found


def _choose_backend(backend: str | None, layers: Layers, task: str = "masks") -> str:
    """'reference'; 'compiled': the summary pipeline whose per-layer ops run on each layer's device (C++
    kernels for CPU tensors) with the compiled exact solver; 'triton' (masks) or 'cuda' (scores) for CUDA
    tensors. task: "masks" or "scores"."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS} or None")
    if backend == "reference":
        return backend
    if ops._C is None:
        if backend is None:
            return "reference"
        raise RuntimeError(f"backend {backend!r} is not available: the C++ extension failed to load "
                           f"({ops.EXTENSION_ERROR}); {ops.BUILD_HINT}")
    if backend is None:
        if not any(w.device.type == "cuda" for w in layers.tensors):
            return "compiled"
        from . import cuda_backend, triton_backend

        if task == "masks" and triton_backend.unavailable_reason(layers) is None:
            return "triton"
        if task == "scores" and cuda_backend.unavailable_reason(layers) is None:
            return "cuda"
        return "compiled"
    if backend == "cpu":
        for w, name in zip(layers.tensors, layers.names):
            if w.device.type != "cpu":
                raise ValueError(f"backend 'cpu' needs CPU tensors; {name} is on {w.device}")
        return "compiled"
    from . import cuda_backend, triton_backend

    if backend == "triton" and task == "scores":
        raise ValueError("backend 'triton' computes masks without sorting; scores need the sort: "
                         "use backend='cuda' (or None) for lamp_scores")
    module = triton_backend if backend == "triton" else cuda_backend
    reason = module.unavailable_reason(layers)
    if reason is not None:
        raise RuntimeError(f"backend {backend!r} is not available: {reason}")
    return backend


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def lamp_scores(weights: Any, masks: Any = None, *, backend: str | None = None,
                dtype: torch.dtype = torch.float32) -> Any:
    """LAMP scores w_u^2 / sum_{v >= u} w_v^2 of every weight, in the container given (Tensor, list or dict).

    Sums are exact and rounded once to float64 (see reference.py); the score is returned as ``dtype``
    (float32 or float64). Masked-out (mask False) and zero weights score 0.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    layers = Layers.from_inputs(weights, masks)
    chosen = _choose_backend(backend, layers, "scores")
    layers.check_values()
    if chosen == "reference":
        return layers.pack(ops.reference_lamp_scores(layers.tensors, layers.masks, dtype == torch.float64))
    if chosen == "cuda":
        from . import cuda_backend

        return layers.pack(cuda_backend.lamp_scores(layers, dtype == torch.float64))
    out: list[torch.Tensor | None] = [None] * len(layers.tensors)
    for device in {w.device for w in layers.tensors}:  # one call per device, layers stay where they are
        idx = [i for i, w in enumerate(layers.tensors) if w.device == device]
        scores = ops.lamp_scores([layers.tensors[i] for i in idx], [layers.masks[i] for i in idx],
                                 dtype == torch.float64)
        for i, s in zip(idx, scores):
            out[i] = s
    return layers.pack(out)


def _distributed_layers(weights: Any, masks: Any, backend: str | None, group) -> Layers:
    """Validate local layers on every rank, agreeing on errors before any collective runs."""
    from .distributed import agree_on_errors

    def check() -> Layers:
        layers = Layers.from_inputs(weights, masks)
        if layers.kind != "dict":
            raise ValueError("with group=..., weights must be a dict: names identify layers across ranks")
        if _choose_backend(backend, layers) == "reference":
            raise ValueError("the reference backend does not run distributed; use backend=None or 'cpu'")
        return layers

    return agree_on_errors(check, group)


def prune_masks(weights: Any, sparsity: float, method: str = "lamp", *, masks: Any = None,
                backend: str | None = None, group: Any = None) -> Any:
    """Boolean masks (True = keep) in the container given.

    lamp / global: exactly round(sparsity * N) entries are False (N counts every weight), unless the given
    masks already prune more, in which case they come back unchanged. uniform / uniform_plus / erk prune a
    fixed count per layer. Already-masked weights stay masked.

    group: a torch.distributed process group (e.g. ``torch.distributed.group.WORLD``). Each rank passes a
    dict of its local layers; a name on several ranks is the row shards of one layer in rank order. Every
    rank gets the masks of its own layers from one selection over the whole model (see distributed.py).
    """
    s = check_sparsity(sparsity)
    _check_method(method)
    if group is not None:
        layers = _distributed_layers(weights, masks, backend, group)
        return layers.pack(_backend_masks(layers, s, method, _choose_backend(backend, layers), group))
    layers = Layers.from_inputs(weights, masks)
    chosen = _choose_backend(backend, layers)
    if chosen == "reference":
        layers.check_values()
        return layers.pack(reference.prune_masks(layers, s, method))
    return layers.pack(_backend_masks(layers, s, method, chosen))


def _backend_cuts(layers: Layers, sparsity: float, method: str, chosen: str, group=None) -> selection.Cuts:
    if chosen == "triton":
        from .triton_backend import TritonLayers

        return TritonLayers(layers).cuts(sparsity, method, group)
    if chosen == "cuda":
        from . import cuda_backend

        return cuda_backend.layer_cuts(layers, sparsity, method, group)
    return selection.layer_cuts(layers, sparsity, method, group)


def _backend_masks(layers: Layers, sparsity: float, method: str, chosen: str, group=None) -> list[torch.Tensor]:
    if chosen == "triton":
        from .triton_backend import TritonLayers

        tl = TritonLayers(layers)
        return tl.masks_from(tl.cuts(sparsity, method, group))
    if chosen == "cuda":
        from . import cuda_backend

        return cuda_backend.prune_masks(layers, sparsity, method, group)
    return selection.prune_masks(layers, sparsity, method, group)


def layer_sparsities(weights: Any, sparsity: float, method: str = "lamp", *, masks: Any = None,
                     backend: str | None = None, group: Any = None) -> Any:
    """Fraction of each layer's weights that the method prunes (the official code's "amounts"),
    without materialising masks. Same container as weights, floats. With ``group``, as in prune_masks; a row
    shard reports its whole layer's fraction."""
    s = check_sparsity(sparsity)
    _check_method(method)
    if group is not None:
        layers = _distributed_layers(weights, masks, backend, group)
        cuts = _backend_cuts(layers, s, method, _choose_backend(backend, layers), group)
        return layers.pack([p / n if n else 0.0 for p, n in zip(cuts.pruned, cuts.numels)])
    layers = Layers.from_inputs(weights, masks)
    chosen = _choose_backend(backend, layers)
    if chosen == "reference":
        layers.check_values()
        _, counts = reference.pruned_counts(layers, s, method)
    else:
        counts = _backend_cuts(layers, s, method, chosen).pruned
    return layers.pack([c / n if n else 0.0 for c, n in zip(counts, layers.numels())])
