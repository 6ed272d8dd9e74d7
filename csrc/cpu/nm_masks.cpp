// The N:M pattern on the CPU (the kernel of lamp_kernels/nm.py for CPU tensors; its pure-torch path, a stable
// sort of each group, is the twin this is tested against, and reference.nm_masks the spec).
//
// Each element's place in its group's order is its rank: how many elements of the group come before it in
// (masked-out first, key, position). With rank keys r = alive ? key + 1 : 0 the order is (r, position), and
// an element is pruned when its rank is below m - n. m^2 comparisons per group, no sort: m is small (2:4,
// 4:8; at most kMaxGroup here), and the groups of a chunk are independent tasks on the pool.
#include "nm_masks.h"

#include <algorithm>
#include <vector>

#include "float_keys.h"
#include "scaled_keys.h"
#include "task_pool.h"

namespace lamp {

namespace {

constexpr int64_t kMaxGroup = 64;
constexpr int64_t kChunk = int64_t{1} << 16;  // elements per task, at least

// kM > 0: the group size as a constant (the common 2:4, 4:8 and 16-wide patterns: the loops unroll and the
// comparisons vectorise); kM == 0: m at run time.
template <int kM, typename scalar_t>
void nm_range(const scalar_t* x, const bool* alive, int64_t g0, int64_t g1, int64_t n, int64_t m_in, bool* keep) {
  const int64_t m = kM ? kM : m_in;
  uint64_t r[kMaxGroup];
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t base = g * m;
    for (int64_t j = 0; j < m; ++j) {
      const uint64_t k = static_cast<uint64_t>(Keys<scalar_t>::key(x[base + j])) + 1;
      r[j] = alive ? (alive[base + j] ? k : 0) : k;
    }
    for (int64_t j = 0; j < m; ++j) {
      int64_t rank = 0;
      for (int64_t k = 0; k < m; ++k) rank += (r[k] < r[j]) | ((r[k] == r[j]) & (k < j));
      keep[base + j] = r[j] != 0 && rank >= m - n;
    }
  }
}

template <typename scalar_t>
void nm_groups(const scalar_t* x, const bool* alive, int64_t g0, int64_t g1, int64_t n, int64_t m, bool* keep) {
  switch (m) {
    case 4: nm_range<4>(x, alive, g0, g1, n, m, keep); break;
    case 8: nm_range<8>(x, alive, g0, g1, n, m, keep); break;
    case 16: nm_range<16>(x, alive, g0, g1, n, m, keep); break;
    default: nm_range<0>(x, alive, g0, g1, n, m, keep);
  }
}

// With `scale` defined, the keys are the column-scaled importances fl32(|x| * s_j) (scaled_keys.h): each task's
// made into the thread's buffer (a task's groups: at most kChunk + m floats, kept by the thread).
at::Tensor nm_keep_of(const at::Tensor& keys, const std::optional<at::Tensor>& mask, const at::Tensor& scale,
                      int64_t n, int64_t m, const char* op) {
  TORCH_CHECK(keys.device().is_cpu(), op, ": a CPU tensor");
  TORCH_CHECK(m >= 1 && m <= kMaxGroup && n >= 0 && n <= m, op, ": 0 <= n <= m <= ", kMaxGroup);
  TORCH_CHECK(keys.numel() % m == 0, op, ": the elements do not split into groups of m");
  if (scale.defined()) check_scaled_layer(keys, scale, op);
  const at::Tensor x = keys.contiguous();
  at::Tensor alive;
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->numel() == keys.numel(), op, ": a bool mask per element");
    alive = mask->contiguous();
  }
  at::Tensor keep = at::empty(keys.sizes(), keys.options().dtype(at::kBool));
  const int64_t groups = keys.numel() / m, per_task = std::max<int64_t>(1, kChunk / m);
  const int64_t tasks = (groups + per_task - 1) / per_task;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nm_keep", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    const bool* pa = alive.defined() ? alive.data_ptr<bool>() : nullptr;
    bool* pk = keep.data_ptr<bool>();
    parallel_tasks(tasks, max_workers(), [&](int64_t t, int) {
      const int64_t g0 = t * per_task, g1 = std::min(groups, (t + 1) * per_task);
      if (!scale.defined()) {
        nm_groups(px, pa, g0, g1, n, m, pk);
        return;
      }
      thread_local std::vector<float> buffer;
      const int64_t b = g0 * m, len = (g1 - g0) * m;
      buffer.resize(static_cast<size_t>(len));
      ScaledLayer<scalar_t>{px, scale.data_ptr<float>(), x.size(-1)}.fill(b, len, buffer.data());
      nm_groups(buffer.data(), pa ? pa + b : nullptr, 0, g1 - g0, n, m, pk + b);
    });
  });
  return keep;
}

}  // namespace

at::Tensor nm_keep(const at::Tensor& keys, const std::optional<at::Tensor>& mask, int64_t n, int64_t m) {
  return nm_keep_of(keys, mask, at::Tensor(), n, m, "nm_keep");
}

at::Tensor nm_keep_scaled(const at::Tensor& weights, const std::optional<at::Tensor>& mask, const at::Tensor& scale,
                          int64_t n, int64_t m) {
  return nm_keep_of(weights, mask, scale, n, m, "nm_keep_scaled");
}

}  // namespace lamp
