// The statistics of OWL's outlier ratios (lamp_kernels/owl.py) over CPU layers (see owl_stats.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace lamp {

// int64 [L, 2, E] (E = 2^exponent bits of the dtype; one dtype per call): for layer i and exponent field e,
// the sums over its alive elements with that field of the high and low halves (M >> 26, M & (2^26 - 1)) of
// the integer significand M of |x|. The exact sum of the alive |x| is
// sum_e (hi_e 2^26 + lo_e) 2^(max(e, 1) - bias - mantissa bits).
at::Tensor significand_sums(const std::vector<at::Tensor>& weights,
                            const std::vector<std::optional<at::Tensor>>& masks);

// The same over the column-scaled importances fl32(|w| * s_j) (float32 keys: E = 256), never made whole.
at::Tensor significand_sums_scaled(const std::vector<at::Tensor>& weights,
                                   const std::vector<std::optional<at::Tensor>>& masks,
                                   const std::vector<at::Tensor>& scales);

// int64 [L]: the alive elements of layer i with |x| > thresholds[i], compared in float64.
at::Tensor count_above(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                       const std::vector<double>& thresholds);
at::Tensor count_above_scaled(const std::vector<at::Tensor>& weights,
                              const std::vector<std::optional<at::Tensor>>& masks,
                              const std::vector<double>& thresholds, const std::vector<at::Tensor>& scales);

}  // namespace lamp
