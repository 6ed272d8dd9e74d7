// Order keys and their sort (DESIGN-NOTES §2.4), global magnitude order values, and masks from cut counts.
//
//   make_keys          order key = 0 for masked elements, |w| bit pattern + 1 otherwise (masked sort first,
//                      then (|w|, flat index): the contract's order), payload = flat index (32 bits); the
//                      value checks (NaN/Inf, fp64 range) ride along, one flag word per layer
//   sort_pairs         CUB radix sort (stable): DeviceRadixSort for one layer, DeviceSegmentedRadixSort for a
//                      batch of small layers (one thread block per segment, so only small ones are batched)
//   key_order_values   global magnitude: |w| as a double's bit pattern + 1, comparable across dtypes
//   mask_from_cut      mask[perm[u]] = u >= pruned
#include <cub/cub.cuh>

#include "internal.cuh"

namespace lamp_cuda {
namespace {

constexpr uint64_t kFp64Huge = 0x5EF0000000000000ull;  // bits of 2^496
constexpr uint64_t kFp64Tiny = 0x20F0000000000000ull;  // bits of 2^-496

struct BitOr {
  __device__ __forceinline__ uint32_t operator()(uint32_t a, uint32_t b) const { return a | b; }
};

template <typename K, int Code>
__global__ void make_keys_kernel(const K* w, const uint8_t* mask, int64_t n, K* keys, uint32_t* index,
                                 uint32_t* flags) {
  using Reduce = cub::BlockReduce<uint32_t, 256>;
  __shared__ typename Reduce::TempStorage tmp;
  constexpr K kAbs = K(~K(0)) >> 1;                                    // clears the sign bit
  constexpr K kInf = Code == 0 ? K(0x7F80) : Code == 1 ? K(0x7C00) : Code == 2 ? K(0x7F800000u)
                                                                               : K(0x7FF0000000000000ull);
  uint32_t seen = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const bool alive = mask == nullptr || mask[i];
    const K a = w[i] & kAbs;
    keys[i] = alive ? K(a + 1) : K(0);  // a + 1 cannot wrap: a < 2^(bits - 1)
    index[i] = uint32_t(i);
    if (alive) {
      if (a >= kInf) seen |= LAMP_CUDA_NONFINITE;
      if (Code == 3) {
        const uint64_t b = uint64_t(a);
        if (b >= kFp64Huge && b < uint64_t(kInf)) seen |= LAMP_CUDA_FP64_HUGE;
        if (b >= kFp64Tiny && b < kFp64Huge) seen |= LAMP_CUDA_FP64_IN_RANGE;
        if (b > 0 && b < kFp64Tiny) seen |= LAMP_CUDA_FP64_TINY;
      }
    }
  }
  const uint32_t block = Reduce(tmp).Reduce(seen, BitOr());
  if (threadIdx.x == 0 && block) atomicOr(flags, block);
}

template <int Code>
__global__ void key_values_kernel(const OrderKey<Code>* keys, const uint32_t* index, int64_t n, uint64_t* values,
                                  uint32_t* perm) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t k = keys[i];
    const Decoded d = decode<Code>(k ? k - 1 : 0);
    values[i] = k ? uint64_t(__double_as_longlong(scalbn(double(d.m), d.scale))) + 1 : 0;
    perm[i] = index[i];
  }
}

__global__ void mask_kernel(const uint32_t* perm, int64_t n, const int64_t* pruned, uint8_t* mask) {
  const int64_t p = *pruned;
  for (int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; u < n; u += int64_t(gridDim.x) * blockDim.x)
    mask[perm[u]] = u >= p;
}

// CUB's scratch for one sort: the device-wide sort when segments <= 1, else the segmented one.
template <typename K>
cudaError_t cub_sort(void* temp, size_t& temp_bytes, K* keys, K* keys_alt, uint32_t* index, uint32_t* index_alt,
                     int64_t n, int segments, const int64_t* offsets, cudaStream_t stream, bool& in_alt) {
  cub::DoubleBuffer<K> k(keys, keys_alt);
  cub::DoubleBuffer<uint32_t> v(index, index_alt);
  constexpr int kEndBit = 8 * sizeof(K);
  const cudaError_t status =
      segments <= 1 ? cub::DeviceRadixSort::SortPairs(temp, temp_bytes, k, v, n, 0, kEndBit, stream)
                    : cub::DeviceSegmentedRadixSort::SortPairs(temp, temp_bytes, k, v, n, segments, offsets,
                                                               offsets + 1, 0, kEndBit, stream);
  in_alt = k.Current() == keys_alt;
  return status;
}

