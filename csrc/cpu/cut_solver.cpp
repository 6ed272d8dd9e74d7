// Exact global selection from per-layer bin summaries (DESIGN-NOTES §2).
//
// Inside a layer the score never decreases along the order (|w|, flat index), so a selection prunes a
// prefix of every layer's order and is described by one cut per layer. The solver finds those cuts from
// the small per-layer summaries alone, in two phases:
//
//  plan   Each nonempty bin gets bounds [lo, hi] on the scores of its elements (lo exact for bf16/fp16 bins,
//         which hold one value, and conservative for fp32/fp64 bins, from the bin's edges; hi a widened
//         float64 evaluation). Bisection over the
//         float64 bit patterns gives t_min <= T <= t_max around the exact k-th score T; bins entirely below
//         t_min are pruned, bins entirely above t_max kept, and the rest form a small candidate region.
//  finish The candidate region is expanded into groups of equal keys (bf16/fp16: the bins themselves;
//         fp32/fp64: the keys gathered by one more pass over those bins) with exact suffix sums, and the
//         exact T and the tie allocation in (layer, position) order follow.
//
// A group of c equal values v with exact sum S' above it has scores s(j) = fl(v^2 / fl(S' + j v^2)),
// j = 1..c from its last element to its first; s is non-increasing in j, so the number of them at or below
// t is found by binary search on j.
//
// Density bounds (plan_global's least/most): every layer's count above is clamped to its bounds, and a layer
// whose bounds decide its count for any threshold in [t_min, t_max] is cut at that count (the bin holding its
// last pruned element is its region).
//
// A cut is (cut_key, ties): keep alive elements with key > cut_key, and those with key == cut_key after the
// first `ties` of them in flat order.
#include "cut_solver.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "exact_sum.h"
#include "float_keys.h"
#include "task_pool.h"

namespace lamp {

namespace {

constexpr int64_t kKeepAll = -1;
constexpr int64_t kPruneAll = std::numeric_limits<int64_t>::max();

inline uint64_t to_bits(double d) {
  uint64_t b;
  std::memcpy(&b, &d, 8);
  return b;
}
inline double from_bits(uint64_t b) {
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}

// Bounds are widened by a few ulps (each computed bound carries at most a few roundings). For non-negative
// doubles the bit patterns are ordered like the values, so k ulps is an integer step of the pattern.
inline double widen(double x, double toward, int ulps = 4) {
  const uint64_t b = to_bits(x);
  if (toward > x) return from_bits(std::min<uint64_t>(b + ulps, to_bits(std::numeric_limits<double>::infinity())));
  return from_bits(b > static_cast<uint64_t>(ulps) ? b - ulps : 0);
}

// Smallest non-negative double t in [t_lo, t_hi] with count(t) >= k, by bisection over bit patterns
// (monotone for t >= 0); count(t_hi) >= k is the caller's promise.
template <typename F>
double min_t_reaching(F count, int64_t k, double t_lo = 0.0,
                      double t_hi = std::numeric_limits<double>::infinity()) {
  uint64_t lo = to_bits(t_lo), hi = to_bits(t_hi);
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (count(from_bits(mid)) >= k)
      hi = mid;
    else
      lo = mid + 1;
  }
  return from_bits(lo);
}

}  // namespace

struct CutSolver::Group {
  int64_t key;
  double value;
  int64_t count;
  double smin, smax;
  int exact;  // index into Layer::sums_above for groups with count > 1, else -1
};

struct CutSolver::Layer {
  int code;
  std::vector<int> bins;  // nonempty bins, ascending
  std::vector<int64_t> count, limbs;
  std::vector<double> lo, hi;
  std::vector<int64_t> cum;  // cum[i] = alive elements in bins[0..i)
  int64_t alive = 0;
  // plan: candidate region bins[first..last], `below` alive elements definitely pruned
  int first = 0, last = -1;
  int64_t below = 0;
  int64_t least = 0, most = 0;  // bounds on the alive elements pruned (plan_global; most = alive without bounds)
  int64_t fixed = -1;           // >= 0: the bounds decide the count whatever the threshold (its bin is the region)
  bool resolved = false;
  Cut cut{kKeepAll, 0, 0};
  // finish
  std::vector<Group> groups;
  std::vector<int64_t> group_cum;
  std::vector<ExactSum> sums_above;
};

