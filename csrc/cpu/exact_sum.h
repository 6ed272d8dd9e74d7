// Exact sums of squares of floating-point numbers, rounded once to float64.
//
// The LAMP denominator S(u) = sum_{v >= u} w_v^2 is defined (DESIGN-NOTES §1, README "Numerics") as the
// exact real sum of the exact squares, rounded to the nearest float64 (ties to even). An exact sum does not
// depend on the order of summation, so a sort-based scan, a histogram over bit patterns and a parallel
// reduction all produce the same bits -- which is what lets every backend return identical masks.
//
// A square of a float64 value M * 2^X (M < 2^53) is M^2 * 2^(2X): at most 106 significant bits, exponents
// from 2^-2148 (smallest subnormal squared) upwards. ExactSum keeps a fixed-point integer of 68 64-bit
// limbs whose lowest bit weighs 2^kBase, enough for every square of any supported dtype and 2^31 terms.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace lamp {

using u128 = unsigned __int128;

struct ExactSum {
  static constexpr int kLimbs = 68;
  static constexpr int kBase = -2240;  // weight of bit 0 of limb 0; a multiple of 64
  uint64_t limb[kLimbs];
  int top = -1;     // highest limb that may be nonzero
  int bottom = kLimbs;  // no limb below this one was ever written (bounds the sticky-bit scan)

  ExactSum() { std::memset(limb, 0, sizeof(limb)); }

  // Adds v * 2^exp2. Requires exp2 >= kBase (true for every square of a finite float).
  void add(u128 v, int exp2) {
    if (v == 0) return;
    const int off = exp2 - kBase;
    const int li = off >> 6, sh = off & 63;
    if (li < bottom) bottom = li;
    const u128 low = v << sh;
    uint64_t w[3] = {static_cast<uint64_t>(low), static_cast<uint64_t>(low >> 64),
                     sh ? static_cast<uint64_t>(v >> (128 - sh)) : 0};
    uint64_t carry = 0;
    int i = li;
    for (int j = 0; j < 3; ++j, ++i) {
      const u128 s = static_cast<u128>(limb[i]) + w[j] + carry;
      limb[i] = static_cast<uint64_t>(s);
      carry = static_cast<uint64_t>(s >> 64);
    }
    while (carry) {  // a carry out of the third limb ripples up
      const u128 s = static_cast<u128>(limb[i]) + carry;
      limb[i] = static_cast<uint64_t>(s);
      carry = static_cast<uint64_t>(s >> 64);
      ++i;
    }
    if (i - 1 > top) top = i - 1;
  }

  // v * j * 2^exp2 for v < 2^106, j < 2^31, split so every partial product fits in 128 bits.
  void add_multiple(u128 v, uint64_t j, int exp2) {
    add(v * (j & 0xFFFF), exp2);
    add(v * (j >> 16), exp2 + 16);
  }

  // Nearest float64, ties to even. The 64 leading bits are converted with a sticky bit OR-ed into the lowest
  // one (that bit lies below float64's rounding position, so the conversion rounds as the exact value would).
  // Callers keep results in the normal float64 range (see the magnitude limits checked in Python).
  double to_double() const {
    int t = top;
    while (t >= 0 && limb[t] == 0) --t;
    if (t < 0) return 0.0;
    const uint64_t hi = limb[t];
    const uint64_t lo = t > 0 ? limb[t - 1] : 0;
    bool sticky = false;
    for (int i = t - 2; i >= bottom && !sticky; --i) sticky = limb[i] != 0;
    const int lz = __builtin_clzll(hi);
    const uint64_t lead = lz ? (hi << lz) | (lo >> (64 - lz)) : hi;
    const uint64_t rest = lz ? (lo << lz) : lo;
    sticky = sticky || rest != 0;
    const double d = static_cast<double>(lead | static_cast<uint64_t>(sticky));  // in [2^63, 2^64]
    // Scale by 2^(64t + kBase - lz) by adding to the exponent field: exact, and cheaper than ldexp, because
    // the result is a normal float64 (the magnitude limits of layers.py keep every sum within [2^-992, 2^1023)).
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    bits += static_cast<uint64_t>(static_cast<int64_t>(64 * t + kBase - lz)) << 52;
    double out;
    std::memcpy(&out, &bits, 8);
    return out;
  }
};

// x = mant * 2^exp2 exactly, for a finite non-negative double.
struct Decomposed {
  uint64_t mant;
  int exp2;
};

inline Decomposed decompose(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const int e = static_cast<int>((bits >> 52) & 0x7FF);
  const uint64_t f = bits & ((uint64_t{1} << 52) - 1);
  if (e == 0) return {f, -1074};
  return {f | (uint64_t{1} << 52), e - 1075};
}

// Exact square of x as (mant^2, 2*exp2).
inline void add_square(ExactSum& acc, double x) {
  const Decomposed d = decompose(x);
  acc.add(static_cast<u128>(d.mant) * d.mant, 2 * d.exp2);
}

inline void add_square_multiple(ExactSum& acc, double x, uint64_t count) {
  const Decomposed d = decompose(x);
  acc.add_multiple(static_cast<u128>(d.mant) * d.mant, count, 2 * d.exp2);
}

// LAMP score of an element with magnitude x whose suffix sum (itself included) is s: fl(fl(x*x) / s).
inline double lamp_score(double x, double s) { return x == 0.0 ? 0.0 : (x * x) / s; }

}  // namespace lamp
