"""lamp-prune's layer-local selections: the budget methods' per-row rule (Wanda's), row balance, N:M and OWL.

Under these options a tensor's mask depends only on the tensor (its keys: |w| or its importance) and its own
sparsity, so lamp-prune needs no cut shared across tensors:

    sparsities   uniform, uniform_plus, erk: from the shapes alone (allocation.layer_ratios: each layer's
                 count over its size, which rounds back to the count at either granularity);
                 owl: from each block's outlier ratio, two more reads of every selected tensor (the exact sum
                 of its alive keys, then its count above M times its block's mean: owl.ratios_of_blocks)
    pass 1       each tensor read once: its values checked and what it will prune counted
    pass 2       each tensor's mask made from it alone as it is written

Both passes call plan.py with the one tensor and a Ratios budget, the code prune_masks runs on a model held
in memory, so the checkpoint's masks are prune_masks' masks for the same options (tested); pass 2 checks each
mask's count against pass 1's. Memory: one tensor at a time, as for the other methods, plus a few bool masks
of its size (N:M's pattern, the keep mask; ColumnScaled importances are made by the kernels as they read the
weight on the CPU; on CUDA the one tensor's float32 importance is made, and float64 keys with row_balance < 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import allocation, backends, owl, plan
from .importance import key_layers
from .layers import Layers
from .options import GLOBAL_METHODS, Options


def is_local(method: str, options: Options) -> bool:
    """True when the selection is layer-local: a budget method (owl included) at row granularity or with N:M,
    or OWL. The global selections (lamp, global) never are, whatever their options."""
    return method not in GLOBAL_METHODS and (method == "owl" or options.nm is not None or
                                             options.granularity == "row")


def _single(name: str, tensor: torch.Tensor, importance: Any) -> tuple[Layers, backends.Backend]:
    layers = Layers.from_inputs({name: tensor})
    keys = key_layers(layers, None if importance is None else {name: importance})
    return keys, backends.choose(None, keys)


def _budget_options(options: Options) -> Options:
    """The options of one tensor's selection: OWL's already turned into its sparsity."""
    return Options(options.granularity, nm=options.nm, row_balance=options.row_balance)


def pruned(name: str, tensor: torch.Tensor, importance: Any, ratio: float, options: Options) -> int:
    """How many weights of the tensor its selection prunes (its values checked)."""
    keys, chosen = _single(name, tensor, importance)
    counts, _ = plan.pruned_counts(keys, ratio, allocation.Ratios((ratio,)), _budget_options(options), chosen)
    return counts[0]


def keep_mask(name: str, tensor: torch.Tensor, importance: Any, ratio: float, options: Options) -> torch.Tensor:
    """The tensor's keep mask (True = keep), on its device."""
    keys, chosen = _single(name, tensor, importance)
    return plan.masks(keys, ratio, allocation.Ratios((ratio,)), _budget_options(options), chosen)[0]


def sparsities(names: Sequence[str], shapes: Sequence[tuple[int, ...]], sparsity: float, method: str,
               options: Options, read: Callable[[int, Callable], Any]) -> list[float]:
    """Each tensor's sparsity. read(i, fn) returns fn(tensor, importance) for tensor i, read from the
    checkpoint (importance None for magnitude); only OWL reads (its blocks from the names: owl.default_block)."""
    if method == "owl":
        def on_keys(i: int, fn):  # fn(keys) on tensor i's keys as OWL's statistics read them
            def run(t, imp):
                keys, chosen = _single(names[i], t, imp)
                return fn(plan.owl_keys(keys, options, chosen))
            return read(i, run)

        ids = [owl.default_block(n) for n in names]
        return list(owl.ratios_of_blocks(
            ids, [math.prod(s) for s in shapes], sparsity, options,
            lambda i: on_keys(i, lambda keys: owl.layer_sum(keys, 0)),
            lambda i, threshold: on_keys(i, lambda keys: owl.layer_count_above(keys, 0, threshold))).sparsities)
    # each layer's count over its size (uniform: the sparsity itself), which rounds back to the count
    return allocation.layer_ratios(method, shapes, sparsity)
