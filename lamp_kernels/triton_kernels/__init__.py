"""Triton kernels of the sort-free masks path (DESIGN-NOTES §2.3): the CUDA kernels of the library's ops
(ops.py), and backend="triton" when called directly. One kernel and its launcher per module:

    layer_table  the layer-offset table: every layer's tiles in one launch, layers interleaved
    histogram    pass 1: per-layer bin counts (+ exact limb sums of squares for fp32/fp64), compacted
    gather_keys  fp32/fp64 refinement: the keys of the few candidate bins, compacted
    cut_mask     last pass: boolean masks from the cuts, or the pruned weights zeroed in place

Each launcher takes a list of same-dtype layers on one device (the ops' signatures) and has a readable
``*_ref`` twin. Imported only when used; under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors.
"""

from .cut_mask import apply_cuts, zero_cuts_
from .gather_keys import gather_bin_keys
from .histogram import bin_summaries

__all__ = ["apply_cuts", "bin_summaries", "gather_bin_keys", "zero_cuts_"]
