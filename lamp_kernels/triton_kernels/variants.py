"""Every kernel variant the launchers can run, compiled ahead of time for a GPU target without a GPU.

``compile_all(arch)`` builds each (kernel, dtype, constexpr) combination the launchers use with
``triton.compile`` for ``GPUTarget("cuda", arch, 32)`` and returns its PTX, so a machine without a GPU can
check that the kernels compile under the installed Triton and what the compiled code does (16-byte loads,
relaxed atomics). It must run in a process without ``TRITON_INTERPRET=1``, which replaces the kernels by
interpreted ones. The pointer arguments are declared 16-byte aligned, as the runtime specialises tensors
whose data pointers are (the layer table's bases always are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import cut_mask, gather_keys, histogram, layer_table
from .keys import BITS, layout

_PTR = {torch.bfloat16: "*i16", torch.float16: "*i16", torch.float32: "*i32", torch.float64: "*i64"}
DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
TILE, BLOCK = 1 << 15, 1 << 11


@dataclass
class Variant:
    name: str
    fn: object
    signature: dict[str, str]
    constexprs: dict[str, object]


def _table(dtype) -> dict[str, str]:
    return {"numels": "*i64", "w_base": _PTR[dtype], "w_offs": "*i64", "m_base": "*u8", "m_offs": "*i64",
            "tile_layer": "*i32", "tile_start": "*i64"}


def variants() -> list[Variant]:
    out = []
    for dtype in DTYPES:
        bins, shift, limbs = layout(dtype)
        for aligned in (True, False):
            common = {"TILE": TILE, "BLOCK": BLOCK, "VEC": layer_table.vec(dtype), "ALIGNED": aligned,
                      "KEY_MASK": BITS[dtype][1]}
            tag = f"{str(dtype)[6:]}-{'aligned' if aligned else 'unaligned'}"
            out.append(Variant(f"histogram-{tag}", histogram._histogram_kernel,
                               {**_table(dtype), "counts": "*i32", "sums": "*i64"},
                               {**common, "SHIFT": shift, "BINS": bins, "LIMBS": limbs}))
            if limbs:
                out.append(Variant(f"gather_keys-{tag}", gather_keys._gather_keys_kernel,
                                   {**_table(dtype), "bin_lo": "*i64", "bin_hi": "*i64", "cursors": "*i64",
                                    "out": "*i64"}, {**common, "SHIFT": shift}))
            for zero in (False, True):
                out.append(Variant(f"cut_mask-{'zero' if zero else 'mask'}-{tag}", cut_mask._cut_mask_kernel,
                                   {**_table(dtype), "tile_prev": "*i32", "o_base": "*u8", "o_offs": "*i64",
                                    "cut_keys": "*i64", "ties": "*i64", "ticket": "*i32", "status": "*i64"},
                                   {**common, "ZERO": zero}))
    return out


def compile_variant(v: Variant, arch: int = 90):
    """The compiled kernel (its .asm['ptx'] holds the PTX) of one variant for sm_<arch>."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = v.fn
    signature = {name: (v.signature[name] if name in v.signature else "constexpr") for name in fn.arg_names}
    pointers = [i for i, name in enumerate(fn.arg_names) if signature[name].startswith("*")]
    attrs = {(i,): [["tt.divisibility", 16]] for i in pointers}
    src = ASTSource(fn=fn, signature=signature, constexprs=v.constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32))


def compile_all(arch: int = 90) -> dict[str, str]:
    """PTX of every variant, by name."""
    return {v.name: compile_variant(v, arch).asm["ptx"] for v in variants()}


# What the tests and the GPU check look for in the PTX of each variant.
PTX_FACTS = {
    "vector_loads": r"\bld\.global(?:\.nc)?\.v[24]\.b(?:32|64)\b",
    "vector_stores": r"\bst\.global\.v[24]\.b(?:32|64)\b",
    "relaxed_atomics": r"\b(?:atom|red)\.global\.gpu\.relaxed\.",
    "other_atomics": r"\b(?:atom|red)\.global(?!\.gpu\.relaxed\.)[.\w]*",
    "acquire_loads": r"\bld\.global\.gpu\.acquire\.",
    "fences": r"\b(?:membar|fence)\.[.\w]*",
}


def ptx_facts(ptx: str) -> dict[str, int]:
    import re

    return {name: len(re.findall(pattern, ptx)) for name, pattern in PTX_FACTS.items()}


def main() -> None:
    """Print {variant: facts} as JSON (used by the compile test, in a process without the interpreter)."""
    import json
    import sys

    import triton

    arch = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    print(json.dumps({"triton": triton.__version__, "arch": arch,
                      "variants": {name: ptx_facts(ptx) for name, ptx in compile_all(arch).items()}}))


if __name__ == "__main__":
    main()
