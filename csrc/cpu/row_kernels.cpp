// Kernels over *units*: each layer is viewed as [rows, numel / rows] and every row is a unit with its own
// order -- masked-out elements first, then ascending by (key, column) -- and, for LAMP, its own exact suffix
// sums (granularity="row"; rows = 1 makes the whole layer one unit, which the bounded selections use). Each has
// a twin in lamp_kernels/rows.py with the same outputs.
//
//   row_order_values(keys, masks, rows, lamp) -> int64[numel] per layer: unit by unit, the order values along
//        the unit's order (so ascending within each unit): 0 for a masked-out element, else 1 + the float64
//        bit pattern of its LAMP score (lamp) or of its key's value (global). Non-negative float64 values
//        order like their bit patterns, so these integers compare like the scores, across layers and dtypes.
//   row_lamp_scores(keys, masks, rows, float64) -> per-unit LAMP scores in flat order (masked-out: 0)
//   row_cut_masks(keys, masks, rows, counts) -> bool keep masks: unit r of layer i prunes the first counts[i][r]
//        elements of its order (masked-out ones are always pruned); by selection, without sorting the unit
//   row_value_window(keys, masks, rows, lamp, lo, hi, limit, buckets) -> (le_lo, le_hi, inside, hist), the order
//        values of row_order_values without keeping them (streamed_selection.py): per unit, how many are <= lo
//        and <= hi (int64 [rows] per layer); the values in (lo, hi], unit by unit along each order (int64 per
//        layer), unless more than `limit` lie there in all (then every `inside` is empty); and per layer a
//        histogram of them (int64 [layers, buckets]): bucket (v - lo - 1) >> shift, shift the least with
//        (hi - lo - 1) >> shift < buckets
//
// Keys are the |x| bit patterns of float_keys.h; the callers pass finite values (checked in Python). Units run
// in parallel, each sorted on its own (std::sort when small, the radix sort otherwise) where the kernel needs the
// whole order.
#include "row_kernels.h"


#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#include "bucket_select.h"
#include "exact_sum.h"
#include "float_keys.h"
#include "radix_sort.h"
#include "scaled_keys.h"
#include "task_pool.h"

