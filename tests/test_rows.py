"""granularity="row" and density bounds: every backend against the reference, the row kernels against their
twins, the sorted selection on its own, and the errors."""

import pytest
import torch
from cases import CASES, DTYPES, random_masks
from test_importance import importance_for

import lamp_kernels as lk
from lamp_kernels import allocation, ops, plan, reference, rows, sorted_selection, streamed_selection
from lamp_kernels.layers import Layers
from lamp_kernels.options import check_options

FAST = [b for b in lk.available_backends() if b == "cpu"]
pytestmark = pytest.mark.skipif(not FAST, reason="the C++ extension is not built")
BOUNDS = [(None, None), (0.15, None), (None, 0.6), (0.25, 0.75)]


def _same(got, want, label):
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"{label}: layer {i} differs in {int((g != w).sum())} of {w.numel()} entries"


def _cpu_as_reference(layers, s, method, label, **kw):
    """prune_masks and layer_sparsities on the cpu backend equal the reference's masks, or raise its error."""
    try:
        want = lk.prune_masks(layers, s, method, backend="reference", **kw)
    except ValueError as exc:
        with pytest.raises(ValueError, match=str(exc).split(":")[0]):
            lk.prune_masks(layers, s, method, backend="cpu", **kw)
        return
    _same(lk.prune_masks(layers, s, method, backend="cpu", **kw), want, label)
    assert lk.layer_sparsities(layers, s, method, backend="cpu", **kw) == [float((~m).sum()) / m.numel() for m in want]


def _layers(case, dtype):
    """The shared adversarial cases (their one large layer cut to 40 x 50, to keep the reference quick) plus 2-D
    layers with real rows (the cases are mostly vectors)."""
    g = torch.Generator().manual_seed(11)
    extra = [torch.randn(12, 20, generator=g), (torch.randint(0, 3, (7, 6, 2), generator=g) * 0.5)]
    layers = [w[:40, :50] if w.numel() > 4000 else w for w in CASES[case](dtype)]
    return [w.to(dtype) for w in layers] + [w.to(dtype) for w in extra]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_and_bounds_match_reference(dtype, case):
    layers = _layers(case, dtype)
    # weights or importance as keys, with or without masks: one combination per (case, dtype), all four covered
    turn = sorted(CASES).index(case) + DTYPES.index(dtype)
    imp = importance_for(layers, dtype) if turn % 2 else None
    masks = random_masks(layers) if turn // 2 % 2 else None
    for method in lk.ALL_METHODS:
        for gran in ("layer", "row"):
            for lo, hi in BOUNDS if method in ("lamp", "global") else BOUNDS[:1]:
                for s in (0.2, 0.9) if method in ("lamp", "global") else (0.55,):
                    _cpu_as_reference(layers, s, method, f"{method} {gran} s={s} bounds=({lo}, {hi})", masks=masks,
                                      importance=imp, granularity=gran, min_density=lo, max_density=hi)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_scores_match_reference(dtype):
    layers = _layers("heavy_ties", dtype)
    masks = random_masks(layers, seed=2)
    want = lk.lamp_scores(layers, masks, granularity="row", backend="reference", dtype=torch.float64)
    got = lk.lamp_scores(layers, masks, granularity="row", backend="cpu", dtype=torch.float64)
    _same(got, want, "row scores")
    got32 = lk.lamp_scores(layers, masks, granularity="row", backend="cpu")
    _same(got32, [w.float() for w in want], "row scores float32")


def test_row_scores_are_per_row_lamp():
    """Each row scored on its own: the same as lamp_scores of that row alone."""
    w = torch.randn(5, 9, generator=torch.Generator().manual_seed(3))
    got = lk.lamp_scores(w, granularity="row", dtype=torch.float64, backend="cpu")
    for r in range(5):
        assert torch.equal(got[r], lk.lamp_scores(w[r], dtype=torch.float64, backend="reference"))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("per_row", [False, True])
