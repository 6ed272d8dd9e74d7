"""The reference against first principles (exact rationals) and against the official algorithm."""

from fractions import Fraction

import pytest
import torch

import lamp_kernels as lk
from lamp_kernels import reference
from lamp_kernels.layers import Layers
from lamp_kernels.official import official_lamp_masks, official_layer_scores


def _fraction_scores(w):
    """Scores from the definition, with Fraction arithmetic and the same two roundings."""
    vals = w.reshape(-1).double().abs().tolist()
    order = sorted(range(len(vals)), key=lambda i: (vals[i], i))
    out = [0.0] * len(vals)
    for pos, i in enumerate(order):
        s = sum(Fraction(vals[j]) ** 2 for j in order[pos:])
        out[i] = vals[i] * vals[i] / float(s) if vals[i] else 0.0
    return torch.tensor(out, dtype=torch.float64).reshape(w.shape)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_scores_match_exact_rationals(dtype):
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(60, generator=g) * torch.logspace(-8, 8, 60, dtype=torch.float64).float()).to(dtype)
    w[::7] = 0
    assert torch.equal(reference.lamp_scores(w), _fraction_scores(w))


def test_suffix_sums_are_exact_where_float64_accumulation_is_not():
    # Squares of 2^-27 are 2^-54, under half an ulp of 1: a float64 running sum from the top never moves
    # off 1.0, but 4096 of them add 2^-42, which the exact sum keeps.
    vals = [2.0**-27] * 4096 + [1.0]
    running = 0.0
    for v in reversed(vals):
        running += v * v
    assert running == 1.0
    assert reference.exact_suffix_sums(vals)[0] == 1.0 + 2.0**-42


def test_scores_are_monotone_along_the_order():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(500, generator=g).to(torch.bfloat16)
    order, scores = reference.layer_scores_in_order(w, None)
    assert all(a <= b for a, b in zip(scores, scores[1:]))


@pytest.mark.parametrize("sparsity", [0.3, 0.7, 0.9, 0.98])
def test_matches_official_algorithm_without_ties(sparsity):
    """Tie-free float64 weights in small layers: the official algorithm's masks are the contract's."""
    g = torch.Generator().manual_seed(2)
    layers = [torch.randn(64, 32, generator=g, dtype=torch.float64),
              torch.randn(16, 8, 3, 3, generator=g, dtype=torch.float64) * 0.3,
              torch.randn(10, 64, generator=g, dtype=torch.float64) * 2]
    want = official_lamp_masks(layers, sparsity)
    got = reference.prune_masks(Layers.from_inputs(layers), sparsity, "lamp")
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    for w in layers:
        torch.testing.assert_close(reference.lamp_scores(w), official_layer_scores(w), rtol=1e-12, atol=0)


def test_official_keeps_extra_ties_and_the_contract_does_not():
    w = [torch.ones(10), torch.ones(10)]  # identical layers: every score ties with its twin
    official = official_lamp_masks(w, 0.25)
    ours = lk.prune_masks(w, 0.25, backend="reference")
    assert sum(int((~m).sum()) for m in ours) == 5
    assert sum(int((~m).sum()) for m in official) == 4  # the tie at the threshold survives in both layers
    # ours: ties broken by (layer, position): layer 0 first, its lowest flat indices first
    assert torch.equal(ours[0], torch.tensor([False] * 3 + [True] * 7))
    assert torch.equal(ours[1], torch.tensor([False] * 2 + [True] * 8))


def test_global_magnitude_order_and_exact_count():
    w = [torch.tensor([3.0, -1.0, 2.0]), torch.tensor([1.0, 0.5])]
    m = lk.prune_masks(w, 0.4, "global", backend="reference")  # k = 2: 0.5, then the first 1.0 (layer 0)
    assert torch.equal(m[0], torch.tensor([True, False, True]))
    assert torch.equal(m[1], torch.tensor([True, False]))
