"""importance=: every backend against the reference on importance keys (ties, zeros, masked weights), at layer
granularity; the contract (selection on the keys, masks on the weights); bad importance."""

import pytest
import torch
from cases import CASES, DTYPES, random_masks

import lamp_kernels as lk
from lamp_kernels import reference

# Backends that take CPU tensors: the C++ kernels, and Triton through its interpreter when there is no GPU.
FAST = [b for b in lk.available_backends() if b == "cpu" or (b == "triton" and not torch.cuda.is_available())]
SCORES = [b for b in FAST if b != "triton"]
pytestmark = pytest.mark.skipif(not FAST, reason="no compiled backend built")
SPARSITIES = [0.0, 0.3, 0.7]


def importance_for(layers, dtype, seed=0):
    """Tie-heavy non-negative keys with exact zeros: |w| times a few repeated scales, some of them 0."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 3.0])
    return [(w.double().abs() * scales[torch.randint(0, 6, w.shape, generator=g)]).to(dtype) for w in layers]


def _same(got, want, label):
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.equal(g, w), f"{label}: layer {i} differs in {int((g != w).sum())} of {w.numel()} entries"


# The Triton interpreter is slow: it takes the two small tie-heavy cases (its kernels' own tests are test_triton.py).
COMBOS = [(b, d, c) for b in FAST for d in DTYPES for c in sorted(CASES)
          if b != "triton" or c in ("heavy_ties", "zeros_and_tiny")]


@pytest.mark.parametrize("backend,dtype,case", COMBOS, ids=[f"{b}-{d}-{c}" for b, d, c in COMBOS])
def test_importance_masks_match_reference(backend, dtype, case):
    layers = CASES[case](torch.float32)
    keys = importance_for(layers, dtype)
    masks = random_masks(layers) if (sorted(CASES).index(case) + DTYPES.index(dtype)) % 2 else None
    for method in lk.ALL_METHODS:
        for s in SPARSITIES:
            want = lk.prune_masks(layers, s, method, masks=masks, importance=keys, backend="reference")
            got = lk.prune_masks(layers, s, method, masks=masks, importance=keys, backend=backend)
            _same(got, want, f"{method} s={s}")
            frac = lk.layer_sparsities(layers, s, method, masks=masks, importance=keys, backend=backend)
            assert frac == [float((~m).sum()) / m.numel() for m in want]


@pytest.mark.parametrize("backend", SCORES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_importance_scores_match_reference(backend, dtype):
    layers = CASES["heavy_ties"](torch.float32)
    keys = importance_for(layers, dtype, seed=3)
    masks = random_masks(layers, seed=5)
    want = lk.lamp_scores(layers, masks, importance=keys, backend="reference", dtype=torch.float64)
    got = lk.lamp_scores(layers, masks, importance=keys, backend=backend, dtype=torch.float64)
    _same(got, want, "scores")


def test_selection_runs_on_the_keys_and_masks_apply_to_the_weights():
    """Importance equal to |w| reproduces magnitude pruning; importance reversed against |w| prunes the
    largest weights; the weights' own values never enter."""
    g = torch.Generator().manual_seed(1)
    w = [torch.randn(40, 30, generator=g), torch.randn(100, generator=g)]
    for backend in ["reference"] + FAST:
        for method in ("lamp", "global", "uniform"):
            plain = lk.prune_masks(w, 0.6, method, backend=backend)
            _same(lk.prune_masks(w, 0.6, method, importance=[x.abs() for x in w], backend=backend), plain, method)
        flipped = lk.prune_masks(w, 0.5, "uniform", importance=[1.0 / (x.abs() + 1.0) for x in w], backend=backend)
        for x, m in zip(w, flipped):
            assert x[~m].abs().min() >= x[m].abs().max()  # the largest half went


def test_importance_is_not_modified_and_zero_importance_goes_first():
    w = torch.randn(10, 10, generator=torch.Generator().manual_seed(2))
    imp = w.abs().clone()
    imp[3] = 0.0
    before = imp.clone()
    for backend in ["reference"] + FAST:
        m = lk.prune_masks(w, 0.1, "lamp", importance=imp, backend=backend)
        assert not m[3].any() and int((~m).sum()) == 10
    assert torch.equal(imp, before)


