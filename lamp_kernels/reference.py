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

This module favours clarity over speed: per-element Python loops, small inputs only (tests).
"""

from __future__ import annotations

import torch

from . import allocation
from .layers import Layers, pruned_count

METHODS = ("lamp", "global", "uniform", "uniform_plus", "erk")


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
