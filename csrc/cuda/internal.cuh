// Shared by the library's translation units: error handling and the typed launchers behind the C ABI.
//
// Every launch and every CUB call is checked where it happens; a failure throws lamp_cuda::Error naming
// the kernel (or CUB call) and the CUDA error string, and c_api.cu turns it into a status and a message.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "lamp_cuda.h"
#include "wide_sum.cuh"

namespace lamp_cuda {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(std::string(what) + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

// After a <<<...>>> launch: configuration errors surface here, at their source.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

template <int Code>
using OrderKey = typename std::conditional<Code == 3, uint64_t,
                                           typename std::conditional<Code == 2, uint32_t, uint16_t>::type>::type;

inline int key_bytes(int code) { return code <= 1 ? 2 : code == 2 ? 4 : 8; }

inline int grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(blocks < (1 << 20) ? blocks : (1 << 20));
}

inline void check_code(int code) {
  if (code < 0 || code > 3) throw Error("unknown dtype code " + std::to_string(code));
}

// keys_sort.cu
void make_keys(int code, const void* w, const uint8_t* mask, int64_t n, void* keys, uint32_t* index,
               uint32_t* flags, cudaStream_t stream);
size_t sort_temp_bytes(int code, int64_t capacity, int max_segments);
bool sort_pairs(int code, void* temp, size_t temp_bytes, void* keys, void* keys_alt, uint32_t* index,
                uint32_t* index_alt, int64_t n, int segments, const int64_t* offsets, cudaStream_t stream);
void key_order_values(int code, const void* sorted_keys, const uint32_t* sorted_index, int64_t n, uint64_t* values,
                      uint32_t* perm, cudaStream_t stream);
void mask_from_cut(const uint32_t* perm, int64_t n, const int64_t* pruned, uint8_t* mask, cudaStream_t stream);

// scan_narrow.cu (codes 0-2) and scan_fp64.cu (code 3)
size_t scan_temp_bytes(int code, int64_t tiles);
void scan_narrow(int code, const void* sorted_keys, const uint32_t* sorted_index, const lamp_cuda_segment* segs,
                 int nsegs, int64_t tiles, bool float64, void* temp, cudaStream_t stream);
void scan_fp64(const void* sorted_keys, const uint32_t* sorted_index, const lamp_cuda_segment* segs, int nsegs,
               int64_t tiles, bool float64, void* temp, cudaStream_t stream);

// global_cut.cu
size_t global_cut_workspace_bytes(int layers);
void global_cut(const uint64_t* const* values, const int64_t* numels, int layers, int64_t k_total, int64_t* pruned,
                uint64_t* threshold_value, void* workspace, cudaStream_t stream);

// histogram16.cu
void histogram16(const uint16_t* const* weights, const uint8_t* const* masks, const int64_t* numels,
                 const int64_t* tiles, int64_t num_tiles, int64_t chunk, int32_t* counts, cudaStream_t stream);

// A kernel of the library, for lamp_cuda_check_device (cudaFuncGetAttributes fails when the device's
// architecture has no code in the library).
const void* probe_kernel();

}  // namespace lamp_cuda
