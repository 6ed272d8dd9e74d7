// Sparse per-layer summaries of many layers in one call (the CPU kernel of lamp_kernels::bin_summaries).
//
// A layer's summary lists only its nonempty bins: (bin, alive count, exact limb sums of M^2), bins
// ascending. Memory and time are proportional to the layer's size, never to the 2^15/2^16 bins of the
// dtype: a layer of 9 weights costs 9 entries. Large layers are histogrammed densely (bin_summary, one pass,
// tasks over chunks) and compacted; small ones are sorted by key and run-length encoded, a layer per task
// (task_pool.h). Both give the same entries as the dense histogram (tested against kernels_torch).
//
// Output (one dtype per call): offsets int64[L + 1] (layer i owns entries [offsets[i], offsets[i+1])),
// bins int64[E], counts int64[E], sums int64[E, limbs].
#include "summaries.h"

#include <algorithm>
#include <vector>

#include "float_keys.h"
#include "layer_kernels.h"
#include "task_pool.h"

namespace lamp {

namespace {

// Layers up to this size are summarised by sorting their keys: cheaper than a dense histogram over
// 2^15..2^16 bins, and proportional to the layer.
constexpr int64_t kSmallLayer = 1 << 12;

struct Entries {
  std::vector<int64_t> bins, counts, sums;  // sums: limbs per entry
};

template <typename scalar_t>
void small_summary(const at::Tensor& w, const at::Tensor& mask, Entries& out) {
  using K = Keys<scalar_t>;
  const int code = K::code, shift = bin_shift(code), limbs = num_limbs(code);
  const int64_t n = w.numel();
  const scalar_t* x = w.data_ptr<scalar_t>();
  const bool* m = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  std::vector<uint64_t> keys;
  keys.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (!m || m[i]) keys.push_back(K::key(x[i]));
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

void dense_summary(const at::Tensor& w, const at::Tensor& mask, Entries& out) {
  const auto [counts, sums] = bin_summary(w, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt);
  const int64_t* c = counts.data_ptr<int64_t>();
  const int64_t* s = sums.data_ptr<int64_t>();
  const int64_t bins = counts.numel(), limbs = sums.size(1);
  for (int64_t b = 0; b < bins; ++b) {
    if (!c[b]) continue;
    out.bins.push_back(b);
    out.counts.push_back(c[b]);
    out.sums.insert(out.sums.end(), s + b * limbs, s + (b + 1) * limbs);
  }
}

void summarize(const at::Tensor& w, const at::Tensor& mask, Entries& out) {
  if (w.numel() > kSmallLayer) return dense_summary(w, mask, out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "bin_summaries",
                                  [&] { small_summary<scalar_t>(w, mask, out); });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks) {
  const int64_t L = static_cast<int64_t>(weights.size());
  TORCH_CHECK(masks.size() == weights.size(), "bin_summaries: one mask (or None) per layer");
  std::vector<at::Tensor> ws(L), ms(L);
  int limbs = 0;
  for (int64_t i = 0; i < L; ++i) {
    ws[i] = weights[i].contiguous();
    ms[i] = masks[i].has_value() && masks[i]->defined() ? masks[i]->contiguous() : at::Tensor();
    TORCH_CHECK(ws[i].scalar_type() == ws[0].scalar_type(), "bin_summaries: one dtype per call");
  }
  if (L) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[0].scalar_type(), "bin_summaries",
                                    [&] { limbs = num_limbs(Keys<scalar_t>::code); });
  }
  std::vector<Entries> parts(L);
  std::vector<int64_t> small;
  for (int64_t i = 0; i < L; ++i) {
    if (ws[i].numel() > kSmallLayer)
      summarize(ws[i], ms[i], parts[i]);  // threads inside the layer
    else
      small.push_back(i);
  }
  parallel_tasks(static_cast<int64_t>(small.size()), max_workers(),
                 [&](int64_t j, int) { summarize(ws[small[j]], ms[small[j]], parts[small[j]]); });
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
  return {offsets, bins, counts, sums};
}

}  // namespace lamp
