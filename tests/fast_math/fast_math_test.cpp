// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// What smax guarantees when the user compiles with -ffast-math (this file is built with it;
// see CMakeLists.txt): accurate results, no overflow for finite logits, -inf masks give 0,
// the T = 0 and T = inf limits, and argument checks. Not guaranteed: NaN logits poisoning
// their distribution (the compiler may drop a NaN anywhere). -ffinite-math-only lets the
// compiler assume no NaN or inf exists, so this file tests for them on the bits, like smax
// does internally, never with std::isnan.

#define SMAX_QUIET_FAST_MATH
#include <smax/smax.hpp>

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#ifndef __FAST_MATH__
#error "fast_math_test.cpp must be compiled with -ffast-math"
#endif

namespace {

template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <typename T>
T inf() {
  return std::numeric_limits<T>::infinity();
}

template <typename T>
Vec<T> vec(std::initializer_list<T> v) {
  Vec<T> r(static_cast<Eigen::Index>(v.size()));
  Eigen::Index i = 0;
  for (T x : v) r(i++) = x;
  return r;
}

template <typename T>
bool all_finite(const Vec<T>& v) {
  for (Eigen::Index i = 0; i < v.size(); ++i) {
    if (!smax::detail::is_finite(v(i))) return false;
  }
  return true;
}

template <typename T>
class FastMath : public ::testing::Test {};
struct TypeNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "float" : "double";
  }
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(FastMath, Scalars, TypeNames);

TYPED_TEST(FastMath, SeedExampleStaysAccurate) {
  using T = TypeParam;
  const Vec<T> z = vec<T>({2, 1, T(0.1)});
  const Vec<T> p = smax::softmax(z);
  long double e[3], sum = 0;
  for (Eigen::Index i = 0; i < 3; ++i) sum += e[i] = std::exp(static_cast<long double>(z(i)) - 2);
  for (Eigen::Index i = 0; i < 3; ++i) {
    const long double ref = e[i] / sum;
    EXPECT_LE(std::fabs(p(i) - ref) / ref, 8 * std::numeric_limits<T>::epsilon()) << "entry " << i;
  }
  EXPECT_NEAR(static_cast<double>(p(0)), 0.659, 5e-4);
}

TYPED_TEST(FastMath, ExpStaysAccurateOverItsRange) {
  using T = TypeParam;
  // softmax([x, 0]) = 1 / (1 + exp(-x)): exercises the vectorised exp at many arguments.
  const int n = 2001;
  Mat<T> z(n, 2);
  for (int i = 0; i < n; ++i) {
    z(i, 0) = static_cast<T>(-80 + 0.08L * i);
    z(i, 1) = T(0);
  }
  const Mat<T> p = smax::softmax(z, smax::rowwise);
  for (int i = 0; i < n; ++i) {
    const long double ref = 1.0L / (1.0L + std::exp(-static_cast<long double>(z(i, 0))));
    const long double err = std::fabs(static_cast<long double>(p(i, 0)) - ref) / ref;
    ASSERT_LE(err, 16 * std::numeric_limits<T>::epsilon()) << "x = " << z(i, 0);
  }
}

TYPED_TEST(FastMath, LargeLogitsDoNotOverflow) {
  using T = TypeParam;
  const T big = std::numeric_limits<T>::max();
  const Vec<T> p = smax::softmax(vec<T>({1000, 1001, 1002}));
  EXPECT_TRUE(all_finite(p));
  EXPECT_NEAR(static_cast<double>(p(2)), 0.66524095589412630, 1e-5);
  const Vec<T> q = smax::softmax(vec<T>({big, -big, big / 2}));
  EXPECT_TRUE(all_finite(q));
  EXPECT_EQ(q(0), T(1));
  EXPECT_EQ(q(1), T(0));
  const Vec<T> l = smax::log_softmax(vec<T>({1000, 1001, 1002}));
  EXPECT_TRUE(all_finite(l));
  EXPECT_TRUE(smax::detail::is_finite(smax::logsumexp(vec<T>({big, big}))) ||
              smax::detail::is_pos_inf(smax::logsumexp(vec<T>({big, big}))));
}

