// Per-layer CPU kernels. Each has a pure-torch twin in lamp_kernels/kernels_torch.py with the same outputs.
//
//   bin_summary(w, mask)              -> counts[B] (alive elements per bin), sums[B, L] (27-bit limbs of sum M^2)
//   gather_bin_keys(w, mask, lo, hi)  -> sorted keys of the alive elements whose bin lies in [lo, hi]
//   apply_cut(w, mask, cut_key, ties) -> keep mask: alive and (key > cut_key, or key == cut_key and among the
//                                        equal keys at least `ties` precede it in flat order)
//   zero_cut_(w, mask, cut_key, ties) -> the same decision, applied in place: pruned (and masked-out) weights := 0
//   gather_bin_keys_many, apply_cuts, zero_cuts_ -> the same over many layers, all their chunks one list of tasks
//   masked_copy_(out, src, keep)      -> out := src where keep, +0 elsewhere (a mask applied as a weight is written)
// (lamp_scores lives in scores_cpu.cpp.) Each pass is cut into chunks run as tasks on the task pool (task_pool.h).
#include "layer_kernels.h"

#include <algorithm>
#include <array>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "float_keys.h"
#include "huge_pages.h"
#include "radix_sort.h"
#include "scaled_keys.h"
#include "summaries.h"
#include "task_pool.h"
#include "vector_clones.h"

namespace lamp {

namespace {

constexpr int64_t kGrain = 1 << 16;

at::Tensor contiguous_mask(const std::optional<at::Tensor>& mask) {
  return mask.has_value() && mask->defined() ? mask->contiguous() : at::Tensor();
}

// Appends to `out` the keys (|x| bit patterns) of the alive elements whose bin (key >> shift) lies in
// [lo, lo + width], in index order. Candidate bins hold few elements, so a branch-free, vectorisable scan of each
// block finds whether it holds any, and only such blocks are walked element by element (bins are < 2^16, so
// the range test is one unsigned 32-bit comparison). Compiled for AVX2 and the baseline (vector_clones.h).

// With `positions`, also appends base + i for each key found (the element's flat index in its layer).
template <typename bits_t>
inline void gather_bits(const bits_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                        std::vector<int64_t>& out, std::vector<int64_t>* positions = nullptr, int64_t base = 0) {
  // Every bit but the sign (numeric_limits, not ~bits_t{0}: that promotes to int, and -1 >> 1 keeps the sign).
  constexpr bits_t kMagnitude = static_cast<bits_t>(std::numeric_limits<bits_t>::max() >> 1);
  constexpr int64_t kBlock = 64;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    uint32_t hits = 0;
    for (int64_t i = i0; i < i1; ++i)
      hits += static_cast<uint32_t>(static_cast<uint32_t>((x[i] & kMagnitude) >> shift) - lo <= width);
    if (!hits) continue;
    for (int64_t i = i0; i < i1; ++i) {
      const bits_t k = x[i] & kMagnitude;
      if ((!m || m[i]) && static_cast<uint32_t>(k >> shift) - lo <= width) {
        out.push_back(static_cast<int64_t>(k));
        if (positions) positions->push_back(base + i);
      }
    }
  }
}

LAMP_VECTOR_CLONES void gather16(const uint16_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                                 std::vector<int64_t>& out, std::vector<int64_t>* positions = nullptr,
                                 int64_t base = 0) {
  gather_bits(x, m, n, shift, lo, width, out, positions, base);
}
LAMP_VECTOR_CLONES void gather32(const uint32_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                                 std::vector<int64_t>& out, std::vector<int64_t>* positions = nullptr,
                                 int64_t base = 0) {
  gather_bits(x, m, n, shift, lo, width, out, positions, base);
}
LAMP_VECTOR_CLONES void gather64(const uint64_t* x, const bool* m, int64_t n, int shift, uint32_t lo, uint32_t width,
                                 std::vector<int64_t>& out, std::vector<int64_t>* positions = nullptr,
                                 int64_t base = 0) {
  gather_bits(x, m, n, shift, lo, width, out, positions, base);
}

// Appends the keys of elements [0, n) of a block in bins [lo, lo + width], and with `positions` their flat
// indices (the block starting at flat index base).
template <typename scalar_t>
void gather_block(const scalar_t* x, const bool* m, int64_t n, uint32_t lo, uint32_t width, std::vector<int64_t>& keys,
                  std::vector<int64_t>* positions = nullptr, int64_t base = 0) {
  const int shift = bin_shift(Keys<scalar_t>::code);
  if constexpr (sizeof(scalar_t) == 2)
    gather16(reinterpret_cast<const uint16_t*>(x), m, n, shift, lo, width, keys, positions, base);
  else if constexpr (sizeof(scalar_t) == 4)
    gather32(reinterpret_cast<const uint32_t*>(x), m, n, shift, lo, width, keys, positions, base);
  else
    gather64(reinterpret_cast<const uint64_t*>(x), m, n, shift, lo, width, keys, positions, base);
}

// Per-task finds of a pass over many layers (layer i owns tasks [first[i], first[i + 1])), concatenated in task
// order: layer after layer. layer_offsets gives where each layer's finds start; concat_finds copies them into
// one int64 tensor, freeing each task's as it goes; sort_layers sorts each layer's part.
std::vector<int64_t> layer_offsets(const std::vector<int64_t>& first, const std::vector<std::vector<int64_t>>& found) {
  const size_t L = first.size() - 1;
  std::vector<int64_t> offset(L + 1, 0);
  for (size_t i = 0; i < L; ++i) {
    offset[i + 1] = offset[i];
    for (int64_t t = first[i]; t < first[i + 1]; ++t) offset[i + 1] += static_cast<int64_t>(found[t].size());
  }
  return offset;
}

at::Tensor concat_finds(std::vector<std::vector<int64_t>>& found, int64_t total) {
  at::Tensor out = at::empty({total}, at::kLong);
  int64_t* o = out.data_ptr<int64_t>();
  for (auto& f : found) {
    o = std::copy(f.begin(), f.end(), o);
    std::vector<int64_t>().swap(f);
  }
  return out;
}

// Keys of up to 31 bits (every dtype but fp64) in parts of more than kRadixKeys take the packed radix sort
// (radix_sort.h: the high digits that candidate keys share are skipped); others std::sort.
constexpr int64_t kRadixKeys = 256;

void sort_layers(at::Tensor& t, const std::vector<int64_t>& offset) {
  int64_t* o = t.data_ptr<int64_t>();
  parallel_tasks(static_cast<int64_t>(offset.size()) - 1, max_workers(), [&](int64_t i, int) {
    int64_t* b = o + offset[i];
    const int64_t n = offset[i + 1] - offset[i];
    if (n <= kRadixKeys || *std::max_element(b, b + n) >= (int64_t{1} << 31)) {
      std::sort(b, b + n);
      return;
    }
    std::vector<uint64_t> packed(n), scratch(n);
    for (int64_t j = 0; j < n; ++j) packed[j] = static_cast<uint64_t>(b[j]) << 32;
    const uint64_t* sorted = radix_sort_packed(packed.data(), scratch.data(), static_cast<size_t>(n), 31);
    for (int64_t j = 0; j < n; ++j) b[j] = static_cast<int64_t>(sorted[j] >> 32);
  });
}

// The cut pass: keep/prune for every element of many layers, in at most two parallel regions (one more
// only counts equal keys, when a cut falls inside a tie group), each layer cut into chunks, all chunks of all
// layers one list of tasks.
//
// keep = alive and (key > cut, or key == cut and at least `ties` equal alive keys precede it in flat order).
// The comparison is made in the key's own width, and blocks are branch-free loops the compiler vectorises:
// at a cut near the median, a branch on the comparison mispredicts on every other element (measured: 25x
// slower). Only the block where the running count of equal keys crosses `ties` is walked element by element;
// before it, equal keys are pruned (keep = key >= cut + 1), after it kept (key >= cut).
template <typename key_t>
struct KeyCut {
  key_t tie, lo_strict;  // the cut key (clamped), and the smallest key above it
  int64_t ties;          // 0 when no key can equal the cut

