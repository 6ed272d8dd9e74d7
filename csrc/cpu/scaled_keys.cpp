// The row products of column-scaled importance keys (scaled_keys.h), compiled twice on x86-64 GCC -- AVX2 and
// the baseline -- with the CPU's features choosing at load time: the conversion and multiply vectorise
// 8 wide instead of 4. Both give the same IEEE products (no contraction: -ffp-contract=off).
#include "scaled_keys.h"

#include <cmath>

#include "vector_clones.h"

namespace lamp {

namespace {

template <typename scalar_t>
inline void scale_row_impl(const scalar_t* x, const float* s, int64_t n, float* o) {
  for (int64_t t = 0; t < n; ++t) o[t] = std::fabs(static_cast<float>(x[t])) * s[t];
}

}  // namespace

LAMP_VECTOR_CLONES void scale_row(const c10::BFloat16* x, const float* s, int64_t n, float* o) {
  scale_row_impl(x, s, n, o);
}
LAMP_VECTOR_CLONES void scale_row(const c10::Half* x, const float* s, int64_t n, float* o) { scale_row_impl(x, s, n, o); }
LAMP_VECTOR_CLONES void scale_row(const float* x, const float* s, int64_t n, float* o) { scale_row_impl(x, s, n, o); }
LAMP_VECTOR_CLONES void scale_row(const double* x, const float* s, int64_t n, float* o) { scale_row_impl(x, s, n, o); }

}  // namespace lamp
