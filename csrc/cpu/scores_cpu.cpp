// LAMP scores on the CPU: score(u) = fl(fl(w_u^2) / fl(S(u))), S(u) the exact sum of the squares at or after
// position u of the order (|w|, flat index), rounded once (exact_sum.h). Zero and masked-out weights score 0.
//
// Bin path (bf16, fp16, fp32 layers of at least kBinPathMin elements): no comparison sort of the layer.
//   bin(key) = key >> low_bits: the key itself for bf16/fp16 (one magnitude per bin, an exact counting sort),
//   the top 16 bits for fp32 (exponent + 8 mantissa bits; 15 low bits left). Ascending bins are ascending
//   magnitudes, and all elements of a bin share one exponent, so the sums RoundingBase needs are exact integers.
//   "Bin order" lists the alive nonzero elements by bin, in flat order inside a bin.
//     1. histogram pass  per chunk of the flat order: elements per bin
//     2. cursors         chunk q's elements of bin b start at start[b] + (b's elements in chunks before q)
//     3. scatter pass    (fp32) each key's low 15 bits to its entry of a table in bin order
//     4. bases           exact sum of every bin, then one descending walk with an ExactSum: each bin's base A,
//                        the exact sum of everything of larger magnitude (rounding_base.h)
//     5. bin scores      (fp32, parallel over bins) each bin sorted by (low bits, position), i.e. by (key, flat
//                        index), and scanned descending; the scores replace the low bits in the table
//     6. gather pass     each element takes its score from its position in bin order: fp32 reads the table;
//                        bf16/fp16 compute it there, in closed form: the element of rank r among c equal keys
//                        has S = (A + (c - r) M^2) 2^u (DESIGN-NOTES §2.3)
//   Passes 1, 3 and 6 stream the weights; the table is written once in bin order and read back as one
//   sequential stream per bin, so nothing is written at random over the output. Every pass runs as tasks on
//   the task pool (chunks of the layer, or groups of bins), and no result depends on the schedule.
// Sort path (fp64, and layers under kBinPathMin): LSD radix sort of (key, index), then the exact scan.
#include "scores_cpu.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <numeric>

#include "exact_sum.h"
#include "float_keys.h"
#include "huge_pages.h"
#include "radix_sort.h"
#include "rounding_base.h"
#include "task_pool.h"
#include "vector_clones.h"

