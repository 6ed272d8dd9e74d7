// Sparse per-layer summaries of many layers in one call (the CPU kernels of lamp_kernels::bin_summaries and
// bin_summaries_scaled).
//
// A layer's summary lists only its nonempty bins: (bin, alive count, exact limb sums of M^2), bins
// ascending. Memory and time are proportional to the layer's size and the bins its values occupy, never to
// the 2^15/2^16 bins of the dtype: a layer of 9 weights costs 9 entries. Large layers are histogrammed
// densely (add_to_histogram; one pass, tasks over the chunks of many layers at once) and compacted; small
// ones are sorted by key and run-length encoded, a layer per task in the same parallel region (task_pool.h).
// Both give the same entries as the dense histogram (tested against kernels_torch).
//
// Output (one dtype per call): offsets int64[L + 1] (layer i owns entries [offsets[i], offsets[i+1])),
// bins int64[E], counts int64[E], sums int64[E, limbs].
#include "summaries.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "exact_sum.h"
#include "float_keys.h"
#include "scaled_keys.h"
#include "task_pool.h"
#include "vector_clones.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace lamp {

namespace {

// Layers up to this size are summarised by sorting their keys: cheaper than a dense histogram over
// 2^15..2^16 bins, and proportional to the layer.
constexpr int64_t kSmallLayer = 1 << 12;
constexpr int64_t kGrain = 1 << 16;  // elements per chunk of a large layer, at least

struct Entries {
  std::vector<int64_t> bins, counts, sums;  // sums: limbs per entry
  // Over every element, alive or not (what bin_summaries_scanned reports for a value check): the largest bin
  // of a magnitude key (-1 for an empty layer), and whether some element is negative and nonzero.
  int64_t top_bin = -1;
  bool negative = false;
};

// The entries of a small layer from its alive keys (in any order): sorted, then run-length encoded by bin.
void entries_from_keys(int code, std::vector<uint64_t>& keys, Entries& out) {
  const int shift = bin_shift(code), limbs = num_limbs(code);
  std::sort(keys.begin(), keys.end());
  for (size_t i = 0; i < keys.size(); ++i) {
    const int64_t bin = static_cast<int64_t>(keys[i] >> shift);
    if (out.bins.empty() || out.bins.back() != bin) {
      out.bins.push_back(bin);
      out.counts.push_back(0);
      out.sums.resize(out.sums.size() + limbs, 0);
    }
    ++out.counts.back();
    if (limbs) add_square_limbs(code, keys[i], out.sums.data() + out.sums.size() - limbs);
  }
}


// Bins [lo, hi] of a histogram: (a superset of) the ones a pass added alive elements to (empty when lo > hi);
// every other bin is still zero. Flushing, zeroing and compacting only these keeps the per-layer cost
// proportional to the bins the values occupy (a few thousand of fp32's 2^16 for real weights), not to the whole
// table. top_bin and top_raw: the value scan of scan_bins, over every element alive or not (-1 / 0 if none).
struct BinRange {
  uint32_t lo = UINT32_MAX, hi = 0;
  int64_t top_bin = -1;
  uint64_t top_raw = 0;
  bool empty() const { return lo > hi; }
  void add(uint32_t a, uint32_t b) {
    lo = std::min(lo, a);
    hi = std::max(hi, b);
  }
};

// A worker's histogram: per bin (key >> shift) `local_stride` int64 slots. bf16/fp16: the alive count.
// fp64: the count and the 27-bit limb sums of M^2. fp32: two slots, so that an element costs two
// read-modify-writes instead of three: slot 0 packs the count (bits 40 and up) with the sum of the key's low
// 15 bits l (bits 0..39), slot 1 sums l^2. Every element of a bin has M = H + l, H the bin's fixed high
// significand bits, so the bin's sum of M^2 is c H^2 + 2 H sum(l) + sum(l^2), exactly; add_local_bin
// turns the slots into count and limbs when a worker flushes. The packed fields hold at most kPackedWindow
// elements between flushes (count <= 2^22 < 2^24, its field's width; sum(l) < 2^15 * 2^22 = 2^37 < 2^40).
constexpr int64_t kPackedWindow = int64_t{1} << 22;
constexpr uint64_t kPackedCount = uint64_t{1} << 40;

inline int local_stride(int code) { return code == kF32 ? 2 : 1 + num_limbs(code); }
inline int64_t local_window(int code) { return code == kF32 ? kPackedWindow : INT64_MAX; }

// Adds a worker's slots of one bin to a total's (count, limbs).
inline void add_local_bin(int code, uint32_t bin, const int64_t* src, int64_t* dst) {
  if (code != kF32) {
    for (int s = 0; s < 1 + num_limbs(code); ++s) dst[s] += src[s];
    return;
  }
  const uint64_t packed = static_cast<uint64_t>(src[0]), c = packed / kPackedCount;
  if (!c) return;
  const uint64_t sum_l = packed % kPackedCount, sum_l2 = static_cast<uint64_t>(src[1]);
  const uint64_t H = ((bin >> 8) ? uint64_t{0x800000} : 0) | (uint64_t{bin & 0xFF} << 15);
  const u128 total = static_cast<u128>(c) * (H * H) + static_cast<u128>(2 * H) * sum_l + sum_l2;  // < 2^73
  dst[0] += static_cast<int64_t>(c);
  dst[1] += static_cast<int64_t>(static_cast<uint64_t>(total) & kLimbMask);
  dst[2] += static_cast<int64_t>(total >> kLimbBits);
}

// Widens `touched` to the bins of the alive keys of x[0, n) (m: alive flags, or none). A separate loop over the
// block, run after the block's histogram loop has brought it into L1, that vectorises (with AVX2 on x86-64,
// vector_clones.h): tracking the range per element in the histogram loop made the bf16 count loop's
// compare-and-move chain its bottleneck (measured: 0.77 ns per element against 0.44 without it). Masked-out
// elements add zeros to their own bins (add_to_histogram), which leaves those bins zero, so the range need not
// cover them: with it, a masked layer whose pruned weights are zeros would stretch its range down to bin 0.
// scan_bins (bin_summaries_scanned only) also keeps the value scan over every element; widen_bins leaves it
// untouched: writing it there too made the bf16 summaries 5-15% slower (measured).
template <bool kScan, typename bits_t>
inline void widen_bins_impl(const bits_t* x, const bool* m, int64_t n, int shift, BinRange& touched) {
  constexpr bits_t kMagnitude = static_cast<bits_t>(std::numeric_limits<bits_t>::max() >> 1);
  // lo and hi in the signed type: keys are below 2^(bits - 1), so the orders agree, and AVX2 has the signed
  // 64-bit comparison it lacks unsigned (the fp64 loop vectorises only so).
  using cmp_t = std::make_signed_t<bits_t>;
  constexpr cmp_t kNone = static_cast<cmp_t>(kMagnitude);  // at least every magnitude key
  cmp_t lo = kNone, hi = 0;
  bits_t top = 0, raw = 0;
  if (m) {
    const uint8_t* alive = reinterpret_cast<const uint8_t*>(m);
    for (int64_t i = 0; i < n; ++i) {
      const bits_t k = x[i] & kMagnitude, keep = static_cast<bits_t>(0 - static_cast<bits_t>(alive[i] != 0));
      lo = std::min(lo, static_cast<cmp_t>((k | ~keep) & kMagnitude));  // masked out: kNone
      hi = std::max(hi, static_cast<cmp_t>(k & keep));                   // masked out: 0
      if constexpr (kScan) {
        top = std::max(top, k);
        raw = std::max(raw, x[i]);
      }
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const bits_t k = x[i] & kMagnitude;
      lo = std::min(lo, static_cast<cmp_t>(k));
      hi = std::max(hi, static_cast<cmp_t>(k));
      if constexpr (kScan) raw = std::max(raw, x[i]);
    }
    top = static_cast<bits_t>(hi);
  }
  if (lo <= hi) touched.add(static_cast<uint32_t>(lo >> shift), static_cast<uint32_t>(hi >> shift));
  if constexpr (kScan) {
    if (n) {
      touched.top_bin = std::max<int64_t>(touched.top_bin, static_cast<int64_t>(top >> shift));
      touched.top_raw = std::max<uint64_t>(touched.top_raw, raw);
    }
  }
}

template <typename scalar_t>
using bits_of = typename Keys<scalar_t>::key_t;

// Whether a raw bit pattern above every non-negative one's was seen: a negative value other than -0.0.
template <typename scalar_t>
inline bool negative_seen(uint64_t top_raw) {
  return top_raw > (uint64_t{1} << (8 * sizeof(bits_of<scalar_t>) - 1));
}

// One wrapper per key width: GCC's target_clones does not apply to templates.
LAMP_VECTOR_CLONES void widen_bins(const uint16_t* x, const bool* m, int64_t n, int shift, BinRange& touched) {
  widen_bins_impl<false>(x, m, n, shift, touched);
}
LAMP_VECTOR_CLONES void widen_bins(const uint32_t* x, const bool* m, int64_t n, int shift, BinRange& touched) {
  widen_bins_impl<false>(x, m, n, shift, touched);
}
LAMP_VECTOR_CLONES void widen_bins(const uint64_t* x, const bool* m, int64_t n, int shift, BinRange& touched) {
  widen_bins_impl<false>(x, m, n, shift, touched);
}
LAMP_VECTOR_CLONES void scan_bins(const uint16_t* x, const bool* m, int64_t n, int shift, BinRange& touched) {
  widen_bins_impl<true>(x, m, n, shift, touched);
}
LAMP_VECTOR_CLONES void scan_bins(const uint32_t* x, const bool* m, int64_t n, int shift, BinRange& touched) {
  widen_bins_impl<true>(x, m, n, shift, touched);
}
LAMP_VECTOR_CLONES void scan_bins(const uint64_t* x, const bool* m, int64_t n, int shift, BinRange& touched) {
  widen_bins_impl<true>(x, m, n, shift, touched);
}

// fp32 elements x[0, n) (m: alive flags, or none) into a worker's packed two-slot bins (layout above), the
// same additions as add_to_histogram's scalar loop, 8 elements at a time with AVX2 where the CPU has it.
// Each element's two slots are one 16-byte pair, so it costs one 128-bit load-add-store instead of
// two scalar ones; its keys, low bits, squares and bin offsets come from 256-bit operations on all eight.
// The pair, as 32-bit words (little-endian): (l, 2^8, l^2, 0) -- slot 0 gets 2^40 + l, slot 1 l^2 < 2^30;
// a masked-out element's words are all zero. The loop waited on its stream of x more than on the bins: a
// prefetch 2 KiB ahead keeps it fed. Measured on a Llama MLP layer of Wanda-like fp32 importance, one
// thread: 1.3 (scalar loop) -> 0.87 (pairs) -> 0.75-0.84 ns per element (prefetched); the histogram is the
// same to the bit (tested against kernels_torch).
#if defined(__x86_64__) && defined(__GNUC__)
#define LAMP_AVX2_HISTOGRAM 1
__attribute__((target("avx2"))) void add_f32_pairs_avx2(const float* x, const bool* m, int64_t n, int64_t* h) {
  const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF), low = _mm256_set1_epi32(0x7FFF),
                count = _mm256_set1_epi32(1 << 8), pair = _mm256_set1_epi32(~15), zero = _mm256_setzero_si256();
  alignas(32) uint32_t offset[8];  // byte offsets of the eight elements' slot pairs: bin * 16
  char* base = reinterpret_cast<char*>(h);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    // 2 KiB ahead (as an integer: past the layer's end it is a harmless prefetch, not pointer arithmetic)
    _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(x + i) + 2048), _MM_HINT_T0);
    const __m256i k = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), magnitude);
    _mm256_store_si256(reinterpret_cast<__m256i*>(offset), _mm256_and_si256(_mm256_srli_epi32(k, 11), pair));
    __m256i l = _mm256_and_si256(k, low), c = count;
    if (m) {  // eight flags -> eight 32-bit lanes, all ones where dead
      const __m256i flags = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m + i)));
      const __m256i dead = _mm256_cmpeq_epi32(flags, zero);
      l = _mm256_andnot_si256(dead, l);
      c = _mm256_andnot_si256(dead, c);
    }
    const __m256i l2 = _mm256_mullo_epi32(l, l);
    // words of elements (0, 1 | 4, 5) and (2, 3 | 6, 7) interleaved, then one pair per element and 128-bit lane
    const __m256i a = _mm256_unpacklo_epi32(l, c), b = _mm256_unpacklo_epi32(l2, zero);
    const __m256i d = _mm256_unpackhi_epi32(l, c), e = _mm256_unpackhi_epi32(l2, zero);
    const __m256i p04 = _mm256_unpacklo_epi64(a, b), p15 = _mm256_unpackhi_epi64(a, b);
    const __m256i p26 = _mm256_unpacklo_epi64(d, e), p37 = _mm256_unpackhi_epi64(d, e);
    auto add = [&](int j, __m128i v) {
      __m128i* slot = reinterpret_cast<__m128i*>(base + offset[j]);
      _mm_storeu_si128(slot, _mm_add_epi64(_mm_loadu_si128(slot), v));
    };
    add(0, _mm256_castsi256_si128(p04));
    add(1, _mm256_castsi256_si128(p15));
    add(2, _mm256_castsi256_si128(p26));
    add(3, _mm256_castsi256_si128(p37));
    add(4, _mm256_extracti128_si256(p04, 1));
    add(5, _mm256_extracti128_si256(p15, 1));
    add(6, _mm256_extracti128_si256(p26, 1));
    add(7, _mm256_extracti128_si256(p37, 1));
  }
  for (; i < n; ++i) {  // the last few, as the scalar loop adds them
    const uint64_t k = Keys<float>::key(x[i]), l = k & 0x7FFF, alive = !m || m[i] ? 1 : 0;
    int64_t* slot = h + static_cast<size_t>(k >> 15) * 2;
    slot[0] += static_cast<int64_t>((kPackedCount | l) * alive);
    slot[1] += static_cast<int64_t>(l * l * alive);
  }
}

