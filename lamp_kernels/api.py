"""Public API: lamp_scores, prune_masks, layer_sparsities. Which code runs is decided in backends.py."""

from __future__ import annotations

from typing import Any

import torch

from . import backends, plan, reference
from .importance import checked, key_layers
from .layers import Layers, check_sparsity
from .options import OWL_LAMBDA, OWL_M, Options, check_options

METHODS = reference.METHODS
ALL_METHODS = reference.ALL_METHODS
BACKENDS = backends.NAMES


def available_backends() -> list[str]:
    """Backends that can run in this installation (on this machine's devices)."""
    return backends.available()


def _check_method(method: str) -> None:
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {ALL_METHODS}")


def lamp_scores(weights: Any, masks: Any = None, *, importance: Any = None, granularity: str = "layer",
                backend: str | None = None, dtype: torch.dtype = torch.float32) -> Any:
    """LAMP scores w_u^2 / sum_{v >= u} w_v^2 of every weight, in the container given (Tensor, list or dict).

    Sums are exact and rounded once to float64 (see reference.py); the score is returned as ``dtype``
    (float32 or float64). Masked-out (mask False) and zero weights score 0. ``importance``: non-negative
    tensors like the weights, scored in place of |w|. ``granularity="row"``: the suffix sums run within each
    output row instead of the whole layer.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    options = check_options("lamp", granularity)
    layers = Layers.from_inputs(weights, masks)
    keys = key_layers(layers, importance)
    return layers.pack(plan.scores(keys, options, backends.choose(backend, keys), dtype == torch.float64))


def _prepare(weights: Any, masks: Any, importance: Any, backend: str | None,
             group) -> tuple[Layers, Layers, backends.Backend]:
    """(layers, keys, backend); under a process group validated on every rank, agreeing on errors before any
    collective runs."""
    def check():
        layers = Layers.from_inputs(weights, masks)
        # Importance values are checked where the selection reads them anyway (plan.py), except under a
        # process group, where every rank must agree on errors before any collective runs.
        keys = key_layers(layers, importance, defer_values=group is None)
        try:
            chosen = backends.choose(backend, keys)
        except (ValueError, RuntimeError):
            chosen = None
        if chosen is None:  # outside the handler, so neither error carries the other as its context
            checked(keys)  # a bad importance value is reported before an unavailable backend, as without deferral
            chosen = backends.choose(backend, keys)  # raises again
        if group is not None:
            if layers.kind != "dict":
                raise ValueError("with group=..., weights must be a dict: names identify layers across ranks")
            if not isinstance(chosen, backends.SummaryBackend):
                raise ValueError(f"backend {chosen.name!r} does not run distributed; use backend=None, 'cpu' or "
                                 "'triton'")
        return layers, keys, chosen

    if group is None:
        return check()
    from .distributed import agree_on_errors

    return agree_on_errors(check, group)


def _options(method: str, granularity: str, min_density, max_density, nm, owl_m, owl_lambda, blocks,
             row_balance) -> Options:
    _check_method(method)
    return check_options(method, granularity, min_density, max_density, nm, owl_m, owl_lambda, blocks, row_balance)


def prune_masks(weights: Any, sparsity: float, method: str = "lamp", *, masks: Any = None, importance: Any = None,
                granularity: str = "layer", min_density: float | None = None, max_density: float | None = None,
                nm: tuple[int, int] | None = None, owl_m: float = OWL_M, owl_lambda: float = OWL_LAMBDA,
                blocks: Any = None, row_balance: float = 1.0, backend: str | None = None, group: Any = None) -> Any:
    """Boolean masks (True = keep) in the container given.

    lamp / global: exactly round(sparsity * N) entries are False (N counts every weight), unless the given
    masks already prune more, in which case they come back unchanged. uniform / uniform_plus / erk / owl prune
    a fixed count per layer (per row with granularity="row"). Already-masked weights stay masked.

    importance: non-negative tensors like the weights (same container, shapes, devices), ranked in place of
    |w|; the masks apply to the weights. granularity: "layer" or "row" (LAMP's suffix sums per output row,
    one global selection over all rows). min_density / max_density: per-layer bounds on the kept fraction
    (lamp and global). nm=(N, M): keep the N most important of every M consecutive weights of a row, then
    prune further if the sparsity asks for more. owl_m, owl_lambda, blocks: OWL's parameters (owl.py).
    row_balance in [0, 1]: with a budget method at granularity="row", 1 (the default) prunes the same fraction
    of every row (Wanda's rule); below 1 each layer's total is re-split so that rows whose importances run
    high keep more (0: one threshold per layer). See options.py for the exact definitions.

    group: a torch.distributed process group (e.g. ``torch.distributed.group.WORLD``). Each rank passes a
    dict of its local layers; a name on several ranks is the row shards of one layer in rank order. Every
    rank gets the masks of its own layers from one selection over the whole model (see distributed.py).
    """
    s = check_sparsity(sparsity)
    options = _options(method, granularity, min_density, max_density, nm, owl_m, owl_lambda, blocks, row_balance)
    layers, keys, chosen = _prepare(weights, masks, importance, backend, group)
    return layers.pack(plan.masks(keys, s, method, options, chosen, group))


def layer_sparsities(weights: Any, sparsity: float, method: str = "lamp", *, masks: Any = None,
                     importance: Any = None, granularity: str = "layer", min_density: float | None = None,
                     max_density: float | None = None, nm: tuple[int, int] | None = None, owl_m: float = OWL_M,
                     owl_lambda: float = OWL_LAMBDA, blocks: Any = None, row_balance: float = 1.0,
                     backend: str | None = None, group: Any = None) -> Any:
    """Fraction of each layer's weights that the method prunes (the official code's "amounts"),
    without materialising masks (except an N:M pattern's). Same container as weights, floats; the options
    as in prune_masks (row_balance moves weights between a layer's rows, not between layers, so it does not
    change these fractions). With ``group``, as in prune_masks; a row shard reports its whole layer's
    fraction."""
    s = check_sparsity(sparsity)
    options = _options(method, granularity, min_density, max_density, nm, owl_m, owl_lambda, blocks, row_balance)
    layers, keys, chosen = _prepare(weights, masks, importance, backend, group)
    pruned, numels = plan.pruned_counts(keys, s, method, options, chosen, group)
    return layers.pack([p / n if n else 0.0 for p, n in zip(pruned, numels)])
