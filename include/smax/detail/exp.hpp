// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

/// \file
/// A vectorised exp with the accuracy and range softmax needs.
///
/// Why not Eigen's pexp: in Eigen 3.4 it is up to 4.5 ULP off for float on AVX-512, and it
/// is wrong in the subnormal range (it returns ~1e-39 for float inputs below -88.4 instead
/// of the subnormal or zero the true value rounds to). Probabilities there must be the
/// correctly scaled subnormal or exactly 0, so smax carries its own:
/// - x = k ln2 + r with |r| <= ln2/2: k rounded by adding a 1.5 * 2^(mantissa bits)
///   "magic" constant in the same FMA that multiplies by log2(e), so the low bits of that
///   sum already hold the biased exponent k + bias; r by a two-term (Cody-Waite) reduction.
/// - exp(r) by a polynomial 1 + r + c2 r^2 + ... fitted by a Remez exchange for the smallest
///   relative error on [-ln2/2, ln2/2] (degree 6 for float: 3.1e-9 = 0.03 ULP; degree 11
///   for double: 3.7e-18), evaluated by Horner with FMAs. Fitting script: see
///   benchmarks/exp_accuracy.cpp.
/// - 2^k by shifting those low bits into the exponent field when every lane's 2^k is a
///   normal number; otherwise (results near underflow or overflow) Eigen's pldexp, which
///   scales in exact steps, so a subnormal result is rounded once and results below half
///   the smallest subnormal are exactly 0.
/// Measured error (every float input; a dense sweep of doubles): <= 1 ULP with FMA, see
/// benchmarks/README.md; without FMA (SSE2 builds) the multiplies and adds round separately:
/// 1.13 (float) / 1.19 (double) ULP on tests/exp_test.cpp's grid.

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
  // 1.5 * 2^23 + 127: x * log2e + magic rounds to an integer whose low bits are k + 127.
  static constexpr float magic = 12582912.0f + 127.0f;
  static constexpr int mantissa_bits = 23;
  static constexpr float min_k = -126.0f;  // 2^k normal for min_k <= k <= max_k
  static constexpr float max_k = 127.0f;
  // From here to 0, k = round(x log2e) >= min_k: pexp_normal applies (margin for the FMA).
  static constexpr float normal_lo = -87.0f;
  static constexpr int degree = 6;
  // Remez fit of exp(r) = 1 + r + c2 r^2 + ... on [-0.3469, 0.3469], relative error 3.1e-9.
  static constexpr float poly[degree + 1] = {
      1.0f, 1.0f, 0x1.fffffcp-2f, 0x1.55549p-3f, 0x1.5558f4p-5f, 0x1.123a62p-7f, 0x1.6a236p-10f};
};

template <>
struct exp_constants<double> {
  static constexpr double lo = -746.0;
  static constexpr double hi = 710.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double magic = 6755399441055744.0 + 1023.0;  // 1.5 * 2^52 + 1023
  static constexpr int mantissa_bits = 52;
  static constexpr double min_k = -1022.0;
  static constexpr double max_k = 1023.0;
  static constexpr double normal_lo = -708.0;
  static constexpr int degree = 11;
  // Remez fit on [-0.3469, 0.3469], relative error 3.7e-18.
  static constexpr double poly[degree + 1] = {1.0,
                                              1.0,
                                              0x1.000000000000ap-1,
                                              0x1.55555555554f9p-3,
                                              0x1.55555555507fap-5,
                                              0x1.1111111127e5ap-7,
                                              0x1.6c16c18448e1ap-10,
                                              0x1.a01a0129be2d5p-13,
                                              0x1.a01999b3e4cbcp-16,
                                              0x1.71df261ffe551p-19,
                                              0x1.28adc88b626c5p-22,
                                              0x1.ad7f06a791928p-26};
};

/// True when smax has a vectorised exp for T on this target.
template <typename T>
inline constexpr bool has_packet_exp =
    (std::is_same_v<T, float> ||
     std::is_same_v<T, double>)&&Eigen::internal::packet_traits<T>::Vectorizable
    && (Eigen::internal::packet_traits<T>::size > 1);

/// The bits of j shifted into the exponent field: 2^k when j = magic + k (see exp_constants).
/// `available` is false where the shift has no packet form (double without SSE2/AVX2/AVX-512):
/// those targets scale with pldexp throughout.
template <typename Packet, typename = void>
struct pow2_from_bits {
  static constexpr bool available = false;
  static Packet run(const Packet& j) { return j; }
};

template <typename Packet>
struct pow2_from_bits<
    Packet, std::enable_if_t<
                std::is_same_v<typename Eigen::internal::unpacket_traits<Packet>::type, float>>> {
  static constexpr bool available = true;
  EIGEN_ALWAYS_INLINE static Packet run(const Packet& j) {
    namespace ei = Eigen::internal;
    using PacketI = typename ei::unpacket_traits<Packet>::integer_packet;
    return ei::preinterpret<Packet>(ei::plogical_shift_left<23>(ei::preinterpret<PacketI>(j)));
  }
};

