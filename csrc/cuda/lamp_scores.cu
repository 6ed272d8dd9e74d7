// Sort-based LAMP scores on the GPU (DESIGN-NOTES §2.4; launcher API in launchers.h).
//
//   make_keys        order key = 0 for masked elements, |w| bit pattern + 1 otherwise (masked sort first,
//                    then (|w|, flat index): the contract's order), payload = flat index (32 bits)
//   sort_pairs       CUB radix sort (stable): one layer alone, or many small ones as segments of one launch
//   tile_sums        exact sum of squares of every 4096-element tile of sorted keys
//   tile_suffix      per layer: exact sum of all later tiles, for every tile
//   scan_scores      per tile: exact suffix sums S(u) inside the tile + later tiles, rounded once to double;
//                    score fl(fl(x^2) / S) written straight to the flat position (the scatter is fused)
//
// Sums are exact fixed-point integers (wide_sum.cuh), so the tiling and the CUB scans' association order
// cannot change a bit of the result: scores equal the reference's, bit for bit.
#include <cub/cub.cuh>

#include <type_traits>

#include "launchers.h"
#include "wide_sum.cuh"

namespace lamp_cuda {
namespace {

template <int Code>
struct Scan {  // the block shape of the scan kernels: 4096-element tiles; fp64's wider sums use fewer threads
  static constexpr int kThreads = Code == 3 ? 64 : kScanThreads;
  static constexpr int kItems = kScanTile / kThreads;
  using W = Wide<Format<Code>::K>;
};

template <int Code>
using OrderKey = typename std::conditional<Code == 3, uint64_t, typename std::conditional<Code == 2, uint32_t, uint16_t>::type>::type;

struct WideAdd {
  template <typename W>
  __device__ __forceinline__ W operator()(const W& a, const W& b) const {
    W r = a;
    r.add(b);
    return r;
  }
};

template <typename K>
__global__ void make_keys_kernel(const K* w, const bool* mask, int64_t n, K* keys, uint32_t* index, K key_mask) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const bool alive = mask == nullptr || mask[i];
    keys[i] = alive ? K((w[i] & key_mask) + 1) : K(0);
    index[i] = uint32_t(i);
  }
}

// The segment holding a tile: the last one whose first_tile <= tile (empty segments own no tile).
__device__ __forceinline__ Segment segment_of(const Segment* segs, int n, int64_t tile) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (segs[mid].first_tile <= tile) lo = mid; else hi = mid - 1;
  }
  return segs[lo];
}

// The sorted positions [begin, end) of a tile, and its segment.
struct TileRange {
  Segment sg;
  int64_t begin, end;
};
__device__ __forceinline__ TileRange tile_range(const Segment* segs, int n, int64_t tile) {
  const Segment sg = segment_of(segs, n, tile);
  const int64_t begin = sg.offset + (tile - sg.first_tile) * kScanTile;
  return {sg, begin, min(begin + int64_t(kScanTile), sg.offset + sg.numel)};
}

template <int Code>
__device__ __forceinline__ uint64_t magnitude_key(uint64_t order_key) {  // 0 for masked elements, as for zeros
  return order_key ? order_key - 1 : 0;
}

template <int Code>
__global__ void __launch_bounds__(Scan<Code>::kThreads)
tile_sums_kernel(const OrderKey<Code>* keys, const Segment* segs, int nsegs, typename Scan<Code>::W* tile_sum) {
  using S = Scan<Code>;
  using Reduce = cub::BlockReduce<typename S::W, S::kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t tile = blockIdx.x;
  const auto [sg, begin, end] = tile_range(segs, nsegs, tile);
  auto acc = S::W::zero();
#pragma unroll 4
  for (int j = 0; j < S::kItems; ++j) {
    const int64_t u = begin + int64_t(j) * S::kThreads + threadIdx.x;  // coalesced; order is irrelevant here
    if (u < end) add_square<Code>(acc, magnitude_key<Code>(keys[u]));
  }
  const auto total = Reduce(tmp).Reduce(acc, WideAdd());
  if (threadIdx.x == 0) tile_sum[tile] = total;
}

