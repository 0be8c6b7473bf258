// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 with AVX-512 reports _mm512_undefined_* inside Eigen's packet intrinsics as
// (maybe-)uninitialized wherever they inline into other code: a false positive. The
// warning is attributed to the intrinsics header, so this must be seen before Eigen is
// first included: test files include test_utils.hpp first.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

/// \file
/// The one helper header of the smax tests: comparing Eigen objects, ULP errors, the
/// documented accuracy bounds, seeded random logits, and high-precision reference
/// implementations of softmax, log_softmax and logsumexp (long double always; MPFR when
/// SMAX_HAVE_MPFR is 1, used for double).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

#if defined(SMAX_HAVE_MPFR) && SMAX_HAVE_MPFR
#include <mpfr.h>
#define SMAX_TEST_HAVE_MPFR 1
#else
#define SMAX_TEST_HAVE_MPFR 0
#endif

namespace smax_test {

using Index = Eigen::Index;

/// Reference values are carried in long double: even when they come from MPFR, long double
/// (64-bit significand on x86) resolves 1/2048 of a double ULP, plenty to measure errors of
/// a few ULP.
using HiArray = Eigen::Array<long double, Eigen::Dynamic, 1>;

template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <typename T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;
template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using MatR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;

/// The scalar types every typed suite runs over.
using FloatingTypes = ::testing::Types<float, double>;

/// Names the typed instantiations "float" and "double" (and avoids the empty variadic
/// argument that -Wpedantic rejects in TYPED_TEST_SUITE).
struct TypeNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "float" : std::is_same_v<T, double> ? "double" : "other";
  }
};

template <typename T>
constexpr T inf = std::numeric_limits<T>::infinity();
template <typename T>
constexpr T qnan = std::numeric_limits<T>::quiet_NaN();
template <typename T>
constexpr T eps = std::numeric_limits<T>::epsilon();
template <typename T>
constexpr T big = std::numeric_limits<T>::max();
template <typename T>
constexpr T denorm_min = std::numeric_limits<T>::denorm_min();

/// A value printed so that it reads back exactly.
template <typename S>
std::string show(S value) {
  std::ostringstream os;
  os.precision(std::numeric_limits<S>::max_digits10);
  os << value;
  return os.str();
}

/// Makes a dynamic vector of T from a list (lists hold long double so that literals such as
/// 0.1 are rounded once, to T).
template <typename T>
Vec<T> vec(std::initializer_list<long double> values) {
  Vec<T> v(static_cast<Index>(values.size()));
  Index i = 0;
  for (long double x : values) v(i++) = static_cast<T>(x);
  return v;
}

/// The entries of a vector (any orientation, any Eigen type) in long double, as a column.
template <typename D>
HiArray hi(const Eigen::DenseBase<D>& x) {
  const typename D::PlainObject p = x;
  HiArray h(p.size());
  for (Index i = 0; i < p.size(); ++i) h(i) = static_cast<long double>(p(i));
  return h;
}

// ---------------------------------------------------------------------------------------
// ULPs

/// The spacing of T's numbers at the real value x: 2^(e - p + 1) for |x| in [2^e, 2^(e+1))
/// with p = digits of T, and the smallest subnormal in the subnormal range (so errors of
/// tiny results are counted on the subnormal grid, which is how they are rounded).
template <typename T>
long double ulp_of(long double x) {
  x = std::fabs(x);
  if (!(x >= static_cast<long double>(std::numeric_limits<T>::min()))) {
    return static_cast<long double>(denorm_min<T>);
  }
  return std::ldexp(1.0L, std::ilogb(x) - (std::numeric_limits<T>::digits - 1));
}

/// Error of a computed T against a high-precision reference, in ULPs of T at the reference.
/// 0 when both are NaN or both are the same infinity (a reference beyond T's range counts
/// as the infinity it rounds to); +inf when exactly one is NaN or infinite.
template <typename T>
long double ulp_error(T computed, long double reference) {
  if (std::isnan(computed) || std::isnan(reference)) {
    return (std::isnan(computed) && std::isnan(reference)) ? 0.0L : inf<long double>;
  }
  const T rounded = static_cast<T>(reference);
  if (std::isinf(computed) || std::isinf(rounded)) {
    return computed == rounded ? 0.0L : inf<long double>;
  }
  return std::fabs(static_cast<long double>(computed) - reference) / ulp_of<T>(reference);
}