#if defined(EIGEN_VECTORIZE_SSE2)
template <>
struct pow2_from_bits<Eigen::internal::Packet2d> {
  static constexpr bool available = true;
  EIGEN_ALWAYS_INLINE static Eigen::internal::Packet2d run(const Eigen::internal::Packet2d& j) {
    return _mm_castsi128_pd(_mm_slli_epi64(_mm_castpd_si128(j), 52));
  }
};
#endif
#if defined(EIGEN_VECTORIZE_AVX2)
template <>
struct pow2_from_bits<Eigen::internal::Packet4d> {
  static constexpr bool available = true;
  EIGEN_ALWAYS_INLINE static Eigen::internal::Packet4d run(const Eigen::internal::Packet4d& j) {
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(j), 52));
  }
};
#endif
#if defined(EIGEN_VECTORIZE_AVX512)
template <>
struct pow2_from_bits<Eigen::internal::Packet8d> {
  static constexpr bool available = true;
  EIGEN_ALWAYS_INLINE static Eigen::internal::Packet8d run(const Eigen::internal::Packet8d& j) {
    return _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_castpd_si512(j), 52));
  }
};
#endif

/// True when some lane of k lies outside [lo, hi] (NaN lanes count as inside).
template <typename Packet>
EIGEN_ALWAYS_INLINE bool any_outside(const Packet& k, const Packet& lo, const Packet& hi) {
  namespace ei = Eigen::internal;
#if defined(EIGEN_VECTORIZE_AVX512)
  // Compare straight into mask registers: Eigen's pcmp_lt widens each mask to a vector.
  if constexpr (std::is_same_v<Packet, ei::Packet16f>) {
    return (_mm512_cmp_ps_mask(k, lo, _CMP_LT_OQ) | _mm512_cmp_ps_mask(hi, k, _CMP_LT_OQ)) != 0;
  } else if constexpr (std::is_same_v<Packet, ei::Packet8d>) {
    return (_mm512_cmp_pd_mask(k, lo, _CMP_LT_OQ) | _mm512_cmp_pd_mask(hi, k, _CMP_LT_OQ)) != 0;
  } else
#endif
  {
    return ei::predux_any(ei::por(ei::pcmp_lt(k, lo), ei::pcmp_lt(hi, k)));
  }
}

/// Hides v's value from the optimiser, which then can neither fold nor fuse the operations
/// that made v with those that use it. Costs no instruction.
template <typename Packet>
EIGEN_ALWAYS_INLINE void opaque(Packet& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__)))
  __asm__("" : "+v"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#elif defined(__GNUC__)
  __asm__("" : "+m"(v));
#else
  static_cast<void>(v);
#endif
}

/// opaque(v) when -ffast-math (or -fassociative-math) is on: it would otherwise simplify
/// (x log2e + magic) - magic to x log2e, dropping the rounding to an integer that the
/// reduction relies on (exp(1) came out as 2).
template <typename Packet>
EIGEN_ALWAYS_INLINE void opaque_under_fast_math([[maybe_unused]] Packet& v) {
#if defined(__FAST_MATH__) || defined(__ASSOCIATIVE_MATH__)
  opaque(v);
#endif
}

/// The reduction shared by the exps below: for xc (already clamped) returns exp(r) with
/// xc = k ln2 + r, and sets j = magic + k (k's bits, see exp_constants) and k.
template <typename Packet>
EIGEN_ALWAYS_INLINE Packet exp_reduced(const Packet& xc, Packet& j, Packet& k) {
  namespace ei = Eigen::internal;
  using T = typename ei::unpacket_traits<Packet>::type;
  using C = exp_constants<T>;
  j = ei::pmadd(xc, ei::pset1<Packet>(C::log2e), ei::pset1<Packet>(C::magic));
  opaque_under_fast_math(j);
  k = ei::psub(j, ei::pset1<Packet>(C::magic));
  Packet r = ei::pmadd(k, ei::pset1<Packet>(-C::ln2_hi), xc);
  opaque_under_fast_math(r);  // else k ln2_hi + k ln2_lo is refolded to k (ln2_hi + ln2_lo)
  r = ei::pmadd(k, ei::pset1<Packet>(-C::ln2_lo), r);
  Packet p = ei::pset1<Packet>(C::poly[C::degree]);
  for (int i = C::degree - 1; i >= 0; --i) p = ei::pmadd(p, r, ei::pset1<Packet>(C::poly[i]));
  return p;
}

