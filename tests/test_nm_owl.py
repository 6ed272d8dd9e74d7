"""N:M patterns and OWL's allocation: exact patterns, ties, the reference, and OWL against the paper's formula."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from cases import thread_counts
from torch import nn

import lamp_kernels as lk
from lamp_kernels import allocation, nm, ops, owl, reference
from lamp_kernels.calibration import input_norms, wanda_importance
from lamp_kernels.layers import Layers
from lamp_kernels.options import check_options

FAST = [b for b in lk.available_backends() if b == "cpu" or (b == "triton" and not torch.cuda.is_available())]


def _tie_heavy(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 4, shape, generator=g) * 0.5).to(dtype)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (0, 2), (3, 3)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_nm_keeps_exactly_n_per_group(n, m, dtype):
    keys = [_tie_heavy((6, 24), 1, dtype), _tie_heavy((24,), 2, dtype), _tie_heavy((3, 4, 6), 3, dtype)]
    got = nm.nm_masks(keys, [None] * 3, ["a", "b", "c"], n, m)
    for k, keep in zip(keys, got):
        groups = keep.reshape(-1, m)
        assert (groups.sum(1) == n).all()
        # ties: among equal keys the lowest positions go first, so every kept key >= every pruned one
        kg = k.double().reshape(-1, m)
        for row_k, row_keep in zip(kg, groups):
            if n < m and n > 0:
                assert row_k[~row_keep].max() <= row_k[row_keep].min()
    want = reference.nm_masks(keys, [None] * 3, ["a", "b", "c"], n, m)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_nm_ties_are_deterministic_lowest_position_first():
    keys = [torch.ones(2, 8)]
    keep = nm.nm_masks(keys, [None], ["x"], 2, 4)[0]
    assert keep.tolist() == [[False, False, True, True] * 2] * 2


def test_nm_with_masks_keeps_at_most_n_and_masked_stay_out():
    keys = [_tie_heavy((8, 16), 4)]
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(8, 16, generator=g) > 0.4
    keep = nm.nm_masks(keys, [mask], ["x"], 2, 4)[0]
    assert not keep[~mask].any() and (keep.reshape(-1, 4).sum(1) <= 2).all()
    assert torch.equal(keep, reference.nm_masks(keys, [mask], ["x"], 2, 4)[0])


@pytest.mark.skipif(ops._C is None, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
def test_cpu_nm_kernel_equals_the_torch_sort(dtype):
    """ops._C.nm_keep (ranks within each group) against the pure-torch stable sort of the groups, and the
    spec: heavy ties, zeros and -0.0, masks, m from 2 to the kernel's largest (64), n from 0 to m, a
    non-contiguous key, an empty layer, several tasks, 1 and 2 threads."""
    g = torch.Generator().manual_seed(31)
    for _ in thread_counts(1, 2):
        for n, m in [(2, 4), (1, 4), (4, 8), (0, 2), (3, 3), (2, 2), (5, 16), (63, 64), (1, 64)]:
            key = (torch.randint(-3, 4, (96, 192), generator=g) * 0.5).to(dtype)
            key[:, ::7] = -0.0
            mask = torch.rand(key.shape, generator=g) > 0.3
            for k, msk in [(key, None), (key, mask), (key.t().contiguous().t(), mask)]:
                got = ops._C.nm_keep(k, msk, n, m)
                assert torch.equal(got, nm.nm_keep_torch(k, msk, n, m)), (n, m)
                assert torch.equal(got, reference.nm_masks([k], [msk], ["x"], n, m)[0]), (n, m)
            big = torch.randn(2048, 960, generator=g).to(dtype)  # several tasks
            assert torch.equal(ops._C.nm_keep(big, None, n, m), nm.nm_keep_torch(big, None, n, m))
        assert ops._C.nm_keep(torch.zeros(0, 4, dtype=dtype), None, 2, 4).shape == (0, 4)


@pytest.mark.parametrize("backend", ["reference"] + FAST)
def test_nm_through_prune_masks(backend):
    g = torch.Generator().manual_seed(6)
    w = [torch.randn(8, 16, generator=g), torch.randn(4, 8, generator=g)]
    imp = [x.abs() * torch.rand(x.shape[1], generator=g) for x in w]
    for method in ("lamp", "global", "uniform", "erk", "owl"):
        for s in (0.3, 0.5, 0.7):
            got = lk.prune_masks(w, s, method, importance=imp, nm=(2, 4), backend=backend)
            want = lk.prune_masks(w, s, method, importance=imp, nm=(2, 4), backend="reference")
            assert all(torch.equal(a, b) for a, b in zip(got, want)), (method, s)
            for m in got:
                assert (m.reshape(-1, 4).sum(1) <= 2).all()
            if s <= 0.5 and method in ("lamp", "global", "uniform"):  # the pattern alone prunes half: no more
                assert all((m.reshape(-1, 4).sum(1) == 2).all() for m in got)
            else:
                assert sum(int((~m).sum()) for m in got) >= round(s * 160) - 2


def test_budget_already_met_by_the_pattern_runs_no_selection(monkeypatch):
    """2:4 at 50% with a budget method: every layer already prunes its share, so the masks are the pattern's and
    no selection runs (the backend's masks are not called); the same masks as the reference, and bad values
    still raise."""
    from lamp_kernels import backends

    g = torch.Generator().manual_seed(9)
    w = [torch.randn(8, 16, generator=g), torch.randn(4, 8, generator=g)]
    imp = [x.abs() * torch.rand(x.shape[1], generator=g) for x in w]
    want = lk.prune_masks(w, 0.5, "uniform", importance=imp, nm=(2, 4), backend="reference")
    monkeypatch.setattr(backends.SummaryBackend, "masks", None)
    got = lk.prune_masks(w, 0.5, "uniform", importance=imp, nm=(2, 4), backend="cpu")
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert all(a is not b for a, b in zip(got, lk.prune_masks(w, 0.5, "uniform", nm=(2, 4), backend="cpu")))
    bad = [w[0].clone(), w[1]]
    bad[0][3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lk.prune_masks(bad, 0.5, "uniform", nm=(2, 4), backend="cpu")
    with pytest.raises(TypeError):  # more than the pattern's share: the selection runs (and is patched out)
        lk.prune_masks(w, 0.6, "uniform", nm=(2, 4), backend="cpu")


def test_nm_errors():
    with pytest.raises(ValueError, match="rows of 6 weights do not split into groups of 4"):
        lk.prune_masks([torch.randn(3, 6)], 0.5, nm=(2, 4))
    # a NaN weight before a layer whose rows do not split: the values are checked first, as in the reference
    nan = torch.randn(4, 8)
    nan[1, 2] = float("nan")
    for method, kw in (("lamp", {}), ("uniform", {}), ("uniform", {"granularity": "row"})):
        messages = []
        for backend in ("reference", "cpu"):
            with pytest.raises(ValueError) as got:
                lk.prune_masks([nan, torch.randn(4, 6)], 0.5, method, nm=(2, 4), backend=backend, **kw)
            messages.append(str(got.value))
        assert messages[0] == messages[1] == "layer 0 has NaN or Inf weights", (method, kw, messages)
    for bad in [(2,), (5, 4), (2.0, 4), "2:4", (-1, 4)]:
        with pytest.raises(ValueError, match="nm"):
            lk.prune_masks([torch.randn(4, 4)], 0.5, nm=bad)


def test_exact_sum_is_the_correctly_rounded_sum():
    g = torch.Generator().manual_seed(7)
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        span = 4 if dtype == torch.float16 else 6  # within fp16's range
        x = torch.rand(5000, generator=g, dtype=torch.float64) * torch.logspace(-span, span, 5000, dtype=torch.float64)
        x = x.to(dtype)
        x[::17] = 0
        assert float(owl.exact_sum(x)) == math.fsum(x.double().tolist())
    tiny = torch.tensor([2.0**-1074, 1.0, 2.0**-1074], dtype=torch.float64)  # subnormals
    assert owl.exact_sum(tiny) == 1 + 2 * Fraction(2) ** -1074


@pytest.mark.skipif(ops._C is None, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
def test_cpu_owl_statistics_equal_the_torch_ones(dtype):
    """The C++ passes OWL takes on CPU layers (ops._C.significand_sums, count_above) against the pure-torch
    exact_sum and count_above on the alive |keys|: signs, zeros, -0.0, subnormals, masks, thresholds on a
    value and between values, layers of several chunks, 1 and 2 threads."""
    g = torch.Generator().manual_seed(21)
    span = 4 if dtype == torch.float16 else 30
    ws, ms = [], []
    for n in (1, 1000, 700_001):
        x = torch.randn(n, generator=g, dtype=torch.float64) * torch.logspace(-span, span, n, dtype=torch.float64)
        x = x.to(dtype)
        x[::13] = 0
        x[1::29] = -0.0
        x[2::31] = torch.finfo(dtype).tiny / 4  # subnormal
        ws.append(x)
        ms.append(torch.rand(n, generator=g) > 0.25 if n > 1 else None)
    alive = [owl._alive(w, m) for w, m in zip(ws, ms)]
    layers = Layers(ws, ms, [str(j) for j in range(len(ws))], "list", list(range(len(ws))))
    for _ in thread_counts(1, 2):
        sums = ops._C.significand_sums(ws, ms)
        for j, a in enumerate(alive):
            assert owl._combine(sums[j], dtype) == owl.exact_sum(a)
            assert owl.layer_sum(layers, j) == owl.exact_sum(a)
            top, mid = float(a.double().max()), float(a.double().median())
            for threshold in (0.0, mid, top, 1e-3, math.nextafter(mid, 0.0), math.nextafter(mid, math.inf),
                              math.nextafter(top, math.inf), 1e300, -1.0, math.nan):
                want = owl.count_above(a, threshold)
                assert int(ops._C.count_above([ws[j]], [ms[j]], [threshold])[0]) == want
                assert owl.layer_count_above(layers, j, threshold) == want


def _tiny_model():
    torch.manual_seed(0)
    blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16)) for _ in range(4))
    with torch.no_grad():
        blocks[1][0].weight[:, 3] *= 40  # an outlier feature in block 1
        blocks[2][2].weight[5] *= 30

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = blocks

        def forward(self, x):
            for b in self.blocks:
                x = x + b(x)
            return x

    return Model()


def _paper_owl(block_metrics, sparsity, hyper_m, lamda):
    """OWL's code (lib/prune.py, prune_wanda_outlier): outlier ratio per block in percent, then the
    adjustment, as written there (float64 here)."""
    all_layer_ratio = []
    for metrics in block_metrics:
        w = torch.cat([torch.flatten(x) for x in metrics])
        all_layer_ratio.append(float((w > torch.mean(w) * hyper_m).sum().item()) / w.numel() * 100)
    a = np.array(all_layer_ratio)
    a = (a - a.min()) * (1 / (a.max() - a.min()) * lamda * 2)
    a = a - np.mean(a) + (1 - sparsity)
    return [1 - x for x in a]  # layer_sparsity_ratio = 1 - all_layer_ratio[i]


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
@pytest.mark.parametrize("hyper_m,lamda", [(5.0, 0.08), (3.0, 0.2)])
def test_owl_ratios_match_the_papers_formula(sparsity, hyper_m, lamda):
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    norms = input_norms(model, [torch.randn(8, 16, generator=g) for _ in range(3)], progress=False)
    weights = {f"{n}.weight": m.weight.detach() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    imp = {n: wanda_importance(w, norms[n[:-7]]).double() for n, w in weights.items()}
    blocks = [[imp[f"blocks.{b}.0.weight"], imp[f"blocks.{b}.2.weight"]] for b in range(4)]
    want = _paper_owl(blocks, sparsity, hyper_m, lamda)
    options = check_options("owl", owl_m=hyper_m, owl_lambda=lamda)
    keys = Layers.from_inputs(imp)
    for fn in (owl.budget, owl.budget_reference):
        got = fn(keys, sparsity, options).sparsities
        assert len(got) == 8
        for i, s in enumerate(got):
            assert abs(s - want[i // 2]) < 1e-12, (i, s, want[i // 2])
    assert max(want) - min(want) > lamda  # the outliers spread the blocks
    # and the masks: Wanda's row rule with those sparsities (rounded here, truncated in the paper's code)
    masks = lk.prune_masks(weights, sparsity, "owl", importance=imp, granularity="row", owl_m=hyper_m,
                           owl_lambda=lamda)
    for i, (name, m) in enumerate(masks.items()):
        cols = m.shape[1]
        assert ((~m).sum(1) == round(want[i // 2] * cols)).all()
        k = imp[name]
        for r in range(m.shape[0]):
            assert k[r][~m[r]].max() <= k[r][m[r]].min()


def test_owl_blocks():
    keys = Layers.from_inputs({"model.layers.0.q.weight": torch.ones(2), "model.layers.0.k.weight": torch.ones(2),
                               "model.layers.11.q.weight": torch.ones(2), "head.weight": torch.ones(2)})
    assert owl.block_ids(keys) == ["0", "0", "11", ("layer", "head.weight")]
    assert owl.block_ids(keys, [1, 1, 2, 2]) == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="blocks"):
        owl.block_ids(keys, [1, 2])
    # equal ratios (or one block): every block gets the target
    assert allocation.owl_densities([0.3, 0.3], [10, 10], 0.6, 0.08) == [pytest.approx(0.4)] * 2
    # unequal sizes: the size-weighted mean density is the target
    d = allocation.owl_densities([0.1, 0.5, 0.2], [10, 30, 60], 0.5, 0.1)
    assert sum(x * n for x, n in zip(d, [10, 30, 60])) == pytest.approx(50)


def test_owl_with_a_block_of_empty_layers():
    """A block whose layers are all empty has no outliers (ratio 0) instead of dividing by its zero size."""
    w = {"0.a": torch.randn(8, 16), "0.b": torch.randn(16, 8), "1.a": torch.zeros(0, 16)}
    imp = {k: v.abs() for k, v in w.items()}
    for backend in ["reference"] + FAST:
        masks = lk.prune_masks(w, 0.5, "owl", importance=imp, backend=backend)
        assert masks["1.a"].shape == (0, 16)