// Whether to take add_f32_pairs_avx2: the CPU has AVX2, and LAMP_KERNELS_NO_AVX2 is not set (a switch for the
// tests of the scalar loop, read once per process).
inline bool avx2_histogram() {
  static const bool use = __builtin_cpu_supports("avx2") && !std::getenv("LAMP_KERNELS_NO_AVX2");
  return use;
}
#endif

// Adds elements [b, e) of one layer into a worker's histogram h (layout above), a block at a time. Sums are
// exact integers, so any split of a layer into ranges, added in any order, gives the same totals. Widens
// `touched` to (a superset of) the bins it added to; kScan: and keeps the largest raw bit pattern (scan_bins).
template <bool kScan = false, typename scalar_t>
inline void add_to_histogram(const scalar_t* x, const bool* m, int64_t b, int64_t e, int64_t* h, BinRange& touched) {
  using K = Keys<scalar_t>;
  using bits_t = typename K::key_t;
  constexpr int code = K::code;
  constexpr int64_t kBlock = 1024;
  const int limbs = num_limbs(code), shift = bin_shift(code), stride = local_stride(code);
  // alive is 1 or 0: a masked-out element adds zeros to its own bin (which stays zero, so widen_bins's range
  // need not cover it) instead of taking a branch, which mispredicts on scattered masks (measured: masked
  // VGG-16 fp32 summaries 28.5 -> 19.4 ms).
  auto add = [&](int64_t i, uint64_t alive) {
    const uint64_t k = K::key(x[i]);
    int64_t* slot = h + static_cast<size_t>(k >> shift) * stride;
    if constexpr (code == kF32) {
      const uint64_t l = k & 0x7FFF;
      slot[0] += static_cast<int64_t>((kPackedCount | l) * alive);
      slot[1] += static_cast<int64_t>(l * l * alive);
    } else {
      slot[0] += static_cast<int64_t>(alive);
      if (limbs) add_square_limbs(code, k * alive, slot + 1);  // key 0: M = 0, no square
    }
  };
  for (int64_t i0 = b; i0 < e; i0 += kBlock) {
    const int64_t i1 = std::min(e, i0 + kBlock);
    bool added = false;
#ifdef LAMP_AVX2_HISTOGRAM
    if constexpr (code == kF32) {
      if ((added = avx2_histogram())) add_f32_pairs_avx2(x + i0, m ? m + i0 : nullptr, i1 - i0, h);
    }
#endif
    if (added) {
    } else if (m) {  // two loops, so the unmasked one reads no mask
      if constexpr (code == kF64) {  // four limb adds per element: skipping the masked-out ones pays
        for (int64_t i = i0; i < i1; ++i)
          if (m[i]) add(i, 1);
      } else {
        for (int64_t i = i0; i < i1; ++i) add(i, m[i] ? 1 : 0);
      }
    } else {
      for (int64_t i = i0; i < i1; ++i) add(i, 1);
    }
    const bits_t* bits = reinterpret_cast<const bits_t*>(x + i0);
    const bool* alive = m ? m + i0 : nullptr;
    if constexpr (kScan)
      scan_bins(bits, alive, i1 - i0, shift, touched);
    else
      widen_bins(bits, alive, i1 - i0, shift, touched);
  }
}