@pytest.mark.parametrize("backend", ["reference"] + FAST)
def test_bad_importance(backend):
    g = torch.Generator().manual_seed(3)
    w = [torch.randn(6, 5, generator=g), torch.randn(7, generator=g)]
    good = [x.abs() for x in w]
    cases = {
        "negative": ([good[0], -good[1]], ValueError, "layer 1: importance has negative"),
        "nan": ([good[0], good[1].clone().fill_(float("nan"))], ValueError, "layer 1: importance has NaN"),
        "inf": ([good[0].clone().fill_(float("inf")), good[1]], ValueError, "layer 0: importance has Inf"),
        "shape": ([good[0].t(), good[1]], ValueError, "layer 0: importance shape"),
        "device": ([good[0].to("meta"), good[1]], ValueError, "layer 0: importance is on meta"),
        "dtype": ([good[0].int(), good[1]], TypeError, "layer 0: importance dtype"),
        "length": ([good[0]], ValueError, "list of 2"),
        "container": ({"a": good[0]}, ValueError, "list of 2"),
        "not a tensor": ([good[0], [1.0] * 7], TypeError, "layer 1: importance must be a tensor"),
    }
    for imp, kind, message in cases.values():
        with pytest.raises(kind, match=message):
            lk.prune_masks(w, 0.5, importance=imp, backend=backend)
    with pytest.raises(ValueError, match="keys of weights"):
        lk.prune_masks({"a": w[0]}, 0.5, importance={"b": good[0]}, backend=backend)
    masked_nan = good[1].clone()
    masked_nan[0] = float("nan")  # importance is checked everywhere, masked entries included
    with pytest.raises(ValueError, match="NaN"):
        lk.prune_masks(w, 0.5, importance=[good[0], masked_nan],
                       masks=[None, torch.arange(7) > 0], backend=backend)


def test_negative_zero_counts_as_zero():
    w = torch.randn(8, generator=torch.Generator().manual_seed(4))
    imp = w.abs()
    imp[2] = -0.0
    assert not lk.prune_masks(w, 0.125, importance=imp, backend="reference")[2]


def test_reference_importance_is_reference_on_keys():
    """The spec: with importance, the reference equals the reference run on the keys as weights."""
    layers = CASES["scaled_copies"](torch.float32)
    keys = importance_for(layers, torch.float32, seed=7)
    for method in lk.ALL_METHODS:
        want = lk.prune_masks(keys, 0.55, method, backend="reference")
        _same(lk.prune_masks(layers, 0.55, method, importance=keys, backend="reference"), want, method)
    assert reference.ALL_METHODS == lk.ALL_METHODS and "owl" not in lk.METHODS


