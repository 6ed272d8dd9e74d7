"""Every fast backend against the reference: masks and counts exactly, scores to the bit (float64) or to
float32 rounding of the same value."""

import pytest
import torch
from cases import CASES, DTYPES, random_masks

import lamp_kernels as lk

# Backends that take these tests' CPU tensors: the C++ kernels, and the Triton kernels when they run through
# the interpreter (no GPU). GPU backends on CUDA tensors: test_gpu.py.
FAST = [b for b in lk.available_backends() if b == "cpu" or (b == "triton" and not torch.cuda.is_available())]
SCORES = [b for b in FAST if b != "triton"]  # Triton computes masks only
pytestmark = pytest.mark.skipif(not FAST, reason="no compiled backend built")
SPARSITIES = [0.0, 0.2, 0.5, 0.9, 0.99, 1.0]


def _assert_same_masks(got, want, label):
    for i, (g, w) in enumerate(zip(got, want)):
        if not torch.equal(g, w):
            diff = int((g != w).sum())
            pytest.fail(f"{label}: layer {i} differs in {diff} of {w.numel()} entries "
                        f"(pruned {int((~g).sum())} vs reference {int((~w).sum())})")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "masked"])
def test_masks_match_reference(backend, dtype, case, masked):
    layers = CASES[case](dtype)
    masks = random_masks(layers) if masked else None
    for method in lk.METHODS:
        for s in SPARSITIES:
            try:
                want = lk.prune_masks(layers, s, method, masks=masks, backend="reference")
            except ValueError:
                with pytest.raises(ValueError):
                    lk.prune_masks(layers, s, method, masks=masks, backend=backend)
                continue
            got = lk.prune_masks(layers, s, method, masks=masks, backend=backend)
            _assert_same_masks(got, want, f"{method} s={s}")
            sp = lk.layer_sparsities(layers, s, method, masks=masks, backend=backend)
            assert sp == [float((~m).sum()) / m.numel() for m in want]


@pytest.mark.parametrize("backend", SCORES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_match_reference(backend, dtype, case):
    layers = CASES[case](dtype)
    masks = random_masks(layers, seed=7)
    for m in (None, masks):
        want = lk.lamp_scores(layers, m, backend="reference", dtype=torch.float64)
        got64 = lk.lamp_scores(layers, m, backend=backend, dtype=torch.float64)
        got32 = lk.lamp_scores(layers, m, backend=backend)
        for g64, g32, w in zip(got64, got32, want):
            worst = (g64 - w).abs().max().item()
            assert torch.equal(g64, w), f"float64 scores differ, worst {worst:g}"
            assert g32.dtype == torch.float32 and torch.equal(g32, w.float())


@pytest.mark.parametrize("backend", FAST)
def test_dict_inputs_keep_keys_and_order(backend):
    g = torch.Generator().manual_seed(5)
    weights = {"z.weight": torch.randn(8, 4, generator=g), "a.weight": torch.randn(16, generator=g)}
    masks = lk.prune_masks(weights, 0.5, backend=backend)
    assert list(masks) == list(weights)
    assert sum(int((~m).sum()) for m in masks.values()) == 24
    if backend in SCORES:
        scores = lk.lamp_scores(weights, backend=backend)
        assert list(scores) == list(weights) and scores["a.weight"].shape == (16,)
    assert isinstance(lk.layer_sparsities(weights, 0.5, backend=backend), dict)


@pytest.mark.parametrize("backend", FAST)
def test_single_tensor(backend):
    w = torch.randn(10, 10, generator=torch.Generator().manual_seed(6))
    m = lk.prune_masks(w, 0.3, backend=backend)
    assert isinstance(m, torch.Tensor) and int((~m).sum()) == 30
    assert torch.equal(m, lk.prune_masks(w, 0.3, backend="reference"))


@pytest.mark.parametrize("backend", FAST)
def test_masks_already_beyond_target_come_back_unchanged(backend):
    g = torch.Generator().manual_seed(8)
    layers = [torch.randn(50, generator=g), torch.randn(30, generator=g)]
    masks = [torch.rand(50, generator=g) > 0.6, torch.rand(30, generator=g) > 0.6]
    for method in ("lamp", "global"):
        out = lk.prune_masks(layers, 0.1, method, masks=masks, backend=backend)
        assert all(torch.equal(o, m) for o, m in zip(out, masks))


@pytest.mark.parametrize("backend", FAST)
def test_large_fp32_layers_exercise_refinement(backend):
    """fp32 layers big enough that many distinct values share a bin, so the candidate gather matters."""
    g = torch.Generator().manual_seed(9)
    layers = [torch.randn(40000, generator=g), torch.randn(300, 200, generator=g) * 0.01]
    for s in (0.37, 0.8):
        for method in ("lamp", "global", "uniform", "erk"):
            want = lk.prune_masks(layers, s, method, backend="reference")
            _assert_same_masks(lk.prune_masks(layers, s, method, backend=backend), want, f"{method} {s}")
