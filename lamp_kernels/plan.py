"""How a request with options (importance, rows, density bounds, N:M, OWL) becomes backend calls.

The keys (importance, or the weights) are what every step ranks; the masks it returns apply to the weights.

    1. nm=(N, M)        the N:M pattern joins the masks (nm.py), so everything after treats it as pruned
    2. method="owl"     becomes a per-layer budget (owl.py -> allocation.Ratios)
    3. then one of
       plain       granularity="layer" without bounds: the backend's own pipeline on the keys (summaries,
                   or the sort path for backend="cuda"); with bounds on CPU tensors, the summary pipeline
                   with the cut solver clamping each layer's count (selection.solve's densities)
       units       granularity="row", or density bounds elsewhere: for lamp / global, the exact selection over
                   the units' order values (one unit per row, or per layer when bounded): on CPU tensors
                   streamed_selection (ops.row_value_window, values recomputed pass by pass, never all kept),
                   elsewhere ops.row_order_values and sorted_selection;
                   budget methods at row granularity prune round(layer sparsity * row length) per row
                   (with row_balance < 1 the layer's total re-split over its rows: _balanced_masks);
                   masks from per-unit counts (ops.row_cut_masks)

Global magnitude is the same selection at either granularity (its order (key, layer, row, column) is the
layer's (key, layer, flat index)), so it takes the plain path unless bounded. The reference backend runs
reference.py's spec of all of this instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import allocation, backends, importance, nm, ops, owl, reference, selection, sorted_selection, streamed_selection
from .layers import Layers, pruned_count
from .options import GLOBAL_METHODS, Options, rows_of
from .rows import masked_per_row


@dataclass
class Units:
    """A selection made unit by unit: rows[i] units in layer i, counts[i] = pruned per unit (int64 [rows])."""

    rows: list[int]
    counts: list[torch.Tensor]

    def pruned(self) -> list[int]:
        return [int(c.sum()) for c in self.counts]


def _prepare(keys: Layers, sparsity: float, method, options: Options):
    keys = _with_nm(keys, method, options)
    if method == "owl":
        method = owl.budget(keys, sparsity, options)
    return keys, method


def _with_nm(keys: Layers, method, options: Options) -> Layers:
    # OWL's statistics sum the keys, and N:M ranks column-scaled ones before any selection pass reads them:
    # NaN/Inf ones raise here, not again in the selection
    if method == "owl" or (options.nm is not None and keys.scaled()):
        keys = keys.values_checked()
    if options.nm is not None:
        keys = keys.with_masks(_nm_masks(keys, *options.nm))
    return keys


def owl_keys(keys: Layers, options: Options, chosen: backends.Backend) -> Layers:
    """The keys OWL's statistics read (owl.layer_sum, owl.layer_count_above), as masks() prepares them for
    method="owl": values checked, column-scaled ones made where that path makes them, N:M's pattern applied."""
    return _with_nm(_keys_for(keys, "owl", options, chosen), "owl", options)


def _nm_masks(keys: Layers, n: int, m: int) -> list[torch.Tensor]:
    """nm.nm_masks of the keys. Rows that do not split into groups of m raise after the values are checked, so
    that a bad value is reported first, as in the reference (the check runs on that error path only)."""
    try:
        return nm.nm_masks(keys.tensors, keys.masks, keys.names, n, m, scales=keys.scales)
    except ValueError as exc:
        shape_error = exc
    keys.check_values()  # outside the handler, so its error does not carry the shape error as its context
    raise shape_error


def _bounds_on_summaries(keys: Layers, method, options: Options, chosen: backends.Backend) -> bool:
    """Density bounds at layer granularity on CPU tensors: the summary pipeline's cut solver clamps each
    layer's count, so no layer is sorted."""
    return (options.bounded and options.granularity == "layer" and method in GLOBAL_METHODS
            and isinstance(chosen, backends.SummaryBackend) and chosen.kernels is ops
            and all(t.device.type == "cpu" for t in keys.tensors))


def _uses_units(method, options: Options, on_summaries: bool = False) -> bool:
    if options.bounded:
        return not on_summaries
    return options.granularity == "row" and method != "global"


def _unit_rows(keys: Layers, options: Options) -> list[int]:
    return [rows_of(tuple(w.shape)) if options.granularity == "row" else 1 for w in keys.tensors]


