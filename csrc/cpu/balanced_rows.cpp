// row_balance on CPU tensors (lamp_kernels.reference.balanced_masks is the spec; plan._balanced_masks calls
// these for one layer at a time):
//
//   row_cuts(weight, mask, scale, rows, counts) -> (cut, smallest_positive), float64 [rows]: per row, the
//        (counts[r] - masked)-th smallest alive key (the row rule's last pruned key), or the smallest alive key
//        when the row rule prunes no alive weight; and the row's smallest positive alive key. +inf where none.
//   balanced_cut_mask(weight, mask, scale, rows, factors, prune) -> bool keep mask: the layer prunes `prune`
//        weights (its masked ones included) in the order (masked, fl(key * factors[r]), flat index).
//
// Keys are |w| (as float64, exact), or with `scale` the column-scaled importances fl32(|w| * s_j) of
// scaled_keys.h. Nothing of the layer's size is allocated but the mask (and, for row_cuts with a scale, one
// row's importances per task): the balanced keys are recomputed in every pass. The selection is a radix select on their float64 bit patterns (non-negative doubles order like
// them): 16 bits per pass until at most 2^16 candidates are left, which are then sorted with their flat index.
#include "balanced_rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "bucket_select.h"
#include "float_keys.h"
#include "scaled_keys.h"
#include "task_pool.h"

namespace lamp {

namespace {

constexpr int64_t kFewCandidates = int64_t{1} << 16;
constexpr const char* kRecomputed =
    "balanced_cut_mask: the recomputed keys changed between passes (is flush-to-zero set on some threads only, "
    "e.g. by torch.set_flush_denormal(True) or a library built with -ffast-math?)";

struct LayerArgs {
  at::Tensor w, m, s;
  int64_t rows, cols;  // cols: the row's length (numel / rows); the scale has one entry per w.size(-1)
};

// fn(row, j0, n, keys) for consecutive blocks of every row of [r0, r1): keys[k] the key of the row's element
// j0 + k as float64 (masked ones included), in a stack buffer: nothing of a row's size is allocated, so a
// 1-D layer (one row) costs no more than a 2-D one. Column-scaled keys pass through fabs: a -0.0 scale
// gives fl32(|w| * -0.0) = -0.0, whose bit pattern would otherwise order it above every positive key.
template <typename scalar_t, typename Fn>
void for_row_keys(const LayerArgs& a, const scalar_t* x, const float* scale, int64_t r0, int64_t r1, Fn fn) {
  constexpr int64_t kBlock = 2048;
  const int64_t cols = a.cols;
  double keys[kBlock];
  float scaled[kBlock];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
      const int64_t n = std::min(kBlock, cols - j0);
      const scalar_t* row = x + r * cols + j0;
      if (scale) {
        ScaledLayer<scalar_t>{x, scale, a.w.size(-1)}.fill(r * cols + j0, n, scaled);
        for (int64_t k = 0; k < n; ++k) keys[k] = std::fabs(static_cast<double>(scaled[k]));
      } else if constexpr (std::is_same_v<scalar_t, double>) {
        for (int64_t k = 0; k < n; ++k) keys[k] = std::fabs(row[k]);
      } else {  // bf16, fp16 and fp32 values are exact in float32
        for (int64_t k = 0; k < n; ++k) keys[k] = std::fabs(static_cast<double>(static_cast<float>(row[k])));
      }
      fn(r, j0, n, static_cast<const double*>(keys));
    }
  }
}

LayerArgs layer_args(const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                     const std::optional<at::Tensor>& scale, int64_t rows, const char* op) {
  LayerArgs a{weight.contiguous(), at::Tensor(), at::Tensor(), rows, 0};
  const int64_t n = a.w.numel();
  TORCH_CHECK(a.w.device().is_cpu(), op, ": a CPU tensor");
  TORCH_CHECK(n < (int64_t{1} << 40), op, ": a layer of 2^40 or more elements");
  TORCH_CHECK(rows > 0 && n % rows == 0, op, ": rows must divide the layer's size");
  a.cols = n / rows;
  if (mask.has_value() && mask->defined()) {
    a.m = mask->contiguous();
    TORCH_CHECK(a.m.scalar_type() == at::kBool && a.m.numel() == n, op, ": a bool mask of the layer's size");
  }
  if (scale.has_value() && scale->defined()) {
    check_scaled_layer(a.w, *scale, op);
    a.s = *scale;
  }
  return a;
}

// The layer's rows in chunks of about 2^15 elements or more (a row is never split).
int64_t row_chunks(const LayerArgs& a, int workers) {
  return std::min(a.rows, chunk_count(a.rows * a.cols, workers, 1 << 15));
}

// fn(task, worker, r0, r1) over the chunks of rows, in parallel (row_chunks(a, workers) tasks).
template <typename Fn>
void for_row_chunks(const LayerArgs& a, int workers, Fn fn) {
  const int64_t chunks = row_chunks(a, workers);
  parallel_tasks(chunks, workers, [&](int64_t t, int worker) {
    int64_t r0, r1;
    chunk_range(a.rows, chunks, t, r0, r1);
    fn(t, worker, r0, r1);
  });
}

