// Sparse summaries of many layers in one call (see summaries.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace lamp {

// (offsets int64[L + 1], bins int64[E], counts int64[E], sums int64[E, limbs]) for same-dtype CPU layers.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks);

}  // namespace lamp
