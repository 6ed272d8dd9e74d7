"""The ops: torch.library checks, and the pure-torch twins against the compiled kernels."""

import pytest
import torch
from cases import DTYPES

import lamp_kernels as lk
from lamp_kernels import kernels_torch, ops, selection

pytestmark = pytest.mark.skipif(ops._C is None, reason="C++ extension not built")


def _layer(dtype, n=5000, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * torch.logspace(-3, 1, n)
    w[::11] = 0
    return w.to(dtype), torch.rand(n, generator=g) > 0.2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(dtype):
    w, m = _layer(dtype, 300)
    torch.library.opcheck(ops.bin_summary, (w, m))
    torch.library.opcheck(ops.bin_summary, (w, None))
    torch.library.opcheck(ops.apply_cut, (w, m, int(kernels_torch.magnitude_keys(w)[5]), 1))
    torch.library.opcheck(ops.lamp_scores, ([w, w[:10]], [m, None], False))
    torch.library.opcheck(ops.zero_cut_, (w.clone(), m, int(kernels_torch.magnitude_keys(w)[5]), 1))
    torch.library.opcheck(ops.gather_bin_keys, (w, m, 0, 1 << 20),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_twins_match_compiled(dtype):
    w, m = _layer(dtype)
    for mask in (None, m):
        c1, s1 = ops._C.bin_summary(w, mask)
        c2, s2 = kernels_torch.bin_summary_ref(w, mask)
        assert torch.equal(c1, c2) and torch.equal(s1, s2)
        keys = kernels_torch.magnitude_keys(w)
        shift = kernels_torch.DTYPE_INFO[dtype][2]
        lo, hi = int(keys[17] >> shift), int(keys[17] >> shift) + 3
        assert torch.equal(ops._C.gather_bin_keys(w, mask, lo, hi), kernels_torch.gather_bin_keys_ref(w, mask, lo, hi))
        for key, ties in [(int(keys[17]), 0), (int(keys[17]), 1), (0, 3), (-1, 0), (2**63 - 1, 0)]:
            assert torch.equal(ops._C.apply_cut(w, mask, key, ties), kernels_torch.apply_cut_ref(w, mask, key, ties))
            a, b = w.clone(), w.clone()
            ops.zero_cut_(a, mask, key, ties)
            kernels_torch.zero_cut_ref(b, mask, key, ties)
            assert torch.equal(a, b)


def test_pipeline_on_torch_twins(monkeypatch):
    """The path a non-CPU device takes today (torch kernels + compiled solver) gives the same masks."""
    monkeypatch.setattr(selection.ops, "bin_summary", kernels_torch.bin_summary_ref)
    monkeypatch.setattr(selection.ops, "gather_bin_keys", kernels_torch.gather_bin_keys_ref)
    monkeypatch.setattr(selection.ops, "apply_cut", kernels_torch.apply_cut_ref)
    g = torch.Generator().manual_seed(3)
    layers = [torch.randn(3000, generator=g), torch.randn(40, 40, generator=g).bfloat16()]
    for method in lk.METHODS:
        got = lk.prune_masks(layers, 0.6, method)
        want = lk.prune_masks(layers, 0.6, method, backend="reference")
        assert all(torch.equal(a, b) for a, b in zip(got, want)), method


def test_parallel_chunks_agree_with_serial():
    """Large enough for several threads: chunked histograms and tie ranks must equal the twins'."""
    w = torch.randint(-4, 5, (1 << 19,)).bfloat16()
    assert all(torch.equal(a, b) for a, b in zip(ops._C.bin_summary(w, None), kernels_torch.bin_summary_ref(w, None)))
    key = int(kernels_torch.magnitude_keys(torch.tensor([2.0]).bfloat16())[0])
    assert torch.equal(ops._C.apply_cut(w, None, key, 30000), kernels_torch.apply_cut_ref(w, None, key, 30000))
