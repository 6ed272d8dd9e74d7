"""The reference: the contract of DESIGN-NOTES §1 written out plainly. Every backend is tested against it.

Definitions (one layer, n elements, optional mask with True = alive):

* order      -- masked-out elements first, then ascending by (|w|, flat index). A masked-out weight counts
                as a zero weight, and it is always pruned before anything else, so it stays masked out.
* S(u)       -- sum of w_v^2 over the alive v at or after position u, computed *exactly* (Python integers)
                and rounded once to the nearest float64. Exact sums do not depend on summation order, so
                a sort, a histogram or a parallel scan all agree to the bit.
* score(u)   -- fl(fl(w_u^2) / S(u)) in float64; 0 for a zero or masked-out weight. (w_u^2 is exact in
                float64 for bf16/fp16/fp32 weights.) Scores never decrease along the order.
* selection  -- LAMP prunes the k = round(sparsity * N) smallest in the order (masked, score, layer,
                position); global magnitude uses |w| in place of the score; uniform / uniform+ / ERK prune a
                fixed count per layer (allocation.py). Already-masked weights are pruned first and never
                revived, so when they number more than k the masks come back unchanged.

Extensions (options.py), each written out below as plainly:

* importance -- selection runs on given non-negative importance tensors ("keys") exactly as on |w|: the
                order is (importance, flat index) and the LAMP score is I_u^2 / sum_{v >= u} I_v^2. The keys
                only choose; the masks apply to the weights. Without importance the keys are |w|.
* granularity "row" -- each output row (options.rows_of) is a *unit* with its own order (masked first, then
                (key, column)) and its own suffix sums; LAMP prunes the k smallest in the order (masked,
                score, layer, row, position in the row's order). With "layer" the layer is the one unit.
* density bounds -- layer i prunes between least_i and most_i weights (allocation.prune_bounds): its
                least_i first weights in its own order (score, unit, position) are pruned whatever their
                score, weights past its most_i-th are never candidates, and the k smallest candidates in the
                global order are pruned.
* nm=(N, M) -- before anything else, the M - N smallest of every M consecutive weights of a row in the order
                (masked first, key, position) are masked out.
* owl -- per-block sparsities from the share of keys above M times the block's mean (owl.py), then pruned
                like uniform with those sparsities (per layer, or per row).
* row_balance beta < 1 -- (budget methods per row) each layer prunes the row rule's total, re-split over its
                rows by the balanced keys fl(key * t_r^-beta): balanced_masks below.

This module favours clarity over speed: per-element Python loops, small inputs only (tests).
"""

from __future__ import annotations

import math

import torch

from . import allocation
from .layers import Layers, pruned_count
from .options import GLOBAL_METHODS, Options, rows_of

METHODS = ("lamp", "global", "uniform", "uniform_plus", "erk")  # the paper's method and its baselines
ALL_METHODS = METHODS + ("owl",)  # plus OWL, whose budget needs the keys (owl.py)