  KeyCut(int64_t cut_key, int64_t ties_in) {
    // Keys are magnitudes (sign bit clear), so top + 1 still fits key_t; in uint64_t, because for 64-bit
    // keys top + 1 = 2^63 overflows int64_t. A cut below 0 keeps every alive element, one above every key none.
    constexpr uint64_t top = std::numeric_limits<key_t>::max() >> 1;
    const uint64_t cut = cut_key < 0 ? 0 : static_cast<uint64_t>(cut_key);
    tie = static_cast<key_t>(std::min(cut, top + 1));
    lo_strict = static_cast<key_t>(cut_key < 0 ? 0 : std::min(cut, top) + 1);
    ties = cut_key < 0 || cut > top ? 0 : ties_in;
  }
};

// Masks written from keys: out[i] = alive and key >= lo, for the blocks of cut_range wholly before or after its
// tie-crossing block. A loop of its own per key width, compiled for AVX2 and the baseline (vector_clones.h),
// where the baseline emulates unsigned comparisons. Measured on 8 Llama MLP layers of fp32 importance, one
// thread, cut_and_gather (medians of 5 alternating runs, each the best of 11): 60.4 ms with 8192-element
// candidate blocks, 56.3 ms with 2048 (cut_layers), 51.0 ms with this loop too.
template <typename bits_t>
inline void keep_at_least_impl(const bits_t* x, const bool* m, int64_t n, bits_t lo, bool* out) {
  constexpr bits_t kMagnitude = static_cast<bits_t>(std::numeric_limits<bits_t>::max() >> 1);
  if (m) {
    for (int64_t i = 0; i < n; ++i) out[i] = m[i] & (static_cast<bits_t>(x[i] & kMagnitude) >= lo);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<bits_t>(x[i] & kMagnitude) >= lo;
  }
}
LAMP_VECTOR_CLONES void keep_at_least(const uint16_t* x, const bool* m, int64_t n, uint16_t lo, bool* out) {
  keep_at_least_impl(x, m, n, lo, out);
}
LAMP_VECTOR_CLONES void keep_at_least(const uint32_t* x, const bool* m, int64_t n, uint32_t lo, bool* out) {
  keep_at_least_impl(x, m, n, lo, out);
}
LAMP_VECTOR_CLONES void keep_at_least(const uint64_t* x, const bool* m, int64_t n, uint64_t lo, bool* out) {
  keep_at_least_impl(x, m, n, lo, out);
}

// cut_range's sink when it writes a mask (out[i] = keep): its whole blocks go through keep_at_least.
struct MaskSink {
  bool* out;
  void operator()(int64_t i, bool keep) const { out[i] = keep; }
};

template <typename scalar_t>
int64_t count_equal(const scalar_t* x, const bool* m, int64_t b, int64_t e, typename Keys<scalar_t>::key_t tie) {
  using K = Keys<scalar_t>;
  int64_t cnt = 0;
  if (m) {
    for (int64_t i = b; i < e; ++i) cnt += m[i] & (K::key(x[i]) == tie);
  } else {
    for (int64_t i = b; i < e; ++i) cnt += K::key(x[i]) == tie;
  }
  return cnt;
}

// Elements [b, e) of one layer, `rank` equal alive keys before b; sink(i, keep) records each decision.
// Returns the rank after e (at least c.ties once every tie to prune is behind).
template <typename scalar_t, typename Sink>
int64_t cut_range(const scalar_t* x, const bool* m, int64_t b, int64_t e, const KeyCut<typename Keys<scalar_t>::key_t>& c,
               int64_t rank, Sink sink) {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  auto keep_from = [&](int64_t i0, int64_t i1, key_t lo) {  // branch-free
    if constexpr (std::is_same_v<Sink, MaskSink>) {
      keep_at_least(reinterpret_cast<const key_t*>(x) + i0, m ? m + i0 : nullptr, i1 - i0, lo, sink.out + i0);
    } else if (m) {
      for (int64_t i = i0; i < i1; ++i) sink(i, m[i] & (K::key(x[i]) >= lo));
    } else {
      for (int64_t i = i0; i < i1; ++i) sink(i, K::key(x[i]) >= lo);
    }
  };
  constexpr int64_t kBlock = 1024;
  for (int64_t i0 = b; i0 < e; i0 += kBlock) {
    const int64_t i1 = std::min(e, i0 + kBlock);
    if (rank >= c.ties) {  // every tie to prune is behind: keep key >= cut to the end
      keep_from(i0, e, c.tie);
      return rank;
    }
    const int64_t equal = count_equal(x, m, i0, i1, c.tie);
    if (rank + equal <= c.ties) {  // all of this block's equal keys are pruned
      keep_from(i0, i1, c.lo_strict);
      rank += equal;
      continue;
    }
    for (int64_t i = i0; i < i1; ++i) {  // the block where the count crosses `ties`
      const bool alive = !m || m[i];
      const key_t k = K::key(x[i]);
      sink(i, alive && (k > c.tie || (k == c.tie && rank++ >= c.ties)));
    }
  }
  return rank;
}

// Candidates to collect in the same pass as a cut: per layer, the alive elements whose bin lies in
// [bin_lo, bin_hi] (none when bin_lo > bin_hi); per task of cut_layers, their keys and flat indices in index
// order, so that concatenated in task order they are layer after layer, each in flat order.
struct Candidates {
  std::vector<int64_t> bin_lo, bin_hi;
  std::vector<std::vector<int64_t>> keys, positions;
  std::vector<int64_t> first;  // layer i's tasks are [first[i], first[i + 1]) (set by cut_layers)
};

// Cuts of many layers; out[i] == nullptr zeroes layer i in place (pruned and masked-out weights := +0, by an
// AND with all ones or all zeros: branch-free, and each element is written after its own key was read).
// With scales (one per layer), layer i's keys are its column-scaled importances (scaled_keys.h), cut as
// float32 keys a block at a time; only masks are made then (out[i] set). With `cand`, each block cut is
// also scanned for candidates while it is in L1 (masks only).
void cut_layers(const std::vector<at::Tensor>& ws, const std::vector<at::Tensor>& ms,
                const std::vector<int64_t>& cut_keys, const std::vector<int64_t>& ties, const std::vector<bool*>& out,
                const std::vector<at::Tensor>& scales = {}, Candidates* cand = nullptr) {
  const size_t L = ws.size();
  const int workers = max_workers();
  std::vector<int64_t> first(L + 1, 0);  // layer i owns tasks [first[i], first[i + 1]): its chunks
  std::vector<int64_t> chunks(L);
  for (size_t i = 0; i < L; ++i) {
    chunks[i] = ws[i].numel() ? chunk_count(ws[i].numel(), workers, kGrain) : 0;
    first[i + 1] = first[i] + chunks[i];
  }
  const int64_t tasks = first[L];
  if (cand) {
    cand->first = first;
    cand->keys.assign(static_cast<size_t>(tasks), {});
    cand->positions.assign(static_cast<size_t>(tasks), {});
  }
  // The candidate bins of layer i as (lo, width) for one unsigned comparison; none -> width < 0 as int.
  auto candidate_bins = [&](size_t i, uint32_t& lo, uint32_t& width) {
    if (!cand) return false;
    const int64_t a = std::max<int64_t>(cand->bin_lo[i], 0), z = std::min<int64_t>(cand->bin_hi[i], 0xFFFF);
    if (a > z) return false;
    lo = static_cast<uint32_t>(a);
    width = static_cast<uint32_t>(z - a);
    return true;
  };
  struct Chunk {
    size_t layer;
    int64_t b, e;  // elements [b, e) of the layer
  };
  auto chunk_of = [&](int64_t t) {
    Chunk ch{static_cast<size_t>(std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1), 0, 0};
    chunk_range(ws[ch.layer].numel(), chunks[ch.layer], t - first[ch.layer], ch.b, ch.e);
    return ch;
  };
  // fn(x, m, cut) on the layer's own keys, or scaled(layer, m, cut) on its importances.
  auto dispatch = [&](size_t i, auto fn, auto scaled) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[i].scalar_type(), "cut_layers", [&] {
      scalar_t* x = static_cast<scalar_t*>(ws[i].data_ptr());
      const bool* m = ms[i].defined() ? ms[i].data_ptr<bool>() : nullptr;
      if (scales.empty()) {
        fn(x, m, KeyCut<typename Keys<scalar_t>::key_t>(cut_keys[i], ties[i]));
      } else {
        scaled(ScaledLayer<scalar_t>{x, scales[i].data_ptr<float>(), ws[i].size(-1)}, m,
               KeyCut<uint32_t>(cut_keys[i], ties[i]));
      }
    });
  };
  // Equal keys at a cut are pruned in flat order: a chunk starts with rank = equal keys in the layer's
  // chunks before it.
  std::vector<int64_t> rank(tasks + 1, 0);
  bool any_ties = false;
  for (size_t i = 0; i < L; ++i) any_ties |= ties[i] > 0;
  if (any_ties) {
    parallel_tasks(tasks, workers, [&](int64_t t, int) {
      const Chunk ch = chunk_of(t);
      const int64_t b = ch.b, e = ch.e;
      dispatch(
          ch.layer,
          [&](auto* x, const bool* m, const auto& c) {
            if (c.ties > 0) rank[t + 1] = count_equal(x, m, b, e, c.tie);
          },
          [&](const auto& layer, const bool* m, const auto& c) {
            if (c.ties <= 0) return;
            int64_t equal = 0;
            for_key_blocks(layer, b, e, [&](const float* keys, int64_t i0, int64_t n) {
              equal += count_equal(keys, m ? m + i0 : nullptr, 0, n, c.tie);
            });
            rank[t + 1] = equal;
          });
    });
    for (size_t i = 0; i < L; ++i) {  // exclusive prefix sums within each layer
      int64_t acc = 0;
      for (int64_t t = first[i]; t < first[i + 1]; ++t) {
        const int64_t here = rank[t + 1];
        rank[t + 1] = 0;
        rank[t] = acc;
        acc += here;
      }
    }
  }
  parallel_tasks(tasks, workers, [&](int64_t t, int) {
    const Chunk ch = chunk_of(t);
    const size_t i = ch.layer;
    const int64_t b = ch.b, e = ch.e;
    dispatch(
        i,
        [&](auto* x, const bool* m, const auto& c) {
          using scalar_t = std::remove_pointer_t<decltype(x)>;
          using bits_t = typename Keys<scalar_t>::key_t;  // an unsigned integer as wide as scalar_t
          static_assert(sizeof(bits_t) == sizeof(scalar_t));
          uint32_t lo, width;
          if (bool* o = out[i]; o && candidate_bins(i, lo, width)) {
            constexpr int64_t kBlock = 2048;  // cut, then scanned for candidates while in L1
            int64_t r = rank[t];
            for (int64_t s0 = b; s0 < e; s0 += kBlock) {
              const int64_t s1 = std::min(e, s0 + kBlock);
              r = cut_range(x, m, s0, s1, c, r, MaskSink{o});
              gather_block(x + s0, m ? m + s0 : nullptr, s1 - s0, lo, width, cand->keys[t], &cand->positions[t], s0);
            }
          } else if (o) {
            cut_range(x, m, b, e, c, rank[t], MaskSink{o});
          } else {
            bits_t* bits = reinterpret_cast<bits_t*>(x);
            cut_range(x, m, b, e, c, rank[t],
                      [bits](int64_t j, bool keep) { bits[j] &= static_cast<bits_t>(-static_cast<bits_t>(keep)); });
          }
        },
        [&](const auto& layer, const bool* m, const auto& c) {
          int64_t r = rank[t];
          uint32_t lo, width;
          const bool collect = candidate_bins(i, lo, width);
          for_key_blocks(layer, b, e, [&](const float* keys, int64_t i0, int64_t n) {
            bool* o = out[i] + i0;
            const bool* mb = m ? m + i0 : nullptr;
            r = cut_range(keys, mb, 0, n, c, r, MaskSink{o});
            if (collect) gather_block(keys, mb, n, lo, width, cand->keys[t], &cand->positions[t], i0);
          });
        });
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> bin_summary(const at::Tensor& w, const std::optional<at::Tensor>& mask) {
  // The sparse summary of bin_summaries (summaries.cpp), spread over every bin.
  const auto [offsets, bins, counts, sums] = bin_summaries({w}, {mask});
  int bin_count = 0, limbs = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "bin_summary", [&] {
    bin_count = num_bins(Keys<scalar_t>::code);
    limbs = num_limbs(Keys<scalar_t>::code);
  });
  at::Tensor dense_counts = at::empty({bin_count}, at::kLong), dense_sums = at::empty({bin_count, limbs}, at::kLong);
  int64_t* c = dense_counts.data_ptr<int64_t>();
  int64_t* d = dense_sums.data_ptr<int64_t>();
  std::fill(c, c + bin_count, 0);  // not at::zeros: that would wake torch's OpenMP threads
  std::fill(d, d + static_cast<size_t>(bin_count) * limbs, 0);
  const int64_t* b = bins.data_ptr<int64_t>();
  for (int64_t e = 0; e < bins.numel(); ++e) {
    c[b[e]] = counts.data_ptr<int64_t>()[e];
    std::copy_n(sums.data_ptr<int64_t>() + e * limbs, limbs, d + b[e] * limbs);
  }
  return {dense_counts, dense_sums};
}

namespace {

// The gather over many layers; with scales, of their column-scaled importances (float32 keys).
at::Tensor gather_layers(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                         const std::vector<int64_t>& bin_lo, const std::vector<int64_t>& bin_hi,
                         const std::vector<at::Tensor>& scales) {
  const size_t L = weights.size();
  TORCH_CHECK(masks.size() == L && bin_lo.size() == L && bin_hi.size() == L, "gather_bin_keys: one entry per layer");
  std::vector<at::Tensor> ws(L), ms(L);
  const int workers = max_workers();
  std::vector<int64_t> first(L + 1, 0), chunks(L, 0);  // layer i owns tasks [first[i], first[i + 1])
  for (size_t i = 0; i < L; ++i) {
    ws[i] = weights[i].contiguous();
    ms[i] = contiguous_mask(masks[i]);
    TORCH_CHECK(!ms[i].defined() || (ms[i].scalar_type() == at::kBool && ms[i].numel() == ws[i].numel()),
                "gather_bin_keys: a mask must be bool with one entry per weight");
    if (!scales.empty()) check_scaled_layer(ws[i], scales[i], "gather_bin_keys_scaled");
    // Bins are in [0, 2^16): the range clamped to it fits 32-bit arithmetic; an empty range reads nothing.
    const bool any = std::min<int64_t>(bin_hi[i], 0xFFFF) >= std::max<int64_t>(bin_lo[i], 0);
    chunks[i] = any && ws[i].numel() ? chunk_count(ws[i].numel(), workers, kGrain) : 0;
    first[i + 1] = first[i] + chunks[i];
  }
  // One region over every chunk of every layer; each task keeps its own finds, so that concatenated in task
  // order they are layer after layer.
  std::vector<std::vector<int64_t>> found(static_cast<size_t>(first[L]));
  parallel_tasks(first[L], workers, [&](int64_t t, int) {
    const size_t i = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1);
    int64_t b, e;
    chunk_range(ws[i].numel(), chunks[i], t - first[i], b, e);
    const bool* m = ms[i].defined() ? ms[i].data_ptr<bool>() : nullptr;
    const int64_t lo = std::max<int64_t>(bin_lo[i], 0), hi = std::min<int64_t>(bin_hi[i], 0xFFFF);
    const uint32_t lo32 = static_cast<uint32_t>(lo), width = static_cast<uint32_t>(hi - lo);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ws[i].scalar_type(), "gather_bin_keys", [&] {
      const scalar_t* x = ws[i].data_ptr<scalar_t>();
      if (!scales.empty()) {
        const ScaledLayer<scalar_t> layer{x, scales[i].data_ptr<float>(), ws[i].size(-1)};
        for_key_blocks(layer, b, e, [&](const float* keys, int64_t i0, int64_t n) {
          gather_block(keys, m ? m + i0 : nullptr, n, lo32, width, found[t]);
        });
        return;
      }
      gather_block(x + b, m ? m + b : nullptr, e - b, lo32, width, found[t]);
    });
  });
  const std::vector<int64_t> offset = layer_offsets(first, found);
  at::Tensor out = concat_finds(found, offset[L]);
  sort_layers(out, offset);  // each layer's keys ascending
  return out;
}

}  // namespace