// A small layer's entries from its alive keys, sorted and run-length encoded, and its value scan (Entries).
template <typename scalar_t>
void small_summary(const scalar_t* x, const bool* m, int64_t n, Entries& out) {
  using K = Keys<scalar_t>;
  std::vector<uint64_t> keys;
  keys.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (!m || m[i]) keys.push_back(K::key(x[i]));
  entries_from_keys(K::code, keys, out);
  BinRange all;
  scan_bins(reinterpret_cast<const bits_of<scalar_t>*>(x), nullptr, n, bin_shift(K::code), all);
  out.top_bin = all.top_bin;
  out.negative = negative_seen<scalar_t>(all.top_raw);
}

// Dense histograms of large layers, a group of layers at a time (their full-size totals within kGroupBytes:
// 256 bf16/fp16 layers, 42 fp32, 25 fp64), all their chunks one list of tasks -- with the small layers, one
// task each, in the first group's list: as few parallel regions as possible, since each costs a thread whose
// core another process is using up to a scheduler time slice of waiting. Each worker adds its chunks into its
// own histogram and, when its next task belongs to another layer, flushes the bins it touched into that
// layer's total (under the layer's lock) and zeroes them: tasks are claimed in order, so a worker flushes at
// most once per layer it touched. A layer's total is allocated (uninitialised) at its first flush, and only
// its touched range -- a few thousand bins for real weights -- is ever written, added to or compacted.
constexpr size_t kGroupBytes = size_t{64} << 20;