TYPED_TEST(FastMath, MinusInfinityMasksGiveZero) {
  using T = TypeParam;
  for (Eigen::Index n : {3, 17, 100}) {
    Vec<T> z = Vec<T>::LinSpaced(n, -2, 3);
    for (Eigen::Index i = 0; i < n; i += 2) z(i) = -inf<T>();
    const Vec<T> p = smax::softmax(z);
    const Vec<T> l = smax::log_softmax(z);
    for (Eigen::Index i = 0; i < n; ++i) {
      if (i % 2 == 0) {
        EXPECT_EQ(p(i), T(0)) << "n " << n << " entry " << i;
        EXPECT_TRUE(smax::detail::is_neg_inf(l(i))) << "n " << n << " entry " << i;
      } else {
        EXPECT_GT(p(i), T(0));
        EXPECT_TRUE(smax::detail::is_finite(l(i)));
      }
    }
    EXPECT_NEAR(static_cast<double>(p.sum()), 1.0, 1e-5);
  }
}

TYPED_TEST(FastMath, InvalidArgumentsAreStillRejected) {
  using T = TypeParam;
  const Vec<T> z = vec<T>({1, 2, 3});
  const T nan = std::numeric_limits<T>::quiet_NaN();
  EXPECT_THROW((void)smax::softmax(z, nan), smax::error);
  EXPECT_THROW((void)smax::softmax(z, T(-1)), smax::error);
  EXPECT_THROW((void)smax::softmax_backward(z, z, nan), smax::error);
  smax::cross_entropy_options<T> o;
  o.temperature = inf<T>();
  EXPECT_THROW((void)smax::cross_entropy(z, 1, o), smax::error);
  o.temperature = nan;
  EXPECT_THROW((void)smax::cross_entropy(z, 1, o), smax::error);
  o = {};
  o.label_smoothing = nan;
  EXPECT_THROW((void)smax::cross_entropy(z, 1, o), smax::error);
  Vec<T> w = vec<T>({1, nan, 1});
  o = {};
  o.weight = w;
  EXPECT_THROW((void)smax::cross_entropy(z, 1, o), smax::error);
}

TYPED_TEST(FastMath, TemperatureLimits) {
  using T = TypeParam;
  const Vec<T> z = vec<T>({1, 3, 3, -inf<T>()});
  const Vec<T> greedy = smax::softmax(z, T(0));
  EXPECT_EQ(greedy(0), T(0));
  EXPECT_EQ(greedy(1), T(0.5));
  EXPECT_EQ(greedy(2), T(0.5));
  EXPECT_EQ(greedy(3), T(0));
  const Vec<T> flat = smax::softmax(z, inf<T>());
  EXPECT_NEAR(static_cast<double>(flat(0)), 1.0 / 3, 1e-6);
  EXPECT_EQ(flat(3), T(0));
}

TYPED_TEST(FastMath, CrossEntropyOverflowSafety) {
  using T = TypeParam;
  const Vec<T> z = vec<T>({T(1e30), 0, -T(1e30)});
  EXPECT_EQ(smax::cross_entropy(z, 0), T(0));
  EXPECT_TRUE(smax::detail::is_finite(smax::cross_entropy(z, 1)));
  const auto r = smax::cross_entropy_with_grad(vec<T>({0, 1, -inf<T>()}), 0);
  EXPECT_NEAR(static_cast<double>(r.loss), 1.3132616875182228, 1e-5);
  EXPECT_EQ(r.grad(2), T(0));
  EXPECT_TRUE(smax::detail::is_pos_inf(smax::cross_entropy(vec<T>({0, 1, -inf<T>()}), 2)));
}

}  // namespace
