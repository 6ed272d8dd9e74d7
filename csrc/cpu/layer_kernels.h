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
// The masks path in one pass instead of gather_bin_keys' and apply_cuts' (selection.py): masks that keep each
// layer's alive elements above its candidate bins [bin_lo, bin_hi], and those bins' alive elements collected
// on the way -- (masks, keys sorted per layer for the solver, keys in flat order, their flat indices), layer
// after layer. With scales (one per layer, or none), the keys are the column-scaled importances.
std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor> cut_and_gather(
    const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
    const std::vector<at::Tensor>& scales, const std::vector<int64_t>& bin_lo, const std::vector<int64_t>& bin_hi,
    const std::vector<int64_t>& sizes);
// Then, with the cuts known, decides each collected element (keys and positions in flat order, sizes[i] of
// layer i): masks[i][position] = key > cut or (key == cut and at least ties[i] equal keys precede it).
void fix_cuts_(const std::vector<at::Tensor>& masks, const at::Tensor& keys, const at::Tensor& positions,
               const std::vector<int64_t>& sizes, const std::vector<int64_t>& cut_keys,
               const std::vector<int64_t>& ties);
void zero_cuts_(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks,
                const std::vector<int64_t>& cut_keys, const std::vector<int64_t>& ties);
// out := src where keep, +0 elsewhere, in one pass (contiguous tensors of one size; out and src of one element
// size, their bits copied, so any dtype): a mask applied to a weight as it is written (lamp-prune).
void masked_copy_(at::Tensor& out, const at::Tensor& src, const at::Tensor& keep);

}  // namespace lamp