at::Tensor gather_bin_keys_many(const std::vector<at::Tensor>& weights,
                                const std::vector<std::optional<at::Tensor>>& masks, const std::vector<int64_t>& bin_lo,
                                const std::vector<int64_t>& bin_hi) {
  return gather_layers(weights, masks, bin_lo, bin_hi, {});
}

at::Tensor gather_bin_keys_scaled(const std::vector<at::Tensor>& weights,
                                  const std::vector<std::optional<at::Tensor>>& masks,
                                  const std::vector<at::Tensor>& scales, const std::vector<int64_t>& bin_lo,
                                  const std::vector<int64_t>& bin_hi) {
  TORCH_CHECK(scales.size() == weights.size(), "gather_bin_keys_scaled: one scale per layer");
  return gather_layers(weights, masks, bin_lo, bin_hi, scales);
}

at::Tensor gather_bin_keys(const at::Tensor& w, const std::optional<at::Tensor>& mask, int64_t bin_lo,
                           int64_t bin_hi) {
  return gather_bin_keys_many({w}, {mask}, {bin_lo}, {bin_hi});
}

// Every argument checked before any layer is read or written (a failure inside the parallel region would
// leave some layers zeroed and others not).
static void check_cut_inputs(const std::vector<at::Tensor>& weights,
                             const std::vector<std::optional<at::Tensor>>& masks, const char* op) {
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::ScalarType t = weights[i].scalar_type();
    TORCH_CHECK(t == at::kBFloat16 || t == at::kHalf || t == at::kFloat || t == at::kDouble, op,
                ": weights must be bfloat16, float16, float32 or float64");
    if (masks[i].has_value() && masks[i]->defined())
      TORCH_CHECK(masks[i]->scalar_type() == at::kBool && masks[i]->numel() == weights[i].numel(), op,
                  ": a mask must be bool with one entry per weight");
  }
}