def _per_group(keys: Layers, fn, *extra) -> list:
    """fn(tensors, masks, *extra lists) per (device, dtype, column-scaled) group of layers, results back in layer
    order."""
    out: list = [None] * len(keys.tensors)
    for _, idx in selection.by_group(keys.tensors, None, keys.scales).items():
        got = fn([keys.tensors[i] for i in idx], [keys.masks[i] for i in idx], *[[e[i] for i in idx] for e in extra])
        for i, g in zip(idx, got):
            out[i] = g
    return out


def _cut(ops_set, ws, ms, rows, counts, scales) -> list[torch.Tensor]:
    """Keep masks of layers of one group (scales all None, or all set) from per-unit counts."""
    if scales[0] is None:
        return ops_set.row_cut_masks(ws, ms, rows, counts)
    return ops.row_cut_masks_scaled(ws, ms, scales, rows, counts)


def _row_cut_masks(keys: Layers, ops_set, units: Units) -> list[torch.Tensor]:
    """Keep masks from per-unit counts; column-scaled layers by ops.row_cut_masks_scaled."""
    return _per_group(keys, lambda *args: _cut(ops_set, *args), units.rows, units.counts,
                      keys.scales or [None] * len(keys.tensors))


def _balanced_masks(keys: Layers, units: Units, beta: float, ops_set) -> list[torch.Tensor]:
    """reference.balanced_masks, one layer at a time: each prunes its row-rule total (units.counts) in the
    order (masked, balanced key fl(key * t_r^-beta), flat index)."""
    out = []
    for i, (w, mask, r, c) in enumerate(zip(keys.tensors, keys.masks, units.rows, units.counts)):
        scale = keys.scales[i] if keys.scales else None
        if w.numel() == 0:
            out.append(torch.ones(w.shape, dtype=torch.bool, device=w.device))
        elif _balanced_in_cpp(ops_set, w):
            # C++ (balanced_rows.cpp): the row cuts by selection, then a radix select over the balanced keys,
            # recomputed in each pass; nothing of the layer's size is made but the mask
            cut, positive = ops._C.row_cuts(w.detach(), mask, scale, r, c)
            factor = _balance_factors(cut, positive.min(), beta)
            out.append(ops._C.balanced_cut_mask(w.detach(), mask, scale, r, factor, int(c.sum())))
        else:
            out.append(_balanced_mask_by_torch(w, mask, scale, r, c, beta, ops_set))
    return out


def _balanced_in_cpp(ops_set, w: torch.Tensor) -> bool:
    return ops_set is ops and ops._C is not None and w.device.type == "cpu"


def _balance_factors(cut: torch.Tensor, positive: torch.Tensor, beta: float) -> torch.Tensor:
    """reference.balance_factor of each row's cut, raised to the layer's smallest positive alive key; 1 for a
    row without alive weights (cut +inf) or a layer whose alive keys are all 0."""
    if torch.isfinite(positive):
        cut = torch.maximum(cut, positive.to(cut.dtype))
    return torch.tensor([reference.balance_factor(t, beta) if 0 < t < math.inf else 1.0 for t in cut.tolist()],
                        dtype=torch.float64, device=cut.device)


def _balanced_mask_by_torch(w, mask, scale, r: int, c: torch.Tensor, beta: float, ops_set) -> torch.Tensor:
    """One layer in torch ops on its device (CUDA tensors, or without the C++ extension): the row rule's masks
    give each row's cut, then the float64 balanced keys (8 bytes per weight) go to the row-cut op as one unit."""
    keep = _cut(ops_set, [w], [mask], [r], [c], [scale])[0]
    key = (w.detach().abs() if scale is None else importance.scaled_importance(w, scale)).reshape(r, -1)
    alive = None if mask is None else mask.reshape(r, -1)
    pruned = ~keep.reshape(r, -1) if alive is None else alive & ~keep.reshape(r, -1)
    del keep
    inf = torch.tensor(float("inf"), dtype=key.dtype, device=key.device)
    # t_r: the largest alive key the row rule prunes in row r (it prunes a prefix of the row's order), else the
    # row's smallest alive key
    first = key if alive is None else torch.where(alive, key, inf)
    cut = torch.where(pruned.any(1), torch.where(pruned, key, -inf).amax(1), first.amin(1)).double()
    positive = torch.where(first > 0, first, inf).min().double()
    del pruned, first
    balanced = key.double().mul_(_balance_factors(cut, positive, beta)[:, None]).reshape(w.shape)
    del key
    return ops_set.row_cut_masks([balanced], [mask], [1], [c.sum().reshape(1)])[0]


