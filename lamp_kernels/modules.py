"""prune_: prune the Linear and Conv weights of an nn.Module in place, all or nothing."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from . import backends
from .api import _check_method, prune_masks
from .layers import Layers, check_sparsity
from .options import OWL_LAMBDA, OWL_M, check_options

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, ...]
    numel: int
    pruned: int

    @property
    def density(self) -> float:
        return 1.0 - self.pruned / self.numel if self.numel else 1.0


@dataclass
class PruneReport:
    method: str
    sparsity: float
    layers: list[LayerReport] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.layers)

    @property
    def pruned(self) -> int:
        return sum(r.pruned for r in self.layers)

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.layers] + [5])
        lines = [f"{self.method} at sparsity {self.sparsity:g}: {self.pruned}/{self.numel} weights pruned",
                 f"{'layer':<{width}}  {'shape':<20} {'weights':>10} {'density':>8}"]
        lines += [f"{r.name:<{width}}  {str(r.shape):<20} {r.numel:>10} {r.density:>8.4f}" for r in self.layers]
        return "\n".join(lines)


def _matches(name: str, patterns: Iterable[str] | str | None) -> bool:
    if patterns is None:
        return False
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(re.search(p, name) for p in patterns)


def prunable_weights(model: nn.Module, include=None, exclude=None) -> dict[str, nn.Module]:
    """'<module>.weight' -> module, for Linear/Conv1d/2d/3d, filtered by regexes on that name (re.search):
    with ``include`` only matching names are taken; ``exclude`` removes names."""
    found = {}
    for mname, module in model.named_modules():
        if not isinstance(module, PRUNABLE):
            continue
        name = f"{mname}.weight" if mname else "weight"
        if include is not None and not _matches(name, include):
            continue
        if _matches(name, exclude):
            continue
        found[name] = module
    return found


def _current(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight values, mask) of a module, looking through torch.nn.utils.prune's reparametrisation."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return module.weight_orig.detach(), module.weight_mask.detach().bool()
    return module.weight.detach(), None


def _importance(model: nn.Module, modules: dict[str, nn.Module], weights: dict[str, torch.Tensor], importance,
                calibration, progress: bool):
    """None for magnitude, else name -> importance tensor (Wanda's from the calibration, or the user's)."""
    if isinstance(importance, str) and importance == "magnitude":
        if calibration is not None:
            raise ValueError("calibration= is used with importance='wanda'; magnitude pruning needs no data")
        return None
    if isinstance(importance, dict):
        return importance
    if not (isinstance(importance, str) and importance == "wanda"):
        raise ValueError(f"importance must be 'magnitude', 'wanda' or a dict of tensors by weight name, got "
                         f"{importance!r}")
    if calibration is None:
        raise ValueError("importance='wanda' needs calibration= (batches to run the model on)")
    from .calibration import input_norms, wanda_importance

    for name, module in modules.items():
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{name}: Wanda importance is defined for Linear layers; exclude "
                             f"{type(module).__name__} layers (exclude=...)")
    norms = input_norms(model, calibration, {n[: -len(".weight")]: m for n, m in modules.items()}, progress=progress)
    return {n: wanda_importance(weights[n], norms[n[: -len(".weight")]]) for n in modules}


def prune_(model: nn.Module, sparsity: float, method: str = "lamp", *, importance="magnitude", calibration=None,
           granularity: str = "layer", min_density: float | None = None, max_density: float | None = None,
           nm: tuple[int, int] | None = None, owl_m: float = OWL_M, owl_lambda: float = OWL_LAMBDA, blocks=None,
           include=None, exclude=None, reparametrize: bool = True, backend: str | None = None,
           progress: bool = True) -> PruneReport:
    """Prune ``model`` in place so that ``sparsity`` of the selected weights (in total) are zero.

    importance: "magnitude" (|w|), "wanda" (|W_ij| * ||X_j||, the input norms collected over
    ``calibration``, an iterable of batches the model is called on: calibration.input_norms), or a dict of
    importance tensors by weight name. granularity, min_density, max_density, nm, owl_m, owl_lambda, blocks:
    as in prune_masks (OWL's blocks default to the first number in each weight's name).

    reparametrize=True goes through ``torch.nn.utils.prune.custom_from_mask``: masks from earlier calls are
    honoured, so repeated calls at rising sparsities prune iteratively, and ``prune.remove`` makes it
    permanent. reparametrize=False writes zeros into the weights directly (no mask buffers; zeros are
    pruned first on the next call). Every mask is computed before the model is touched, so bad input
    raises with the model unchanged.
    """
    _check_method(method)
    check_sparsity(sparsity)
    options = check_options(method, granularity, min_density, max_density, nm, owl_m, owl_lambda, blocks)
    modules = prunable_weights(model, include, exclude)
    if not modules:
        raise ValueError("no prunable layers (Linear, Conv1d/2d/3d) selected in the model")
    weights, masks = {}, {}
    for name, module in modules.items():
        weights[name], masks[name] = _current(module)
    have_masks = {n: m for n, m in masks.items() if m is not None}
    keys = _importance(model, modules, weights, importance, calibration, progress)
    report = PruneReport(method, float(sparsity))
    if not reparametrize and not have_masks and keys is None and options.is_plain() and method != "owl":
        layers = Layers.from_inputs(weights)
        chosen = backends.choose(backend, layers)
        if chosen.can_zero:
            _zero_in_place(layers, sparsity, method, report, chosen)
            return report
    new_masks = prune_masks(weights, sparsity, method, masks=have_masks or None, importance=keys,
                            granularity=granularity, min_density=min_density, max_density=max_density, nm=nm,
                            owl_m=owl_m, owl_lambda=owl_lambda, blocks=blocks, backend=backend)
    with torch.no_grad():
        for name, module in modules.items():
            keep = new_masks[name]
            if reparametrize:
                prune.custom_from_mask(module, "weight", keep)
            else:
                target = module.weight_orig if hasattr(module, "weight_orig") else module.weight
                target.masked_fill_(~keep, 0)
                if hasattr(module, "weight_mask"):
                    module.weight_mask.mul_(keep.to(module.weight_mask.dtype))
                    module.weight = module.weight_orig * module.weight_mask
            report.layers.append(LayerReport(name, tuple(keep.shape), keep.numel(), int(keep.numel() - keep.sum())))
    return report


def _zero_in_place(layers: Layers, sparsity: float, method: str, report: PruneReport,
                   chosen: backends.Backend) -> None:
    """Cuts from the summaries, then each weight zeroed in place by its cut: no mask is ever allocated."""
    cuts = chosen.zero_(layers, check_sparsity(sparsity), method)
    for name, w, pruned in zip(layers.keys, layers.tensors, cuts.pruned):
        report.layers.append(LayerReport(name, tuple(w.shape), w.numel(), pruned))
