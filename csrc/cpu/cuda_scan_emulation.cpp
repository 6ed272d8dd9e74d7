// The CUDA scan (csrc/cuda/scan.cuh) replayed on the host with the very same arithmetic
// (csrc/cuda/wide_sum.cuh) and the same decomposition: 4096-element tiles of the sorted order, exclusive
// suffix sums of tiles, each tile loaded reversed so that thread th holds the th-th run of 16 positions
// counted from the tile's end, each element's exact suffix sum rounded once. Machines without a GPU test the device numerics through it against the reference; it is not a
// backend.
#include "cuda_scan_emulation.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "../cuda/wide_sum.cuh"

namespace lamp {

namespace {

using lamp_cuda::Format;

template <int Code>
at::Tensor emulate(const at::Tensor& w, const c10::optional<at::Tensor>& mask, bool float64) {
  using F = Format<Code>;
  using W = lamp_cuda::Wide<F::K>;
  constexpr int kThreads = lamp_cuda::kScanThreads, kTile = lamp_cuda::kScanTile;
  constexpr int kItems = kTile / kThreads;
  const auto wc = w.contiguous();
  const int64_t n = wc.numel();
  const auto* bits = static_cast<const typename F::Bits*>(wc.data_ptr());
  at::Tensor m;
  if (mask.has_value()) m = mask->contiguous();
  std::vector<uint64_t> order_key(n);  // make_keys
  const uint64_t key_mask = (uint64_t(1) << F::kKeyBits) - 1;
  for (int64_t i = 0; i < n; ++i)
    order_key[i] = (!m.defined() || m.data_ptr<bool>()[i]) ? (uint64_t(bits[i]) & key_mask) + 1 : 0;
  std::vector<int64_t> index(n);  // the stable radix sort
  std::iota(index.begin(), index.end(), 0);
  std::stable_sort(index.begin(), index.end(), [&](int64_t a, int64_t b) { return order_key[a] < order_key[b]; });
  auto key_at = [&](int64_t u) { return order_key[index[u]]; };
  auto magnitude = [](uint64_t k) { return k ? k - 1 : 0; };
  const int64_t tiles = (n + kTile - 1) / kTile;
  std::vector<W> after(tiles, W::zero());  // tile_sums + tile_suffix
  W running = W::zero();
  for (int64_t t = tiles - 1; t >= 0; --t) {
    after[t] = running;
    for (int64_t u = t * kTile; u < std::min(n, (t + 1) * kTile); ++u)
      lamp_cuda::add_square<Code>(running, magnitude(key_at(u)));
  }
  auto out = at::empty(wc.sizes(), wc.options().dtype(float64 ? at::kDouble : at::kFloat));
  for (int64_t t = 0; t < tiles; ++t) {  // scan_scores
    const int64_t begin = t * kTile, end = std::min(n, begin + kTile);
    // The tile is loaded reversed: thread th holds positions end - 1 - th * kItems - i, i = 0..kItems-1.
    auto position = [&](int th, int i) { return end - 1 - (int64_t(th) * kItems + i); };
    std::vector<W> chunk(kThreads, W::zero());
    for (int th = 0; th < kThreads; ++th)
      for (int i = 0; i < kItems; ++i)
        if (position(th, i) >= begin) lamp_cuda::add_square<Code>(chunk[th], magnitude(key_at(position(th, i))));
    W exclusive = W::zero();  // the block scan: threads before th hold later positions
    for (int th = 0; th < kThreads; ++th) {
      W run = exclusive;
      run.add(after[t]);
      exclusive.add(chunk[th]);
      for (int i = 0; i < kItems; ++i) {
        const int64_t u = position(th, i);
        if (u < begin) break;
        const uint64_t k = magnitude(key_at(u));
        lamp_cuda::add_square<Code>(run, k);
        const double s = key_at(u) ? lamp_cuda::score<Code>(k, run.to_double(F::kUnit)) : 0.0;
        if (float64) out.data_ptr<double>()[index[u]] = s;
        else out.data_ptr<float>()[index[u]] = static_cast<float>(s);
      }
    }
  }
  return out;
}

}  // namespace

at::Tensor cuda_scan_emulation(const at::Tensor& w, const c10::optional<at::Tensor>& mask, bool float64) {
  switch (w.scalar_type()) {
    case at::kBFloat16: return emulate<0>(w, mask, float64);
    case at::kHalf: return emulate<1>(w, mask, float64);
    case at::kFloat: return emulate<2>(w, mask, float64);
    case at::kDouble: return emulate<3>(w, mask, float64);
    default: TORCH_CHECK(false, "cuda_scan_emulation: unsupported dtype ", w.scalar_type());
  }
}

}  // namespace lamp