// add_range(i, b, e, h, touched) adds elements [b, e) of layer i into the histogram h (add_to_histogram);
// small_fn(i, entries) summarises small layer i.
template <typename key_scalar, typename AddRange, typename Small>
void summarize_parts(const std::vector<int64_t>& numels, const std::vector<int64_t>& large,
                     const std::vector<int64_t>& small, std::vector<Entries>& parts, const AddRange& add_range,
                     const Small& small_fn) {
  const int code = Keys<key_scalar>::code, limbs = num_limbs(code);
  const size_t stride = 1 + limbs, size = static_cast<size_t>(num_bins(code)) * stride;
  const size_t lstride = local_stride(code), local_size = static_cast<size_t>(num_bins(code)) * lstride;
  const int64_t window = local_window(code);
  const int workers = max_workers();
  const size_t group = std::max<size_t>(1, kGroupBytes / (size * sizeof(int64_t)));
  struct Total {
    std::mutex lock;
    std::unique_ptr<int64_t[]> h;  // valid over bins `range` only
    BinRange range;
  };
  struct Local {
    int64_t layer = -1;
    std::vector<int64_t> h;  // all zero outside `touched`
    BinRange touched;
    int64_t added = 0;  // elements since the last flush
  };
  for (size_t g0 = 0; g0 == 0 || g0 < large.size(); g0 += group) {
    const size_t G = std::min(group, large.size() - g0);
    const int64_t smalls = g0 == 0 ? static_cast<int64_t>(small.size()) : 0;  // tasks after the chunks
    std::vector<int64_t> first(G + 1, 0), chunks(G);
    for (size_t j = 0; j < G; ++j) {
      chunks[j] = chunk_count(numels[large[g0 + j]], workers, kGrain);
      first[j + 1] = first[j] + chunks[j];
    }
    std::vector<Total> total(G);
    std::vector<Local> local(static_cast<size_t>(workers));
    auto flush = [&](Local& mine) {  // into the total of mine.layer; the worker's table is left all zero
      const BinRange r = mine.touched;
      if (mine.layer >= 0) {
        Total& t = total[mine.layer];
        const int64_t* src = mine.h.data();
        std::lock_guard<std::mutex> lock(t.lock);
        t.range.top_bin = std::max(t.range.top_bin, r.top_bin);
        t.range.top_raw = std::max(t.range.top_raw, r.top_raw);
        if (!r.empty()) {  // else nothing alive since the last flush: the table is all zero
          if (!t.h) t.h.reset(new int64_t[size]);  // uninitialised: bins outside t.range are never read
          int64_t* dst = t.h.get();
          if (t.range.empty()) {
            std::fill(dst + r.lo * stride, dst + (r.hi + 1) * stride, 0);
          } else {
            if (r.lo < t.range.lo) std::fill(dst + r.lo * stride, dst + t.range.lo * stride, 0);
            if (r.hi > t.range.hi) std::fill(dst + (t.range.hi + 1) * stride, dst + (r.hi + 1) * stride, 0);
          }
          t.range.add(r.lo, r.hi);
          for (uint32_t bin = r.lo; bin <= r.hi; ++bin)
            add_local_bin(code, bin, src + bin * lstride, dst + bin * stride);
          std::fill(mine.h.begin() + r.lo * lstride, mine.h.begin() + (r.hi + 1) * lstride, 0);
        }
      }
      mine.touched = BinRange();
      mine.added = 0;
    };
    parallel_tasks(first[G] + smalls, workers, [&](int64_t t, int worker) {
      if (t >= first[G]) {
        small_fn(small[t - first[G]], parts[small[t - first[G]]]);
        return;
      }
      const int64_t j = std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1;
      Local& mine = local[worker];
      if (mine.layer != j) {
        flush(mine);
        if (mine.h.empty()) mine.h.assign(local_size, 0);
        mine.layer = j;
      }
      int64_t b, e;
      chunk_range(numels[large[g0 + j]], chunks[j], t - first[j], b, e);
      for (int64_t w0 = b; w0 < e;) {  // at most `window` elements between flushes (packed fp32 slots)
        const int64_t w1 = w0 + std::min(e - w0, window);
        if (mine.added + (w1 - w0) > window) flush(mine);
        add_range(large[g0 + j], w0, w1, mine.h.data(), mine.touched);
        mine.added += w1 - w0;
        w0 = w1;
      }
    });
    for (Local& mine : local) flush(mine);
    parallel_tasks(static_cast<int64_t>(G), workers, [&](int64_t j, int) {  // compact: nonempty bins, ascending
      const Total& t = total[j];
      Entries& out = parts[large[g0 + j]];
      out.top_bin = t.range.top_bin;
      out.negative = negative_seen<key_scalar>(t.range.top_raw);
      for (uint32_t bin = t.range.lo; !t.range.empty() && bin <= t.range.hi; ++bin) {
        const int64_t* slot = t.h.get() + bin * stride;
        if (!slot[0]) continue;
        out.bins.push_back(static_cast<int64_t>(bin));
        out.counts.push_back(slot[0]);
        out.sums.insert(out.sums.end(), slot + 1, slot + stride);
      }
    });
  }
}