void CutSolver::add_bin_sum(const Layer& L, size_t i, ExactSum& acc) {
  if (exact_bins(L.code)) {
    add_square_multiple(acc, key_value(L.code, L.bins[i]), static_cast<uint64_t>(L.count[i]));
    return;
  }
  const int nl = num_limbs(L.code), x2 = 2 * bin_exponent(L.code, L.bins[i]);
  for (int l = 0; l < nl; ++l) acc.add(static_cast<u128>(L.limbs[i * nl + l]), x2 + kLimbBits * l);
}

CutSolver::CutSolver(const std::vector<int64_t>& codes, const std::vector<at::Tensor>& bins,
                     const std::vector<at::Tensor>& counts, const std::vector<at::Tensor>& sums, bool lamp)
    : lamp_(lamp) {
  TORCH_CHECK(bins.size() == codes.size() && counts.size() == codes.size() && sums.size() == codes.size(),
              "CutSolver: one summary per layer");
  layers_.resize(codes.size());
  for (size_t li = 0; li < codes.size(); ++li) {  // copies, on the calling thread (tensors are Python-owned)
    Layer& L = layers_[li];
    L.code = static_cast<int>(codes[li]);
    const at::Tensor b = bins[li].contiguous().to(at::kLong), c = counts[li].contiguous().to(at::kLong);
    const at::Tensor s = sums[li].contiguous().to(at::kLong);
    const int64_t n = b.numel(), nl = num_limbs(L.code);
    TORCH_CHECK(c.numel() == n && s.numel() == n * nl, "CutSolver: summary parts have mismatched sizes");
    const int64_t* bp = b.data_ptr<int64_t>();
    const int64_t* cp = c.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(bp[i] >= 0 && bp[i] < num_bins(L.code) && (i == 0 || bp[i] > bp[i - 1]) && cp[i] > 0,
                  "CutSolver: summary bins must be ascending, in range and nonempty");
    }
    L.bins.assign(bp, bp + n);
    L.count.assign(cp, cp + n);
    L.limbs.assign(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + n * nl);
  }
  // Bounds need exact suffix sums over every bin: the costly part, independent per layer.
  parallel_tasks(static_cast<int64_t>(layers_.size()), max_workers(), [&](int64_t li, int) {
    Layer& L = layers_[li];
    const size_t n = L.bins.size();
    L.cum.assign(n + 1, 0);
    for (size_t i = 0; i < n; ++i) L.cum[i + 1] = L.cum[i] + L.count[i];
    L.alive = L.cum[n];
    compute_bounds(L);
  });
}

CutSolver::~CutSolver() = default;

void CutSolver::compute_bounds(Layer& L) {
  const size_t n = L.bins.size();
  L.lo.assign(n, 0.0);
  L.hi.assign(n, 0.0);
  const double inf = std::numeric_limits<double>::infinity();
  const bool exact = exact_bins(L.code);
  const int shift = bin_shift(L.code);
  ExactSum acc;        // exact sum of the bins above bin i
  double above = 0.0;  // acc rounded once
  for (size_t i = n; i-- > 0;) {
    const int b = L.bins[i];
    const double v_lo = key_value(L.code, static_cast<int64_t>(b) << shift);
    const double v_hi = exact ? v_lo : key_value(L.code, static_cast<int64_t>(b + 1) << shift);
    if (!lamp_) {
      L.lo[i] = v_lo;
      L.hi[i] = v_hi;
      continue;
    }
    // Highest score: the bin's last element, v_hi^2 / (above + v_hi^2). Only a bound is needed (the exact
    // scores of candidate bins are computed in finish), so it is evaluated in float64 -- at most four
    // roundings, each within half an ulp -- and widened by eight ulps.
    if (std::isinf(v_hi)) {
      L.hi[i] = 1.0;
    } else {
      const double sq = v_hi * v_hi;
      L.hi[i] = sq == 0.0 ? 0.0 : widen(sq / (above + sq), inf, 8);
    }
    // Lowest score: the bin's first element, whose suffix is the whole bin plus the bins above. For exact
    // (bf16/fp16) bins this is the first element's exact score.
    add_bin_sum(L, i, acc);
    above = acc.to_double();
    L.lo[i] = lamp_score(v_lo, above);
    if (!exact) L.lo[i] = widen(L.lo[i], 0.0);
  }
  // Make the bounds monotone (only ever widening them) so they can be binary-searched.
  for (size_t i = n; i-- > 1;) L.lo[i - 1] = std::min(L.lo[i - 1], L.lo[i]);
  for (size_t i = 1; i < n; ++i) L.hi[i] = std::max(L.hi[i], L.hi[i - 1]);
}

