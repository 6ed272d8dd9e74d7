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
#include "task_pool.h"

namespace lamp {

namespace {

constexpr int64_t kChunk = int64_t{1} << 18;

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
  std::vector<at::Tensor> ws(L), ms(L);
  std::vector<int64_t> first_task(L + 1, 0);  // tasks of layer i: [first_task[i], first_task[i + 1])
  for (size_t i = 0; i < L; ++i) {
    ws[i] = weights[i].contiguous();
    if (i < masks.size() && masks[i].has_value() && masks[i]->defined()) ms[i] = masks[i]->contiguous();
    first_task[i + 1] = first_task[i] + (ws[i].numel() + kChunk - 1) / kChunk;
  }
  std::vector<uint64_t> task_max(first_task[L], 0);
  parallel_tasks(first_task[L], max_workers(), [&](int64_t t, int) {
    const size_t i = std::upper_bound(first_task.begin(), first_task.end(), t) - first_task.begin() - 1;
    const int64_t b = (t - first_task[i]) * kChunk, e = std::min(ws[i].numel(), b + kChunk);
    const bool* m = ms[i].defined() ? ms[i].data_ptr<bool>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[i].scalar_type(), "alive_max_abs",
                                    [&] { task_max[t] = max_key(ws[i].data_ptr<scalar_t>(), m, b, e); });
  });
  std::vector<double> out(L, 0.0);  // an empty layer: 0
  for (size_t i = 0; i < L; ++i) {
    if (first_task[i] == first_task[i + 1]) continue;
    const uint64_t key = *std::max_element(task_max.begin() + first_task[i], task_max.begin() + first_task[i + 1]);
    const at::ScalarType t = ws[i].scalar_type();
    const int code = t == at::kBFloat16 ? kBF16 : t == at::kHalf ? kF16 : t == at::kFloat ? kF32 : kF64;
    out[i] = key >= inf_key(t) ? std::numeric_limits<double>::infinity() : key_value(code, static_cast<int64_t>(key));
  }
  return out;
}

}  // namespace lamp
