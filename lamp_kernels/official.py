"""The official algorithm (the paper's repository, ``tools/pruners.py``), re-expressed as a baseline for
tests and benchmarks. It is *not* a backend: it differs from the contract on purpose.

* Suffix sums are ``sum - cumsum`` in the weight's precision (float32 for float32 weights): in a large layer
  the subtraction cancels, and small weights get scores that are noise.
* The threshold is the k-th largest of all scores concatenated (``torch.cat`` + ``topk``): more than
  2^31 - 1 scores cannot go through CUDA ``topk``, and the concatenation alone needs 4 bytes per weight.
* Every weight whose score ties the threshold is kept (``>=``), so more than the asked-for number survive
  when scores tie (frequent with bf16 weights); each layer is then pruned by magnitude to that count.
"""

from __future__ import annotations

import torch


def official_layer_scores(w: torch.Tensor) -> torch.Tensor:
    """Per-layer sort + cumsum, as the official code does (in w's dtype)."""
    sq = w.detach().reshape(-1) ** 2
    sorted_sq, order = sq.sort()
    before = torch.zeros_like(sorted_sq)
    before[1:] = sorted_sq.cumsum(0)[:-1]
    scores = torch.empty_like(sorted_sq)
    scores[order] = sorted_sq / (sq.sum() - before)
    return scores.reshape(w.shape)


def official_lamp_masks(weights: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """LAMP masks the official way: concat scores, topk for the threshold, keep scores >= threshold,
    then magnitude-prune each layer to its survivor count."""
    scores = [official_layer_scores(w).reshape(-1) for w in weights]
    total = sum(s.numel() for s in scores)
    survive = int(round(total * (1.0 - sparsity)))
    if survive == 0:
        return [torch.zeros_like(w, dtype=torch.bool) for w in weights]
    threshold = torch.topk(torch.cat(scores), survive).values[-1]
    masks = []
    for w, s in zip(weights, scores):
        keep_n = int((s >= threshold).sum())
        keep = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        keep[torch.topk(w.detach().reshape(-1).abs(), keep_n).indices] = True
        masks.append(keep.reshape(w.shape))
    return masks
