// OWL's block statistics on the CPU: the exact sum of the keys |x| of each layer and the count above a
// threshold, each one read pass on the task pool; the _scaled ones on column-scaled importances (scaled_keys.h),
// made a block at a time as the weights are read. The pure-torch versions in owl.py run on other devices and
// are the twins these are tested against. Masked-out elements count as 0: they add nothing and are never
// above a threshold >= 0.
//
// Exact sum: every float is M 2^(max(e, 1) - bias - mantissa bits), M its integer significand and e its
// exponent field, so per exponent field the significands add up as integers; the caller combines the fields
// exactly. M < 2^53 is split into halves below 2^27 and 2^26, so the int64 sums of up to 2^31 elements cannot
// overflow (below 2^26, every dtype but fp64, one add of the whole significand; see add_significands). Each
// task adds into kCopies interleaved tables: consecutive elements usually share an exponent, and one table
// would make every add wait for the previous one's store.
#include "owl_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <type_traits>
#include <vector>

#include "float_keys.h"
#include "layer_chunks.h"
#include "scaled_keys.h"
#include "task_pool.h"
#include "vector_clones.h"

namespace lamp {

namespace {

constexpr int kCopies = 4;
constexpr int kLowHalf = 26;

template <typename scalar_t>
struct FloatFormat;
template <>
struct FloatFormat<c10::BFloat16> {
  static constexpr int exp_bits = 8, man_bits = 7;
};
template <>
struct FloatFormat<c10::Half> {
  static constexpr int exp_bits = 5, man_bits = 10;
};
template <>
struct FloatFormat<float> {
  static constexpr int exp_bits = 8, man_bits = 23;
};
template <>
struct FloatFormat<double> {
  static constexpr int exp_bits = 11, man_bits = 52;
};

// The layers of a call as chunked tasks, checked: CPU, one dtype, a bool mask (or none) per element.
LayerChunks checked_chunks(const std::vector<at::Tensor>& weights,
                           const std::vector<std::optional<at::Tensor>>& masks, const char* op) {
  TORCH_CHECK(masks.size() == weights.size(), op, ": one mask (or None) per layer");
  for (size_t i = 0; i < weights.size(); ++i) {
    TORCH_CHECK(weights[i].device().is_cpu() && weights[i].scalar_type() == weights[0].scalar_type(), op,
                ": CPU layers of one dtype per call");
    if (masks[i].has_value() && masks[i]->defined())
      TORCH_CHECK(masks[i]->scalar_type() == at::kBool && masks[i]->numel() == weights[i].numel(), op,
                  ": a mask must be bool, one entry per element");
  }
  return LayerChunks(weights, masks);
}

// Adds the significands of x[b, e) (alive ones) into out = [high halves][low halves] per exponent field.
// Significands below 2^26 (every dtype but fp64) go whole into the low half, and a task keeps per exponent
// field one int64 slot packing the count (from bit kCountShift) with the sum of the stored mantissa bits: one add
// per element, the implicit leading bit added as count << man_bits when the task is done. kCopies tables, each
// element going to the next one in turn (unrolled), so that consecutive elements of one exponent do not wait
// on each other's stores (measured on fp32 keys: 1.35 -> 0.52 ns per element).
template <typename scalar_t>
void add_significands(const scalar_t* x, const bool* m, int64_t b, int64_t e, int64_t* out) {
  using F = FloatFormat<scalar_t>;
  constexpr int E = 1 << F::exp_bits;
  constexpr uint64_t kMan = (uint64_t{1} << F::man_bits) - 1;
  if constexpr (F::man_bits < kLowHalf) {
    constexpr int kCountShift = F::man_bits + 18;  // mantissa sums of a task's <= 2^18 elements stay below it
    static_assert(LayerChunks::kChunk <= (int64_t{1} << 18) && kCountShift + 19 < 63);
    std::vector<uint64_t> t(E * kCopies, 0);  // [copy][e]
    const uint8_t* alive_bytes = reinterpret_cast<const uint8_t*>(m);
    auto add = [&](uint64_t* c, int64_t i) {
      const uint64_t k = Keys<scalar_t>::key(x[i]), alive = m ? static_cast<uint64_t>(alive_bytes[i] != 0) : 1;
      c[k >> F::man_bits] += ((k & kMan) + (uint64_t{1} << kCountShift)) * alive;
    };
    uint64_t *c0 = t.data(), *c1 = c0 + E, *c2 = c1 + E, *c3 = c2 + E;
    static_assert(kCopies == 4);
    int64_t i = b;
    for (; i + 4 <= e; i += 4) {
      add(c0, i);
      add(c1, i + 1);
      add(c2, i + 2);
      add(c3, i + 3);
    }
    for (; i < e; ++i) add(c0, i);
    for (int ex = 0; ex < E; ++ex) {
      uint64_t count = 0, mantissas = 0;
      for (int c = 0; c < kCopies; ++c) {
        count += t[c * E + ex] >> kCountShift;
        mantissas += t[c * E + ex] & ((uint64_t{1} << kCountShift) - 1);
      }
      out[E + ex] += static_cast<int64_t>(mantissas + (ex ? count << F::man_bits : 0));
    }
  } else {
    std::vector<int64_t> t(2 * E * kCopies, 0);  // [copy][half][e]; on the heap: 128 KiB for fp64
    for (int64_t i = b; i < e; ++i) {
      if (m && !m[i]) continue;
      const uint64_t k = Keys<scalar_t>::key(x[i]);
      const uint64_t ex = k >> F::man_bits, mm = (k & kMan) | (ex ? kMan + 1 : 0);
      int64_t* c = t.data() + (i % kCopies) * 2 * E;
      c[ex] += static_cast<int64_t>(mm >> kLowHalf);
      c[E + ex] += static_cast<int64_t>(mm & ((uint64_t{1} << kLowHalf) - 1));
    }
    for (int c = 0; c < kCopies; ++c)
      for (int j = 0; j < 2 * E; ++j) out[j] += t[c * 2 * E + j];
  }
}

// |x| > t compared as keys: with f1 the largest value of the dtype at or below t (t >= 0, finite x), |x| > t
// exactly when |x| > f1 (between neighbours f1 < t < f2, |x| > t means |x| >= f2), so when key(x) > key(f1).
// The key of f1 by bisection over the finite keys, which order like their values.
template <typename scalar_t>
uint64_t largest_key_at_most(double t) {
  constexpr int code = Keys<scalar_t>::code;
  constexpr int bits = 8 * static_cast<int>(sizeof(typename Keys<scalar_t>::key_t));
  constexpr int man_bits = FloatFormat<scalar_t>::man_bits;
  const uint64_t inf_key = ((uint64_t{1} << (bits - 1 - man_bits)) - 1) << man_bits;  // all exponent bits set
  uint64_t lo = 0, hi = inf_key - 1;  // 0 .. the largest finite key
  if (key_value(code, static_cast<int64_t>(hi)) <= t) return hi;
  while (lo < hi) {  // key_value(lo) <= t < key_value(hi + 1)
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (key_value(code, static_cast<int64_t>(mid)) <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// Alive keys of x[0, n) above `cut`: branch-free, vectorised (AVX2 and the baseline, vector_clones.h); keys
// compare as signed integers (below 2^(bits - 1)).
template <typename bits_t>
inline int64_t count_keys_over_impl(const bits_t* x, const bool* m, int64_t n, uint64_t cut) {
  using cmp_t = std::make_signed_t<bits_t>;
  constexpr bits_t kMagnitude = static_cast<bits_t>(std::numeric_limits<bits_t>::max() >> 1);
  const cmp_t c = static_cast<cmp_t>(cut);
  int64_t count = 0;
  if (m) {
    const uint8_t* alive = reinterpret_cast<const uint8_t*>(m);
    for (int64_t i = 0; i < n; ++i) count += (alive[i] != 0) & (static_cast<cmp_t>(x[i] & kMagnitude) > c);
  } else {
    for (int64_t i = 0; i < n; ++i) count += static_cast<cmp_t>(x[i] & kMagnitude) > c;
  }
  return count;
}
LAMP_VECTOR_CLONES int64_t count_keys_over(const uint16_t* x, const bool* m, int64_t n, uint64_t cut) {
  return count_keys_over_impl(x, m, n, cut);
}
LAMP_VECTOR_CLONES int64_t count_keys_over(const uint32_t* x, const bool* m, int64_t n, uint64_t cut) {
  return count_keys_over_impl(x, m, n, cut);
}
LAMP_VECTOR_CLONES int64_t count_keys_over(const uint64_t* x, const bool* m, int64_t n, uint64_t cut) {
  return count_keys_over_impl(x, m, n, cut);
}

template <typename scalar_t>
int64_t count_over(const scalar_t* x, const bool* m, int64_t b, int64_t e, double threshold) {
  using bits_t = typename Keys<scalar_t>::key_t;
  if (std::isnan(threshold)) return 0;  // nothing compares above NaN
  if (threshold < 0) return e - b;      // every element: masked-out ones count as 0, which is above t too
  return count_keys_over(reinterpret_cast<const bits_t*>(x) + b, m ? m + b : nullptr, e - b,
                         largest_key_at_most<scalar_t>(threshold));
}

// fn(keys, m, n) over the keys of elements [b, e) of layer i: key_scalar keys, x + b and its mask (or none),
// or, with scales, float32 importances made kPassBlock at a time (fn called once per block).
template <typename scalar_t, bool kScaled, typename Fn>
void for_layer_keys(const LayerChunks& in, const std::vector<at::Tensor>* scales, size_t i, int64_t b, int64_t e,
                    Fn fn) {
  const scalar_t* x = in.ws[i].data_ptr<scalar_t>();
  const bool* m = in.mask(i);
  if constexpr (!kScaled) {
    fn(x + b, m ? m + b : nullptr, e - b);
  } else {
    const ScaledLayer<scalar_t> layer{x, (*scales)[i].data_ptr<float>(), in.ws[i].size(-1)};
    for_key_blocks<kPassBlock>(layer, b, e, [&](const float* keys, int64_t i0, int64_t n) {
      fn(keys, m ? m + i0 : nullptr, n);
    });
  }
}

at::Tensor significand_sums_of(const std::vector<at::Tensor>& weights,
                               const std::vector<std::optional<at::Tensor>>& masks,
                               const std::vector<at::Tensor>* scales, const char* op) {
  const LayerChunks in = checked_chunks(weights, masks, op);
  if (scales) check_scaled_layers(in.ws, *scales, op);
  const int64_t L = static_cast<int64_t>(weights.size());
  if (!L) return at::zeros({0, 2, 1}, at::kLong);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.ws[0].scalar_type(), "significand_sums", [&] {
    auto run = [&](auto scaled) {  // std::bool_constant: keys float32 importances, or the layer's own
      constexpr bool kScaled = decltype(scaled)::value;
      using key_scalar = std::conditional_t<kScaled, float, scalar_t>;
      constexpr int E = 1 << FloatFormat<key_scalar>::exp_bits;
      out = at::zeros({L, 2, E}, at::kLong);
      int64_t* o = out.data_ptr<int64_t>();
      std::vector<std::mutex> locks(L);
      parallel_tasks(in.tasks(), max_workers(), [&](int64_t task, int) {
        const size_t i = in.layer_of(task);
        int64_t b, e;
        in.range(task, i, b, e);
        std::vector<int64_t> part(2 * E, 0);
        for_layer_keys<scalar_t, kScaled>(in, scales, i, b, e, [&](const key_scalar* k, const bool* m, int64_t n) {
          add_significands(k, m, 0, n, part.data());
        });
        std::lock_guard<std::mutex> lock(locks[i]);
        for (int j = 0; j < 2 * E; ++j) o[i * 2 * E + j] += part[j];
      });
    };
    if (scales)
      run(std::true_type{});
    else
      run(std::false_type{});
  });
  return out;
}

at::Tensor count_above_of(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                          const std::vector<double>& thresholds, const std::vector<at::Tensor>* scales,
                          const char* op) {
  const LayerChunks in = checked_chunks(weights, masks, op);
  if (scales) check_scaled_layers(in.ws, *scales, op);
  const int64_t L = static_cast<int64_t>(weights.size());
  TORCH_CHECK(thresholds.size() == weights.size(), op, ": one threshold per layer");
  std::vector<int64_t> per_task(in.tasks(), 0);
  if (L) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.ws[0].scalar_type(), "count_above", [&] {
      auto run = [&](auto scaled) {
        constexpr bool kScaled = decltype(scaled)::value;
        using key_scalar = std::conditional_t<kScaled, float, scalar_t>;
        parallel_tasks(in.tasks(), max_workers(), [&](int64_t task, int) {
          const size_t i = in.layer_of(task);
          int64_t b, e;
          in.range(task, i, b, e);
          for_layer_keys<scalar_t, kScaled>(in, scales, i, b, e, [&](const key_scalar* k, const bool* m, int64_t n) {
            per_task[task] += count_over(k, m, 0, n, thresholds[i]);
          });
        });
      };
      if (scales)
        run(std::true_type{});
      else
        run(std::false_type{});
    });
  }
  at::Tensor out = at::zeros({L}, at::kLong);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t t = in.first[i]; t < in.first[i + 1]; ++t) out.data_ptr<int64_t>()[i] += per_task[t];
  return out;
}

}  // namespace

at::Tensor significand_sums(const std::vector<at::Tensor>& weights,
                            const std::vector<std::optional<at::Tensor>>& masks) {
  return significand_sums_of(weights, masks, nullptr, "significand_sums");
}

at::Tensor significand_sums_scaled(const std::vector<at::Tensor>& weights,
                                   const std::vector<std::optional<at::Tensor>>& masks,
                                   const std::vector<at::Tensor>& scales) {
  return significand_sums_of(weights, masks, &scales, "significand_sums_scaled");
}

at::Tensor count_above(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                       const std::vector<double>& thresholds) {
  return count_above_of(weights, masks, thresholds, nullptr, "count_above");
}

at::Tensor count_above_scaled(const std::vector<at::Tensor>& weights,
                              const std::vector<std::optional<at::Tensor>>& masks,
                              const std::vector<double>& thresholds, const std::vector<at::Tensor>& scales) {
  return count_above_of(weights, masks, thresholds, &scales, "count_above_scaled");
}

}  // namespace lamp
