// The largest alive magnitude of every layer, in one read pass on the library's task pool: the NaN/Inf (and
// fp64 range) check that lamp_scores runs before scoring CPU tensors. The same check as torch reductions
// would make, without running torch's OpenMP threads, which spin for milliseconds after every parallel region
// and take a core from the kernels that follow.
//
// On magnitude keys (float_keys.h) the maximum is exact and NaN is larger than Inf, which is larger than every
// finite key; so "some alive weight is NaN or Inf" is "the largest alive key is at least Inf's".
#include "value_check.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "float_keys.h"
#include "layer_chunks.h"
#include "task_pool.h"

namespace lamp {

namespace {

template <typename scalar_t>
uint64_t max_key(const scalar_t* x, const bool* m, int64_t b, int64_t e) {
  using K = Keys<scalar_t>;
  typename K::key_t best = 0;
  if (m) {
    for (int64_t i = b; i < e; ++i) best = std::max(best, m[i] ? K::key(x[i]) : typename K::key_t{0});
  } else {
    for (int64_t i = b; i < e; ++i) best = std::max(best, K::key(x[i]));
  }
  return best;
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

}  // namespace

std::vector<double> alive_max_abs(const std::vector<at::Tensor>& weights,
                                  const std::vector<std::optional<at::Tensor>>& masks) {
  const size_t L = weights.size();
  const LayerChunks in(weights, masks);
  std::vector<uint64_t> task_max(in.tasks(), 0);
  parallel_tasks(in.tasks(), max_workers(), [&](int64_t t, int) {
    const size_t i = in.layer_of(t);
    int64_t b, e;
    in.range(t, i, b, e);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.ws[i].scalar_type(), "alive_max_abs",
                                    [&] { task_max[t] = max_key(in.ws[i].data_ptr<scalar_t>(), in.mask(i), b, e); });
  });
  std::vector<double> out(L, 0.0);  // an empty layer: 0
  for (size_t i = 0; i < L; ++i) {
    if (in.first[i] == in.first[i + 1]) continue;
    const uint64_t key = *std::max_element(task_max.begin() + in.first[i], task_max.begin() + in.first[i + 1]);
    const at::ScalarType t = in.ws[i].scalar_type();
    const int code = t == at::kBFloat16 ? kBF16 : t == at::kHalf ? kF16 : t == at::kFloat ? kF32 : kF64;
    out[i] = key >= inf_key(t) ? std::numeric_limits<double>::infinity() : key_value(code, static_cast<int64_t>(key));
  }
  return out;
}

}  // namespace lamp
