"""Every GPU path on CUDA tensors against the reference (or, beyond the reference's reach, against the CPU
backend, which equals the reference bit for bit in test_backends.py). Skipped without a GPU; on a GPU
nothing is skipped: a kernel that fails to load, compile or launch fails its test.

    backend=None   the ops' CUDA kernels: Triton for masks, the CUDA library for scores
    "triton"       the Triton kernels called directly
    "cuda"         the CUDA library's sort path, masks by the radix-select global cut
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lamp_kernels as lk
from tests.cases import CASES, DTYPES, random_masks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
BACKENDS = [None, "triton", "cuda"]
SPARSITIES = (0.0, 0.3, 0.5, 0.9, 1.0)
ROOT = Path(__file__).resolve().parent.parent


def _cuda(ts):
    return [None if t is None else t.cuda() for t in ts]


def _same(got, want, label=""):
    for i, (g, w) in enumerate(zip(got, want)):
        g = g.cpu()
        if not torch.equal(g, w):
            if g.dtype == torch.bool:
                detail = f"{int((g != w).sum())} of {w.numel()} entries differ"
            else:
                detail = f"max |diff| {(g.double() - w.double()).abs().max().item():g}"
            pytest.fail(f"{label} layer {i}: {detail}")


def test_every_gpu_kernel_is_available():
    """On a GPU machine a missing or unloadable kernel is a failure, not a skip."""
    from lamp_kernels import cuda_backend, cuda_library

    assert cuda_library.unavailable_reason() is None, cuda_library.unavailable_reason()
    assert cuda_backend.unavailable_reason() is None, cuda_backend.unavailable_reason()
    import triton  # noqa: F401

    assert {"cpu", "cuda", "triton"} <= set(lk.available_backends())


@pytest.mark.parametrize("backend", BACKENDS, ids=str)
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
            _same(got, want, f"{backend} {method} s={s}")
            sp = lk.layer_sparsities(_cuda(layers), s, method, masks=None if masks is None else _cuda(masks),
                                     backend=backend)
            assert sp == [float((~m).sum()) / m.numel() for m in want], f"{backend} {method} s={s}"


@pytest.mark.parametrize("backend", [None, "cuda"], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gpu_scores_match_reference(backend, dtype, case):
    layers = CASES[case](dtype)
    for masks in (None, random_masks(layers)):
        want = lk.lamp_scores(layers, masks, backend="reference", dtype=torch.float64)
        cm = None if masks is None else _cuda(masks)
        _same(lk.lamp_scores(_cuda(layers), cm, backend=backend, dtype=torch.float64), want, "float64")
        _same(lk.lamp_scores(_cuda(layers), cm, backend=backend), [w.float() for w in want], "float32")


def test_many_tiles_and_small_layers_batched_next_to_a_large_one():
    """A layer over many scan tiles and larger than a segment (sorted alone), 60 small layers sharing one
    segmented sort, and a size-1 layer: scores and masks."""
    g = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 500, (60,), generator=g).tolist()
    layers = [torch.randn(70_001, generator=g), *[torch.randn(n, generator=g) for n in sizes], torch.ones(1)]
    for dtype in (torch.float32, torch.bfloat16):
        ls = [w.to(dtype) for w in layers]
        want = lk.lamp_scores(ls, backend="reference", dtype=torch.float64)
        _same(lk.lamp_scores(_cuda(ls), backend="cuda", dtype=torch.float64), want, f"{dtype} scores")
        for backend in BACKENDS:
            for method in ("lamp", "global", "erk"):
                _same(lk.prune_masks(_cuda(ls), 0.77, method, backend=backend),
                      lk.prune_masks(ls, 0.77, method, backend="reference"), f"{backend} {method}")


def test_global_cut_with_ties_across_layers():
    """Identical bf16 layers with heavy ties: the cut splits a tie group that spans layers; ties go to the
    earlier layer first (the contract's (score, layer, position) order)."""
    g = torch.Generator().manual_seed(9)
    base = torch.tensor([0.5, 1.0, -1.0, 2.0])[torch.randint(0, 4, (5000,), generator=g)].bfloat16()
    layers = [base.clone(), base.clone().reshape(50, 100), base[:1234].clone()]
    for method in ("lamp", "global"):
        for s in (0.1, 0.25, 0.5, 0.61, 0.9):
            want = lk.prune_masks(layers, s, method, backend="reference")
            for backend in BACKENDS:
                _same(lk.prune_masks(_cuda(layers), s, method, backend=backend), want, f"{backend} {method} {s}")


def test_more_than_2_31_weights_in_total():
    """Three bf16 layers of 720M weights (2.16e9 in all, over any single sort's or topk's limit): every GPU
    path equals the CPU backend (the reference cannot run at this size)."""
    n = 720_000_000
    g = torch.Generator(device="cuda").manual_seed(0)
    layers = [(torch.randn(n, generator=g, device="cuda") * 0.02).bfloat16() for _ in range(3)]
    host = [w.cpu() for w in layers]
    for method in ("lamp", "uniform"):
        want = lk.layer_sparsities(host, 0.6, method, backend="cpu")
        for backend in BACKENDS:
            assert lk.layer_sparsities(layers, 0.6, method, backend=backend) == want, (backend, method)
        want_masks = lk.prune_masks(host, 0.6, method, backend="cpu")
        for backend in (None, "cuda"):
            got = lk.prune_masks(layers, 0.6, method, backend=backend)
            assert all(torch.equal(a.cpu(), b) for a, b in zip(got, want_masks)), (backend, method)
            del got
            torch.cuda.empty_cache()


def test_no_pending_cuda_error_after_calls():
    from lamp_kernels import cuda_library

    lib = cuda_library.load()
    w = [torch.randn(1000, device="cuda"), torch.randn(10, 10, device="cuda").double()]
    lk.lamp_scores(w)
    lk.prune_masks(w, 0.5, backend="cuda")
    lk.prune_masks(w, 0.5)
    torch.cuda.synchronize()
    assert lib.pending_error() == 0


def test_bad_inputs_get_python_errors_never_crashes():
    from lamp_kernels import cuda_backend

    w = torch.randn(64, 64, device="cuda")
    with pytest.raises(TypeError):
        lk.lamp_scores(w.int(), backend="cuda")
    with pytest.raises(TypeError):
        cuda_backend.lamp_scores([w.int()], [None], False)
    with pytest.raises(ValueError, match="mask"):
        cuda_backend.lamp_scores([w], [torch.ones(3, dtype=torch.bool, device="cuda")], False)
    with pytest.raises(ValueError, match="one device|CUDA"):
        cuda_backend.lamp_scores([w, torch.randn(3)], [None, None], False)
    with pytest.raises(ValueError, match="NaN"):
        lk.lamp_scores([w, torch.tensor([1.0, float("nan")], device="cuda")], backend="cuda")
    with pytest.raises(ValueError, match="2\\^-496"):
        lk.prune_masks(torch.tensor([2.0**500], dtype=torch.float64, device="cuda"), 0.5, backend="cuda")
    # Non-contiguous layers are made contiguous before the library sees them: same results.
    t = w.t()
    assert torch.equal(lk.lamp_scores(t, backend="cuda").cpu(), lk.lamp_scores(t.cpu(), backend="reference"))
    assert torch.equal(lk.prune_masks(t, 0.5).cpu(), lk.prune_masks(t.cpu(), 0.5, backend="reference"))


def test_prune_in_place_on_the_gpu():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 10)).cuda()
    weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    want = lk.prune_masks(weights, 0.7, "lamp", backend="reference")
    lk.prune_(model, 0.7, "lamp", reparametrize=False)
    for name, keep in want.items():
        w = dict(model.named_parameters())[name].detach().cpu()
        assert torch.equal(w == 0, ~keep | (weights[name] == 0))


def test_lamp_prune_on_the_gpu_equals_the_cpu(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    src = tmp_path / "model.safetensors"
    save_file({f"layers.{i}.weight": torch.randn(256, 512, generator=g).bfloat16() for i in range(4)}, str(src))
    outs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"out-{device}"
        subprocess.run([sys.executable, "-m", "lamp_kernels", str(src), "--sparsity", "0.6", "--out", str(out),
                        "--device", device, "--quiet"], check=True, cwd=ROOT)
        outs[device] = out.read_bytes() if out.is_file() else (out / "model.safetensors").read_bytes()
    assert outs["cpu"] == outs["cuda"]