namespace {

std::vector<at::Tensor> masks_from_cuts(const std::vector<at::Tensor>& weights,
                                        const std::vector<std::optional<at::Tensor>>& masks,
                                        const std::vector<int64_t>& cut_keys, const std::vector<int64_t>& ties,
                                        const std::vector<at::Tensor>& scales, const char* op,
                                        Candidates* cand = nullptr) {
  const size_t L = weights.size();
  TORCH_CHECK(masks.size() == L && cut_keys.size() == L && ties.size() == L, op, ": one entry per layer");
  std::vector<at::Tensor> ws(L), ms(L), outs(L);
  std::vector<bool*> out(L);
  check_cut_inputs(weights, masks, op);
  for (size_t i = 0; i < L; ++i) {
    ws[i] = weights[i].contiguous();
    if (!scales.empty()) check_scaled_layer(ws[i], scales[i], op);
  }
  for (size_t i = 0; i < L; ++i) {
    ms[i] = contiguous_mask(masks[i]);
    outs[i] = at::empty(ws[i].sizes(), ws[i].options().dtype(at::kBool));
    advise_huge_pages(outs[i].data_ptr(), outs[i].nbytes());
    out[i] = outs[i].data_ptr<bool>();
  }
  cut_layers(ws, ms, cut_keys, ties, out, scales, cand);
  return outs;
}

}  // namespace

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor> cut_and_gather(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
    const std::vector<at::Tensor>& scales, const std::vector<int64_t>& bin_lo, const std::vector<int64_t>& bin_hi,
    const std::vector<int64_t>& sizes) {
  const size_t L = weights.size();
  TORCH_CHECK(masks.size() == L && bin_lo.size() == L && bin_hi.size() == L && sizes.size() == L &&
                  (scales.empty() || scales.size() == L),
              "cut_and_gather: one entry per layer (and one scale per layer, or none)");
  std::vector<int64_t> cut_keys(L), ties(L, 0);
  for (size_t i = 0; i < L; ++i) {
    TORCH_CHECK(0 <= bin_lo[i] && bin_lo[i] <= bin_hi[i] && bin_hi[i] <= 0xFFFF,
                "cut_and_gather: each layer needs candidate bins 0 <= bin_lo <= bin_hi < 2^16");
    const at::ScalarType t = scales.empty() ? weights[i].scalar_type() : at::kFloat;  // the keys' dtype
    const int shift = bin_shift(t == at::kFloat ? kF32 : t == at::kDouble ? kF64 : kBF16);
    // The provisional cut (ties 0: keep key >= cut) keeps every key above the candidate bins, from
    // (bin_hi + 1) << shift; that is 2^63 for the last fp64 bin, above every key, so 2^63 - 1 (a NaN pattern,
    // in the candidate bins if present at all, so decided by fix_cuts_) stands for it.
    cut_keys[i] = static_cast<int64_t>(
        std::min<uint64_t>((static_cast<uint64_t>(bin_hi[i]) + 1) << shift, std::numeric_limits<int64_t>::max()));
  }
  Candidates cand{bin_lo, bin_hi, {}, {}, {}};
  std::vector<at::Tensor> outs = masks_from_cuts(weights, masks, cut_keys, ties, scales, "cut_and_gather", &cand);
  const std::vector<int64_t> offset = layer_offsets(cand.first, cand.keys);
  for (size_t i = 0; i < L; ++i)
    TORCH_CHECK(offset[i + 1] - offset[i] == sizes[i], "cut_and_gather: the sizes do not match the layers' keys");
  at::Tensor flat = concat_finds(cand.keys, offset[L]), positions = concat_finds(cand.positions, offset[L]);
  at::Tensor sorted = flat.clone();
  sort_layers(sorted, offset);  // each layer's keys ascending, for the solver
  return {outs, sorted, flat, positions};
}

