"""prune_masks / layer_sparsities with torch.distributed (gloo, several processes on CPU) equal the
single-process result on the whole model."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lamp_kernels as lk

pytestmark = pytest.mark.skipif(not dist.is_available() or "cpu" not in lk.available_backends(),
                                reason="needs torch.distributed and the compiled backend")


def whole_model():
    """The model as one process sees it, in the global layer order."""
    g = torch.Generator().manual_seed(0)
    vals = torch.tensor([0.0, 0.25, 0.5, 1.0, -1.0, 2.0])
    dup = torch.randn(100, 40, generator=g)
    return {
        "a.weight": torch.randn(24, 10, generator=g),
        "dup1.weight": dup.clone(),  # identical to dup2: exact score ties across layers, broken by layer order
        "shared_ties.weight": vals[torch.randint(0, 6, (48, 16), generator=g)].bfloat16(),  # row-sharded
        "shared_fp32.weight": torch.randn(2000, 12, generator=g),  # row-sharded, fp32 refinement
        "b.weight": torch.randn(7, 3, 3, 3, generator=g).half(),
        "dup2.weight": dup.clone(),
        "c.weight": torch.randn(10, 5, generator=g, dtype=torch.float64),
    }


def rank_layers(rank, world):
    """Rank 0 holds a and dup1, the last rank b, dup2 and c, every rank its rows of the shared layers (rows
    [r*n/world, (r+1)*n/world)). Listing the ranks' layers rank by rank gives whole_model()'s order."""
    full = whole_model()
    names = (["a.weight", "dup1.weight"] if rank == 0 else []) + ["shared_ties.weight", "shared_fp32.weight"]
    names += ["b.weight", "dup2.weight", "c.weight"] if rank == world - 1 else []
    out = {}
    for name in names:
        w = full[name]
        if name.startswith("shared"):
            n = w.shape[0]
            w = w[rank * n // world:(rank + 1) * n // world]
        out[name] = w
    return out


def order_sensitive_sparsities():
    """Sparsities at which swapping dup1 and dup2 in the layer order changes the LAMP masks."""
    full = whole_model()
    swapped = {k: full[k] for k in ["a.weight", "dup2.weight", "shared_ties.weight", "shared_fp32.weight",
                                    "b.weight", "dup1.weight", "c.weight"]}
    found = []
    for s in [i / 40 for i in range(1, 40)]:
        if not torch.equal(lk.prune_masks(full, s)["dup1.weight"], lk.prune_masks(swapped, s)["dup1.weight"]):
            found.append(s)
    return found[:3]


def test_layer_order_matters_in_this_model():
    assert order_sensitive_sparsities()  # so the distributed test below checks the global layer order


def _worker(rank, world, init_file, queue):
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        mine = rank_layers(rank, world)
        full = whole_model()
        sensitive = order_sensitive_sparsities()
        for method in lk.METHODS:
            for s in [0.3, 0.8] + (sensitive if method == "lamp" else []):
                try:
                    want = lk.prune_masks(full, s, method)
                except ValueError:
                    continue
                got = lk.prune_masks(mine, s, method, group=dist.group.WORLD)
                frac = lk.layer_sparsities(mine, s, method, group=dist.group.WORLD)
                want_frac = lk.layer_sparsities(full, s, method)
                for name, m in got.items():
                    n = full[name].shape[0]
                    lo = rank * n // world if name.startswith("shared") else 0
                    expect = want[name][lo:lo + m.shape[0]]
                    assert torch.equal(m, expect), f"{method} {s} {name} rank {rank}"
                    assert frac[name] == want_frac[name], (method, s, name)
        # density bounds on whole layers (row shards summed): the same clamped selection as one process
        for method in ("lamp", "global"):
            for s, lo, hi in ((0.5, 0.3, 0.7), (0.8, 0.1, 0.3), (0.3, 0.6, None)):
                kw = dict(min_density=lo, max_density=hi)
                want = lk.prune_masks(full, s, method, **kw)
                got = lk.prune_masks(mine, s, method, group=dist.group.WORLD, **kw)
                frac = lk.layer_sparsities(mine, s, method, group=dist.group.WORLD, **kw)
                for name, m in got.items():
                    n = full[name].shape[0]
                    lo_row = rank * n // world if name.startswith("shared") else 0
                    assert torch.equal(m, want[name][lo_row:lo_row + m.shape[0]]), f"bounded {method} {s} {name}"
                    assert frac[name] == float((~want[name]).sum()) / want[name].numel(), (method, s, name)
        # ColumnScaled importance: each rank computes its shards' keys in the kernels; same masks as one process
        g = torch.Generator().manual_seed(7)
        scales = {name: torch.rand(w.shape[-1], generator=g) for name, w in full.items()}
        for method in ("lamp", "global"):
            want = lk.prune_masks(full, 0.5, method, importance={n: lk.ColumnScaled(s) for n, s in scales.items()})
            got = lk.prune_masks(mine, 0.5, method, importance={n: lk.ColumnScaled(scales[n]) for n in mine},
                                 group=dist.group.WORLD)
            for name, m in got.items():
                n = full[name].shape[0]
                lo = rank * n // world if name.startswith("shared") else 0
                assert torch.equal(m, want[name][lo:lo + m.shape[0]]), f"ColumnScaled {method} {name} rank {rank}"
        overflow = {n: lk.ColumnScaled(torch.full((w.shape[-1],), 3e38)) for n, w in mine.items()}
        try:  # every rank raises the same error after the one all_reduce, naming the importance
            lk.prune_masks(mine, 0.5, importance=overflow, group=dist.group.WORLD)
        except ValueError as e:
            assert "ColumnScaled importance" in str(e), str(e)
        else:
            raise AssertionError("an overflowing ColumnScaled product should raise")
        # N:M ranks the keys before any collective: a NaN product on one rank raises on every rank, none hang
        nm_layers = {n: torch.randn(w.shape[0], 8) for n, w in mine.items()}
        nm_scales = {n: lk.ColumnScaled(torch.ones(8)) for n in nm_layers}
        if rank == 0:
            nm_layers["a.weight"][0, 0] = float("nan")
        try:
            lk.prune_masks(nm_layers, 0.6, importance=nm_scales, nm=(2, 4), group=dist.group.WORLD)
        except ValueError as e:
            assert "rank 0" in str(e) and "ColumnScaled importance" in str(e), str(e)
        else:
            raise AssertionError("the NaN product on rank 0 should raise on every rank")
        try:
            lk.prune_masks([torch.randn(3)], 0.5, group=dist.group.WORLD)
        except ValueError as e:
            assert "dict" in str(e)
        else:
            raise AssertionError("a list with group= should raise")
        bad = dict(mine)
        if rank == 0:
            bad["a.weight"] = torch.arange(5)  # an error on one rank only: every rank must raise, none hang
        try:
            lk.prune_masks(bad, 0.5, group=dist.group.WORLD)
        except (TypeError, ValueError) as e:
            assert "rank 0" in str(e)
        else:
            raise AssertionError("the error on rank 0 should reach every rank")
        dist.destroy_process_group()
        queue.put((rank, "ok"))
    except BaseException as e:  # report instead of hanging the parent
        queue.put((rank, f"{type(e).__name__}: {e}"))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_distributed_equals_single_process(world):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as d:
        init_file = os.path.join(d, "init")
        procs = [ctx.Process(target=_worker, args=(r, world, init_file, queue)) for r in range(world)]
        for p in procs:
            p.start()
        results = dict(queue.get(timeout=240) for _ in procs)
        for p in procs:
            p.join(timeout=60)
    assert results == {r: "ok" for r in range(world)}
