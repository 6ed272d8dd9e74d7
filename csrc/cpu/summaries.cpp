// Sparse per-layer summaries of many layers in one call (the CPU kernel of lamp_kernels::bin_summaries).
//
// A layer's summary lists only its nonempty bins: (bin, alive count, exact limb sums of M^2), bins
// ascending. Memory and time are proportional to the layer's size, never to the 2^15/2^16 bins of the
// dtype: a layer of 9 weights costs 9 entries. Large layers are histogrammed densely (add_to_histogram; one pass,
// tasks over the chunks of several layers at once) and compacted; small ones are sorted by key and run-length encoded, a layer per task
// (task_pool.h). Both give the same entries as the dense histogram (tested against kernels_torch).
//
// Output (one dtype per call): offsets int64[L + 1] (layer i owns entries [offsets[i], offsets[i+1])),
// bins int64[E], counts int64[E], sums int64[E, limbs].
#include "summaries.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "float_keys.h"
#include "task_pool.h"

namespace lamp {

namespace {

// Layers up to this size are summarised by sorting their keys: cheaper than a dense histogram over
// 2^15..2^16 bins, and proportional to the layer.
constexpr int64_t kSmallLayer = 1 << 12;
constexpr int64_t kGrain = 1 << 16;  // elements per chunk of a large layer, at least

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

// Adds elements [b, e) of one layer into h: per bin (key >> shift) `1 + limbs` int64 slots, the alive count
// and the 27-bit limb sums of M^2 (fp32/fp64). Sums are exact integers, so any split of a layer into ranges,
// added in any order, gives the same totals.
template <typename scalar_t>
inline void add_to_histogram(const scalar_t* x, const bool* m, int64_t b, int64_t e, int64_t* h) {
  using K = Keys<scalar_t>;
  constexpr int code = K::code;
  const int limbs = num_limbs(code), shift = bin_shift(code), stride = 1 + limbs;
  auto add = [&](int64_t i) {
    const uint64_t k = K::key(x[i]);
    int64_t* slot = h + static_cast<size_t>(k >> shift) * stride;
    ++slot[0];
    if (limbs) add_square_limbs(code, k, slot + 1);
  };
  if (m) {  // two loops, so the unmasked one carries no per-element test
    for (int64_t i = b; i < e; ++i)
      if (m[i]) add(i);
  } else {
    for (int64_t i = b; i < e; ++i) add(i);
  }
}

// Dense histograms of large layers, a group of layers at a time (their totals within kGroupBytes: 64 bf16/fp16
// layers, 10 fp32, 6 fp64), all their chunks one list of tasks (one
// parallel region per group, not per layer: a region shorter than a scheduler time slice gets little help
// from a thread whose core another process is using). Each worker adds its chunks into its own histogram and,
// when its next task belongs to another layer, flushes it into that layer's total (under the layer's lock):
// tasks are claimed in order, so a worker flushes at most once per layer it touched.
constexpr size_t kGroupBytes = size_t{16} << 20;

template <typename scalar_t>
void dense_summaries(const std::vector<at::Tensor>& ws, const std::vector<at::Tensor>& ms,
                     const std::vector<int64_t>& large, std::vector<Entries>& parts) {
  const int code = Keys<scalar_t>::code, limbs = num_limbs(code);
  const size_t stride = 1 + limbs, size = static_cast<size_t>(num_bins(code)) * stride;
  const int workers = max_workers();
  const size_t group = std::max<size_t>(1, kGroupBytes / (size * sizeof(int64_t)));
  for (size_t g0 = 0; g0 < large.size(); g0 += group) {
    const size_t G = std::min(group, large.size() - g0);
    std::vector<int64_t> first(G + 1, 0), chunks(G);
    for (size_t j = 0; j < G; ++j) {
      chunks[j] = chunk_count(ws[large[g0 + j]].numel(), workers, kGrain);
      first[j + 1] = first[j] + chunks[j];
    }
    std::vector<std::vector<int64_t>> total(G, std::vector<int64_t>(size, 0));
    std::unique_ptr<std::mutex[]> locks(new std::mutex[G]);
    struct Local {
      int64_t layer = -1;
      std::vector<int64_t> h;
    };
    std::vector<Local> local(static_cast<size_t>(workers));
    auto flush = [&](Local& mine) {
      if (mine.layer < 0) return;
      {
        std::lock_guard<std::mutex> lock(locks[mine.layer]);
        int64_t* t = total[mine.layer].data();
        for (size_t k = 0; k < size; ++k) t[k] += mine.h[k];
      }
      std::fill(mine.h.begin(), mine.h.end(), 0);
      mine.layer = -1;
    };
    parallel_tasks(first[G], workers, [&](int64_t t, int worker) {
      const int64_t j = std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1;
      Local& mine = local[worker];
      if (mine.layer != j) {
        flush(mine);
        if (mine.h.empty()) mine.h.assign(size, 0);
        mine.layer = j;
      }
      const at::Tensor& w = ws[large[g0 + j]];
      const at::Tensor& m = ms[large[g0 + j]];
      int64_t b, e;
      chunk_range(w.numel(), chunks[j], t - first[j], b, e);
      add_to_histogram(w.data_ptr<scalar_t>(), m.defined() ? m.data_ptr<bool>() : nullptr, b, e, mine.h.data());
    });
    for (Local& mine : local) flush(mine);
    for (size_t j = 0; j < G; ++j) {  // compact: the nonempty bins, ascending
      const int64_t* h = total[j].data();
      Entries& out = parts[large[g0 + j]];
      for (size_t bin = 0; bin < size / stride; ++bin) {
        const int64_t* slot = h + bin * stride;
        if (!slot[0]) continue;
        out.bins.push_back(static_cast<int64_t>(bin));
        out.counts.push_back(slot[0]);
        out.sums.insert(out.sums.end(), slot + 1, slot + stride);
      }
    }
  }
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
  std::vector<int64_t> small, large;
  for (int64_t i = 0; i < L; ++i) (ws[i].numel() > kSmallLayer ? large : small).push_back(i);
  if (L) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[0].scalar_type(), "bin_summaries", [&] {
      dense_summaries<scalar_t>(ws, ms, large, parts);
      parallel_tasks(static_cast<int64_t>(small.size()), max_workers(),
                     [&](int64_t j, int) { small_summary<scalar_t>(ws[small[j]], ms[small[j]], parts[small[j]]); });
    });
  }
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