// Marks a layer done; the cut is set here when it keeps or prunes every alive element.
void CutSolver::resolve(Layer& L, int64_t pruned) {
  L.resolved = true;
  if (pruned <= 0)
    L.cut = {kKeepAll, 0, 0};
  else if (pruned >= L.alive)
    L.cut = {kPruneAll, 0, L.alive};
}

std::vector<CutSolver::Region> CutSolver::regions() const {
  std::vector<Region> out;
  for (const Layer& L : layers_) {
    const bool open = !L.resolved && L.first <= L.last;
    const bool gather = open && !exact_bins(L.code);
    out.push_back({gather, open ? L.bins[L.first] : 0, open ? L.bins[L.last] : -1});
  }
  return out;
}

int64_t CutSolver::clamped(const Layer& L, int64_t count) { return std::clamp(count, L.least, L.most); }

// The bounds alone decide this layer's count: its region is the bin holding its pruned-th alive element.
void CutSolver::fix_count(Layer& L, int64_t pruned) {
  L.fixed = pruned;
  if (pruned <= 0 || pruned >= L.alive) {
    resolve(L, pruned);
    return;
  }
  const int i = static_cast<int>(std::upper_bound(L.cum.begin(), L.cum.end(), pruned - 1) - L.cum.begin()) - 1;
  L.first = L.last = i;
  L.below = L.cum[i];
}

std::vector<CutSolver::Region> CutSolver::plan_global(int64_t k, const std::vector<int64_t>& least,
                                                      const std::vector<int64_t>& most) {
  const bool bounded = !least.empty() || !most.empty();
  TORCH_CHECK(!bounded || (least.size() == layers_.size() && most.size() == layers_.size()),
              "CutSolver: one lower and one upper bound per layer, or neither");
  mode_global_ = true;
  k_ = k;
  int64_t total = 0, sum_least = 0, sum_most = 0;
  for (size_t li = 0; li < layers_.size(); ++li) {
    Layer& L = layers_[li];
    L.least = bounded ? least[li] : 0;
    L.most = bounded ? most[li] : L.alive;
    TORCH_CHECK(0 <= L.least && L.least <= L.most && L.most <= L.alive, "CutSolver: bounds outside [0, alive]");
    total += L.alive;
    sum_least += L.least;
    sum_most += L.most;
  }
  TORCH_CHECK(!bounded || (sum_least <= k && k <= sum_most), "CutSolver: bounds that k cannot meet");
  if (k <= sum_least || k >= sum_most) {  // every layer at its lower (or upper) bound: none to choose
    for (Layer& L : layers_) fix_count(L, k <= sum_least ? L.least : L.most);
    return regions();
  }
  auto count_le = [&](const std::vector<double> Layer::*bound) {
    return [this, bound](double t) {
      int64_t s = 0;
      for (const Layer& L : layers_) {
        const auto& v = L.*bound;
        s += clamped(L, L.cum[std::upper_bound(v.begin(), v.end(), t) - v.begin()]);
      }
      return s;
    };
  };
  t_min_ = min_t_reaching(count_le(&Layer::lo), k);  // at most k possibly-selected below it
  t_max_ = min_t_reaching(count_le(&Layer::hi), k);  // k certainly-selected at or below it
  const double t_min = t_min_, t_max = t_max_;
  for (Layer& L : layers_) {
    L.first = static_cast<int>(std::lower_bound(L.hi.begin(), L.hi.end(), t_min) - L.hi.begin());
    L.last = static_cast<int>(std::upper_bound(L.lo.begin(), L.lo.end(), t_max) - L.lo.begin()) - 1;
    L.below = L.cum[L.first];
    // Any threshold in [t_min, t_max] prunes between `below` and `upto` of the layer before the bounds clamp it.
    const int64_t upto = L.first > L.last ? L.below : L.cum[L.last + 1];
    if (L.least >= upto || L.most <= L.below) {
      fix_count(L, clamped(L, L.below));
    } else if (L.first > L.last) {  // no candidate: the cut lies between two bins
      resolve(L, L.below);
      if (L.below > 0 && L.below < L.alive)
        L.cut = {static_cast<int64_t>(L.bins[L.first]) << bin_shift(L.code), 0, L.below};
    }
  }
  return regions();
}