/// Number of representable T values between a and b (0 for identical values, for +0 and
/// -0, and for two NaNs; the largest count when exactly one is NaN).
template <typename T>
std::uint64_t ulp_distance(T a, T b) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  if (std::isnan(a) || std::isnan(b)) {
    return (std::isnan(a) && std::isnan(b)) ? 0 : std::numeric_limits<std::uint64_t>::max();
  }
  if (a == b) return 0;
  const auto key = [](T x) {
    U u;
    std::memcpy(&u, &x, sizeof u);
    constexpr U sign = U(1) << (8 * sizeof(U) - 1);
    // Negative numbers count down from the sign bit, positive ones up from it.
    return static_cast<std::uint64_t>((u & sign) ? sign - (u & ~sign) : sign + u);
  };
  const std::uint64_t ka = key(a), kb = key(b);
  return ka > kb ? ka - kb : kb - ka;
}

// ---------------------------------------------------------------------------------------
// Documented accuracy bounds (softmax.hpp, "Accuracy")

/// The bound on softmax's error at one entry, in ULPs of T at the reference y:
///   4 ULP + |d| * eps * |y| / ulp(y),   d = (z_i - max) / T.
/// The second term is the rounding of the exponent d amplified by exp:
/// exp(d (1 + delta)) = exp(d) exp(d delta), a relative error of |d| |delta| in y that no
/// max-shifted algorithm avoids. d carries two roundings when T != 1 (the subtraction and
/// the division), |delta| <= eps; one when T = 1 (eps/2), which this bound also covers. ulp(y) is
/// between eps/2 and eps of |y|, so for normal results the term is |d|/2 to |d| ULP; on the
/// subnormal grid it is far below one ULP.
template <typename T>
long double softmax_bound_ulps(long double exponent, long double reference) {
  if (std::isinf(exponent)) return 4.0L;  // -inf entries: exactly 0, no amplification
  const long double amplification = std::fabs(exponent) * static_cast<long double>(eps<T>) *
                                    std::fabs(reference) / ulp_of<T>(reference);
  return 4.0L + amplification;
}

/// Error of a log-domain result (log_softmax, logsumexp) in ULPs of max(|reference|, 1):
/// the documented bound is 4 (cancellation near 0 makes a purely relative bound
/// unattainable).
template <typename T>
long double log_domain_error(T computed, long double reference) {
  if (std::isnan(computed) || std::isnan(reference) || std::isinf(computed) ||
      std::isinf(static_cast<T>(reference))) {
    return ulp_error<T>(computed, reference);
  }
  return std::fabs(static_cast<long double>(computed) - reference) /
         ulp_of<T>(std::max(std::fabs(reference), 1.0L));
}

// ---------------------------------------------------------------------------------------
// Comparing Eigen objects

/// The default relative tolerance for all_close: 64 ULP of T (for results that are a few
/// roundings apart, not for accuracy claims, which use the ULP helpers).
template <typename T>
long double default_rtol() {
  return 64.0L * static_cast<long double>(eps<T>);
}

