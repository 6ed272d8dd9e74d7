"""Calibration: the input-feature norms ||X_j||_2 of Linear layers over calibration data (Wanda, Sun et al. 2024).

``input_norms`` runs the model over the batches once, with a forward pre-hook on every chosen Linear that adds
the squares of its inputs, feature by feature, into one float32 vector on the layer's device: nothing else is
stored (no activations kept), so memory is the model, one batch's activations and one vector per Linear.
A Linear called several times per forward pass (shared weights) accumulates every call. ``wanda_importance``
turns a weight and its input norms into Wanda's importance |W_ij| * ||X_j||.

Wanda's own code collects the inputs of each block after pruning the blocks before it (sequentially); here the
norms come from one pass over the dense model, so one calibration serves any sparsity and method.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def _run(model: nn.Module, batch: Any) -> None:
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


def input_norms(model: nn.Module, batches: Iterable[Any], modules: dict[str, nn.Module] | None = None, *,
                progress: bool = True) -> dict[str, torch.Tensor]:
    """||X_j||_2 over every token of the calibration batches, per input feature j of each Linear.

    modules: name -> nn.Linear (default: every Linear of the model, by its module name). Each batch is passed
    to the model as ``model(batch)``, ``model(**batch)`` for a dict or ``model(*batch)`` for a tuple/list.
    Runs in eval mode without autograd (the model's training flags are restored afterwards). Returns
    name -> float32 tensor [in_features] on the layer's device.
    """
    if modules is None:
        modules = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not modules:
        raise ValueError("no Linear layers to calibrate")
    for name, module in modules.items():
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{name}: input norms are collected for nn.Linear layers, not {type(module).__name__}")
    sums = {n: torch.zeros(m.in_features, dtype=torch.float32, device=m.weight.device) for n, m in modules.items()}
    seen = dict.fromkeys(modules, 0)

    def hook(name: str):
        def add(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            sums[name].add_(x.reshape(-1, x.shape[-1]).to(torch.float32).square().sum(0))
            seen[name] += 1
        return add

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    training = {m: m.training for m in model.modules()}
    model.eval()
    count = 0
    try:
        iterator = batches
        if progress:
            from tqdm import tqdm

            iterator = tqdm(batches, desc="calibration", unit="batch", leave=False,
                            total=len(batches) if hasattr(batches, "__len__") else None)
        with torch.no_grad():
            for batch in iterator:
                _run(model, batch)
                count += 1
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.train(flag)
    if count == 0:
        raise ValueError("no calibration batches were given")
    unused = [n for n, c in seen.items() if c == 0]
    if unused:
        raise ValueError(f"the calibration never ran {unused[0]} (and {len(unused) - 1} other layers)"
                         if len(unused) > 1 else f"the calibration never ran {unused[0]}")
    return {n: s.sqrt_() for n, s in sums.items()}


def wanda_importance(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j|| in float32 (one rounding), for a weight [out, in] and norms [in] on its device."""
    if weight.dim() != 2 or norms.shape != (weight.shape[1],):
        raise ValueError(f"Wanda importance needs a weight [out, in] and norms [in]; got {tuple(weight.shape)} "
                         f"and {tuple(norms.shape)}")
    return weight.detach().abs().to(torch.float32) * norms.to(device=weight.device, dtype=torch.float32)
