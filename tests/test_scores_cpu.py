"""The C++ scores kernels (csrc/cpu/scores_cpu.cpp): the bin path (bf16/fp16 counting sort, fp32 16-bit bins)
and the sort path, each against the reference to the bit (float64 scores, and float32 = the float64 rounded),
on inputs that hurt: ties, all-equal layers, zeros, masks, subnormals, magnitudes over the whole exponent range
(the wide-sum cases of rounding_base.h), carries through long runs of one bits, sizes 1 and odd, thread counts,
and layers above 2^24 elements."""

import pytest
import torch

from lamp_kernels import ops, reference

pytestmark = pytest.mark.skipif(ops._C is None, reason="C++ extension not built")

BIN_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
ALL_DTYPES = BIN_DTYPES + [torch.float64]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _paths(dtype):
    return ["sort", "bins"] if dtype != torch.float64 else ["sort"]


def _assert_scores(w, mask, paths=None):
    """Every path, float64 and float32, equals the reference bit for bit."""
    want = reference.lamp_scores(w, mask)
    for path in paths or _paths(w.dtype):
        got64 = ops._C.lamp_scores_by(w, mask, True, path)
        got32 = ops._C.lamp_scores_by(w, mask, False, path)
        bad = (got64 != want).sum().item()
        worst = (got64 - want).abs().max().item() if w.numel() else 0.0
        assert bad == 0, f"{path} {w.dtype} n={w.numel()}: {bad} float64 scores differ, worst {worst:g}"
        assert got32.dtype == torch.float32 and torch.equal(got32, want.float()), f"{path} float32"
        assert got64.shape == w.shape


def _random(n, dtype, seed=0, zeros_every=7):
    g = _gen(seed)
    w = torch.randn(n, generator=g) * torch.logspace(-3, 1, n)
    if zeros_every:
        w[::zeros_every] = 0
    return w.to(dtype)


def _wide_range(dtype, per_binade=40, seed=0):
    """Magnitudes in every binade the dtype has (normal and subnormal), shuffled: the suffix sum above a small
    value spans hundreds of bits, so RoundingBase keeps it as 127 top bits plus carry and sticky information."""
    fi = torch.finfo(dtype)
    lo = int(torch.tensor(fi.smallest_normal).log2()) - (fi.bits - 1 - int(torch.tensor(fi.eps).log2().neg()))
    hi = int(torch.tensor(fi.max).log2()) - 1
    if dtype == torch.float32:
        hi = 120  # squares summed stay below 2^1023
    g = _gen(seed)
    exps = torch.arange(lo, hi).repeat_interleave(per_binade).double()
    mant = 1 + torch.rand(exps.numel(), generator=g, dtype=torch.float64)
    w = (mant * torch.pow(2.0, exps)).to(dtype)
    w = w[torch.randperm(w.numel(), generator=g)]
    return w[w != 0]


def _carry_chain(dtype, top, gap=None, pad_to=5000):
    """Three copies of 2^k for 0 < k < top, whose squares add up to 4^top - 4 (in units of the square of 1):
    a run of one bits. Five copies of 1 then carry through the whole run when added. Leaving out k = gap puts
    two zero bits into the run. Zeros pad the layer to the bin path's size; two larger values put a one bit
    above the run."""
    vals = [2.0**k for k in range(1, top) if k != gap for _ in range(3)] + [1.0] * 5 + [2.0 ** (top + 3)] * 2
    w = torch.tensor(vals + [0.0] * max(0, pad_to - len(vals)), dtype=torch.float64)
    return w[torch.randperm(w.numel(), generator=_gen(top))].to(dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000, 4097, 70001])
def test_random_odd_sizes(dtype, n):
    w = _random(n, dtype, seed=n)
    _assert_scores(w, None)
    _assert_scores(w.reshape(1, n, 1) if n else w, torch.rand(w.shape, generator=_gen(n)) > 0.3)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_heavy_ties_and_all_equal(dtype):
    g = _gen(1)
    vals = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, -1.0, -0.5, 3.0])
    for n in (5, 4099, 20000):
        ties = vals[torch.randint(0, len(vals), (n,), generator=g)].to(dtype)
        _assert_scores(ties, None)
        _assert_scores(ties, torch.rand(n, generator=g) > 0.5)
        _assert_scores(torch.full((n,), -0.37, dtype=dtype), None)
        _assert_scores(torch.zeros(n, dtype=dtype), None)
        _assert_scores(torch.ones(n, dtype=dtype), torch.zeros(n, dtype=torch.bool))  # all masked


