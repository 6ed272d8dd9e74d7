"""Layerwise budgets of uniform, uniform+ and ERK."""

import pytest

from lamp_kernels import allocation

VGG_LIKE = [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (256, 128, 3, 3), (512, 256, 3, 3), (10, 512)]


def _size(s):
    n = 1
    for d in s:
        n *= d
    return n


@pytest.mark.parametrize("s", [0.0, 0.3, 0.9, 0.99])
def test_uniform(s):
    assert allocation.uniform_counts(VGG_LIKE, s) == [round(s * _size(x)) for x in VGG_LIKE]


def test_uniform_plus():
    counts = allocation.uniform_plus_counts(VGG_LIKE, 0.9)
    sizes = [_size(x) for x in VGG_LIKE]
    assert counts[0] == 0
    assert sizes[-1] - counts[-1] == round(0.2 * sizes[-1])  # the last layer hits its 20% floor
    fracs = [c / n for c, n in zip(counts[1:-1], sizes[1:-1])]
    assert max(fracs) - min(fracs) < 1e-3  # the middle layers share one rate
    assert abs(sum(counts) - round(0.9 * sum(sizes))) <= len(sizes)
    linear_first = [(100, 20), (50, 100), (10, 50)]
    assert allocation.uniform_plus_counts(linear_first, 0.5)[0] > 0  # only a conv first layer stays dense


def test_erk_survivors_proportional_to_dimension_sums():
    shapes = [(100, 100), (100, 50), (50, 10)]
    counts = allocation.erk_counts(shapes, 0.8)
    survive = [_size(s) - c for s, c in zip(shapes, counts)]
    total = sum(_size(s) for s in shapes)
    assert survive == [round(0.2 * total * sum(s) / 410) for s in shapes]


def test_erk_keeps_overflowing_layers_dense_and_reshares():
    shapes = [(4, 4), (1000, 1000), (10, 1000), (300, 1000)]
    counts = allocation.erk_counts(shapes, 0.5)
    sizes = [_size(s) for s in shapes]
    survive_total = sum(sizes) - round(0.5 * sum(sizes))
    assert counts[0] == 0 and counts[2] == 0  # their shares are far over their sizes: kept dense
    survive = [n - c for n, c in zip(sizes, counts)]
    budget = survive_total - sizes[0] - sizes[2]
    assert survive[1] == round(budget * 2000 / 3300) and survive[3] == round(budget * 1300 / 3300)


def test_erk_at_zero_and_full_sparsity():
    assert allocation.erk_counts(VGG_LIKE, 0.0) == [0] * len(VGG_LIKE)
    assert allocation.erk_counts(VGG_LIKE, 1.0) == [_size(s) for s in VGG_LIKE]
