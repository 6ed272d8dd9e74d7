"""ColumnScaled importance (|W_ij| * s_j computed as the weights are read): every path equals the same
selection on the materialised float32 importance, the CPU kernels compute it without making it, and bad
scales or overflowing products raise."""

import pytest
import torch
from cases import CASES, DTYPES, random_masks

import lamp_kernels as lk
from lamp_kernels import importance as importance_module
from lamp_kernels import ops
from lamp_kernels.importance import ColumnScaled

CPU = "cpu" in lk.available_backends()
pytestmark = pytest.mark.skipif(not CPU, reason="the C++ extension is not built")


def tie_scales(layers, seed=0):
    """Per-column scales from a few repeated values, exact zeros among them: ties across columns and layers."""
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0, 0.75])
    return [values[torch.randint(0, 6, (w.shape[-1],), generator=g)] for w in layers]


def materialised(layers, scales):
    return [w.abs().float() * s for w, s in zip(layers, scales)]


def _same(got, want, label):
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"{label}: layer {i} differs in {int((g != w).sum())} of {w.numel()} entries"


def edge_layers(dtype):
    """Sizes around the kernels' edges: a 2048-importance block ending inside a row, rows longer than a
    block, layers above the small-layer size (dense summaries) and below it, one element, 1-D and 4-D."""
    g = torch.Generator().manual_seed(11)
    shapes = [(300, 77), (3, 5000), (2, 2049), (64, 3, 3, 7), (1,), (4097,), (5, 3), (2, 2048)]
    values = torch.tensor([0.0, 0.25, 0.5, 1.0, -1.0, 2.0, -0.5])  # bf16-style ties, zeros, both signs
    return [values[torch.randint(0, 7, s, generator=g)].to(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES) + ["edges"])
def test_column_scaled_equals_the_materialised_importance(dtype, case):
    layers = edge_layers(dtype) if case == "edges" else CASES[case](dtype)
    scales = tie_scales(layers, seed=DTYPES.index(dtype))
    full = materialised(layers, scales)
    cs = [ColumnScaled(s) for s in scales]
    masks = random_masks(layers) if DTYPES.index(dtype) % 2 else None
    for method in lk.ALL_METHODS:
        for s in (0.0, 0.3, 0.7) + ((1.0,) if method in ("lamp", "global") else ()):
            want = lk.prune_masks(layers, s, method, masks=masks, importance=full, backend="reference")
            for backend in ("reference", "cpu"):
                got = lk.prune_masks(layers, s, method, masks=masks, importance=cs, backend=backend)
                _same(got, want, f"{backend} {method} s={s}")
            frac = lk.layer_sparsities(layers, s, method, masks=masks, importance=cs)
            assert frac == [float((~m).sum()) / m.numel() for m in want]


def test_every_option_equals_the_materialised_importance():
    layers = edge_layers(torch.bfloat16)
    scales = tie_scales(layers, seed=5)
    full, cs = materialised(layers, scales), [ColumnScaled(s) for s in scales]
    masks = random_masks(layers, seed=6)
    options = [dict(granularity="row"), dict(method="uniform", granularity="row"),
               dict(max_density=0.9), dict(method="owl", blocks=[0, 0, 1, 1, 1, 2, 2, 2])]
    for kw in options:
        kw = dict(kw)
        method = kw.pop("method", "lamp")
        want = lk.prune_masks(layers, 0.6, method, masks=masks, importance=full, **kw)
        _same(lk.prune_masks(layers, 0.6, method, masks=masks, importance=cs, **kw), want, str(kw))
    rows = [w for w in layers if w.dim() == 2 and w.shape[-1] % 4 == 0]  # N:M needs rows in groups of M
    rows_scales = [s for w, s in zip(layers, scales) if w.dim() == 2 and w.shape[-1] % 4 == 0]
    assert len(rows) == 2
    want = lk.prune_masks(rows, 0.6, nm=(2, 4), importance=materialised(rows, rows_scales))
    _same(lk.prune_masks(rows, 0.6, nm=(2, 4), importance=[ColumnScaled(s) for s in rows_scales]), want, "2:4")
    for gran in ("layer", "row"):
        want = lk.lamp_scores(layers, masks, importance=full, granularity=gran, dtype=torch.float64)
        _same(lk.lamp_scores(layers, masks, importance=cs, granularity=gran, dtype=torch.float64), want, gran)
    # mixed: some layers by a tensor, some ColumnScaled, in a dict
    mixed = {str(i): (cs[i] if i % 2 else full[i]) for i in range(len(layers))}
    named = {str(i): w for i, w in enumerate(layers)}
    want = lk.prune_masks(named, 0.5, importance={str(i): f for i, f in enumerate(full)})
    _same(list(lk.prune_masks(named, 0.5, importance=mixed).values()), list(want.values()), "mixed")