/// exp of every lane of x; NaN stays NaN, -inf gives 0, +inf gives +inf.
template <typename Packet>
EIGEN_ALWAYS_INLINE Packet pexp_accurate(const Packet& x) {
  namespace ei = Eigen::internal;
  using T = typename ei::unpacket_traits<Packet>::type;
  using C = exp_constants<T>;
  // x86 min/max return their second operand when either is NaN, and Eigen's pmin/pmax
  // pass x there, so NaN flows through the clamp and the arithmetic below.
  const Packet xc = ei::pmin(ei::pmax(x, ei::pset1<Packet>(C::lo)), ei::pset1<Packet>(C::hi));
  Packet j, k;
  const Packet p = exp_reduced(xc, j, k);
  Packet result;
#if defined(__FAST_MATH__)
  // -ffast-math sets flush-to-zero anyway, and Eigen's pldexp does not survive it (double):
  // 2^k from the bits with k clamped to the normal range, then 0 below it, inf above.
  if constexpr (pow2_from_bits<Packet>::available) {
    const Packet jc = ei::pmin(ei::pmax(j, ei::pset1<Packet>(C::magic + C::min_k)),
                               ei::pset1<Packet>(C::magic + C::max_k));
    result = ei::pmul(p, pow2_from_bits<Packet>::run(jc));
    result =
        ei::pselect(ei::pcmp_lt(k, ei::pset1<Packet>(C::min_k)), ei::pset1<Packet>(T(0)), result);
    result = ei::pselect(ei::pcmp_lt(ei::pset1<Packet>(C::max_k), k),
                         ei::pset1<Packet>(std::numeric_limits<T>::infinity()), result);
  } else {
    result = ei::pldexp(p, k);
  }
#else
  if (!pow2_from_bits<Packet>::available) {
    result = ei::pldexp(p, k);
  } else if (!any_outside(k, ei::pset1<Packet>(C::min_k), ei::pset1<Packet>(C::max_k))) {
    result = ei::pmul(p, pow2_from_bits<Packet>::run(j));
  } else {
    // Lanes at or below lo (masks: -inf) are exactly 0: select it rather than scale them
    // through pldexp, whose subnormal intermediates cost microcode assists (softmax of a
    // 1024x1000 float matrix half -inf: 1.57 -> 0.52 ms).
    const Packet zero = ei::pcmp_le(x, ei::pset1<Packet>(C::lo));
    const Packet kz = ei::pselect(zero, ei::pset1<Packet>(T(0)), k);
    if (!any_outside(kz, ei::pset1<Packet>(C::min_k), ei::pset1<Packet>(C::max_k))) {
      // Those lanes scale by 2^(min_k + 1) before the select: times p >= 0.7 it is still
      // normal (a subnormal product would cost an assist, as the underflow does).
      const Packet jz = ei::pselect(zero, ei::pset1<Packet>(C::magic + C::min_k + 1), j);
      result =
          ei::pselect(zero, ei::pset1<Packet>(T(0)), ei::pmul(p, pow2_from_bits<Packet>::run(jz)));
    } else {
      result = ei::pldexp(p, k);
    }
  }
#endif
#if !defined(EIGEN_VECTORIZE_SSE)
  // Elsewhere pmin/pmax do not promise to keep NaN; put it back.
  result = ei::pselect(ei::pcmp_eq(x, x), result, x);
#endif
  return result;
}

/// exp of lanes known to lie in [normal_lo, 0] (NaN stays NaN): pexp_accurate without the
/// clamp and the per-packet range check, which cost about a fifth of its time. Every 2^k is
/// then a normal number, so the exponent shift is exact. The callers check the range once
/// per distribution, from its minimum (shift::set_min).
template <typename Packet>
EIGEN_ALWAYS_INLINE Packet pexp_normal(const Packet& x) {
  if constexpr (!pow2_from_bits<Packet>::available) {
    return pexp_accurate(x);
  } else {
    // NaN: r and p are NaN, and NaN times the shifted bits is NaN.
    Packet j, k;
    const Packet p = exp_reduced(x, j, k);
    return Eigen::internal::pmul(p, pow2_from_bits<Packet>::run(j));
  }
}

