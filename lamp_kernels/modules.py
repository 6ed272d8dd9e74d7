"""prune_: prune the Linear and Conv weights of an nn.Module in place, all or nothing; tied weights as one."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from . import backends
from .api import _check_method, prune_masks
from .layers import Layers, check_sparsity
from .naming import DEFAULT_EXCLUDE
from .options import OWL_LAMBDA, OWL_M, check_options

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, ...]
    numel: int
    pruned: int
    shared_with: tuple[str, ...] = ()  # other modules' names for the same (tied) tensor

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
        lines += [f"{r.name:<{width}}  {str(r.shape):<20} {r.numel:>10} {r.density:>8.4f}"
                  + (f"  (also {', '.join(r.shared_with)})" if r.shared_with else "") for r in self.layers]
        return "\n".join(lines)


def _matches(name: str, patterns: Iterable[str] | str | None) -> bool:
    if patterns is None:
        return False
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(re.search(p, name) for p in patterns)


def _selected(name: str, include, exclude) -> bool:
    """Default: every name but DEFAULT_EXCLUDE (embeddings, output heads); include= replaces that rule."""
    take = not re.search(DEFAULT_EXCLUDE, name) if include is None else _matches(name, include)
    return take and not _matches(name, exclude)


def _reparametrized(module: nn.Module) -> bool:
    return hasattr(module, "weight_orig") and hasattr(module, "weight_mask")


def _stored_weight(module: nn.Module) -> torch.Tensor:
    """The weight tensor a module stores (weight_orig under torch.nn.utils.prune's reparametrisation)."""
    return module.weight_orig if _reparametrized(module) else module.weight


def _storage_key(t: torch.Tensor) -> tuple:
    """Equal for two tensors that are the same values in memory: one Parameter used by several modules, or
    two Parameters over the same storage (weight tying either way)."""
    if t.device.type == "meta" or t.numel() == 0:
        return ("object", id(t))
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def select_layers(model: nn.Module, include=None, exclude=None) -> dict[str, list[tuple[str, nn.Module]]]:
    """The layers prune_ prunes: name -> [(name, module), ...] of every module that uses that weight tensor,
    in module order; the layer is named after its first use. One tensor is one layer, however many modules
    share it (tied weights).

    Candidates are the weights of Linear and Conv1d/2d/3d modules, named '<module>.weight'; with include=
    also Embedding weights. Default: all of them but names matching DEFAULT_EXCLUDE (embeddings and output
    heads such as lm_head); include= (regexes, re.search) replaces that rule, exclude= removes names. A
    shared tensor is pruned everywhere or nowhere: if any of its uses is selected, all of them must be
    (another parameter of any module using the same tensor counts as a use), else ValueError."""
    types = PRUNABLE if include is None else PRUNABLE + (nn.Embedding,)
    uses: dict[tuple, list[str]] = {}  # tensor -> every '<module>.<parameter>' holding it
    candidates: dict[tuple, list[tuple[str, nn.Module]]] = {}
    for mname, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False, remove_duplicate=False):
            if pname == "weight_orig" and _reparametrized(module):
                pname = "weight"
            uses.setdefault(_storage_key(param), []).append(f"{mname}.{pname}" if mname else pname)
        if isinstance(module, types):
            name = f"{mname}.weight" if mname else "weight"
            candidates.setdefault(_storage_key(_stored_weight(module)), []).append((name, module))
    layers = {}
    for key, users in candidates.items():
        chosen = [n for n, _ in users if _selected(n, include, exclude)]
        if not chosen:
            continue
        left_out = [n for n in dict.fromkeys(uses.get(key, []) + [n for n, _ in users]) if n not in chosen]
        if left_out:
            raise ValueError(f"{chosen[0]} shares its tensor with {', '.join(left_out[:3])}, which would not be "
                             "pruned: a shared tensor is pruned in all its uses or in none (select them all with "
                             "include=, or leave this one out)")
        layers[users[0][0]] = users
    return layers


def _importance(model: nn.Module, modules: dict[str, nn.Module], weights: dict[str, torch.Tensor], importance,
                calibration, progress: bool):
    """None for magnitude, else name -> importance (Wanda's from the calibration: ColumnScaled by the input norms,
    so no full-size importance tensor is made; or the user's dict). ``modules`` holds each layer's first use: a
    tensor shared by several Linears is weighted by that one's input norms."""
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
    from .calibration import input_norms
    from .importance import ColumnScaled

    for name, module in modules.items():
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{name}: Wanda importance is defined for Linear layers; exclude "
                             f"{type(module).__name__} layers (exclude=...)")
    norms = input_norms(model, calibration, {n[: -len(".weight")]: m for n, m in modules.items()}, progress=progress)
    return {n: ColumnScaled(norms[n[: -len(".weight")]]) for n in modules}


