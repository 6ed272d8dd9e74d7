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

// bin_summaries, and a scan of each layer's values in the same pass, over every element alive or not:
// top_bins int64[L] (the largest bin of a magnitude key, -1 for an empty layer; NaN/Inf lie at the dtype's
// top bins) and negative bool[L] (some value is negative and nonzero; -0.0 is not). The value check of
// importance tensors (finite, >= 0) read off the summary pass instead of one more read of the tensors.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries_scanned(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks);

// The same for importance keys fl32(|w| * s_j) (scaled_keys.h): float32 summaries, from any weight dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bin_summaries_scaled(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
    const std::vector<at::Tensor>& scales);

}  // namespace lamp
