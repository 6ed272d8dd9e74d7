// Exact counts of bf16/fp16 |w| bit patterns, per layer: the masks path's first pass for 16-bit weights
// (DESIGN-NOTES §2.3), as an alternative to the Triton histogram, whose language cannot privatise 2^15
// counters per block.
//
// Each block takes tiles of `chunk` elements of one layer (tile t = (layer, start), from the caller's table)
// and counts into a private histogram of all 2^15 patterns in shared memory (128 KiB), then adds its nonzero
// counters to the layer's row in global memory (relaxed atomics, one per nonzero counter per tile). Lanes of
// a warp that hold the same pattern are combined first (__match_any_sync), so a layer whose weights repeat
// one value costs one shared atomic per warp, not 32 serialised ones. Full 16-byte-aligned tiles are read
// as 16-byte vectors. Integer counts make the result independent of scheduling.
#include "internal.cuh"

namespace lamp_cuda {
namespace {

constexpr int kBins = 1 << 15;
constexpr int kThreads = 1024;
constexpr uint32_t kNone = 0xFFFFFFFFu;  // "no element" (masked out, or past the end)

__device__ __forceinline__ void count(uint32_t* hist, uint32_t key) {
  const unsigned peers = __match_any_sync(0xFFFFFFFFu, key);
  if (key != kNone && (threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(hist + key, uint32_t(__popc(peers)));
}

__global__ void __launch_bounds__(kThreads)
histogram16_kernel(const uint16_t* const* weights, const uint8_t* const* masks, const int64_t* numels,
                   const int64_t* tiles, int64_t num_tiles, int64_t chunk, int32_t* counts) {
  extern __shared__ uint32_t hist[];
  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    for (int b = threadIdx.x; b < kBins; b += kThreads) hist[b] = 0;
    __syncthreads();
    const int64_t layer = tiles[2 * t], start = tiles[2 * t + 1];
    const int64_t n = numels[layer], end = min(n, start + chunk);
    const uint16_t* w = weights[layer];
    const uint8_t* m = masks[layer];
    const bool vector = ((reinterpret_cast<uintptr_t>(w + start) | reinterpret_cast<uintptr_t>(m ? m + start : nullptr)) &
                         15) == 0 && (end - start) % 8 == 0;
    if (vector) {  // 8 weights (and 8 mask bytes) per 16-byte / 8-byte load
      const int64_t groups = (end - start) / 8;
      for (int64_t g = threadIdx.x; g - threadIdx.x < groups; g += kThreads) {  // whole warps stay in the loop
        uint4 v = make_uint4(0, 0, 0, 0);
        uint2 mv = make_uint2(0xFFFFFFFFu, 0xFFFFFFFFu);
        const bool live = g < groups;
        if (live) {
          v = reinterpret_cast<const uint4*>(w + start)[g];
          if (m) mv = reinterpret_cast<const uint2*>(m + start)[g];
        }
        const uint32_t words[4] = {v.x, v.y, v.z, v.w};
        const uint32_t mwords[2] = {mv.x, mv.y};
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const uint32_t bits = (words[j / 2] >> (16 * (j % 2))) & 0x7FFFu;
          const bool alive = live && ((mwords[j / 4] >> (8 * (j % 4))) & 0xFFu) != 0;
          count(hist, alive ? bits : kNone);
        }
      }
    } else {
      for (int64_t i = start + threadIdx.x; i - threadIdx.x < end; i += kThreads) {
        const bool alive = i < end && (m == nullptr || m[i]);
        count(hist, alive ? (w[i] & 0x7FFFu) : kNone);
      }
    }
    __syncthreads();
    int32_t* row = counts + layer * kBins;
    for (int b = threadIdx.x; b < kBins; b += kThreads) {
      const uint32_t c = hist[b];
      if (c) atomicAdd(row + b, int32_t(c));
    }
    __syncthreads();
  }
}

}  // namespace

size_t histogram16_shared_bytes() { return kBins * sizeof(uint32_t); }

void histogram16(const uint16_t* const* weights, const uint8_t* const* masks, const int64_t* numels,
                 const int64_t* tiles, int64_t num_tiles, int64_t chunk, int32_t* counts, cudaStream_t stream) {
  if (num_tiles == 0) return;
  const int shared = int(histogram16_shared_bytes());
  check(cudaFuncSetAttribute(histogram16_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared),
        "histogram16_kernel: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, 128 KiB)");
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const int64_t grid = num_tiles < sms ? num_tiles : int64_t(sms);  // one 128 KiB block fits an SM: a persistent grid
  histogram16_kernel<<<unsigned(grid), kThreads, shared, stream>>>(weights, masks, numels, tiles, num_tiles, chunk,
                                                                  counts);
  check_launch("histogram16_kernel");
}

}  // namespace lamp_cuda