// One block per segment: tile_sum[t] (the tile's sum) becomes the sum of the segment's later tiles.
template <int Code>
__global__ void __launch_bounds__(Scan<Code>::kThreads)
tile_suffix_kernel(const Segment* segs, typename Scan<Code>::W* tile_sum) {
  using S = Scan<Code>;
  using BlockScan = cub::BlockScan<typename S::W, S::kThreads>;
  __shared__ typename BlockScan::TempStorage tmp;
  const Segment sg = segs[blockIdx.x];
  const int64_t tiles = (sg.numel + kScanTile - 1) / kScanTile;
  const int64_t chunk = (tiles + S::kThreads - 1) / S::kThreads;
  // thread t owns chunk (threads - 1 - t): lower threads hold later tiles, so a prefix scan over threads
  // is a suffix sum over tiles
  const int64_t c0 = min(tiles, (S::kThreads - 1 - int64_t(threadIdx.x)) * chunk), c1 = min(tiles, c0 + chunk);
  typename S::W* sums = tile_sum + sg.first_tile;
  auto mine = S::W::zero();
  for (int64_t j = c0; j < c1; ++j) mine.add(sums[j]);
  typename S::W after;
  BlockScan(tmp).ExclusiveScan(mine, after, S::W::zero(), WideAdd());
  for (int64_t j = c1 - 1; j >= c0; --j) {
    const auto own = sums[j];
    sums[j] = after;
    after.add(own);
  }
}

template <int Code, bool F64>
__global__ void __launch_bounds__(Scan<Code>::kThreads)
scan_scores_kernel(const OrderKey<Code>* keys, const uint32_t* index, const Segment* segs, int nsegs,
                   const typename Scan<Code>::W* tile_after) {
  using S = Scan<Code>;
  using BlockScan = cub::BlockScan<typename S::W, S::kThreads>;
  __shared__ typename BlockScan::TempStorage tmp;
  const int64_t tile = blockIdx.x;
  const auto [sg, begin, end] = tile_range(segs, nsegs, tile);
  const int64_t first = begin + int64_t(S::kThreads - 1 - threadIdx.x) * S::kItems;  // reversed, as above
  uint64_t key[S::kItems];
  auto mine = S::W::zero();
#pragma unroll
  for (int j = 0; j < S::kItems; ++j) {
    key[j] = first + j < end ? uint64_t(keys[first + j]) : 0;
    add_square<Code>(mine, magnitude_key<Code>(key[j]));
  }
  typename S::W running;
  BlockScan(tmp).ExclusiveScan(mine, running, S::W::zero(), WideAdd());
  running.add(tile_after[tile]);
#pragma unroll
  for (int j = S::kItems - 1; j >= 0; --j) {
    const int64_t u = first + j;
    if (u >= end) continue;
    const uint64_t k = magnitude_key<Code>(key[j]);
    add_square<Code>(running, k);  // S(u): u and everything after it
    const double s = key[j] ? score<Code>(k, running.to_double(Format<Code>::kUnit)) : 0.0;
    const uint32_t flat = index[u];
    if (sg.scores) {
      if (F64) static_cast<double*>(sg.scores)[flat] = s;
      else static_cast<float*>(sg.scores)[flat] = __double2float_rn(s);
    }
    if (sg.values) sg.values[u - sg.offset] = key[j] ? uint64_t(__double_as_longlong(s)) + 1 : 0;
    if (sg.perm) sg.perm[u - sg.offset] = flat;
  }
}

// Global magnitude: the order value is |w| as a double's bit pattern + 1 (comparable across dtypes).
template <int Code>
__global__ void key_values_kernel(const OrderKey<Code>* keys, const uint32_t* index, int64_t n, uint64_t* values,
                                  uint32_t* perm) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t k = keys[i];
    const Decoded d = decode<Code>(magnitude_key<Code>(k));
    values[i] = k ? uint64_t(__double_as_longlong(scalbn(double(d.m), d.scale))) + 1 : 0;
    perm[i] = index[i];
  }
}

int grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return int(blocks < (1 << 20) ? blocks : (1 << 20));
}

template <typename K>
bool sort_typed(void* temp, size_t& temp_bytes, K* keys, K* keys_alt, uint32_t* index, uint32_t* index_alt,
                int64_t n, int segments, const int64_t* offsets, cudaStream_t stream) {
  cub::DoubleBuffer<K> k(keys, keys_alt);
  cub::DoubleBuffer<uint32_t> v(index, index_alt);
  constexpr int kEndBit = 8 * sizeof(K);
  if (segments <= 1)
    cub::DeviceRadixSort::SortPairs(temp, temp_bytes, k, v, n, 0, kEndBit, stream);
  else
    cub::DeviceSegmentedRadixSort::SortPairs(temp, temp_bytes, k, v, int(n), segments, offsets, offsets + 1, 0,
                                             kEndBit, stream);
  return k.Current() == keys_alt;
}