def _check_rows(keys: Layers, method, options: Options) -> None:
    """LAMP per row squares each row's values: float64 rows within range (Layers.check_fp64_rows)."""
    if options.granularity == "row" and method == "lamp":
        keys.check_fp64_rows(_unit_rows(keys, options))


def _unit_counts(keys: Layers, sparsity: float, method, options: Options, ops_set) -> Units:
    keys.check_values()
    _check_rows(keys, method, options)
    rows = _unit_rows(keys, options)
    shapes = [tuple(w.shape) for w in keys.tensors]
    if method not in GLOBAL_METHODS:  # a budget at row granularity: Wanda's per-row rule with layer sparsities
        ratios = allocation.layer_ratios(method, shapes, sparsity)
        counts = []
        for w, m, r, ratio in zip(keys.tensors, keys.masks, rows, ratios):
            cols = w.numel() // r if r else 0
            counts.append(torch.clamp(masked_per_row(m, r, w.numel(), w.device), min=pruned_count(ratio, cols)))
        return Units(rows, counts)
    sizes = keys.numels()
    k = pruned_count(sparsity, sum(sizes))
    least, most = allocation.prune_bounds(sizes, options.min_density, options.max_density)
    allocation.check_bounds(keys.names, sizes, keys.masked_counts(), k, least, most)
    nonempty = [i for i, n in enumerate(sizes) if n]
    if not nonempty:
        chosen = []
    elif streamed_selection.runs_on(keys.tensors, ops_set):  # the order values recomputed, never all kept
        chosen = streamed_selection.select_counts(
            [keys.tensors[i] for i in nonempty], [keys.masks[i] for i in nonempty], [rows[i] for i in nonempty],
            method == "lamp", k, [least[i] for i in nonempty], [most[i] for i in nonempty])
    else:
        values = _per_group(keys, lambda ws, ms, rs: ops_set.row_order_values(ws, ms, rs, method == "lamp"), rows)
        chosen = sorted_selection.select_counts([values[i].reshape(rows[i], -1) for i in nonempty], k,
                                                [least[i] for i in nonempty], [most[i] for i in nonempty])
        del values
    counts = [torch.zeros(r, dtype=torch.int64, device=w.device) for r, w in zip(rows, keys.tensors)]
    for i, c in zip(nonempty, chosen):
        counts[i] = c
    return Units(rows, counts)


def _check_group(method, options: Options, group, on_summaries: bool = False) -> None:
    if group is not None and (_uses_units(method, options, on_summaries) or method == "owl"):
        raise ValueError("granularity='row', method='owl' and density bounds on non-CPU tensors do not run "
                         "distributed (group=)")


def _prepared(keys: Layers, sparsity: float, method, options: Options, group, on_summaries: bool = False):
    _check_group(method, options, group, on_summaries)
    if group is None:
        return _prepare(keys, sparsity, method, options)
    from .distributed import agree_on_errors  # a bad value or N:M shape on one rank raises on every rank

    return agree_on_errors(lambda: _prepare(keys, sparsity, method, options), group)


def _keys_for(keys: Layers, method, options: Options, chosen: backends.Backend) -> Layers:
    """ColumnScaled importances stay unmade on the plain path of the summary pipeline (the ops compute them as
    they read the weights), and importance values not yet checked are checked in its summary pass. On CPU
    tensors they also stay unmade with N:M (before the plain path), for OWL and for the budget methods' per-row
    rule (Wanda's): the value check, N:M, OWL's statistics and the row cuts make a block's or row's importances
    at a time as they read the weight. Every other path checks the values here and ranks tensors, so the
    ColumnScaled ones are made here, one per layer."""
    compiled = isinstance(chosen, backends.SummaryBackend) and chosen.kernels is ops
    units = _uses_units(method, options, _bounds_on_summaries(keys, method, options, chosen))
    on_cpu = ops._C is not None and all(w.device.type == "cpu" for w in keys.tensors)
    if compiled and method != "owl" and not units and options.nm is None:
        return keys
    # N:M reads the keys before the summary pass: importance tensors checked first (column-scaled: _prepare)
    if compiled and on_cpu and (method != "owl" and not units or _scaled_rows(method, options)):
        return importance.checked(keys)
    return importance.checked(keys).materialized()


def _scaled_rows(method, options: Options) -> bool:
    """OWL, or a budget method at row granularity: on CPU tensors, the selections whose column-scaled keys the
    C++ kernels make as they read (owl.budget's statistics, Layers.check_values, ops.row_cut_masks_scaled)."""
    return (method == "owl" or method not in GLOBAL_METHODS) and not options.bounded