namespace lamp {

namespace {

constexpr int64_t kRadixMin = 1 << 10;  // fp64 units up to this size are sorted with std::sort
constexpr size_t kStdSortMax = 64;      // and packed (16/32-bit key, column) units up to this size
constexpr int64_t kKeptScratch = int64_t{1} << 16;  // scratch kept per thread for units up to this size

struct Unit {
  int64_t layer, begin, size;
};

std::vector<Unit> make_units(const std::vector<at::Tensor>& ws, const std::vector<int64_t>& rows) {
  TORCH_CHECK(rows.size() == ws.size(), "row kernels: one row count per layer");
  std::vector<Unit> units;
  for (size_t i = 0; i < ws.size(); ++i) {
    const int64_t n = ws[i].numel(), r = rows[i];
    TORCH_CHECK(n < (int64_t{1} << 31), "row kernels: a layer has 2^31 or more elements");
    TORCH_CHECK(r >= 0 && (r == 0 ? n == 0 : n % r == 0), "row kernels: rows must divide the layer's size");
    for (int64_t j = 0; j < r; ++j) units.push_back({static_cast<int64_t>(i), j * (n / r), n / r});
  }
  // Largest first, so dynamic scheduling balances the threads.
  std::stable_sort(units.begin(), units.end(), [](const Unit& a, const Unit& b) { return a.size > b.size; });
  return units;
}

std::vector<at::Tensor> contiguous_all(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

std::vector<at::Tensor> contiguous_masks(const std::vector<std::optional<at::Tensor>>& masks,
                                         const std::vector<at::Tensor>& ws) {
  TORCH_CHECK(masks.size() == ws.size(), "row kernels: one mask (or None) per layer");
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < masks.size(); ++i) {
    const auto& m = masks[i];
    out.push_back(m.has_value() && m->defined() ? m->contiguous() : at::Tensor());
    TORCH_CHECK(!out.back().defined() || (out.back().scalar_type() == at::kBool && out.back().numel() == ws[i].numel()),
                "row kernels: a mask must be bool with its layer's number of elements");
  }
  return out;
}

// A unit's scratch vector: the thread's own, kept across units, for units of row size (up to kKeptScratch
// elements); a fresh one, freed after the unit, for larger ones (whole layers, in the bounded selections), so
// that no pool thread keeps memory in proportion to the largest layer after a call.
template <typename T>
struct UnitBuffer {
  std::vector<T> fresh;
  std::vector<T>& pick(std::vector<T>& kept, int64_t n) { return n <= kKeptScratch ? kept : fresh; }
};

// The alive elements of a unit sorted by (key, column): keys ascending, cols their columns. Returns the number
// of masked-out elements. Keys of up to 32 bits are packed with their column into one 64-bit value (sorted with
// std::sort when few, else radix_sort_packed); fp64 keys take radix_sort_pairs (std::sort when few).
template <typename scalar_t>
int64_t sort_unit(const scalar_t* x, const bool* m, int64_t n, std::vector<typename Keys<scalar_t>::key_t>& keys,
                  std::vector<uint32_t>& cols) {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  if constexpr (sizeof(key_t) <= 4) {
    thread_local std::vector<uint64_t> kept_packed, kept_scratch;
    UnitBuffer<uint64_t> own_packed, own_scratch;
    std::vector<uint64_t>& packed = own_packed.pick(kept_packed, n);
    std::vector<uint64_t>& scratch = own_scratch.pick(kept_scratch, n);
    if (packed.size() < static_cast<size_t>(n)) {
      packed.resize(n);
      scratch.resize(n);
    }
    size_t c = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (m && !m[i]) continue;
      packed[c++] = static_cast<uint64_t>(K::key(x[i])) << 32 | static_cast<uint64_t>(i);
    }
    const uint64_t* sorted = packed.data();
    if (c <= kStdSortMax)
      std::sort(packed.begin(), packed.begin() + c);  // (key, column) pairs are distinct
    else
      sorted = radix_sort_packed(packed.data(), scratch.data(), c, 8 * sizeof(key_t) - 1);
    keys.resize(c);
    cols.resize(c);
    for (size_t j = 0; j < c; ++j) {
      keys[j] = static_cast<key_t>(sorted[j] >> 32);
      cols[j] = static_cast<uint32_t>(sorted[j]);
    }
    return n - static_cast<int64_t>(c);
  } else {
    keys.clear();
    cols.clear();
    for (int64_t i = 0; i < n; ++i) {
      if (m && !m[i]) continue;
      keys.push_back(K::key(x[i]));
      cols.push_back(static_cast<uint32_t>(i));
    }
    if (static_cast<int64_t>(keys.size()) > kRadixMin) {
      radix_sort_pairs(keys, cols);  // stable: equal keys stay in column order
    } else {
      std::vector<std::pair<key_t, uint32_t>> pairs(keys.size());
      for (size_t j = 0; j < keys.size(); ++j) pairs[j] = {keys[j], cols[j]};
      std::sort(pairs.begin(), pairs.end());
      for (size_t j = 0; j < pairs.size(); ++j) {
        keys[j] = pairs[j].first;
        cols[j] = pairs[j].second;
      }
    }
    return n - static_cast<int64_t>(keys.size());
  }
}

// A unit's order: its alive keys sorted by (key, column), their columns, and its masked-out count, in scratch
// vectors kept by the thread for row-sized units (UnitBuffer).
template <typename scalar_t>
struct UnitOrder {
  using key_t = typename Keys<scalar_t>::key_t;
  UnitBuffer<key_t> fresh_keys;
  UnitBuffer<uint32_t> fresh_cols;
  std::vector<key_t>& keys;
  std::vector<uint32_t>& cols;
  int64_t masked;

