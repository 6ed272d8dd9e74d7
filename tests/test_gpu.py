"""GPU backends on CUDA tensors against the reference (skipped without a GPU): 'cuda' scores to the bit and
masks exactly, 'triton' masks exactly, on the adversarial cases of tests/cases.py."""

import pytest
import torch

import lamp_kernels as lk
from tests.cases import CASES, DTYPES, random_masks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
GPU = [b for b in ("cuda", "triton") if b in lk.available_backends()]
SPARSITIES = (0.0, 0.3, 0.5, 0.9, 1.0)


def _cuda(ts):
    return [None if t is None else t.cuda() for t in ts]


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "masked"])
def test_gpu_masks_match_reference(backend, dtype, case, masked):
    layers = CASES[case](dtype)
    masks = random_masks(layers) if masked else None
    for method in lk.METHODS:
        for s in SPARSITIES:
            try:
                want = lk.prune_masks(layers, s, method, masks=masks, backend="reference")
            except ValueError:
                continue
            got = lk.prune_masks(_cuda(layers), s, method, masks=None if masks is None else _cuda(masks),
                                 backend=backend)
            for g, w in zip(got, want):
                assert torch.equal(g.cpu(), w), f"{backend} {method} s={s}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gpu_scores_match_reference(dtype, case):
    if "cuda" not in GPU:
        pytest.skip("CUDA extension not available")
    layers = CASES[case](dtype)
    for masks in (None, random_masks(layers)):
        want = lk.lamp_scores(layers, masks, backend="reference", dtype=torch.float64)
        got = lk.lamp_scores(_cuda(layers), None if masks is None else _cuda(masks), backend="cuda",
                             dtype=torch.float64)
        for g, w in zip(got, want):
            assert torch.equal(g.cpu(), w), f"max |diff| {(g.cpu() - w).abs().max().item()}"


def test_gpu_many_tiles_and_segments():
    """Layers over several scan tiles and a batch of many small segments in one sort."""
    g = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 500, (60,), generator=g).tolist()
    layers = [torch.randn(70_000, generator=g), *[torch.randn(n, generator=g) for n in sizes]]
    want = lk.lamp_scores(layers, backend="reference", dtype=torch.float64)
    got = lk.lamp_scores(_cuda(layers), backend="cuda", dtype=torch.float64) if "cuda" in GPU else want
    assert all(torch.equal(a.cpu(), b) for a, b in zip(got, want))
    for backend in GPU:
        got_masks = lk.prune_masks(_cuda(layers), 0.77, backend=backend)
        want_masks = lk.prune_masks(layers, 0.77, backend="reference")
        assert all(torch.equal(a.cpu(), b) for a, b in zip(got_masks, want_masks))
