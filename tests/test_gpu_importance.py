"""Importance, rows, density bounds, N:M and OWL on CUDA tensors against the reference (small cases) and the
CPU backend (which equals the reference bit for bit in test_rows.py / test_importance.py). Skipped without a
GPU; run by `make gpu-check`.

    backend=None   importance at layer granularity: the Triton kernels on the importance keys; rows and bounds:
                   the row ops' CUDA kernels (cuda_rows.py: the CUDA library, rows as sort segments)
    "triton"       the Triton kernels directly (layer granularity; rows and bounds raise)
    "cuda"         the CUDA library's sort path on the importance keys; rows and bounds as for None
"""

import pytest
import torch

import lamp_kernels as lk
from tests.cases import CASES, DTYPES, random_masks
from tests.test_importance import importance_for

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


def _cuda(ts):
    return [None if t is None else t.cuda() for t in ts]


def _same(got, want, label=""):
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g.cpu(), w), f"{label} layer {i}: {int((g.cpu() != w).sum())} of {w.numel()} differ"


def _layers(case, dtype):
    g = torch.Generator().manual_seed(11)
    extra = [torch.randn(12, 20, generator=g), torch.randn(300, 64, generator=g)]
    return [w.to(dtype) for w in CASES[case](dtype)] + [w.to(dtype) for w in extra]


@pytest.mark.parametrize("backend", [None, "triton", "cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_importance_masks_on_gpu(backend, dtype, case):
    layers = _layers(case, torch.float32)
    keys = importance_for(layers, dtype)
    masks = random_masks(layers)
    for method in lk.ALL_METHODS:
        for s in (0.0, 0.3, 0.7, 1.0):
            want = lk.prune_masks(layers, s, method, masks=masks, importance=keys, backend="cpu")
            got = lk.prune_masks(_cuda(layers), s, method, masks=_cuda(masks), importance=_cuda(keys),
                                 backend=backend)
            _same(got, want, f"{backend} {method} {s}")


@pytest.mark.parametrize("backend", [None, "cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_and_bounds_on_gpu(backend, dtype, case):
    layers = _layers(case, dtype)
    keys = importance_for(layers, dtype)
    masks = random_masks(layers)
    for method in ("lamp", "global", "uniform", "owl"):
        for gran in ("layer", "row"):
            for lo, hi in ((None, None), (0.25, 0.75)) if method in ("lamp", "global") else ((None, None),):
                for s in (0.2, 0.55, 0.9):
                    kw = dict(granularity=gran, min_density=lo, max_density=hi)
                    want = lk.prune_masks(layers, s, method, masks=masks, importance=keys, backend="cpu", **kw)
                    got = lk.prune_masks(_cuda(layers), s, method, masks=_cuda(masks), importance=_cuda(keys),
                                         backend=backend, **kw)
                    _same(got, want, f"{backend} {method} {gran} {s} ({lo}, {hi})")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_scores_and_order_values_on_gpu(dtype):
    from lamp_kernels import ops

    layers = _layers("heavy_ties", dtype)
    masks = random_masks(layers, seed=3)
    want = lk.lamp_scores(layers, masks, granularity="row", dtype=torch.float64, backend="cpu")
    _same(lk.lamp_scores(_cuda(layers), _cuda(masks), granularity="row", dtype=torch.float64), want, "scores")
    rows = [w.shape[0] if w.dim() >= 2 else 1 for w in layers]
    for lamp in (True, False):
        _same(ops.row_order_values(_cuda(layers), _cuda(masks), rows, lamp),
              ops.row_order_values(layers, masks, rows, lamp), f"order values lamp={lamp}")


def test_nm_and_a_large_layer_on_gpu():
    g = torch.Generator().manual_seed(4)
    w = [torch.randn(2048, 1024, generator=g).to(torch.bfloat16), torch.randn(512, 2048, generator=g)]
    imp = [x.abs().float() * torch.rand(x.shape[1], generator=g) for x in w]
    for kw in (dict(nm=(2, 4)), dict(granularity="row"), dict(method="uniform", granularity="row"),
               dict(min_density=0.4, max_density=0.6)):
        want = lk.prune_masks(w, 0.6, importance=imp, backend="cpu", **kw)
        _same(lk.prune_masks(_cuda(w), 0.6, importance=_cuda(imp), **kw), want, str(kw))


@pytest.mark.parametrize("backend", [None, "triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_column_scaled_on_gpu(backend, dtype):
    """ColumnScaled on CUDA tensors (the scaled ops' default makes the keys on the device): the same masks as
    the CPU kernels, which compute the keys as they read the weights (test_column_scaled.py)."""
    from tests.test_column_scaled import edge_layers, tie_scales

    layers = edge_layers(dtype)
    scales = tie_scales(layers, seed=2)
    masks = random_masks(layers, seed=3)
    for method in ("lamp", "global", "uniform"):
        want = lk.prune_masks(layers, 0.6, method, masks=masks, importance=[lk.ColumnScaled(s) for s in scales])
        got = lk.prune_masks(_cuda(layers), 0.6, method, masks=_cuda(masks),
                             importance=[lk.ColumnScaled(s.cuda()) for s in scales], backend=backend)
        _same(got, want, f"{backend} {method}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["heavy_ties", "zeros_and_tiny"])
def test_row_balance_on_gpu(dtype, case):
    """row_balance on CUDA tensors (torch reductions on the device, then the row ops' cut of each layer as one
    unit): the CPU backend's masks, which equal the reference's (test_row_balance.py)."""
    layers = _layers(case, dtype)
    keys = importance_for(layers, dtype)
    masks = random_masks(layers)
    for method in ("uniform", "owl"):
        for beta in (0.0, 0.8):
            for imp in (None, keys):
                kw = dict(granularity="row", row_balance=beta)
                want = lk.prune_masks(layers, 0.55, method, masks=masks, importance=imp, backend="cpu", **kw)
                got = lk.prune_masks(_cuda(layers), 0.55, method, masks=_cuda(masks),
                                     importance=None if imp is None else _cuda(imp), **kw)
                _same(got, want, f"{method} {beta} {imp is None}")


@pytest.mark.parametrize("flags", [["--method", "uniform", "--granularity", "row", "--row-balance", "0.7"],
                                   ["--method", "owl", "--granularity", "row", "--nm", "2:4", "--owl-m", "1.5"],
                                   ["--method", "erk", "--nm", "2:4"]], ids=["balanced", "owl-nm", "erk-nm"])
def test_checkpoint_local_selections_on_gpu(tmp_path, flags):
    """lamp-prune's layer-local selections with --device cuda write the bytes of the CPU run."""
    from lamp_kernels.cli import main
    from tests.test_checkpoint import make_checkpoint, tree_digest

    src = make_checkpoint(tmp_path / "src")
    for device in ("cpu", "cuda"):
        assert main([str(src), "--sparsity", "0.6", "--out", str(tmp_path / device), "--device", device, "--quiet",
                     *flags]) == 0
    assert tree_digest(tmp_path / "cpu") == tree_digest(tmp_path / "cuda")