namespace detail {

template <typename E, typename A>
::testing::AssertionResult shape_check(const E& e, const A& a) {
  if (e.rows() != a.rows() || e.cols() != a.cols()) {
    return ::testing::AssertionFailure() << "shapes differ: expected " << e.rows() << "x"
                                         << e.cols() << ", actual " << a.rows() << "x" << a.cols();
  }
  return ::testing::AssertionSuccess();
}

inline std::string where(Index r, Index c, Index rows, Index cols) {
  if (rows == 1 || cols == 1) return "[" + std::to_string(rows == 1 ? c : r) + "]";
  return "(" + std::to_string(r) + ", " + std::to_string(c) + ")";
}

/// Walks two same-shaped objects, collecting a description of the entries bad() rejects.
template <typename E, typename A, typename Bad>
::testing::AssertionResult compare(const Eigen::DenseBase<E>& expected,
                                   const Eigen::DenseBase<A>& actual, Bad bad,
                                   const std::string& rule) {
  const typename E::PlainObject e = expected;
  const typename A::PlainObject a = actual;
  ::testing::AssertionResult shapes = shape_check(e, a);
  if (!shapes) return shapes;
  Index failures = 0;
  std::ostringstream report;
  for (Index c = 0; c < e.cols(); ++c) {
    for (Index r = 0; r < e.rows(); ++r) {
      const auto ev = e(r, c);
      const auto av = a(r, c);
      std::string why;
      if (bad(ev, av, why)) {
        if (++failures <= 10) {
          report << "\n  at " << where(r, c, e.rows(), e.cols()) << ": expected " << show(ev)
                 << ", actual " << show(av) << ", difference "
                 << show(static_cast<long double>(av) - static_cast<long double>(ev));
          if (!why.empty()) report << " (" << why << ")";
        }
      }
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  ::testing::AssertionResult result = ::testing::AssertionFailure();
  result << failures << " of " << e.size() << " entries differ (" << rule << "):" << report.str();
  if (failures > 10) result << "\n  ...";
  return result;
}

}  // namespace detail

/// Same shape, and every entry close: both NaN, the same infinity, or finite with
/// |actual - expected| <= atol + rtol * |expected|. Prints expected, actual and difference.
template <typename E, typename A>
::testing::AssertionResult all_close(const Eigen::DenseBase<E>& expected,
                                     const Eigen::DenseBase<A>& actual, long double rtol,
                                     long double atol = 0.0L) {
  const auto bad = [&](auto ev, auto av, std::string&) {
    const long double e = static_cast<long double>(ev), a = static_cast<long double>(av);
    if (std::isnan(e) || std::isnan(a)) return !(std::isnan(e) && std::isnan(a));
    if (std::isinf(e) || std::isinf(a)) return e != a;
    return !(std::fabs(a - e) <= atol + rtol * std::fabs(e));
  };
  return detail::compare(
      expected, actual, bad,
      "rtol " + show(rtol) + ", atol " + show(atol) + ", NaN == NaN, infinities exact");
}

/// all_close with the default tolerance of the actual object's scalar type.
template <typename E, typename A>
::testing::AssertionResult all_close(const Eigen::DenseBase<E>& expected,
                                     const Eigen::DenseBase<A>& actual) {
  return all_close(expected, actual, default_rtol<typename A::Scalar>());
}

/// Same shape and equal values: == for numbers (so +0 matches -0, as the numerical policy
/// does not distinguish them), NaN matches NaN, infinities exact.
template <typename E, typename A>
::testing::AssertionResult same_values(const Eigen::DenseBase<E>& expected,
                                       const Eigen::DenseBase<A>& actual) {
  return all_close(expected, actual, 0.0L, 0.0L);
}

/// Same shape and bit-identical entries (any NaN matches any NaN; +0 and -0 differ).
template <typename E, typename A>
::testing::AssertionResult bit_equal(const Eigen::DenseBase<E>& expected,
                                     const Eigen::DenseBase<A>& actual) {
  static_assert(std::is_same_v<typename E::Scalar, typename A::Scalar>);
  const auto bad = [](auto ev, auto av, std::string&) {
    if (std::isnan(ev) || std::isnan(av)) return !(std::isnan(ev) && std::isnan(av));
    return std::memcmp(&ev, &av, sizeof ev) != 0;
  };
  return detail::compare(expected, actual, bad, "bit for bit");
}

/// Same shape and every entry within max_ulps representable values of the expected one.
template <typename E, typename A>
::testing::AssertionResult within_ulps(const Eigen::DenseBase<E>& expected,
                                       const Eigen::DenseBase<A>& actual, std::uint64_t max_ulps) {
  static_assert(std::is_same_v<typename E::Scalar, typename A::Scalar>);
  const auto bad = [&](auto ev, auto av, std::string& why) {
    const std::uint64_t d = ulp_distance(ev, av);
    why = std::to_string(d) + " ULP apart";
    return d > max_ulps;
  };
  return detail::compare(expected, actual, bad, "at most " + std::to_string(max_ulps) + " ULP");
}

/// Every entry of the vector `actual` within `bound(i)` ULPs of T of the reference (by
/// ulp_error, or by log_domain_error when log_domain is set). Sizes are checked first.
template <typename A, typename Bound>
::testing::AssertionResult reference_check(const HiArray& reference,
                                           const Eigen::DenseBase<A>& actual, Bound bound,
                                           bool log_domain) {
  using T = typename A::Scalar;
  const typename A::PlainObject a = actual;
  if (a.size() != reference.size()) {
    return ::testing::AssertionFailure()
           << "sizes differ: reference " << reference.size() << ", actual " << a.size();
  }
  Index failures = 0;
  std::ostringstream report;
  for (Index i = 0; i < a.size(); ++i) {
    const long double err =
        log_domain ? log_domain_error<T>(a(i), reference(i)) : ulp_error<T>(a(i), reference(i));
    const long double allowed = bound(i);
    if (!(err <= allowed) && ++failures <= 10) {
      report << "\n  at [" << i << "]: reference " << show(reference(i)) << ", actual "
             << show(a(i)) << ", difference " << show(static_cast<long double>(a(i)) - reference(i))
             << ", error " << show(err) << " ULP > allowed " << show(allowed);
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << failures << " of " << a.size() << " entries beyond the bound:" << report.str();
}

/// Every entry within a fixed number of ULPs (ulp_error) of the reference.
template <typename A>
::testing::AssertionResult within_ulps_of_reference(const HiArray& reference,
                                                    const Eigen::DenseBase<A>& actual,
                                                    long double max_ulps) {
  return reference_check(
      reference, actual, [&](Index) { return max_ulps; }, false);
}

/// Every log-domain entry within max_ulps ULPs of max(|reference|, 1).
template <typename A>
::testing::AssertionResult within_log_ulps_of_reference(const HiArray& reference,
                                                        const Eigen::DenseBase<A>& actual,
                                                        long double max_ulps = 4.0L) {
  return reference_check(
      reference, actual, [&](Index) { return max_ulps; }, true);
}

// ---------------------------------------------------------------------------------------
// High-precision references
//
// They take the logits exactly (as long double), support finite and -inf entries with at
// least one finite one and 0 < T < inf; the limit cases of the numerical policy are tested
// against hand-written expectations instead.

/// Reference results for one distribution.
struct reference {
  HiArray exponent;           ///< d_i = (z_i - max) / T
  HiArray softmax;            ///< exp(d_i) / sum_j exp(d_j)
  HiArray log_softmax;        ///< d_i - log sum_j exp(d_j)
  long double logsumexp = 0;  ///< log sum_i exp(z_i) (independent of T)
};

namespace detail {

/// Sum with Neumaier compensation: error about one ULP of long double at any length.
inline long double compensated_sum(const HiArray& x) {
  long double s = 0, c = 0;
  for (Index i = 0; i < x.size(); ++i) {
    const long double t = s + x(i);
    c += std::fabs(s) >= std::fabs(x(i)) ? (s - t) + x(i) : (x(i) - t) + s;
    s = t;
  }
  return s + c;
}

}  // namespace detail

/// The reference in long double arithmetic (relative error ~1e-19: exact enough for float
/// results, and for double where long double has 64 bits and MPFR is absent).
inline reference reference_ld(const HiArray& z, long double temperature) {
  const long double m = z.maxCoeff();
  reference r;
  r.exponent = (z - m) / temperature;
  const HiArray e = r.exponent.exp();
  const long double s = detail::compensated_sum(e);
  r.softmax = e / s;
  r.log_softmax = r.exponent - std::log(s);
  r.logsumexp = m + std::log(detail::compensated_sum((z - m).exp()));
  return r;
}

#if SMAX_TEST_HAVE_MPFR
namespace detail {

/// An mpfr_t that frees itself.
class mpfr_number {
 public:
  explicit mpfr_number(mpfr_prec_t precision) { mpfr_init2(value_, precision); }
  mpfr_number(const mpfr_number&) = delete;
  mpfr_number& operator=(const mpfr_number&) = delete;
  ~mpfr_number() { mpfr_clear(value_); }
  mpfr_ptr get() { return value_; }

 private:
  mpfr_t value_;
};

}  // namespace detail

/// The reference in 256-bit MPFR arithmetic, rounded once to long double at the end.
inline reference reference_mpfr(const HiArray& z, long double temperature) {
  constexpr mpfr_prec_t precision = 256;
  const Index n = z.size();
  const long double m_ld = z.maxCoeff();
  detail::mpfr_number m(precision), t(precision), d(precision), e(precision), s(precision),
      s1(precision), log_s(precision), x(precision);
  mpfr_set_ld(m.get(), m_ld, MPFR_RNDN);
  mpfr_set_ld(t.get(), temperature, MPFR_RNDN);
  mpfr_set_zero(s.get(), 1);
  mpfr_set_zero(s1.get(), 1);
  reference r;
  r.exponent.resize(n);
  r.softmax.resize(n);
  r.log_softmax.resize(n);
  // Pass 1: the sums; pass 2 recomputes the exponentials rather than storing n mpfr_t.
  for (Index i = 0; i < n; ++i) {
    mpfr_set_ld(x.get(), z(i), MPFR_RNDN);
    mpfr_sub(x.get(), x.get(), m.get(), MPFR_RNDN);  // z_i - max
    mpfr_exp(e.get(), x.get(), MPFR_RNDN);
    mpfr_add(s1.get(), s1.get(), e.get(), MPFR_RNDN);
    mpfr_div(d.get(), x.get(), t.get(), MPFR_RNDN);
    mpfr_exp(e.get(), d.get(), MPFR_RNDN);
    mpfr_add(s.get(), s.get(), e.get(), MPFR_RNDN);
  }
  mpfr_log(log_s.get(), s.get(), MPFR_RNDN);
  for (Index i = 0; i < n; ++i) {
    mpfr_set_ld(x.get(), z(i), MPFR_RNDN);
    mpfr_sub(x.get(), x.get(), m.get(), MPFR_RNDN);
    mpfr_div(d.get(), x.get(), t.get(), MPFR_RNDN);
    r.exponent(i) = mpfr_get_ld(d.get(), MPFR_RNDN);
    mpfr_exp(e.get(), d.get(), MPFR_RNDN);
    mpfr_div(e.get(), e.get(), s.get(), MPFR_RNDN);
    r.softmax(i) = mpfr_get_ld(e.get(), MPFR_RNDN);
    mpfr_sub(d.get(), d.get(), log_s.get(), MPFR_RNDN);
    r.log_softmax(i) = mpfr_get_ld(d.get(), MPFR_RNDN);
  }
  mpfr_log(s1.get(), s1.get(), MPFR_RNDN);
  mpfr_add(s1.get(), s1.get(), m.get(), MPFR_RNDN);
  r.logsumexp = mpfr_get_ld(s1.get(), MPFR_RNDN);
  return r;
}
#endif

/// True when the reference for T is precise enough to measure errors of a fraction of an
/// ULP of T: always for float; for double with MPFR or a long double wider than double.
template <typename T>
constexpr bool has_precise_reference() {
  return SMAX_TEST_HAVE_MPFR ||
         std::numeric_limits<long double>::digits >= std::numeric_limits<T>::digits + 10;
}

/// The best reference for results of type T: long double for float, MPFR for double when
/// available.
template <typename T>
reference reference_for(const HiArray& z, long double temperature = 1.0L) {
#if SMAX_TEST_HAVE_MPFR
  if constexpr (!std::is_same_v<T, float>) return reference_mpfr(z, temperature);
#endif
  return reference_ld(z, temperature);
}

/// softmax of the vector z at temperature T, from the best reference for z's scalar type.
template <typename D>
HiArray ref_softmax(const Eigen::DenseBase<D>& z, long double temperature = 1.0L) {
  return reference_for<typename D::Scalar>(hi(z), temperature).softmax;
}

/// log_softmax of the vector z at temperature T, from the best reference.
template <typename D>
HiArray ref_log_softmax(const Eigen::DenseBase<D>& z, long double temperature = 1.0L) {
  return reference_for<typename D::Scalar>(hi(z), temperature).log_softmax;
}

/// logsumexp of the vector z, from the best reference.
template <typename D>
long double ref_logsumexp(const Eigen::DenseBase<D>& z) {
  return reference_for<typename D::Scalar>(hi(z)).logsumexp;
}

/// Checks a softmax result against the reference with the documented bound
/// (softmax_bound_ulps at every entry).
template <typename A>
::testing::AssertionResult softmax_within_bound(const reference& ref,
                                                const Eigen::DenseBase<A>& actual) {
  using T = typename A::Scalar;
  return reference_check(
      ref.softmax, actual,
      [&](Index i) { return softmax_bound_ulps<T>(ref.exponent(i), ref.softmax(i)); }, false);
}

// ---------------------------------------------------------------------------------------
// Seeded random logits

/// The logit distributions of the accuracy sweeps.
enum class logits { normal_1, normal_30, uniform_100, near_ties };

inline const char* name_of(logits kind) {
  switch (kind) {
    case logits::normal_1:
      return "N(0,1)";
    case logits::normal_30:
      return "N(0,30)";
    case logits::uniform_100:
      return "U[-100,100]";
    case logits::near_ties:
      return "near-ties";
  }
  return "?";
}

inline constexpr logits all_logit_kinds[] = {logits::normal_1, logits::normal_30,
                                             logits::uniform_100, logits::near_ties};

/// Sizes that cover scalar code, every packet width (4, 8, 16 lanes) and its tails, and
/// more than one 256-entry block.
inline constexpr Index sweep_sizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 47, 64, 1000, 4097};

/// n logits of the given kind from a generator seeded with `seed` (same seed, same values).
/// near_ties: 0.75 + N(0, 1e-3), a third of them exactly 0.75.
template <typename T>
Vec<T> random_logits(Index n, logits kind, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(-100.0, 100.0);
  std::uniform_int_distribution<int> third(0, 2);
  Vec<T> z(n);
  for (Index i = 0; i < n; ++i) {
    double v = 0;
    switch (kind) {
      case logits::normal_1:
        v = normal(rng);
        break;
      case logits::normal_30:
        v = 30.0 * normal(rng);
        break;
      case logits::uniform_100:
        v = uniform(rng);
        break;
      case logits::near_ties:
        v = third(rng) == 0 ? 0.75 : 0.75 + 1e-3 * normal(rng);
        break;
    }
    z(i) = static_cast<T>(v);
  }
  return z;
}

// ---------------------------------------------------------------------------------------
// Loss tests (cross_entropy, distillation, sigmoid): comparison against a long double
// reference with a relative tolerance and a floor (NaN equals NaN, infinities exactly),
// seeded random inputs and central finite differences. A namespace of their own, since
// their all_close takes (actual, expected, rel, floor).
namespace loss {
using MatL = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

/// Relative tolerances: against a long double reference, and against finite differences.
template <typename T>
struct tol;
template <>
struct tol<float> {
  static constexpr double rel = 3e-6;
  static constexpr double fd = 1e-3;
};
template <>
struct tol<double> {
  static constexpr double rel = 5e-15;
  static constexpr double fd = 1e-7;
};

/// |actual - expected| <= rel * max(|expected|, floor); NaN matches NaN; infinities exactly.
inline ::testing::AssertionResult close(long double actual, long double expected, double rel,
                                        double floor = 1.0) {
  if (std::isnan(expected) || std::isnan(actual)) {
    if (std::isnan(expected) && std::isnan(actual)) return ::testing::AssertionSuccess();
  } else if (std::isinf(expected) || std::isinf(actual)) {
    if (actual == expected) return ::testing::AssertionSuccess();
  } else {
    const long double bound =
        static_cast<long double>(rel) * std::max<long double>(std::fabs(expected), floor);
    if (std::fabs(actual - expected) <= bound) return ::testing::AssertionSuccess();
  }
  std::ostringstream os;
  os.precision(20);
  os << "actual " << actual << ", expected " << expected << ", difference " << (actual - expected)
     << " (rel " << rel << ", floor " << floor << ")";
  return ::testing::AssertionFailure() << os.str();
}

/// Entry-by-entry close(), after a shape check; names the first failing entry.
template <typename A, typename B>
::testing::AssertionResult all_close(const Eigen::DenseBase<A>& actual,
                                     const Eigen::DenseBase<B>& expected, double rel,
                                     double floor = 1.0) {
  if (actual.rows() != expected.rows() || actual.cols() != expected.cols()) {
    return ::testing::AssertionFailure()
           << "shape " << actual.rows() << "x" << actual.cols() << ", expected " << expected.rows()
           << "x" << expected.cols();
  }
  for (Eigen::Index j = 0; j < actual.cols(); ++j) {
    for (Eigen::Index i = 0; i < actual.rows(); ++i) {
      const auto r = close(static_cast<long double>(actual(i, j)),
                           static_cast<long double>(expected(i, j)), rel, floor);
      if (!r)
        return ::testing::AssertionFailure() << "at (" << i << ", " << j << "): " << r.message();
    }
  }
  return ::testing::AssertionSuccess();
}

/// Seeded uniform matrix in [lo, hi).
template <typename T>
Mat<T> random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed, double lo = -3,
                     double hi = 3) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Mat<T> m(rows, cols);
  for (Eigen::Index j = 0; j < cols; ++j)
    for (Eigen::Index i = 0; i < rows; ++i) m(i, j) = static_cast<T>(dist(gen));
  return m;
}

/// Rows of a seeded random matrix normalised to probability vectors (some entries 0).
template <typename T>
Mat<T> random_distributions(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(0, 1);
  Mat<T> m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    double s = 0;
    for (Eigen::Index j = 0; j < cols; ++j) {
      const double v = dist(gen);
      m(i, j) = static_cast<T>(v < 0.2 ? 0.0 : v);
      s += static_cast<double>(m(i, j));
    }
    if (s == 0) {
      m(i, 0) = T(1);
      s = 1;
    }
    for (Eigen::Index j = 0; j < cols; ++j) m(i, j) = static_cast<T>(m(i, j) / s);
  }
  return m;
}

/// Central finite differences of f at x, step cbrt(eps) * max(1, |x_ij|).
template <typename F>
Eigen::MatrixXd numeric_grad(F&& f, const Eigen::MatrixXd& x) {
  Eigen::MatrixXd g(x.rows(), x.cols());
  const double base = std::cbrt(std::numeric_limits<double>::epsilon());
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const double h = base * std::max(1.0, std::fabs(x(i, j)));
      Eigen::MatrixXd xp = x, xm = x;
      xp(i, j) += h;
      xm(i, j) -= h;
      g(i, j) = (f(xp) - f(xm)) / (xp(i, j) - xm(i, j));
    }
  }
  return g;
}