  UnitOrder(const scalar_t* x, const bool* m, int64_t n)
      : keys(fresh_keys.pick(kept_keys(), n)), cols(fresh_cols.pick(kept_cols(), n)),
        masked(sort_unit(x, m, n, keys, cols)) {}
  static std::vector<key_t>& kept_keys() {
    thread_local std::vector<key_t> v;
    return v;
  }
  static std::vector<uint32_t>& kept_cols() {
    thread_local std::vector<uint32_t> v;
    return v;
  }
};

inline int64_t order_value(double v) {
  int64_t bits;
  std::memcpy(&bits, &v, 8);
  return bits + 1;
}

// Calls fn(unit, x, m) for every unit in parallel, with x/m pointing at the unit's first element.
template <typename Fn>
void for_units(const std::vector<at::Tensor>& ws, const std::vector<at::Tensor>& ms, const std::vector<Unit>& units,
               Fn fn) {
  // Tasks of 8 units (rows are small; a task per row would cost more in claims than in work).
  constexpr int64_t kUnitsPerTask = 8;
  const int64_t n = static_cast<int64_t>(units.size());
  parallel_tasks((n + kUnitsPerTask - 1) / kUnitsPerTask, max_workers(), [&](int64_t t, int) {
    for (int64_t u = t * kUnitsPerTask; u < std::min(n, (t + 1) * kUnitsPerTask); ++u) {
      const Unit& U = units[u];
      const at::Tensor& w = ws[U.layer];
      const bool* m = ms[U.layer].defined() ? ms[U.layer].data_ptr<bool>() + U.begin : nullptr;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "row_kernels",
                                      [&] { fn(U, w.data_ptr<scalar_t>() + U.begin, m); });
    }
  });
}

// The nearest float64 (ties to even) of v * 2^exp2, for v > 0 and a normal result: the 64 leading bits of v
// converted with a sticky bit OR-ed into the lowest (below float64's rounding position, so the conversion rounds
// as v would), then scaled by adding to the exponent field -- as ExactSum::to_double does.
inline double u128_times_pow2(u128 v, int exp2) {
  const uint64_t hi = static_cast<uint64_t>(v >> 64), lo = static_cast<uint64_t>(v);
  uint64_t lead;
  int up;  // v = (lead + rest) * 2^up
  if (hi) {
    const int lz = __builtin_clzll(hi);
    lead = (lz ? (hi << lz) | (lo >> (64 - lz)) : hi) | static_cast<uint64_t>((lz ? lo << lz : lo) != 0);
    up = 64 - lz;
  } else {
    const int lz = __builtin_clzll(lo);
    lead = lo << lz;
    up = -lz;
  }
  const double d = static_cast<double>(lead);  // in [2^63, 2^64]
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  bits += static_cast<uint64_t>(static_cast<int64_t>(exp2 + up)) << 52;
  double out;
  std::memcpy(&out, &bits, 8);
  return out;
}

// A unit whose squares span few binades sums them in one 128-bit integer instead of an ExactSum: every square
// M^2 2^(2e) is (M^2 << 2(e - e0)) 2^(2 e0), e0 the lowest exponent of a nonzero key, and the sum of n of them
// has at most bits(M^2) + 2(e1 - e0) + bits(n) bits (e1 the highest exponent). ok is false when that could
// exceed 127 bits (in a row of 2048: more than 33 binades between the smallest and the largest nonzero fp32 key,
// 49 for bf16), for fp64 keys, or when not wanted. Zero keys come first in the order and score 0. each(emit) gives every
// position's score from the top down; with a table, the suffix sums are kept (16 bytes per position) and
// score(j) gives any position's score alone.
template <typename scalar_t>
struct NarrowSums {
  using key_t = typename Keys<scalar_t>::key_t;
  static constexpr int code = Keys<scalar_t>::code;
  const std::vector<key_t>& keys;
  std::vector<u128>* table;  // (*table)[j - first]: the suffix sum from position j, its own square included
  size_t first = 0;          // the first nonzero key
  int e0 = 0;
  bool ok = false;

  NarrowSums(const std::vector<key_t>& sorted, std::vector<u128>* suffix_table, bool wanted = true)
      : keys(sorted), table(suffix_table) {
    if constexpr (code != kF64) {
      if (!wanted) return;
      constexpr int kSquareBits = code == kF32 ? 48 : code == kF16 ? 22 : 16;
      const size_t n = keys.size();
      first = std::upper_bound(keys.begin(), keys.end(), 0) - keys.begin();
      if (first < n) {
        e0 = lsb_exponent(code, keys[first]);
        const int e1 = lsb_exponent(code, keys[n - 1]);
        if (kSquareBits + 2 * (e1 - e0) + (64 - __builtin_clzll(n)) > 127) return;
      }
      ok = true;
      if (table) {
        table->resize(n - first);
        each_sum([this](size_t j, u128 sum) { (*table)[j - first] = sum; });
      }
    }
  }
  template <typename Fn>
  void each_sum(Fn fn) const {  // fn(j, suffix sum) for every nonzero position, from the top
    u128 acc = 0;
    for (size_t j = keys.size(); j-- > first;) {
      const uint64_t M = significand(code, keys[j]);
      acc += static_cast<u128>(M * M) << (2 * (lsb_exponent(code, keys[j]) - e0));
      fn(j, acc);
    }
  }
  double score_from(size_t j, u128 sum) const {
    return lamp_score(key_value(code, static_cast<int64_t>(keys[j])), u128_times_pow2(sum, 2 * e0));
  }
  template <typename Emit>
  void each(Emit emit) const {
    each_sum([&](size_t j, u128 sum) { emit(j, score_from(j, sum)); });
    for (size_t j = 0; j < std::min(first, keys.size()); ++j) emit(j, 0.0);  // a zero weight scores 0
  }
  double score(size_t j) const { return j < first ? 0.0 : score_from(j, (*table)[j - first]); }
};