using Summaries = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Per layer, over every element alive or not (Entries::top_bin, Entries::negative): int64[L] and bool[L].
struct ValueScan {
  at::Tensor top_bins, negative;
};

// The summaries of L layers whose keys are key_scalar bit patterns: large layers by dense histograms
// (add_range), small ones a layer per task (small_fn(i, entries)); then packed into the output tensors.
// With `scan`, also each layer's value scan.
template <typename key_scalar, typename AddRange, typename Small>
Summaries summarize(const std::vector<int64_t>& numels, const AddRange& add_range, const Small& small_fn,
                    ValueScan* scan = nullptr) {
  const int64_t L = static_cast<int64_t>(numels.size());
  const int limbs = num_limbs(Keys<key_scalar>::code);
  std::vector<Entries> parts(L);
  std::vector<int64_t> small, large;
  for (int64_t i = 0; i < L; ++i) (numels[i] > kSmallLayer ? large : small).push_back(i);
  summarize_parts<key_scalar>(numels, large, small, parts, add_range, small_fn);
  at::Tensor offsets = at::empty({L + 1}, at::kLong);
  int64_t* off = offsets.data_ptr<int64_t>();
  off[0] = 0;
  for (int64_t i = 0; i < L; ++i) off[i + 1] = off[i] + static_cast<int64_t>(parts[i].bins.size());
  const int64_t E = off[L];
  at::Tensor bins = at::empty({E}, at::kLong), counts = at::empty({E}, at::kLong),
             sums = at::empty({E, limbs}, at::kLong);
  for (int64_t i = 0; i < L; ++i) {  // entries are few (at most 2^16 per layer): one thread copies them
    const Entries& p = parts[i];
    std::copy(p.bins.begin(), p.bins.end(), bins.data_ptr<int64_t>() + off[i]);
    std::copy(p.counts.begin(), p.counts.end(), counts.data_ptr<int64_t>() + off[i]);
    std::copy(p.sums.begin(), p.sums.end(), sums.data_ptr<int64_t>() + off[i] * limbs);
  }
  int64_t* limb_sums = sums.data_ptr<int64_t>();
  for (int64_t e = 0; limbs && e < E; ++e) normalize_limbs(Keys<key_scalar>::code, limb_sums + e * limbs);
  if (scan) {
    scan->top_bins = at::empty({L}, at::kLong);
    scan->negative = at::empty({L}, at::kBool);
    for (int64_t i = 0; i < L; ++i) {
      scan->top_bins.data_ptr<int64_t>()[i] = parts[i].top_bin;
      scan->negative.data_ptr<bool>()[i] = parts[i].negative;
    }
  }
  return {offsets, bins, counts, sums};
}

