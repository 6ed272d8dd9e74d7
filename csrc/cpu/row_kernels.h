// Per-unit kernels: each layer split into `rows` units of numel / rows consecutive elements (see row_kernels.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace lamp {

std::vector<at::Tensor> row_order_values(const std::vector<at::Tensor>& keys,
                                         const std::vector<std::optional<at::Tensor>>& masks,
                                         const std::vector<int64_t>& rows, bool lamp);
std::vector<at::Tensor> row_lamp_scores(const std::vector<at::Tensor>& keys,
                                        const std::vector<std::optional<at::Tensor>>& masks,
                                        const std::vector<int64_t>& rows, bool float64);
std::vector<at::Tensor> row_cut_masks(const std::vector<at::Tensor>& keys,
                                      const std::vector<std::optional<at::Tensor>>& masks,
                                      const std::vector<int64_t>& rows, const std::vector<at::Tensor>& counts);
// row_cut_masks on the column-scaled importances fl32(|w| * s_j) (scaled_keys.h), each unit's made as it is cut.
std::vector<at::Tensor> row_cut_masks_scaled(const std::vector<at::Tensor>& weights,
                                             const std::vector<std::optional<at::Tensor>>& masks,
                                             const std::vector<at::Tensor>& scales, const std::vector<int64_t>& rows,
                                             const std::vector<at::Tensor>& counts);
// Per mask, its masked-out (false) entries in each of its `rows` rows: int64 [rows].
std::vector<at::Tensor> masked_per_row(const std::vector<at::Tensor>& masks, const std::vector<int64_t>& rows);
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor> row_value_window(
    const std::vector<at::Tensor>& keys, const std::vector<std::optional<at::Tensor>>& masks,
    const std::vector<int64_t>& rows, bool lamp, int64_t lo, int64_t hi, int64_t limit, int64_t buckets);

}  // namespace lamp
