"""The CUDA library on machines without a GPU: the device arithmetic and decomposition replayed on the host
against the reference, the library built with nvcc alone (sm_90, cached by the sources' hash outside the
clone) and loaded with ctypes, the batching of layers, and the global cut's radix select replayed.
GPU runs against the reference: test_gpu.py."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import lamp_kernels as lk
from lamp_kernels import cuda_backend, cuda_library, ops, reference
from tests.cases import DTYPES, random_masks

ROOT = Path(__file__).resolve().parent.parent
needs_ext = pytest.mark.skipif(ops._C is None, reason="C++ extension not built")


def _layers(dtype):
    g = torch.Generator().manual_seed(11)
    ties = torch.tensor([0.0, 0.5, -0.5, 1.0, 3.0])[torch.randint(0, 5, (9000,), generator=g)]
    wide = torch.randn(4097, generator=g) * torch.exp2(torch.randint(-60, 60, (4097,), generator=g).float())
    if dtype == torch.float16:
        wide = torch.randn(4097, generator=g)
    tiles = torch.randn(3 * 4096, generator=g)  # exactly three tiles
    return [w.to(dtype) for w in (ties, wide, tiles, torch.tensor([2.0]), torch.zeros(5))]


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scan_replay_matches_reference_bit_for_bit(dtype):
    layers = _layers(dtype)
    for masks in ([None] * len(layers), random_masks(layers)):
        for w, m in zip(layers, masks):
            want = reference.lamp_scores(w, m)
            got = ops._C.cuda_scan_emulation(w, m, True)
            diff = (got - want).abs().max().item()
            assert torch.equal(got, want), f"{dtype} n={w.numel()}: max |diff| {diff}"
            assert torch.equal(ops._C.cuda_scan_emulation(w, m, False), want.float())


@needs_ext
def test_scan_replay_extreme_fp64_range():
    """fp64 magnitudes near both ends of the accepted range: the 50-limb sums and the rounding."""
    w = torch.tensor([2.0**495, -(2.0**-495), 3.0, 2.0**-1074, 1e-300, 1.5 * 2.0**400], dtype=torch.float64)
    assert torch.equal(ops._C.cuda_scan_emulation(w, None, True), reference.lamp_scores(w, None))


def test_batches_keep_large_layers_alone():
    small, big = cuda_backend.SMALL_LAYER, cuda_backend.SMALL_LAYER + 1
    sizes = [5, big, 7, small, 3, 2 * big, 1, 1]
    batches = cuda_backend._batches(sizes, max(sizes))
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    for b in batches:
        if any(sizes[i] > small for i in b):
            assert len(b) == 1, b  # a large layer is never a segment of a segmented sort
        assert sum(sizes[i] for i in b) <= max(sizes)
        assert b == sorted(b)
    assert batches == [[0], [1], [2, 3, 4], [5], [6, 7]]


def test_cpu_tensors_never_reach_the_library():
    with pytest.raises(ValueError, match="CUDA"):
        cuda_backend._validate([torch.randn(3)], [None])
    with pytest.raises(RuntimeError, match="not available|no CUDA|has no CUDA"):
        lk.lamp_scores(torch.randn(3), backend="cuda")


def _global_cut_replay(values: list[torch.Tensor], k_total: int) -> tuple[list[int], int]:
    """global_cut.cu's algorithm on the host: radix select of the k-th smallest alive order value (8 digits
    of 8 bits, counts by binary search in each sorted layer), then cut counts with ties in layer order."""
    masked = [int(torch.searchsorted(v, torch.tensor(1, dtype=torch.int64))) for v in values]
    alive = sum(v.numel() for v in values) - sum(masked)
    target = min(max(k_total - sum(masked), 0), alive)
    k, prefix = max(target, 1), 0
    for shift in range(56, -8, -8):
        counts = [0] * 256
        for d in range(256):
            lo = prefix | (d << shift)
            hi = min(lo | ((1 << shift) - 1), 2**63 - 1)
            if lo > hi:
                continue
            for v in values:  # order values of non-negative doubles + 1 stay below 2^63
                a = int(torch.searchsorted(v, torch.tensor(max(lo, 1), dtype=torch.int64)))
                b = int(torch.searchsorted(v, torch.tensor(hi, dtype=torch.int64), right=True))
                counts[d] += b - a
        before = 0
        for d in range(256):
            if before < k <= before + counts[d]:
                prefix |= d << shift
                k -= before
                break
            before += counts[d]
    t, out, carried = prefix, [], 0
    for v, m in zip(values, masked):
        lo = int(torch.searchsorted(v, torch.tensor(t, dtype=torch.int64)))
        equal = int(torch.searchsorted(v, torch.tensor(t, dtype=torch.int64), right=True)) - lo
        ties = min(max(k - carried, 0), equal)
        carried += equal
        out.append(m if target == 0 else v.numel() if target == alive else lo + ties)
    return out, (0 if target == 0 else t)


def _order_values(w: torch.Tensor, m: torch.Tensor | None, lamp: bool) -> torch.Tensor:
    """Sorted order values as the scan writes them: 0 for masked, else the score's (or |w|'s) float64 bits + 1."""
    s = reference.lamp_scores(w, m) if lamp else w.detach().abs().double().reshape(-1)
    bits = s.reshape(-1).view(torch.int64) + 1
    if m is not None:
        bits = torch.where(m.reshape(-1), bits, torch.zeros_like(bits))
    return torch.sort(bits).values


@pytest.mark.parametrize("method", ["lamp", "global"])
def test_global_cut_replay_matches_reference(method):
    """Layers with ties at the cut across layers (identical layers), masks, and sparsities 0 to 1."""
    g = torch.Generator().manual_seed(2)
    base = torch.tensor([0.5, 1.0, 1.0, 2.0])[torch.randint(0, 4, (60,), generator=g)]
    layers = [base.clone(), base.clone(), torch.randn(40, generator=g), torch.zeros(3)]
    masks = [None, torch.rand(60, generator=g) > 0.3, None, None]
    for s in (0.0, 0.2, 0.5, 0.77, 1.0):
        want = lk.layer_sparsities(layers, s, method, masks=masks, backend="reference")
        values = [_order_values(w, m, method == "lamp") for w, m in zip(layers, masks)]
        counts, _ = _global_cut_replay(values, round(s * sum(w.numel() for w in layers)))
        assert [c / w.numel() for c, w in zip(counts, layers)] == want, (method, s)


@pytest.fixture(scope="module")
def built_library():
    """liblamp_cuda for sm_90, built in the background since the session started (tests/cuda_build.py)."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    import cuda_build

    return cuda_build.result()


