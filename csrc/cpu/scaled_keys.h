// Column-scaled importance keys, computed while reading the weights: the importance of element i of a layer
// is fl32(|w_i| * s_j), j = i mod cols (the column of a [rows, cols] weight; Wanda's |W_ij| * ||X_j|| when s
// holds the input-feature norms), so no full-size importance tensor is ever made.
//
// The product is the one torch computes for `w.abs().to(torch.float32) * s` (float32 s): |w| converted to
// float32 (exact for bf16/fp16/fp32, rounded to nearest for fp64), one IEEE multiply rounded to nearest
// (no contraction: the extension is built with -ffp-contract=off). So the keys, and every result built on
// them, equal those of the materialised tensor (lamp_kernels/importance.py, ColumnScaled).
//
// Kernels use the keys a block at a time: for_key_blocks fills a small buffer (it stays in L1) with the
// float32 importances of consecutive elements, and the float32 kernels run on the buffer as on a layer.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace lamp {

constexpr int64_t kKeyBlock = 2048;  // importances per buffer: 8 KiB

// o[t] = fl32(|x[t]| * s[t]) for t < n: one row segment. Compiled for AVX2 and the baseline on x86-64 GCC
// (scaled_keys.cpp), the CPU choosing at load time; the same IEEE products either way.
void scale_row(const c10::BFloat16* x, const float* s, int64_t n, float* o);
void scale_row(const c10::Half* x, const float* s, int64_t n, float* o);
void scale_row(const float* x, const float* s, int64_t n, float* o);
void scale_row(const double* x, const float* s, int64_t n, float* o);

template <typename scalar_t>
struct ScaledLayer {
  const scalar_t* x;  // the weights, contiguous
  const float* s;     // cols non-negative finite scales
  int64_t cols;

  // out[k] = fl32(|x[b + k]| * s[(b + k) mod cols]) for k < n; row by row, so the inner loop vectorises.
  void fill(int64_t b, int64_t n, float* out) const {
    if (n <= 0) return;  // (an empty layer may have no columns)
    int64_t j = b % cols, k = 0;
    while (k < n) {
      const int64_t seg = std::min(n - k, cols - j);
      scale_row(x + b + k, s + j, seg, out + k);
      k += seg;
      j = 0;
    }
  }
};

// fn(keys, i0, n) for consecutive blocks [i0, i0 + n) of [b, e), keys[k] the importance of element i0 + k.
// Block: importances per buffer (on the stack); passes whose per-call work has a fixed cost (a table to zero
// and fold) take kPassBlock.
constexpr int64_t kPassBlock = 16384;  // 64 KiB: stays in L2
template <int64_t Block = kKeyBlock, typename scalar_t, typename Fn>
void for_key_blocks(const ScaledLayer<scalar_t>& layer, int64_t b, int64_t e, Fn fn) {
  float keys[Block];
  for (int64_t i0 = b; i0 < e; i0 += Block) {
    const int64_t n = std::min(Block, e - i0);
    layer.fill(i0, n, keys);
    fn(static_cast<const float*>(keys), i0, n);
  }
}

// Checks a layer's scale (float32, contiguous, one per column of the weight's last dimension) and the weight.
inline void check_scaled_layer(const at::Tensor& w, const at::Tensor& scale, const char* op) {
  TORCH_CHECK(w.dim() >= 1, op, ": a column-scaled importance needs a weight with at least one dimension");
  TORCH_CHECK(scale.device().is_cpu() && scale.scalar_type() == at::kFloat && scale.dim() == 1 &&
                  scale.is_contiguous() && scale.numel() == w.size(-1),
              op, ": the scale must be a contiguous float32 CPU vector with one entry per column (", w.size(-1), ")");
}

// check_scaled_layer for every layer: one scale per layer.
inline void check_scaled_layers(const std::vector<at::Tensor>& ws, const std::vector<at::Tensor>& scales,
                                const char* op) {
  TORCH_CHECK(scales.size() == ws.size(), op, ": one scale per layer");
  for (size_t i = 0; i < ws.size(); ++i) check_scaled_layer(ws[i], scales[i], op);
}

}  // namespace lamp
