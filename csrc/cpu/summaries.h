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

// The same for importance keys fl32(|w| * s_j) (scaled_keys.h): float32 summaries, from any weight dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries_scaled(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
    const std::vector<at::Tensor>& scales);

}  // namespace lamp
