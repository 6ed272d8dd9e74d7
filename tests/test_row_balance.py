"""row_balance: the per-row rule's layer totals pruned in the order of the balanced keys key * t_r^-beta.
Every backend equals the reference (masks exactly), on ties, zeros, masked weights, column-scaled keys, N:M and
OWL; the reference equals a direct implementation of the definition; bad values raise."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import lamp_kernels as lk
from lamp_kernels import plan

BACKENDS = [b for b in lk.available_backends() if b == "cpu"]  # row granularity: cpu (cuda: test_gpu_importance)
BUDGETS = ["uniform", "uniform_plus", "erk", "owl"]


@pytest.fixture(params=["c++", "torch"])
def path(request, monkeypatch):
    """The C++ kernels (balanced_rows.cpp) on CPU tensors, or the torch ops that CUDA tensors take."""
    if request.param == "torch":
        monkeypatch.setattr(plan, "_balanced_in_cpp", lambda ops_set, w: False)
    return request.param


def _layers(seed: int, dtype=torch.float32, ties: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def make(*shape):
        if ties:
            return ((torch.randint(-3, 4, shape, generator=g)) * 0.25).to(dtype)
        # rows on different scales, so that balancing has something to move
        return (torch.randn(*shape, generator=g) * torch.rand(shape[0], *[1] * (len(shape) - 1), generator=g)
                * 4).to(dtype)

    return {"blocks.0.q": make(7, 12), "blocks.0.mlp": make(5, 9), "blocks.1.conv": make(4, 3, 2, 2),
            "blocks.1.bias": make(6), "blocks.2.tiny": make(1, 3)}


def _masks(weights: dict, seed: int, p: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(w.shape, generator=g) > p for n, w in weights.items()}
    masks["blocks.0.q"][2] = False  # a whole row masked out
    return masks


def _both(weights, sparsity, method, beta, backend, **kw):
    want = lk.prune_masks(weights, sparsity, method, granularity="row", row_balance=beta, backend="reference", **kw)
    got = lk.prune_masks(weights, sparsity, method, granularity="row", row_balance=beta, backend=backend, **kw)
    return want, got


def _direct(key: torch.Tensor, row_rule_keep: torch.Tensor, mask, beta: float) -> torch.Tensor:
    """The definition written once more, independently of reference.py: (rows, cols) float64 keys."""
    rows, cols = key.shape
    alive = torch.ones_like(row_rule_keep) if mask is None else mask
    positive = [v for v, a in zip(key.flatten().tolist(), alive.flatten().tolist()) if a and v > 0]
    items = []
    for r in range(rows):
        row_alive = [(key[r, c].item(), c) for c in range(cols) if alive[r, c]]
        if not row_alive:
            continue
        pruned = [key[r, c].item() for c in range(cols) if alive[r, c] and not row_rule_keep[r, c]]
        cut = max(pruned) if pruned else min(v for v, _ in row_alive)
        if positive:
            cut = max(cut, min(positive))
        f = max(cut, 2.0 ** -496) ** -beta if cut > 0 else 1.0
        items += [(v * f, r * cols + c) for v, c in row_alive]
    take = int((alive & ~row_rule_keep).sum())
    keep = alive.flatten().clone()
    for _, u in sorted(items)[:take]:
        keep[u] = False
    return keep.reshape(rows, cols)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", BUDGETS)
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.8, 0.999])
@pytest.mark.parametrize("dtype,ties", [(torch.float32, False), (torch.bfloat16, True), (torch.float16, False),
                                        (torch.float64, False)], ids=["fp32", "bf16-ties", "fp16", "fp64"])
def test_backends_equal_the_reference(backend, method, beta, dtype, ties, path):
    weights = _layers(1, dtype, ties)
    for s in (0.0, 0.3, 0.5, 0.9) + ((1.0,) if method != "uniform_plus" else ()):  # uniform+ keeps 20% of one
        want, got = _both(weights, s, method, beta, backend)
        assert all(torch.equal(want[n], got[n]) for n in weights), (s, method)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beta", [0.0, 0.6])
def test_masks_importance_scaled_and_nm_equal_the_reference(backend, beta, path):
    weights = _layers(2)
    masks = _masks(weights, 3)
    g = torch.Generator().manual_seed(4)
    imp = {n: torch.rand(w.shape, generator=g) * torch.rand(w.shape[0], *[1] * (w.dim() - 1), generator=g)
           for n, w in weights.items()}
    imp["blocks.0.mlp"][1] = 0  # a row of zero importance: its cut is 0, scaled by the smallest positive key
    scaled = {n: lk.ColumnScaled(torch.rand(w.shape[-1], generator=g) * 3) for n, w in weights.items()}
    for kw in (dict(masks=masks), dict(importance=imp), dict(importance=imp, masks=masks),
               dict(importance=scaled), dict(importance=scaled, masks=masks)):
        for method in ("uniform", "owl"):
            want, got = _both(weights, 0.6, method, beta, backend, **kw)
            assert all(torch.equal(want[n], got[n]) for n in weights), (kw.keys(), method)
            for n, m in masks.items():
                if "masks" in kw:
                    assert not got[n][~m].any()  # masked weights stay out
    nm_weights = {"a": torch.randn(6, 16, generator=g) * torch.rand(6, 1, generator=g), "b": torch.randn(3, 8)}
    want, got = _both(nm_weights, 0.6, "uniform", beta, backend, nm=(2, 4))
    assert all(torch.equal(want[n], got[n]) for n in nm_weights)


def test_the_reference_equals_the_definition():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(9, 14, generator=g) * torch.rand(9, 1, generator=g) * 10
    w[3] = 0
    w[4, :5] = 0
    mask = torch.rand(9, 14, generator=g) > 0.2
    mask[6] = False
    for beta in (0.0, 0.25, 0.7):
        for m in (None, mask):
            rule = lk.prune_masks({"w": w}, 0.5, "uniform", masks=None if m is None else {"w": m}, granularity="row",
                                  backend="reference")["w"]
            got = lk.prune_masks({"w": w}, 0.5, "uniform", masks=None if m is None else {"w": m}, granularity="row",
                                 row_balance=beta, backend="reference")["w"]
            assert torch.equal(got, _direct(w.abs().double(), rule, m, beta)), (beta, m is None)


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
@pytest.mark.parametrize("beta", [0.5, 0.99])
def test_subnormal_float64_cuts_are_floored_not_overflowed(backend, beta, path):
    # a cut of 5e-324 (the smallest subnormal) would give a factor beyond float64's range at beta > 0.953
    w = torch.tensor([[0.0, 0.0, 5e-324, 1.0], [1.0, 2.0, 3.0, 4.0], [1e-320, 2e-320, 1.0, 1.0]], dtype=torch.float64)
    got = lk.prune_masks({"w": w}, 0.5, "uniform", granularity="row", row_balance=beta, backend=backend)["w"]
    rule = lk.prune_masks({"w": w}, 0.5, "uniform", granularity="row", backend="reference")["w"]
    assert torch.equal(got, _direct(w.abs(), rule, None, beta))
    assert int((~got).sum()) == 6


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
def test_balance_moves_weights_between_rows_not_layers(backend):
    weights = _layers(6)
    rule = lk.prune_masks(weights, 0.5, "owl", granularity="row", backend=backend)
    low = lk.prune_masks(weights, 0.5, "owl", granularity="row", row_balance=0.0, backend=backend)
    for n in weights:
        assert int((~low[n]).sum()) == int((~rule[n]).sum())
    assert any(not torch.equal(low[n], rule[n]) for n in weights)
    assert lk.layer_sparsities(weights, 0.5, "owl", granularity="row", row_balance=0.3, backend=backend) == \
        lk.layer_sparsities(weights, 0.5, "owl", granularity="row", backend=backend)


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
def test_beta_zero_is_one_threshold_per_layer_and_high_rows_keep_more(backend, path):
    # row 0's keys are all 100 times row 1's: with one threshold (beta = 0) row 1 goes first; the row rule
    # prunes half of each
    w = torch.cat([torch.arange(1.0, 9.0)[None] * 100, torch.arange(1.0, 9.0)[None]])
    got = lk.prune_masks({"w": w}, 0.5, "uniform", granularity="row", row_balance=0.0, backend=backend)["w"]
    assert got.tolist() == [[True] * 8, [False] * 8]
    # row 0 four times row 1, beta = 0.5: the cuts are 16 and 4, so the balanced keys are 4c / 4 = c and c / 2
    # (c = 1..8). The 8 smallest: c / 2 < 3 and c < 3 (7 of them), then at 3.0 a tie between row 0's key 12
    # and row 1's key 6, broken by the flat index: row 0's goes
    w = torch.cat([torch.arange(1.0, 9.0)[None] * 4, torch.arange(1.0, 9.0)[None]])
    half = lk.prune_masks({"w": w}, 0.5, "uniform", granularity="row", row_balance=0.5, backend=backend)["w"]
    assert half.tolist() == [[False] * 3 + [True] * 5, [False] * 5 + [True] * 3]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), beta=st.floats(0, 0.99), s=st.floats(0, 1),
       rows=st.integers(1, 6), cols=st.integers(1, 9), levels=st.integers(1, 5))
def test_property_fast_path_equals_the_reference(seed, beta, s, rows, cols, levels):
    g = torch.Generator().manual_seed(seed)
    w = {"a": torch.randint(0, levels, (rows, cols), generator=g).float() * torch.rand(rows, 1, generator=g),
         "b": torch.randint(0, levels, (cols, rows + 1), generator=g).to(torch.bfloat16)}
    masks = {n: torch.rand(t.shape, generator=g) > 0.25 for n, t in w.items()}
    for backend in BACKENDS:
        for m in (None, masks):
            want, got = _both(w, s, "uniform", beta, backend, masks=m)
            assert all(torch.equal(want[n], got[n]) for n in w)


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="uniform", row_balance=0.5), "granularity='row'"),
    (dict(method="lamp", granularity="row", row_balance=0.5), "budget method"),
    (dict(method="global", granularity="row", row_balance=0.0), "budget method"),
    (dict(method="uniform", granularity="row", row_balance=1.5), "row_balance must be in"),
    (dict(method="uniform", granularity="row", row_balance=-0.1), "row_balance must be in"),
    (dict(method="uniform", granularity="row", row_balance=math.nan), "row_balance must be a number"),
    (dict(method="uniform", granularity="row", row_balance=True), "row_balance must be a number"),
    (dict(method="uniform", granularity="row", row_balance="0.5"), "row_balance must be a number"),
])
def test_bad_row_balance_raises_and_changes_nothing(kwargs, message):
    weights = _layers(7)
    before = {n: w.clone() for n, w in weights.items()}
    method = kwargs.pop("method")
    with pytest.raises(ValueError, match=message):
        lk.prune_masks(weights, 0.5, method, **kwargs)
    with pytest.raises(ValueError, match=message):
        lk.layer_sparsities(weights, 0.5, method, **kwargs)
    assert all(torch.equal(before[n], weights[n]) for n in weights)


def test_prune_passes_row_balance_on():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(12, 1) * 5)
    weights = {"0.weight": model[0].weight.detach().clone(), "2.weight": model[2].weight.detach().clone()}
    want = lk.prune_masks(weights, 0.5, "uniform", granularity="row", row_balance=0.2)
    lk.prune_(model, 0.5, "uniform", granularity="row", row_balance=0.2, progress=False)
    assert torch.equal(model[0].weight_mask.bool(), want["0.weight"])
    assert torch.equal(model[2].weight_mask.bool(), want["2.weight"])
    with pytest.raises(ValueError, match="granularity='row'"):
        lk.prune_(model, 0.6, "uniform", row_balance=0.2, progress=False)


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_large_layers_cpp_equals_the_torch_path(beta, monkeypatch):
    """Layers large enough for the C++ radix select's every branch: more than 2^16 candidates left after the
    first 16 bits (fp32), and a heavy tie at the cut (bf16 with 4 values, beta = 0: all 64 bits fixed with more
    than 2^16 equal candidates, ranked by flat index alone); the torch path (what CUDA tensors take) is the
    comparison, the reference being too slow at this size. Several thread counts: chunks must not matter."""
    g = torch.Generator().manual_seed(9)
    weights = {"fp32": torch.randn(1024, 768, generator=g) * torch.rand(1024, 1, generator=g),
               "ties": (torch.randint(1, 5, (768, 1024), generator=g) * 0.5).to(torch.bfloat16)}
    masks = {n: torch.rand(w.shape, generator=g) > 0.1 for n, w in weights.items()}
    scaled = {n: lk.ColumnScaled(torch.rand(w.shape[-1], generator=g) + 0.5) for n, w in weights.items()}
    runs = []
    for kw in (dict(), dict(masks=masks), dict(importance=scaled)):
        runs.append(lk.prune_masks(weights, 0.55, "uniform", granularity="row", row_balance=beta, **kw))
    with monkeypatch.context() as m:
        m.setattr(plan, "_balanced_in_cpp", lambda ops_set, w: False)
        for got, kw in zip(runs, (dict(), dict(masks=masks), dict(importance=scaled))):
            want = lk.prune_masks(weights, 0.55, "uniform", granularity="row", row_balance=beta, **kw)
            assert all(torch.equal(want[n], got[n]) for n in weights), kw.keys()
    threads = torch.get_num_threads()
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            again = lk.prune_masks(weights, 0.55, "uniform", granularity="row", row_balance=beta, masks=masks)
            assert all(torch.equal(again[n], runs[1][n]) for n in weights), t
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", ["reference"] + BACKENDS)
def test_negative_zero_scale_ranks_as_zero(backend, path):
    # fl32(|w| * -0.0) is -0.0: a key of 0, pruned first, whatever the sign bit says
    w = {"w": torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]), "v": torch.arange(1.0, 9.0)}
    imp = {"w": lk.ColumnScaled(torch.tensor([-0.0, 1.0, 1.0, 1.0])),
           "v": lk.ColumnScaled(torch.tensor([1.0, -0.0] * 4))}
    for beta in (0.0, 0.5):
        got = lk.prune_masks(w, 0.5, "uniform", granularity="row", row_balance=beta, importance=imp, backend=backend)
        assert got["w"].tolist() == [[False, False, False, True], [False, True, True, True]]
        assert got["v"].tolist() == [True, False] * 4
