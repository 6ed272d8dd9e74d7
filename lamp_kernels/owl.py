"""OWL: outlier-weighted layerwise sparsity (Yin et al., "Outlier Weighed Layerwise Sparsity (OWL)", ICML 2024).

For each block b (a transformer block: all layers whose names share it), with I the keys (Wanda's importance,
or |w|) of all its n_b weights, masked-out ones counting as 0:

    mean_b  = fsum(I) / n_b                  (the exact sum rounded once to float64, then one division)
    ratio_b = #{I > fl(M * mean_b)} / n_b    (I compared exactly, in float64)

and the block densities are allocation.owl_densities(ratios, sizes, sparsity, lambda): the ratios mapped
onto [0, 2 lambda] and shifted to the target density. Every layer of block b gets sparsity 1 - density_b,
pruned like "uniform" (per layer, or per row with granularity="row": the paper's setting, Wanda's row rule
inside each layer). The exact sum makes the ratios, and so the masks, identical on every device.

Blocks: ``blocks=`` gives each layer's block id (a list, or a dict by name); by default a layer's block is the
first all-digit component of its name ("model.layers.11.mlp.down_proj.weight" -> "11"), and a name without
one is a block of its own.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

import torch

from . import allocation, ops
from .importance import scaled_importance
from .kernels_torch import DTYPE_INFO
from .layers import Layers
from .options import Options

_BLOCK = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")
_CHUNK = 1 << 22
# dtype -> (exponent bits, mantissa bits, exponent bias)
_FORMAT = {torch.bfloat16: (8, 7, 127), torch.float16: (5, 10, 15), torch.float32: (8, 23, 127),
           torch.float64: (11, 52, 1023)}


def default_block(name: str) -> Any:
    """The block of a layer named `name` when none is given: its first all-digit component, else its own."""
    found = _BLOCK.search(name)
    return found.group(1) if found else ("layer", name)


def block_ids(layers: Layers, blocks: Any = None) -> list[Any]:
    if blocks is None:
        return [default_block(name) for name in layers.names]
    if isinstance(blocks, dict):
        missing = [k for k in layers.keys if k not in blocks]
        if missing:
            raise ValueError(f"blocks has no entry for {[str(k) for k in missing[:5]]}")
        return [blocks[k] for k in layers.keys]
    if not isinstance(blocks, (list, tuple)) or len(blocks) != len(layers.tensors):
        raise ValueError(f"blocks must be a list of {len(layers.tensors)} block ids, or a dict by layer name")
    return list(blocks)


def exact_sum(t: torch.Tensor) -> Fraction:
    """The exact sum of a tensor of non-negative finite floats, on its device: significands summed as integers
    per exponent (int64; split in two halves so no sum can overflow), combined exactly on the host."""
    exp_bits, man_bits, bias = _FORMAT[t.dtype]
    view = DTYPE_INFO[t.dtype][4]
    flat = t.detach().contiguous().reshape(-1)
    sums = torch.zeros(2, 1 << exp_bits, dtype=torch.int64, device=t.device)
    for start in range(0, flat.numel(), _CHUNK):
        bits = flat[start:start + _CHUNK].view(view).to(torch.int64) & DTYPE_INFO[t.dtype][5]
        e = bits >> man_bits
        m = (bits & ((1 << man_bits) - 1)) | torch.where(e > 0, 1 << man_bits, 0)
        sums[0].index_add_(0, e, m >> 26)
        sums[1].index_add_(0, e, m & ((1 << 26) - 1))
    return _combine(sums, t.dtype)


def _combine(sums: torch.Tensor, dtype: torch.dtype) -> Fraction:
    """The exact value of per-exponent significand sums [2, 2^exponent bits] (high and low 26-bit halves)."""
    _, man_bits, bias = _FORMAT[dtype]
    hi, lo = sums.cpu().tolist()
    total = Fraction(0)
    for e, (a, b) in enumerate(zip(hi, lo)):
        if a or b:  # value = M * 2^(max(e, 1) - bias - man_bits)
            total += Fraction((a << 26) + b) * Fraction(2) ** (max(e, 1) - bias - man_bits)
    return total


def count_above(t: torch.Tensor, threshold: float) -> int:
    """#{t > threshold}, comparing exactly (in float64)."""
    flat = t.detach().reshape(-1)
    return sum(int((flat[s:s + _CHUNK].to(torch.float64) > threshold).sum()) for s in range(0, flat.numel(), _CHUNK))


