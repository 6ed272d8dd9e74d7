"""Triton kernels of the sort-free masks path (DESIGN-NOTES §2.3), one kernel and its launcher per module:

    layer_table  the layer-offset table: every layer's tiles in one launch, layers interleaved
    histogram    pass 1: per-layer bin counts (+ exact limb sums of squares for fp32/fp64)
    gather_keys  fp32/fp64 refinement: the keys of the few candidate bins, compacted
    cut_mask     last pass: boolean masks from the cuts, or the pruned weights zeroed in place

Each launcher takes a list of same-dtype layers on one device and has a readable ``*_ref`` twin. Imported
only when the Triton backend is used; under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors.
"""
