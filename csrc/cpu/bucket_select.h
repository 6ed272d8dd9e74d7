// The p-th smallest alive key of a unit by selection, not a sort: the keys' histogram over their top bits
// (kept by the caller, who may gather more while building it), then a partial sort of the one bucket that holds
// the p-th. Used by row_kernels.cpp (cut_unit) and balanced_rows.cpp (row_cut).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "float_keys.h"

namespace lamp {

constexpr int kSelectBits = 11;  // histogram buckets: the keys' top 11 bits (keys have a clear top bit)

template <typename scalar_t>
constexpr int select_shift() {
  return 8 * static_cast<int>(sizeof(typename Keys<scalar_t>::key_t)) - 1 - kSelectBits;
}

// hist[b]: the alive keys k of x[0, n) with k >> select_shift() == b; 1 <= p <= their number. Gathers the alive
// keys of the bucket holding the p-th into `bucket` and partially sorts it so that bucket[pos] is the p-th and
// nothing before it is larger. Returns pos; `below` gets the alive keys in the buckets before that one.
template <typename scalar_t, typename Count>
int64_t select_in_bucket(const scalar_t* x, const bool* m, int64_t n, int64_t p, const Count* hist,
                         std::vector<typename Keys<scalar_t>::key_t>& bucket, int64_t& below) {
  using K = Keys<scalar_t>;
  using key_t = typename K::key_t;
  constexpr int shift = select_shift<scalar_t>();
  below = 0;
  int b = 0;
  while (below + static_cast<int64_t>(hist[b]) < p) below += hist[b++];  // p <= alive: that bucket exists
  bucket.clear();
  for (int64_t i = 0; i < n; ++i) {
    const key_t k = K::key(x[i]);
    if ((k >> shift) == static_cast<key_t>(b) && (!m || m[i])) bucket.push_back(k);
  }
  const int64_t pos = p - 1 - below;
  std::nth_element(bucket.begin(), bucket.begin() + pos, bucket.end());
  return pos;
}

}  // namespace lamp