template <int Code>
void scan_typed(const void* sorted_keys, const uint32_t* sorted_index, const Segment* segs, int nsegs, int64_t tiles,
                bool float64, void* temp, cudaStream_t stream) {
  using S = Scan<Code>;
  auto* keys = static_cast<const OrderKey<Code>*>(sorted_keys);
  auto* sums = static_cast<typename S::W*>(temp);
  if (tiles == 0) return;
  tile_sums_kernel<Code><<<tiles, S::kThreads, 0, stream>>>(keys, segs, nsegs, sums);
  tile_suffix_kernel<Code><<<nsegs, S::kThreads, 0, stream>>>(segs, sums);
  if (float64)
    scan_scores_kernel<Code, true><<<tiles, S::kThreads, 0, stream>>>(keys, sorted_index, segs, nsegs, sums);
  else
    scan_scores_kernel<Code, false><<<tiles, S::kThreads, 0, stream>>>(keys, sorted_index, segs, nsegs, sums);
}

}  // namespace

void make_keys(int code, const void* w, const bool* mask, int64_t n, void* keys, uint32_t* index,
               cudaStream_t stream) {
  if (n == 0) return;
  const int grid = grid_for(n, 256);
  switch (code) {
    case 0:
    case 1:
      make_keys_kernel<uint16_t><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(w), mask, n,
                                                           static_cast<uint16_t*>(keys), index, 0x7FFF);
      break;
    case 2:
      make_keys_kernel<uint32_t><<<grid, 256, 0, stream>>>(static_cast<const uint32_t*>(w), mask, n,
                                                           static_cast<uint32_t*>(keys), index, 0x7FFFFFFFu);
      break;
    default:
      make_keys_kernel<uint64_t><<<grid, 256, 0, stream>>>(static_cast<const uint64_t*>(w), mask, n,
                                                           static_cast<uint64_t*>(keys), index,
                                                           0x7FFFFFFFFFFFFFFFull);
  }
}

size_t sort_temp_bytes(int code, int64_t capacity, int segments) {
  size_t bytes = 0;
  const int64_t offsets_dummy = 0;
  switch (code) {
    case 0:
    case 1:
      sort_typed<uint16_t>(nullptr, bytes, nullptr, nullptr, nullptr, nullptr, capacity, segments, &offsets_dummy, 0);
      break;
    case 2:
      sort_typed<uint32_t>(nullptr, bytes, nullptr, nullptr, nullptr, nullptr, capacity, segments, &offsets_dummy, 0);
      break;
    default:
      sort_typed<uint64_t>(nullptr, bytes, nullptr, nullptr, nullptr, nullptr, capacity, segments, &offsets_dummy, 0);
  }
  return bytes;
}

bool sort_pairs(int code, void* temp, size_t temp_bytes, void* keys, void* keys_alt, uint32_t* index,
                uint32_t* index_alt, int64_t n, int segments, const int64_t* segment_offsets, cudaStream_t stream) {
  switch (code) {
    case 0:
    case 1:
      return sort_typed(temp, temp_bytes, static_cast<uint16_t*>(keys), static_cast<uint16_t*>(keys_alt), index,
                        index_alt, n, segments, segment_offsets, stream);
    case 2:
      return sort_typed(temp, temp_bytes, static_cast<uint32_t*>(keys), static_cast<uint32_t*>(keys_alt), index,
                        index_alt, n, segments, segment_offsets, stream);
    default:
      return sort_typed(temp, temp_bytes, static_cast<uint64_t*>(keys), static_cast<uint64_t*>(keys_alt), index,
                        index_alt, n, segments, segment_offsets, stream);
  }
}

size_t scan_temp_bytes(int code, int64_t tiles) {
  return size_t(tiles) * (code == 3 ? sizeof(Scan<3>::W) : sizeof(Scan<2>::W));
}

void lamp_scores_scan(int code, const void* sorted_keys, const uint32_t* sorted_index, const Segment* segments,
                      int num_segments, int64_t tiles, bool float64, void* temp, cudaStream_t stream) {
  switch (code) {
    case 0: scan_typed<0>(sorted_keys, sorted_index, segments, num_segments, tiles, float64, temp, stream); break;
    case 1: scan_typed<1>(sorted_keys, sorted_index, segments, num_segments, tiles, float64, temp, stream); break;
    case 2: scan_typed<2>(sorted_keys, sorted_index, segments, num_segments, tiles, float64, temp, stream); break;
    default: scan_typed<3>(sorted_keys, sorted_index, segments, num_segments, tiles, float64, temp, stream);
  }
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
}

}  // namespace lamp_cuda