// Along a unit's sorted alive keys: emit(j, score) with the exact suffix sum of squares.
template <typename scalar_t, typename Emit>
void unit_scores(const std::vector<typename Keys<scalar_t>::key_t>& keys, Emit emit) {
  const NarrowSums<scalar_t> narrow(keys, nullptr);
  if (narrow.ok) {
    narrow.each(emit);
    return;
  }
  ExactSum acc;
  for (size_t j = keys.size(); j-- > 0;) {
    const double v = key_value(Keys<scalar_t>::code, static_cast<int64_t>(keys[j]));
    add_square(acc, v);
    emit(j, lamp_score(v, acc.to_double()));
  }
}

// The keep flags of a unit that prunes the first `count` elements of its order (masked-out ones first, then
// alive ones by (key, column)), found by selection instead of a sort: the p-th smallest alive key t (p the alive
// ones pruned) from a histogram of the keys' top kSelectBits bits and a partial sort of t's bucket alone, then
// one pass that keeps the alive keys above t and, of those equal to t, all but the first p - #{alive < t} in
// column order. The unit stays in L1 across the passes for row-sized units.
template <typename scalar_t>
void cut_unit(const scalar_t* x, const bool* m, int64_t n, int64_t count, bool* out,
              std::vector<typename Keys<scalar_t>::key_t>& bucket) {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  constexpr int shift = select_shift<scalar_t>();
  int64_t masked = 0;
  if (m)
    for (int64_t i = 0; i < n; ++i) masked += !m[i];
  const int64_t alive = n - masked, p = std::clamp<int64_t>(count - masked, 0, alive);
  if (p == 0 || p == alive) {  // keep every alive element, or none
    if (p == 0 && m)
      std::copy(m, m + n, out);
    else
      std::fill(out, out + n, p == 0);
    return;
  }
  uint32_t hist[1 << kSelectBits] = {};
  if (m) {
    for (int64_t i = 0; i < n; ++i) hist[K::key(x[i]) >> shift] += m[i];
  } else {
    for (int64_t i = 0; i < n; ++i) ++hist[K::key(x[i]) >> shift];
  }
  int64_t below;  // alive keys in the buckets before t's
  const auto nth = bucket.begin() + select_in_bucket(x, m, n, p, hist, bucket, below);
  const key_t t = *nth;
  const int64_t less = below + std::count_if(bucket.begin(), nth, [t](key_t k) { return k < t; });
  const int64_t ties = p - less;  // alive elements equal to t that are pruned: the first ones in column order
  // Keep alive keys above t (a loop that vectorises), then decide the ones equal to t in column order.
  if (m) {
    for (int64_t i = 0; i < n; ++i) out[i] = m[i] & (K::key(x[i]) > t);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = K::key(x[i]) > t;
  }
  if (std::count(bucket.begin(), bucket.end(), t) == ties) return;  // every alive t is pruned: done
  int64_t seen = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (K::key(x[i]) != t || (m && !m[i])) continue;
    out[i] = seen++ >= ties;
  }
}

// The order values of a unit's alive elements along its order (ascending) into `out`.
template <typename scalar_t>
void unit_order_values(const std::vector<typename Keys<scalar_t>::key_t>& sorted, bool lamp, int64_t* out) {
  if (lamp) {
    unit_scores<scalar_t>(sorted, [out](size_t j, double s) { out[j] = order_value(s); });
  } else {
    for (size_t j = 0; j < sorted.size(); ++j)
      out[j] = order_value(key_value(Keys<scalar_t>::code, static_cast<int64_t>(sorted[j])));
  }
}

}  // namespace