void fix_cuts_(const std::vector<at::Tensor>& masks, const at::Tensor& keys, const at::Tensor& positions,
               const std::vector<int64_t>& sizes, const std::vector<int64_t>& cut_keys,
               const std::vector<int64_t>& ties) {
  const size_t L = masks.size();
  TORCH_CHECK(sizes.size() == L && cut_keys.size() == L && ties.size() == L, "fix_cuts_: one entry per layer");
  TORCH_CHECK(keys.scalar_type() == at::kLong && positions.scalar_type() == at::kLong && keys.is_contiguous() &&
                  positions.is_contiguous() && keys.numel() == positions.numel(),
              "fix_cuts_: keys and positions must be contiguous int64 tensors of one size");
  std::vector<int64_t> offset(L + 1, 0);
  for (size_t i = 0; i < L; ++i) offset[i + 1] = offset[i] + sizes[i];
  TORCH_CHECK(offset[L] == keys.numel(), "fix_cuts_: the sizes do not match the candidates");
  const int64_t* k = keys.data_ptr<int64_t>();
  const int64_t* p = positions.data_ptr<int64_t>();
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;  // masks are written in parallel: none may share memory
  for (size_t i = 0; i < L; ++i) {  // every argument checked before any mask is written
    TORCH_CHECK(masks[i].scalar_type() == at::kBool && masks[i].is_contiguous(),
                "fix_cuts_: masks must be contiguous bool tensors");
    const auto begin = reinterpret_cast<uintptr_t>(masks[i].data_ptr());
    if (masks[i].numel()) spans.emplace_back(begin, begin + masks[i].nbytes());
    for (int64_t j = offset[i]; j < offset[i + 1]; ++j)
      TORCH_CHECK(0 <= p[j] && p[j] < masks[i].numel() && (j == offset[i] || p[j] > p[j - 1]),
                  "fix_cuts_: positions must be ascending flat indices within each layer");
  }
  std::sort(spans.begin(), spans.end());
  for (size_t j = 1; j < spans.size(); ++j)
    TORCH_CHECK(spans[j].first >= spans[j - 1].second, "fix_cuts_: two of the masks overlap in memory");
  parallel_tasks(static_cast<int64_t>(L), max_workers(), [&](int64_t i, int) {
    bool* o = masks[i].data_ptr<bool>();
    const int64_t cut = cut_keys[i];
    int64_t rank = 0;  // equal keys so far, in flat order
    for (int64_t j = offset[i]; j < offset[i + 1]; ++j)
      o[p[j]] = k[j] > cut || (k[j] == cut && rank++ >= ties[i]);
  });
}

