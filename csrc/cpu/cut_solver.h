// Exact per-layer cuts from per-layer bin summaries (see cut_solver.cpp).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace lamp {

struct ExactSum;

class CutSolver {
 public:
  struct Region {  // candidate bins [bin_lo, bin_hi] of a layer; `gather` when their keys are needed
    bool gather;
    int64_t bin_lo, bin_hi;
  };
  struct Cut {  // keep alive elements with key > cut_key, or key == cut_key after the first `ties`
    int64_t cut_key, ties, pruned;
  };

  // Per layer i: codes[i] its DtypeCode, and its sparse summary (bin_summaries' entries): bins[i] int64[E_i]
  // ascending nonempty bins, counts[i] int64[E_i], sums[i] int64[E_i, limbs]. Setup is proportional to the
  // entries, and runs a layer per thread. lamp: LAMP scores, else global magnitude.
  CutSolver(const std::vector<int64_t>& codes, const std::vector<at::Tensor>& bins,
            const std::vector<at::Tensor>& counts, const std::vector<at::Tensor>& sums, bool lamp);
  ~CutSolver();

  // Global selection of k alive elements (the masked ones are not counted). With bounds (least, most: one per
  // layer, 0 <= least_i <= most_i <= alive_i, sum(least) <= k <= sum(most)), layer i prunes between least_i and
  // most_i: its least_i first are pruned whatever their score, those after its most_i-th are never candidates,
  // and the k - sum(least) smallest candidates in the order (score, layer, position) are pruned.
  std::vector<Region> plan_global(int64_t k, const std::vector<int64_t>& least = {},
                                  const std::vector<int64_t>& most = {});
  // A given number of alive elements pruned in each layer.
  std::vector<Region> plan_counts(const std::vector<int64_t>& pruned);
  // gathered[i]: sorted keys of layer i's candidate bins where its region asks for them.
  std::vector<Cut> finish(const std::vector<at::Tensor>& gathered);
  // The k-th smallest score (|w| for global magnitude) of a global selection that had to choose one; NaN when
  // none was needed (k = 0, everything pruned, per-layer counts).
  double threshold() const { return threshold_; }

 private:
  struct Group;
  struct Layer;
  static void add_bin_sum(const Layer& L, size_t i, ExactSum& acc);
  void compute_bounds(Layer& L);
  static void resolve(Layer& L, int64_t pruned);
  std::vector<Region> regions() const;
  void build_groups(Layer& L, const at::Tensor& gathered);
  int64_t region_count_le(const Layer& L, double t) const;
  static void set_cut(Layer& L, int64_t r);
  static void fix_count(Layer& L, int64_t pruned);
  static int64_t clamped(const Layer& L, int64_t count);

  bool lamp_;
  bool mode_global_ = true;
  int64_t k_ = 0;
  double threshold_ = std::numeric_limits<double>::quiet_NaN();
  double t_min_ = 0.0, t_max_ = std::numeric_limits<double>::infinity();  // plan_global's bracket of T
  std::vector<int64_t> targets_;
  std::vector<Layer> layers_;
};

}  // namespace lamp