def test_the_cpu_pipeline_never_makes_the_importance(monkeypatch):
    """On the plain path the C++ kernels compute each importance as they read the weight: the function that
    makes a full-size importance tensor is not called, and the scaled kernels are."""
    g = torch.Generator().manual_seed(2)
    layers = [torch.randn(200, 300, generator=g).bfloat16(), torch.randn(64, 100, generator=g).bfloat16()]
    scales = [torch.rand(300, generator=g), torch.rand(100, generator=g)]
    want = lk.prune_masks(layers, 0.5, importance=materialised(layers, scales))
    want_sparsities = lk.layer_sparsities(layers, 0.5, importance=materialised(layers, scales))
    calls = []
    for name in ("bin_summaries_scaled", "gather_bin_keys_scaled", "apply_cuts_scaled", "cut_and_gather"):
        op = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _op=op, _name=name: calls.append((_name, a)) or _op(*a))

    def refuse(*_):
        raise AssertionError("a full-size importance tensor was made")

    monkeypatch.setattr(importance_module, "scaled_importance", refuse)
    monkeypatch.setattr("lamp_kernels.selection.scaled_importance", refuse)
    got = lk.prune_masks(layers, 0.5, importance=[ColumnScaled(s) for s in scales])
    _same(got, want, "fused")
    # masks: the candidates gathered in the cut pass, with the scales (on the CPU, not the default's keys)
    assert [name for name, _ in calls][:1] == ["bin_summaries_scaled"]
    assert any(name == "cut_and_gather" and len(a[2]) > 0 for name, a in calls)
    calls.clear()
    assert lk.layer_sparsities(layers, 0.5, importance=[ColumnScaled(s) for s in scales]) == want_sparsities
    assert {"bin_summaries_scaled", "gather_bin_keys_scaled"} <= {name for name, _ in calls}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_rule_and_owl_never_make_the_importance(monkeypatch, dtype):
    """Wanda's per-row rule and OWL on CPU tensors: the value check, OWL's statistics and the row cuts make each
    block's or row's importances as they read the weight (the _scaled kernels); no full-size tensor is made, and
    the masks and layer sparsities equal those of the materialised importance. Rows longer than a 16384-key
    block of OWL's passes, masked weights, ties and zeros (tie_scales)."""
    g = torch.Generator().manual_seed(12)
    values = torch.tensor([0.0, 0.25, 0.5, 1.0, -1.0, 2.0, -0.5, 3.0])
    layers = [values[torch.randint(0, 8, s, generator=g)].to(dtype) for s in ((40, 300), (3, 20000), (9, 7))]
    layers[1] = layers[1] + torch.randn(3, 20000, generator=g).to(dtype)  # many distinct keys too
    scales = tie_scales(layers, seed=13)
    full, cs = materialised(layers, scales), [ColumnScaled(s) for s in scales]
    masks = random_masks(layers, seed=14)
    blocks = [0, 1, 2]  # three blocks: the middle one's density depends on every ratio, not only their order
    options = [dict(method="uniform", granularity="row"), dict(method="erk", granularity="row"),
               dict(method="owl", granularity="row", blocks=blocks, owl_m=2.0, owl_lambda=0.2),
               dict(method="owl", blocks=blocks, owl_m=2.0, owl_lambda=0.2)]
    wants = [(lk.prune_masks(layers, 0.6, masks=masks, importance=full, backend="reference", **kw),
              lk.layer_sparsities(layers, 0.6, masks=masks, importance=full, backend="reference", **kw))
             for kw in options]

    def refuse(*_):
        raise AssertionError("a full-size importance tensor was made")

    monkeypatch.setattr(importance_module, "scaled_importance", refuse)
    monkeypatch.setattr("lamp_kernels.owl.scaled_importance", refuse)
    monkeypatch.setattr("lamp_kernels.selection.scaled_importance", refuse)
    for kw, (want, want_sparsities) in zip(options, wants):
        _same(lk.prune_masks(layers, 0.6, masks=masks, importance=cs, **kw), want, str(kw))
        assert lk.layer_sparsities(layers, 0.6, masks=masks, importance=cs, **kw) == want_sparsities, kw
    # N:M (rows in groups of 4): the pattern ranks the importances as the C++ pass reads the weights, then the
    # selection runs on the same unmade keys (the plain path, the per-row rule, OWL)
    nm_layers, nm_cs, nm_masks = layers[:2], cs[:2], masks[:2]
    for kw in (dict(method="lamp"), dict(method="global"), dict(method="uniform", granularity="row"),
               dict(method="owl", granularity="row", blocks=[0, 1], owl_m=2.0, owl_lambda=0.2)):
        monkeypatch.undo()
        want = lk.prune_masks(nm_layers, 0.7, masks=nm_masks, importance=full[:2], nm=(2, 4), backend="reference",
                              **kw)
        monkeypatch.setattr(importance_module, "scaled_importance", refuse)
        monkeypatch.setattr("lamp_kernels.owl.scaled_importance", refuse)
        monkeypatch.setattr("lamp_kernels.selection.scaled_importance", refuse)
        _same(lk.prune_masks(nm_layers, 0.7, masks=nm_masks, importance=nm_cs, nm=(2, 4), **kw), want, f"2:4 {kw}")
    # 2:4 at 50% (no mask given): the pattern meets the budget, and its masks are the answer (no selection)
    monkeypatch.undo()
    want = lk.prune_masks(nm_layers, 0.5, "uniform", importance=full[:2], nm=(2, 4), backend="reference")
    monkeypatch.setattr(importance_module, "scaled_importance", refuse)
    _same(lk.prune_masks(nm_layers, 0.5, "uniform", importance=nm_cs, nm=(2, 4)), want, "2:4 at 50%")


