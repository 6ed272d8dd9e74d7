// Stable LSD radix sort of (key, index) pairs, shared by the per-layer and per-row kernels.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace lamp {

// Stable LSD radix sort of (key, index) pairs by key, 11 bits a pass; passes whose digit is the same for
// every key are skipped (the high digits of a layer's magnitudes usually are).
template <typename key_t>
void radix_sort_pairs(std::vector<key_t>& keys, std::vector<uint32_t>& idx) {
  constexpr int kDigit = 11, kBuckets = 1 << kDigit;
  constexpr int kPasses = (static_cast<int>(sizeof(key_t)) * 8 - 1 + kDigit - 1) / kDigit;
  const size_t n = keys.size();
  std::vector<std::array<uint32_t, kBuckets>> hist(kPasses);
  for (auto& h : hist) h.fill(0);
  for (size_t i = 0; i < n; ++i)
    for (int p = 0; p < kPasses; ++p) ++hist[p][(keys[i] >> (p * kDigit)) & (kBuckets - 1)];
  std::vector<key_t> k2(n);
  std::vector<uint32_t> i2(n);
  for (int p = 0; p < kPasses; ++p) {
    auto& h = hist[p];
    if (std::any_of(h.begin(), h.end(), [n](uint32_t c) { return c == n; })) continue;
    uint32_t sum = 0;
    for (auto& c : h) {
      const uint32_t t = c;
      c = sum;
      sum += t;
    }
    for (size_t i = 0; i < n; ++i) {
      const uint32_t pos = h[(keys[i] >> (p * kDigit)) & (kBuckets - 1)]++;
      k2[pos] = keys[i];
      i2[pos] = idx[i];
    }
    keys.swap(k2);
    idx.swap(i2);
  }
}

}  // namespace lamp