def layer_order(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Flat indices of one layer in pruning order: masked-out first, then by (|w|, flat index)."""
    key = w.detach().reshape(-1).abs().double().cpu()
    if mask is not None:
        key = torch.where(mask.reshape(-1).cpu(), key, torch.tensor(-1.0, dtype=torch.float64))
    return torch.sort(key, stable=True).indices


def exact_suffix_sums(values: list[float]) -> list[float]:
    """S(u) = sum(values[u:] ** 2), exact, each rounded once to the nearest float64.

    Each value is a dyadic rational a / 2^e; with one common denominator D the squares are integers, the
    suffix sums are exact Python integers, and int / int true division rounds correctly."""
    ratios = [v.as_integer_ratio() for v in values]
    denom = max((d * d for _, d in ratios), default=1)
    squares = [a * a * (denom // (d * d)) for a, d in ratios]
    sums, acc = [0.0] * len(values), 0
    for u in range(len(values) - 1, -1, -1):
        acc += squares[u]
        sums[u] = acc / denom
    return sums


def layer_scores_in_order(w: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, list[float]]:
    """(order, scores along it) for one layer; masked-out positions score 0."""
    order = layer_order(w, mask)
    flat = w.detach().reshape(-1).double().cpu()
    alive = [True] * flat.numel() if mask is None else mask.reshape(-1).cpu()[order].tolist()
    values = [abs(v) if a else 0.0 for v, a in zip(flat[order].tolist(), alive)]
    sums = exact_suffix_sums(values)
    scores = [v * v / s if v != 0.0 else 0.0 for v, s in zip(values, sums)]
    return order, scores


def lamp_scores(w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """LAMP scores of one layer, float64, same shape and device as w."""
    order, scores = layer_scores_in_order(w, mask)
    out = torch.zeros(w.numel(), dtype=torch.float64)
    out[order] = torch.tensor(scores, dtype=torch.float64)
    return out.reshape(w.shape).to(w.device)


def _masks_from_counts(layers: Layers, orders: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
    """Prune the first counts[i] elements of each layer's order."""
    out = []
    for w, order, c in zip(layers.tensors, orders, counts):
        keep = torch.ones(w.numel(), dtype=torch.bool)
        keep[order[:c]] = False
        out.append(keep.reshape(w.shape).to(w.device))
    return out


def pruned_counts(layers: Layers, sparsity: float, method: str) -> tuple[list[torch.Tensor], list[int]]:
    """(orders, number of weights pruned in each layer, masked ones included)."""
    masked = layers.masked_counts()
    if method in ("lamp", "global"):
        k = pruned_count(sparsity, sum(layers.numels()))
        orders, entries = [], []
        for i, (w, m) in enumerate(zip(layers.tensors, layers.masks)):
            if method == "lamp":
                order, scores = layer_scores_in_order(w, m)
            else:
                order = layer_order(w, m)
                scores = w.detach().reshape(-1).abs().double().cpu()[order].tolist()
            orders.append(order)
            entries += [(s, i, pos) for pos, s in enumerate(scores) if pos >= masked[i]]
        counts = list(masked)
        for _, i, _ in sorted(entries)[: max(0, k - sum(masked))]:
            counts[i] += 1
        return orders, counts
    targets = allocation.layer_counts(method, [tuple(w.shape) for w in layers.tensors], sparsity)
    orders = [layer_order(w, m) for w, m in zip(layers.tensors, layers.masks)]
    return orders, [max(t, m) for t, m in zip(targets, masked)]


def prune_masks(layers: Layers, sparsity: float, method: str) -> list[torch.Tensor]:
    orders, counts = pruned_counts(layers, sparsity, method)
    return _masks_from_counts(layers, orders, counts)


# ---- extensions: importance keys, rows, density bounds, N:M, OWL ------------------------------------------------


def units(shape: tuple[int, ...], granularity: str) -> list[range]:
    """Flat index ranges of the units of a layer: the whole layer, or each output row."""
    n = math.prod(shape)
    rows = rows_of(shape) if granularity == "row" else 1
    cols = n // rows if rows else 0
    return [range(r * cols, (r + 1) * cols) for r in range(rows)]


def nm_masks(keys: list[torch.Tensor], masks: list[torch.Tensor | None], names: list[str], n: int,
             m: int) -> list[torch.Tensor]:
    """The given masks with, in every group of m consecutive weights of a row, the m - n first in the order
    (masked first, key, position in the group) masked out too."""
    out = []
    for key, mask, name in zip(keys, masks, names):
        flat = key.reshape(-1).double().abs().cpu().tolist()
        alive = [True] * len(flat) if mask is None else mask.reshape(-1).cpu().tolist()
        keep = list(alive)
        for unit in units(tuple(key.shape), "row"):
            if len(unit) % m:
                raise ValueError(f"{name}: rows of {len(unit)} weights do not split into groups of {m}")
            for g in range(unit.start, unit.stop, m):
                order = sorted(range(g, g + m), key=lambda i: (alive[i], flat[i], i))
                for i in order[: m - n]:
                    keep[i] = False
        out.append(torch.tensor(keep, dtype=torch.bool).reshape(key.shape).to(key.device))
    return out


def _unit_scores(key: torch.Tensor, mask: torch.Tensor | None, unit: range, lamp: bool) -> tuple[list[int], list]:
    """(flat indices of the unit in its order, score of each along it; masked ones score None)."""
    flat = key.reshape(-1).cpu()
    idx = torch.tensor(list(unit), dtype=torch.long)
    sub_mask = None if mask is None else mask.reshape(-1).cpu()[idx]
    if lamp:
        order, scores = layer_scores_in_order(flat[idx], sub_mask)
    else:
        order = layer_order(flat[idx], sub_mask)
        scores = flat[idx].double().abs()[order].tolist()
    alive = [True] * len(unit) if sub_mask is None else sub_mask[order].tolist()
    return idx[order].tolist(), [s if a else None for s, a in zip(scores, alive)]


def _budget_unit_counts(layers: Layers, units_of: list[list[range]], sparsity: float, method, options: Options,
                        masked: list[list[int]]) -> list[list[int]]:
    shapes = [tuple(w.shape) for w in layers.tensors]
    if options.granularity == "layer":
        targets = allocation.layer_counts(method, shapes, sparsity)
        return [[max(t, m[0])] for t, m in zip(targets, masked)]
    ratios = allocation.layer_ratios(method, shapes, sparsity)
    return [[max(pruned_count(r, len(u)), mu) for u, mu in zip(us, ms)]
            for r, us, ms in zip(ratios, units_of, masked)]


def select(layers: Layers, sparsity: float, method, options: Options) -> tuple[list[list[list[int]]], list[list[int]]]:
    """(per layer, per unit: flat indices in the unit's order; per layer, per unit: how many of them are
    pruned) for the layers' current masks. ``layers.tensors`` are the keys; ``method`` may be an
    allocation.Ratios budget (OWL)."""
    lamp = method == "lamp"
    units_of = [units(tuple(w.shape), options.granularity) for w in layers.tensors]
    orders, scores = [], []
    for w, m, us in zip(layers.tensors, layers.masks, units_of):
        per = [_unit_scores(w, m, u, lamp) for u in us]
        orders.append([p[0] for p in per])
        scores.append([p[1] for p in per])
    masked = [[sum(s is None for s in u) for u in layer] for layer in scores]
    if method not in GLOBAL_METHODS:
        return orders, _budget_unit_counts(layers, units_of, sparsity, method, options, masked)
    sizes = layers.numels()
    k = pruned_count(sparsity, sum(sizes))
    least, most = allocation.prune_bounds(sizes, options.min_density, options.max_density)
    layer_masked = [sum(m) for m in masked]
    allocation.check_bounds(layers.names, sizes, layer_masked, k, least, most)
    counts = [list(m) for m in masked]
    candidates, forced = [], 0
    for i, layer in enumerate(scores):
        own = sorted((s, u, pos) for u, unit in enumerate(layer) for pos, s in enumerate(unit) if s is not None)
        first = max(0, least[i] - layer_masked[i])  # pruned whatever their score
        for _, u, _ in own[:first]:
            counts[i][u] += 1
        forced += first
        candidates += [(s, i, u, pos) for s, u, pos in own[first: most[i] - layer_masked[i]]]
    need = k - sum(layer_masked) - forced
    for _, i, u, _ in sorted(candidates)[: max(0, need)]:
        counts[i][u] += 1
    return orders, counts


CUT_FLOOR = 2.0 ** -496  # the smallest cut row_balance scales by: factors <= 2^496, balanced keys < 2^992


def balance_factor(cut: float, beta: float) -> float:
    """max(t, 2^-496)^-beta in float64 (math.pow), the one definition the fast path uses too. The floor keeps
    the factor finite for subnormal float64 cuts (math.pow raises on overflow)."""
    return math.pow(max(cut, CUT_FLOOR), -beta)


def balanced_masks(layers: Layers, orders: list[list[list[int]]], counts: list[list[int]],
                   beta: float) -> list[torch.Tensor]:
    """The masks under row_balance = beta < 1, from the row rule's (orders, counts) of each layer:

    * t_r, row r's cut: the key of the last alive weight the row rule prunes in r (of the first alive one if
      it prunes none), raised to the layer's smallest positive alive key p when below it (so a zero cut
      scales by p^-beta, not infinity), and to 2^-496 (balance_factor);
    * the balanced key of alive weight u in row r: fl(key_u * balance_factor(t_r, beta)), in float64 (a
      cut of 0 remains only when every alive key of the layer is 0: factor 1);
    * the layer prunes the row rule's total: its masked weights, then alive ones in the order (balanced key,
      flat index).
    """
    out = []
    for key, mask, layer_orders, layer_counts in zip(layers.tensors, layers.masks, orders, counts):
        flat = key.reshape(-1).cpu().double().abs().tolist()
        alive = [True] * len(flat) if mask is None else mask.reshape(-1).cpu().tolist()
        positive = [flat[u] for u in range(len(flat)) if alive[u] and flat[u] > 0]
        smallest = min(positive) if positive else None
        items = []
        for order, c in zip(layer_orders, layer_counts):
            m = sum(not alive[u] for u in order)
            if m == len(order):
                continue
            cut = flat[order[max(c, m + 1) - 1]]
            if smallest is not None:
                cut = max(cut, smallest)
            factor = balance_factor(cut, beta) if cut > 0 else 1.0  # cut 0: every alive key is 0
            items += [(flat[u] * factor, u) for u in order[m:]]
        keep = torch.tensor(alive, dtype=torch.bool)
        for _, u in sorted(items)[: sum(layer_counts) - (len(alive) - sum(alive))]:
            keep[u] = False
        out.append(keep.reshape(key.shape).to(key.device))
    return out


def unit_masks(layers: Layers, orders: list[list[list[int]]], counts: list[list[int]]) -> list[torch.Tensor]:
    """Prune the first counts[i][u] weights of each unit's order."""
    out = []
    for w, layer_orders, layer_counts in zip(layers.tensors, orders, counts):
        keep = torch.ones(w.numel(), dtype=torch.bool)
        for order, c in zip(layer_orders, layer_counts):
            keep[order[:c]] = False
        out.append(keep.reshape(w.shape).to(w.device))
    return out


def _prepared(layers: Layers, sparsity: float, method: str, options: Options):
    """N:M first (its pattern joins the masks), then OWL's budget."""
    from . import owl

    if options.nm is not None:
        layers = layers.with_masks(nm_masks(layers.tensors, layers.masks, layers.names, *options.nm))
    if method == "owl":
        method = owl.budget_reference(layers, sparsity, options)
    return layers, method


def select_with(layers: Layers, sparsity: float, method: str, options: Options):
    """select() under all options: (unit orders, unit counts)."""
    layers, method = _prepared(layers, sparsity, method, options)
    return select(layers, sparsity, method, options)


def prune_masks_with(layers: Layers, sparsity: float, method: str, options: Options) -> list[torch.Tensor]:
    """The masks for keys ``layers.tensors`` under all options: N:M first, then OWL's budget, then selection."""
    layers, method = _prepared(layers, sparsity, method, options)
    orders, counts = select(layers, sparsity, method, options)
    if options.row_balance < 1:
        return balanced_masks(layers, orders, counts, options.row_balance)
    return unit_masks(layers, orders, counts)


def row_lamp_scores(key: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """LAMP scores of one layer with each output row its own unit, float64, same shape and device."""
    out = torch.zeros(key.numel(), dtype=torch.float64)
    for unit in units(tuple(key.shape), "row"):
        order, scores = _unit_scores(key, mask, unit, True)
        out[order] = torch.tensor([0.0 if s is None else s for s in scores], dtype=torch.float64)
    return out.reshape(key.shape).to(key.device)
