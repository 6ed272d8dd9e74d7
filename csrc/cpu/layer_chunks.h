// Layers read in fixed-size chunks, all chunks of all layers one list of tasks for parallel_tasks (task_pool.h):
// for passes that need no per-layer state between chunks (value checks, OWL's statistics).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace lamp {

struct LayerChunks {
  static constexpr int64_t kChunk = int64_t{1} << 18;  // elements per task
  std::vector<at::Tensor> ws, ms;  // contiguous layers, and their masks (undefined for none)
  std::vector<int64_t> first;      // layer i owns tasks [first[i], first[i + 1])

  LayerChunks(const std::vector<at::Tensor>& weights, const std::vector<std::optional<at::Tensor>>& masks)
      : first(weights.size() + 1, 0) {
    for (size_t i = 0; i < weights.size(); ++i) {
      ws.push_back(weights[i].contiguous());
      const bool has = i < masks.size() && masks[i].has_value() && masks[i]->defined();
      ms.push_back(has ? masks[i]->contiguous() : at::Tensor());
      first[i + 1] = first[i] + (ws[i].numel() + kChunk - 1) / kChunk;
    }
  }
  int64_t tasks() const { return first.back(); }
  size_t layer_of(int64_t task) const {
    return std::upper_bound(first.begin(), first.end(), task) - first.begin() - 1;
  }
  // Elements [b, e) of the layer that owns `task`.
  void range(int64_t task, size_t layer, int64_t& b, int64_t& e) const {
    b = (task - first[layer]) * kChunk;
    e = std::min(ws[layer].numel(), b + kChunk);
  }
  const bool* mask(size_t i) const { return ms[i].defined() ? ms[i].data_ptr<bool>() : nullptr; }
};

}  // namespace lamp