def layer_sum(layers: Layers, i: int) -> Fraction:
    """The exact sum of layer i's alive |keys|: one C++ pass on CPU tensors, exact_sum elsewhere. Column-scaled
    keys are the float32 importances fl32(|w| * scale_j), made as the pass reads w."""
    t, mask, scale = layers.tensors[i].detach(), layers.masks[i], layers.scales[i] if layers.scales else None
    if t.device.type == "cpu" and ops._C is not None:
        if scale is not None:
            return _combine(ops._C.significand_sums_scaled([t], [mask], [scale])[0], torch.float32)
        return _combine(ops._C.significand_sums([t], [mask])[0], t.dtype)
    return exact_sum(_alive(t if scale is None else scaled_importance(t, scale), mask))


def layer_count_above(layers: Layers, i: int, threshold: float) -> int:
    """#{alive |keys| of layer i > threshold}: one C++ pass on CPU tensors, count_above elsewhere."""
    t, mask, scale = layers.tensors[i].detach(), layers.masks[i], layers.scales[i] if layers.scales else None
    if t.device.type == "cpu" and ops._C is not None:
        if scale is not None:
            return int(ops._C.count_above_scaled([t], [mask], [threshold], [scale])[0])
        return int(ops._C.count_above([t], [mask], [threshold])[0])
    return count_above(_alive(t if scale is None else scaled_importance(t, scale), mask), threshold)


def _alive(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """|keys| (the weights' magnitudes when they are the keys), masked-out entries 0."""
    t = t.detach().abs()
    return t if mask is None else torch.where(mask, t, torch.zeros((), dtype=t.dtype, device=t.device))


def ratios_of_blocks(ids: list[Any], sizes: list[int], sparsity: float, options: Options, layer_sum,
                     layer_count_above) -> allocation.Ratios:
    """Per-layer sparsities from each layer's block id and size, given layer_sum(i) (the exact sum of layer i's
    alive keys, a Fraction) and layer_count_above(i, threshold) (#{alive keys > threshold}): two passes over
    each block's layers, the first for its mean, the second for its outliers."""
    order = list(dict.fromkeys(ids))
    members = {b: [i for i, x in enumerate(ids) if x == b] for b in order}
    block_sizes = [sum(sizes[i] for i in members[b]) for b in order]
    ratios = []
    for b, n in zip(order, block_sizes):
        if not n:  # a block of empty layers: no outliers
            ratios.append(0.0)
            continue
        mean = float(sum((layer_sum(i) for i in members[b]), Fraction(0))) / n
        threshold = options.owl_m * mean
        ratios.append(sum(layer_count_above(i, threshold) for i in members[b]) / n)
    density = dict(zip(order, allocation.owl_densities(ratios, block_sizes, sparsity, options.owl_lambda)))
    return allocation.Ratios(tuple(1.0 - density[b] for b in ids))


def budget(layers: Layers, sparsity: float, options: Options) -> allocation.Ratios:
    """Per-layer sparsities for the keys ``layers.tensors`` (column-scaled ones: their importances, made as
    each pass reads the weight): two passes over each block's keys."""
    return ratios_of_blocks(block_ids(layers, options.blocks), layers.numels(), sparsity, options,
                            lambda i: layer_sum(layers, i),
                            lambda i, threshold: layer_count_above(layers, i, threshold))


def budget_reference(layers: Layers, sparsity: float, options: Options) -> allocation.Ratios:
    """The same budget written plainly (math.fsum over Python floats): the spec the fast path is tested on."""
    ids = block_ids(layers, options.blocks)
    order = list(dict.fromkeys(ids))
    ratios, sizes = [], []
    for b in order:
        values = []
        for i, x in enumerate(ids):
            if x == b:
                values += _alive(layers.tensors[i], layers.masks[i]).reshape(-1).double().cpu().tolist()
        threshold = options.owl_m * (math.fsum(values) / len(values)) if values else 0.0
        ratios.append(sum(v > threshold for v in values) / len(values) if values else 0.0)
        sizes.append(len(values))
    density = dict(zip(order, allocation.owl_densities(ratios, sizes, sparsity, options.owl_lambda)))
    return allocation.Ratios(tuple(1.0 - density[b] for b in ids))