@pytest.mark.skipif("cpu" not in FAST, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_summary_pass_checks_importance_values(dtype, monkeypatch):
    """prune_masks and layer_sparsities on CPU importance tensors check the values in the summary pass
    (ops._C.bin_summaries_scanned), not in a pass of their own: every bad value -- negative, NaN (either
    sign), Inf, fp64 out of range -- at an alive or a masked-out position of a small (sorted) or a large
    (histogrammed, several chunks) layer raises the eager check's message; -0.0 and all-zero layers pass and
    select as +0.0."""
    from lamp_kernels import importance as imp_mod

    calls = []
    eager = imp_mod.check_importance_values
    monkeypatch.setattr(imp_mod, "check_importance_values", lambda t, name: (calls.append(name), eager(t, name)))
    g = torch.Generator().manual_seed(11)
    w = [torch.randn(3000, generator=g), torch.randn(300, 700, generator=g)]
    good = [x.abs().to(dtype) for x in w]
    masks = [torch.rand(x.shape, generator=g) > 0.3 for x in w]
    lk.prune_masks(w, 0.5, importance=good, masks=masks, backend="cpu")
    assert calls == []  # clean input: no eager pass
    bad = {"negative": -1e-3, "NaN": float("nan"), "-NaN": -float("nan"), "Inf": float("inf"),
           "-Inf": -float("inf")}
    if dtype == torch.float64:
        bad["outside"] = 2.0**500
    for layer in (0, 1):
        for alive in (True, False):
            spot = tuple(int(i[0]) for i in (masks[layer] == alive).nonzero()[:1].t())
            for label, value in bad.items():
                imp = [t.clone() for t in good]
                imp[layer][spot] = value
                message = {"NaN": "NaN", "-NaN": "NaN", "Inf": "Inf", "-Inf": "negative|Inf",
                           "negative": "negative", "outside": "outside"}[label]
                for fn in (lk.prune_masks, lk.layer_sparsities):
                    with pytest.raises(ValueError, match=f"layer {layer}: (largest )?importance .*({message})"):
                        fn(w, 0.5, importance=imp, masks=masks, backend="cpu")
    imp = [t.clone() for t in good]
    imp[1][::7] = -0.0
    imp[0].zero_()
    want = lk.prune_masks(w, 0.5, importance=[t.abs() for t in imp], masks=masks, backend="reference")
    got = lk.prune_masks(w, 0.5, importance=imp, masks=masks, backend="cpu")
    _same(got, want, "-0.0 and zeros")


@pytest.mark.skipif("cpu" not in FAST, reason="C++ extension not built")
def test_paths_that_rank_tensors_check_importance_values_first():
    """Every path other than the plain summary one (rows, bounds, N:M, OWL, scores, the reference) checks
    the deferred values before it ranks anything."""
    w = [torch.randn(64, 80), torch.randn(5000)]
    imp = [w[0].abs(), w[1].abs()]
    imp[1][17] = -1.0
    calls = [
        lambda: lk.prune_masks(w, 0.5, importance=imp, granularity="row", backend="cpu"),
        lambda: lk.prune_masks(w, 0.5, importance=imp, min_density=0.1, backend="cpu"),
        lambda: lk.prune_masks(w, 0.5, "uniform", importance=imp, nm=(2, 4), backend="cpu"),
        lambda: lk.prune_masks(w, 0.5, "owl", importance=imp, backend="cpu"),
        lambda: lk.lamp_scores(w, importance=imp, backend="cpu"),
        lambda: lk.prune_masks(w, 0.5, importance=imp, backend="reference"),
        lambda: lk.layer_sparsities(w, 0.5, "erk", importance=imp),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="layer 1: importance has negative"):
            call()


@pytest.mark.skipif("cpu" not in FAST, reason="C++ extension not built")
def test_deferred_value_checks_name_the_first_bad_layer_and_come_before_backend_errors():
    """With the values checked in the summary pass: the first bad layer in the caller's order is named across
    dtype groups, a dict key "" is checked like any other, and a bad value is reported before an unavailable
    backend (the order of the eager check)."""
    g = torch.Generator().manual_seed(17)
    w = [torch.randn(80, 90, generator=g) for _ in range(3)]
    imp = [w[0].abs(), -w[1].abs().half() - 1, -w[2].abs() - 2]
    with pytest.raises(ValueError, match="layer 1: importance has negative"):
        lk.prune_masks(w, 0.5, importance=imp)
    with pytest.raises(ValueError, match="^: importance has negative"):
        lk.prune_masks({"": w[0]}, 0.5, importance={"": -w[0].abs() - 1})
    with pytest.raises(ValueError, match="importance has NaN"):
        lk.layer_sparsities({"": w[0]}, 0.5, importance={"": torch.full_like(w[0], float("nan"))})
    for backend in ("cuda", "triton"):
        if backend not in lk.available_backends():
            with pytest.raises(ValueError, match="the tensor: importance has negative"):
                lk.prune_masks(w[0], 0.5, importance=-w[0].abs() - 1, backend=backend)


@pytest.mark.skipif("cpu" not in FAST, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_value_scan_finds_every_bad_value(dtype):
    """The C++ scan of the importance check: the largest magnitude (inf for NaN/Inf) and a negative value, with
    -0.0 not negative, against torch on every element."""
    from lamp_kernels import ops

    tiny = torch.finfo(dtype).smallest_normal / 4 if dtype != torch.bfloat16 else 1e-40
    base = torch.rand(5000, generator=torch.Generator().manual_seed(7)).to(dtype)
    cases = {"clean": base, "minus zero": base.clone().index_fill_(0, torch.tensor([17, 4999]), -0.0),
             "tiny negative": base.clone().index_fill_(0, torch.tensor([4998]), -tiny),
             "negative": base.clone().index_fill_(0, torch.tensor([0]), -1.0),
             "nan": base.clone().index_fill_(0, torch.tensor([2500]), float("nan")),
             "negative nan": base.clone().index_fill_(0, torch.tensor([2500]), -float("nan")),
             "-inf": base.clone().index_fill_(0, torch.tensor([3]), -float("inf")),
             "empty": base[:0], "one": base[:1]}
    tops, negative = ops._C.value_scan(list(cases.values()))
    for (label, t), top, neg in zip(cases.items(), tops, negative):
        want_top = 0.0 if not t.numel() else float(t.double().abs().max()) if bool(torch.isfinite(t).all()) \
            else float("inf")
        assert top == want_top, label
        signed = torch.signbit(t) & (t != 0)  # a NaN with its sign bit set counts as negative too
        assert neg == bool(signed.any()), label


@pytest.mark.skipif("cpu" not in FAST, reason="C++ extension not built")
def test_checked_importance_is_not_read_again(monkeypatch):
    """Importance tensors checked everywhere are not scanned a second time by Layers.check_values (the row,
    bound, N:M and OWL paths): only magnitude keys are."""
    from lamp_kernels import ops

    scans = []
    real = ops._C.alive_max_abs
    monkeypatch.setattr(ops._C, "alive_max_abs", lambda ws, ms: scans.append(len(ws)) or real(ws, ms))
    w = [torch.randn(16, 32), torch.randn(8, 8)]
    imp = [x.abs() * 2 for x in w]
    for kw in ({"granularity": "row"}, {"min_density": 0.2, "granularity": "row"}, {"nm": (2, 4)}):
        lk.prune_masks(w, 0.5, importance=imp, backend="cpu", **kw)
    assert scans == []
    lk.prune_masks(w, 0.5, granularity="row", backend="cpu")  # magnitude keys: the weights are checked
    assert scans == [2]


@pytest.mark.skipif("cpu" not in FAST, reason="C++ extension not built")
def test_float64_importance_range_is_checked_on_the_alive_values():
    """A float64 importance whose alive values all lie below 2^-496 raises even when a masked-out entry is large
    (the importance check, over every entry, does not bound the alive ones from below)."""
    w = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    imp = torch.full((4, 4), 1e-200, dtype=torch.float64)
    imp[0, 0] = 1.0
    m = torch.ones(4, 4, dtype=torch.bool)
    m[0, 0] = False
    with pytest.raises(ValueError, match="outside"):
        lk.lamp_scores([w], [m], importance=[imp], backend="cpu")
    with pytest.raises(ValueError, match="outside"):
        lk.prune_masks([w], 0.5, masks=[m], importance=[imp], granularity="row", backend="cpu")


@pytest.mark.skipif("cpu" not in FAST, reason="C++ extension not built")
def test_budget_shortcut_keeps_the_selections_errors():
    """Where the masks already meet a budget, the values are still checked as the selection checks them:
    column-scaled products past float32, NaN weights before an infeasible uniform_plus, and OWL's NaN weights."""
    big = lk.ColumnScaled(torch.full((4,), 3e38))
    with pytest.raises(ValueError, match="ColumnScaled importance"):
        lk.prune_masks([torch.full((4, 4), 10.0)], 0.0, "uniform", importance=[big], backend="cpu")
    nan = torch.randn(4, 4)
    nan[1, 1] = float("nan")
    with pytest.raises(ValueError, match="layer 1 has NaN or Inf weights"):
        lk.prune_masks([torch.randn(4, 1, 2, 2), nan], 1.0, "uniform_plus", backend="cpu")
    with pytest.raises(ValueError, match="layer 1 has NaN or Inf weights"):
        lk.prune_masks([torch.randn(4, 4), nan], 0.5, "owl", backend="cpu")
    caller = torch.rand(8, 4) > 0.5  # already prunes more than 20%: returned as a contiguous copy
    caller[:, 0] = False
    got = lk.prune_masks([torch.randn(4, 8)], 0.2, "uniform", masks=[caller.t()], backend="cpu")[0]
    assert got.is_contiguous() and torch.equal(got, caller.t()) and got.data_ptr() != caller.data_ptr()