// A call's layers, contiguous, with their masks (undefined for none) and sizes; one dtype per call.
struct Inputs {
  std::vector<at::Tensor> ws, ms;
  std::vector<int64_t> numels;
  at::ScalarType type = at::kFloat;

  Inputs(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks, const char* op)
      : ws(weights.size()), ms(weights.size()), numels(weights.size()) {
    for (size_t i = 0; i < weights.size(); ++i) {
      ws[i] = weights[i].contiguous();
      ms[i] = masks[i].has_value() && masks[i]->defined() ? masks[i]->contiguous() : at::Tensor();
      numels[i] = ws[i].numel();
      TORCH_CHECK(ws[i].scalar_type() == ws[0].scalar_type(), op, ": one dtype per call");
    }
    if (!ws.empty()) type = ws[0].scalar_type();
  }
};

const bool* mask_data(const at::Tensor& m) { return m.defined() ? m.data_ptr<bool>() : nullptr; }

}  // namespace

namespace {

Summaries summaries_of(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                       ValueScan* scan) {
  TORCH_CHECK(masks.size() == weights.size(), "bin_summaries: one mask (or None) per layer");
  const Inputs in(weights, masks, "bin_summaries");
  const std::vector<at::Tensor>&ws = in.ws, &ms = in.ms;
  const std::vector<int64_t>& numels = in.numels;
  Summaries out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.type, "bin_summaries", [&] {
    out = summarize<scalar_t>(
        numels,
        [&](size_t i, int64_t b, int64_t e, int64_t* h, BinRange& touched) {
          if (scan)
            add_to_histogram<true>(ws[i].data_ptr<scalar_t>(), mask_data(ms[i]), b, e, h, touched);
          else
            add_to_histogram(ws[i].data_ptr<scalar_t>(), mask_data(ms[i]), b, e, h, touched);
        },
        [&](size_t i, Entries& entries) {
          small_summary(ws[i].data_ptr<scalar_t>(), mask_data(ms[i]), numels[i], entries);
        },
        scan);
  });
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks) {
  return summaries_of(weights, masks, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries_scanned(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks) {
  ValueScan scan;
  const auto [offsets, bins, counts, sums] = summaries_of(weights, masks, &scan);
  return {offsets, bins, counts, sums, scan.top_bins, scan.negative};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries_scaled(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
    const std::vector<at::Tensor>& scales) {
  TORCH_CHECK(masks.size() == weights.size() && scales.size() == weights.size(),
              "bin_summaries_scaled: one mask (or None) and scale per layer");
  const Inputs in(weights, masks, "bin_summaries_scaled");
  const std::vector<at::Tensor>&ws = in.ws, &ms = in.ms;
  const std::vector<int64_t>& numels = in.numels;
  for (size_t i = 0; i < ws.size(); ++i) check_scaled_layer(ws[i], scales[i], "bin_summaries_scaled");
  Summaries out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.type, "bin_summaries_scaled", [&] {
    auto layer = [&](size_t i) {
      return ScaledLayer<scalar_t>{ws[i].data_ptr<scalar_t>(), scales[i].data_ptr<float>(), ws[i].size(-1)};
    };
    out = summarize<float>(
        numels,
        [&](size_t i, int64_t b, int64_t e, int64_t* h, BinRange& touched) {
          const bool* m = mask_data(ms[i]);
          for_key_blocks(layer(i), b, e, [&](const float* keys, int64_t i0, int64_t n) {
            add_to_histogram(keys, m ? m + i0 : nullptr, 0, n, h, touched);
          });
        },
        [&](size_t i, Entries& entries) {
          const bool* m = mask_data(ms[i]);
          std::vector<uint64_t> keys;
          keys.reserve(numels[i]);
          for_key_blocks(layer(i), 0, numels[i], [&](const float* k, int64_t i0, int64_t n) {
            for (int64_t t = 0; t < n; ++t)
              if (!m || m[i0 + t]) keys.push_back(Keys<float>::key(k[t]));
          });
          entries_from_keys(kF32, keys, entries);
        });
  });
  return out;
}

}  // namespace lamp