std::vector<at::Tensor> apply_cuts(const std::vector<at::Tensor>& weights,
                                   const std::vector<std::optional<at::Tensor>>& masks,
                                   const std::vector<int64_t>& cut_keys, const std::vector<int64_t>& ties) {
  return masks_from_cuts(weights, masks, cut_keys, ties, {}, "apply_cuts");
}

std::vector<at::Tensor> apply_cuts_scaled(const std::vector<at::Tensor>& weights,
                                          const std::vector<std::optional<at::Tensor>>& masks,
                                          const std::vector<at::Tensor>& scales, const std::vector<int64_t>& cut_keys,
                                          const std::vector<int64_t>& ties) {
  TORCH_CHECK(scales.size() == weights.size(), "apply_cuts_scaled: one scale per layer");
  return masks_from_cuts(weights, masks, cut_keys, ties, scales, "apply_cuts_scaled");
}

void zero_cuts_(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                const std::vector<int64_t>& cut_keys, const std::vector<int64_t>& ties) {
  const size_t L = weights.size();
  TORCH_CHECK(masks.size() == L && cut_keys.size() == L && ties.size() == L, "zero_cuts_: one entry per layer");
  std::vector<at::Tensor> ms(L);
  check_cut_inputs(weights, masks, "zero_cuts_");
  // Every layer is written in one parallel region: two that share memory would race.
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  for (size_t i = 0; i < L; ++i) {
    TORCH_CHECK(weights[i].is_contiguous(), "zero_cuts_: the weights must be contiguous");
    ms[i] = contiguous_mask(masks[i]);
    const auto begin = reinterpret_cast<uintptr_t>(weights[i].data_ptr());
    if (weights[i].numel()) spans.emplace_back(begin, begin + weights[i].nbytes());
  }
  std::sort(spans.begin(), spans.end());
  for (size_t j = 1; j < spans.size(); ++j)
    TORCH_CHECK(spans[j].first >= spans[j - 1].second, "zero_cuts_: two of the weights overlap in memory");
  cut_layers(weights, ms, cut_keys, ties, std::vector<bool*>(L, nullptr));
}

