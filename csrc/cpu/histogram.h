// The dense histogram step shared by bin_summary (one layer) and bin_summaries (many layers, summaries.cpp).
#pragma once

#include <cstdint>

#include "float_keys.h"

namespace lamp {

// Adds elements [b, e) of one layer into h: per bin (key >> shift) `1 + limbs` int64 slots, the alive count
// and the 27-bit limb sums of M^2 (fp32/fp64). Sums are exact integers, so any split of a layer into ranges,
// added in any order, gives the same totals.
template <typename scalar_t>
inline void add_to_histogram(const scalar_t* x, const bool* m, int64_t b, int64_t e, int64_t* h) {
  using K = Keys<scalar_t>;
  constexpr int code = K::code;
  const int limbs = num_limbs(code), shift = bin_shift(code), stride = 1 + limbs;
  auto add = [&](int64_t i) {
    const uint64_t k = K::key(x[i]);
    int64_t* slot = h + static_cast<size_t>(k >> shift) * stride;
    ++slot[0];
    if (limbs) add_square_limbs(code, k, slot + 1);
  };
  if (m) {  // two loops, so the unmasked one carries no per-element test
    for (int64_t i = b; i < e; ++i)
      if (m[i]) add(i);
  } else {
    for (int64_t i = b; i < e; ++i) add(i);
  }
}

}  // namespace lamp