std::vector<CutSolver::Region> CutSolver::plan_counts(const std::vector<int64_t>& pruned) {
  mode_global_ = false;
  TORCH_CHECK(pruned.size() == layers_.size(), "CutSolver: one count per layer expected");
  targets_ = pruned;
  for (size_t li = 0; li < layers_.size(); ++li) {
    Layer& L = layers_[li];
    const int64_t p = pruned[li];
    if (p <= 0 || p >= L.alive) {
      resolve(L, p);
      continue;
    }
    // The bin holding the p-th alive element.
    const int i = static_cast<int>(std::upper_bound(L.cum.begin(), L.cum.end(), p - 1) - L.cum.begin()) - 1;
    L.first = L.last = i;
    L.below = L.cum[i];
  }
  return regions();
}

void CutSolver::build_groups(Layer& L, const at::Tensor& gathered) {
  L.groups.clear();
  L.sums_above.clear();
  if (exact_bins(L.code)) {
    for (int i = L.first; i <= L.last; ++i)
      L.groups.push_back({L.bins[i], key_value(L.code, L.bins[i]), L.count[i], 0, 0, -1});
  } else {
    const int64_t* k = gathered.data_ptr<int64_t>();  // int64, contiguous (checked by the binding)
    const int64_t n = gathered.numel();
    for (int64_t i = 0; i < n;) {
      int64_t j = i;
      while (j < n && k[j] == k[i]) ++j;
      L.groups.push_back({k[i], key_value(L.code, k[i]), j - i, 0, 0, -1});
      i = j;
    }
  }
  ExactSum above;  // everything after the region
  for (size_t i = L.last + 1; i < L.bins.size(); ++i) add_bin_sum(L, i, above);
  for (size_t gi = L.groups.size(); gi-- > 0;) {
    Group& G = L.groups[gi];
    if (!lamp_) {
      G.smin = G.smax = G.value;
      continue;
    }
    if (G.count > 1) {
      G.exact = static_cast<int>(L.sums_above.size());
      L.sums_above.push_back(above);
    }
    // The group's first element scores against above + v^2, its last against above + count v^2 (exact sums:
    // added in any order, the same value); `above` grows in place, no copy of it per group.
    add_square(above, G.value);
    G.smax = lamp_score(G.value, above.to_double());
    if (G.count > 1) add_square_multiple(above, G.value, static_cast<uint64_t>(G.count - 1));
    G.smin = G.count > 1 ? lamp_score(G.value, above.to_double()) : G.smax;
  }
  L.group_cum.assign(L.groups.size() + 1, 0);
  for (size_t i = 0; i < L.groups.size(); ++i) L.group_cum[i + 1] = L.group_cum[i] + L.groups[i].count;
}

// Elements of the layer's region with score <= t.
int64_t CutSolver::region_count_le(const Layer& L, double t) const {
  const auto& G = L.groups;
  const size_t full = std::upper_bound(G.begin(), G.end(), t, [](double x, const Group& g) { return x < g.smax; }) -
                      G.begin();
  int64_t cnt = L.group_cum[full];
  if (full < G.size() && G[full].smin <= t) {  // the one group that straddles t
    // Smallest j in [1, count] with s(j) = fl(v^2 / fl(base + j v^2)) <= t; s is non-increasing in j and
    // s(count) = smin <= t. A float64 estimate (s(j) <= t  <=>  j >= 1/t - base/v^2, up to rounding) is
    // checked exactly, so usually two exact evaluations decide it; else bisection finishes the search.
    const Group& g = G[full];
    const ExactSum& base = L.sums_above[g.exact];
    auto at_most_t = [&](int64_t j) {
      ExactSum s = base;
      add_square_multiple(s, g.value, static_cast<uint64_t>(j));
      return lamp_score(g.value, s.to_double()) <= t;
    };
    int64_t lo = 1, hi = g.count;
    const double guess = std::ceil(1.0 / t - base.to_double() / (g.value * g.value));
    if (guess > 1.0 && guess < static_cast<double>(g.count)) {
      const int64_t j = static_cast<int64_t>(guess);
      if (at_most_t(j)) {
        hi = j;
        if (at_most_t(j - 1))
          hi = j - 1;
        else
          lo = j;
      } else {
        lo = j + 1;
        if (lo < hi) {
          if (at_most_t(lo))
            hi = lo;
          else
            lo = lo + 1;
        }
      }
    }
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (at_most_t(mid))
        hi = mid;
      else
        lo = mid + 1;
    }
    cnt += g.count - lo + 1;
  }
  return cnt;
}