template <typename Fn>
void dispatch(const LayerArgs& a, Fn fn) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.w.scalar_type(), "balanced_rows", [&] {
    fn(a.w.data_ptr<scalar_t>(), a.s.defined() ? a.s.data_ptr<float>() : nullptr,
       a.m.defined() ? a.m.data_ptr<bool>() : nullptr);
  });
}

inline uint64_t bits_of(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

}  // namespace

namespace {

// One row's cut (the p-th smallest alive key, p = max(count - masked, 1); +inf without alive keys) and its
// smallest positive alive key (+inf if none), as exact doubles, on the keys' own bit patterns (Keys<T>):
// select_in_bucket, as cut_unit does.
template <typename T>
double row_cut(const T* x, const bool* m, int64_t n, int64_t count, double& smallest_positive,
               std::vector<typename Keys<T>::key_t>& bucket) {
  using K = Keys<T>;
  using key_t = typename K::key_t;
  constexpr int shift = select_shift<T>();
  constexpr double inf = std::numeric_limits<double>::infinity();
  int64_t hist[1 << kSelectBits] = {};
  int64_t alive = 0;
  key_t least_positive = std::numeric_limits<key_t>::max();
  for (int64_t i = 0; i < n; ++i) {
    if (m && !m[i]) continue;
    const key_t k = K::key(x[i]);
    ++hist[k >> shift];
    ++alive;
    if (k && k < least_positive) least_positive = k;
  }
  smallest_positive = least_positive == std::numeric_limits<key_t>::max() ? inf : key_value(K::code, least_positive);
  if (alive == 0) return inf;
  const int64_t p = std::clamp<int64_t>(count - (n - alive), 1, alive);
  int64_t below;
  return key_value(K::code, bucket[select_in_bucket(x, m, n, p, hist, bucket, below)]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> row_cuts(const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                                            const std::optional<at::Tensor>& scale, int64_t rows,
                                            const at::Tensor& counts) {
  const LayerArgs a = layer_args(weight, mask, scale, rows, "row_cuts");
  const at::Tensor c = counts.to(at::kLong).contiguous();
  TORCH_CHECK(c.numel() == rows, "row_cuts: one count per row");
  at::Tensor cut = at::empty({rows}, at::kDouble), positive = at::empty({rows}, at::kDouble);
  double* cut_out = cut.data_ptr<double>();
  double* pos_out = positive.data_ptr<double>();
  const int64_t* count = c.data_ptr<int64_t>();
  dispatch(a, [&](const auto* x, const float* s, const bool* m) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
    for_row_chunks(a, max_workers(), [&](int64_t, int, int64_t r0, int64_t r1) {
      // the task's own buffers (freed when it ends: no thread keeps memory in proportion to a long row)
      std::vector<float> keys;
      std::vector<uint32_t> scaled_bucket;
      std::vector<typename Keys<scalar_t>::key_t> bucket;
      for (int64_t r = r0; r < r1; ++r) {
        const bool* mr = m ? m + r * a.cols : nullptr;
        if (s) {  // the row's column-scaled importances, then cut as float32 keys
          keys.resize(static_cast<size_t>(a.cols));
          ScaledLayer<scalar_t>{x, s, a.w.size(-1)}.fill(r * a.cols, a.cols, keys.data());
          cut_out[r] = row_cut(keys.data(), mr, a.cols, count[r], pos_out[r], scaled_bucket);
        } else {
          cut_out[r] = row_cut(x + r * a.cols, mr, a.cols, count[r], pos_out[r], bucket);
        }
      }
    });
  });
  return {cut, positive};
}

at::Tensor balanced_cut_mask(const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                             const std::optional<at::Tensor>& scale, int64_t rows, const at::Tensor& factors,
                             int64_t prune) {
  const LayerArgs a = layer_args(weight, mask, scale, rows, "balanced_cut_mask");
  const at::Tensor f = factors.to(at::kDouble).contiguous();
  TORCH_CHECK(f.numel() == rows, "balanced_cut_mask: one factor per row");
  const double* factor = f.data_ptr<double>();
  const int64_t n = a.rows * a.cols;
  const int64_t masked = a.m.defined() ? n - a.m.count_nonzero().item<int64_t>() : 0;
  TORCH_CHECK(prune >= masked && prune <= n, "balanced_cut_mask: prune must lie in [masked, numel]");
  at::Tensor keep = a.m.defined() ? a.m.clone() : at::ones({n}, at::kBool);
  keep = keep.reshape(a.w.sizes());
  const int64_t need_total = prune - masked;  // alive weights to prune
  if (need_total == 0) return keep;
  bool* out = keep.data_ptr<bool>();
  const int workers = max_workers();
  // The need_total-th alive element in the order (bits, flat index): (value, flat) once found.
  uint64_t prefix = 0;  // the bits above `shift` that the candidates share
  int shift = 64;       // candidates: alive elements whose bits >> shift == prefix >> shift (all at 64)
  int64_t need = need_total;  // rank among the candidates (1-based)
  uint64_t value = 0;
  int64_t flat = -1;
  dispatch(a, [&](const auto* x, const float* s, const bool* m) {
    auto is_candidate = [&](uint64_t b) { return shift == 64 || (b >> shift) == (prefix >> shift); };
    while (flat < 0) {
      // a histogram of the candidates' next 16 bits (the first round: all alive elements' top 16)
      std::vector<std::vector<int64_t>> hist(static_cast<size_t>(workers));
      const int next = shift - 16;
      for_row_chunks(a, workers, [&](int64_t, int worker, int64_t r0, int64_t r1) {
        auto& h = hist[worker];
        if (h.empty()) h.assign(1 << 16, 0);
        for_row_keys(a, x, s, r0, r1, [&](int64_t r, int64_t j0, int64_t len, const double* keys) {
          for (int64_t k = 0; k < len; ++k) {
            const int64_t j = j0 + k;
            if (m && !m[r * a.cols + j]) continue;
            const uint64_t b = bits_of(keys[k] * factor[r]);
            if (is_candidate(b)) ++h[(b >> next) & 0xFFFF];
          }
        });
      });
      int64_t below = 0;
      std::vector<int64_t> total(1 << 16, 0);
      for (auto& h : hist)
        for (size_t k = 0; k < h.size(); ++k) total[k] += h[k];
      int bucket = 0;
      while (bucket < (1 << 16) && below + total[bucket] < need) below += total[bucket++];
      TORCH_CHECK(bucket < (1 << 16), kRecomputed);
      need -= below;
      prefix = (prefix & (next + 16 == 64 ? 0 : ~uint64_t{0} << (next + 16))) | (static_cast<uint64_t>(bucket) << next);
      shift = next;
      if (total[bucket] > kFewCandidates && shift > 0) continue;
      // The candidates left: few, so sorted with their flat index; or (all 64 bits fixed) all equal, so the
      // need-th in flat order, found from per-chunk counts and a scan of its chunk.
      const bool few = total[bucket] <= kFewCandidates;
      const int64_t chunks = row_chunks(a, workers);
      std::vector<std::vector<std::pair<uint64_t, int64_t>>> found(static_cast<size_t>(chunks));
      std::vector<int64_t> equal_in_chunk(static_cast<size_t>(chunks), 0);
      auto scan = [&](int64_t t, int64_t r0, int64_t r1, bool find) {
        for_row_keys(a, x, s, r0, r1, [&](int64_t r, int64_t j0, int64_t len, const double* keys) {
          for (int64_t k = 0; k < len && flat < 0; ++k) {
            const int64_t j = j0 + k;
            if (m && !m[r * a.cols + j]) continue;
            const uint64_t b = bits_of(keys[k] * factor[r]);
            if ((b >> shift) != (prefix >> shift)) continue;
            if (few)
              found[t].emplace_back(b, r * a.cols + j);
            else if (!find)
              ++equal_in_chunk[t];
            else if (--need == 0)
              flat = r * a.cols + j;
          }
        });
      };
      for_row_chunks(a, workers, [&](int64_t t, int, int64_t r0, int64_t r1) { scan(t, r0, r1, false); });
      if (few) {
        std::vector<std::pair<uint64_t, int64_t>> all;
        for (auto& v : found) all.insert(all.end(), v.begin(), v.end());
        // Each pass recomputes the keys; they only differ from the histogram's if threads round differently
        // (flush-to-zero set on some threads only): an error, never a read out of range.
        TORCH_CHECK(need >= 1 && need <= static_cast<int64_t>(all.size()), kRecomputed);
        std::nth_element(all.begin(), all.begin() + (need - 1), all.end());
        value = all[static_cast<size_t>(need - 1)].first;
        flat = all[static_cast<size_t>(need - 1)].second;
      } else {
        value = prefix;
        int64_t t = 0;
        while (t < chunks && need > equal_in_chunk[t]) need -= equal_in_chunk[t++];
        TORCH_CHECK(t < chunks, kRecomputed);
        int64_t r0, r1;
        chunk_range(a.rows, chunks, t, r0, r1);
        scan(t, r0, r1, true);
        TORCH_CHECK(flat >= 0, kRecomputed);
      }
    }
    // prune every alive element ordered at or before (value, flat)
    for_row_chunks(a, workers, [&](int64_t, int, int64_t r0, int64_t r1) {
      for_row_keys(a, x, s, r0, r1, [&](int64_t r, int64_t j0, int64_t len, const double* keys) {
        for (int64_t k = 0; k < len; ++k) {
          const int64_t u = r * a.cols + j0 + k;
          if (m && !m[u]) continue;
          const uint64_t b = bits_of(keys[k] * factor[r]);
          if (b < value || (b == value && u <= flat)) out[u] = false;
        }
      });
    });
  });
  return keep;
}

}  // namespace lamp
