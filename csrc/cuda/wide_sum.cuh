// Exact sums of squares on the GPU: a fixed-point integer of K 64-bit limbs (limb 0 least significant),
// whose unit is 2^kBase. Every square of a representable weight is an integer multiple of that unit, so
// sums are exact and independent of order, and to_double() rounds once, to nearest even: the contract's
// S(u) (csrc/cpu/exact_sum.h does the same with a wider fixed-point range).
//
//   32-bit kinds (bf16, fp16, fp32): unit 2^-298 (fp32's smallest square, 2^-149 squared); the largest
//     square is below 2^256, a sum of 2^31 of them below 2^287: 585 bits, K = 10.
//   fp64: unit 2^-2148; magnitudes are below 2^496 (the API refuses larger ones), sums below 2^1024:
//     3172 bits, K = 50.
//
// Limbs are only ever indexed by compile-time constants (fully unrolled loops with predicated selects), so a
// Wide is kept in registers, not in a runtime-indexed local array; the 32-bit kinds' kernels fit in
// registers, while fp64's 50 limbs exceed the register file and ptxas spills some of them (scan_scores: about
// 0.9 KB of stack per thread for sm_90). Compiles as plain C++ too (tests on the CPU).
#pragma once

#include <cstdint>
#include <cmath>

#ifdef __CUDACC__
#define LAMP_HD __host__ __device__ __forceinline__
#else
#define LAMP_HD inline
#endif

namespace lamp_cuda {

// The scan's tiles: 4096 sorted elements, 256 threads of 16.
constexpr int kScanThreads = 256, kScanTile = 4096;

LAMP_HD int clz64(uint64_t x) {
#ifdef __CUDA_ARCH__
  return __clzll(static_cast<long long>(x));
#else
  return x ? __builtin_clzll(x) : 64;
#endif
}

LAMP_HD void mul64(uint64_t a, uint64_t b, uint64_t& hi, uint64_t& lo) {
#ifdef __CUDA_ARCH__
  lo = a * b;
  hi = __umul64hi(a, b);
#else
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  lo = static_cast<uint64_t>(p);
  hi = static_cast<uint64_t>(p >> 64);
#endif
}

template <int K>
struct Wide {
  uint64_t limb[K];

  LAMP_HD static Wide zero() {
    Wide w;
#pragma unroll
    for (int i = 0; i < K; ++i) w.limb[i] = 0;
    return w;
  }

  LAMP_HD void add(const Wide& o) {
    uint64_t carry = 0;
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const uint64_t s = limb[i] + o.limb[i];
      const uint64_t c1 = s < limb[i];
      limb[i] = s + carry;
      carry = c1 | (limb[i] < s);
    }
  }

  // += (hi:lo) * 2^shift, 0 <= shift and the value fits (the caller's ranges guarantee it).
  LAMP_HD void add_shifted(uint64_t hi, uint64_t lo, int shift) {
    const int at = shift >> 6, b = shift & 63;
    const uint64_t p0 = lo << b;
    const uint64_t p1 = b ? (hi << b) | (lo >> (64 - b)) : hi;
    const uint64_t p2 = b ? hi >> (64 - b) : 0;
    uint64_t carry = 0;
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const uint64_t part = i == at ? p0 : i == at + 1 ? p1 : i == at + 2 ? p2 : 0;
      const uint64_t s = limb[i] + part;
      const uint64_t c1 = s < part;
      limb[i] = s + carry;
      carry = c1 | (limb[i] < s);
    }
  }

  // The value times 2^unit_exp, rounded once to the nearest double (ties to even). The caller guarantees
  // the result is zero or normal.
  LAMP_HD double to_double(int unit_exp) const {
    int top = -1;
    uint64_t high = 0, next = 0, below = 0, or_so_far = 0, prev = 0;
#pragma unroll
    for (int i = 0; i < K; ++i) {  // the most significant nonzero limb, the one under it, and the rest
      if (limb[i]) {
        top = i;
        high = limb[i];
        next = prev;
        below = or_so_far;
      }
      if (i > 0) or_so_far |= prev;
      prev = limb[i];
    }
    if (top < 0) return 0.0;
    const int lz = clz64(high);
    const uint64_t m64 = lz ? (high << lz) | (next >> (64 - lz)) : high;  // the top 64 bits, msb set
    const bool sticky = below != 0 || (lz ? (next << lz) : next) != 0;
    uint64_t mant = m64 >> 11;  // 53 bits
    const uint64_t rest = m64 & 0x7FF;
    int exp = 64 * top + 63 - lz - 52 + unit_exp;  // mant's unit
    if (rest > 0x400 || (rest == 0x400 && (sticky || (mant & 1)))) {
      if (++mant == (uint64_t(1) << 53)) {
        mant >>= 1;
        ++exp;
      }
    }
    return std::scalbn(static_cast<double>(mant), exp);
  }
};