std::vector<at::Tensor> row_order_values(const std::vector<at::Tensor>& keys,
                                         const std::vector<std::optional<at::Tensor>>& masks,
                                         const std::vector<int64_t>& rows, bool lamp) {
  const auto ws = contiguous_all(keys);
  const auto ms = contiguous_masks(masks, ws);
  const auto units = make_units(ws, rows);
  std::vector<at::Tensor> outs;
  for (const auto& w : ws) outs.push_back(at::empty({w.numel()}, w.options().dtype(at::kLong)));
  for_units(ws, ms, units, [&](const Unit& U, auto* x, const bool* m) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    const UnitOrder<scalar_t> order(x, m, U.size);
    const auto& sorted = order.keys;
    const int64_t masked = order.masked;
    int64_t* out = outs[U.layer].data_ptr<int64_t>() + U.begin;
    std::fill(out, out + masked, int64_t{0});
    unit_order_values<scalar_t>(sorted, lamp, out + masked);
  });
  return outs;
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor> row_value_window(
    const std::vector<at::Tensor>& keys, const std::vector<std::optional<at::Tensor>>& masks,
    const std::vector<int64_t>& rows, bool lamp, int64_t lo, int64_t hi, int64_t limit, int64_t buckets) {
  TORCH_CHECK(0 <= lo && lo < hi, "row_value_window: needs 0 <= lo < hi");
  TORCH_CHECK(limit >= 0 && buckets >= 0, "row_value_window: limit and buckets must be >= 0");
  const auto ws = contiguous_all(keys);
  const auto ms = contiguous_masks(masks, ws);
  const auto units = make_units(ws, rows);
  const size_t L = ws.size();
  std::vector<at::Tensor> le_lo, le_hi;
  std::vector<int64_t> first_row(L + 1, 0);  // layer i's units are rows [first_row[i], first_row[i + 1]) of all
  for (size_t i = 0; i < L; ++i) {
    le_lo.push_back(at::zeros({rows[i]}, at::kLong));
    le_hi.push_back(at::zeros({rows[i]}, at::kLong));
    first_row[i + 1] = first_row[i] + rows[i];
  }
  at::Tensor hist = at::zeros({static_cast<int64_t>(L), buckets}, at::kLong);
  int shift = 0;
  const uint64_t span = static_cast<uint64_t>(hi - lo - 1);  // values lo + 1 .. hi, less one
  while (buckets && shift < 63 && (span >> shift) >= static_cast<uint64_t>(buckets)) ++shift;
  // Each unit's run of values in (lo, hi], kept until every unit is done (the runs then fill the outputs in unit
  // order), while the total stays within the limit; past it, runs are dropped and only counted.
  std::vector<std::vector<int64_t>> runs(static_cast<size_t>(first_row[L]));
  std::atomic<int64_t> collected{0};
  for_units(ws, ms, units, [&](const Unit& U, auto* x, const bool* m) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    if (!U.size) return;
    const UnitOrder<scalar_t> order(x, m, U.size);
    // The unit's values by position, ascending: computed where needed when each costs O(1) (the key's value;
    // a LAMP score from the narrow suffix sums), so that only the two ends and the window's values are
    // computed; all of them first for LAMP with the general exact sum.
    const auto& sorted = order.keys;
    const int64_t n = static_cast<int64_t>(sorted.size());
    thread_local std::vector<u128> kept_suffix;
    thread_local std::vector<int64_t> kept_values;
    UnitBuffer<u128> own_suffix;
    UnitBuffer<int64_t> own_values;
    const NarrowSums<scalar_t> narrow(sorted, &own_suffix.pick(kept_suffix, n), lamp);
    std::vector<int64_t>& values = own_values.pick(kept_values, n);
    const bool all_values = lamp && !narrow.ok;
    if (all_values) {
      values.resize(n);
      unit_order_values<scalar_t>(sorted, true, values.data());
    }
    auto value = [&](int64_t j) {
      if (all_values) return values[j];
      return order_value(lamp ? narrow.score(j) : key_value(Keys<scalar_t>::code, static_cast<int64_t>(sorted[j])));
    };
    auto first_above = [&](int64_t from, int64_t t) {  // the first position from `from` whose value exceeds t
      int64_t lo_j = from, hi_j = n;
      while (lo_j < hi_j) {
        const int64_t mid = lo_j + (hi_j - lo_j) / 2;
        if (value(mid) <= t)
          lo_j = mid + 1;
        else
          hi_j = mid;
      }
      return lo_j;
    };
    const int64_t a = first_above(0, lo), b = first_above(a, hi);
    const int64_t row = U.begin / U.size;
    le_lo[U.layer].data_ptr<int64_t>()[row] = order.masked + a;
    le_hi[U.layer].data_ptr<int64_t>()[row] = order.masked + b;
    const bool keep_run = b > a && collected.fetch_add(b - a) + (b - a) <= limit;
    if (keep_run) runs[first_row[U.layer] + row].resize(b - a);
    int64_t* h = buckets ? hist.data_ptr<int64_t>() + U.layer * buckets : nullptr;
    for (int64_t j = a; (keep_run || h) && j < b; ++j) {
      const int64_t v = value(j);
      if (h) __atomic_fetch_add(h + (static_cast<uint64_t>(v - lo - 1) >> shift), 1, __ATOMIC_RELAXED);
      if (keep_run) runs[first_row[U.layer] + row][j - a] = v;
    }
  });
  const bool all_kept = collected.load() <= limit;
  std::vector<at::Tensor> inside;
  for (size_t i = 0; i < L; ++i) {
    int64_t total = 0;
    for (int64_t r = first_row[i]; all_kept && r < first_row[i + 1]; ++r) total += static_cast<int64_t>(runs[r].size());
    inside.push_back(at::empty({total}, at::kLong));
    int64_t* out = inside.back().data_ptr<int64_t>();
    for (int64_t r = first_row[i]; all_kept && r < first_row[i + 1]; ++r) {
      out = std::copy(runs[r].begin(), runs[r].end(), out);
      std::vector<int64_t>().swap(runs[r]);
    }
  }
  return {le_lo, le_hi, inside, hist};
}

