"""Calibration hooks against a direct computation, and prune_(..., importance="wanda", calibration=...)."""

import pytest
import torch
from torch import nn

import lamp_kernels as lk
from lamp_kernels.calibration import input_norms, wanda_importance


class Tiny(nn.Module):
    """Embedding -> Linear -> GELU -> Linear, with the second Linear called twice (shared weights)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 12)
        self.up = nn.Linear(12, 20)
        self.down = nn.Linear(20, 12, bias=False)
        self.drop = nn.Dropout(0.5)

    def forward(self, ids, twice: bool = False):
        x = self.embed(ids)
        h = self.drop(torch.nn.functional.gelu(self.up(x)))
        y = self.down(h)
        if twice:
            y = y + self.down(h * 0.5)
        return y


def _batches():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50, (2, 7), generator=g), torch.randint(0, 50, (1, 5), generator=g)]


def test_hooks_equal_a_direct_computation():
    model = Tiny()
    model.train()  # calibration runs in eval mode (no dropout) and restores the flag
    norms = input_norms(model, _batches(), progress=False)
    assert model.training and model.drop.training
    with torch.no_grad():
        xs = torch.cat([model.embed(b).reshape(-1, 12) for b in _batches()]).double()
        hs = torch.cat([torch.nn.functional.gelu(model.up(model.embed(b))).reshape(-1, 20) for b in _batches()])
    assert set(norms) == {"up", "down"}
    assert norms["up"].dtype == torch.float32 and norms["up"].shape == (12,)
    torch.testing.assert_close(norms["up"].double(), xs.square().sum(0).sqrt(), rtol=1e-6, atol=0)
    torch.testing.assert_close(norms["down"].double(), hs.double().square().sum(0).sqrt(), rtol=1e-6, atol=0)
    assert not model.up._forward_pre_hooks and not model.down._forward_pre_hooks  # hooks removed


def test_every_call_of_a_shared_layer_counts_and_batch_forms():
    model = Tiny()
    once = input_norms(model, _batches(), progress=False)
    twice = input_norms(model, [{"ids": b, "twice": True} for b in _batches()], progress=False)
    # the second call sees h / 2: squares add up to (1 + 1/4) of one call's
    torch.testing.assert_close(twice["down"], once["down"] * 1.25**0.5, rtol=1e-6, atol=0)
    tupled = input_norms(model, [(b,) for b in _batches()], {"up": model.up}, progress=False)
    torch.testing.assert_close(tupled["up"], once["up"], rtol=0, atol=0)


def test_calibration_errors():
    model = Tiny()
    with pytest.raises(ValueError, match="no calibration batches"):
        input_norms(model, [], progress=False)
    with pytest.raises(ValueError, match="never ran"):
        input_norms(model, _batches(), {"up": model.up, "other": nn.Linear(3, 3)}, progress=False)
    with pytest.raises(ValueError, match="nn.Linear"):
        input_norms(model, _batches(), {"embed": model.embed}, progress=False)
    assert not model.up._forward_pre_hooks


def test_wanda_importance():
    w = torch.tensor([[1.0, -2.0], [-3.0, 0.5]], dtype=torch.bfloat16)
    got = wanda_importance(w, torch.tensor([2.0, 0.25]))
    assert got.dtype == torch.float32 and got.tolist() == [[2.0, 0.5], [6.0, 0.125]]
    with pytest.raises(ValueError, match="norms"):
        wanda_importance(w, torch.ones(3))


@pytest.mark.parametrize("reparametrize", [True, False])
def test_prune_with_wanda_equals_prune_masks_on_the_importance(reparametrize):
    model = Tiny()
    weights = {"up.weight": model.up.weight.detach().clone(), "down.weight": model.down.weight.detach().clone()}
    norms = input_norms(model, _batches(), progress=False)
    imp = {n: wanda_importance(w, norms[n[:-7]]) for n, w in weights.items()}
    for method, gran in [("lamp", "layer"), ("uniform", "row"), ("lamp", "row"), ("owl", "row")]:
        m = Tiny()
        report = lk.prune_(m, 0.6, method, importance="wanda", calibration=_batches(), granularity=gran,
                           exclude="embed", reparametrize=reparametrize, progress=False)
        want = lk.prune_masks(weights, 0.6, method, importance=imp, granularity=gran)
        for name, module in (("up.weight", m.up), ("down.weight", m.down)):
            assert torch.equal(module.weight != 0, want[name] & (weights[name] != 0)), (method, gran, name)
        assert report.pruned == sum(int((~x).sum()) for x in want.values())


def test_prune_importance_errors_leave_the_model_untouched():
    model = Tiny()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(ValueError, match="needs calibration"):
        lk.prune_(model, 0.5, importance="wanda")
    with pytest.raises(ValueError, match="importance must be"):
        lk.prune_(model, 0.5, importance="hessian")
    with pytest.raises(ValueError, match="magnitude pruning needs no data"):
        lk.prune_(model, 0.5, calibration=_batches())
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="Wanda importance is defined for Linear layers"):
        lk.prune_(conv, 0.5, importance="wanda", calibration=[torch.randn(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="importance shape"):
        lk.prune_(model, 0.5, importance={"up.weight": torch.ones(3), "down.weight": torch.ones(12, 20)})
    with pytest.raises(ValueError, match="granularity"):
        lk.prune_(model, 0.5, importance="wanda", calibration=_batches(), granularity="col")
    assert all(torch.equal(p, before[n]) for n, p in model.state_dict().items())
    assert not hasattr(model.up, "weight_mask")
