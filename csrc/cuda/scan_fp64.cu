// The fused scan for fp64 weights (50-limb exact sums), in its own translation unit: it is the largest
// instantiation and compiles in parallel with the rest. See scan.cuh.
#include "scan.cuh"

namespace lamp_cuda {

void scan_fp64(const void* sorted_keys, const uint32_t* sorted_index, const lamp_cuda_segment* segs, int nsegs,
               int64_t tiles, bool float64, void* temp, cudaStream_t stream) {
  scan_typed<3>(sorted_keys, sorted_index, segs, nsegs, tiles, float64, temp, stream);
}

}  // namespace lamp_cuda