@pytest.mark.parametrize("dtype", BIN_DTYPES, ids=str)
def test_fp32_bins_with_many_equal_low_bits(dtype):
    """A bin larger than the sorted size (2^17) takes the counting variant inside the bin (fp32)."""
    g = _gen(2)
    base = 1.0 + torch.randint(0, 64, (200_000,), generator=g).double() / 2**20  # one fp32 bin, 64 keys
    w = (base * torch.where(torch.rand(200_000, generator=g) > 0.5, 1.0, -1.0)).to(dtype)
    w[::5] = 0
    want = reference.lamp_scores(w, None)
    assert torch.equal(ops._C.lamp_scores_by(w, None, True, "bins"), want)


@pytest.mark.parametrize("dtype", BIN_DTYPES + [torch.float64], ids=str)
def test_subnormals_beside_large_values(dtype):
    fi = torch.finfo(dtype)
    g = _gen(3)
    for big in (fi.max / 8 if dtype != torch.float64 else 2.0**400, 3.0, fi.tiny):
        tiny = torch.rand(5000, generator=g, dtype=torch.float64) * fi.tiny  # subnormal (or zero) in dtype
        w = torch.cat([torch.tensor([big, -3.0, fi.tiny * 3], dtype=torch.float64), tiny]).to(dtype)
        w = w[torch.randperm(w.numel(), generator=g)]
        _assert_scores(w, None)
        _assert_scores(w, torch.rand(w.shape, generator=g) > 0.2)


