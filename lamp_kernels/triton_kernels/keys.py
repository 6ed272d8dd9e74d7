"""Key and limb arithmetic shared by the kernels (csrc/cpu/float_keys.h conventions, kernels_torch.py twins)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels_torch import DTYPE_INFO

# dtype -> (bit-pattern integer type in the kernel, |x| bit mask)
BITS = {torch.bfloat16: (tl.int16, 0x7FFF), torch.float16: (tl.int16, 0x7FFF),
        torch.float32: (tl.int32, 0x7FFF_FFFF), torch.float64: (tl.int64, 0x7FFF_FFFF_FFFF_FFFF)}
# dtype -> the integer dtype of the same width, whose tensors the kernels receive (bit patterns)
INT_VIEW = {dtype: info[4] for dtype, info in DTYPE_INFO.items()}


def layout(dtype: torch.dtype) -> tuple[int, int, int]:
    """(bins, key bits shifted off to form the bin, limbs)."""
    _, bins, shift, limbs, _, _ = DTYPE_INFO[dtype]
    return bins, shift, limbs


@triton.jit
def load_keys(w_ptr, offs, valid, FULL: tl.constexpr, KEY_MASK: tl.constexpr):
    """int64 |w| bit patterns (monotone in |w|) of the elements at w_ptr + offs. FULL: every offset is
    valid, so the load needs no mask and can be vectorised."""
    if FULL:
        bits = tl.load(w_ptr + offs)
    else:
        bits = tl.load(w_ptr + offs, mask=valid, other=0)
    return bits.to(tl.int64) & KEY_MASK  # sign extension is masked off with the sign bit


@triton.jit
def load_alive(m_ptr, offs, valid, HAS_MASK, FULL: tl.constexpr):
    """valid, and the layer's mask at m_ptr + offs where it has one (HAS_MASK, a runtime flag)."""
    alive = valid
    if HAS_MASK:
        if FULL:
            alive = alive & (tl.load(m_ptr + offs) != 0)
        else:
            alive = alive & (tl.load(m_ptr + offs, mask=valid, other=0) != 0)
    return alive