std::vector<at::Tensor> row_lamp_scores(const std::vector<at::Tensor>& keys,
                                        const std::vector<std::optional<at::Tensor>>& masks,
                                        const std::vector<int64_t>& rows, bool float64) {
  const auto ws = contiguous_all(keys);
  const auto ms = contiguous_masks(masks, ws);
  const auto units = make_units(ws, rows);
  std::vector<at::Tensor> outs;
  // at::empty, each unit zeroed by its own task (masked-out and zero weights score 0): at::zeros would run on
  // torch's OpenMP threads, which then spin beside the pool's.
  for (const auto& w : ws) outs.push_back(at::empty(w.sizes(), w.options().dtype(float64 ? at::kDouble : at::kFloat)));
  for_units(ws, ms, units, [&](const Unit& U, auto* x, const bool* m) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    const UnitOrder<scalar_t> order(x, m, U.size);
    const auto& sorted = order.keys;
    const auto& cols = order.cols;
    if (float64) {
      double* out = outs[U.layer].data_ptr<double>() + U.begin;
      std::fill(out, out + U.size, 0.0);
      unit_scores<scalar_t>(sorted, [&](size_t j, double s) { out[cols[j]] = s; });
    } else {
      float* out = outs[U.layer].data_ptr<float>() + U.begin;
      std::fill(out, out + U.size, 0.0f);
      unit_scores<scalar_t>(sorted, [&](size_t j, double s) { out[cols[j]] = static_cast<float>(s); });
    }
  });
  return outs;
}

