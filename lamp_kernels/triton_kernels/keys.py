"""Key and limb arithmetic shared by the kernels (csrc/cpu/float_keys.h conventions, kernels_torch.py twins)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels_torch import DTYPE_INFO

# dtype -> (bit-pattern integer type in the kernel, |x| bit mask)
BITS = {torch.bfloat16: (tl.int16, 0x7FFF), torch.float16: (tl.int16, 0x7FFF),
        torch.float32: (tl.int32, 0x7FFF_FFFF), torch.float64: (tl.int64, 0x7FFF_FFFF_FFFF_FFFF)}


def layout(dtype: torch.dtype) -> tuple[int, int, int]:
    """(bins, key bits shifted off to form the bin, limbs)."""
    _, bins, shift, limbs, _, _ = DTYPE_INFO[dtype]
    return bins, shift, limbs


@triton.jit
def load_keys(w_ptr, offs, valid, INT: tl.constexpr, KEY_MASK: tl.constexpr):
    """int64 |w| bit patterns (monotone in |w|) of the elements at offs."""
    bits = tl.load(w_ptr.to(tl.pointer_type(INT)) + offs, mask=valid, other=0)
    return bits.to(tl.int64) & KEY_MASK  # sign extension is masked off with the sign bit


@triton.jit
def load_alive(mask_ptr, offs, valid):
    """valid, and the mask's element where the layer has one (mask_ptr = 0: none)."""
    alive = valid
    if mask_ptr != 0:
        alive = alive & (tl.load(mask_ptr.to(tl.pointer_type(tl.int8)) + offs, mask=valid, other=0) != 0)
    return alive
