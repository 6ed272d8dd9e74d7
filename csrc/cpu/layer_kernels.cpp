// Per-layer CPU kernels. Each has a pure-torch twin in lamp_kernels/kernels_torch.py with the same outputs.
//
//   bin_summary(w, mask)              -> counts[B] (alive elements per bin), sums[B, L] (27-bit limbs of sum M^2)
//   gather_bin_keys(w, mask, lo, hi)  -> sorted keys of the alive elements whose bin lies in [lo, hi]
//   apply_cut(w, mask, cut_key, ties) -> keep mask: alive and (key > cut_key, or key == cut_key and among the
//                                        equal keys at least `ties` precede it in flat order)
//   zero_cut_(w, mask, cut_key, ties) -> the same decision, applied in place: pruned (and masked-out) weights := 0
// (lamp_scores lives in scores_cpu.cpp.) Each pass is cut into chunks run as tasks on the task pool (task_pool.h).
#include "layer_kernels.h"

#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <vector>

#include "float_keys.h"
#include "huge_pages.h"
#include "task_pool.h"

namespace lamp {

namespace {

constexpr int64_t kGrain = 1 << 16;

const bool* mask_ptr(const at::Tensor& mask) { return mask.defined() ? mask.data_ptr<bool>() : nullptr; }

at::Tensor contiguous_mask(const std::optional<at::Tensor>& mask) {
  return mask.has_value() && mask->defined() ? mask->contiguous() : at::Tensor();
}

template <typename scalar_t>
void bin_summary_impl(const at::Tensor& w, const at::Tensor& mask, at::Tensor& counts, at::Tensor& sums) {
  using K = Keys<scalar_t>;
  const int64_t n = w.numel();
  const int code = K::code, bins = num_bins(code), limbs = num_limbs(code), shift = bin_shift(code);
  const int stride = 1 + limbs;  // per bin: count, then limbs
  const int workers = max_workers();
  const int64_t chunks = chunk_count(n, workers, kGrain);
  // One histogram per worker (sums are exact integers: any split of the work gives the same totals).
  std::vector<std::vector<int64_t>> local(std::min<int64_t>(workers, chunks));
  const scalar_t* x = w.data_ptr<scalar_t>();
  const bool* m = mask_ptr(mask);
  parallel_tasks(chunks, workers, [&](int64_t c, int worker) {
    std::vector<int64_t>& mine = local[worker];
    if (mine.empty()) mine.assign(static_cast<size_t>(bins) * stride, 0);
    int64_t* h = mine.data();
    int64_t b, e;
    chunk_range(n, chunks, c, b, e);
    auto add = [&](int64_t i) {
      const uint64_t k = K::key(x[i]);
      int64_t* slot = h + static_cast<size_t>(k >> shift) * stride;
      ++slot[0];
      if (limbs) add_square_limbs(code, k, slot + 1);
    };
    if (m) {  // two loops, so the unmasked one carries no per-element test
      for (int64_t i = b; i < e; ++i)
        if (m[i]) add(i);
    } else {
      for (int64_t i = b; i < e; ++i) add(i);
    }
  });
  // at::empty and our own fill: at::zeros of this size would run on torch's OpenMP threads, which then spin.
  counts = at::empty({bins}, at::kLong);
  sums = at::empty({bins, limbs}, at::kLong);
  int64_t* cp = counts.data_ptr<int64_t>();
  int64_t* sp = sums.data_ptr<int64_t>();
  std::fill(cp, cp + bins, 0);
  std::fill(sp, sp + static_cast<size_t>(bins) * limbs, 0);
  for (const auto& mine : local) {
    if (mine.empty()) continue;
    const int64_t* h = mine.data();
    for (int bin = 0; bin < bins; ++bin) {
      cp[bin] += h[static_cast<size_t>(bin) * stride];
      for (int l = 0; l < limbs; ++l) sp[bin * limbs + l] += h[static_cast<size_t>(bin) * stride + 1 + l];
    }
  }
}

// Appends to `out` the keys (|x| bit patterns) of the alive elements whose bin (key >> shift) lies in
// [lo, lo + width], in index order. Candidate bins hold few elements, so a branch-free, vectorisable scan of each
// block finds whether it holds any, and only such blocks are walked element by element (bins are < 2^16, so
// the range test is one unsigned 32-bit comparison). Compiled twice on x86-64 GCC (AVX2 and the baseline),
// the CPU's features choosing at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LAMP_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LAMP_VECTOR_CLONES
#endif

template <typename bits_t>
inline void gather_bits(const bits_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                        std::vector<int64_t>& out) {
  // Every bit but the sign (numeric_limits, not ~bits_t{0}: that promotes to int, and -1 >> 1 keeps the sign).
  constexpr bits_t kMagnitude = static_cast<bits_t>(std::numeric_limits<bits_t>::max() >> 1);
  constexpr int64_t kBlock = 256;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    uint32_t hits = 0;
    for (int64_t i = i0; i < i1; ++i)
      hits += static_cast<uint32_t>(static_cast<uint32_t>((x[i] & kMagnitude) >> shift) - lo <= width);
    if (!hits) continue;
    for (int64_t i = i0; i < i1; ++i) {
      const bits_t k = x[i] & kMagnitude;
      if ((!m || m[i]) && static_cast<uint32_t>(k >> shift) - lo <= width) out.push_back(static_cast<int64_t>(k));
    }
  }
}

LAMP_VECTOR_CLONES void gather16(const uint16_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                                 std::vector<int64_t>& out) {
  gather_bits(x, m, n, shift, lo, width, out);
}
LAMP_VECTOR_CLONES void gather32(const uint32_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                                 std::vector<int64_t>& out) {
  gather_bits(x, m, n, shift, lo, width, out);
}
LAMP_VECTOR_CLONES void gather64(const uint64_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                                 std::vector<int64_t>& out) {
  gather_bits(x, m, n, shift, lo, width, out);
}

template <typename scalar_t>
std::vector<int64_t> gather_bin_keys_impl(const at::Tensor& w, const at::Tensor& mask, int64_t bin_lo,
                                          int64_t bin_hi) {
  using K = Keys<scalar_t>;
  const int64_t n = w.numel();
  const int shift = bin_shift(K::code);
  const scalar_t* x = w.data_ptr<scalar_t>();
  const bool* m = mask_ptr(mask);
  // Bins are in [0, 2^16): clamp the range to it, so that it fits 32-bit arithmetic.
  const int64_t lo = std::max<int64_t>(bin_lo, 0), hi = std::min<int64_t>(bin_hi, 0xFFFF);
  if (hi < lo) return {};
  const int workers = max_workers();
  const int64_t chunks = chunk_count(n, workers, kGrain);
  std::vector<std::vector<int64_t>> local(std::min<int64_t>(workers, chunks));  // per worker; sorted below
  parallel_tasks(chunks, workers, [&](int64_t c, int worker) {
    int64_t b, e;
    chunk_range(n, chunks, c, b, e);
    const bool* mc = m ? m + b : nullptr;
    const uint32_t lo32 = static_cast<uint32_t>(lo), width = static_cast<uint32_t>(hi - lo);
    if constexpr (sizeof(scalar_t) == 2)
      gather16(reinterpret_cast<const uint16_t*>(x + b), mc, e - b, shift, lo32, width, local[worker]);
    else if constexpr (sizeof(scalar_t) == 4)
      gather32(reinterpret_cast<const uint32_t*>(x + b), mc, e - b, shift, lo32, width, local[worker]);
    else
      gather64(reinterpret_cast<const uint64_t*>(x + b), mc, e - b, shift, lo32, width, local[worker]);
  });
  std::vector<int64_t> all;
  for (auto& v : local) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  return all;
}

// One pass deciding keep/prune for every element; sink(i, keep) records the decision.
//
// keep = alive and (key > cut, or key == cut and at least `ties` equal alive keys precede it in flat order).
// The comparison is made in the key's own width (cut clamped into it), and blocks are branch-free loops the
// compiler vectorises: at a cut near the median, a branch on the comparison mispredicts on every other
// element (measured: 5x slower). Only a block where the running count of equal keys crosses `ties` is walked
// element by element; before it, equal keys are pruned (keep = key > cut), after it kept (key >= cut).
template <typename scalar_t, typename Sink>
void cut_pass(const scalar_t* x, const bool* m, int64_t n, int64_t cut_key, int64_t ties, Sink sink) {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  // Keys are magnitudes (sign bit clear), so top + 1 still fits key_t. keep = alive and key >= lo, with
  // lo = cut + 1 while equal keys are being pruned and lo = cut once `ties` of them have been; a cut below 0
  // keeps every alive element, one above every key keeps none.
  // (In uint64_t: for 64-bit keys top + 1 = 2^63 overflows int64_t.)
  constexpr uint64_t top = std::numeric_limits<key_t>::max() >> 1;
  const uint64_t cut = cut_key < 0 ? 0 : static_cast<uint64_t>(cut_key);
  const key_t tie = static_cast<key_t>(std::min(cut, top + 1));  // == cut_key when in range
  const key_t lo_strict = static_cast<key_t>(cut_key < 0 ? 0 : std::min(cut, top) + 1);
  if (cut_key < 0 || cut > top) ties = 0;  // no key equals the cut
  const int workers = max_workers();
  const int64_t chunks = chunk_count(n, workers, kGrain);
  auto count_equal = [&](int64_t b, int64_t e) {
    int64_t cnt = 0;
    if (m) {
      for (int64_t i = b; i < e; ++i) cnt += m[i] & (K::key(x[i]) == tie);
    } else {
      for (int64_t i = b; i < e; ++i) cnt += K::key(x[i]) == tie;
    }
    return cnt;
  };
  auto keep_from = [&](int64_t b, int64_t e, key_t lo) {  // branch-free: the compiler vectorises it
    if (m) {
      for (int64_t i = b; i < e; ++i) sink(i, m[i] & (K::key(x[i]) >= lo));
    } else {
      for (int64_t i = b; i < e; ++i) sink(i, K::key(x[i]) >= lo);
    }
  };
  // Equal keys at the cut are pruned in flat order: chunk c starts with rank = equal keys in chunks < c.
  std::vector<int64_t> first_rank(chunks + 1, 0);
  if (ties > 0) {
    parallel_tasks(chunks, workers, [&](int64_t c, int) {
      int64_t b, e;
      chunk_range(n, chunks, c, b, e);
      first_rank[c + 1] = count_equal(b, e);
    });
    std::partial_sum(first_rank.begin(), first_rank.end(), first_rank.begin());
  }
  constexpr int64_t kBlock = 1024;
  parallel_tasks(chunks, workers, [&](int64_t c, int) {
    int64_t b, e;
    chunk_range(n, chunks, c, b, e);
    int64_t rank = first_rank[c];
    for (int64_t i0 = b; i0 < e; i0 += kBlock) {
      const int64_t i1 = std::min(e, i0 + kBlock);
      if (rank >= ties) {  // every tie to prune is behind us: keep key >= cut, to the end of the chunk
        keep_from(i0, e, tie);
        break;
      }
      const int64_t equal = count_equal(i0, i1);
      if (rank + equal <= ties) {  // all of this block's equal keys are pruned
        keep_from(i0, i1, lo_strict);
        rank += equal;
        continue;
      }
      for (int64_t i = i0; i < i1; ++i) {  // the block where the count crosses `ties`
        const bool alive = !m || m[i];
        const key_t k = K::key(x[i]);
        sink(i, alive && (k > tie || (k == tie && rank++ >= ties)));
      }
    }
  });
}

template <typename scalar_t>
void apply_cut_impl(const at::Tensor& w, const at::Tensor& mask, int64_t cut_key, int64_t ties, bool* o) {
  cut_pass(w.data_ptr<scalar_t>(), mask_ptr(mask), w.numel(), cut_key, ties, [o](int64_t i, bool keep) { o[i] = keep; });
}

template <typename scalar_t>
void zero_cut_impl(at::Tensor& w, const at::Tensor& mask, int64_t cut_key, int64_t ties) {
  using bits_t = typename Keys<scalar_t>::key_t;  // an unsigned integer as wide as scalar_t
  static_assert(sizeof(bits_t) == sizeof(scalar_t));
  scalar_t* x = w.data_ptr<scalar_t>();
  bits_t* b = reinterpret_cast<bits_t*>(x);
  // Each element is written after its own key was read, so the pass is race-free. The store is branchless
  // (AND with all ones or all zeros; +0.0 is the all-zero pattern): at sparsities near 50% a branch on
  // `keep` mispredicts on every other element.
  cut_pass(static_cast<const scalar_t*>(x), mask_ptr(mask), w.numel(), cut_key, ties,
           [b](int64_t i, bool keep) { b[i] &= static_cast<bits_t>(-static_cast<bits_t>(keep)); });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> bin_summary(const at::Tensor& w_in, const std::optional<at::Tensor>& mask_in) {
  const at::Tensor w = w_in.contiguous();
  const at::Tensor mask = contiguous_mask(mask_in);
  at::Tensor counts, sums;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "bin_summary",
                                  [&] { bin_summary_impl<scalar_t>(w, mask, counts, sums); });
  return {counts, sums};
}

at::Tensor gather_bin_keys(const at::Tensor& w_in, const std::optional<at::Tensor>& mask_in, int64_t bin_lo,
                           int64_t bin_hi) {
  const at::Tensor w = w_in.contiguous();
  const at::Tensor mask = contiguous_mask(mask_in);
  std::vector<int64_t> keys;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "gather_bin_keys",
                                  [&] { keys = gather_bin_keys_impl<scalar_t>(w, mask, bin_lo, bin_hi); });
  at::Tensor out = at::empty({static_cast<int64_t>(keys.size())}, at::kLong);
  std::copy(keys.begin(), keys.end(), out.data_ptr<int64_t>());
  return out;
}

at::Tensor apply_cut(const at::Tensor& w_in, const std::optional<at::Tensor>& mask_in, int64_t cut_key,
                     int64_t ties) {
  const at::Tensor w = w_in.contiguous();
  const at::Tensor mask = contiguous_mask(mask_in);
  at::Tensor out = at::empty(w.sizes(), w.options().dtype(at::kBool));
  advise_huge_pages(out.data_ptr(), out.nbytes());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "apply_cut",
                                  [&] { apply_cut_impl<scalar_t>(w, mask, cut_key, ties, out.data_ptr<bool>()); });
  return out;
}

void zero_cut_(at::Tensor& w, const std::optional<at::Tensor>& mask_in, int64_t cut_key, int64_t ties) {
  TORCH_CHECK(w.is_contiguous(), "zero_cut_: the weight must be contiguous");
  const at::Tensor mask = contiguous_mask(mask_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "zero_cut_",
                                  [&] { zero_cut_impl<scalar_t>(w, mask, cut_key, ties); });
}

}  // namespace lamp