def masks(keys: Layers, sparsity: float, method: str, options: Options, chosen: backends.Backend,
          group=None) -> list[torch.Tensor]:
    keys = _keys_for(keys, method, options, chosen)
    if isinstance(chosen, backends.ReferenceBackend):
        _check_group(method, options, group)
        keys.check_values()
        _check_rows(keys, method, options)
        return reference.prune_masks_with(keys, sparsity, method, options)
    on_summaries = _bounds_on_summaries(keys, method, options, chosen)
    given = [m for m in keys.masks if m is not None]
    keys, method = _prepared(keys, sparsity, method, options, group, on_summaries)
    if on_summaries:
        return selection.layer_masks(keys, sparsity, method, group, densities=(options.min_density,
                                                                               options.max_density))
    if _uses_units(method, options):
        units = _unit_counts(keys, sparsity, method, options, chosen.unit_ops())
        if options.row_balance < 1:
            return _balanced_masks(keys, units, options.row_balance, chosen.unit_ops())
        return _row_cut_masks(keys, chosen.unit_ops(), units)
    met = _budget_already_met(keys, sparsity, method, group, given)
    return met if met is not None else chosen.masks(keys, sparsity, method, group)


def _budget_already_met(keys: Layers, sparsity: float, method, group, given: list[torch.Tensor]):
    """A budget method each of whose layers has at least its count masked out already (2:4 at 50%, say):
    the keep masks are the alive masks (those the call made itself, such as N:M's, returned as they are; the
    caller's copied), and no selection runs; the values are checked as the selection would. None otherwise."""
    # Not for column-scaled keys whose products are unchecked (the selection checks them; N:M's were checked
    # in _prepare) nor float64 ones (the selection's range check has its own message): the selection runs, so
    # errors stay the same.
    unchecked_products = keys.scaled() and any(s is not None and i not in keys.values_ok
                                               for i, s in enumerate(keys.scales))
    if method in GLOBAL_METHODS or group is not None or unchecked_products or any(
            w.dtype == torch.float64 for w in keys.tensors):
        return None
    try:
        targets = allocation.layer_counts(method, [tuple(w.shape) for w in keys.tensors], sparsity)
    except ValueError:  # an infeasible budget: the selection reports it, after the values
        return None
    if any(t > m for t, m in zip(targets, keys.masked_counts())):
        return None
    keys = importance.checked(keys)
    keys.check_values()
    callers = {id(m) for m in given}
    return [torch.ones(w.shape, dtype=torch.bool, device=w.device) if m is None else
            m.clone(memory_format=torch.contiguous_format) if id(m) in callers else m
            for w, m in zip(keys.tensors, keys.masks)]


def pruned_counts(keys: Layers, sparsity: float, method: str, options: Options, chosen: backends.Backend,
                  group=None) -> tuple[list[int], list[int]]:
    """(pruned per layer, size of the layer each count refers to: the whole layer for a row shard)."""
    keys = _keys_for(keys, method, options, chosen)
    if isinstance(chosen, backends.ReferenceBackend):
        _check_group(method, options, group)
        keys.check_values()
        _check_rows(keys, method, options)
        _, counts = reference.select_with(keys, sparsity, method, options)
        return [sum(c) for c in counts], keys.numels()
    on_summaries = _bounds_on_summaries(keys, method, options, chosen)
    keys, method = _prepared(keys, sparsity, method, options, group, on_summaries)
    if on_summaries:
        cuts = selection.layer_cuts(keys, sparsity, method, group, densities=(options.min_density,
                                                                              options.max_density))
        return cuts.pruned, cuts.numels
    if _uses_units(method, options):
        return _unit_counts(keys, sparsity, method, options, chosen.unit_ops()).pruned(), keys.numels()
    cuts = chosen.cuts(keys, sparsity, method, group)
    return cuts.pruned, cuts.numels


def scores(keys: Layers, options: Options, chosen: backends.Backend, float64: bool) -> list[torch.Tensor]:
    keys = importance.checked(keys).materialized()
    if options.granularity == "layer":
        return chosen.scores(keys, float64)
    keys.check_values()
    _check_rows(keys, "lamp", options)
    rows = _unit_rows(keys, options)
    if isinstance(chosen, backends.ReferenceBackend):
        dtype = torch.float64 if float64 else torch.float32
        return [reference.row_lamp_scores(k, m).to(dtype) for k, m in zip(keys.tensors, keys.masks)]
    return _per_group(keys, lambda ws, ms, rs: chosen.unit_ops().row_lamp_scores(ws, ms, rs, float64), rows)

