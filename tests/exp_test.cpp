// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// smax's vectorised exp (smax/detail/exp.hpp). The kernels switch a whole distribution to
// pexp_normal when its smallest exponent is >= normal_lo (shift::set_min), so that switch
// is only invisible if pexp_normal returns pexp_accurate's bits there: checked on a dense
// grid of floats and on random doubles, along with both ends of the range, NaN, and
// pexp_accurate's own error against a long double reference.

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/detail/exp.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

// Packet types (__m512 ...) as template arguments drop their alignment attributes, which
// is harmless here (see smax/detail/exp.hpp).
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace {

using namespace smax_test;
namespace sd = smax::detail;
namespace ei = Eigen::internal;

template <typename T>
class Exp : public ::testing::Test {};
TYPED_TEST_SUITE(Exp, FloatingTypes, TypeNames);

template <typename T>
using Packet = typename ei::packet_traits<T>::type;

/// Applies f to the values in x, a packet at a time (x.size() a multiple of the packet).
template <typename T, typename F>
std::vector<T> map_packets(const std::vector<T>& x, F f) {
  constexpr std::size_t ps = ei::unpacket_traits<Packet<T>>::size;
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i + ps <= x.size(); i += ps) {
    ei::pstoreu(y.data() + i, f(ei::ploadu<Packet<T>>(x.data() + i)));
  }
  return y;
}

/// pexp_accurate's documented bound: 1 ULP with FMA; without it (SSE2 builds) every multiply
/// and add of the reduction and the polynomial rounds separately (measured on the grid below:
/// 1.13 ULP float, 1.19 double).
#if defined(EIGEN_VECTORIZE_FMA)
constexpr double max_exp_ulp = 1.0;
#else
constexpr double max_exp_ulp = 1.25;
#endif

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

/// normal_lo, 0, the values either side of both, a dense grid (float: every 2^9-th float of
/// the range, 2.2 million; double: 2^21 uniform draws) and a padding to whole packets.
template <typename T>
std::vector<T> normal_range_inputs() {
  const T lo = sd::exp_constants<T>::normal_lo;
  std::vector<T> x = {lo,
                      std::nextafter(lo, T(0)),
                      T(0),
                      -T(0),
                      -std::numeric_limits<T>::denorm_min(),
                      -std::numeric_limits<T>::min(),
                      T(-1),
                      T(-0.5)};
  if constexpr (std::is_same_v<T, float>) {
    std::uint32_t bits;
    const float first = -0.0f;
    std::memcpy(&bits, &first, sizeof bits);
    for (;; bits += 512) {
      float v;
      std::memcpy(&v, &bits, sizeof v);
      if (v < lo) break;
      x.push_back(v);
    }
  } else {
    std::mt19937_64 rng(20261126);
    std::uniform_real_distribution<T> u(lo, T(0));
    for (int i = 0; i < (1 << 21); ++i) x.push_back(u(rng));
  }
  while (x.size() % ei::unpacket_traits<Packet<T>>::size != 0) x.push_back(T(0));
  return x;
}

TYPED_TEST(Exp, NormalPathGivesTheAccurateBitsOnItsRange) {
  using T = TypeParam;
  if constexpr (!sd::has_packet_exp<T>) {
    GTEST_SKIP() << "no vectorised exp for this type on this target";
  } else {
    const std::vector<T> x = normal_range_inputs<T>();
    const std::vector<T> a = map_packets(x, [](const auto& p) { return sd::pexp_accurate(p); });
    const std::vector<T> b = map_packets(x, [](const auto& p) { return sd::pexp_normal(p); });
    std::size_t differ = 0, first = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!same_bits(a[i], b[i]) && differ++ == 0) first = i;
    }
    EXPECT_EQ(differ, 0u) << "of " << x.size() << "; first at x = " << show(x[first])
                          << ": accurate " << show(a[first]) << ", normal " << show(b[first]);
    // The bottom of the range is still a normal number (the exponent shift is exact there).
    EXPECT_GE(a[0], std::numeric_limits<T>::min());
    EXPECT_EQ(b[2], T(1));
  }
}

TYPED_TEST(Exp, AccurateToOneUlpAndExactOutsideTheRange) {
  using T = TypeParam;
  if constexpr (!sd::has_packet_exp<T>) {
    GTEST_SKIP() << "no vectorised exp for this type on this target";
  } else {
    std::vector<T> x = normal_range_inputs<T>();
    const T inf = std::numeric_limits<T>::infinity();
    // Underflow and overflow thresholds: below them exactly 0 or a correctly rounded
    // subnormal, above them +inf.
    const std::vector<T> edges = {
        T(-1000), -inf, inf, T(1000), sd::exp_constants<T>::lo, sd::exp_constants<T>::hi};
    x.insert(x.end(), edges.begin(), edges.end());
    while (x.size() % ei::unpacket_traits<Packet<T>>::size != 0) x.push_back(T(1));
    const std::vector<T> y = map_packets(x, [](const auto& p) { return sd::pexp_accurate(p); });
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const long double ref = std::exp(static_cast<long double>(x[i]));
      if (ref > static_cast<long double>(std::numeric_limits<T>::max()) || ref == 0) {
        EXPECT_EQ(y[i], static_cast<T>(ref)) << "x = " << show(x[i]);  // +inf or 0
        continue;
      }
      worst = std::max(worst, static_cast<double>(ulp_error<T>(y[i], ref)));
    }
    EXPECT_LE(worst, max_exp_ulp);
  }
}

TYPED_TEST(Exp, NanStaysNanOnBothPaths) {
  using T = TypeParam;
  if constexpr (!sd::has_packet_exp<T>) {
    GTEST_SKIP() << "no vectorised exp for this type on this target";
  } else {
    // Three lanes at least: SSE2 packs two doubles, so two packets then.
    std::vector<T> x(2 * ei::unpacket_traits<Packet<T>>::size, T(-3));
    x[0] = std::numeric_limits<T>::quiet_NaN();
    x.back() = -std::numeric_limits<T>::quiet_NaN();
    for (const auto& y : {map_packets(x, [](const auto& p) { return sd::pexp_accurate(p); }),
                          map_packets(x, [](const auto& p) { return sd::pexp_normal(p); })}) {
      EXPECT_TRUE(std::isnan(y[0]));
      EXPECT_TRUE(std::isnan(y.back()));
      EXPECT_LE(ulp_error<T>(y[1], std::exp(-3.0L)), max_exp_ulp);
    }
  }
}

}  // namespace
