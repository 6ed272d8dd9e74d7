// The fused scan for the 32-bit sum formats: bf16, fp16, fp32 (10-limb exact sums). See scan.cuh.
#include "scan.cuh"

namespace lamp_cuda {

void scan_narrow(int code, const void* sorted_keys, const uint32_t* sorted_index, const lamp_cuda_segment* segs,
                 int nsegs, int64_t tiles, bool float64, void* temp, cudaStream_t stream) {
  switch (code) {
    case 0: scan_typed<0>(sorted_keys, sorted_index, segs, nsegs, tiles, float64, temp, stream); break;
    case 1: scan_typed<1>(sorted_keys, sorted_index, segs, nsegs, tiles, float64, temp, stream); break;
    case 2: scan_typed<2>(sorted_keys, sorted_index, segs, nsegs, tiles, float64, temp, stream); break;
    default: throw Error("scan_narrow: not a 16/32-bit dtype code");
  }
}

size_t scan_temp_bytes(int code, int64_t tiles) {
  return size_t(tiles) * (code == 3 ? sizeof(Scan<3>::W) : sizeof(Scan<2>::W));
}

}  // namespace lamp_cuda
