"""Public API: lamp_scores, prune_masks, layer_sparsities. Which code runs is decided in backends.py."""

from __future__ import annotations

from typing import Any

import torch

from . import backends, reference
from .layers import Layers, check_sparsity

METHODS = reference.METHODS
BACKENDS = backends.NAMES


def available_backends() -> list[str]:
    """Backends that can run in this installation (on this machine's devices)."""
    return backends.available()


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
    return layers.pack(backends.choose(backend, layers).scores(layers, dtype == torch.float64))


def _distributed_layers(weights: Any, masks: Any, backend: str | None, group) -> tuple[Layers, backends.Backend]:
    """Validate local layers on every rank, agreeing on errors before any collective runs."""
    from .distributed import agree_on_errors

    def check():
        layers = Layers.from_inputs(weights, masks)
        if layers.kind != "dict":
            raise ValueError("with group=..., weights must be a dict: names identify layers across ranks")
        chosen = backends.choose(backend, layers)
        if not isinstance(chosen, backends.SummaryBackend):
            raise ValueError(f"backend {chosen.name!r} does not run distributed; use backend=None, 'cpu' or "
                             "'triton'")
        return layers, chosen

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
        layers, chosen = _distributed_layers(weights, masks, backend, group)
    else:
        layers = Layers.from_inputs(weights, masks)
        chosen = backends.choose(backend, layers)
    return layers.pack(chosen.masks(layers, s, method, group))


def layer_sparsities(weights: Any, sparsity: float, method: str = "lamp", *, masks: Any = None,
                     backend: str | None = None, group: Any = None) -> Any:
    """Fraction of each layer's weights that the method prunes (the official code's "amounts"),
    without materialising masks. Same container as weights, floats. With ``group``, as in prune_masks; a row
    shard reports its whole layer's fraction."""
    s = check_sparsity(sparsity)
    _check_method(method)
    if group is not None:
        layers, chosen = _distributed_layers(weights, masks, backend, group)
    else:
        layers = Layers.from_inputs(weights, masks)
        chosen = backends.choose(backend, layers)
    cuts = chosen.cuts(layers, s, method, group)
    return layers.pack([p / n if n else 0.0 for p, n in zip(cuts.pruned, cuts.numels)])
