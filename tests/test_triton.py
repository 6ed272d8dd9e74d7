"""The Triton kernels against their *_ref twins, and the Triton backend's in-place path. Without a GPU they run
through Triton's interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1); on a GPU, on CUDA tensors.
Backend-level equality with the reference on the adversarial cases is in test_backends.py (CPU) and
test_gpu.py (CUDA); the compiled code of every kernel variant is checked in test_triton_compile.py."""

import pytest
import torch
from torch import nn

import lamp_kernels as lk

triton = pytest.importorskip("triton")
if "triton" not in lk.available_backends():
    pytest.skip("Triton backend not available here", allow_module_level=True)

from lamp_kernels import kernels_torch  # noqa: E402
from lamp_kernels.kernels_torch import magnitude_keys  # noqa: E402
from lamp_kernels.triton_kernels import cut_mask, gather_keys, histogram, layer_table  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


def _layers(dtype, seed=0):
    """A tie-heavy layer spanning several tiles, a random one, a size-1 one, an all-zero one."""
    g = torch.Generator().manual_seed(seed)
    ties = torch.tensor([0.0, 0.5, -0.5, 1.0, 2.0])[torch.randint(0, 5, (5000,), generator=g)]
    ws = [ties, torch.randn(3000, generator=g), torch.tensor([0.25]), torch.zeros(7)]
    ms = [torch.rand(5000, generator=g) > 0.3, None, None, torch.ones(7, dtype=torch.bool)]
    return [w.to(dtype).to(DEVICE) for w in ws], [None if m is None else m.to(DEVICE) for m in ms]


