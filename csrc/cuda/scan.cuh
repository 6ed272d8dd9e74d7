// The fused scan over sorted keys (DESIGN-NOTES §2.4), instantiated per dtype in scan_narrow.cu / scan_fp64.cu.
//
//   tile_sums     exact sum of squares of every 4096-element tile of sorted keys
//   tile_suffix   per segment (layer): the exact sum of all its later tiles, for every tile
//   scan_scores   per tile: exact suffix sums S(u) inside the tile plus the later tiles, rounded once to
//                 double; score fl(fl(x^2) / S) written straight to the flat position (the scatter is fused);
//                 optionally the sorted order values and permutation for the global cut
//
// Sums are exact fixed-point integers (wide_sum.cuh), so the tiling and the association order of the block
// scans cannot change a bit of the result: scores equal the reference's, bit for bit. csrc/cpu's
// cuda_scan_emulation.cpp replays this decomposition on the host, and the tests compare it with the
// reference.
//
// Layout of scan_scores: a tile is loaded *reversed* (element j of the load is sorted position end - 1 - j)
// with cub::BlockLoad's warp transpose: the global loads are coalesced, and thread t ends up holding the
// contiguous run of positions end - 1 - t*kItems downwards. An exclusive prefix scan over threads then gives
// each thread the sum of every position after its run, and walking its items in order extends that to an
// exact suffix sum per element.
#pragma once

#include <cub/cub.cuh>
#include <cuda/std/iterator>

#include "internal.cuh"

namespace lamp_cuda {

static_assert(kScanTile == LAMP_CUDA_SCAN_TILE, "the C ABI's tile size is the scan's");

template <int Code>
struct Scan {
  static constexpr int kThreads = kScanThreads;  // 256
  static constexpr int kItems = kScanTile / kThreads;  // 16
  using W = Wide<Format<Code>::K>;
  using Key = OrderKey<Code>;
  // Warp scans: shared memory holds one partial per warp, not per thread (a Wide<50> is 400 bytes).
  using BlockScan = cub::BlockScan<W, kThreads, cub::BLOCK_SCAN_WARP_SCANS>;
  using BlockReduce = cub::BlockReduce<W, kThreads, cub::BLOCK_REDUCE_WARP_REDUCTIONS>;
  using LoadKeys = cub::BlockLoad<Key, kThreads, kItems, cub::BLOCK_LOAD_WARP_TRANSPOSE>;
  using LoadIndex = cub::BlockLoad<uint32_t, kThreads, kItems, cub::BLOCK_LOAD_WARP_TRANSPOSE>;
};

struct WideAdd {
  template <typename W>
  __device__ __forceinline__ W operator()(const W& a, const W& b) const {
    W r = a;
    r.add(b);
    return r;
  }
};

// The segment holding a tile: the last one whose first_tile <= tile (empty segments own no tile).
__device__ __forceinline__ lamp_cuda_segment segment_of(const lamp_cuda_segment* segs, int n, int64_t tile) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (segs[mid].first_tile <= tile) lo = mid; else hi = mid - 1;
  }
  return segs[lo];
}

struct TileRange {
  lamp_cuda_segment sg;
  int64_t begin, end;  // sorted positions of the tile, in the batch buffers
};

__device__ __forceinline__ TileRange tile_range(const lamp_cuda_segment* segs, int n, int64_t tile) {
  const lamp_cuda_segment sg = segment_of(segs, n, tile);
  const int64_t begin = sg.offset + (tile - sg.first_tile) * kScanTile;
  return {sg, begin, min(begin + int64_t(kScanTile), sg.offset + sg.numel)};
}

__device__ __forceinline__ uint64_t magnitude_key(uint64_t order_key) {  // 0 for masked elements, as for zeros
  return order_key ? order_key - 1 : 0;
}

template <int Code>
__global__ void __launch_bounds__(Scan<Code>::kThreads)
tile_sums_kernel(const OrderKey<Code>* keys, const lamp_cuda_segment* segs, int nsegs, typename Scan<Code>::W* sums) {
  using S = Scan<Code>;
  __shared__ typename S::BlockReduce::TempStorage tmp;
  const int64_t tile = blockIdx.x;
  const auto [sg, begin, end] = tile_range(segs, nsegs, tile);
  auto acc = S::W::zero();
#pragma unroll 4
  for (int j = 0; j < S::kItems; ++j) {
    const int64_t u = begin + int64_t(j) * S::kThreads + threadIdx.x;  // coalesced; order is irrelevant here
    if (u < end) add_square<Code>(acc, magnitude_key(keys[u]));
  }
  const auto total = typename S::BlockReduce(tmp).Reduce(acc, WideAdd());
  if (threadIdx.x == 0) sums[tile] = total;
}