namespace lamp {

namespace {

constexpr int64_t kBinPathMin = int64_t{1} << 12;       // smaller layers: the sort path is cheaper
// A chunk of a pass over a layer has at least kChunkPerBin elements per bin, so that its row of cursors (4
// bytes per bin) costs at most a byte per element; a layer with fewer than two chunks' worth is one task.
constexpr int64_t kChunkPerBin = 4;
constexpr int64_t kMinBinGroup = int64_t{1} << 15;       // elements per task of the bin scores

const bool* mask_ptr(const at::Tensor& mask) { return mask.defined() ? mask.data_ptr<bool>() : nullptr; }

at::Tensor empty_scores(const at::Tensor& w, bool float64) {
  at::Tensor out = at::empty(w.sizes(), w.options().dtype(float64 ? at::kDouble : at::kFloat));
  advise_huge_pages(out.data_ptr(), out.nbytes());
  return out;
}

// 2^k as a double, for k in the normal range.
inline double pow2(int k) {
  const uint64_t bits = static_cast<uint64_t>(k + 1023) << 52;
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

// num[i] /= den[i]: the one division per score, as a loop the compiler vectorizes (with an AVX2 clone where
// the CPU has it). IEEE division is correctly rounded in every lane, so the results are those of divsd.
LAMP_VECTOR_CLONES void divide(double* num, const double* den, int n) {
  for (int i = 0; i < n; ++i) num[i] /= den[i];
}

// ---------------------------------------------------------------------------------------------------------
// Sort path.

template <typename scalar_t, typename out_t>
void scores_by_sort(const scalar_t* x, const bool* m, int64_t n, out_t* o) {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  std::vector<key_t> keys;
  std::vector<uint32_t> idx;
  keys.reserve(n);
  idx.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    o[i] = 0;  // masked-out and zero weights score 0
    if (m && !m[i]) continue;
    const key_t k = K::key(x[i]);
    if (k == 0) continue;
    keys.push_back(k);
    idx.push_back(static_cast<uint32_t>(i));
  }
  radix_sort_pairs(keys, idx);
  // Descending along the order: acc is the exact suffix sum including the current element.
  ExactSum acc;
  for (size_t j = keys.size(); j-- > 0;) {
    const double v = key_value(K::code, static_cast<int64_t>(keys[j]));
    add_square(acc, v);
    o[idx[j]] = static_cast<out_t>(lamp_score(v, acc.to_double()));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Bin path.

template <typename scalar_t>
struct BinSpec {
  static constexpr int code = Keys<scalar_t>::code;
  static constexpr int low_bits = code == kF32 ? 15 : 0;
  static constexpr int bins = code == kF32 ? 1 << 16 : 1 << 15;
};

// Buffers of the bin path, kept across the layers of one call (sized by the largest).
struct BinWorkspace {
  std::vector<uint32_t> cursor;  // [chunks][bins]
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> table;  // fp32: one entry per alive element, in bin order
  size_t table_bytes = 0;

  void* need_table(size_t bytes) {
    if (table_bytes < bytes) {
      table.reset();  // release first: never hold two
      constexpr size_t kHuge = size_t{2} << 20;
      table.reset(std::aligned_alloc(kHuge, (bytes + kHuge - 1) & ~(kHuge - 1)));
      if (!table) throw std::bad_alloc();
      advise_huge_pages(table.get(), bytes);
      table_bytes = bytes;
    }
    return table.get();
  }
};

// Per-worker scratch of the fp32 bin scores, allocated on first use.
struct BinScratch {
  static constexpr int64_t kSortMax = int64_t{1} << 17;  // bins up to this size are sorted (17-bit positions)
  std::unique_ptr<uint32_t[]> a, b;                      // packed (low << 17 | position), and a radix buffer
  std::unique_ptr<uint32_t[]> count, seen;               // larger bins: counts per low value
  std::unique_ptr<u128[]> above;                         // and the sum of M^2 of the larger low values

  void need_sort() {
    if (!a) {
      a.reset(new uint32_t[kSortMax]);
      b.reset(new uint32_t[kSortMax]);
    }
  }
  void need_count() {
    if (!count) {
      count.reset(new uint32_t[1 << 15]);
      seen.reset(new uint32_t[1 << 15]);
      above.reset(new u128[1 << 15]);
    }
  }
};

// The packed values (low << 17 | position) of one bin's c <= 2^17 entries (low 15 bits each), sorted into a:
// values are unique, so their order is (low, position). b is scratch of the same size.
template <typename entry_t>
void sort_bin(const entry_t* entries, int64_t c, uint32_t* a, uint32_t* b) {
  if (c <= 64) {
    for (int64_t p = 0; p < c; ++p) a[p] = static_cast<uint32_t>(entries[p]) << 17 | static_cast<uint32_t>(p);
    std::sort(a, a + c);
    return;
  }
  // Two stable counting passes over the low bits (bits 0..7, then 8..14), the first one reading the entries in
  // position order: the result is sorted by (low, position).
  uint32_t h1[256] = {}, h2[128] = {};
  for (int64_t p = 0; p < c; ++p) {
    const uint32_t low = static_cast<uint32_t>(entries[p]);
    ++h1[low & 0xFF];
    ++h2[low >> 8];
  }
  auto exclusive_prefix = [](uint32_t* h, int size) {
    uint32_t sum = 0;
    for (int d = 0; d < size; ++d) {
      const uint32_t t = h[d];
      h[d] = sum;
      sum += t;
    }
  };
  exclusive_prefix(h1, 256);
  exclusive_prefix(h2, 128);
  for (int64_t p = 0; p < c; ++p) {
    const uint32_t low = static_cast<uint32_t>(entries[p]);
    b[h1[low & 0xFF]++] = low << 17 | static_cast<uint32_t>(p);
  }
  for (int64_t i = 0; i < c; ++i) a[h2[b[i] >> 25]++] = b[i];
}

// The two operands of the scores of one fp32 bin: score = fl(num(M^2) / den(J)) with S = (A + J) 2^u the exact
// suffix sum. Chosen once per bin, cheapest first. num and den may both leave out the same power of two: a
// quotient of two normal doubles does not change when both are scaled by it. sum_t holds J.
inline double to_double(uint64_t v) { return static_cast<double>(static_cast<int64_t>(v)); }  // v < 2^63

struct ExactDen {  // A + J_max < 2^53: den = A + J exactly (units of 2^u)
  using sum_t = uint64_t;
  uint64_t a;
  double num(uint64_t mm) const { return to_double(mm); }
  double den(uint64_t j) const { return to_double(a + j); }
};

// A + J has the same bit length L > 53 for every J of the bin, and A mod 2^p + J_max < 2^64 with p = L - 53
// (< 64) the rounding position: fl(A + J) = (A >> p) + (A mod 2^p + J) >> p, plus one if the rest rounds up (ties
// to even), times 2^p. The first two terms add up to at most 2^53, so the double is exact; den leaves out
// 2^(u + p), num 2^u and multiplies by 2^-p.
struct WindowDen {
  using sum_t = uint64_t;
  uint64_t ah, al;  // A >> p, A mod 2^p
  int p;
  double inv_scale;  // 2^-p
  double num(uint64_t mm) const { return to_double(mm) * inv_scale; }
  double den(uint64_t j) const {
    const uint64_t t = al + j;
    const uint64_t q = ah + (t >> p), r = t & ((uint64_t{1} << p) - 1), half = uint64_t{1} << (p - 1);
    return to_double(q + ((r > half) | ((r == half) & (q & 1))));
  }
};

// v (< 2^53) as a double, with operations that vectorize (AVX2 has no 64-bit integer conversion): the high and
// low 32 bits become the significands of 2^84 + hi 2^32 and 2^52 + lo, and the two exact differences add up
// exactly.
inline double u53_to_double(uint64_t v) {
  const uint64_t hi = (v >> 32) | 0x4530000000000000ull, lo = (v & 0xFFFFFFFFull) | 0x4330000000000000ull;
  double dh, dl;
  std::memcpy(&dh, &hi, 8);
  std::memcpy(&dl, &lo, 8);
  return (dh - 19342813118337666422669312.0) + dl;  // 2^84 + 2^52
}

// WindowDen over a block: q[t] = fl(num(mm[t]) / den(j[t])), as one loop that vectorizes.
LAMP_VECTOR_CLONES void window_quotients(
    uint64_t ah, uint64_t al, int p, double inv_scale, const uint64_t* __restrict mm, const uint64_t* __restrict j,
    int n, double* __restrict q) {
  const uint64_t mask = (uint64_t{1} << p) - 1, half = uint64_t{1} << (p - 1);
  for (int i = 0; i < n; ++i) {
    const uint64_t t = al + j[i];
    const uint64_t whole = ah + (t >> p), r = t & mask;
    const uint64_t up = (r > half ? 1 : 0) | (r == half ? (whole & 1) : 0);  // to nearest, ties to even
    q[i] = u53_to_double(mm[i]) * inv_scale / u53_to_double(whole + up);
  }
}

struct GeneralDen {  // any A (RoundingBase): den = S, num = v^2
  using sum_t = u128;
  const RoundingBase* base;
  double scale;  // 2^u
  double num(uint64_t mm) const { return to_double(mm) * scale; }
  double den(u128 j) const { return base->round_plus(j); }
};

inline int bit_length(u128 v) {
  const uint64_t hi = static_cast<uint64_t>(v >> 64);
  return hi ? 128 - __builtin_clzll(hi) : v ? 64 - __builtin_clzll(static_cast<uint64_t>(v)) : 0;
}

template <typename scalar_t, typename out_t>
class BinPath {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  using Spec = BinSpec<scalar_t>;
  static constexpr int kBins = Spec::bins;
  static constexpr int kLowBits = Spec::low_bits;
  // fp32: a table entry holds an element's low key bits, then its score (as out_t).
  using entry_t = std::conditional_t<sizeof(out_t) == 8, uint64_t, uint32_t>;

 public:
  BinPath(const scalar_t* x, const bool* m, int64_t n, out_t* out, int workers, BinWorkspace& ws)
      : x_(x), m_(m), n_(n), out_(out), workers_(workers), chunks_(chunk_count(n, workers, kChunkPerBin * kBins)),
        ws_(ws), count_(kBins), start_(kBins) {
    ws_.cursor.assign(static_cast<size_t>(chunks_) * kBins, 0);
    cursor_ = ws_.cursor.data();
  }

  void run() {
    histogram();
    make_cursors();
    group_bins();
    if constexpr (kLowBits == 0) {
      bases();
      gather_equal_keys();
    } else {
      const int64_t alive = start_[kBins - 1] + count_[kBins - 1];
      table_ = static_cast<entry_t*>(ws_.need_table(sizeof(entry_t) * std::max<int64_t>(1, alive)));
      scatter_low();
      bases();
      bin_scores();
      gather_table();
    }
  }

 private:
  // Calls f(i, bin) for the alive nonzero elements of chunk q (in flat order, or reversed), zero(i) otherwise.
  template <bool kReverse, typename F, typename Z>
  void walk_chunk(int64_t q, F f, Z zero) const {
    int64_t b, e;
    chunk_range(n_, chunks_, q, b, e);
    for (int64_t j = 0; j < e - b; ++j) {
      const int64_t i = kReverse ? e - 1 - j : b + j;
      const key_t k = K::key(x_[i]);
      if ((m_ && !m_[i]) || k == 0) {
        zero(i);
        continue;
      }
      f(i, k);
    }
  }

  uint32_t* cursors_of(int64_t q) const { return cursor_ + static_cast<size_t>(q) * kBins; }

  void histogram() {
    parallel_tasks(chunks_, workers_, [&](int64_t q, int) {
      uint32_t* h = cursors_of(q);
      walk_chunk<false>(q, [h](int64_t, key_t k) { ++h[k >> kLowBits]; }, [](int64_t) {});
    });
  }

  // cursor_[q][b]: histogram -> position of chunk q's first element of bin b in bin order.
  void make_cursors() {
    constexpr int kBlock = 4096;
    const int64_t blocks = kBins / kBlock;
    parallel_tasks(blocks, workers_, [&](int64_t blk, int) {
      int64_t* c = &count_[blk * kBlock];
      for (int64_t q = 0; q < chunks_; ++q) {
        const uint32_t* h = cursors_of(q) + blk * kBlock;
        for (int j = 0; j < kBlock; ++j) c[j] += h[j];
      }
    });
    int64_t s = 0;
    for (int b = 0; b < kBins; ++b) start_[b] = s, s += count_[b];
    parallel_tasks(blocks, workers_, [&](int64_t blk, int) {
      int64_t run[kBlock];
      std::copy(&start_[blk * kBlock], &start_[blk * kBlock] + kBlock, run);
      for (int64_t q = 0; q < chunks_; ++q) {
        uint32_t* h = cursors_of(q) + blk * kBlock;
        for (int j = 0; j < kBlock; ++j) {
          const uint32_t t = h[j];
          h[j] = static_cast<uint32_t>(run[j]);
          run[j] += t;
        }
      }
    });
  }

  // fp32: the table entry of an element holds its key's low bits until bin_scores replaces them by its score.
  static uint32_t low_at(const entry_t* table, int64_t pos) { return static_cast<uint32_t>(table[pos]); }

  template <typename T>
  static void store(entry_t* entry, T value) {
    std::memcpy(entry, &value, sizeof(T));
  }

  // fp32: every key's low bits to its position in bin order. Leaves each cursor at the end of its chunk's
  // run, which the gather pass walks back down.
  void scatter_low() {
    parallel_tasks(chunks_, workers_, [&](int64_t q, int) {
      uint32_t* h = cursors_of(q);
      entry_t* table = table_;
      walk_chunk<false>(q, [h, table](int64_t, key_t k) {
        const uint32_t pos = h[k >> kLowBits]++;
        // Thousands of bins fill at once, too many streams for the hardware prefetcher: fetch each bin's
        // next cache line ahead of its writes.
        __builtin_prefetch(table + pos + 32, 1);
        table[pos] = k & ((1u << kLowBits) - 1);
      }, [](int64_t) {});
    });
  }

  // Nonempty bins, ascending, cut into groups of about kMinBinGroup elements (one task each).
  void group_bins() {
    const int64_t target = std::max<int64_t>(kMinBinGroup, n_ / (16 * std::max(1, workers_)));
    int64_t acc = 0;
    group_start_.push_back(0);
    for (int b = 0; b < kBins; ++b) {
      if (!count_[b]) continue;
      nonempty_.push_back(b);
      acc += count_[b];
      if (acc >= target) {
        group_start_.push_back(static_cast<int64_t>(nonempty_.size()));
        acc = 0;
      }
    }
    if (group_start_.back() != static_cast<int64_t>(nonempty_.size()))
      group_start_.push_back(static_cast<int64_t>(nonempty_.size()));
  }

  int64_t groups() const { return static_cast<int64_t>(group_start_.size()) - 1; }

  // Exponent u of the unit of a bin's squares: 2e, e the exponent of its significands' lowest bit.
  static int unit_of(int bin) {
    return 2 * (kLowBits ? bin_exponent(kF32, bin) : lsb_exponent(Spec::code, static_cast<uint64_t>(bin)));
  }

  // M of the element with these low bits in this bin.
  static uint64_t significand_of(int bin, uint32_t low) {
    return significand(Spec::code, (static_cast<uint64_t>(bin) << kLowBits) | low);
  }

  // Each nonempty bin's exact sum of M^2, then one walk down the bins: base_[j] = everything above bin j.
  void bases() {
    const int64_t nb = static_cast<int64_t>(nonempty_.size());
    sums_.resize(nb);
    parallel_tasks(groups(), workers_, [&](int64_t g, int) {
      for (int64_t j = group_start_[g]; j < group_start_[g + 1]; ++j) {
        const int bin = nonempty_[j];
        if (!kLowBits) {
          const uint64_t mm = significand_of(bin, 0);
          sums_[j] = static_cast<u128>(mm * mm) * static_cast<uint64_t>(count_[bin]);
          continue;
        }
        sums_[j] = sum_of_squares(significand_of(bin, 0), table_ + start_[bin], count_[bin]);
      }
    });
    base_.resize(nb);
    ExactSum acc;
    for (int64_t j = nb; j-- > 0;) {
      const int u = unit_of(nonempty_[j]);
      base_[j] = RoundingBase(acc, u);
      acc.add(sums_[j], u);
    }
  }

  // Sum of (high | low)^2 over c entries' low bits (M < 2^24). Blocks of 2^15 squares (< 2^48 each) fit in 64
  // bits, and the loop over a block vectorizes.
  static u128 sum_of_squares(uint64_t high, const entry_t* entries, int64_t c) {
    u128 s = 0;
    for (int64_t b = 0; b < c; b += 1 << 15) {
      const int64_t e = std::min<int64_t>(c, b + (1 << 15));
      uint64_t block = 0;
      for (int64_t p = b; p < e; ++p) {
        const uint64_t m = high | static_cast<uint32_t>(entries[p]);
        block += m * m;
      }
      s += block;
    }
    return s;
  }

  void bin_scores() {
    std::vector<BinScratch> scratch(workers_);
    parallel_tasks(groups(), workers_, [&](int64_t g, int worker) {
      for (int64_t j = group_start_[g]; j < group_start_[g + 1]; ++j) {
        const int bin = nonempty_[j];
        const RoundingBase& base = base_[j];
        entry_t* entries = table_ + start_[bin];
        const int64_t c = count_[bin];
        const u128 a = base.top, a_max = a + sums_[j];
        if (base.shift == 0 && a_max < (u128{1} << 53)) {
          fp32_bin(bin, ExactDen{static_cast<uint64_t>(a)}, entries, c, scratch[worker]);
          continue;
        }
        const int length = bit_length(a + 1);
        const int p = length - 53;
        if (base.shift == 0 && length > 53 && length - 53 < 64 && bit_length(a_max) == length &&
            (a & ((u128{1} << p) - 1)) + sums_[j] < (u128{1} << 64)) {
          const WindowDen den{static_cast<uint64_t>(a >> p), static_cast<uint64_t>(a & ((u128{1} << p) - 1)), p,
                              pow2(-p)};
          fp32_bin(bin, den, entries, c, scratch[worker]);
          continue;
        }
        fp32_bin(bin, GeneralDen{&base, pow2(unit_of(bin))}, entries, c, scratch[worker]);
      }
    });
  }

  // One fp32 bin (one exponent): the scores of its c elements, in place of their low bits. Elements in the
  // order (low bits, position) are in the order (key, flat index); J = their M^2 summed from the bin's end.
  template <typename Den>
  static void fp32_bin(int bin, const Den den, entry_t* entries, int64_t c, BinScratch& scratch) {
    using sum_t = typename Den::sum_t;
    const uint64_t m_high = significand_of(bin, 0);  // M = m_high | low
    constexpr int kBlock = 256;                        // scores are computed in blocks: one vector division each
    double num[kBlock], den_of[kBlock];
    if (c <= BinScratch::kSortMax) {
      scratch.need_sort();
      const uint32_t* packed = scratch.a.get();
      sort_bin(entries, c, scratch.a.get(), scratch.b.get());
      sum_t suffix = 0;
      for (int64_t end = c; end > 0; end -= kBlock) {  // descending: packed[end - 1 - t]
        const int len = static_cast<int>(std::min<int64_t>(kBlock, end));
        if constexpr (std::is_same<Den, WindowDen>::value) {
          uint64_t mm[kBlock], js[kBlock];
          for (int t = 0; t < len; ++t) {
            const uint64_t m = m_high | (packed[end - 1 - t] >> 17);
            mm[t] = m * m;
            js[t] = suffix += m * m;
          }
          window_quotients(den.ah, den.al, den.p, den.inv_scale, mm, js, len, num);
        } else {
          for (int t = 0; t < len; ++t) {
            const uint64_t m = m_high | (packed[end - 1 - t] >> 17);
            suffix += m * m;
            num[t] = den.num(m * m);
            den_of[t] = den.den(suffix);
          }
          divide(num, den_of, len);
        }
        for (int t = 0; t < len; ++t) store(entries + (packed[end - 1 - t] & 0x1FFFF), static_cast<out_t>(num[t]));
      }
      return;
    }
    // Large bin: count each low value; the element of rank r among the n_l elements with low value l has
    // the larger values' sum plus (n_l - r) times its own square after it.
    scratch.need_count();
    uint32_t* count = scratch.count.get();
    uint32_t* seen = scratch.seen.get();
    u128* above = scratch.above.get();
    std::fill(count, count + (1 << 15), 0);
    for (int64_t p = 0; p < c; ++p) ++count[low_at(entries, p)];
    u128 acc = 0;
    for (int l = (1 << 15) - 1; l >= 0; --l) {
      above[l] = acc;
      seen[l] = 0;
      const uint64_t m = m_high | static_cast<uint64_t>(l);
      acc += static_cast<u128>(m * m) * count[l];
    }
    // Each block reads its entries' low bits before it stores their scores in their place.
    for (int64_t p0 = 0; p0 < c; p0 += kBlock) {
      const int len = static_cast<int>(std::min<int64_t>(kBlock, c - p0));
      for (int t = 0; t < len; ++t) {
        const uint32_t l = low_at(entries, p0 + t);
        const uint64_t m = m_high | l;
        const u128 suffix = above[l] + static_cast<u128>(m * m) * (count[l] - seen[l]++);
        num[t] = den.num(m * m);
        den_of[t] = den.den(static_cast<sum_t>(suffix));
      }
      divide(num, den_of, len);
      for (int t = 0; t < len; ++t) store(entries + p0 + t, static_cast<out_t>(num[t]));
    }
  }

  // fp32: each element reads its score back from bin order. The scatter pass left every cursor at the end
  // of its chunk's run, so the chunk is walked backwards.
  void gather_table() {
    const entry_t* table = table_;
    out_t* o = out_;
    parallel_tasks(chunks_, workers_, [&](int64_t q, int) {
      uint32_t* h = cursors_of(q);
      walk_chunk<true>(q, [h, table, o](int64_t i, key_t k) {
        const uint32_t pos = --h[k >> kLowBits];
        __builtin_prefetch(table + (pos >= 32 ? pos - 32 : 0));  // as in scatter_low, one stream per bin
        out_t v;
        std::memcpy(&v, table + pos, sizeof(out_t));
        o[i] = v;
      }, [o](int64_t i) { o[i] = 0; });
    });
  }

  // bf16/fp16: the element at position pos of bin order has j = end - pos equal keys at or after it (itself
  // included): S = (A + j M^2) 2^u, and score = fl(M^2 / (A + j M^2)) when that sum is below 2^53 (every
  // operand is an integer below 2^53, so the double arithmetic is exact, and the common 2^u cancels); else
  // fl(v^2 / RoundingBase::round_plus(j M^2)).
  struct EqualKey {
    double a;      // A, or kGeneral
    double mm;     // M^2 < 2^22
    uint32_t end;  // end of the key's run in bin order
  };
  static constexpr double kGeneral = -1.0;

  void gather_equal_keys() {
    std::unique_ptr<EqualKey[]> keys(new EqualKey[kBins]);
    std::unique_ptr<double[]> squares(new double[kBins]);  // v^2, for the general case
    base_of_.resize(kBins);
    for (size_t j = 0; j < nonempty_.size(); ++j) {
      const int k = nonempty_[j];
      const uint64_t m = significand_of(k, 0);
      const double v = key_value(Spec::code, k);
      squares[k] = v * v;
      const bool exact = base_[j].shift == 0 && base_[j].top + static_cast<u128>(m * m) * count_[k] < (u128{1} << 53);
      keys[k] = {exact ? static_cast<double>(static_cast<uint64_t>(base_[j].top)) : kGeneral,
                 static_cast<double>(m * m), static_cast<uint32_t>(start_[k] + count_[k])};
      base_of_[k] = static_cast<int32_t>(j);
    }
    const EqualKey* ks = keys.get();
    parallel_tasks(chunks_, workers_, [&](int64_t q, int) {
      uint32_t* h = cursors_of(q);
      int64_t b, e;
      chunk_range(n_, chunks_, q, b, e);
      constexpr int kBlock = 256;
      double num[kBlock], den[kBlock];
      for (int64_t i0 = b; i0 < e; i0 += kBlock) {
        const int len = static_cast<int>(std::min<int64_t>(kBlock, e - i0));
        for (int t = 0; t < len; ++t) {
          const int64_t i = i0 + t;
          const key_t k = K::key(x_[i]);
          if ((m_ && !m_[i]) || k == 0) {  // scores 0 / 1 = 0
            num[t] = 0.0;
            den[t] = 1.0;
            continue;
          }
          const EqualKey& ek = ks[k];
          const uint32_t j = ek.end - h[k]++;
          if (ek.a != kGeneral) {
            num[t] = ek.mm;
            den[t] = ek.a + static_cast<double>(static_cast<int32_t>(j)) * ek.mm;
          } else {
            num[t] = squares[k];
            den[t] = base_[base_of_[k]].round_plus(static_cast<u128>(static_cast<uint64_t>(ek.mm)) * j);
          }
        }
        divide(num, den, len);
        for (int t = 0; t < len; ++t) out_[i0 + t] = static_cast<out_t>(num[t]);
      }
    });
  }

  const scalar_t* x_;
  const bool* m_;
  int64_t n_;
  out_t* out_;
  int workers_;
  int64_t chunks_;
  BinWorkspace& ws_;
  uint32_t* cursor_;  // ws_.cursor: [chunks][bins]
  entry_t* table_ = nullptr;  // fp32: ws_.table
  std::vector<int64_t> count_, start_;
  std::vector<int> nonempty_;
  std::vector<int64_t> group_start_;  // group g: nonempty_[group_start_[g] .. group_start_[g + 1])
  std::vector<RoundingBase> base_;    // per nonempty bin: the exact sum of all larger bins
  std::vector<u128> sums_;            // per nonempty bin: the sum of its M^2
  std::vector<int32_t> base_of_;      // bf16/fp16: key -> its index in nonempty_
};

template <typename scalar_t>
constexpr bool has_bin_path() {
  return !std::is_same<scalar_t, double>::value;
}

enum class Path { kAuto, kSort, kBins };

template <typename scalar_t, typename out_t>
void score_layer(const at::Tensor& w, const at::Tensor& mask, at::Tensor& out, int workers, Path path,
                 BinWorkspace& ws) {
  const int64_t n = w.numel();
  const scalar_t* x = w.data_ptr<scalar_t>();
  const bool* m = mask_ptr(mask);
  out_t* o = out.data_ptr<out_t>();
  if constexpr (has_bin_path<scalar_t>()) {
    if (path == Path::kBins || (path == Path::kAuto && n >= kBinPathMin)) {
      BinPath<scalar_t, out_t>(x, m, n, o, workers, ws).run();
      return;
    }
  } else {
    TORCH_CHECK(path != Path::kBins, "lamp_scores: the bin path takes bf16, fp16 and fp32 layers");
  }
  scores_by_sort<scalar_t, out_t>(x, m, n, o);
}

void score_layer(const at::Tensor& w, const at::Tensor& mask, at::Tensor& out, bool float64, int workers,
                 Path path, BinWorkspace& ws) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "lamp_scores", [&] {
    if (float64)
      score_layer<scalar_t, double>(w, mask, out, workers, path, ws);
    else
      score_layer<scalar_t, float>(w, mask, out, workers, path, ws);
  });
}

at::Tensor contiguous_mask(const std::optional<at::Tensor>& mask) {
  return mask.has_value() && mask->defined() ? mask->contiguous() : at::Tensor();
}

}  // namespace

std::vector<at::Tensor> lamp_scores(const std::vector<at::Tensor>& weights,
                                    const std::vector<std::optional<at::Tensor>>& masks, bool float64) {
  const size_t L = weights.size();
  std::vector<at::Tensor> ws(L), ms(L), outs(L);
  for (size_t i = 0; i < L; ++i) {
    TORCH_CHECK(weights[i].numel() < (int64_t{1} << 31), "lamp_scores: a layer has 2^31 or more elements");
    ws[i] = weights[i].contiguous();
    ms[i] = i < masks.size() ? contiguous_mask(masks[i]) : at::Tensor();
    outs[i] = empty_scores(ws[i], float64);
  }
  // Large layers of the bin path one after another, each over all threads; every other layer is one task,
  // largest first, so that the tasks even out across threads.
  std::vector<size_t> large, rest;
  for (size_t i = 0; i < L; ++i) {
    const bool bins = ws[i].scalar_type() != at::kDouble && ws[i].numel() >= kBinPathMin;
    const int64_t bin_count = ws[i].scalar_type() == at::kFloat ? BinSpec<float>::bins : BinSpec<at::BFloat16>::bins;
    (bins && ws[i].numel() >= 2 * kChunkPerBin * bin_count ? large : rest).push_back(i);
  }
  const int workers = max_workers();
  // Many large layers (a model, not one matrix): each is a task too. A pass over all threads is one parallel
  // region per step of the bin path, several per layer; under a busy core, short regions get little help
  // from the thread that shares it, whereas whole layers claimed one at a time even out. Only when the
  // layers are enough for that: all of them at least 3 x threads times the largest (largest first, the
  // longest task cannot be left alone at the end).
  int64_t large_total = 0, large_max = 0;
  for (size_t i : large) {
    large_total += ws[i].numel();
    large_max = std::max(large_max, ws[i].numel());
  }
  if (workers > 1 && large_total >= int64_t{3} * workers * large_max) {
    rest.insert(rest.end(), large.begin(), large.end());
    large.clear();
  }
  std::stable_sort(rest.begin(), rest.end(), [&](size_t a, size_t b) { return ws[a].numel() > ws[b].numel(); });
  // Per worker, reused across its layers: each keeps the table of the largest fp32 layer it scored (4 bytes
  // per element), so at most threads x the largest layer, which the condition above bounds by a third of
  // all the large layers' elements.
  std::vector<BinWorkspace> own(static_cast<size_t>(workers));
  parallel_tasks(static_cast<int64_t>(rest.size()), workers, [&](int64_t t, int worker) {
    const size_t i = rest[t];
    score_layer(ws[i], ms[i], outs[i], float64, 1, Path::kAuto, own[worker]);
  });
  BinWorkspace shared;  // the large layers run one after another and reuse its buffers
  for (size_t i : large) score_layer(ws[i], ms[i], outs[i], float64, workers, Path::kAuto, shared);
  return outs;
}

at::Tensor lamp_scores_by(const at::Tensor& w_in, const std::optional<at::Tensor>& mask_in, bool float64,
                          const std::string& path) {
  TORCH_CHECK(path == "sort" || path == "bins", "lamp_scores_by: path must be 'sort' or 'bins'");
  TORCH_CHECK(w_in.numel() < (int64_t{1} << 31), "lamp_scores: a layer has 2^31 or more elements");
  const at::Tensor w = w_in.contiguous();
  const at::Tensor mask = contiguous_mask(mask_in);
  at::Tensor out = empty_scores(w, float64);
  BinWorkspace ws;
  score_layer(w, mask, out, float64, max_workers(), path == "sort" ? Path::kSort : Path::kBins, ws);
  return out;
}

}  // namespace lamp
