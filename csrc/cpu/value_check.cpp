// The largest alive magnitude of every layer, in one read pass on the library's task pool: the NaN/Inf (and
// fp64 range) check that lamp_scores runs before scoring CPU tensors; and, in the same pass over every element,
// whether one is negative (value_scan: the check of importance tensors). The same check as torch reductions
// would make, without running torch's OpenMP threads, which spin for milliseconds after every parallel region
// and take a core from the kernels that follow.
//
// On magnitude keys (float_keys.h) the maximum is exact and NaN is larger than Inf, which is larger than every
// finite key; so "some alive weight is NaN or Inf" is "the largest alive key is at least Inf's".
#include "value_check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "float_keys.h"
#include "layer_chunks.h"
#include "scaled_keys.h"
#include "task_pool.h"
#include "vector_clones.h"

namespace lamp {

namespace {

// One pass over x[0, n): the largest magnitude key of the alive elements (masked-out ones count as 0), and whether
// some element, alive or not, has its sign bit set and a nonzero magnitude (a negative value, or a NaN with its
// sign bit). Branch-free, so that it vectorises (compiled for AVX2 and the baseline, vector_clones.h); keys
// compare as signed integers (they are below 2^(bits - 1)), which both have for 16- and 32-bit lanes.
template <typename bits_t>
inline void scan_bits_impl(const bits_t* x, const bool* m, int64_t n, uint64_t& top, bool& negative) {
  using cmp_t = std::make_signed_t<bits_t>;
  constexpr bits_t kMagnitude = static_cast<bits_t>(std::numeric_limits<bits_t>::max() >> 1);
  constexpr int kSignBit = 8 * static_cast<int>(sizeof(bits_t)) - 1;
  cmp_t best = 0;
  bits_t signed_nonzero = 0;
  const uint8_t* alive = reinterpret_cast<const uint8_t*>(m);
  for (int64_t i = 0; i < n; ++i) {
    const bits_t k = x[i] & kMagnitude;
    const bits_t keep = m ? static_cast<bits_t>(0 - static_cast<bits_t>(alive[i] != 0)) : static_cast<bits_t>(~bits_t{0});
    best = std::max(best, static_cast<cmp_t>(k & keep));
    signed_nonzero |= static_cast<bits_t>((x[i] >> kSignBit) & static_cast<bits_t>(k != 0));
  }
  top = std::max<uint64_t>(top, static_cast<uint64_t>(best));
  negative = negative || signed_nonzero;
}

// One wrapper per key width: GCC's target_clones does not apply to templates.
LAMP_VECTOR_CLONES void scan_bits(const uint16_t* x, const bool* m, int64_t n, uint64_t& top, bool& negative) {
  scan_bits_impl(x, m, n, top, negative);
}
LAMP_VECTOR_CLONES void scan_bits(const uint32_t* x, const bool* m, int64_t n, uint64_t& top, bool& negative) {
  scan_bits_impl(x, m, n, top, negative);
}
LAMP_VECTOR_CLONES void scan_bits(const uint64_t* x, const bool* m, int64_t n, uint64_t& top, bool& negative) {
  scan_bits_impl(x, m, n, top, negative);
}

// Key of +Inf for each dtype.
uint64_t inf_key(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return 0x7F80;
    case at::kHalf: return 0x7C00;
    case at::kFloat: return 0x7F800000;
    default: return 0x7FF0000000000000ull;
  }
}

// Per layer, the largest alive magnitude (+inf for NaN/Inf; 0 if none) and, with `negative`, whether some element
// is negative and nonzero. With `scales` (one per layer), the values are the column-scaled importances
// fl32(|w| * s_j) (scaled_keys.h), made a block at a time: float32 keys whatever the weights' dtype.
std::vector<double> scan_layers(const std::vector<at::Tensor>& weights,
                                const std::vector<std::optional<at::Tensor>>& masks, std::vector<bool>* negative,
                                const std::vector<at::Tensor>* scales = nullptr) {
  const size_t L = weights.size();
  const LayerChunks in(weights, masks);
  if (scales) check_scaled_layers(in.ws, *scales, "alive_max_abs_scaled");
  std::vector<uint64_t> task_max(in.tasks(), 0);
  std::vector<char> task_negative(in.tasks(), 0);
  parallel_tasks(in.tasks(), max_workers(), [&](int64_t t, int) {
    const size_t i = in.layer_of(t);
    int64_t b, e;
    in.range(t, i, b, e);
    const bool* m = in.mask(i);
    bool neg = false;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.ws[i].scalar_type(), "alive_max_abs", [&] {
      if (scales) {
        const ScaledLayer<scalar_t> layer{in.ws[i].data_ptr<scalar_t>(), (*scales)[i].data_ptr<float>(),
                                          in.ws[i].size(-1)};
        for_key_blocks(layer, b, e, [&](const float* keys, int64_t i0, int64_t n) {
          scan_bits(reinterpret_cast<const uint32_t*>(keys), m ? m + i0 : nullptr, n, task_max[t], neg);
        });
        return;
      }
      using bits_t = typename Keys<scalar_t>::key_t;
      const bits_t* x = reinterpret_cast<const bits_t*>(in.ws[i].data_ptr<scalar_t>());
      scan_bits(x + b, m ? m + b : nullptr, e - b, task_max[t], neg);
    });
    task_negative[t] = neg;
  });
  std::vector<double> out(L, 0.0);  // an empty layer: 0
  if (negative) negative->assign(L, false);
  for (size_t i = 0; i < L; ++i) {
    if (in.first[i] == in.first[i + 1]) continue;
    const uint64_t key = *std::max_element(task_max.begin() + in.first[i], task_max.begin() + in.first[i + 1]);
    const at::ScalarType t = scales ? at::kFloat : in.ws[i].scalar_type();
    const int code = t == at::kBFloat16 ? kBF16 : t == at::kHalf ? kF16 : t == at::kFloat ? kF32 : kF64;
    out[i] = key >= inf_key(t) ? std::numeric_limits<double>::infinity() : key_value(code, static_cast<int64_t>(key));
    if (negative)
      (*negative)[i] = std::any_of(task_negative.begin() + in.first[i], task_negative.begin() + in.first[i + 1],
                                   [](char c) { return c != 0; });
  }
  return out;
}

}  // namespace

std::vector<double> alive_max_abs(const std::vector<at::Tensor>& weights,
                                  const std::vector<std::optional<at::Tensor>>& masks) {
  return scan_layers(weights, masks, nullptr);
}

std::vector<double> alive_max_abs_scaled(const std::vector<at::Tensor>& weights,
                                         const std::vector<std::optional<at::Tensor>>& masks,
                                         const std::vector<at::Tensor>& scales) {
  return scan_layers(weights, masks, nullptr, &scales);
}

std::tuple<std::vector<double>, std::vector<bool>> value_scan(const std::vector<at::Tensor>& tensors) {
  std::vector<bool> negative;
  std::vector<double> top = scan_layers(tensors, std::vector<std::optional<at::Tensor>>(tensors.size()), &negative);
  return {top, negative};
}

}  // namespace lamp
