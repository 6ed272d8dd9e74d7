"""The ops: torch.library checks, and the pure-torch twins against the compiled kernels."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cases import DTYPES, thread_counts

import lamp_kernels as lk
from lamp_kernels import kernels_torch, ops, selection

pytestmark = pytest.mark.skipif(ops._C is None, reason="C++ extension not built")


def _layer(dtype, n=5000, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * torch.logspace(-3, 1, n)
    w[::11] = 0
    return w.to(dtype), torch.rand(n, generator=g) > 0.2


def _sizes(ws, ms, lo, hi):
    return [k.numel() for k in (kernels_torch.gather_bin_keys_ref(w, m, a, b) for w, m, a, b in zip(ws, ms, lo, hi))]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(dtype):
    w, m = _layer(dtype, 300)
    key = int(kernels_torch.magnitude_keys(w)[5])
    dynamic = ("test_schema", "test_faketensor")  # data-dependent output sizes
    torch.library.opcheck(ops.bin_summaries, ([w, w[:10]], [m, None]), test_utils=dynamic)
    torch.library.opcheck(ops.bin_summaries, ([w], [None]), test_utils=dynamic)
    torch.library.opcheck(ops.apply_cuts, ([w, w[:7]], [m, None], [key, -1], [1, 0]))
    torch.library.opcheck(ops.lamp_scores, ([w, w[:10]], [m, None], False))
    torch.library.opcheck(ops.zero_cuts_, ([w.clone(), w[:20].clone()], [m, None], [key, key], [1, 0]))
    ws, ms, lo, hi = [w, w[:30]], [m, None], [0, 0], [1 << 20, 5]
    torch.library.opcheck(ops.gather_bin_keys, (ws, ms, lo, hi, _sizes(ws, ms, lo, hi)), test_utils=dynamic)
    lo, hi = [0, 3], [0xFFFF, 0xFFFF]
    sizes = _sizes(ws, ms, lo, hi)
    torch.library.opcheck(ops.cut_and_gather, (ws, ms, [], lo, hi, sizes), test_utils=dynamic)
    masks, _, flat, positions = ops.cut_and_gather(ws, ms, [], lo, hi, sizes)
    torch.library.opcheck(ops.fix_cuts_, (masks, flat, positions, sizes, [key, -1], [1, 0]))
    window = ([w.reshape(20, 15), w[:30].reshape(3, 10)], [m.reshape(20, 15), None], [20, 3], True, 0, 1 << 62)
    torch.library.opcheck(ops.row_value_window, (*window, 1 << 20, 16), test_utils=dynamic)


def _layers(dtype):
    """A large layer (dense histogram path), a small one (sorted path), a size-1 one and an empty one."""
    w, m = _layer(dtype)
    g = torch.Generator().manual_seed(1)
    return [w, w[:1000] * 3, w[17:18], w[:0]], [m, torch.rand(1000, generator=g) > 0.5, None, None]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_twins_match_compiled(dtype):
    ws, ms = _layers(dtype)
    for masks in ([None] * len(ws), ms):
        got = ops._C.bin_summaries(ws, masks)
        want = kernels_torch.bin_summaries_ref(ws, masks)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        keys = kernels_torch.magnitude_keys(ws[0])
        shift = kernels_torch.DTYPE_INFO[dtype][2]
        lo, hi = [int(keys[17] >> shift)] * 4, [int(keys[17] >> shift) + 3] * 4
        sizes = _sizes(ws, masks, lo, hi)
        assert torch.equal(ops.gather_bin_keys(ws, masks, lo, hi, sizes),
                           kernels_torch.gather_bin_keys_many_ref(ws, masks, lo, hi, sizes))
        for key, ties in [(int(keys[17]), 0), (int(keys[17]), 1), (0, 3), (-1, 0), (2**63 - 1, 0)]:
            k, t = [key] * 4, [ties] * 4
            assert all(torch.equal(a, b) for a, b in zip(ops.apply_cuts(ws, masks, k, t),
                                                         kernels_torch.apply_cuts_ref(ws, masks, k, t)))
            a, b = [w.clone() for w in ws], [w.clone() for w in ws]
            ops.zero_cuts_(a, masks, k, t)
            kernels_torch.zero_cuts_ref_(b, masks, k, t)
            assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_pipeline_on_torch_twins():
    """The ops' default kernels (pure torch, any device) as a kernel set give the reference's masks."""

    class Twins:
        bin_summaries = staticmethod(kernels_torch.bin_summaries_ref)
        gather_bin_keys = staticmethod(kernels_torch.gather_bin_keys_many_ref)
        apply_cuts = staticmethod(kernels_torch.apply_cuts_ref)

    g = torch.Generator().manual_seed(3)
    layers = [torch.randn(3000, generator=g), torch.randn(40, 40, generator=g).bfloat16()]
    for method in lk.METHODS:
        lay = lk.layers.Layers.from_inputs(layers)
        got = selection.apply_layer_cuts(lay, selection.layer_cuts(lay, 0.6, method, kernels=Twins), Twins)
        want = lk.prune_masks(layers, 0.6, method, backend="reference")
        assert all(torch.equal(a, b) for a, b in zip(got, want)), method


def test_parallel_chunks_agree_with_serial():
    """Large enough for several threads: chunked histograms and tie ranks must equal the twins'."""
    w = torch.randint(-4, 5, (1 << 19,)).bfloat16()
    assert all(torch.equal(a, b) for a, b in zip(ops._C.bin_summaries([w], [None]),
                                                 kernels_torch.bin_summaries_ref([w], [None])))
    key = int(kernels_torch.magnitude_keys(torch.tensor([2.0]).bfloat16())[0])
    assert torch.equal(ops.apply_cuts([w], [None], [key], [30000])[0], kernels_torch.apply_cut_ref(w, None, key, 30000))