def prune_(model: nn.Module, sparsity: float, method: str = "lamp", *, importance="magnitude", calibration=None,
           granularity: str = "layer", min_density: float | None = None, max_density: float | None = None,
           nm: tuple[int, int] | None = None, owl_m: float = OWL_M, owl_lambda: float = OWL_LAMBDA, blocks=None,
           row_balance: float = 1.0, include=None, exclude=None, reparametrize: bool = True, backend: str | None = None,
           progress: bool = True) -> PruneReport:
    """Prune ``model`` in place so that ``sparsity`` of the selected weights (in total) are zero.

    Selection (see select_layers): Linear and Conv1d/2d/3d weights except embeddings and output heads
    (names matching DEFAULT_EXCLUDE, e.g. ``lm_head``); ``include`` regexes replace that rule (and may also
    name Embedding weights), ``exclude`` regexes remove names. A tensor shared by several modules (a tied
    ``lm_head``/``embed_tokens``) is one layer: counted once and given one mask, applied in every module that
    uses it.

    importance: "magnitude" (|w|), "wanda" (|W_ij| * ||X_j||, the input norms collected over
    ``calibration``, an iterable of batches the model is called on: calibration.input_norms; ranked as
    ColumnScaled, so on the CPU computed as the kernels read the weights, never stored), or a dict of
    importance tensors (or ColumnScaled) by weight name.
    granularity, min_density, max_density, nm, owl_m, owl_lambda, blocks, row_balance: as in prune_masks (OWL's
    blocks default to the first number in each weight's name).

    reparametrize=True goes through ``torch.nn.utils.prune.custom_from_mask``: masks from earlier calls are
    honoured, so repeated calls at rising sparsities prune iteratively, and ``prune.remove`` makes it
    permanent. reparametrize=False writes zeros into the weights directly (no mask buffers; zeros are
    pruned first on the next call). Every mask is computed before the model is touched, so bad input
    raises with the model unchanged.
    """
    _check_method(method)
    check_sparsity(sparsity)
    options = check_options(method, granularity, min_density, max_density, nm, owl_m, owl_lambda, blocks, row_balance)
    layers = select_layers(model, include, exclude)
    if not layers:
        raise ValueError("no prunable layers (Linear, Conv1d/2d/3d) selected in the model")
    weights, masks = {}, {}
    for name, users in layers.items():
        weights[name] = _stored_weight(users[0][1]).detach()
        held = [m.weight_mask.detach().bool() for _, m in users if _reparametrized(m)]
        masks[name] = functools.reduce(torch.logical_and, held) if held else None  # masked out anywhere: pruned
    have_masks = {n: m for n, m in masks.items() if m is not None}
    keys = _importance(model, {n: users[0][1] for n, users in layers.items()}, weights, importance, calibration,
                       progress)
    report = PruneReport(method, float(check_sparsity(sparsity)))
    if not reparametrize and not have_masks and keys is None and options.is_plain() and method != "owl":
        weight_layers = Layers.from_inputs(weights)
        chosen = backends.choose(backend, weight_layers)
        if chosen.can_zero:
            _zero_in_place(weight_layers, sparsity, method, report, chosen)
            for r, users in zip(report.layers, layers.values()):
                r.shared_with = tuple(n for n, _ in users[1:])
            return report
    new_masks = prune_masks(weights, sparsity, method, masks=have_masks or None, importance=keys,
                            granularity=granularity, min_density=min_density, max_density=max_density, nm=nm,
                            owl_m=owl_m, owl_lambda=owl_lambda, blocks=blocks, row_balance=row_balance,
                            backend=backend)
    with torch.no_grad():
        for name, users in layers.items():
            keep = new_masks[name]
            if reparametrize:
                for _, module in users:
                    prune.custom_from_mask(module, "weight", keep)
            else:
                _stored_weight(users[0][1]).masked_fill_(~keep, 0)  # once: every user sees the same tensor
                for _, module in users:
                    if _reparametrized(module):
                        module.weight_mask.mul_(keep.to(module.weight_mask.dtype))
                        module.weight = module.weight_orig * module.weight_mask
            report.layers.append(LayerReport(name, tuple(keep.shape), keep.numel(), int(keep.numel() - keep.sum()),
                                             tuple(n for n, _ in users[1:])))
    return report


def _zero_in_place(layers: Layers, sparsity: float, method: str, report: PruneReport,
                   chosen: backends.Backend) -> None:
    """Cuts from the summaries, then each weight zeroed in place by its cut: no mask is ever allocated."""
    cuts = chosen.zero_(layers, check_sparsity(sparsity), method)
    for name, w, pruned in zip(layers.keys, layers.tensors, cuts.pruned):
        report.layers.append(LayerReport(name, tuple(w.shape), w.numel(), pruned))
