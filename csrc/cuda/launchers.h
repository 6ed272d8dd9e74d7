// The CUDA kernels' launcher API: raw device pointers, sizes and a stream; no torch types, so the .cu files
// compile with nvcc alone (CI compiles them for sm_80 and sm_90). The torch binding is cuda_bindings.cpp.
//
// Sort-based LAMP scores of a batch (lamp_scores.cu): the layers of a batch are packed one after the other
// in one key/value buffer (segment s at offset seg[s].offset), sorted by (alive, |w|) with a 32-bit index
// payload, and one fused pass computes the exact suffix sums and scores in sorted order and scatters them.
//
// Global cut (global_cut.cu): the k-way selection over the layers' sorted order values without concatenation
// (radix select, one 8-bit digit per round, counts by binary search in every layer), giving per-layer
// cut counts; masks follow from the cut counts and the sort's permutation.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "wide_sum.cuh"  // kScanTile

namespace lamp_cuda {

struct Segment {     // one layer of a packed batch
  int64_t offset;    // first element in the batch buffers
  int64_t numel;
  int64_t first_tile;  // first scan tile of this segment (tiles never cross segments)
  void* scores;      // float or double [numel], flat order; nullptr: not wanted
  uint64_t* values;  // [numel], sorted order: 0 masked, else order value + 1; nullptr: not wanted
  uint32_t* perm;    // [numel], sorted order -> flat index; nullptr: not wanted
};

// Order keys (0 for masked elements, |w| bit pattern + 1 otherwise) and the identity payload of one layer,
// written at the given place of the batch buffers. key_bytes: 2 (bf16/fp16), 4 (fp32), 8 (fp64).
void make_keys(int code, const void* w, const bool* mask, int64_t n, void* keys, uint32_t* index,
               cudaStream_t stream);

// CUB temporary storage for sorting `capacity` elements in up to `segments` segments.
size_t sort_temp_bytes(int code, int64_t capacity, int segments);

// Stable radix sort of (key, index) pairs, n elements in `segments` segments (segment_offsets: device
// int64[segments + 1]); keys/index and keys_alt/index_alt are the two halves of a double buffer. Returns
// true when the result is in the *_alt buffers.
bool sort_pairs(int code, void* temp, size_t temp_bytes, void* keys, void* keys_alt, uint32_t* index,
                uint32_t* index_alt, int64_t n, int segments, const int64_t* segment_offsets, cudaStream_t stream);

// Wide (exact) partial sums needed by lamp_scores_scan: bytes for `tiles` tiles.
size_t scan_temp_bytes(int code, int64_t tiles);

// The fused scan over sorted keys: exact suffix sums, scores (float64 or float32) scattered to flat order,
// optional sorted order values (score bits + 1) and permutation. segments: device Segment[num_segments];
// tiles = sum over segments of ceil(numel / kScanTile).
void lamp_scores_scan(int code, const void* sorted_keys, const uint32_t* sorted_index, const Segment* segments,
                      int num_segments, int64_t tiles, bool float64, void* temp, cudaStream_t stream);

// Global magnitude order values for one sorted layer: values[u] = 0 masked, else |w| as double bits + 1.
void key_order_values(int code, const void* sorted_keys, const uint32_t* sorted_index, int64_t n,
                      uint64_t* values, uint32_t* perm, cudaStream_t stream);

// k-way selection: values[i] (device pointers, device array) sorted non-decreasing, numels[i] (device),
// k_total: elements to prune in all, masked ones (value 0) included. Writes pruned[i] (device int64[L]):
// masked_i plus alive elements below the k-th smallest alive value, plus ties of that value allocated in
// layer order; threshold_value (device uint64[1]): that value (0 when no alive element is pruned).
// workspace: global_cut_workspace_bytes(L) bytes.
size_t global_cut_workspace_bytes(int layers);
void global_cut(const uint64_t* const* values, const int64_t* numels, int layers, int64_t k_total, int64_t* pruned,
                uint64_t* threshold_value, void* workspace, cudaStream_t stream);

// mask[perm[u]] = u >= *pruned, for one layer.
void mask_from_cut(const uint32_t* perm, int64_t n, const int64_t* pruned, bool* mask, cudaStream_t stream);

}  // namespace lamp_cuda
