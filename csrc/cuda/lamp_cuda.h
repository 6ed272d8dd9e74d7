/* liblamp_cuda: the CUDA kernels of lamp_kernels behind a C ABI (loaded from Python with ctypes).
 *
 * No torch types and no allocation: the caller passes raw device pointers, sizes, workspaces it allocated
 * (lamp_kernels/cuda_backend.py allocates them with torch's caching allocator) and the stream to run on.
 * Every function returns 0 on success; otherwise a nonzero status, and lamp_cuda_last_error() (per host
 * thread) names the kernel or CUB call that failed and gives the CUDA error string. Work is queued on
 * `stream` and never synchronised here.
 *
 * dtype codes: 0 bf16, 1 fp16, 2 fp32, 3 fp64 (csrc/cpu/float_keys.h).
 *
 * Scores (DESIGN-NOTES §2.4): for each layer, make_keys writes order keys (0 = masked, else the |w| bit
 * pattern + 1: the contract's order is (key, flat index)) and a 32-bit index; sort_pairs sorts a batch of
 * layers packed in one buffer (one layer with the device-wide radix sort, or many small ones as segments of
 * one segmented sort); scan computes every element's exact suffix sum and score in sorted order and
 * scatters the scores to flat order (and, for the global cut, keeps the sorted order values).
 *
 * Global cut (global_cut.cu): the k-way selection over all layers' sorted order values on the device (a
 * radix select with per-layer binary searches), giving per-layer cut counts; masks follow from the counts
 * and the sort's permutation.
 */
#ifndef LAMP_CUDA_H
#define LAMP_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LAMP_CUDA_ABI 2

/* One layer of a packed batch (all fields 8 bytes: the caller builds it as int64[6] per segment). */
typedef struct {
  int64_t offset;     /* first element in the batch buffers */
  int64_t numel;
  int64_t first_tile; /* first scan tile of this segment (tiles never cross segments) */
  void* scores;       /* float or double [numel] in flat order, or NULL */
  uint64_t* values;   /* [numel] sorted order: 0 masked, else the score's order value + 1; or NULL */
  uint32_t* perm;     /* [numel] sorted position -> flat index, or NULL */
} lamp_cuda_segment;

/* Flags make_keys ORs into a layer's flag word, for alive elements. */
#define LAMP_CUDA_NONFINITE 1u      /* NaN or Inf */
#define LAMP_CUDA_FP64_HUGE 2u      /* fp64 |w| >= 2^496 */
#define LAMP_CUDA_FP64_IN_RANGE 4u  /* fp64 |w| in [2^-496, 2^496) */
#define LAMP_CUDA_FP64_TINY 8u      /* fp64 0 < |w| < 2^-496 */

/* Elements per scan tile. */
#define LAMP_CUDA_SCAN_TILE 4096

int lamp_cuda_abi_version(void);
int lamp_cuda_runtime_version(void);        /* CUDART_VERSION the library was built with */
const char* lamp_cuda_architectures(void);  /* e.g. "80;90": the SASS the library carries */
const char* lamp_cuda_last_error(void);
/* 0 when the kernels can run on `device` (code for its architecture is present), else an error. */
int lamp_cuda_check_device(int device);
/* The pending CUDA error of this host thread (cudaPeekAtLastError), 0 for none. */
int lamp_cuda_pending_error(void);

int lamp_cuda_make_keys(int code, const void* w, const uint8_t* mask, int64_t n, void* keys, uint32_t* index,
                        uint32_t* flags, void* stream);
int lamp_cuda_sort_temp_bytes(int code, int64_t capacity, int max_segments, size_t* bytes);
int lamp_cuda_sort_pairs(int code, void* temp, size_t temp_bytes, void* keys, void* keys_alt, uint32_t* index,
                         uint32_t* index_alt, int64_t n, int segments, const int64_t* segment_offsets,
                         int* result_in_alt, void* stream);
int lamp_cuda_scan_temp_bytes(int code, int64_t tiles, size_t* bytes);
int lamp_cuda_scan(int code, const void* sorted_keys, const uint32_t* sorted_index,
                   const lamp_cuda_segment* segments, int num_segments, int64_t tiles, int float64, void* temp,
                   void* stream);
int lamp_cuda_key_order_values(int code, const void* sorted_keys, const uint32_t* sorted_index, int64_t n,
                               uint64_t* values, uint32_t* perm, void* stream);
int lamp_cuda_global_cut_workspace_bytes(int layers, size_t* bytes);
int lamp_cuda_global_cut(const uint64_t* const* values, const int64_t* numels, int layers, int64_t k_total,
                         int64_t* pruned, uint64_t* threshold_value, void* workspace, void* stream);
/* Masks path, 16-bit weights: counts[layer][pattern] += alive elements whose |w| has that 15-bit pattern.
 * weights/masks: device arrays of L pointers (mask NULL: all alive); numels: device int64[L]; tiles: device
 * int64[num_tiles][2] of (layer, first element), each covering `chunk` elements; counts: device int32[L][2^15],
 * zeroed by the caller. Uses 128 KiB of shared memory per block (sm_80 and newer). */
int lamp_cuda_histogram16(const void* weights, const void* masks, const int64_t* numels, const int64_t* tiles,
                          int64_t num_tiles, int64_t chunk, int32_t* counts, void* stream);
int lamp_cuda_mask_from_cut(const uint32_t* perm, int64_t n, const int64_t* pruned, uint8_t* mask, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* LAMP_CUDA_H */
