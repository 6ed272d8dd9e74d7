// N:M patterns over CPU layers (see nm_masks.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace lamp {

// Keep-mask of an N:M pattern on one layer: in every group of m consecutive elements (flat order), the m - n
// least in the order (masked-out first, magnitude key, position) are pruned, and masked-out elements stay
// pruned. The caller checks that rows split into groups (lamp_kernels/nm.py); here numel % m == 0.
at::Tensor nm_keep(const at::Tensor& keys, const std::optional<at::Tensor>& mask, int64_t n, int64_t m);
// The same on the column-scaled importances fl32(|w| * s_j) of a weight (scaled_keys.h), never made whole.
at::Tensor nm_keep_scaled(const at::Tensor& weights, const std::optional<at::Tensor>& mask, const at::Tensor& scale,
                          int64_t n, int64_t m);

}  // namespace lamp