// One block per segment: sums[t] (the tile's sum) becomes the sum of the segment's later tiles.
template <int Code>
__global__ void __launch_bounds__(Scan<Code>::kThreads)
tile_suffix_kernel(const lamp_cuda_segment* segs, typename Scan<Code>::W* sums) {
  using S = Scan<Code>;
  __shared__ typename S::BlockScan::TempStorage tmp;
  const lamp_cuda_segment sg = segs[blockIdx.x];
  const int64_t tiles = (sg.numel + kScanTile - 1) / kScanTile;
  const int64_t chunk = (tiles + S::kThreads - 1) / S::kThreads;
  // thread t owns chunk (threads - 1 - t): lower threads hold later tiles, so a prefix scan over threads
  // is a suffix sum over tiles
  const int64_t c0 = min(tiles, (S::kThreads - 1 - int64_t(threadIdx.x)) * chunk), c1 = min(tiles, c0 + chunk);
  typename S::W* own = sums + sg.first_tile;
  auto mine = S::W::zero();
  for (int64_t j = c0; j < c1; ++j) mine.add(own[j]);
  typename S::W after;
  typename S::BlockScan(tmp).ExclusiveScan(mine, after, S::W::zero(), WideAdd());
  for (int64_t j = c1 - 1; j >= c0; --j) {
    const auto t = own[j];
    own[j] = after;
    after.add(t);
  }
}

template <int Code>
__global__ void __launch_bounds__(Scan<Code>::kThreads)
scan_scores_kernel(const OrderKey<Code>* keys, const uint32_t* index, const lamp_cuda_segment* segs, int nsegs,
                   const typename Scan<Code>::W* tile_after, bool float64) {
  using S = Scan<Code>;
  __shared__ union {
    typename S::LoadKeys::TempStorage keys;
    typename S::LoadIndex::TempStorage index;
    typename S::BlockScan::TempStorage scan;
  } smem;
  const int64_t tile = blockIdx.x;
  const auto [sg, begin, end] = tile_range(segs, nsegs, tile);
  const int valid = int(end - begin);
  // Reversed: load element j is sorted position end - 1 - j.
  typename S::Key key[S::kItems];
  uint32_t flat[S::kItems];
  typename S::LoadKeys(smem.keys).Load(cuda::std::reverse_iterator<const typename S::Key*>(keys + end), key, valid,
                                       typename S::Key(0));
  __syncthreads();
  typename S::LoadIndex(smem.index).Load(cuda::std::reverse_iterator<const uint32_t*>(index + end), flat, valid, 0u);
  __syncthreads();
  auto mine = S::W::zero();
#pragma unroll
  for (int i = 0; i < S::kItems; ++i) add_square<Code>(mine, magnitude_key(key[i]));
  typename S::W running;
  typename S::BlockScan(smem.scan).ExclusiveScan(mine, running, S::W::zero(), WideAdd());
  running.add(tile_after[tile]);
#pragma unroll
  for (int i = 0; i < S::kItems; ++i) {
    const int j = int(threadIdx.x) * S::kItems + i;
    if (j >= valid) break;
    const int64_t u = end - 1 - j;  // sorted position, in the batch buffers
    const uint64_t k = magnitude_key(key[i]);
    add_square<Code>(running, k);  // S(u): u and everything after it
    const double s = key[i] ? score<Code>(k, running.to_double(Format<Code>::kUnit)) : 0.0;
    if (sg.scores) {
      if (float64) static_cast<double*>(sg.scores)[flat[i]] = s;
      else static_cast<float*>(sg.scores)[flat[i]] = __double2float_rn(s);
    }
    if (sg.values) sg.values[u - sg.offset] = key[i] ? uint64_t(__double_as_longlong(s)) + 1 : 0;
    if (sg.perm) sg.perm[u - sg.offset] = flat[i];
  }
}

template <int Code>
void scan_typed(const void* sorted_keys, const uint32_t* sorted_index, const lamp_cuda_segment* segs, int nsegs,
                int64_t tiles, bool float64, void* temp, cudaStream_t stream) {
  using S = Scan<Code>;
  if (tiles == 0) return;
  if (tiles > int64_t(INT32_MAX)) throw Error("scan: too many tiles for one launch");
  auto* keys = static_cast<const OrderKey<Code>*>(sorted_keys);
  auto* sums = static_cast<typename S::W*>(temp);
  tile_sums_kernel<Code><<<unsigned(tiles), S::kThreads, 0, stream>>>(keys, segs, nsegs, sums);
  check_launch("tile_sums_kernel");
  tile_suffix_kernel<Code><<<nsegs, S::kThreads, 0, stream>>>(segs, sums);
  check_launch("tile_suffix_kernel");
  scan_scores_kernel<Code><<<unsigned(tiles), S::kThreads, 0, stream>>>(keys, sorted_index, segs, nsegs, sums, float64);
  check_launch("scan_scores_kernel");
}

}  // namespace lamp_cuda