at::Tensor apply_cut(const at::Tensor& w, const std::optional<at::Tensor>& mask, int64_t cut_key, int64_t ties) {
  return apply_cuts({w}, {mask}, {cut_key}, {ties})[0];
}

void zero_cut_(at::Tensor& w, const std::optional<at::Tensor>& mask, int64_t cut_key, int64_t ties) {
  zero_cuts_({w}, {mask}, {cut_key}, {ties});
}

namespace {

// Branch-free: the source bits and'ed with all ones (kept) or zero (pruned), so the loop vectorises.
template <typename bits_t>
void masked_copy_bits(bits_t* out, const bits_t* src, const bool* keep, int64_t n) {
  const int workers = max_workers();
  const int64_t chunks = chunk_count(n, workers, kGrain);
  parallel_tasks(chunks, workers, [&](int64_t c, int) {
    int64_t begin, end;
    chunk_range(n, chunks, c, begin, end);
    for (int64_t i = begin; i < end; ++i) out[i] = src[i] & static_cast<bits_t>(-static_cast<bits_t>(keep[i]));
  });
}

}  // namespace

void masked_copy_(at::Tensor& out, const at::Tensor& src, const at::Tensor& keep) {
  TORCH_CHECK(out.is_contiguous() && src.is_contiguous() && keep.is_contiguous(),
              "masked_copy_: tensors must be contiguous");
  TORCH_CHECK(out.numel() == src.numel() && keep.numel() == src.numel(), "masked_copy_: sizes differ");
  TORCH_CHECK(out.element_size() == src.element_size(), "masked_copy_: out and src have different element sizes");
  TORCH_CHECK(keep.scalar_type() == at::kBool, "masked_copy_: keep must be a bool tensor");
  TORCH_CHECK(out.device().is_cpu() && src.device().is_cpu() && keep.device().is_cpu(), "masked_copy_: CPU tensors only");
  const int64_t n = src.numel();
  const bool* k = keep.data_ptr<bool>();
  switch (src.element_size()) {
    case 1:
      return masked_copy_bits(static_cast<uint8_t*>(out.data_ptr()), static_cast<const uint8_t*>(src.data_ptr()), k, n);
    case 2:
      return masked_copy_bits(static_cast<uint16_t*>(out.data_ptr()), static_cast<const uint16_t*>(src.data_ptr()), k,
                              n);
    case 4:
      return masked_copy_bits(static_cast<uint32_t*>(out.data_ptr()), static_cast<const uint32_t*>(src.data_ptr()), k,
                              n);
    case 8:
      return masked_copy_bits(static_cast<uint64_t*>(out.data_ptr()), static_cast<const uint64_t*>(src.data_ptr()), k,
                              n);
    default:
      TORCH_CHECK(false, "masked_copy_: element size ", src.element_size(), " is not 1, 2, 4 or 8 bytes");
  }
}

}  // namespace lamp