@pytest.mark.parametrize("numels,tile", [([5, 3000, 70000, 1], 4096), ([1], 8), ([10, 10, 10], 4), ([100, 0, 50], 16)])
def test_layer_table(numels, tile):
    ws = [torch.empty(n, device=DEVICE) for n in numels]
    t = layer_table.build(ws, [None] * len(numels), tile)
    got = list(zip(t.tile_layer.tolist(), t.tile_start.tolist(), t.tile_prev.tolist()))
    assert got == layer_table.build_ref(numels, tile)
    base = min(w.data_ptr() for w in ws)
    assert t.w_base.data_ptr() == base
    assert t.w_offs.tolist() == [(w.data_ptr() - base) // 4 for w in ws]
    assert t.m_offs.tolist() == [-1] * len(numels)


def test_layer_table_alignment():
    """16-byte aligned layers may take vector loads; a view that starts mid-vector turns them off."""
    w = torch.randn(100, device=DEVICE)
    assert layer_table.build([w, torch.randn(50, device=DEVICE)], [None, None], 16).aligned
    assert not layer_table.build([w[1:], torch.randn(50, device=DEVICE)], [None, None], 16).aligned


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_histogram_matches_ref(dtype):
    ws, ms = _layers(dtype)
    counts, sums = histogram.launch(ws, ms, layer_table.build(ws, ms, 1024), block=256)
    want_counts, want_sums = histogram.histograms_ref(ws, ms)
    limbs = want_sums.shape[-1]
    got_sums = kernels_torch.normalize_limbs(sums[:, :, :limbs].cpu())  # the kernel adds per-element splits
    assert torch.equal(counts.long().cpu(), want_counts) and torch.equal(got_sums, want_sums)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sparse_summaries_match_the_op_twin(dtype):
    """The op's Triton kernel: dense histograms compacted on the device, several chunks of layers."""
    ws, ms = _layers(dtype)
    budget = histogram.SUMMARY_BUDGET
    try:
        histogram.SUMMARY_BUDGET = 1  # one layer per chunk
        got = histogram.bin_summaries(ws, ms, tile=1024, block=256)
    finally:
        histogram.SUMMARY_BUDGET = budget
    want = kernels_torch.bin_summaries_ref([w.cpu() for w in ws], [None if m is None else m.cpu() for m in ms])
    assert all(torch.equal(a.cpu(), b) for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gather_keys_matches_ref(dtype):
    ws, ms = _layers(dtype)
    lo, hi = [0, 100, 5, 0], [1 << 16, 40000, 5, 0]
    want = [kernels_torch.gather_bin_keys_ref(w.cpu(), None if m is None else m.cpu(), a, b)
            for w, m, a, b in zip(ws, ms, lo, hi)]
    got = gather_keys.gather_bin_keys(ws, ms, lo, hi, [len(k) for k in want], tile=1024, block=256)
    assert torch.equal(got.cpu(), torch.cat(want))


def _cuts(ws, ms):
    """Cuts in the middle of each layer's keys, splitting its tie group (half of the equal keys pruned)."""
    cuts = []
    for w, m in zip(ws, ms):
        k = magnitude_keys(w) if m is None else magnitude_keys(w)[m.reshape(-1)]
        key = int(k.sort().values[len(k) // 2])
        cuts.append((key, int((k == key).sum()) // 2))
    return cuts


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("tile,block", [(1024, 256), (256, 256), (64, 32)])
def test_cut_masks_resolve_ties_across_tiles(dtype, tile, block):
    """The tie group straddling a cut spans many tiles: the look-back must give flat-order ranks."""
    ws, ms = _layers(dtype)
    cuts = _cuts(ws, ms)[:3] + [(-1, 0)]  # the last layer: keep everything alive
    assert cuts[0][1] > 100
    keys, ties = [c[0] for c in cuts], [c[1] for c in cuts]
    got = cut_mask.apply_cuts(ws, ms, keys, ties, tile=tile, block=block)
    for g_, w_ in zip(got, cut_mask.apply_cuts_ref(ws, ms, keys, ties)):
        assert torch.equal(g_, w_)
    prune_all = [2**63 - 1] * len(ws)
    assert not any(m.any() for m in cut_mask.apply_cuts(ws, ms, prune_all, [0] * len(ws)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_cuts_in_place_matches_ref(dtype):
    ws, ms = _layers(dtype)
    keys, ties = zip(*_cuts(ws, ms))
    mine, theirs = [w.clone() for w in ws], [w.clone() for w in ws]
    cut_mask.zero_cuts_(mine, ms, list(keys), list(ties), tile=1024, block=256)
    cut_mask.zero_cuts_ref_(theirs, ms, list(keys), list(ties))
    for a, b in zip(mine, theirs):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))  # +0, not -0


def test_unaligned_views_take_the_scalar_path():
    """Layers that start mid-vector (views) give the same masks as aligned copies."""
    g = torch.Generator().manual_seed(4)
    big = torch.randn(5001, generator=g).bfloat16().to(DEVICE)
    ws = [big[1:], big[3:2003]]
    keys, ties = zip(*_cuts(ws, [None, None]))
    got = cut_mask.apply_cuts(ws, [None, None], list(keys), list(ties), tile=1024, block=256)
    want = cut_mask.apply_cuts_ref(ws, [None, None], list(keys), list(ties))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_prune_in_place_without_masks_matches_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 10)).to(DEVICE)
    with torch.no_grad():  # a non-contiguous weight: zeroed through a copy, written back
        model[0].weight = nn.Parameter(torch.randn(30, 40, device=DEVICE).t().contiguous().t())
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    want = lk.prune_masks(weights, 0.6, "lamp", backend="reference")
    report = lk.prune_(model, 0.6, "lamp", reparametrize=False, backend="triton")
    for name, keep in want.items():
        w = dict(model.named_parameters())[name]
        assert torch.equal(w == 0, ~keep | (weights[name] == 0))
    assert report.pruned == sum(int((~m).sum()) for m in want.values())


def test_scores_are_not_a_triton_job():
    with pytest.raises(ValueError, match="masks"):
        lk.lamp_scores(torch.randn(10, device=DEVICE), backend="triton")
