// row_balance's per-layer kernels (balanced_rows.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace lamp {

std::tuple<at::Tensor, at::Tensor> row_cuts(const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                                            const std::optional<at::Tensor>& scale, int64_t rows,
                                            const at::Tensor& counts);
at::Tensor balanced_cut_mask(const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                             const std::optional<at::Tensor>& scale, int64_t rows, const at::Tensor& factors,
                             int64_t prune);

}  // namespace lamp