def test_row_kernels_match_twins(dtype, per_row):
    layers = _layers("zeros_and_tiny", dtype) + _layers("heavy_ties", dtype)
    masks = random_masks(layers, seed=6)
    n_rows = [w.shape[0] if (per_row and w.dim() >= 2) else 1 for w in layers]
    for lamp in (True, False):
        _same(ops._C.row_order_values(layers, masks, n_rows, lamp),
              rows.row_order_values_ref(layers, masks, n_rows, lamp), f"order values lamp={lamp}")
    for f64 in (True, False):
        _same(ops._C.row_lamp_scores(layers, masks, n_rows, f64), rows.row_lamp_scores_ref(layers, masks, n_rows, f64),
              "scores")
    g = torch.Generator().manual_seed(8)
    counts = [torch.randint(0, w.numel() // r + 1, (r,), generator=g) for w, r in zip(layers, n_rows)]
    _same(ops._C.row_cut_masks(layers, masks, n_rows, counts), rows.row_cut_masks_ref(layers, masks, n_rows, counts),
          "cut masks")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("per_row", [False, True])
def test_row_value_window_matches_twin(dtype, per_row):
    """Per-unit counts at both ends, the values inside (or none past the limit) and the histogram, on windows
    from the whole range to one value, with masks, zeros and ties."""
    layers = _layers("zeros_and_tiny", dtype) + _layers("heavy_ties", dtype)
    masks = random_masks(layers, seed=9)
    n_rows = [w.shape[0] if (per_row and w.dim() >= 2) else 1 for w in layers]
    for lamp in (True, False):
        values = torch.cat(rows.row_order_values_ref(layers, masks, n_rows, lamp))
        alive = torch.unique(values[values > 0])
        mid = int(alive[alive.numel() // 2])
        inner = int((values > 0).sum())
        for lo, hi in [(0, (1 << 63) - 1), (0, mid), (mid, (1 << 63) - 1), (mid - 1, mid), (mid, mid + 1),
                       (int(alive[1]), int(alive[-2]))]:
            for limit, buckets in [(inner, 4096), (inner // 3, 7), (0, 0), (10**9, 1)]:
                got = ops._C.row_value_window(layers, masks, n_rows, lamp, lo, hi, limit, buckets)
                want = rows.row_value_window_ref(layers, masks, n_rows, lamp, lo, hi, limit, buckets)
                label = f"lamp={lamp} window ({lo}, {hi}] limit {limit} buckets {buckets}"
                for part, g, w in zip(("le_lo", "le_hi", "inside"), got[:3], want[:3]):
                    _same(g, w, f"{label}: {part}")
                assert torch.equal(got[3], want[3]), f"{label}: histogram"
    with pytest.raises(RuntimeError, match="lo < hi"):
        ops._C.row_value_window(layers, masks, n_rows, True, 5, 5, 10, 0)


def _random_units(g, dtypes=(torch.float32, torch.bfloat16, torch.float16, torch.float64)):
    """Layers of random shapes as units (rows), some with few distinct values, some masked."""
    keys, masks, n_rows = [], [], []
    for _ in range(int(torch.randint(1, 6, (1,), generator=g))):
        r, c = (int(x) for x in torch.randint(1, 30, (2,), generator=g))
        dtype = dtypes[int(torch.randint(len(dtypes), (1,), generator=g))]
        w = torch.randn(r, c, generator=g) * 10.0 ** float(torch.randint(-3, 4, (1,), generator=g))
        if torch.rand(1, generator=g) < 0.3:
            w = torch.randint(-2, 3, (r, c), generator=g).float()  # heavy ties and zeros
        keys.append(w.to(dtype))
        masks.append(torch.rand(r, c, generator=g) < 0.8 if torch.rand(1, generator=g) < 0.4 else None)
        n_rows.append(r)
    return keys, masks, n_rows


def _random_request(g, keys, masks):
    """k, and feasible bounds half of the time."""
    sizes = [w.numel() for w in keys]
    masked = [0 if m is None else int((~m).sum()) for m in masks]
    if torch.rand(1, generator=g) < 0.5:
        return int(torch.randint(0, sum(sizes) + 1, (1,), generator=g)), None, None
    least = [int(torch.randint(0, s // 2 + 1, (1,), generator=g)) for s in sizes]
    most = [int(torch.randint(max(s // 2, lo, m), s + 1, (1,), generator=g)) for s, lo, m in zip(sizes, least, masked)]
    lowest = sum(max(lo, m) for lo, m in zip(least, masked))
    return int(torch.randint(lowest, sum(most) + 1, (1,), generator=g)), least, most


@pytest.mark.parametrize("seed", range(8))
def test_streamed_selection_equals_sorted_selection(seed, monkeypatch):
    """The streamed selection (values recomputed pass by pass, never all kept) gives sorted_selection's counts
    on the kept values: with the sample on tiny inputs, windows that miss the threshold (margins from far too
    narrow to everything), limits that force the histogram to narrow the window (down to one value among many
    equal ones), few buckets, bounds that move a layer's count, masks and ties."""
    g = torch.Generator().manual_seed(seed)
    window = streamed_selection._Request.window
    passes = []

    def counted(self, lo, hi):
        passes.append((lo, hi))
        return window(self, lo, hi)

    monkeypatch.setattr(streamed_selection._Request, "window", counted)
    for trial in range(40):
        settings = [(1, 8, 2, 1), (64, 64, 64, 5), (1, 512, 10**6, 50), (1 << 20, 64, 64, 10**9)][trial % 4]
        sampled_min, sample, margin, limit = settings
        monkeypatch.setattr(streamed_selection, "_SAMPLED_MIN", sampled_min)
        monkeypatch.setattr(streamed_selection, "_SAMPLE", sample)
        monkeypatch.setattr(streamed_selection, "_MARGIN", margin)
        monkeypatch.setattr(streamed_selection, "_limit", lambda n, limit=limit: limit)
        monkeypatch.setattr(streamed_selection, "_BUCKETS", [2, 3, 16, 4096][trial // 4 % 4])
        keys, masks, n_rows = _random_units(g)
        k, least, most = _random_request(g, keys, masks)
        for lamp in (True, False):
            values = [v.reshape(r, -1) for v, r in zip(ops._C.row_order_values(keys, masks, n_rows, lamp), n_rows)]
            want = sorted_selection.select_counts(values, k, least, most)
            got = streamed_selection.select_counts(keys, masks, n_rows, lamp, k, least, most)
            _same(got, want, f"trial {trial} lamp={lamp} k={k} bounds {least} {most}")
    assert len(passes) > 3 * 80, "the settings should force narrowing passes"


def test_streamed_selection_on_one_value_repeated(monkeypatch):
    """More equal values than the limit holds: the window narrows to that one value, which is the threshold."""
    monkeypatch.setattr(streamed_selection, "_limit", lambda n: 3)
    keys = [torch.full((6, 10), 0.5), torch.full((4, 5), 0.25)]
    values = [v.reshape(r, -1) for v, r in zip(ops._C.row_order_values(keys, [None, None], [6, 4], False), [6, 4])]
    for k in (0, 1, 7, 25, 31, 59, 60, 61, 80):
        _same(streamed_selection.select_counts(keys, [None, None], [6, 4], False, k),
              sorted_selection.select_counts(values, k), f"k={k}")


def test_streamed_selection_edges():
    """More to prune than the bounds allow: a clear error (the callers check bounds first); no elements at all:
    empty masks, as on the reference."""
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="cannot be pruned within the bounds"):
        streamed_selection.select_counts([w], [None], [3], True, 13)
    with pytest.raises(ValueError, match="at most 2"):
        streamed_selection.select_counts([w], [None], [3], True, 5, [0], [2])
    empty = torch.empty(0, 4)
    for backend in ("cpu", "reference"):
        assert lk.prune_masks([empty], 0.5, granularity="row", backend=backend)[0].shape == (0, 4)


def test_masked_per_row_counts():
    """The C++ per-row count of masked-out entries against torch: rows longer and shorter than a vector, a
    64-row block boundary, one row, no rows, no columns."""
    g = torch.Generator().manual_seed(12)
    for r, c in [(130, 37), (1, 5000), (64, 1), (3, 0), (0, 0), (200, 64)]:
        m = torch.rand(r, c, generator=g) < 0.6
        assert torch.equal(rows.masked_per_row(m, r, r * c), (~m).sum(1)), (r, c)
        assert torch.equal(ops._C.masked_per_row([m.reshape(-1)], [r])[0], (~m).sum(1)), (r, c)
    with pytest.raises(RuntimeError, match="bool masks whose rows divide their size"):
        ops._C.masked_per_row([torch.ones(7, dtype=torch.bool)], [2])
    odd = torch.tensor([[2, 0, 1, 255]], dtype=torch.uint8).view(torch.bool)  # any nonzero byte is true
    assert ops._C.masked_per_row([odd.reshape(-1)], [1])[0].tolist() == [1]


def test_row_kernels_check_mask_sizes():
    w = torch.randn(4, 1000)
    for bad in (torch.ones(4, dtype=torch.bool), torch.ones(4, 1000, dtype=torch.uint8)):
        with pytest.raises(RuntimeError, match="mask must be bool with its layer's number of elements"):
            ops._C.row_value_window([w], [bad], [4], True, 0, 1 << 62, 10, 4)
        with pytest.raises(RuntimeError, match="mask must be bool"):
            ops._C.row_order_values([w], [bad], [4], True)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_fp64_rows_whose_squares_underflow_raise(backend):
    """LAMP per row squares each row's values: a float64 row of values below 2^-496 (whose layer's largest value
    is in range) raises naming the layer and row, for masks, counts and scores alike; magnitude per row and
    LAMP per layer do not square within the row and accept it."""
    w = torch.tensor([[1.0, 2.0, 3.0], [1e-320, 2e-320, 3e-320]], dtype=torch.float64)
    calls = [lambda: lk.prune_masks([w], 0.3, granularity="row", backend=backend),
             lambda: lk.layer_sparsities([w], 0.3, granularity="row", backend=backend),
             lambda: lk.lamp_scores([w], granularity="row", backend=backend)]
    for call in calls:
        with pytest.raises(ValueError, match=r"layer 0: the largest value of row 1, .* is below 2\^-496"):
            call()
    masked = torch.tensor([[True] * 3, [False] * 3])  # the tiny row masked out: fine
    assert int((~lk.prune_masks([w], 0.5, granularity="row", masks=[masked], backend=backend)[0]).sum()) == 3
    lk.prune_masks([w], 0.5, "global", granularity="row", backend=backend)
    lk.prune_masks([w], 0.5, backend=backend)


def test_cpu_row_selection_is_streamed(monkeypatch):
    """LAMP per row on CPU tensors takes the streamed selection, and the values path is not called."""
    calls = []
    streamed = streamed_selection.select_counts
    monkeypatch.setattr(streamed_selection, "select_counts", lambda *a: calls.append(1) or streamed(*a))
    monkeypatch.setattr(sorted_selection, "select_counts", None)
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(4))
    got = lk.prune_masks([w], 0.5, granularity="row", backend="cpu")
    assert calls and int((~got[0]).sum()) == 64
    assert plan.streamed_selection is streamed_selection


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_kernels_large_units_use_the_radix_sort(dtype):
    """Units above the std::sort size take a radix sort (packed with the column for 16- and 32-bit keys): same
    order, ties in column order."""
    g = torch.Generator().manual_seed(9)
    w = (torch.randint(0, 50, (3, 5000), generator=g) * 0.125).to(dtype)
    m = torch.rand(3, 5000, generator=g) > 0.2
    for r in (1, 3):
        _same(ops._C.row_order_values([w], [m], [r], True), rows.row_order_values_ref([w], [m], [r], True), "values")
        c = [torch.tensor([4000] * r)]
        _same(ops._C.row_cut_masks([w], [m], [r], c), rows.row_cut_masks_ref([w], [m], [r], c), "masks")
    # a unit above the size whose sort buffers stay with the thread
    huge = (torch.randint(0, 300, (70000,), generator=g) * 0.25).to(dtype)
    _same(ops._C.row_order_values([huge], [None], [1], True), rows.row_order_values_ref([huge], [None], [1], True),
          "huge unit")
    # keys whose every radix digit varies: magnitudes over many binades, signs mixed
    wide = (torch.randn(2, 3000, generator=g) * torch.exp(3 * torch.randn(3000, generator=g))).clamp(-1e4, 1e4)
    wide = wide.to(dtype)
    for lamp in (True, False):
        _same(ops._C.row_order_values([wide], [None], [2], lamp), rows.row_order_values_ref([wide], [None], [2], lamp),
              "wide values")
    _same(ops._C.row_lamp_scores([wide], [None], [2], True), rows.row_lamp_scores_ref([wide], [None], [2], True),
          "wide scores")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cut_masks_by_selection_at_every_count(dtype):
    """row_cut_masks selects instead of sorting: every count from 0 to past the row, on ties that fill one
    selection bucket, straddle buckets or sit at its edges, zeros, masked rows (all masked, none masked) and
    one-element rows, against the twin's stable sort."""
    g = torch.Generator().manual_seed(13)
    levels = torch.tensor([0.0, 2.0 ** -20, 0.75, 1.0, 1.0 + 2.0 ** -7, 1.5, 3.0, 2.0 ** 10])
    cols = 17
    w = levels[torch.randint(0, len(levels), (6, cols), generator=g)]
    w[0] = 1.0  # all equal
    w[1, ::2] = -w[1, ::2]  # signs do not matter
    w = w.to(dtype)
    m = torch.rand(6, cols, generator=g) > 0.3
    m[2] = False
    m[3] = True
    one = torch.randn(4, 1, generator=g).to(dtype)
    for count in range(cols + 2):
        c = [torch.full((6,), count), torch.full((4,), min(count, 2))]
        for masks in ([m, None], [None, torch.tensor([[True], [False], [True], [True]])]):
            _same(ops._C.row_cut_masks([w, one], masks, [6, 4], c),
                  rows.row_cut_masks_ref([w, one], masks, [6, 4], c), f"count {count}")
    # one large unit whose selection bucket holds most of it
    big = (1.0 + torch.randint(0, 4, (20000,), generator=g) * 2.0 ** -9).to(dtype)
    bm = torch.rand(20000, generator=g) > 0.1
    for count in (1, 7000, 12345, 19999):
        c = [torch.tensor([count])]
        _same(ops._C.row_cut_masks([big], [bm], [1], c), rows.row_cut_masks_ref([big], [bm], [1], c), "big")


def test_global_is_the_same_at_both_granularities():
    layers = _layers("scaled_copies", torch.float32)
    for s in (0.3, 0.8):
        a = lk.prune_masks(layers, s, "global", granularity="row", backend="reference")
        _same(a, lk.prune_masks(layers, s, "global", backend="reference"), "global")


def test_uniform_rows_is_wandas_rule():
    """uniform at row granularity prunes round(s * row length) in every row, the lowest keys first."""
    g = torch.Generator().manual_seed(10)
    w = torch.randn(6, 10, generator=g)
    imp = w.abs() * torch.rand(10, generator=g)
    m = lk.prune_masks(w, 0.35, "uniform", importance=imp, granularity="row", backend="cpu")
    assert ((~m).sum(1) == round(0.35 * 10)).all()
    for r in range(6):
        assert imp[r][~m[r]].max() <= imp[r][m[r]].min()


def _reference_counts(values, k, least, most):
    """sorted_selection's contract written out: sort (value, layer, row, position) entries."""
    n = len(values)
    least = least or [0] * n
    most = most or [v.numel() for v in values]
    masked = [int((v == 0).sum()) for v in values]
    counts = [[int((row == 0).sum()) for row in v] for v in values]
    forced, cands = [], []
    for i, v in enumerate(values):
        own = sorted((int(x), r, p) for r, row in enumerate(v) for p, x in enumerate(row.tolist()) if x != 0)
        first = max(0, least[i] - masked[i])
        for _, r, _ in own[:first]:
            counts[i][r] += 1
        forced.append(first)
        cands += [(x, i, r, p) for x, r, p in own[first: most[i] - masked[i]]]
    for _, i, r, _ in sorted(cands)[: max(0, k - sum(masked) - sum(forced))]:
        counts[i][r] += 1
    return counts


@pytest.mark.parametrize("seed", range(6))
def test_sorted_selection_against_its_contract(seed):
    g = torch.Generator().manual_seed(seed)
    values = []
    for r, c in [(3, 7), (1, 20), (5, 4), (2, 1)]:
        v = torch.randint(0, 6, (r, c), generator=g)  # heavy ties, zeros = masked
        values.append(torch.sort(v, dim=1).values)
    total = sum(v.numel() for v in values)
    for k in range(0, total + 1, 3):
        for least, most in [(None, None), ([3, 2, 0, 0], [18, 15, 20, 2]), ([0, 10, 5, 1], None)]:
            masked = [int((v == 0).sum()) for v in values]
            lo = least or [0] * 4
            hi = most or [v.numel() for v in values]
            try:
                allocation.check_bounds([str(i) for i in range(4)], [v.numel() for v in values], masked, k, lo, hi)
            except ValueError:
                continue
            got = sorted_selection.select_counts(values, k, least, most)
            assert [c.tolist() for c in got] == _reference_counts(values, k, least, most), (k, least, most)


@pytest.mark.parametrize("seed", range(4))
def test_sampled_bracket_against_the_contract(seed, monkeypatch):
    """The sampled bracket (normally for a million values or more) on small inputs: long rows, rows shorter than
    the stride, heavy ties and masked values, with and without bounds, at every eighth k, against the contract."""
    monkeypatch.setattr(sorted_selection, "_SAMPLED_MIN", 0)
    g = torch.Generator().manual_seed(seed)
    values = []
    for r, c, distinct in [(6, 900, 10**9), (300, 3, 50), (4, 1000, 7), (1, 1, 5)]:
        v = torch.randint(0, distinct, (r, c), generator=g)  # zeros are masked values
        values.append(torch.sort(v, dim=1).values)
    total = sum(v.numel() for v in values)
    sizes = [v.numel() for v in values]
    for k in [*range(0, total + 1, total // 8), total - 1, total]:
        for least, most in [(None, None), ([100, 200, 10, 0], [5000, 900, 4000, 1]), (None, [6000, 900, 4000, 1])]:
            masked = [int((v == 0).sum()) for v in values]
            try:
                allocation.check_bounds([str(i) for i in range(4)], sizes, masked, k, least or [0] * 4, most or sizes)
            except ValueError:
                continue
            got = sorted_selection.select_counts(values, k, least, most)
            assert [c.tolist() for c in got] == _reference_counts(values, k, least, most), (k, least, most)


def test_sampled_bracket_at_the_ends(monkeypatch):
    """Many rows whose lengths are multiples of the stride: near k = n the window around the expected sample rank
    reaches past the sample's end (and near 0 before its start); the result equals plain bisection's."""
    g = torch.Generator().manual_seed(5)
    values = [torch.sort(torch.randint(0, 1000, (400, 400), generator=g), dim=1).values]
    n = values[0].numel()
    for k in (0, 1, 5000, n - 5000, n - 1, n):
        monkeypatch.setattr(sorted_selection, "_SAMPLED_MIN", 0)
        got = sorted_selection.select_counts(values, k)
        monkeypatch.setattr(sorted_selection, "_SAMPLED_MIN", n + 1)
        assert torch.equal(got[0], sorted_selection.select_counts(values, k)[0]), k


@pytest.mark.parametrize("seed", range(3))
def test_bounds_on_the_cut_solver_match_reference(seed):
    """Density bounds at layer granularity run on the cut solver (each layer's count clamped to its bounds; a
    layer whose bounds alone decide its count is cut at that count): layers of every dtype, ties, zeros, masks,
    a one-weight layer, bounds that pin layers at either end and equal bounds, against the reference."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i, n in enumerate([3000, 50, 7, 1200, 4500, 1, 300]):
        w = torch.randn(n, generator=g) * 10.0 ** (i % 3 - 1)
        if i % 2:
            w = torch.round(w * 4) / 4  # ties and zeros
        layers.append(w.to(DTYPES[(i + seed) % 4]))
    masks = [torch.rand(w.shape, generator=g) > 0.25 if j % 3 == 0 else None for j, w in enumerate(layers)]
    for method in ("lamp", "global"):
        for s in (0.1, 0.5, 0.9):
            for lo, hi in ((0.2, None), (None, 0.4), (0.3, 0.7), (0.05, 0.95), (0.5, 0.5)):
                _cpu_as_reference(layers, s, method, f"{method} s={s} ({lo}, {hi})", masks=masks, min_density=lo,
                                  max_density=hi)


def test_bounds_report_bad_values_first():
    """With bounds on the cut solver the values are checked in the summary pass, before the bounds: a bad
    importance is named as on every other path, even where the bounds are infeasible too."""
    w = [torch.randn(8, 4), torch.randn(8, 4)]
    nan = [torch.rand(8, 4), torch.rand(8, 4)]
    nan[1][0, 0] = float("nan")
    negative = [torch.rand(8, 4), -torch.rand(8, 4)]
    overflow = [lk.ColumnScaled(torch.full((4,), 3e38)), lk.ColumnScaled(torch.ones(4))]
    for keys, ws, s, lo in ((nan, w, 0.5, 0.3), (negative, w, 0.9, 0.5), (overflow, [x * 1e3 for x in w], 0.9, 0.5)):
        messages = []
        for backend in ("cpu", "reference"):
            with pytest.raises(ValueError) as got:
                lk.prune_masks(ws, s, importance=keys, min_density=lo, backend=backend)
            messages.append(str(got.value))
        assert messages[0] == messages[1] and "importance" in messages[0], messages
    with pytest.raises(RuntimeError, match="or neither"):
        ops.solver([0], [torch.tensor([1])], [torch.tensor([2])], [torch.zeros(1, 0, dtype=torch.int64)],
                   True).plan_global(1, [], [2])


def test_bounds_hold_and_are_exact():
    g = torch.Generator().manual_seed(12)
    layers = [torch.randn(10, 10, generator=g) * 10, torch.randn(10, 10, generator=g) * 0.01,
              torch.randn(10, generator=g)]
    for gran in ("layer", "row"):
        free = lk.layer_sparsities(layers, 0.5, "global", granularity=gran, backend="cpu")
        assert free[1] == 1.0 and free[0] < 0.1  # global magnitude empties the small-magnitude layer
        got = lk.layer_sparsities(layers, 0.5, "global", granularity=gran, min_density=0.3, max_density=0.9,
                                  backend="cpu")
        assert got == [0.28, 0.7, 0.7]  # layers 1 and 2 at their cap, layer 0 takes the rest of the 105
        got = lk.layer_sparsities(layers, 0.5, granularity=gran, min_density=0.45, max_density=0.55, backend="cpu")
        assert all(0.45 - 1e-12 <= s <= 0.55 + 1e-12 for s in got)
        assert round(sum(s * w.numel() for s, w in zip(got, layers))) == 105
    # 0.3 * 10 keeps 3 (not 4, as ceil(0.3 * 10) would in floating point)
    assert allocation.prune_bounds([10], 0.3, None) == ([0], [7])


def test_infeasible_bounds_raise():
    layers = [torch.randn(10, 10), torch.randn(10)]
    for backend in ("reference", "cpu"):
        with pytest.raises(ValueError, match="max_density forces"):
            lk.prune_masks(layers, 0.3, min_density=None, max_density=0.5, backend=backend)
        with pytest.raises(ValueError, match="min_density lets"):
            lk.prune_masks(layers, 0.8, min_density=0.5, backend=backend)
        masks = [torch.zeros(10, 10, dtype=torch.bool), None]
        with pytest.raises(ValueError, match="layer 0: its masks already prune"):
            lk.prune_masks(layers, 0.9, masks=masks, min_density=0.1, backend=backend)
        with pytest.raises(ValueError, match="layer 0: no density"):
            lk.prune_masks([torch.randn(1), torch.randn(10)], 0.5, min_density=0.3, max_density=0.6, backend=backend)


def test_option_errors():
    w = [torch.randn(4, 4)]
    with pytest.raises(ValueError, match="granularity"):
        lk.prune_masks(w, 0.5, granularity="column")
    with pytest.raises(ValueError, match="min_density 0.6 is larger"):
        lk.prune_masks(w, 0.5, min_density=0.6, max_density=0.5)
    with pytest.raises(ValueError, match="fixes every layer's density"):
        lk.prune_masks(w, 0.5, "uniform", min_density=0.1)
    with pytest.raises(ValueError, match="max_density must be in"):
        lk.prune_masks(w, 0.5, max_density=1.5)
    with pytest.raises(ValueError, match="owl_m"):
        lk.prune_masks(w, 0.5, "owl", owl_m=float("nan"))
    with pytest.raises(ValueError, match="granularity"):
        lk.lamp_scores(w, granularity="block")
    if "triton" in lk.available_backends():
        with pytest.raises(ValueError, match="backend 'triton' selects whole layers"):
            lk.prune_masks(w, 0.5, granularity="row", backend="triton")


def test_reference_units_and_options():
    assert [list(u) for u in reference.units((2, 3), "row")] == [[0, 1, 2], [3, 4, 5]]
    assert [list(u) for u in reference.units((2, 3), "layer")] == [list(range(6))]
    assert [list(u) for u in reference.units((4,), "row")] == [list(range(4))]
    assert check_options("lamp").is_plain() and not check_options("lamp", "row").is_plain()
    assert Layers.from_inputs([torch.ones(2)]).with_masks([None]).masks == [None]


def test_cuda_row_segment_tables():
    """The host side of cuda_rows.py (the GPU run itself is in test_gpu_importance.py): one segment per row,
    scores shared in flat order, values pointing at each row's slice, tiles never crossing rows."""
    from lamp_kernels import cuda_rows

    table, tiles = cuda_rows.segment_table(3, 5000, 1000, 0)
    assert tiles == 6
    assert [table[i:i + 6] for i in range(0, 18, 6)] == [[0, 5000, 0, 1000, 0, 0], [5000, 5000, 2, 1000, 0, 0],
                                                         [10000, 5000, 4, 1000, 0, 0]]
    table, tiles = cuda_rows.segment_table(2, 7, 0, 8000)
    assert tiles == 2 and table == [0, 7, 0, 0, 8000, 0, 7, 7, 1, 0, 8000 + 8 * 7, 0]
    assert cuda_rows.segment_offsets(3, 5) == [0, 5, 10, 15]


@pytest.mark.parametrize("dtype", DTYPES[:3], ids=str)
def test_row_scores_with_narrow_and_wide_sums(dtype):
    """Units whose squares fit one 128-bit sum take a fast scan, wider ones the exact wide sum: rows around the
    limit (fp32: 33 binades in a row of 40, bf16: 49), with ties, zeros and subnormals, equal the twins."""
    g = torch.Generator().manual_seed(14)
    rows_ = []
    fp16 = dtype == torch.float16  # 40 binades in all, so always narrow
    for span in (0, 10, 20, 30, 38) if fp16 else (0, 10, 32, 33, 34, 36, 48, 49, 50, 60):
        e = torch.randint(0, span + 1, (40,), generator=g).double()
        e[0], e[1] = 0, span  # the row spans exactly `span` binades
        v = (1 + torch.randint(0, 4, (40,), generator=g) / 8) * torch.pow(2.0, e - (24 if fp16 else span // 2))
        v[torch.rand(40, generator=g) < 0.1] = 0.0
        rows_.append(v * torch.where(torch.rand(40, generator=g) < 0.5, -1.0, 1.0))
    w = torch.stack(rows_).to(dtype)
    low = {torch.float16: -24, torch.bfloat16: -133}.get(dtype, -149)  # the smallest subnormal
    tiny = (torch.tensor([[1.0, 3.0, 2.0 ** 10, 2.0 ** 16, 0.0, 1.0]]) * 2.0 ** low).to(dtype)
    layers = [w, tiny]
    if not fp16:  # the sum 2^53 + 1 + 2^-12 lies just above a float64 tie that only its lowest bit breaks
        layers.append(torch.tensor([2.0 ** 26, 1.0, 2.0 ** -6, 2.0 ** 26]).to(dtype))
    masks = [torch.rand(w.shape, generator=g) > 0.2] + [None] * (len(layers) - 1)
    rows_per = [w.shape[0]] + [1] * (len(layers) - 1)
    for lamp in (True, False):
        _same(ops._C.row_order_values(layers, masks, rows_per, lamp),
              rows.row_order_values_ref(layers, masks, rows_per, lamp), "order values")
    for f64 in (True, False):
        _same(ops._C.row_lamp_scores(layers, masks, rows_per, f64),
              rows.row_lamp_scores_ref(layers, masks, rows_per, f64), "scores")
    # the window reads the narrow units' scores from their kept suffix sums, the wide units' computed in full
    values = torch.cat(rows.row_order_values_ref(layers, masks, rows_per, True))
    middle = int(values.median())
    for lo, hi in [(0, (1 << 63) - 1), (middle // 2, middle), (middle, middle + (1 << 52))]:
        got = ops._C.row_value_window(layers, masks, rows_per, True, lo, hi, 1 << 20, 64)
        want = rows.row_value_window_ref(layers, masks, rows_per, True, lo, hi, 1 << 20, 64)
        for part, g_, w_ in zip(("le_lo", "le_hi", "inside"), got[:3], want[:3]):
            _same(g_, w_, f"window ({lo}, {hi}]: {part}")
        assert torch.equal(got[3], want[3])