namespace {

// row_cut_masks, on the keys themselves or (scales given) on their column-scaled importances: each unit's
// float32 importances made into the thread's buffer, then cut as a float32 unit (a row of a Linear weight is a
// few KiB and stays in L1/L2 across cut_unit's passes).
std::vector<at::Tensor> row_cut_masks_of(const std::vector<at::Tensor>& keys,
                                         const std::vector<std::optional<at::Tensor>>& masks,
                                         const std::vector<at::Tensor>* scales, const std::vector<int64_t>& rows,
                                         const std::vector<at::Tensor>& counts, const char* op) {
  const auto ws = contiguous_all(keys);
  const auto ms = contiguous_masks(masks, ws);
  const auto units = make_units(ws, rows);
  TORCH_CHECK(counts.size() == ws.size() && (!scales || scales->size() == ws.size()), op,
              ": one count tensor (and scale) per layer");
  std::vector<at::Tensor> cs;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (scales) check_scaled_layer(ws[i], (*scales)[i], op);
    cs.push_back(counts[i].to(at::kLong).contiguous());
    TORCH_CHECK(cs[i].numel() == rows[i], op, ": one count per row");
  }
  std::vector<at::Tensor> outs;
  for (const auto& w : ws) outs.push_back(at::empty(w.sizes(), w.options().dtype(at::kBool)));
  for_units(ws, ms, units, [&](const Unit& U, auto* x, const bool* m) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    const int64_t count = U.size ? cs[U.layer].data_ptr<int64_t>()[U.begin / U.size] : 0;
    bool* out = outs[U.layer].data_ptr<bool>() + U.begin;
    if (!scales) {
      thread_local std::vector<typename Keys<scalar_t>::key_t> kept_bucket;
      UnitBuffer<typename Keys<scalar_t>::key_t> own_bucket;
      cut_unit(x, m, U.size, count, out, own_bucket.pick(kept_bucket, U.size));
      return;
    }
    thread_local std::vector<float> kept_keys;
    thread_local std::vector<Keys<float>::key_t> kept_bucket;
    UnitBuffer<float> own_keys;
    UnitBuffer<Keys<float>::key_t> own_bucket;
    auto& buffer = own_keys.pick(kept_keys, U.size);
    buffer.resize(static_cast<size_t>(U.size));
    ScaledLayer<scalar_t>{x - U.begin, (*scales)[U.layer].data_ptr<float>(), ws[U.layer].size(-1)}.fill(
        U.begin, U.size, buffer.data());
    cut_unit(buffer.data(), m, U.size, count, out, own_bucket.pick(kept_bucket, U.size));
  });
  return outs;
}

}  // namespace

std::vector<at::Tensor> row_cut_masks(const std::vector<at::Tensor>& keys,
                                      const std::vector<std::optional<at::Tensor>>& masks,
                                      const std::vector<int64_t>& rows, const std::vector<at::Tensor>& counts) {
  return row_cut_masks_of(keys, masks, nullptr, rows, counts, "row_cut_masks");
}

std::vector<at::Tensor> row_cut_masks_scaled(const std::vector<at::Tensor>& weights,
                                             const std::vector<std::optional<at::Tensor>>& masks,
                                             const std::vector<at::Tensor>& scales, const std::vector<int64_t>& rows,
                                             const std::vector<at::Tensor>& counts) {
  return row_cut_masks_of(weights, masks, &scales, rows, counts, "row_cut_masks_scaled");
}

std::vector<at::Tensor> masked_per_row(const std::vector<at::Tensor>& masks, const std::vector<int64_t>& rows) {
  TORCH_CHECK(rows.size() == masks.size(), "masked_per_row: one row count per mask");
  std::vector<at::Tensor> ms, outs;
  for (size_t i = 0; i < masks.size(); ++i) {
    ms.push_back(masks[i].contiguous());
    TORCH_CHECK(ms[i].scalar_type() == at::kBool && rows[i] >= 0 && (rows[i] ? ms[i].numel() % rows[i] == 0
                                                                              : ms[i].numel() == 0),
                "masked_per_row: bool masks whose rows divide their size");
    outs.push_back(at::empty({rows[i]}, at::kLong));
  }
  std::vector<std::pair<size_t, int64_t>> blocks;  // (mask, first row) of every 64 rows
  for (size_t i = 0; i < ms.size(); ++i)
    for (int64_t r = 0; r < rows[i]; r += 64) blocks.emplace_back(i, r);
  parallel_tasks(static_cast<int64_t>(blocks.size()), max_workers(), [&](int64_t t, int) {
    const auto [i, r0] = blocks[t];
    const int64_t cols = rows[i] ? ms[i].numel() / rows[i] : 0;
    const uint8_t* m = reinterpret_cast<const uint8_t*>(ms[i].data_ptr<bool>());
    int64_t* out = outs[i].data_ptr<int64_t>();
    for (int64_t r = r0; r < std::min(rows[i], r0 + 64); ++r) {
      uint32_t alive = 0;  // a row has < 2^31 elements; any nonzero byte is true, as torch reads it
      for (int64_t j = 0; j < cols; ++j) alive += m[r * cols + j] != 0;
      out[r] = cols - alive;
    }
  });
  return outs;
}

}  // namespace lamp