def _fp32_edge_layers(g):
    """float32 layers of every length mod 8 above the dense-histogram threshold, with keys at the ends of the
    packed fields (low bits 0 and 0x7FFF, zeros, -0.0, subnormals, the largest finite, Inf, NaN) among spread
    values."""
    edges = torch.tensor([0x00000000, 0x80000000, 0x00000001, 0x007FFFFF, 0x3F800000, 0x3F807FFF, 0xBF807FFF,
                          0x7F7FFFFF, 0xFF7F8000, 0x7F800000, 0x7FC00000],
                         dtype=torch.int64).to(torch.int32).view(torch.float32)
    for n in range(4097, 4097 + 9):
        w = torch.randn(n, generator=g) * torch.logspace(-30, 30, n)
        w[torch.randint(0, n, (n // 3,), generator=g)] = edges[torch.randint(0, len(edges), (n // 3,), generator=g)]
        yield w


def _assert_fp32_histograms_match(g):
    """float32 keys' summaries against the twin: tensors (_fp32_edge_layers), and ColumnScaled bf16 weights."""
    for w in _fp32_edge_layers(g):
        for mask in (None, torch.rand(w.numel(), generator=g) > 0.3):
            got = ops._C.bin_summaries([w, w.flip(0)], [mask, mask])
            want = kernels_torch.bin_summaries_ref([w, w.flip(0)], [mask, mask])
            assert all(torch.equal(a, b) for a, b in zip(got, want)), w.numel()
            *found, top_bins, negative = ops._C.bin_summaries_scanned([w], [mask])
            assert all(torch.equal(a, b) for a, b in zip(found, kernels_torch.bin_summaries_ref([w], [mask])))
            # the value scan covers every element, alive or not
            assert int(top_bins[0]) == int(kernels_torch.magnitude_keys(w).max()) >> 15
            assert bool(negative[0]) == bool((w.view(torch.int32) < 0).logical_and(w != 0).any())
    # bf16 weights times column scales (ColumnScaled): rows of every length mod 8, shorter and longer than a
    # vector, so segments end inside one; edge weights (zeros, subnormals, the largest finite, Inf) and scales
    # (0, 1, large)
    for cols in (3, 13, 64, 1029):
        rows = 4104 // cols + 2
        w = (torch.randn(rows, cols, generator=g) * torch.logspace(-20, 20, cols)).bfloat16()
        w.view(-1)[torch.randint(0, w.numel(), (w.numel() // 4,), generator=g)] = torch.tensor(
            [0.0, -0.0, 1e-40, 3.3e38, float("inf"), 1.0, -2.5]).bfloat16()[torch.randint(0, 7, (w.numel() // 4,),
                                                                                            generator=g)]
        scale = torch.exp(torch.randn(cols, generator=g) * 3)
        scale[torch.randint(0, cols, (max(1, cols // 5),), generator=g)] = 0.0
        keys = w.abs().float() * scale
        for mask in (None, torch.rand(rows, cols, generator=g) > 0.3):
            got = ops._C.bin_summaries_scaled([w], [mask], [scale])
            want = kernels_torch.bin_summaries_ref([keys], [mask])
            assert all(torch.equal(a, b) for a, b in zip(got, want)), cols


def test_fp32_histogram_edges():
    """The fp32 histogram's vector loops (eight elements at a time; tensors, and bf16 weights times column
    scales) and their scalar tails against the twin, with and without masks; and one bin taking more than a
    flush window of the largest low bits on one thread: 2^24 + 13 elements, which overflow the packed count
    (24 bits) unless the worker flushes every 2^22."""
    _assert_fp32_histograms_match(torch.Generator().manual_seed(11))
    one_bin = torch.full(((1 << 24) + 13,), 0x3F807FFF, dtype=torch.int32).view(torch.float32)
    one_bin[::5] = torch.tensor(0x3F800000, dtype=torch.int32).view(torch.float32)
    for _ in thread_counts(1):
        got = ops._C.bin_summaries([one_bin], [None])
    assert all(torch.equal(a, b) for a, b in zip(got, kernels_torch.bin_summaries_ref([one_bin], [None])))


def test_fp32_histogram_scalar_fallback():
    """The scalar loop that CPUs without AVX2 run, forced by LAMP_KERNELS_NO_AVX2 in a fresh process (the
    switch is read once), gives the same histograms."""
    code = ("import sys; sys.path[:0] = sys.argv[1:]; import torch, test_ops; "
            "test_ops._assert_fp32_histograms_match(torch.Generator().manual_seed(12)); print('ok')")
    env = dict(os.environ, LAMP_KERNELS_NO_AVX2="1")
    root = str(Path(lk.__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), root], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_many_tiny_layers_cost_their_size():
    """10,000 layers of 9 weights: sparse summaries (at most 9 entries each, never the dtype's 2^16 bins), one
    exact selection, the reference's masks. (Time and memory: benchmarks/bench_many_layers.py.)"""
    g = torch.Generator().manual_seed(5)
    layers = list(torch.randn(10_000, 3, 3, generator=g).unbind(0))
    summaries = selection.summarize_layers(layers, [None] * len(layers))
    assert max(s.bins.numel() for s in summaries) <= 9
    assert sum(int(s.counts.sum()) for s in summaries) == 90_000
    got = lk.prune_masks(layers, 0.5, "lamp", backend="cpu")
    want = lk.prune_masks(layers, 0.5, "lamp", backend="reference")
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cut_pass_tie_ranks_across_blocks_and_chunks(dtype):
    """The mask pass is branch-free by blocks of 1024 and walks only the block where the running count of
    equal keys crosses `ties`: every crossing point (block and chunk edges included) equals the twin."""
    g = torch.Generator().manual_seed(3)
    n = 3 * (1 << 16) + 517  # several chunks of the pass
    w = (torch.randint(-6, 7, (n,), generator=g).to(torch.float64) / 4).to(dtype)  # 13 values: heavy ties
    m = torch.rand(n, generator=g) > 0.2
    key = int(kernels_torch.magnitude_keys(w.abs().max().reshape(1) / 2)[0])  # |w| = 0.75: one in six
    for mask in (None, m):
        alive = torch.ones(n, dtype=torch.bool) if mask is None else mask
        equal = int(((kernels_torch.magnitude_keys(w) == key) & alive).sum())
        for ties in (0, 1, 1023, 1024, 1025, equal // 2, equal - 1, equal, equal + 7):
            for cut in (key, -1, 2**63 - 1):
                got = ops.apply_cuts([w], [mask], [cut], [ties])[0]
                assert torch.equal(got, kernels_torch.apply_cuts_ref([w], [mask], [cut], [ties])[0]), (ties, cut)
                a, b = w.clone(), w.clone()
                ops.zero_cuts_([a], [mask], [cut], [ties])
                kernels_torch.zero_cuts_ref_([b], [mask], [cut], [ties])
                assert torch.equal(a, b), (ties, cut)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_summaries_of_many_large_layers(dtype):
    """Large layers are histogrammed a group at a time, every chunk of the group one task (the small layers
    tasks of the first group), each worker flushing the bins it touched when it moves to another layer: equal
    to the twin for more large layers than a group holds (bf16/fp16: 256, fp32: 42, fp64: 25), so a second
    group runs, with masks, small layers between them, values in a different range per layer, and
    multi-chunk layers whose chunks cover different bin ranges in no order (a layer's total is flushed into
    several times, growing up, down or across a gap), at 1, 2 and 3 threads."""
    g = torch.Generator().manual_seed(5)
    layers = {torch.bfloat16: 350, torch.float16: 350, torch.float32: 60, torch.float64: 36}[dtype]
    chunk_scales = [0, -10, 8, -20, 4, -6, 12, -14]  # exponents of 2, one per 65,536 elements
    ws, ms = [], []
    for i in range(layers):
        if i in (5, layers // 2, layers - 3):  # multi-chunk: 8 x 65,536 elements
            parts = [torch.randn(65536, generator=g, dtype=torch.float64) * 2.0 ** e for e in chunk_scales]
            w = torch.cat(parts[i % 3:] + parts[:i % 3])
        else:
            n = 4_200 + 97 * i if i % 4 else 300 + i  # mostly large (> 4096), some small
            w = torch.randn(n, generator=g, dtype=torch.float64) * 2.0 ** (i % 13 - 6)
        ws.append(w.to(dtype))
        ms.append(torch.rand(w.numel(), generator=g) > 0.3 if i % 3 == 0 else None)
    for _ in thread_counts(1, 2, 3):
        got = ops._C.bin_summaries(ws, ms)
        want = kernels_torch.bin_summaries_ref(ws, ms)
        assert all(torch.equal(a, b) for a, b in zip(got, want))



@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scanned_summaries_report_every_elements_top_bin_and_sign(dtype):
    """bin_summaries_scanned: the summaries of bin_summaries, and over every element alive or not, the largest
    magnitude bin (-1 for an empty layer) and whether some value is negative and nonzero (-0.0 is not; -NaN
    and -Inf are): small (sorted) and large (histogrammed, several chunks and blocks) layers, 1 and 2 threads."""
    g = torch.Generator().manual_seed(13)
    ws, ms = [], []
    for n, bad in [(0, None), (3000, None), (3000, -2.0), (200_000, None), (200_000, -float("nan")),
                   (200_000, -float("inf")), (150_000, float("inf")), (5_000, -1e-30)]:
        w = (torch.randn(n, generator=g, dtype=torch.float64) * 1e-2).abs()
        w[::5] = -0.0
        m = torch.rand(n, generator=g) > 0.5
        if bad is not None:
            w[int((~m).nonzero()[-1])] = bad  # at a masked-out position
        ws.append(w.to(dtype))
        ms.append(m)
    shift = kernels_torch.DTYPE_INFO[dtype][2]
    for _ in thread_counts(1, 2):
        *got, top_bins, negative = ops._C.bin_summaries_scanned(ws, ms)
        assert all(torch.equal(a, b) for a, b in zip(got, ops._C.bin_summaries(ws, ms)))
        for w, top, neg in zip(ws, top_bins.tolist(), negative.tolist()):
            keys = kernels_torch.magnitude_keys(w)
            assert top == (int(keys.max()) >> shift if w.numel() else -1)
            assert neg == bool(((w < 0) | (w.isnan() & w.signbit())).any())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_summaries_of_large_layers_ignore_masked_out_nan_and_inf(dtype):
    """The histogram widens its touched range over every element of a block, alive or not (a superset is all
    a flush needs): masked-out NaN, Inf and huge values stretch that range to the table's top bins but add
    no entry, and the bins between stay out of the summary. Equal to the twin, at 1 and 2 threads."""
    g = torch.Generator().manual_seed(9)
    ws, ms = [], []
    for n in (5_000, 70_001, 200_000):
        w = torch.randn(n, generator=g, dtype=torch.float64) * 1e-3
        m = torch.rand(n, generator=g) > 0.5
        dead = (~m).nonzero().flatten()
        w[dead[::7]] = float("nan")
        w[dead[1::7]] = -float("inf")
        w[dead[2::7]] = torch.finfo(dtype).max
        ws.append(w.to(dtype))
        ms.append(m)
    for _ in thread_counts(1, 2):
        got = ops._C.bin_summaries(ws, ms)
        want = kernels_torch.bin_summaries_ref(ws, ms)
        assert all(torch.equal(a, b) for a, b in zip(got, want))

@pytest.mark.skipif(ops._C is None, reason="C++ extension not built")
def test_cut_kernels_check_everything_before_writing():
    """A bad layer anywhere in the list is refused before any layer is written; layers sharing memory are
    refused by the in-place kernel (all layers are zeroed in one parallel region)."""
    a, b = torch.randn(200_000), torch.randn(300)
    keep_a, keep_b = a.clone(), b.clone()
    with pytest.raises(RuntimeError, match="one entry per weight"):
        ops._C.zero_cuts_([a, b], [None, torch.ones(299, dtype=torch.bool)], [0, 0], [0, 0])
    with pytest.raises(RuntimeError, match="bfloat16, float16, float32 or float64"):
        ops._C.zero_cuts_([a, torch.ones(3, dtype=torch.int32)], [None, None], [0, 0], [0, 0])
    with pytest.raises(RuntimeError, match="overlap in memory"):
        ops._C.zero_cuts_([a, a[100:5000]], [None, None], [2**62, 2**62], [0, 0])
    assert torch.equal(a, keep_a) and torch.equal(b, keep_b)
    ops._C.zero_cuts_([a[:100], a[100:]], [None, None], [2**62, 2**62], [0, 0])  # disjoint views: fine
    assert not a.any()


def test_packed_fp32_summaries_flush_before_their_fields_fill():
    """fp32 histograms pack the count with the sum of the keys' low bits (two int64 slots per bin, not three),
    and a worker flushes every 2^22 elements so the packed fields never overflow: layers of more than 2^22
    (and 2^23) elements in one bin, and one whose low bits are all ones, equal the twin at 1 and 2 threads."""
    n = (1 << 23) + 1234
    one_bin = torch.full((n,), 1.0 + 2.0**-23 * 0x7FFF, dtype=torch.float32)  # l = 2^15 - 1 everywhere
    spread = torch.full((n,), 0.375, dtype=torch.float32)
    spread[::3] = 3.0
    spread[::7] = 1.0 + 2.0**-23 * 0x4001
    mask = torch.ones(n, dtype=torch.bool)
    mask[::5] = False
    for _ in thread_counts(1, 2):
        for ws, ms in (([one_bin], [None]), ([spread, one_bin[:5000]], [mask, None])):
            got = ops._C.bin_summaries(ws, ms)
            want = kernels_torch.bin_summaries_ref(ws, ms)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert int(got[2][0]) == int(mask.sum()) - int(mask[::3].sum()) - int(mask[::7].sum()) + int(mask[::21].sum())


def test_packed_fp32_summaries_at_the_ends_of_the_range():
    """The packed slots rebuild each bin's sum from its fixed high significand bits: subnormal bins (no implicit
    bit), the smallest normal binade and the largest finite one, in layers large enough for the histogram
    path, and column-scaled keys with more than 2^22 elements in one bin, equal the twins."""
    g = torch.Generator().manual_seed(9)
    sub = torch.randint(1, 1 << 23, (50_000,), generator=g, dtype=torch.int32).view(torch.float32)  # subnormals
    low = (torch.rand(50_000, generator=g) + 1) * 2.0**-126  # the smallest normal binade
    top = ((torch.rand(50_000, generator=g) + 1) * 2.0**127).float()  # the largest finite binade
    mixed = torch.cat([sub, low, top])[torch.randperm(150_000, generator=g)]
    for ws in ([sub, low, top], [mixed]):
        got, want = ops._C.bin_summaries(ws, [None] * len(ws)), kernels_torch.bin_summaries_ref(ws, [None] * len(ws))
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    w = torch.ones(1 << 11, (1 << 11) + 3).bfloat16()  # 2^22 + 6144 equal importances: one bin
    scale = torch.full((w.shape[1],), 1.0 + 2.0**-23 * 0x7FFF)
    got = ops._C.bin_summaries_scaled([w], [None], [scale])
    want = kernels_torch.bin_summaries_ref(ops._scaled_keys([w], [scale]), [None])
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_fused_masks_pass_on_a_layer_above_the_packing_window(monkeypatch):
    """The masks path (summaries, cut_and_gather, fix_cuts_) against the two-pass one (gather, then apply_cuts)
    on an fp32 layer of more than 2^22 weights whose cut falls inside a tie group on the last key of a bin
    (l = 0x7FFF), with and without a mask, for LAMP, global and uniform."""
    g = torch.Generator().manual_seed(10)
    n = (1 << 22) + 777
    w = torch.randn(n, generator=g)
    near_median = float(w.abs().kthvalue(int(0.49 * n)).values)
    tie_key = (int(kernels_torch.magnitude_keys(torch.tensor([near_median]))[0]) | 0x7FFF)
    tie = torch.tensor([tie_key], dtype=torch.int32).view(torch.float32)
    w[torch.rand(n, generator=g) < 0.03] = tie  # 3%: few enough candidates for the fused pass
    mask = torch.rand(n, generator=g) > 0.1
    small = torch.randn(5000, generator=g)
    calls, cut_and_gather = [], ops.cut_and_gather
    monkeypatch.setattr(ops, "cut_and_gather", lambda *a: calls.append(1) or cut_and_gather(*a))
    for masks in ([None, None], [mask, None]):
        lay = lk.layers.Layers.from_inputs([w, small], masks)
        for method in ("lamp", "global", "uniform"):
            calls.clear()
            cuts = selection.layer_cuts(lay, 0.5, method)
            want = selection.apply_layer_cuts(lay, cuts)
            got = selection.layer_masks(lay, 0.5, method)
            assert calls and all(torch.equal(a, b) for a, b in zip(got, want)), method
            assert sum(int((~m).sum()) for m in got) == sum(cuts.pruned)
            if method != "lamp" and masks[0] is None:
                assert cuts.cuts[0][0] == tie_key and cuts.cuts[0][1] > 0  # inside the tie group


def test_fused_masks_pass_gives_way_to_the_gather_when_candidates_are_many(monkeypatch):
    """Half of a layer's weights equal (all of them candidates): the masks path gathers and applies instead of
    holding 24 bytes per candidate, with the reference's masks."""
    g = torch.Generator().manual_seed(11)
    w = torch.randn(200_000, generator=g)
    w[::2] = 0.5
    monkeypatch.setattr(ops, "cut_and_gather", lambda *a: pytest.fail("fused pass on a region this large"))
    for method in ("lamp", "global"):
        got = lk.prune_masks([w], 0.3, method, backend="cpu")
        assert torch.equal(got[0], lk.prune_masks([w], 0.3, method, backend="reference")[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_summary_limbs_are_normalised(dtype):
    """Every summary kernel returns canonical limbs (each but the last below 2^27): the value of the sum, not
    the way a kernel split it, decides the tensor."""
    w, m = _layer(dtype, 20_000)
    for sums in (ops._C.bin_summaries([w], [m])[3], kernels_torch.bin_summaries_ref([w], [m])[3]):
        if sums.shape[1]:
            assert int(sums[:, :-1].max()) < 2**27 and int(sums.min()) >= 0


def _cut_and_gather_cases(dtype):
    g = torch.Generator().manual_seed(7)
    n = 3 * (1 << 16) + 333  # several chunks
    heavy = (torch.randint(-6, 7, (n,), generator=g).to(torch.float64) / 4).to(dtype)  # 13 values
    ws, ms = _layers(dtype)
    return [heavy, ws[0], ws[1], ws[2]], [torch.rand(n, generator=g) > 0.2, ms[0], ms[1], None]


@pytest.mark.parametrize("scaled", [False, True], ids=["keys", "column-scaled"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cut_and_gather_then_fix_equals_apply(dtype, scaled):
    """The fused masks pass: cut_and_gather's masks keep what lies above the candidate bins and its keys are
    gather_bin_keys'; fix_cuts_ then gives exactly apply_cuts' masks for every cut the solver can return for
    such a region (inside a tie group at several tie counts, at the lowest candidate; keep everything when
    nothing lies below the region, prune everything when nothing lies above) -- C++ kernels and the
    pure-torch defaults alike."""
    ws, ms = _cut_and_gather_cases(dtype)
    g = torch.Generator().manual_seed(8)
    scales = [torch.rand(w.shape[-1], generator=g) * 3 for w in ws] if scaled else []
    key_ws = ops._scaled_keys(ws, scales) if scaled else ws
    keys = [kernels_torch.magnitude_keys(w) for w in key_ws]
    shift = 15 if scaled else kernels_torch.DTYPE_INFO[dtype][2]
    alive = [k > 0 if m is None else (k > 0) & m.reshape(-1) for k, m in zip(keys, ms)]
    mid = [int(k[a].median()) >> shift for k, a in zip(keys, alive)]
    for pick in ("median", "first", "keep", "prune"):
        lo = [0] * len(ws) if pick == "keep" else mid
        hi = [0xFFFF] * len(ws) if pick == "prune" else [b + (0 if i % 2 else 2) for i, b in enumerate(mid)]
        sizes = _sizes(key_ws, ms, lo, hi)
        assert min(sizes) > 0  # the solver asks for nonempty bins only
        cpu = ops.cut_and_gather(ws, ms, scales, lo, hi, sizes)
        default = kernels_torch.cut_and_gather_ref(key_ws, ms, lo, hi, sizes)
        for got, want in zip(cpu[1:], default[1:]):
            assert torch.equal(got, want)
        assert torch.equal(cpu[1], ops.gather_bin_keys(key_ws, ms, lo, hi, sizes))
        assert all(torch.equal(a, b) for a, b in zip(cpu[0], default[0]))
        cuts, ties = [], []
        for k, n in zip(torch.split(cpu[1], sizes), sizes):
            if pick == "keep":
                cuts.append(-1), ties.append(0)
            elif pick == "prune":
                cuts.append(2**63 - 1), ties.append(0)
            else:
                key = int(k[n // 2] if pick == "median" else k[0])
                cuts.append(key), ties.append(int((k == key).sum()) // 2 if pick == "median" else 0)
        fixed, twin = [m.clone() for m in cpu[0]], [m.clone() for m in cpu[0]]
        ops.fix_cuts_(fixed, cpu[2], cpu[3], sizes, cuts, ties)
        kernels_torch.fix_cuts_ref_(twin, cpu[2], cpu[3], sizes, cuts, ties)
        want = ops.apply_cuts_scaled(ws, ms, scales, cuts, ties) if scaled else ops.apply_cuts(ws, ms, cuts, ties)
        for a, b, c in zip(fixed, twin, want):
            assert torch.equal(a, c) and torch.equal(b, c), pick


def test_cut_and_gather_refuses_bad_input_before_writing():
    w = torch.randn(1000)
    with pytest.raises(RuntimeError, match="sizes do not match"):
        ops.cut_and_gather([w], [None], [], [0], [0xFFFF], [7])
    with pytest.raises(RuntimeError, match="candidate bins"):
        ops.cut_and_gather([w], [None], [], [5], [4], [0])
    masks, _, flat, positions = ops.cut_and_gather([w], [None], [], [0], [0xFFFF], [1000])
    keep = masks[0].clone()
    with pytest.raises(RuntimeError, match="ascending flat indices"):
        ops.fix_cuts_(masks, flat, positions.flip(0), [1000], [0], [0])
    with pytest.raises(RuntimeError, match="sizes do not match"):
        ops.fix_cuts_(masks, flat, positions, [999], [0], [0])
    with pytest.raises(RuntimeError, match="ascending flat indices"):  # a mask too small for the positions
        ops.fix_cuts_([masks[0][:500]], flat, positions, [1000], [0], [0])
    with pytest.raises(RuntimeError, match="overlap in memory"):
        ops._C.fix_cuts_([masks[0], masks[0][10:]], torch.cat([flat[:10]] * 2), torch.cat([positions[:10]] * 2),
                         [10, 10], [0, 0], [0, 0])
    assert torch.equal(masks[0], keep)


def test_masks_path_falls_back_when_a_cut_leaves_its_region(monkeypatch):
    """The fused masks path trusts that each cut lies in its candidate region; a solver that broke that would
    still get apply_cuts' masks (checked here with a solver whose finish moves every cut to keep-all)."""
    g = torch.Generator().manual_seed(4)
    layers = [torch.randn(300, 200, generator=g), torch.randn(100, 50, generator=g)]
    real = ops.solver

    class KeepAll:
        def __init__(self, *a):
            self.s = real(*a)

        def __getattr__(self, name):
            return getattr(self.s, name)

        def finish(self, gathered):
            return [(-1, 0, 0) for _ in self.s.finish(gathered)]

    monkeypatch.setattr(ops, "solver", KeepAll)
    got = lk.prune_masks(layers, 0.5, backend="cpu")
    assert all(bool(m.all()) for m in got)  # keep-all cuts, applied by apply_cuts
    calls, cut_and_gather = [], ops.cut_and_gather
    monkeypatch.setattr(ops, "cut_and_gather", lambda *a: calls.append(1) or cut_and_gather(*a))
    monkeypatch.setattr(ops, "fix_cuts_", lambda *a: pytest.fail("fix_cuts_ ran on a cut outside its region"))
    assert all(bool(m.all()) for m in lk.prune_masks(layers, 0.5, backend="cpu"))
    assert calls  # the fused pass ran, and its masks were replaced


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.uint8], ids=str)
@pytest.mark.parametrize("n", [1, 7, 65_537, 300_001])
def test_masked_copy_equals_masked_fill_bit_for_bit(dtype, n):
    """lamp-prune's write of a masked tensor: kept elements' bits unchanged (-0.0, NaN payloads included),
    pruned ones +0, at 1 and 2 threads."""
    g = torch.Generator().manual_seed(n)
    src = (torch.randn(n, generator=g) * 100).to(dtype)
    if dtype.is_floating_point:
        src[::5] = -0.0
    keep = torch.rand(n, generator=g) > 0.4
    want = src.clone()
    want.masked_fill_(~keep, 0)
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[src.element_size()]
    for _ in thread_counts(1, 2):
        out = torch.full_like(src, 3)
        ops._C.masked_copy_(out, src, keep)
        assert torch.equal(out.view(bits), want.view(bits))


def test_masked_copy_refuses_mismatched_tensors():
    src, keep = torch.randn(8), torch.ones(8, dtype=torch.bool)
    for out, k, message in [(torch.empty(7), keep, "sizes differ"), (torch.empty(8, dtype=torch.float64), keep,
                                                                       "element sizes"),
                            (torch.empty(8), keep.to(torch.uint8), "bool"), (torch.empty(16)[::2], keep,
                                                                             "contiguous")]:
        with pytest.raises(RuntimeError, match=message):
            ops._C.masked_copy_(out, src, k)
