"""prune_ on real modules: iterative pruning through torch.nn.utils.prune, and direct zeroing."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import lamp_kernels as lk


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def _zeros(model):
    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


TOTAL = 8 * 9 + 16 * 8 * 9 + 256 * 32 + 320


@pytest.mark.parametrize("method", ["lamp", "global"])
def test_iterative_pruning_reaches_each_total_target(method):
    model = _cnn()
    previous = None
    for s in (0.2, 0.36, 0.488, 0.9):
        report = lk.prune_(model, s, method)
        assert report.pruned == round(s * TOTAL) == _zeros(model)
        masks = {n: b.clone() for n, b in model.named_buffers() if n.endswith("weight_mask")}
        if previous is not None:  # pruned weights stay pruned
            assert all(bool((masks[n] <= previous[n]).all()) for n in masks)
        previous = masks
    x = torch.randn(2, 1, 8, 8)
    out = model(x)
    for m in model.modules():
        if hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
    assert torch.equal(model(x), out) and _zeros(model) == round(0.9 * TOTAL)


def test_masks_equal_prune_masks_on_the_weights():
    model = _cnn()
    weights = {f"{n}.weight": m.weight.detach().clone() for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))}
    want = lk.prune_masks(weights, 0.7, "erk")
    lk.prune_(model, 0.7, "erk")
    got = {f"{n}.weight": m.weight_mask.bool() for n, m in model.named_modules() if hasattr(m, "weight_mask")}
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_reparametrize_false_zeroes_in_place_and_iterates():
    model = _cnn()
    lk.prune_(model, 0.5, reparametrize=False)
    assert _zeros(model) == round(0.5 * TOTAL) and not hasattr(model[0], "weight_orig")
    lk.prune_(model, 0.8, reparametrize=False)  # zeros from the first call are pruned first
    assert _zeros(model) == round(0.8 * TOTAL)


def test_include_exclude_and_report():
    model = _cnn()
    report = lk.prune_(model, 0.5, "uniform", exclude=r"^0\.")
    assert [r.name for r in report.layers] == ["2.weight", "5.weight", "7.weight"]
    assert not hasattr(model[0], "weight_mask")
    report = lk.prune_(_cnn(), 0.5, include=[r"^5\."])
    assert [r.name for r in report.layers] == ["5.weight"] and report.pruned == 4096
    assert "5.weight" in str(report)
    with pytest.raises(ValueError, match="no prunable"):
        lk.prune_(_cnn(), 0.5, include="nothing")


def test_uniform_plus_keeps_first_conv_dense_and_last_layer_at_20_percent():
    model = _cnn()
    report = lk.prune_(model, 0.95, "uniform_plus")
    dens = {r.name: r.density for r in report.layers}
    assert dens["0.weight"] == 1.0
    assert dens["7.weight"] == pytest.approx(0.2)
