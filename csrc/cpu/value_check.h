// The input check of the compiled CPU path (see value_check.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace lamp {

// Per layer: the largest |w| over its alive weights (0 if none), or +inf if one of them is NaN or Inf.
std::vector<double> alive_max_abs(const std::vector<at::Tensor>& weights,
                                  const std::vector<std::optional<at::Tensor>>& masks);

// The same over the column-scaled importances fl32(|w| * s_j) of the layers (scaled_keys.h), never made whole.
std::vector<double> alive_max_abs_scaled(const std::vector<at::Tensor>& weights,
                                         const std::vector<std::optional<at::Tensor>>& masks,
                                         const std::vector<at::Tensor>& scales);

// Per tensor, over all its elements: the largest |x| (+inf if one is NaN or Inf), and whether one is negative
// and nonzero (or a NaN with its sign bit set): the importance check.
std::tuple<std::vector<double>, std::vector<bool>> value_scan(const std::vector<at::Tensor>& tensors);

}  // namespace lamp
