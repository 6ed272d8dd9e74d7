// Per-layer CPU kernels (see layer_kernels.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace lamp {

std::tuple<at::Tensor, at::Tensor> bin_summary(const at::Tensor& w, const std::optional<at::Tensor>& mask);
at::Tensor gather_bin_keys(const at::Tensor& w, const std::optional<at::Tensor>& mask, int64_t bin_lo,
                           int64_t bin_hi);
at::Tensor apply_cut(const at::Tensor& w, const std::optional<at::Tensor>& mask, int64_t cut_key, int64_t ties);
void zero_cut_(at::Tensor& w, const std::optional<at::Tensor>& mask, int64_t cut_key, int64_t ties);
// Many layers in one pass over all of them (the CPU kernels of lamp_kernels::gather_bin_keys, apply_cuts,
// zero_cuts_); gather_bin_keys_many returns every layer's keys, layer after layer, each layer's ascending.
at::Tensor gather_bin_keys_many(const std::vector<at::Tensor>& weights,
                                const std::vector<std::optional<at::Tensor>>& masks, const std::vector<int64_t>& bin_lo,
                                const std::vector<int64_t>& bin_hi);
std::vector<at::Tensor> apply_cuts(const std::vector<at::Tensor>& weights,
                                   const std::vector<std::optional<at::Tensor>>& masks,
                                   const std::vector<int64_t>& cut_keys, const std::vector<int64_t>& ties);
// The same for column-scaled importance keys fl32(|w| * s_j) (scaled_keys.h), float32 keys and cuts.
at::Tensor gather_bin_keys_scaled(const std::vector<at::Tensor>& weights,
                                  const std::vector<std::optional<at::Tensor>>& masks,
                                  const std::vector<at::Tensor>& scales, const std::vector<int64_t>& bin_lo,
                                  const std::vector<int64_t>& bin_hi);
std::vector<at::Tensor> apply_cuts_scaled(const std::vector<at::Tensor>& weights,
                                          const std::vector<std::optional<at::Tensor>>& masks,
                                          const std::vector<at::Tensor>& scales, const std::vector<int64_t>& cut_keys,
                                          const std::vector<int64_t>& ties);
void zero_cuts_(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                const std::vector<int64_t>& cut_keys, const std::vector<int64_t>& ties);

}  // namespace lamp
