"""torch.distributed: one exact selection over layers spread across ranks (DESIGN-NOTES §2.3).

Each rank passes its local layers by name. A name held by several ranks is the row shards of one layer,
concatenated along dim 0 in rank order; the model's layer order is the order of first appearance when the
ranks' layers are listed rank by rank. The result equals the single-process result on that whole model.

Only small things travel: the layer table (names, shapes, dtypes), one all_reduce of all summaries, the
candidate keys of the few bins that need them, and per-shard tie counts. Weights never move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .kernels_torch import DTYPE_INFO
from .selection import Cuts, LayerSource, Summary, solve


@dataclass
class _GlobalLayer:
    name: str
    dtype: torch.dtype
    rows: list[int]  # dim-0 size held by each rank (0 = not held)
    tail: tuple[int, ...]  # the other dims
    scaled: bool = False  # keyed by a ColumnScaled importance on some rank (for error messages)

    @property
    def shape(self) -> tuple[int, ...]:
        return (sum(self.rows), *self.tail) if self.tail is not None else ()


def _device(group) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _layer_table(source: LayerSource, group) -> list[_GlobalLayer]:
    world = dist.get_world_size(group)
    scaled = source.scaled or [False] * len(source.names)
    local = [(n, str(d), tuple(s), c) for n, d, s, c in zip(source.names, source.dtypes, source.shapes, scaled)]
    everyone: list = [None] * world
    dist.all_gather_object(everyone, local, group=group)
    table: dict[str, _GlobalLayer] = {}
    for r, entries in enumerate(everyone):
        for name, dtype, shape, is_scaled in entries:
            dt = getattr(torch, dtype.split(".")[-1])
            if name not in table:
                table[name] = _GlobalLayer(name, dt, [0] * world, tuple(shape[1:]) if shape else None)
            g = table[name]
            if g.dtype != dt or (tuple(shape[1:]) if shape else None) != g.tail or g.rows[r]:
                raise ValueError(f"layer {name!r}: the shards on different ranks do not fit together as rows "
                                 f"(dtype {dt} vs {g.dtype}, shape {shape}, rank {r})")
            g.rows[r] = shape[0] if shape else 1
            g.scaled |= is_scaled
    return list(table.values())


def _all_gather_varlen(t: torch.Tensor, group, device) -> list[torch.Tensor]:
    world = dist.get_world_size(group)
    n = torch.tensor([t.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.int64, device=device)
    padded[: t.numel()] = t.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return [p[: int(s)].cpu() for p, s in zip(parts, sizes)]


def _count_in(s: Summary, lo: int, hi: int) -> int:
    return int(s.counts[(s.bins >= lo) & (s.bins <= hi)].sum())


def distributed_cuts(source: LayerSource, sparsity: float, method: str, group, densities=None) -> Cuts:
    """Cuts for the source's local layers, from the selection over all ranks' layers (within density bounds
    on every whole layer when given: selection.solve's densities)."""
    device, rank = _device(group), dist.get_rank(group)
    table = _layer_table(source, group)
    local_of = {name: i for i, name in enumerate(source.names)}

    # One all_reduce of every layer's summary, dense (zeros where this rank holds no shard).
    held = [g.name for g in table if g.name in local_of]
    local = dict(zip(held, source.summarize([local_of[name] for name in held])))
    parts = []
    for g in table:
        _, bins, _, limbs, _, _ = DTYPE_INFO[g.dtype]
        s = local.get(g.name)
        if s is None:
            parts.append(torch.zeros(bins * (1 + limbs), dtype=torch.int64))
        else:
            counts, sums = s.dense()
            parts += [counts, sums.reshape(-1)]
    flat = torch.cat(parts).to(device)
    dist.all_reduce(flat, group=group)
    flat = flat.cpu()
    summaries, pos = [], 0
    for g in table:
        _, bins, _, limbs, _, _ = DTYPE_INFO[g.dtype]
        counts = flat[pos:pos + bins]
        sums = flat[pos + bins:pos + bins * (1 + limbs)].reshape(bins, limbs)
        pos += bins * (1 + limbs)
        numel = 1
        for d in g.shape:
            numel *= d
        summaries.append(Summary.from_dense(g.dtype, numel, counts, sums, g.scaled))

    def gather(requests: list[tuple[int, int, int, int]]) -> dict[int, torch.Tensor]:
        # Every rank gets the same requests (the plan is global): gather this rank's shards of all of them
        # at once, then one variable-length all_gather per requested layer, in request order.
        names = [table[i].name for i, _, _, _ in requests]
        local_requests = [(local_of[n], lo, hi, _count_in(local[n], lo, hi))
                          for n, (_, lo, hi, _) in zip(names, requests) if n in local_of]
        mine = source.gather(local_requests) if local_requests else {}
        found = {}
        for n, (i, _, _, _) in zip(names, requests):
            keys = mine[local_of[n]] if n in local_of else torch.empty(0, dtype=torch.int64)
            found[i] = torch.sort(torch.cat(_all_gather_varlen(keys, group, device))).values
        return found

    cuts = solve(summaries, [g.name for g in table], [g.shape for g in table], sparsity, method, gather, densities)

    # Ties at a cut are pruned lowest flat index first: a row shard skips those held by lower ranks.
    shared = [i for i, g in enumerate(table) if cuts.cuts[i][1] > 0 and sum(1 for r in g.rows if r) > 1]
    mine = torch.tensor([source.count_key(local_of[table[i].name], cuts.cuts[i][0])
                         if table[i].name in local_of else 0 for i in shared], dtype=torch.int64)
    before = torch.zeros(len(shared), dtype=torch.int64)
    if shared:
        for r, counts in enumerate(_all_gather_varlen(mine, group, device)):
            if r < rank:
                before += counts
    offset = dict(zip(shared, before.tolist()))
    index = {g.name: i for i, g in enumerate(table)}
    mapped = [index[name] for name in source.names]
    return Cuts([(cuts.cuts[i][0], max(0, cuts.cuts[i][1] - offset.get(i, 0))) for i in mapped],
                [cuts.pruned[i] for i in mapped], [cuts.numels[i] for i in mapped], cuts.threshold)


def agree_on_errors(fn, group):
    """Run fn() on every rank; if it raised anywhere, raise on every rank (no rank is left waiting in a
    collective), naming the rank. Returns fn()'s result."""
    try:
        result, error = fn(), None
    except (ValueError, TypeError, RuntimeError) as exc:
        result, error = None, (type(exc).__name__, str(exc))
    errors: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(errors, error, group=group)
    for r, err in enumerate(errors):
        if err is not None:
            kind = {"TypeError": TypeError, "RuntimeError": RuntimeError}.get(err[0], ValueError)
            raise kind(f"rank {r}: {err[1]}")
    return result
