// torch binding of the CUDA kernels (module lamp_kernels._cuda): tensors in, raw pointers and the current
// stream out to the launchers of launchers.h. Built only where torch has CUDA (setup.py, or the JIT build
// in lamp_kernels/cuda_backend.py).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

#include "launchers.h"

namespace {

int dtype_code(const at::Tensor& w) {
  switch (w.scalar_type()) {
    case at::kBFloat16: return 0;
    case at::kHalf: return 1;
    case at::kFloat: return 2;
    case at::kDouble: return 3;
    default: TORCH_CHECK(false, "lamp_kernels: unsupported dtype ", w.scalar_type());
  }
}

int64_t key_bytes(int code) { return code <= 1 ? 2 : code == 2 ? 4 : 8; }

// Packs layers (same dtype, one device) into batches of at most `capacity` elements: a layer alone when it
// is large, many small ones as segments of one sort.
std::vector<std::vector<int64_t>> batches(const std::vector<at::Tensor>& ws, int64_t capacity) {
  std::vector<std::vector<int64_t>> out;
  int64_t filled = capacity;
  for (int64_t i = 0; i < int64_t(ws.size()); ++i) {
    const int64_t n = ws[i].numel();
    if (filled + n > capacity) {
      out.emplace_back();
      filled = 0;
    }
    out.back().push_back(i);
    filled += n;
  }
  return out;
}

// Sorts every layer and runs the fused scan. want_scores: score tensors (float64 or float32) per layer;
// want_order: (order values, permutation) per layer for the global cut (lamp: score order, else |w| order).
struct Sorted {
  std::vector<at::Tensor> scores, values, perms;
};

Sorted sort_and_scan(const std::vector<at::Tensor>& weights, const std::vector<c10::optional<at::Tensor>>& masks,
                     bool want_scores, bool float64, bool want_order, bool lamp) {
  Sorted r;
  if (weights.empty()) return r;
  const auto device = weights[0].device();
  c10::cuda::CUDAGuard guard(device);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int code = dtype_code(weights[0]);
  std::vector<at::Tensor> ws, ms;  // contiguous layers and masks, alive until the kernels are queued
  int64_t capacity = 1;
  for (const auto& w : weights) {
    TORCH_CHECK(w.is_cuda() && w.device() == device && dtype_code(w) == code,
                "lamp_kernels: one launch takes CUDA layers of one dtype on one device");
    TORCH_CHECK(w.numel() <= INT32_MAX,
                "lamp_kernels: a layer of ", w.numel(), " elements is over the CUDA sort's 2^31 - 1 limit "
                "(32-bit index payload); use backend='triton' for its masks");
    ws.push_back(w.contiguous());
    ms.push_back(masks[ws.size() - 1].has_value() ? masks[ws.size() - 1]->contiguous() : at::Tensor());
    capacity = std::max<int64_t>(capacity, w.numel());
  }
  const auto opts = weights[0].options();
  const auto u8 = opts.dtype(at::kByte);
  const int64_t kb = key_bytes(code);
  // Double buffers sized by the largest layer: the memory bound (twice the largest layer's keys and
  // values) plus CUB's and the scan's small temporaries.
  auto keys = at::empty({2 * capacity * kb}, u8), index = at::empty({2 * capacity}, opts.dtype(at::kInt));
  const int max_segments = int(std::min<int64_t>(ws.size(), capacity));
  auto sort_temp = at::empty({int64_t(lamp_cuda::sort_temp_bytes(code, capacity, std::max(2, max_segments))) + 1}, u8);
  auto* k0 = keys.data_ptr<uint8_t>();
  auto* k1 = k0 + capacity * kb;
  auto* i0 = reinterpret_cast<uint32_t*>(index.data_ptr<int32_t>());
  auto* i1 = i0 + capacity;
  for (const auto& batch : batches(ws, capacity)) {
    std::vector<lamp_cuda::Segment> segs;
    std::vector<int64_t> offsets{0};
    int64_t tiles = 0;
    for (int64_t i : batch) {
      const auto& w = ws[i];
      const int64_t n = w.numel(), off = offsets.back();
      const bool* mask = ms[i].defined() ? ms[i].data_ptr<bool>() : nullptr;
      lamp_cuda::make_keys(code, w.data_ptr(), mask, n, k0 + off * kb, i0 + off, stream);
      lamp_cuda::Segment s{off, n, tiles, nullptr, nullptr, nullptr};
      if (want_scores) {
        r.scores.push_back(at::empty(w.sizes(), opts.dtype(float64 ? at::kDouble : at::kFloat)));
        s.scores = r.scores.back().data_ptr();
      }
      if (want_order) {
        r.values.push_back(at::empty({n}, opts.dtype(at::kLong)));
        r.perms.push_back(at::empty({n}, opts.dtype(at::kInt)));
        s.values = reinterpret_cast<uint64_t*>(r.values.back().data_ptr<int64_t>());
        s.perm = reinterpret_cast<uint32_t*>(r.perms.back().data_ptr<int32_t>());
      }
      segs.push_back(s);
      offsets.push_back(off + n);
      tiles += (n + lamp_cuda::kScanTile - 1) / lamp_cuda::kScanTile;
    }
    const int64_t n = offsets.back();
    auto dev_offsets = at::tensor(offsets, at::kLong).to(device, /*non_blocking=*/false);
    const bool alt = lamp_cuda::sort_pairs(code, sort_temp.data_ptr(), sort_temp.numel(), k0, k1, i0, i1, n,
                                           int(batch.size()), dev_offsets.data_ptr<int64_t>(), stream);
    const void* sorted_keys = alt ? k1 : k0;
    const uint32_t* sorted_index = alt ? i1 : i0;
    if (want_scores || lamp) {
      auto seg_bytes = at::from_blob(segs.data(), {int64_t(segs.size() * sizeof(lamp_cuda::Segment))}, at::kByte)
                           .to(device);
      auto scan_temp = at::empty({int64_t(lamp_cuda::scan_temp_bytes(code, tiles)) + 1}, u8);
      lamp_cuda::lamp_scores_scan(code, sorted_keys, sorted_index,
                                  reinterpret_cast<const lamp_cuda::Segment*>(seg_bytes.data_ptr()), int(segs.size()),
                                  tiles, float64, scan_temp.data_ptr(), stream);
      scan_temp.record_stream(stream);
      seg_bytes.record_stream(stream);
    } else {  // global magnitude: the sorted keys are the order values
      for (const auto& s : segs)
        lamp_cuda::key_order_values(code, static_cast<const uint8_t*>(sorted_keys) + s.offset * kb,
                                    sorted_index + s.offset, s.numel, s.values, s.perm, stream);
    }
  }
  return r;
}

std::vector<at::Tensor> lamp_scores(const std::vector<at::Tensor>& weights,
                                    const std::vector<c10::optional<at::Tensor>>& masks, bool float64) {
  return sort_and_scan(weights, masks, true, float64, false, true).scores;
}

// (order values int64[n] in sorted order, permutation int32[n]) per layer.
std::vector<std::vector<at::Tensor>> sorted_order(const std::vector<at::Tensor>& weights,
                                                  const std::vector<c10::optional<at::Tensor>>& masks, bool lamp) {
  auto r = sort_and_scan(weights, masks, false, false, true, lamp);
  return {r.values, r.perms};
}

// Per-layer cut counts (int64[L]) and the threshold's order value (int64[1]), on the device.
std::vector<at::Tensor> global_cut(const std::vector<at::Tensor>& values, int64_t k_total) {
  TORCH_CHECK(!values.empty(), "lamp_kernels: global_cut needs at least one layer");
  const auto device = values[0].device();
  c10::cuda::CUDAGuard guard(device);
  const auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<int64_t> ptrs, numels;
  for (const auto& v : values) {
    ptrs.push_back(reinterpret_cast<int64_t>(v.data_ptr<int64_t>()));
    numels.push_back(v.numel());
  }
  const int layers = int(values.size());
  auto dev_ptrs = at::tensor(ptrs, at::kLong).to(device), dev_numels = at::tensor(numels, at::kLong).to(device);
  auto opts = values[0].options();
  auto pruned = at::empty({layers}, opts), threshold = at::empty({1}, opts);
  auto workspace = at::empty({int64_t(lamp_cuda::global_cut_workspace_bytes(layers))}, opts.dtype(at::kByte));
  lamp_cuda::global_cut(reinterpret_cast<const uint64_t* const*>(dev_ptrs.data_ptr<int64_t>()),
                        dev_numels.data_ptr<int64_t>(), layers, k_total, pruned.data_ptr<int64_t>(),
                        reinterpret_cast<uint64_t*>(threshold.data_ptr<int64_t>()), workspace.data_ptr(), stream);
  return {pruned, threshold};
}

// Keep mask of one layer of `shape`: sorted positions >= pruned[i] are kept.
at::Tensor mask_from_cut(const at::Tensor& perm, const at::Tensor& pruned, int64_t i, at::IntArrayRef shape) {
  c10::cuda::CUDAGuard guard(perm.device());
  auto mask = at::empty(shape, perm.options().dtype(at::kBool));
  lamp_cuda::mask_from_cut(reinterpret_cast<const uint32_t*>(perm.data_ptr<int32_t>()), perm.numel(),
                           pruned.data_ptr<int64_t>() + i, mask.data_ptr<bool>(),
                           at::cuda::getCurrentCUDAStream());
  return mask;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lamp_kernels CUDA kernels: sort-based scores and the global cut";
  m.def("lamp_scores", &lamp_scores);
  m.def("sorted_order", &sorted_order);
  m.def("global_cut", &global_cut);
  m.def("mask_from_cut", &mask_from_cut);
}
