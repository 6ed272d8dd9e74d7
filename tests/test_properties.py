"""Property tests: random layer sets, dtypes, masks and sparsities; the compiled backend equals the
reference and the contract's invariants hold."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lamp_kernels as lk

FAST = [b for b in lk.available_backends() if b != "reference"]
pytestmark = pytest.mark.skipif(not FAST, reason="no compiled backend built")

DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


@st.composite
def layer_sets(draw):
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    n_layers = draw(st.integers(1, 6))
    distinct = draw(st.sampled_from([3, 17, None]))  # few distinct values -> heavy ties
    layers, masks = [], []
    for _ in range(n_layers):
        n = draw(st.integers(1, 400))
        if distinct:
            w = torch.randint(-distinct, distinct + 1, (n,), generator=g).double() / 4
        else:
            w = torch.randn(n, generator=g, dtype=torch.float64) * 10 ** draw(st.integers(-4, 3))
        layers.append(w.to(dtype))
        masks.append(torch.rand(n, generator=g) > draw(st.sampled_from([0.0, 0.3, 0.9])))
    use_masks = draw(st.booleans())
    return layers, masks if use_masks else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_sets(), st.floats(0, 1), st.sampled_from(lk.METHODS))
def test_backend_equals_reference(data, sparsity, method):
    layers, masks = data
    try:
        want = lk.prune_masks(layers, sparsity, method, masks=masks, backend="reference")
    except ValueError:
        with pytest.raises(ValueError):
            lk.prune_masks(layers, sparsity, method, masks=masks, backend=FAST[0])
        return
    got = lk.prune_masks(layers, sparsity, method, masks=masks, backend=FAST[0])
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@settings(max_examples=60, deadline=None)
@given(layer_sets(), st.floats(0, 1), st.floats(0, 1), st.sampled_from(["lamp", "global"]))
def test_exact_count_nesting_and_masks_kept(data, s1, s2, method):
    layers, masks = data
    lo, hi = sorted((s1, s2))
    n = sum(w.numel() for w in layers)
    m_lo = lk.prune_masks(layers, lo, method, masks=masks, backend=FAST[0])
    m_hi = lk.prune_masks(layers, hi, method, masks=masks, backend=FAST[0])
    already = 0 if masks is None else sum(int((~m).sum()) for m in masks)
    for s, out in ((lo, m_lo), (hi, m_hi)):
        assert sum(int((~m).sum()) for m in out) == max(round(s * n), already)
        if masks is not None:
            assert all(bool((o <= m).all()) for o, m in zip(out, masks))  # masked stays masked
    assert all(bool((b <= a).all()) for a, b in zip(m_lo, m_hi))  # higher sparsity prunes a superset


@settings(max_examples=40, deadline=None)
@given(layer_sets())
def test_scores_equal_reference(data):
    layers, masks = data
    got = lk.lamp_scores(layers, masks, backend=FAST[0], dtype=torch.float64)
    want = lk.lamp_scores(layers, masks, backend="reference", dtype=torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