/// exp(x) 2^K for every lane, K >= 0 an integer held as T in kk, with lo_k = lo - K ln2
/// (below it the result rounds to 0): pexp_accurate's result scaled exactly, but rounded
/// once, after the scaling. Where exp(x) is subnormal and exp(x) 2^K is not, it keeps the
/// precision pexp_accurate loses on the subnormal grid (the losses' gradients multiply p by
/// 1/T later). NaN stays NaN, -inf gives 0.
template <typename Packet>
EIGEN_ALWAYS_INLINE Packet pexp_scaled(const Packet& x, const Packet& kk, const Packet& lo_k) {
  namespace ei = Eigen::internal;
  using T = typename ei::unpacket_traits<Packet>::type;
  using C = exp_constants<T>;
  const Packet xc = ei::pmin(ei::pmax(x, lo_k), ei::pset1<Packet>(C::hi));
  Packet j, k;
  const Packet p = exp_reduced(xc, j, k);
  // magic + k + K and k + K: integers far below 2^mantissa_bits, so both sums are exact.
  const Packet jk = ei::padd(j, kk);
  const Packet kt = ei::padd(k, kk);
  Packet result;
#if defined(__FAST_MATH__)
  if constexpr (pow2_from_bits<Packet>::available) {
    const Packet jc = ei::pmin(ei::pmax(jk, ei::pset1<Packet>(C::magic + C::min_k)),
                               ei::pset1<Packet>(C::magic + C::max_k));
    result = ei::pmul(p, pow2_from_bits<Packet>::run(jc));
    result =
        ei::pselect(ei::pcmp_lt(kt, ei::pset1<Packet>(C::min_k)), ei::pset1<Packet>(T(0)), result);
    result = ei::pselect(ei::pcmp_lt(ei::pset1<Packet>(C::max_k), kt),
                         ei::pset1<Packet>(std::numeric_limits<T>::infinity()), result);
  } else {
    result = ei::pldexp(p, kt);
  }
#else
  if (!pow2_from_bits<Packet>::available) {
    result = ei::pldexp(p, kt);
  } else if (!any_outside(kt, ei::pset1<Packet>(C::min_k), ei::pset1<Packet>(C::max_k))) {
    result = ei::pmul(p, pow2_from_bits<Packet>::run(jk));
  } else {
    // As in pexp_accurate: lanes at or below the clamp are exactly 0 without pldexp.
    const Packet zero = ei::pcmp_le(x, lo_k);
    const Packet kz = ei::pselect(zero, ei::pset1<Packet>(T(0)), kt);
    if (!any_outside(kz, ei::pset1<Packet>(C::min_k), ei::pset1<Packet>(C::max_k))) {
      const Packet jz = ei::pselect(zero, ei::pset1<Packet>(C::magic + C::min_k + 1), jk);
      result =
          ei::pselect(zero, ei::pset1<Packet>(T(0)), ei::pmul(p, pow2_from_bits<Packet>::run(jz)));
    } else {
      result = ei::pldexp(p, kt);
    }
  }
#endif
#if !defined(EIGEN_VECTORIZE_SSE)
  result = ei::pselect(ei::pcmp_eq(x, x), result, x);
#endif
  return result;
}

/// The constants of pexp_scaled for a scale 2^K: K as T, and the clamp lo - K ln2.
template <typename T>
struct exp_scale {
  int k = 0;
  T kk = T(0);
  T lo_k = T(0);

  exp_scale() = default;
  explicit exp_scale(int K) : k(K), kk(static_cast<T>(K)) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      lo_k = static_cast<T>(exp_constants<T>::lo - static_cast<T>(K) * T(0.693147180559945309L));
    }
  }

  /// exp(v) 2^K for one value (the paths without a vectorised exp): exact scaling where
  /// exp(v) is normal; below, exp(v + K ln2), whose argument carries a rounding of about
  /// |v| eps, the size of the rounding v itself already carries.
  T scalar(T v) const {
    const T e = std::exp(v);
    if (k == 0 || !(e < std::numeric_limits<T>::min())) return std::ldexp(e, k);
    return std::exp(v + static_cast<T>(k) * static_cast<T>(0.693147180559945309417232121458L));
  }
};

/// An Eigen functor for exp(x) that vectorises with pexp_accurate, or with pexp_normal when
/// Normal (arguments known to lie in [normal_lo, 0] or NaN: the same values, no range check).
template <typename T, bool Normal = false>
struct exp_op {
  template <typename Packet>
  EIGEN_ALWAYS_INLINE Packet packetOp(const Packet& x) const {
    if constexpr (Normal) {
      return pexp_normal(x);
    } else {
      return pexp_accurate(x);
    }
  }
  // Scalars (Eigen's unaligned heads and tails) take the same packet code, so a result
  // never depends on the alignment of the data it came from.
  T operator()(const T& x) const {
    if constexpr (has_packet_exp<T>) {
      using Packet = typename Eigen::internal::packet_traits<T>::type;
      return Eigen::internal::pfirst(packetOp(Eigen::internal::pset1<Packet>(x)));
    } else {
      return std::exp(x);
    }
  }
};

template <typename T>
using exp_normal_op = exp_op<T, true>;

}  // namespace smax::detail

namespace Eigen::internal {
template <typename T, bool Normal>
struct functor_traits<smax::detail::exp_op<T, Normal>> {
  enum { Cost = 20 * NumTraits<T>::MulCost, PacketAccess = smax::detail::has_packet_exp<T> };
};
}  // namespace Eigen::internal

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
