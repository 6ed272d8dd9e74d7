// The global cut on the GPU without concatenating layers (DESIGN-NOTES §2.2; launcher API in launchers.h).
//
// Every layer's order values are sorted (0 = masked, then the score's or |w|'s order value + 1), so the
// number of a layer's values in any range is two binary searches. A radix select finds the k-th smallest
// alive value T one 8-bit digit at a time, from the top: per round, count_digits counts for each of the 256
// digit ranges under the current prefix how many values fall there in all layers, and pick_digit keeps the
// digit where the k-th one lies. Eight rounds, sixteen small launches, no host round-trip. finish_cut then
// gives each layer its masked elements, its alive values below T, and its share of the ties at T in layer
// order (the contract's tie rule across layers).
#include <cub/cub.cuh>

#include "internal.cuh"

namespace lamp_cuda {
namespace {

struct State {
  uint64_t prefix;        // the digits of T found so far
  int64_t k;              // rank of T among alive values with this prefix (1-based)
  int64_t alive, target;  // alive values in all; alive values to prune
  unsigned long long digit_count[256];
};

__device__ __forceinline__ int64_t lower_bound(const uint64_t* v, int64_t n, uint64_t x) {  // first >= x
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (v[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

__device__ __forceinline__ int64_t count_range(const uint64_t* v, int64_t n, uint64_t lo, uint64_t hi) {  // [lo, hi]
  const int64_t up_to_hi = hi == ~uint64_t(0) ? n : lower_bound(v, n, hi + 1);
  return up_to_hi - lower_bound(v, n, lo);
}

// One block: masked counts, alive total, the number to prune.
__global__ void init_kernel(const uint64_t* const* values, const int64_t* numels, int layers, int64_t k_total,
                            State* st, int64_t* masked) {
  using Reduce = cub::BlockReduce<int64_t, 256>;
  __shared__ typename Reduce::TempStorage tmp;
  int64_t m_sum = 0, n_sum = 0;
  for (int i = threadIdx.x; i < layers; i += blockDim.x) {
    masked[i] = lower_bound(values[i], numels[i], 1);
    m_sum += masked[i];
    n_sum += numels[i];
  }
  const int64_t m = Reduce(tmp).Sum(m_sum);
  __syncthreads();
  const int64_t n = Reduce(tmp).Sum(n_sum);
  if (threadIdx.x == 0) {
    st->prefix = 0;
    st->alive = n - m;
    st->target = k_total - m < 0 ? 0 : (k_total - m > n - m ? n - m : k_total - m);
    st->k = st->target > 0 ? st->target : 1;
  }
  for (int d = threadIdx.x; d < 256; d += blockDim.x) st->digit_count[d] = 0;
}

// grid (layers, digit blocks): thread = one digit range of one layer.
__global__ void count_digits_kernel(const uint64_t* const* values, const int64_t* numels, int shift, State* st) {
  const int layer = blockIdx.x, digit = threadIdx.x;
  const uint64_t below = shift ? (uint64_t(1) << shift) - 1 : 0;
  const uint64_t lo = st->prefix | (uint64_t(digit) << shift);
  const uint64_t hi = lo | below;
  const int64_t c = count_range(values[layer], numels[layer], lo < 1 ? 1 : lo, hi);  // alive values only
  if (c) atomicAdd(&st->digit_count[digit], static_cast<unsigned long long>(c));
}

__global__ void pick_digit_kernel(int shift, State* st) {
  using Scan = cub::BlockScan<int64_t, 256>;
  __shared__ typename Scan::TempStorage tmp;
  const int d = threadIdx.x;
  const int64_t c = int64_t(st->digit_count[d]);
  int64_t before;
  Scan(tmp).ExclusiveSum(c, before);
  const int64_t k = st->k;
  __syncthreads();
  if (before < k && k <= before + c) {  // exactly one digit holds the k-th value
    st->prefix |= uint64_t(d) << shift;
    st->k = k - before;
  }
  st->digit_count[d] = 0;
}

// One block: each layer's cut count.
__global__ void finish_kernel(const uint64_t* const* values, const int64_t* numels, int layers, const int64_t* masked,
                              const State* st, int64_t* pruned, uint64_t* threshold_value) {
  using Scan = cub::BlockScan<int64_t, 256>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ int64_t carried;
  const uint64_t t = st->prefix;
  const bool none = st->target == 0, all = st->target == st->alive;
  if (threadIdx.x == 0) {
    carried = 0;
    *threshold_value = none ? 0 : t;
  }
  const int64_t ties_wanted = st->k;  // T's rank among the values equal to T
  __syncthreads();
  for (int base = 0; base < layers; base += blockDim.x) {  // layer order matters for the ties
    const int i = base + threadIdx.x;
    int64_t below = 0, equal = 0;
    if (i < layers) {
      const int64_t lo = lower_bound(values[i], numels[i], t);
      below = lo - masked[i];
      equal = lower_bound(values[i], numels[i], t + 1) - lo;
    }
    int64_t equal_before;
    Scan(tmp).ExclusiveSum(equal, equal_before);
    equal_before += carried;
    if (i < layers) {
      int64_t ties = ties_wanted - equal_before;
      ties = ties < 0 ? 0 : (ties > equal ? equal : ties);
      pruned[i] = none ? masked[i] : all ? numels[i] : masked[i] + below + ties;
    }
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) carried = equal_before + equal;
    __syncthreads();
  }
}

}  // namespace

size_t global_cut_workspace_bytes(int layers) { return sizeof(State) + sizeof(int64_t) * size_t(layers); }

void global_cut(const uint64_t* const* values, const int64_t* numels, int layers, int64_t k_total, int64_t* pruned,
                uint64_t* threshold_value, void* workspace, cudaStream_t stream) {
  if (layers == 0) return;
  auto* st = static_cast<State*>(workspace);
  auto* masked = reinterpret_cast<int64_t*>(st + 1);
  init_kernel<<<1, 256, 0, stream>>>(values, numels, layers, k_total, st, masked);
  check_launch("global_cut init_kernel");
  for (int shift = 56; shift >= 0; shift -= 8) {
    count_digits_kernel<<<layers, 256, 0, stream>>>(values, numels, shift, st);
    check_launch("global_cut count_digits_kernel");
    pick_digit_kernel<<<1, 256, 0, stream>>>(shift, st);
    check_launch("global_cut pick_digit_kernel");
  }
  finish_kernel<<<1, 256, 0, stream>>>(values, numels, layers, masked, st, pruned, threshold_value);
  check_launch("global_cut finish_kernel");
}

}  // namespace lamp_cuda
