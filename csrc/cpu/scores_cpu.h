// LAMP scores on the CPU (see scores_cpu.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace lamp {

// Scores of every layer (float32, or float64), exact suffix sums rounded once; masked-out and zero weights
// score 0. Each layer takes the bin path when its dtype and size allow, else the sort path.
std::vector<at::Tensor> lamp_scores(const std::vector<at::Tensor>& weights,
                                    const std::vector<std::optional<at::Tensor>>& masks, bool float64);

// One layer by a named path, for tests: "sort" (radix sort + exact scan; every dtype) or "bins" (bf16, fp16,
// fp32 at any size). Same results as lamp_scores.
at::Tensor lamp_scores_by(const at::Tensor& w, const std::optional<at::Tensor>& mask, bool float64,
                          const std::string& path);

}  // namespace lamp