// Plain loops instead of Eigen's vectorised reductions: GCC 12 with AVX-512 flags the
// intrinsics those reach as maybe-uninitialized (a false positive) under -Werror.

/// Sum of all entries, in long double.
template <typename D>
long double sum_of(const Eigen::DenseBase<D>& m) {
  long double s = 0;
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i) s += static_cast<long double>(m(i, j));
  return s;
}

/// Largest absolute entry (0 for an empty object).
template <typename D>
long double max_abs(const Eigen::DenseBase<D>& m) {
  long double r = 0;
  for (Eigen::Index j = 0; j < m.cols(); ++j)
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      r = std::max(r, std::fabs(static_cast<long double>(m(i, j))));
  return r;
}

/// Sum of the products of same-shaped objects' entries, as a double.
template <typename A, typename B>
double dot_of(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  long double s = 0;
  for (Eigen::Index j = 0; j < a.cols(); ++j)
    for (Eigen::Index i = 0; i < a.rows(); ++i)
      s += static_cast<long double>(a(i, j)) * static_cast<long double>(b(i, j));
  return static_cast<double>(s);
}

/// Runs f and returns the smax::error message it throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace loss

}  // namespace smax_test

#if defined(SMAX_TEST_EXTERN_KERNELS) && SMAX_TEST_EXTERN_KERNELS
#include "kernel_instances.hpp"  // the kernels come compiled from kernel_instances.cpp
#endif