// Per dtype: key -> integer significand M and the shift that places M^2 in the Wide's unit; x = |w|.
// dtype codes as in csrc/cpu/float_keys.h: bf16 = 0, fp16 = 1, fp32 = 2, fp64 = 3.
template <int Code>
struct Format;
template <>
struct Format<0> {  // bf16: 8 exponent, 7 fraction bits; |w| = M 2^(E'-134)
  using Bits = uint16_t;
  static constexpr int K = 10, kUnit = -298, kFrac = 7, kBias = 127 + 7, kKeyBits = 15;
};
template <>
struct Format<1> {  // fp16: 5 exponent, 10 fraction bits; |w| = M 2^(E'-25)
  using Bits = uint16_t;
  static constexpr int K = 10, kUnit = -298, kFrac = 10, kBias = 15 + 10, kKeyBits = 15;
};
template <>
struct Format<2> {  // fp32: 8 exponent, 23 fraction bits; |w| = M 2^(E'-150)
  using Bits = uint32_t;
  static constexpr int K = 10, kUnit = -298, kFrac = 23, kBias = 127 + 23, kKeyBits = 31;
};
template <>
struct Format<3> {  // fp64: 11 exponent, 52 fraction bits; |w| = M 2^(E'-1075)
  using Bits = uint64_t;
  static constexpr int K = 50, kUnit = -2148, kFrac = 52, kBias = 1023 + 52, kKeyBits = 63;
};

struct Decoded {
  uint64_t m;     // integer significand
  int scale;      // |w| = m * 2^scale
};

template <int Code>
LAMP_HD Decoded decode(uint64_t key) {
  using F = Format<Code>;
  const uint64_t e = key >> F::kFrac, frac = key & ((uint64_t(1) << F::kFrac) - 1);
  const uint64_t m = e ? frac | (uint64_t(1) << F::kFrac) : frac;
  return {m, static_cast<int>(e ? e : 1) - F::kBias};
}

// acc += key's |w|^2, exactly.
template <int Code>
LAMP_HD void add_square(Wide<Format<Code>::K>& acc, uint64_t key) {
  const Decoded d = decode<Code>(key);
  uint64_t hi, lo;
  mul64(d.m, d.m, hi, lo);
  if (hi | lo) acc.add_shifted(hi, lo, 2 * d.scale - Format<Code>::kUnit);
}

// The contract's score: 0 for zero weights, else fl(fl(x^2) / S) with S the correctly rounded suffix sum.
template <int Code>
LAMP_HD double score(uint64_t key, double suffix_sum) {
  if (key == 0) return 0.0;
  const Decoded d = decode<Code>(key);
  const double x = std::scalbn(static_cast<double>(d.m), d.scale);
#ifdef __CUDA_ARCH__
  return __ddiv_rn(__dmul_rn(x, x), suffix_sum);
#else
  volatile double sq = x * x;  // two separate roundings, as on the device
  return sq / suffix_sum;
#endif
}

}  // namespace lamp_cuda
