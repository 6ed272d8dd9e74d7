// The C ABI of liblamp_cuda (lamp_cuda.h): argument checks, exceptions turned into a status and a message
// per host thread, and what the library was built for.
#include <cstring>
#include <string>

#include "internal.cuh"

#ifndef LAMP_CUDA_ARCHS
#define LAMP_CUDA_ARCHS "unknown"
#endif

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(const char* entry, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    last_error = std::string(entry) + ": " + e.what();
  } catch (...) {
    last_error = std::string(entry) + ": unknown error";
  }
  return 1;
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

void require(bool ok, const char* what) {
  if (!ok) throw lamp_cuda::Error(what);
}

}  // namespace

extern "C" {

int lamp_cuda_abi_version(void) { return LAMP_CUDA_ABI; }
int lamp_cuda_runtime_version(void) { return CUDART_VERSION; }
const char* lamp_cuda_architectures(void) { return LAMP_CUDA_ARCHS; }
const char* lamp_cuda_last_error(void) { return last_error.c_str(); }

int lamp_cuda_check_device(int device) {
  return guarded("lamp_cuda_check_device", [&] {
    int current = 0;
    lamp_cuda::check(cudaGetDevice(&current), "cudaGetDevice");
    lamp_cuda::check(cudaSetDevice(device), "cudaSetDevice");
    cudaFuncAttributes attrs;
    const cudaError_t status = cudaFuncGetAttributes(&attrs, lamp_cuda::probe_kernel());
    cudaSetDevice(current);
    if (status == cudaErrorNoKernelImageForDevice || status == cudaErrorInvalidDeviceFunction) {
      cudaGetLastError();  // not sticky: clear it
      cudaDeviceProp prop;
      lamp_cuda::check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
      throw lamp_cuda::Error("the library has no code for this GPU (sm_" + std::to_string(prop.major) +
                             std::to_string(prop.minor) + "); it was built for sm_" LAMP_CUDA_ARCHS);
    }
    lamp_cuda::check(status, "cudaFuncGetAttributes");
  });
}

int lamp_cuda_pending_error(void) { return static_cast<int>(cudaPeekAtLastError()); }

int lamp_cuda_make_keys(int code, const void* w, const uint8_t* mask, int64_t n, void* keys, uint32_t* index,
                        uint32_t* flags, void* stream) {
  return guarded("lamp_cuda_make_keys", [&] {
    lamp_cuda::check_code(code);
    require(n >= 0 && n <= int64_t(UINT32_MAX), "a layer must have fewer than 2^32 elements (32-bit index)");
    require(n == 0 || (w && keys && index && flags), "null pointer");
    lamp_cuda::make_keys(code, w, mask, n, keys, index, flags, as_stream(stream));
  });
}

int lamp_cuda_sort_temp_bytes(int code, int64_t capacity, int max_segments, size_t* bytes) {
  return guarded("lamp_cuda_sort_temp_bytes", [&] {
    lamp_cuda::check_code(code);
    require(capacity >= 0 && capacity <= int64_t(INT32_MAX), "a sort takes fewer than 2^31 elements");
    require(bytes != nullptr, "null pointer");
    *bytes = lamp_cuda::sort_temp_bytes(code, capacity, max_segments);
  });
}

int lamp_cuda_sort_pairs(int code, void* temp, size_t temp_bytes, void* keys, void* keys_alt, uint32_t* index,
                         uint32_t* index_alt, int64_t n, int segments, const int64_t* segment_offsets,
                         int* result_in_alt, void* stream) {
  return guarded("lamp_cuda_sort_pairs", [&] {
    lamp_cuda::check_code(code);
    require(n >= 0 && n <= int64_t(INT32_MAX), "a sort takes fewer than 2^31 elements");
    require(result_in_alt != nullptr && (segments <= 1 || segment_offsets != nullptr), "null pointer");
    *result_in_alt = 0;
    if (n == 0) return;
    *result_in_alt = lamp_cuda::sort_pairs(code, temp, temp_bytes, keys, keys_alt, index, index_alt, n, segments,
                                           segment_offsets, as_stream(stream));
  });
}

int lamp_cuda_scan_temp_bytes(int code, int64_t tiles, size_t* bytes) {
  return guarded("lamp_cuda_scan_temp_bytes", [&] {
    lamp_cuda::check_code(code);
    require(bytes != nullptr && tiles >= 0, "bad arguments");
    *bytes = lamp_cuda::scan_temp_bytes(code, tiles);
  });
}

int lamp_cuda_scan(int code, const void* sorted_keys, const uint32_t* sorted_index, const lamp_cuda_segment* segments,
                   int num_segments, int64_t tiles, int float64, void* temp, void* stream) {
  return guarded("lamp_cuda_scan", [&] {
    lamp_cuda::check_code(code);
    require(num_segments > 0 && segments && temp, "bad arguments");
    if (code == 3)
      lamp_cuda::scan_fp64(sorted_keys, sorted_index, segments, num_segments, tiles, float64 != 0, temp,
                           as_stream(stream));
    else
      lamp_cuda::scan_narrow(code, sorted_keys, sorted_index, segments, num_segments, tiles, float64 != 0, temp,
                             as_stream(stream));
  });
}

int lamp_cuda_key_order_values(int code, const void* sorted_keys, const uint32_t* sorted_index, int64_t n,
                               uint64_t* values, uint32_t* perm, void* stream) {
  return guarded("lamp_cuda_key_order_values", [&] {
    lamp_cuda::check_code(code);
    lamp_cuda::key_order_values(code, sorted_keys, sorted_index, n, values, perm, as_stream(stream));
  });
}

int lamp_cuda_global_cut_workspace_bytes(int layers, size_t* bytes) {
  return guarded("lamp_cuda_global_cut_workspace_bytes", [&] {
    require(bytes != nullptr && layers >= 0, "bad arguments");
    *bytes = lamp_cuda::global_cut_workspace_bytes(layers);
  });
}

int lamp_cuda_global_cut(const uint64_t* const* values, const int64_t* numels, int layers, int64_t k_total,
                         int64_t* pruned, uint64_t* threshold_value, void* workspace, void* stream) {
  return guarded("lamp_cuda_global_cut", [&] {
    require(layers >= 0 && (layers == 0 || (values && numels && pruned && threshold_value && workspace)),
            "bad arguments");
    lamp_cuda::global_cut(values, numels, layers, k_total, pruned, threshold_value, workspace, as_stream(stream));
  });
}

int lamp_cuda_histogram16(const void* weights, const void* masks, const int64_t* numels, const int64_t* tiles,
                          int64_t num_tiles, int64_t chunk, int32_t* counts, void* stream) {
  return guarded("lamp_cuda_histogram16", [&] {
    require(num_tiles >= 0 && chunk > 0 && (num_tiles == 0 || (weights && masks && numels && tiles && counts)),
            "bad arguments");
    lamp_cuda::histogram16(static_cast<const uint16_t* const*>(weights), static_cast<const uint8_t* const*>(masks),
                           numels, tiles, num_tiles, chunk, counts, as_stream(stream));
  });
}

int lamp_cuda_mask_from_cut(const uint32_t* perm, int64_t n, const int64_t* pruned, uint8_t* mask, void* stream) {
  return guarded("lamp_cuda_mask_from_cut", [&] {
    lamp_cuda::mask_from_cut(perm, n, pruned, mask, as_stream(stream));
  });
}

}  // extern "C"
