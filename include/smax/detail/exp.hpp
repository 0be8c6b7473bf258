// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include <Eigen/Core>

/// \file
/// A vectorised exp with the accuracy and range softmax needs.
///
/// Why not Eigen's pexp: in Eigen 3.4 it is up to 4.5 ULP off for float on AVX-512, and it
/// is wrong in the subnormal range (it returns ~1e-39 for float inputs below -88.4 instead
/// of the subnormal or zero the true value rounds to). Probabilities there must be the
/// correctly scaled subnormal or exactly 0, so smax carries its own: Cody-Waite reduction
/// x = k ln2 + r with |r| <= ln2/2, a Taylor polynomial of exp(r) whose truncation error is
/// below 0.05 ULP, and Eigen's pldexp, which scales by 2^k with a single final rounding
/// even when the result is subnormal. Measured error: <= 1 ULP (float and double).

#if defined(__GNUC__)
#pragma GCC diagnostic push
// Packet types (__m256 ...) as template arguments drop their alignment attributes; harmless
// here, as Eigen itself notes in DisableStupidWarnings.h.
#pragma GCC diagnostic ignored "-Wignored-attributes"
#if !defined(__clang__)
// GCC 12 reports _mm512_undefined_* inside AVX-512 intrinsics as (maybe-)uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

namespace smax::detail {

template <typename T>
struct exp_constants;

template <>
struct exp_constants<float> {
  // Below lo every result rounds to 0; above hi to +inf.
  static constexpr float lo = -104.0f;
  static constexpr float hi = 89.0f;
  static constexpr float log2e = 1.44269504088896341f;
  // ln2 split so that k * ln2_hi is exact for every k in range.
  static constexpr float ln2_hi = 0.693359375f;
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr int degree = 7;
};

template <>
struct exp_constants<double> {
  static constexpr double lo = -746.0;
  static constexpr double hi = 710.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr int degree = 13;
};

/// 1/j! for j = 0..degree, computed in long double and rounded once to T, at compile time.
template <typename T>
constexpr std::array<T, exp_constants<T>::degree + 1> taylor_coefficients() {
  std::array<T, exp_constants<T>::degree + 1> c{};
  long double f = 1.0L;
  for (int j = 0; j <= exp_constants<T>::degree; ++j) {
    if (j > 1) f *= static_cast<long double>(j);
    c[static_cast<std::size_t>(j)] = static_cast<T>(1.0L / f);
  }
  return c;
}

/// True when smax has a vectorised exp for T on this target.
template <typename T>
inline constexpr bool has_packet_exp =
    (std::is_same_v<T, float> ||
     std::is_same_v<T, double>)&&Eigen::internal::packet_traits<T>::Vectorizable
    && (Eigen::internal::packet_traits<T>::size > 1);

/// exp of every lane of x; NaN stays NaN, -inf gives 0, +inf gives +inf.
template <typename Packet>
EIGEN_ALWAYS_INLINE Packet pexp_accurate(const Packet& x) {
  namespace ei = Eigen::internal;
  using T = typename ei::unpacket_traits<Packet>::type;
  using C = exp_constants<T>;
  const Packet xc = ei::pmin(ei::pmax(x, ei::pset1<Packet>(C::lo)), ei::pset1<Packet>(C::hi));
  const Packet k =
      ei::pfloor(ei::pmadd(xc, ei::pset1<Packet>(C::log2e), ei::pset1<Packet>(T(0.5))));
  Packet r = ei::pmadd(k, ei::pset1<Packet>(-C::ln2_hi), xc);
  r = ei::pmadd(k, ei::pset1<Packet>(-C::ln2_lo), r);
  // Horner on the Taylor series sum_{j <= degree} r^j / j!.
  constexpr auto c = taylor_coefficients<T>();
  Packet p = ei::pset1<Packet>(c[C::degree]);
  for (int j = C::degree - 1; j >= 0; --j) p = ei::pmadd(p, r, ei::pset1<Packet>(c[j]));
  Packet result;
  if constexpr (std::is_same_v<T, float>) {
    // 2^k by building the exponent field when 2^k is a normal number in every lane;
    // pldexp's exact multi-step scaling is needed only near underflow and overflow.
    const Packet outside = ei::por(ei::pcmp_lt(k, ei::pset1<Packet>(T(-126))),
                                   ei::pcmp_lt(ei::pset1<Packet>(T(127)), k));
    if (ei::predux_any(outside)) {
      result = ei::pldexp(p, k);
    } else {
      result = ei::pldexp_fast_impl<Packet>::run(p, k);
    }
  } else {
    result = ei::pldexp(p, k);
  }
  // pmin/pmax do not promise to keep NaN; put it back.
  return ei::pselect(ei::pcmp_eq(x, x), result, x);
}

/// An Eigen functor for exp(x) that vectorises with pexp_accurate.
template <typename T>
struct exp_op {
  // Scalars (Eigen's unaligned heads and tails) take the same packet code, so a result
  // never depends on the alignment of the data it came from.
  T operator()(const T& x) const {
    if constexpr (has_packet_exp<T>) {
      using Packet = typename Eigen::internal::packet_traits<T>::type;
      return Eigen::internal::pfirst(pexp_accurate(Eigen::internal::pset1<Packet>(x)));
    } else {
      return std::exp(x);
    }
  }
  template <typename Packet>
  EIGEN_ALWAYS_INLINE Packet packetOp(const Packet& x) const {
    return pexp_accurate(x);
  }
};

}  // namespace smax::detail

namespace Eigen::internal {
template <typename T>
struct functor_traits<smax::detail::exp_op<T>> {
  enum { Cost = 30 * NumTraits<T>::MulCost, PacketAccess = smax::detail::has_packet_exp<T> };
};
}  // namespace Eigen::internal

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
