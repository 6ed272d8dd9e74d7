// Magnitude keys and histogram bins for each weight dtype.
//
// key(w) = the bit pattern of |w| (sign bit cleared). For finite values it is monotone in |w|, so the
// contract's order (|w|, flat index) is the order of (key, flat index).
//
// bin(key) is a 16-bit prefix of the key:
//   bf16, fp16  -> the key itself (2^15 bins, one value each: an exact counting sort);
//   fp32        -> key >> 15 (exponent + 8 mantissa bits);  fp64 -> key >> 47 (exponent + 5 mantissa bits).
// Every element of an fp32/fp64 bin shares the exponent, so the bin's exact sum of squares is
// sum(M^2) * 2^(2X) with M the integer significand; sum(M^2) is stored as 27-bit limbs in int64 (each
// limb sum stays below 2^60 for layers under 2^31 elements), normalised (normalize_limbs) in every output.
// The pure-torch twin in lamp_kernels/kernels_torch.py returns the same normalised limbs, so summaries from
// any device can be mixed.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

namespace lamp {

enum DtypeCode : int { kBF16 = 0, kF16 = 1, kF32 = 2, kF64 = 3 };

constexpr int kLimbBits = 27;
constexpr int64_t kLimbMask = (int64_t{1} << kLimbBits) - 1;

inline bool exact_bins(int code) { return code == kBF16 || code == kF16; }
inline int num_bins(int code) { return exact_bins(code) ? (1 << 15) : (1 << 16); }
inline int bin_shift(int code) { return code == kF32 ? 15 : code == kF64 ? 47 : 0; }
inline int num_limbs(int code) { return code == kF32 ? 2 : code == kF64 ? 4 : 0; }

// |value| of a key, as an exact double.
inline double key_value(int code, int64_t key) {
  switch (code) {
    case kBF16: {
      const uint32_t b = static_cast<uint32_t>(key) << 16;
      float f;
      std::memcpy(&f, &b, 4);
      return f;
    }
    case kF16:
      return static_cast<float>(c10::Half(static_cast<uint16_t>(key), c10::Half::from_bits()));
    case kF32: {
      const uint32_t b = static_cast<uint32_t>(key);
      float f;
      std::memcpy(&f, &b, 4);
      return f;
    }
    default: {
      const uint64_t b = static_cast<uint64_t>(key);
      double d;
      std::memcpy(&d, &b, 8);
      return d;
    }
  }
}

// Exponent X shared by a range bin: every element is M * 2^X with M an integer significand.
inline int bin_exponent(int code, int bin) {
  if (code == kF32) {
    const int e = bin >> 8;
    return e == 0 ? -149 : e - 150;
  }
  const int e = bin >> 5;
  return e == 0 ? -1074 : e - 1075;
}

// The integer significand M of a bf16/fp16/fp32 key and the exponent e of its lowest bit: |w| = M * 2^e.
inline uint64_t significand(int code, uint64_t key) {
  switch (code) {
    case kBF16: return (key >> 7) ? (key & 0x7F) | 0x80 : key;
    case kF16: return (key >> 10) ? (key & 0x3FF) | 0x400 : key;
    default: return (key >> 23) ? (key & 0x7FFFFF) | 0x800000 : key;
  }
}

inline int lsb_exponent(int code, uint64_t key) {
  switch (code) {
    case kBF16: return (key >> 7) ? static_cast<int>(key >> 7) - 134 : -133;
    case kF16: return (key >> 10) ? static_cast<int>(key >> 10) - 25 : -24;
    default: return (key >> 23) ? static_cast<int>(key >> 23) - 150 : -149;
  }
}

template <typename scalar_t>
struct Keys;

template <>
struct Keys<c10::BFloat16> {
  using key_t = uint16_t;
  static constexpr int code = kBF16;
  static key_t key(c10::BFloat16 x) { return x.x & 0x7FFF; }
};

template <>
struct Keys<c10::Half> {
  using key_t = uint16_t;
  static constexpr int code = kF16;
  static key_t key(c10::Half x) { return x.x & 0x7FFF; }
};

template <>
struct Keys<float> {
  using key_t = uint32_t;
  static constexpr int code = kF32;
  static key_t key(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b & 0x7FFFFFFFu;
  }
};

template <>
struct Keys<double> {
  using key_t = uint64_t;
  static constexpr int code = kF64;
  static key_t key(double x) {
    uint64_t b;
    std::memcpy(&b, &x, 8);
    return b & 0x7FFFFFFFFFFFFFFFull;
  }
};

// The canonical form of a bin's limb sums: every limb but the last below 2^27 (carries moved up). The value
// sum_l limbs[l] * 2^(27 l) is unchanged; kernels that add per-element splits in different orders or
// groupings agree once normalised, so every summary kernel returns this form.
inline void normalize_limbs(int code, int64_t* limbs) {
  const int n = num_limbs(code);
  for (int l = 0; l + 1 < n; ++l) {
    limbs[l + 1] += limbs[l] >> kLimbBits;
    limbs[l] &= kLimbMask;
  }
}

// Adds the 27-bit limbs of M^2 for the element with this key (fp32 / fp64 only) into limbs[0..].
// fp32: M < 2^24, M^2 < 2^48 -> two limbs. fp64: M = a*2^27 + b (a < 2^26, b < 2^27) and
// M^2 = a^2*2^54 + 2ab*2^27 + b^2, each term split into 27-bit halves -> four limbs (not normalised; sums
// of these are normalised before they leave a kernel).
inline void add_square_limbs(int code, uint64_t key, int64_t* limbs) {
  if (code == kF32) {
    const uint64_t e = key >> 23, f = key & 0x7FFFFF;
    const uint64_t m = e ? (f | 0x800000) : f;
    const uint64_t sq = m * m;
    limbs[0] += static_cast<int64_t>(sq & kLimbMask);
    limbs[1] += static_cast<int64_t>(sq >> kLimbBits);
  } else {
    const uint64_t e = key >> 52, f = key & ((uint64_t{1} << 52) - 1);
    const uint64_t m = e ? (f | (uint64_t{1} << 52)) : f;
    const uint64_t a = m >> kLimbBits, b = m & kLimbMask;
    const uint64_t bb = b * b, ab2 = 2 * a * b, aa = a * a;
    limbs[0] += static_cast<int64_t>(bb & kLimbMask);
    limbs[1] += static_cast<int64_t>((bb >> kLimbBits) + (ab2 & kLimbMask));
    limbs[2] += static_cast<int64_t>((ab2 >> kLimbBits) + (aa & kLimbMask));
    limbs[3] += static_cast<int64_t>(aa >> kLimbBits);
  }
}

}  // namespace lamp
