// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

/// \file
/// NaN and infinity tests that survive -ffast-math.
///
/// -ffinite-math-only (part of -ffast-math) lets the compiler fold std::isnan(x), x != x
/// and x == inf to constants, which would silently drop smax's argument checks and its
/// NaN / limit-case policy. These tests look at the bits instead, which no floating-point
/// flag can assume away. long double is tested with std:: functions (exact without
/// -ffast-math; under it, long double inputs lose the NaN/inf policy).

#if defined(__FAST_MATH__) && !defined(SMAX_QUIET_FAST_MATH)
#pragma message(                                                                          \
    "smax: built with -ffast-math. Kept: finite logits never overflow, -inf entries get " \
    "probability 0, T = 0 / T = inf limits, argument checks. Lost: NaN logits may not "   \
    "turn their distribution NaN; subnormal probabilities flush to 0. See the README. "   \
    "Define SMAX_QUIET_FAST_MATH to silence this note.")
#endif

namespace smax::detail {

template <typename T>
struct float_bits;
template <>
struct float_bits<float> {
  using type = std::uint32_t;
  static constexpr type exponent = 0x7f800000u;
  static constexpr type mantissa = 0x007fffffu;
};
template <>
struct float_bits<double> {
  using type = std::uint64_t;
  static constexpr type exponent = 0x7ff0000000000000ull;
  static constexpr type mantissa = 0x000fffffffffffffull;
};

template <typename T>
inline constexpr bool has_float_bits = std::is_same_v<T, float> || std::is_same_v<T, double>;

template <typename T>
typename float_bits<T>::type bits_of(T x) {
  typename float_bits<T>::type u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

/// x is NaN.
template <typename T>
bool is_nan(T x) {
  if constexpr (has_float_bits<T>) {
    const auto u = bits_of(x);
    return (u & float_bits<T>::exponent) == float_bits<T>::exponent &&
           (u & float_bits<T>::mantissa) != 0;
  } else {
    return std::isnan(x);
  }
}

/// x is +inf or -inf.
template <typename T>
bool is_inf(T x) {
  if constexpr (has_float_bits<T>) {
    const auto u = bits_of(x);
    return (u & float_bits<T>::exponent) == float_bits<T>::exponent &&
           (u & float_bits<T>::mantissa) == 0;
  } else {
    return std::isinf(x);
  }
}

/// x is neither NaN nor infinite.
template <typename T>
bool is_finite(T x) {
  if constexpr (has_float_bits<T>) {
    return (bits_of(x) & float_bits<T>::exponent) != float_bits<T>::exponent;
  } else {
    return std::isfinite(x);
  }
}

/// Every one of x[0..n) is finite: one pass over the bits, without an early exit, which
/// compilers vectorise (a loop of is_finite they leave scalar).
template <typename T>
bool all_finite_bits(const T* x, std::ptrdiff_t n) {
  if constexpr (has_float_bits<T>) {
    using U = typename float_bits<T>::type;
    U infinite = 0;
    for (std::ptrdiff_t i = 0; i < n; ++i) {
      infinite |= U((bits_of(x[i]) & float_bits<T>::exponent) == float_bits<T>::exponent);
    }
    return infinite == 0;
  } else {
    bool finite = true;
    for (std::ptrdiff_t i = 0; i < n; ++i) finite = finite && is_finite(x[i]);
    return finite;
  }
}

/// Every coefficient of the Eigen object a is finite (Eigen's isFinite() folds to true
/// under -ffinite-math-only).
template <typename A>
bool all_finite(const A& a) {
  for (decltype(a.size()) i = 0; i < a.size(); ++i) {
    if (!is_finite(a.coeff(i))) return false;
  }
  return true;
}

/// floor(log2 |x|) for a finite x != 0 (std::ilogb), from the exponent bits where x is
/// normal: the loss kernels take it per sample, where a library call would show.
template <typename T>
int exponent_of(T x) {
  if constexpr (has_float_bits<T>) {
    constexpr int mantissa_bits = std::numeric_limits<T>::digits - 1;
    const auto e = static_cast<int>((bits_of(x) & float_bits<T>::exponent) >> mantissa_bits);
    if (e != 0) return e - (std::numeric_limits<T>::max_exponent - 1);
  }
  return static_cast<int>(std::ilogb(x));
}

/// 2^e, exactly, for e in the normal range of T (built from the exponent bits).
template <typename T>
T pow2_of(int e) {
  if constexpr (has_float_bits<T>) {
    constexpr int mantissa_bits = std::numeric_limits<T>::digits - 1;
    using U = typename float_bits<T>::type;
    const U u = static_cast<U>(e + (std::numeric_limits<T>::max_exponent - 1)) << mantissa_bits;
    T x;
    std::memcpy(&x, &u, sizeof x);
    return x;
  } else {
    return std::ldexp(T(1), e);
  }
}

/// x is +inf.
template <typename T>
bool is_pos_inf(T x) {
  return is_inf(x) && x > T(0);
}

/// x is -inf.
template <typename T>
bool is_neg_inf(T x) {
  return is_inf(x) && x < T(0);
}

}  // namespace smax::detail
