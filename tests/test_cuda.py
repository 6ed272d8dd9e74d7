"""The CUDA backend on machines without a GPU: the device arithmetic replayed on the host against the
reference, every .cu compiled by nvcc for sm_80 and sm_90 (when nvcc is here), the torch binding
syntax-checked against stand-in CUDA headers. GPU runs against the reference: test_gpu.py."""

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

from lamp_kernels import ops, reference
from tests.cases import DTYPES, random_masks

ROOT = Path(__file__).resolve().parent.parent
CUDA = ROOT / "csrc" / "cuda"
pytestmark = pytest.mark.skipif(ops._C is None, reason="C++ extension not built")


def _layers(dtype):
    g = torch.Generator().manual_seed(11)
    ties = torch.tensor([0.0, 0.5, -0.5, 1.0, 3.0])[torch.randint(0, 5, (9000,), generator=g)]
    wide = torch.randn(4097, generator=g) * torch.exp2(torch.randint(-60, 60, (4097,), generator=g).float())
    if dtype == torch.float16:
        wide = torch.randn(4097, generator=g)
    tiles = torch.randn(3 * 4096, generator=g)  # exactly three tiles
    return [w.to(dtype) for w in (ties, wide, tiles, torch.tensor([2.0]), torch.zeros(5))]


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


def test_scan_replay_extreme_fp64_range():
    """fp64 magnitudes near both ends of the accepted range: the 50-limb sums and the rounding."""
    w = torch.tensor([2.0**495, -(2.0**-495), 3.0, 2.0**-1074, 1e-300, 1.5 * 2.0**400], dtype=torch.float64)
    assert torch.equal(ops._C.cuda_scan_emulation(w, None, True), reference.lamp_scores(w, None))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_sources_compile_for_sm80_and_sm90(tmp_path):
    jobs = []
    for src in sorted(CUDA.glob("*.cu")):
        for arch in ("sm_80", "sm_90"):
            out = tmp_path / f"{src.stem}-{arch}.o"
            cmd = ["nvcc", "-std=c++17", "-O3", f"-arch={arch}", "-c", str(src), "-o", str(out)]
            jobs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for cmd, proc in jobs:
        out, _ = proc.communicate()
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{out[-4000:]}"


@pytest.mark.skipif(not Path("/usr/local/cuda/include/cuda_runtime.h").exists() and shutil.which("nvcc") is None,
                    reason="no CUDA headers")
def test_cuda_binding_syntax(tmp_path):
    """cuda_bindings.cpp against torch's headers, with stand-ins for the two CUDA-only torch headers."""
    from torch.utils.cpp_extension import include_paths

    cuda_include = Path(shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc").resolve().parent.parent / "include"
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-w", f"-I{ROOT / 'tests' / 'cuda_stubs'}", f"-I{cuda_include}",
           "-I/usr/local/cuda/include", f"-I{sysconfig.get_paths()['include']}",
           *[f"-I{p}" for p in include_paths()], "-DTORCH_EXTENSION_NAME=_cuda", str(CUDA / "cuda_bindings.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