def test_library_builds_with_nvcc_alone_and_loads_without_a_gpu(built_library):
    lib = cuda_library.Library(built_library)
    assert lib.architectures == [90]
    assert lib.cuda_runtime.split(".")[0] in ("12", "13")
    assert lib.dll.lamp_cuda_abi_version() == cuda_library.ABI
    # A failing call reports its entry point and reason instead of crashing.
    with pytest.raises(cuda_library.CudaLibraryError, match="lamp_cuda_sort_temp_bytes.*dtype code"):
        lib.size("lamp_cuda_sort_temp_bytes", 7, 10, 1)
    with pytest.raises(cuda_library.CudaLibraryError, match="2\\^31"):
        lib.size("lamp_cuda_sort_temp_bytes", 0, 2**31, 1)
    out = ctypes.c_size_t(0)
    lib.call("lamp_cuda_scan_temp_bytes", 3, 10, ctypes.byref(out))
    assert out.value == 10 * 50 * 8  # ten tiles of 50-limb fp64 sums


def test_library_has_no_torch_and_a_static_cuda_runtime(built_library):
    if shutil.which("nm") is None or shutil.which("ldd") is None:
        pytest.skip("binutils not installed")
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(built_library)], capture_output=True,
                             text=True).stdout
    assert "lamp_cuda_scan" in symbols
    assert not any(s in symbols for s in ("_ZN2at", "_ZN3c10", "torch")), "torch symbols in the library"
    needed = subprocess.run(["ldd", str(built_library)], capture_output=True, text=True).stdout
    assert "libcudart" not in needed and "libtorch" not in needed and "libc10" not in needed, needed


def _c_prototypes() -> dict[str, tuple[list[str], str]]:
    """name -> (parameter types, return type) of every function lamp_cuda.h declares."""
    import re

    text = (ROOT / "csrc" / "cuda" / "lamp_cuda.h").read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    out = {}
    for ret, name, params in re.findall(r"((?:const\s+)?\w+\s*\*?)\s*(lamp_cuda_\w+)\s*\(([^)]*)\)\s*;", text):
        types = []
        for p in params.split(","):
            p = p.strip()
            if p and p != "void":
                types.append(re.sub(r"\s+\w+$", "", p).replace(" ", ""))  # drop the parameter's name
        out[name] = (types, ret.replace(" ", ""))
    return out


def test_ctypes_signatures_match_the_header():
    """Every C function has a ctypes signature of the right width: an undeclared one would get its pointers
    cut to 32-bit ints."""
    to_ctypes = {"int": ctypes.c_int, "int64_t": ctypes.c_int64, "size_t": ctypes.c_size_t,
                 "size_t*": ctypes.POINTER(ctypes.c_size_t), "int*": ctypes.POINTER(ctypes.c_int)}
    header = _c_prototypes()
    assert set(header) == set(cuda_library.SIGNATURES)
    for name, (params, ret) in header.items():
        args, res = cuda_library.SIGNATURES[name]
        want = [to_ctypes.get(t, ctypes.c_void_p if t.endswith("*") else None) for t in params]
        assert args == want, (name, params)
        assert res == (ctypes.c_char_p if ret == "constchar*" else to_ctypes[ret]), (name, ret)