// Cut for a layer of which `r` elements of the candidate region are pruned (all of `below` too).
void CutSolver::set_cut(Layer& L, int64_t r) {
  L.resolved = true;
  const int64_t pruned = L.below + r;
  if (pruned <= 0) {
    L.cut = {kKeepAll, 0, 0};
    return;
  }
  if (pruned >= L.alive) {
    L.cut = {kPruneAll, 0, L.alive};
    return;
  }
  if (r == 0) {  // between the definitely-pruned bins and the region
    L.cut = {L.groups.front().key, 0, pruned};
    return;
  }
  // The gathered keys must be those the summaries counted (a pass that rounded keys differently would break it)
  TORCH_CHECK(r > 0 && r <= L.group_cum.back(),
              "CutSolver: the gathered keys do not match the summaries (were they recomputed differently?)");
  const size_t g = std::lower_bound(L.group_cum.begin(), L.group_cum.end(), r) - L.group_cum.begin() - 1;
  L.cut = {L.groups[g].key, r - L.group_cum[g], pruned};
}

std::vector<CutSolver::Cut> CutSolver::finish(const std::vector<at::Tensor>& gathered) {
  std::vector<Layer*> open;
  std::vector<size_t> open_index;
  for (size_t li = 0; li < layers_.size(); ++li) {
    if (layers_[li].resolved) continue;
    open.push_back(&layers_[li]);
    open_index.push_back(li);
  }
  std::vector<at::Tensor> keys(open.size());
  for (size_t j = 0; j < open.size(); ++j) {  // checked here, before any task starts
    const Layer& L = *open[j];
    const size_t li = open_index[j];
    if (exact_bins(L.code)) continue;
    TORCH_CHECK(li < gathered.size() && gathered[li].defined() &&
                    gathered[li].numel() == L.cum[L.last + 1] - L.cum[L.first],
                "CutSolver: gathered keys do not match the summary");
    keys[j] = gathered[li].contiguous().to(at::kLong);
  }
  parallel_tasks(static_cast<int64_t>(open.size()), max_workers(),
                 [&](int64_t j, int) { build_groups(*open[j], keys[j]); });
  if (!mode_global_) {
    for (size_t li = 0; li < layers_.size(); ++li)
      if (!layers_[li].resolved) set_cut(layers_[li], targets_[li] - layers_[li].below);
  } else {
    // Layers whose count is settled (resolved, or fixed by their bounds) take theirs; the others prune
    // clamp(below + region elements with score <= t) for the threshold T.
    std::vector<Layer*> chosen;
    int64_t k = k_;
    for (Layer& L : layers_) {
      if (L.resolved) {
        k -= L.cut.pruned;
      } else if (L.fixed >= 0) {
        k -= L.fixed;
        set_cut(L, L.fixed - L.below);
      } else {
        chosen.push_back(&L);
      }
    }
    if (!chosen.empty()) {
      auto count = [&](const Layer& L, double t) {
        return clamped(L, L.below + (t < 0 ? 0 : region_count_le(L, t)));
      };
      const double T = min_t_reaching(  // t_min <= T <= t_max (see plan_global)
          [&](double t) {
            int64_t s = 0;
            for (const Layer* L : chosen) s += count(*L, t);
            return s;
          },
          k, t_min_, t_max_);
      threshold_ = T;
      // Everything below T, then the elements equal to T in (layer, position) order, each layer within its bounds.
      const double below_T = T > 0 ? from_bits(to_bits(T) - 1) : -1.0;
      std::vector<int64_t> lt(chosen.size()), eq(chosen.size());
      for (size_t i = 0; i < chosen.size(); ++i) {
        lt[i] = count(*chosen[i], below_T);
        eq[i] = count(*chosen[i], T) - lt[i];
        k -= lt[i];
      }
      for (size_t i = 0; i < chosen.size(); ++i) {
        const int64_t take = std::min(k, eq[i]);
        k -= take;
        set_cut(*chosen[i], lt[i] + take - chosen[i]->below);
      }
    }
  }
  std::vector<Cut> cuts;
  for (const Layer& L : layers_) cuts.push_back(L.cut);
  return cuts;
}

}  // namespace lamp