template <typename K>
size_t temp_bytes_for(int64_t capacity, int max_segments) {
  size_t one = 0, many = 0;
  bool alt = false;
  const int64_t offsets_dummy[2] = {0, 0};
  check(cub_sort<K>(nullptr, one, nullptr, nullptr, nullptr, nullptr, capacity, 1, offsets_dummy, nullptr, alt),
        "cub::DeviceRadixSort::SortPairs (temporary storage size)");
  if (max_segments > 1)
    check(cub_sort<K>(nullptr, many, nullptr, nullptr, nullptr, nullptr, capacity, max_segments, offsets_dummy,
                      nullptr, alt),
          "cub::DeviceSegmentedRadixSort::SortPairs (temporary storage size)");
  return one > many ? one : many;
}

}  // namespace

void make_keys(int code, const void* w, const uint8_t* mask, int64_t n, void* keys, uint32_t* index,
               uint32_t* flags, cudaStream_t stream) {
  if (n == 0) return;
  const int grid = grid_for(n, 256);
  switch (code) {
    case 0:
      make_keys_kernel<uint16_t, 0><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(w), mask, n,
                                                              static_cast<uint16_t*>(keys), index, flags);
      break;
    case 1:
      make_keys_kernel<uint16_t, 1><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(w), mask, n,
                                                              static_cast<uint16_t*>(keys), index, flags);
      break;
    case 2:
      make_keys_kernel<uint32_t, 2><<<grid, 256, 0, stream>>>(static_cast<const uint32_t*>(w), mask, n,
                                                              static_cast<uint32_t*>(keys), index, flags);
      break;
    default:
      make_keys_kernel<uint64_t, 3><<<grid, 256, 0, stream>>>(static_cast<const uint64_t*>(w), mask, n,
                                                              static_cast<uint64_t*>(keys), index, flags);
  }
  check_launch("make_keys_kernel");
}

size_t sort_temp_bytes(int code, int64_t capacity, int max_segments) {
  switch (code) {
    case 0:
    case 1: return temp_bytes_for<uint16_t>(capacity, max_segments);
    case 2: return temp_bytes_for<uint32_t>(capacity, max_segments);
    default: return temp_bytes_for<uint64_t>(capacity, max_segments);
  }
}

bool sort_pairs(int code, void* temp, size_t temp_bytes, void* keys, void* keys_alt, uint32_t* index,
                uint32_t* index_alt, int64_t n, int segments, const int64_t* offsets, cudaStream_t stream) {
  if (temp == nullptr) throw Error("sort_pairs: no temporary storage given");
  bool alt = false;
  size_t bytes = temp_bytes;
  cudaError_t status;
  switch (code) {
    case 0:
    case 1:
      status = cub_sort(temp, bytes, static_cast<uint16_t*>(keys), static_cast<uint16_t*>(keys_alt), index,
                        index_alt, n, segments, offsets, stream, alt);
      break;
    case 2:
      status = cub_sort(temp, bytes, static_cast<uint32_t*>(keys), static_cast<uint32_t*>(keys_alt), index,
                        index_alt, n, segments, offsets, stream, alt);
      break;
    default:
      status = cub_sort(temp, bytes, static_cast<uint64_t*>(keys), static_cast<uint64_t*>(keys_alt), index,
                        index_alt, n, segments, offsets, stream, alt);
  }
  check(status, segments <= 1 ? "cub::DeviceRadixSort::SortPairs" : "cub::DeviceSegmentedRadixSort::SortPairs");
  check_launch(segments <= 1 ? "cub::DeviceRadixSort::SortPairs" : "cub::DeviceSegmentedRadixSort::SortPairs");
  return alt;
}

void key_order_values(int code, const void* sorted_keys, const uint32_t* sorted_index, int64_t n, uint64_t* values,
                      uint32_t* perm, cudaStream_t stream) {
  if (n == 0) return;
  const int grid = grid_for(n, 256);
  switch (code) {
    case 0:
      key_values_kernel<0><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(sorted_keys), sorted_index, n,
                                                    values, perm);
      break;
    case 1:
      key_values_kernel<1><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(sorted_keys), sorted_index, n,
                                                    values, perm);
      break;
    case 2:
      key_values_kernel<2><<<grid, 256, 0, stream>>>(static_cast<const uint32_t*>(sorted_keys), sorted_index, n,
                                                    values, perm);
      break;
    default:
      key_values_kernel<3><<<grid, 256, 0, stream>>>(static_cast<const uint64_t*>(sorted_keys), sorted_index, n,
                                                    values, perm);
  }
  check_launch("key_values_kernel");
}

void mask_from_cut(const uint32_t* perm, int64_t n, const int64_t* pruned, uint8_t* mask, cudaStream_t stream) {
  if (n == 0) return;
  mask_kernel<<<grid_for(n, 256), 256, 0, stream>>>(perm, n, pruned, mask);
  check_launch("mask_kernel");
}

const void* probe_kernel() { return reinterpret_cast<const void*>(&mask_kernel); }

}  // namespace lamp_cuda