@pytest.mark.parametrize("dtype", BIN_DTYPES, ids=str)
def test_magnitudes_over_the_whole_exponent_range(dtype):
    w = _wide_range(dtype)
    _assert_scores(w, None)
    _assert_scores(w, torch.rand(w.shape, generator=_gen(4)) > 0.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("top, gap", [(20, None), (60, None), (100, None), (120, None), (121, 60)])
def test_carries_through_runs_of_ones(dtype, top, gap):
    """The sum above 1 has 2 top + 22 bits in units of bf16's 2^-14: RoundingBase keeps it whole (top 20), with
    a shift in (0, 128) (60, 100), or a shift >= 128 (120: bits 128 and up all ones, so the carry reaches the
    top bits; 121 with a gap: it stops in the high part and only leaves a sticky bit)."""
    _assert_scores(_carry_chain(dtype, top, gap), None)


@pytest.mark.parametrize("dtype", BIN_DTYPES, ids=str)
def test_thread_counts_and_chunks_agree(dtype):
    """Large enough for several chunks: 1, 2 and 3 threads (more tasks than cores) give the same bits."""
    w = _random(700_001, dtype, seed=5)
    mask = torch.rand(w.shape, generator=_gen(5)) > 0.1
    want = ops._C.lamp_scores_by(w, mask, True, "sort")
    small = reference.lamp_scores(w[:20_000], mask[:20_000])
    assert torch.equal(ops._C.lamp_scores_by(w[:20_000], mask[:20_000], True, "bins"), small)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert torch.equal(ops._C.lamp_scores_by(w, mask, True, "bins"), want), threads
            assert torch.equal(ops.lamp_scores([w, w[:5000]], [mask, None], True)[0], want), threads
    finally:
        torch.set_num_threads(before)


def test_many_layers_in_one_call_match_per_layer():
    """lamp_scores over layers of every size class (sort path, one-task bin path, all-threads bin path)."""
    g = _gen(6)
    layers = [_random(n, dt, seed=n) for n, dt in [(600_000, torch.bfloat16), (5000, torch.float32),
                                                    (1, torch.float16), (600_000, torch.float32),
                                                    (4096, torch.float64), (20_000, torch.bfloat16)]]
    masks = [torch.rand(w.shape, generator=g) > 0.3 if i % 2 else None for i, w in enumerate(layers)]
    for float64 in (True, False):
        got = ops.lamp_scores(layers, masks, float64)
        for w, m, s in zip(layers, masks, got):
            assert torch.equal(s, ops._C.lamp_scores_by(w, m, float64, "sort")), (w.dtype, w.numel())


def test_bins_path_refuses_fp64():
    with pytest.raises(RuntimeError, match="bin path"):
        ops._C.lamp_scores_by(torch.ones(10, dtype=torch.float64), None, True, "bins")


def test_layer_above_2_24_elements():
    """2^24 + 4099 elements. The reference is too slow at this size: bf16 is checked against the sort path
    (radix sort + ExactSum scan: an independent algorithm, itself checked against the reference above), and an
    all-equal fp32 layer against its closed form: the element of rank r among c ones scores 1 / (c - r)."""
    n = (1 << 24) + 4099
    g = _gen(7)
    w = (torch.randint(-300, 301, (n,), generator=g) / 64.0).bfloat16()
    assert torch.equal(ops._C.lamp_scores_by(w, None, True, "bins"), ops._C.lamp_scores_by(w, None, True, "sort"))
    ones = torch.ones(n, dtype=torch.float32)
    want = 1.0 / torch.arange(n, 0, -1, dtype=torch.float64)
    assert torch.equal(ops.lamp_scores([ones], [None], True)[0], want)
    assert torch.equal(ops._C.lamp_scores_by(ones.bfloat16(), None, True, "bins"), want)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_value_checks_of_lamp_scores(dtype):
    """lamp_scores checks values with one min/max reduction per layer: a NaN/Inf that is masked out is
    ignored (and scores 0); an alive one is refused; a masked fp64 layer's range is that of its alive weights."""
    import lamp_kernels as lk

    w = _random(5000, dtype, seed=8)
    for bad in (float("nan"), float("inf"), -float("inf")):
        v = w.clone()
        v[17] = bad
        mask = torch.ones(5000, dtype=torch.bool)
        mask[17] = False
        scores = lk.lamp_scores([w[:10], v], [None, mask], dtype=torch.float64)[1]
        assert scores[17] == 0 and torch.equal(scores, reference.lamp_scores(torch.where(mask, v, 0), mask))
        with pytest.raises(ValueError, match="layer 1"):
            lk.lamp_scores([w[:10], v])
    if dtype == torch.float64:
        tiny = torch.full((10,), 2.0**-600, dtype=dtype)
        tiny[0] = 1.0
        with pytest.raises(ValueError, match="outside"):
            lk.lamp_scores([tiny], [torch.arange(10) > 0])
        assert lk.lamp_scores([tiny])[0][0] > 0


def test_alive_max_abs_matches_its_torch_twin(monkeypatch):
    """The C++ check (one pass on the kernels' pool) and the torch one (other devices) agree."""
    from lamp_kernels import layers as layers_module

    g = _gen(9)
    tensors, masks = [], []
    for dtype in ALL_DTYPES:
        for n in (0, 1, 300_000):
            w = _random(n, dtype, seed=n)
            m = torch.rand(n, generator=g) > 0.5
            tensors += [w, w.clone(), w.clone()]
            masks += [None, m, torch.zeros(n, dtype=torch.bool)]
            if n:
                bad = w.clone()
                bad[n // 2] = float("nan") if n > 1 else float("inf")
                tensors += [bad, bad]
                masks += [None, torch.arange(n) != n // 2]
    layers = layers_module.Layers.from_inputs(tensors, masks)
    compiled = layers.alive_max_abs()
    monkeypatch.setattr(ops, "_C", None)
    twin = layers.alive_max_abs()
    assert compiled == twin
    assert any(v == float("inf") for v in compiled) and any(v == 0.0 for v in compiled)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_many_large_layers_one_per_task(dtype):
    """Enough large layers (at least 3 x threads x the largest) are scored a layer per task, each on one
    thread with its worker's reused workspace: the same scores as each layer alone by the sort path (itself
    equal to the reference above), with masks, at 2 threads."""
    g = _gen(11)
    # all above the size that would take every thread (2 x 4 elements per bin: 2^18 bf16, 2^19 fp32)
    sizes = [(1 << (18 if dtype == torch.bfloat16 else 19)) + 10_000 * (i + 1) for i in range(8)]
    ws = [(torch.randn(n, generator=g, dtype=torch.float64) * 2.0 ** (i % 5 - 2)).to(dtype)
          for i, n in enumerate(sizes)]
    ms = [torch.rand(n, generator=g) > 0.25 if i % 2 else None for i, n in enumerate(sizes)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for float64 in (True, False):
            got = ops._C.lamp_scores(ws, ms, float64)
            for w, m, s in zip(ws, ms, got):
                assert torch.equal(s, ops._C.lamp_scores_by(w, m, float64, "sort"))
    finally:
        torch.set_num_threads(threads)