def test_scaled_row_and_owl_kernels_equal_the_plain_ones_on_the_made_keys():
    """ops.row_cut_masks_scaled and the _C scaled statistics against the plain kernels on the materialised
    importance: every dtype, masks, rows of one element, whole-layer units (rows=1), thresholds on key
    values and between them."""
    g = torch.Generator().manual_seed(15)
    for dtype in DTYPES:
        ws = [torch.randn(37, 300, generator=g).to(dtype), torch.randn(5, 40000, generator=g).to(dtype),
              torch.randn(6, 1, generator=g).to(dtype), torch.randn(7, generator=g).to(dtype), torch.randn(5, 0),
              torch.randn(0)]
        ws[4:] = [w.to(dtype) for w in ws[4:]]  # empty layers: rows without columns, and one empty unit
        sc = [torch.rand(w.shape[-1], generator=g) for w in ws]
        sc[0][::7] = 0.0
        ms = [torch.rand(w.shape, generator=g) > 0.3 for w in ws]
        ms[1] = None
        full = materialised(ws, sc)
        assert torch.equal(ops._C.significand_sums_scaled(ws, ms, sc), ops._C.significand_sums(full, ms)), dtype
        for t in ([0.3, 0.7, 0.1, 0.2, 0.0, 0.0], [float(full[0][3, 5]), 0.0, -1.0, float(full[3][2]), -1.0, 1.0]):
            assert torch.equal(ops._C.count_above_scaled(ws, ms, t, sc), ops._C.count_above(full, ms, t)), dtype
        assert ops._C.alive_max_abs_scaled(ws, ms, sc) == ops._C.alive_max_abs(full, ms), dtype
        for rows in ([37, 5, 6, 1, 5, 1], [1, 1, 1, 1, 1, 1]):
            counts = [torch.randint(0, w.numel() // r + 1 if w.numel() else 1, (r,), generator=g)
                      for w, r in zip(ws, rows)]
            want = ops.row_cut_masks(full, ms, rows, counts)
            _same(ops.row_cut_masks_scaled(ws, ms, sc, rows, counts), want, f"{dtype} rows={rows}")
        for w, m, s, f in zip(ws[:2], ms[:2], sc[:2], full[:2]):  # N:M: groups of 4 along rows, and of 5
            for n, k in ((2, 4), (1, 4), (3, 5), (0, 4), (4, 4)):
                assert torch.equal(ops._C.nm_keep_scaled(w, m, s, n, k), ops._C.nm_keep(f, m, n, k)), (dtype, n, k)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_ties_across_chunks(threads):
    """Layers of many chunks with heavy ties: the cut falls inside a tie group and equal importances are
    pruned in flat order across chunk and block edges (each chunk's count of equal keys, then its rank)."""
    g = torch.Generator().manual_seed(8)
    values = torch.tensor([0.0, 0.5, 1.0, -1.0, 2.0])
    layers = [values[torch.randint(0, 5, (600, 1001), generator=g)].bfloat16(),
              values[torch.randint(0, 5, (333, 777), generator=g)].float()]
    scales = [torch.tensor([1.0, 2.0, 0.5])[torch.randint(0, 3, (w.shape[-1],), generator=g)] for w in layers]
    masks = random_masks(layers, seed=9)
    full, cs = materialised(layers, scales), [ColumnScaled(s) for s in scales]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for method, s in (("lamp", 0.37), ("global", 0.61), ("uniform", 0.45)):
            want = lk.prune_masks(layers, s, method, masks=masks, importance=full, backend="reference")
            _same(lk.prune_masks(layers, s, method, masks=masks, importance=cs), want, f"{method} {s}")
    finally:
        torch.set_num_threads(before)


def test_the_product_is_float32_as_torch_rounds_it():
    """fp64 weights: |w| rounds to float32 first, then one float32 multiply (what torch computes)."""
    w = torch.tensor([[1.0 + 2.0**-40, 3.0, 1e-3], [2.0**-30, 7.0, 0.1]], dtype=torch.float64)
    s = torch.tensor([3.0, 1.0 / 3.0, 10.0], dtype=torch.float64)
    want = lk.prune_masks(w, 0.5, importance=w.abs().float() * s.float(), backend="reference")
    _same([lk.prune_masks(w, 0.5, importance=ColumnScaled(s))], [want], "fp64")


def test_bad_scales_and_overflowing_products():
    g = torch.Generator().manual_seed(3)
    w = [torch.randn(6, 5, generator=g), torch.randn(7, generator=g)]
    ok = [torch.ones(5), torch.ones(7)]
    bad = {
        "shape": ([torch.ones(6), ok[1]], ValueError, "layer 0: ColumnScaled scale of shape"),
        "negative": ([ok[0], -ok[1]], ValueError, "ColumnScaled scale.*negative"),
        "nan": ([ok[0].clone().fill_(float("nan")), ok[1]], ValueError, "ColumnScaled scale.*NaN"),
        "inf after float32": ([ok[0], ok[1].double() * 1e300], ValueError, "ColumnScaled scale.*Inf"),
        "device": ([ok[0].to("meta"), ok[1]], ValueError, "layer 0: ColumnScaled scale is on meta"),
        "dtype": ([ok[0].int(), ok[1]], TypeError, "floating-point"),
    }
    for backend in ("reference", "cpu"):
        for scales, kind, message in bad.values():
            with pytest.raises(kind, match=message):
                lk.prune_masks(w, 0.5, importance=[ColumnScaled(s) for s in scales], backend=backend)
        with pytest.raises(ValueError, match="0-d weight"):
            lk.prune_masks(torch.tensor(1.0), 0.5, importance=ColumnScaled(torch.ones(1)), backend=backend)
        huge = [w[0] * 1e37, w[1]]  # |w| * 100 leaves float32's range
        for kw in ({}, {"granularity": "row"}, {"method": "uniform", "granularity": "row"}, {"method": "owl"},
                   {"method": "owl", "granularity": "row"}):
            with pytest.raises(ValueError, match="layer 0: the ColumnScaled importance .* NaN or Inf"):
                lk.prune_masks(huge, 0.5, importance=[ColumnScaled(ok[0] * 100), ColumnScaled(ok[1])],
                               backend=backend, **kw)
    # a NaN weight that is masked out is never read, by either path
    nan = w[0].clone()
    nan[0, 0] = float("nan")
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[0, 0] = False
    for backend in ("reference", "cpu"):
        for kw in ({}, {"method": "uniform", "granularity": "row"}, {"method": "owl", "granularity": "row"}):
            m = lk.prune_masks([nan, w[1]], 0.5, masks=[mask, None], importance=[ColumnScaled(s) for s in ok],
                               backend=backend, **kw)
            assert not m[0][0, 0]
            with pytest.raises(ValueError, match="layer 0: the ColumnScaled importance"):
                lk.prune_masks([nan, w[1]], 0.5, importance=[ColumnScaled(s) for s in ok], backend=backend, **kw)


def test_empty_and_wide_range_layers_on_the_row_paths():
    """Layers without elements or columns, a 1-D weight, and float64 weights far outside float32's range (their
    products round to 0 or overflow): the unmade keys of the per-row rule, OWL and N:M give the reference's
    masks, and an overflow raises as there."""
    g = torch.Generator().manual_seed(16)
    layers = [torch.randn(8, 12, generator=g).double() * 1e-60, torch.randn(5, 0).double(), torch.randn(0).double(),
              torch.randn(12, generator=g).double(), torch.randn(4, 8, generator=g).double() * 1e30]
    layers[0][0, :4] = 1.0  # a few keys in range beside products that round to 0
    scales = [torch.rand(w.shape[-1], generator=g) for w in layers]
    full, cs = materialised(layers, scales), [ColumnScaled(s) for s in scales]
    for kw in (dict(method="uniform", granularity="row"), dict(method="owl", granularity="row"), dict(method="owl"),
               dict(method="lamp", nm=(2, 4)), dict(method="uniform", granularity="row", nm=(1, 4))):
        kw = dict(kw)
        method = kw.pop("method")
        want = lk.prune_masks(layers, 0.5, method, importance=full, backend="reference", **kw)
        _same(lk.prune_masks(layers, 0.5, method, importance=cs, **kw), want, f"{method} {kw}")
        huge = [w * 1e10 if i == 4 else w for i, w in enumerate(layers)]  # 1e40 leaves float32's range
        with pytest.raises(ValueError, match="layer 4: the ColumnScaled importance .* NaN or Inf"):
            lk.prune_masks(huge, 0.5, method, importance=cs, **kw)


def test_the_first_error_is_the_references():
    """A column-scaled layer with a NaN product after a float64 importance tensor outside float64's range: every
    path names the column-scaled layer first, as the reference does (it makes the importances, checking them,
    before the other checks)."""
    fp64 = torch.full((4, 8), 1e-160, dtype=torch.float64)
    fp64[0, 0] = 1.0
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[0, 0] = False
    nan = torch.randn(4, 8)
    nan[1, 1] = float("nan")
    layers, masks = [torch.randn(4, 8, dtype=torch.float64), nan], [mask, None]
    importance = [fp64, ColumnScaled(torch.ones(8))]
    for kw in (dict(method="uniform", granularity="row"), dict(method="owl", granularity="row"),
               dict(method="owl"), dict(method="lamp", nm=(2, 4)), dict(method="uniform")):
        kw = dict(kw)
        method = kw.pop("method")
        messages = []
        for backend in ("reference", "cpu"):
            with pytest.raises(ValueError) as got:
                lk.prune_masks(layers, 0.5, method, masks=masks, importance=importance, backend=backend, **kw)
            messages.append(str(got.value))
        assert messages[0] == messages[1] and messages[0].startswith("layer 1"), (kw, messages)


def test_inputs_are_not_modified():
    w = torch.randn(30, 20, generator=torch.Generator().manual_seed(4)).bfloat16()
    s = torch.rand(20, dtype=torch.float64)
    w0, s0 = w.clone(), s.clone()
    lk.prune_masks(w, 0.5, importance=ColumnScaled(s))
    lk.prune_masks(w, 0.5, importance=ColumnScaled(s), granularity="row")
    assert torch.equal(w, w0) and torch.equal(s, s0)


@pytest.mark.skipif("triton" not in lk.available_backends(), reason="Triton (or its interpreter) is not available")
def test_triton_ranks_the_made_importance():
    """backend="triton" has no column-scaled kernels: the importance is made per layer, same masks."""
    layers = CASES["heavy_ties"](torch.bfloat16)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layers = [w.to(device) for w in layers]
    scales = [s.to(device) for s in tie_scales(layers, seed=9)]
    for method in ("lamp", "global", "uniform"):
        want = lk.prune_masks(layers, 0.6, method, importance=materialised(layers, scales), backend="reference")
        got = lk.prune_masks(layers, 0.6, method, importance=[ColumnScaled(s) for s in scales], backend="triton")
        _same(got, want, method)
