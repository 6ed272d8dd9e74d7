// Fast exact rounding of "an exact sum plus a small integer multiple of its unit".
//
// Along a layer's descending order the suffix sum of the element at hand is S = S' + J * 2^u, where S' is the
// exact sum of everything of larger magnitude and J * 2^u the squares of the current bin (or key) from this
// element on. If every element of the bin is M * 2^e with an integer significand M, the bin's squares are
// integer multiples of 2^u, u = 2e, and so is S': larger magnitudes never have a smaller exponent. So S' = A * 2^u
// with an integer A, and the score needs fl(S) = fl((A + J) * 2^u), for up to n values of J per bin.
//
// RoundingBase holds A in a form that makes that O(1) for any size of A (it can have hundreds of bits when the
// layer spans many binades), for J < 2^80 (bf16/fp16: J < 2^31 * 2^22; fp32: J < 2^31 * 2^48):
//   A < 2^127:  A exactly (shift = 0); A + J fits in 128 bits and is rounded directly.
//   otherwise:  A = top * 2^shift + B with top of exactly 127 bits, B < 2^shift. N = A + J then has 127 or 128
//               bits above 2^shift, so float64's rounding position (53 bits down) lies far above 2^shift and
//               the bits below 2^shift only matter as a carry into top and as a sticky bit. B is kept as its
//               low 128 bits plus two flags for the rest (all zero, all ones), enough to get both exactly.
// The result is then rounded once (nearest, ties to even), like ExactSum::to_double.
#pragma once

#include <cstdint>
#include <cstring>

#include "exact_sum.h"

namespace lamp {

// fl(n * 2^exp2 + sticky * tiny) as a double, for n > 0, where `sticky` says that nonzero bits lie below n's
// lowest bit and n has at least 55 significant bits whenever sticky is set. The result must be a normal
// double (the callers' sums always are; see the magnitude limits in layers.py).
inline double round_u128(u128 n, bool sticky, int exp2) {
  const uint64_t hi = static_cast<uint64_t>(n >> 64);
  const int lz = hi ? __builtin_clzll(hi) : 64 + __builtin_clzll(static_cast<uint64_t>(n));
  const u128 norm = n << lz;  // leading one at bit 127
  uint64_t lead = static_cast<uint64_t>(norm >> 64);
  lead |= static_cast<uint64_t>((static_cast<uint64_t>(norm) != 0) | sticky);  // below the rounding bit
  // lead in [2^63, 2^64): keep 53 bits, round the other 11 to nearest, ties to even.
  uint64_t m = lead >> 11;
  const uint64_t r = lead & 0x7FF;
  m += static_cast<uint64_t>((r > 0x400) | ((r == 0x400) & (m & 1)));
  // value = m * 2^k, k = exp2 - lz + 75, with m in [2^52, 2^53]. Adding m (its implicit bit included) to the
  // exponent field k + 1074 gives the bits of m * 2^k; m = 2^53 carries into the exponent, as it should.
  const int k = exp2 - lz + 75;
  const uint64_t bits = (static_cast<uint64_t>(k + 1074) << 52) + m;
  double out;
  std::memcpy(&out, &bits, 8);
  return out;
}

struct RoundingBase {
  u128 top = 0;       // A itself when shift == 0, else A >> shift (exactly 127 bits)
  u128 low = 0;       // B mod 2^min(shift, 128)
  int shift = 0;
  int unit = 0;       // u: A and J count units of 2^u
  bool high_zero = true, high_ones = true;  // bits [128, shift) of B: all zero / all one (both if none)

  RoundingBase() = default;

  // A = acc / 2^unit; acc must be an integer multiple of 2^unit, with unit >= ExactSum::kBase.
  RoundingBase(const ExactSum& acc, int unit_exp) : unit(unit_exp) {
    const int p0 = unit_exp - ExactSum::kBase;  // bit of acc that weighs 2^unit
    int t = acc.top;
    while (t >= 0 && acc.limb[t] == 0) --t;
    if (t < 0) return;  // A = 0
    const int highest = 64 * t + 63 - __builtin_clzll(acc.limb[t]);
    const int length = highest - p0 + 1;  // bits of A
    if (length <= 127) {
      top = bits(acc, p0, 127);
      return;
    }
    shift = length - 127;
    top = bits(acc, p0 + shift, 127);
    low = bits(acc, p0, shift < 128 ? shift : 128);
    for (int p = p0 + 128; p < p0 + shift; p += 64) {
      const int width = p0 + shift - p < 64 ? p0 + shift - p : 64;
      const uint64_t piece = static_cast<uint64_t>(bits(acc, p, width));
      const uint64_t ones = width == 64 ? ~uint64_t{0} : (uint64_t{1} << width) - 1;
      high_zero = high_zero && piece == 0;
      high_ones = high_ones && piece == ones;
    }
  }

  // fl((A + j) * 2^unit) for j < 2^80.
  double round_plus(u128 j) const {
    if (shift == 0) return round_u128(top + j, false, unit);
    u128 carry;
    bool sticky;
    if (shift < 128) {  // low < 2^127: low + j cannot overflow
      const u128 x = low + j;
      carry = x >> shift;
      sticky = (x & ((u128{1} << shift) - 1)) != 0;
    } else {  // j < 2^80 carries at most 1 out of the low 128 bits; it reaches top only through all-one bits
      const u128 x = low + j;
      const bool c1 = x < low;
      carry = c1 && high_ones;
      sticky = x != 0 || (c1 ? !high_ones : !high_zero);
    }
    return round_u128(top + carry, sticky, unit + shift);
  }

 private:
  // `count` (<= 128) bits of acc starting at bit p (bit 0 weighs 2^kBase); bits beyond the limbs are 0.
  static u128 bits(const ExactSum& acc, int p, int count) {
    auto limb = [&acc](int i) -> uint64_t { return i < ExactSum::kLimbs ? acc.limb[i] : 0; };
    const int li = p >> 6, sh = p & 63;
    const uint64_t w0 = limb(li), w1 = limb(li + 1), w2 = limb(li + 2);
    const uint64_t lo = sh ? (w0 >> sh) | (w1 << (64 - sh)) : w0;
    const uint64_t hi = sh ? (w1 >> sh) | (w2 << (64 - sh)) : w1;
    u128 v = (static_cast<u128>(hi) << 64) | lo;
    if (count < 128) v &= (u128{1} << count) - 1;
    return v;
  }
};

}  // namespace lamp
