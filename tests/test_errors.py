"""Bad input: a clear error, and nothing modified."""

import math

import pytest
import torch
from torch import nn

import lamp_kernels as lk

# Backends that take CPU tensors (Triton only through its interpreter, when there is no GPU).
BACKENDS = [b for b in lk.available_backends() if b in ("reference", "cpu")
            or (b == "triton" and not torch.cuda.is_available())]
SCORES = [b for b in BACKENDS if b != "triton"]  # Triton computes masks only


def _layers():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(20, 10, generator=g), torch.randn(30, generator=g)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
def test_nonfinite_names_the_layer(backend, bad, dtype):
    layers = [w.to(dtype) for w in _layers()]
    layers[1][7] = bad
    calls = [lambda: lk.prune_masks(layers, 0.5, backend=backend),
             lambda: lk.layer_sparsities(layers, 0.5, "global", backend=backend)]
    if backend in SCORES:
        calls.append(lambda: lk.lamp_scores(layers, backend=backend))
    for call in calls:
        with pytest.raises(ValueError, match="layer 1"):
            call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_in_masked_out_weight_is_ignored(backend):
    layers = _layers()
    layers[0][0, 0] = float("nan")
    masks = [torch.ones_like(w, dtype=torch.bool) for w in layers]
    masks[0][0, 0] = False
    assert int((~lk.prune_masks(layers, 0.5, masks=masks, backend=backend)[0]).sum()) >= 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sparsity", [-0.1, 1.0001, math.nan, "0.5", None, True])
def test_bad_sparsity(backend, sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        lk.prune_masks(_layers(), sparsity, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_structure_errors(backend):
    layers = _layers()
    with pytest.raises(TypeError, match="layer 1"):
        lk.prune_masks([layers[0], torch.arange(5)], 0.5, backend=backend)
    with pytest.raises(ValueError, match="shape"):
        lk.prune_masks(layers, 0.5, masks=[torch.ones(20, 10, dtype=torch.bool), torch.ones(31, dtype=torch.bool)],
                       backend=backend)
    with pytest.raises(ValueError, match="bool"):
        lk.prune_masks(layers, 0.5, masks=[torch.ones(20, 10), torch.ones(30)], backend=backend)
    with pytest.raises(ValueError, match="method"):
        lk.prune_masks(layers, 0.5, "magnitude", backend=backend)
    with pytest.raises(ValueError, match="no layers"):
        lk.prune_masks([], 0.5, backend=backend)
    with pytest.raises(ValueError, match="no layers"):
        lk.lamp_scores({}, backend=backend)
    with pytest.raises(ValueError, match="keys"):
        lk.prune_masks({"a": layers[0]}, 0.5, masks={"b": torch.ones(20, 10, dtype=torch.bool)}, backend=backend)
    with pytest.raises(ValueError, match="dtype"):
        lk.lamp_scores(layers, dtype=torch.float16, backend=backend)


def test_unknown_and_unavailable_backends():
    with pytest.raises(ValueError, match="unknown backend"):
        lk.prune_masks(_layers(), 0.5, backend="fast")
    for name in ("cuda", "triton"):
        if name in BACKENDS:
            continue
        with pytest.raises((RuntimeError, ValueError), match="not available|needs|runs CUDA"):
            lk.prune_masks(_layers(), 0.5, backend=name)


def test_fp64_magnitudes_outside_float64_square_range():
    for v in (2.0**497, 2.0**-497):
        for backend in BACKENDS:
            with pytest.raises(ValueError, match="outside"):
                lk.prune_masks([torch.tensor([v, 0.0], dtype=torch.float64)], 0.5, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_not_modified(backend):
    layers = [w.to(torch.bfloat16) for w in _layers()]
    masks = [torch.rand(w.shape) > 0.3 for w in layers]
    before = [w.clone() for w in layers], [m.clone() for m in masks]
    for method in lk.METHODS:
        lk.prune_masks(layers, 0.6, method, masks=masks, backend=backend)
    if backend in SCORES:
        lk.lamp_scores(layers, masks, backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(layers, before[0]))
    assert all(torch.equal(a, b) for a, b in zip(masks, before[1]))


@pytest.mark.parametrize("reparametrize", [True, False])
def test_failed_prune_leaves_model_untouched(reparametrize):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="2.weight"):
        lk.prune_(model, 0.5, reparametrize=reparametrize)
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) or (v.isnan() == state[k].isnan()).all() for k, v in model.state_dict().items())
    assert not hasattr(model[0], "weight_orig")


def test_uniform_plus_impossible_sparsity_raises():
    layers = [torch.randn(4, 3, 3, 3), torch.randn(10, 36), torch.randn(2, 10)]
    with pytest.raises(ValueError, match="uniform_plus"):
        lk.prune_masks(layers, 1.0, "uniform_plus", backend="reference")


def test_fp64_extremes_just_inside_the_limits_agree():
    w = [torch.tensor([2.0**495, -(2.0**495), 1.0, 0.0] * 8, dtype=torch.float64),
         torch.tensor([2.0**-495, 3 * 2.0**-496, 0.0], dtype=torch.float64)]
    for backend in SCORES:
        s = lk.lamp_scores(w, backend=backend, dtype=torch.float64)
        assert all(bool(torch.isfinite(x).all()) for x in s)
    want = lk.prune_masks(w, 0.5, backend="reference")
    for backend in BACKENDS:
        assert all(torch.equal(a, b) for a, b in zip(lk.prune_masks(w, 0.5, backend=backend), want))
