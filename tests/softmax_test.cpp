// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// softmax, log_softmax and logsumexp: the numerical policy case by case, temperature and
// the identities. Accuracy sweeps are in softmax_accuracy_test.cpp, API type variants,
// the _into forms and errors in softmax_api_test.cpp, backward passes in
// softmax_backward_test.cpp.

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/softmax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace {

using namespace smax_test;

template <typename T>
class SoftmaxPolicy : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxPolicy, FloatingTypes, TypeNames);

template <typename T>
class SoftmaxTemperature : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxTemperature, FloatingTypes, TypeNames);

template <typename T>
class SoftmaxIdentities : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxIdentities, FloatingTypes, TypeNames);

/// Checks softmax, log_softmax and logsumexp of a finite-maximum vector against the
/// reference with the documented bounds, at temperature t.
template <typename T>
void expect_matches_reference(const Vec<T>& z, T t = T(1)) {
  const reference ref = reference_for<T>(hi(z), t);
  EXPECT_TRUE(softmax_within_bound(ref, smax::softmax(z, t))) << "z = " << z.transpose();
  EXPECT_TRUE(within_log_ulps_of_reference(ref.log_softmax, smax::log_softmax(z, t)))
      << "z = " << z.transpose();
  EXPECT_LE(log_domain_error<T>(smax::logsumexp(z), ref.logsumexp), 4.0L)
      << "z = " << z.transpose() << ", logsumexp " << show(smax::logsumexp(z)) << ", reference "
      << show(ref.logsumexp);
}

/// Every entry is NaN.
template <typename D>
bool all_nan(const Eigen::DenseBase<D>& x) {
  return x.derived().array().isNaN().all();
}

/// The entropy -sum y log y of a probability vector, in long double (0 log 0 = 0).
template <typename D>
long double entropy(const Eigen::DenseBase<D>& y) {
  long double h = 0;
  for (Index i = 0; i < y.size(); ++i) {
    const long double p = y.derived()(i);
    if (p > 0) h -= p * std::log(p);
  }
  return h;
}

// ---------------------------------------------------------------------------------------
// The numerical policy

TYPED_TEST(SoftmaxPolicy, SeedExample) {
  using T = TypeParam;
  const Vec<T> z = vec<T>({2, 1, 0.1});
  const Vec<T> y = smax::softmax(z);
  EXPECT_TRUE(all_close(vec<T>({0.659, 0.242, 0.099}), y, 0, 5e-4));
  // To full precision: the high-precision reference, within the documented bound.
  EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(z)), y));
  expect_matches_reference<T>(z);
  const Eigen::Matrix<T, 3, 1> fixed = z;
  EXPECT_TRUE(bit_equal(y, smax::softmax(fixed)));
}

TYPED_TEST(SoftmaxPolicy, LargeLogitsDoNotOverflow) {
  using T = TypeParam;
  for (const Vec<T>& z : {vec<T>({1000, 1001, 1002}), vec<T>({-1000, -1001, -1002}),
                          vec<T>({1e30, 1e30, -1e30}), vec<T>({-1e30, -1e30 - 1e24})}) {
    SCOPED_TRACE(::testing::Message() << "z = " << z.transpose());
    const Vec<T> y = smax::softmax(z);
    EXPECT_TRUE(y.allFinite());
    EXPECT_TRUE(smax::log_softmax(z).allFinite());
    expect_matches_reference<T>(z);
  }
  // Shift invariance at the two scales (1000 + k is exact in both types).
  EXPECT_TRUE(
      within_ulps(smax::softmax(vec<T>({0, 1, 2})), smax::softmax(vec<T>({1000, 1001, 1002})), 2));
  EXPECT_TRUE(within_ulps(smax::softmax(vec<T>({0, -1, -2})),
                          smax::softmax(vec<T>({-1000, -1001, -1002})), 2));
}

TYPED_TEST(SoftmaxPolicy, LargestFiniteValues) {
  using T = TypeParam;
  const T m = big<T>;
  // [max, -max]: the spread overflows but the limit is exact.
  EXPECT_TRUE(same_values(vec<T>({1, 0}), smax::softmax(vec<T>({m, -m}))));
  EXPECT_TRUE(same_values(vec<T>({0, 1}), smax::softmax(vec<T>({-m, m}))));
  // log_softmax = [0, -2 max]: -2 max rounds to -inf in T.
  const Vec<T> ls = smax::log_softmax(vec<T>({m, -m}));
  EXPECT_EQ(ls(0), T(0));
  EXPECT_EQ(ls(1), -inf<T>);
  EXPECT_EQ(smax::logsumexp(vec<T>({m, -m})), m);
  // [max, max]: logsumexp = max + log 2, which rounds to max: no overflow.
  EXPECT_TRUE(same_values(vec<T>({0.5, 0.5}), smax::softmax(vec<T>({m, m}))));
  EXPECT_EQ(smax::logsumexp(vec<T>({m, m})), m);
  // [-max, -max]: uniform; logsumexp = -max + log 2, which rounds to -max.
  EXPECT_TRUE(same_values(vec<T>({0.5, 0.5}), smax::softmax(vec<T>({-m, -m}))));
  EXPECT_TRUE(within_log_ulps_of_reference(HiArray::Constant(2, -std::log(2.0L)),
                                           smax::log_softmax(vec<T>({-m, -m})), 1));
  EXPECT_EQ(smax::logsumexp(vec<T>({-m, -m})), -m);
  // Size one at the extremes.
  for (T x : {m, -m}) {
    EXPECT_TRUE(same_values(vec<T>({1}), smax::softmax(vec<T>({x}))));
    EXPECT_TRUE(same_values(vec<T>({0}), smax::log_softmax(vec<T>({x}))));
    EXPECT_EQ(smax::logsumexp(vec<T>({x})), x);
  }
}

TYPED_TEST(SoftmaxPolicy, SubnormalLogits) {
  using T = TypeParam;
  const T d = denorm_min<T>, tiny = std::numeric_limits<T>::min();
  const Vec<T> z = Vec<T>::Zero(5);
  Vec<T> zs(5);
  zs << d, T(0), -d, tiny, T(3) * d;
  // Every exponent is within a subnormal of 0: exp rounds to 1, all five get exactly 1/5.
  expect_matches_reference<T>(zs);
  EXPECT_TRUE(within_ulps(smax::softmax(z), smax::softmax(zs), 0));
  EXPECT_TRUE(within_ulps(smax::log_softmax(z), smax::log_softmax(zs), 1));
  // A subnormal temperature is a valid temperature: (z - max) / T = [0, -1].
  Vec<T> zt(2);
  zt << d, T(0);
  const reference ref = reference_for<T>(hi(zt), d);
  EXPECT_EQ(ref.exponent(1), -1.0L);
  EXPECT_TRUE(softmax_within_bound(ref, smax::softmax(zt, d)));
  EXPECT_TRUE(within_log_ulps_of_reference(ref.log_softmax, smax::log_softmax(zt, d)));
}

TYPED_TEST(SoftmaxPolicy, SpreadBeyondLargestFiniteValue) {
  using T = TypeParam;
  const T m = big<T>;
  // softmax([max, -max], T = max): exponents [0, -2], finite and not one-hot.
  const long double e = std::exp(1.0L);
  const HiArray expected = (HiArray(2) << e / (e + 1 / e), (1 / e) / (e + 1 / e)).finished();
  const Vec<T> y = smax::softmax(vec<T>({m, -m}), m);
  EXPECT_TRUE(within_ulps_of_reference(expected, y, 4 + 2 * 0.5L));
  const HiArray expected_log =
      (HiArray(2) << -std::log1p(std::exp(-2.0L)), -2 - std::log1p(std::exp(-2.0L))).finished();
  EXPECT_TRUE(within_log_ulps_of_reference(expected_log, smax::log_softmax(vec<T>({m, -m}), m)));
  // Temperatures on both sides of 1 and 2 (T > 1 halves both terms before subtracting).
  for (const Vec<T>& z : {vec<T>({m, -m}), vec<T>({-m, m, 0}), vec<T>({m, -m, -m, m / 2})}) {
    for (T t : {T(0.5), T(1), T(1.5), T(2), T(4), T(1e10), m / 8, m / 2, m}) {
      SCOPED_TRACE(::testing::Message() << "z = " << z.transpose() << ", T = " << t);
      const Vec<T> yt = smax::softmax(z, t);
      EXPECT_TRUE(yt.allFinite());
      const reference ref = reference_for<T>(hi(z), t);
      EXPECT_TRUE(softmax_within_bound(ref, yt));
      EXPECT_TRUE(within_log_ulps_of_reference(ref.log_softmax, smax::log_softmax(z, t)));
    }
  }
  // T = 2: the exponent is exactly -max; log_softmax keeps it.
  EXPECT_TRUE(same_values(vec<T>({0, -m}), smax::log_softmax(vec<T>({m, -m}), T(2))));
  EXPECT_TRUE(same_values(vec<T>({1, 0}), smax::softmax(vec<T>({m, -m}), T(2))));
}

TYPED_TEST(SoftmaxPolicy, MinusInfinityEntriesGetZero) {
  using T = TypeParam;
  const T ninf = -inf<T>;
  Vec<T> longer = random_logits<T>(37, logits::normal_1, 11);
  for (Index i : {0, 5, 16, 17, 31, 36}) longer(i) = ninf;
  for (const Vec<T>& z : {vec<T>({1, ninf, 2, ninf, 0.5}), vec<T>({ninf, 3}), longer}) {
    Vec<T> finite_part(z.size());
    Index k = 0;
    for (Index i = 0; i < z.size(); ++i) {
      if (z(i) != ninf) finite_part(k++) = z(i);
    }
    finite_part.conservativeResize(k);
    for (T t : {T(0.5), T(1), T(2), T(1000)}) {
      SCOPED_TRACE(::testing::Message() << "z = " << z.transpose() << ", T = " << t);
      const Vec<T> y = smax::softmax(z, t);
      const Vec<T> ls = smax::log_softmax(z, t);
      const Vec<T> y_finite = smax::softmax(finite_part, t);
      k = 0;
      for (Index i = 0; i < z.size(); ++i) {
        if (z(i) == ninf) {
          EXPECT_EQ(y(i), T(0)) << "at " << i;
          EXPECT_EQ(ls(i), ninf) << "at " << i;
        } else {
          // The -inf entries change nothing else (up to rounding: the entry may take
          // another code path, and the sum another order).
          EXPECT_LE(ulp_distance(y(i), y_finite(k++)), 4u) << "at " << i;
        }
      }
      expect_matches_reference<T>(z, t);
    }
  }
}

TYPED_TEST(SoftmaxPolicy, OnlyMinusInfinityIsNaN) {
  using T = TypeParam;
  for (Index n : {1, 2, 5, 16, 17, 33}) {
    const Vec<T> z = Vec<T>::Constant(n, -inf<T>);
    for (T t : {T(0), T(0.5), T(1), T(3), inf<T>}) {
      SCOPED_TRACE(::testing::Message() << "n = " << n << ", T = " << t);
      EXPECT_TRUE(all_nan(smax::softmax(z, t)));
      EXPECT_TRUE(all_nan(smax::log_softmax(z, t)));
    }
    EXPECT_EQ(smax::logsumexp(z), -inf<T>);
  }
}

TYPED_TEST(SoftmaxPolicy, OnePlusInfinityIsOneHot) {
  using T = TypeParam;
  std::vector<Vec<T>> cases = {vec<T>({1, inf<T>, -inf<T>, 3}), vec<T>({big<T>, inf<T>}),
                               vec<T>({inf<T>})};
  for (Index pos : {0, 8, 15, 16}) {
    Vec<T> z = random_logits<T>(17, logits::normal_30, 3);
    z(pos) = inf<T>;
    cases.push_back(z);
  }
  for (const Vec<T>& z : cases) {
    Index at = 0;
    z.maxCoeff(&at);
    Vec<T> one_hot = Vec<T>::Zero(z.size()), log_one_hot = Vec<T>::Constant(z.size(), -inf<T>);
    one_hot(at) = 1;
    log_one_hot(at) = 0;
    for (T t : {T(0), T(0.5), T(1), T(2), inf<T>}) {
      SCOPED_TRACE(::testing::Message() << "z = " << z.transpose() << ", T = " << t);
      EXPECT_TRUE(same_values(one_hot, smax::softmax(z, t)));
      EXPECT_TRUE(same_values(log_one_hot, smax::log_softmax(z, t)));
    }
    EXPECT_EQ(smax::logsumexp(z), inf<T>);
  }
}

TYPED_TEST(SoftmaxPolicy, TwoPlusInfinitiesAreNaN) {
  using T = TypeParam;
  Vec<T> longer = random_logits<T>(33, logits::normal_1, 5);
  longer(3) = inf<T>;
  longer(32) = inf<T>;
  for (const Vec<T>& z : {vec<T>({inf<T>, 1, inf<T>}), vec<T>({inf<T>, inf<T>}), longer}) {
    for (T t : {T(0), T(1), T(2), inf<T>}) {
      SCOPED_TRACE(::testing::Message() << "z = " << z.transpose() << ", T = " << t);
      EXPECT_TRUE(all_nan(smax::softmax(z, t)));
      EXPECT_TRUE(all_nan(smax::log_softmax(z, t)));
    }
    EXPECT_EQ(smax::logsumexp(z), inf<T>);
  }
}

TYPED_TEST(SoftmaxPolicy, AnyNaNPoisonsTheDistribution) {
  using T = TypeParam;
  for (Index n : sweep_sizes) {
    std::vector<Index> positions;
    if (n <= 33) {
      positions.resize(static_cast<std::size_t>(n));
      std::iota(positions.begin(), positions.end(), Index(0));
    } else {
      positions = std::vector<Index>{0, 1, n / 2, n - 17, n - 2, n - 1};
    }
    const Vec<T> base = random_logits<T>(n, logits::normal_30, 17);
    for (Index pos : positions) {
      Vec<T> z = base;
      z(pos) = qnan<T>;
      SCOPED_TRACE(::testing::Message() << "n = " << n << ", NaN at " << pos);
      EXPECT_TRUE(all_nan(smax::softmax(z)));
      EXPECT_TRUE(all_nan(smax::log_softmax(z)));
      EXPECT_TRUE(std::isnan(smax::logsumexp(z)));
      if (n > 1 && pos == positions.back()) {
        // NaN wins over the limit cases too.
        for (T other : {inf<T>, -inf<T>}) {
          Vec<T> w = z;
          w(pos == 0 ? 1 : 0) = other;
          for (T t : {T(0), T(2), inf<T>}) {
            EXPECT_TRUE(all_nan(smax::softmax(w, t))) << "with " << other << ", T = " << t;
            EXPECT_TRUE(all_nan(smax::log_softmax(w, t))) << "with " << other << ", T = " << t;
          }
          EXPECT_TRUE(std::isnan(smax::logsumexp(w)));
        }
      }
    }
  }
}

TYPED_TEST(SoftmaxPolicy, LimitCasesStayInTheirDistribution) {
  using T = TypeParam;
  // Rows: clean, NaN, one +inf, all -inf, two +inf, clean. Each row is independent.
  Mat<T> clean(6, 17);
  for (Index r = 0; r < 6; ++r) clean.row(r) = random_logits<T>(17, logits::normal_1, 40 + r);
  Mat<T> z = clean;
  z(1, 9) = qnan<T>;
  z(2, 16) = inf<T>;
  z.row(3).setConstant(-inf<T>);
  z(4, 0) = inf<T>;
  z(4, 8) = inf<T>;
  const auto check = [&](const auto& zz, const auto& cc, auto axis) {
    const auto y = smax::softmax(zz, axis);
    const auto ls = smax::log_softmax(zz, axis);
    const auto lse = smax::logsumexp(zz, axis);
    const auto y_clean = smax::softmax(cc, axis);
    const auto ls_clean = smax::log_softmax(cc, axis);
    const auto lse_clean = smax::logsumexp(cc, axis);
    constexpr bool by_row = std::is_same_v<decltype(axis), smax::rowwise_t>;
    const auto dist = [&](const auto& m, Index d) {
      return by_row ? Vec<T>(m.row(d).transpose()) : Vec<T>(m.col(d));
    };
    for (Index d : {0, 5}) {
      // The clean distributions keep their values...
      EXPECT_TRUE(within_ulps(dist(y_clean, d), dist(y, d), 2)) << "distribution " << d;
      EXPECT_TRUE(within_ulps(dist(ls_clean, d), dist(ls, d), 2)) << "distribution " << d;
      // Not to the bit: a block of rows holding a limit case is computed one row at a time,
      // which rounds the neighbours' sums in another order (within the 2 ULP above; for
      // logsumexp 2 ULP of max(|lse|, 1), its documented measure).
      EXPECT_NEAR(lse(d), lse_clean(d),
                  2 * std::numeric_limits<T>::epsilon() * std::max(T(1), std::abs(lse_clean(d))))
          << "distribution " << d;
    }
    EXPECT_TRUE(all_nan(dist(y, 1)));
    EXPECT_TRUE(all_nan(dist(ls, 1)));
    EXPECT_TRUE(std::isnan(lse(1)));
    Vec<T> one_hot = Vec<T>::Zero(17);
    one_hot(16) = 1;
    EXPECT_TRUE(same_values(one_hot, dist(y, 2)));
    EXPECT_EQ(lse(2), inf<T>);
    EXPECT_TRUE(all_nan(dist(y, 3)));
    EXPECT_EQ(lse(3), -inf<T>);
    EXPECT_TRUE(all_nan(dist(y, 4)));
    EXPECT_EQ(lse(4), inf<T>);
  };
  check(z, clean, smax::rowwise);
  check(MatR<T>(z), MatR<T>(clean), smax::rowwise);
  check(Mat<T>(z.transpose()), Mat<T>(clean.transpose()), smax::colwise);
  check(MatR<T>(z.transpose()), MatR<T>(clean.transpose()), smax::colwise);
}

TYPED_TEST(SoftmaxPolicy, LogSoftmaxKeepsLogProbabilitiesOfUnderflowedEntries) {
  using T = TypeParam;
  // exp(-200) underflows in float, exp(-1000) in double: the log-probability is still exact.
  const T far = std::is_same_v<T, float> ? T(-200) : T(-1000);
  EXPECT_TRUE(same_values(vec<T>({0, far}), smax::log_softmax(vec<T>({0, far}))));
  EXPECT_TRUE(same_values(vec<T>({far, 0}), smax::log_softmax(vec<T>({far, 0}))));
  // Long rows too (vector and strided paths).
  Vec<T> z = Vec<T>::Constant(33, far);
  z(20) = 0;
  EXPECT_TRUE(same_values(z, smax::log_softmax(z)));
  const Mat<T> m = z.transpose().replicate(3, 1);
  EXPECT_TRUE(same_values(m, smax::log_softmax(m, smax::rowwise)));
}

TYPED_TEST(SoftmaxPolicy, UnderflowingProbabilitiesRoundCorrectly) {
  using T = TypeParam;
  // softmax([0, -200]): exp(-200) = 1.4e-87 is 0 in float and normal in double; in either
  // case the result is the true value rounded to T.
  const Vec<T> z = vec<T>({0, -200});
  const Vec<T> y = smax::softmax(z);
  const reference ref = reference_for<T>(hi(z));
  EXPECT_TRUE(softmax_within_bound(ref, y));
  if (std::is_same_v<T, float>) {
    EXPECT_EQ(static_cast<T>(ref.softmax(1)), T(0));
    EXPECT_EQ(y(1), T(0));
  } else {
    EXPECT_GT(y(1), T(1e-88));
  }
  EXPECT_EQ(smax::softmax(vec<T>({0, -1e4}))(1), T(0));
}

TYPED_TEST(SoftmaxPolicy, SubnormalProbabilitiesAreCorrectlyScaled) {
  using T = TypeParam;
  // softmax([0, -95]) in float is ~5.5e-42, softmax([0, -720]) in double ~2e-313:
  // subnormal, within 2 ULP of the subnormal grid, neither 0 nor clamped to the normal range.
  const T x = std::is_same_v<T, float> ? T(-95) : T(-720);
  const Vec<T> z = vec<T>({0, x});
  const Vec<T> y = smax::softmax(z);
  const long double p = reference_for<T>(hi(z)).softmax(1);
  EXPECT_GT(y(1), T(0));
  EXPECT_LT(y(1), std::numeric_limits<T>::min());
  EXPECT_LE(ulp_error<T>(y(1), p), 2.0L) << "actual " << show(y(1)) << ", reference " << show(p);
  EXPECT_LE(ulp_distance(y(1), static_cast<T>(p)), 2u);

  // A sweep through the whole subnormal range and past it, long enough for the packet
  // path, in a vector and as a strided row. The exponents are exact (max = 0, T = 1), so
  // the only errors are exp's and the division's: 2 ULP, on the subnormal grid below
  // the normal range.
  const long double first = std::is_same_v<T, float> ? -86 : -706;
  const long double last = std::is_same_v<T, float> ? -105 : -747;
  const Index n = 61;
  Vec<T> sweep(n);
  sweep(0) = 0;
  for (Index i = 1; i < n; ++i) {
    sweep(i) = static_cast<T>(first + (last - first) * static_cast<long double>(i - 1) / (n - 2));
  }
  const HiArray ref = reference_for<T>(hi(sweep)).softmax;
  EXPECT_TRUE(within_ulps_of_reference(ref, smax::softmax(sweep), 2));
  Mat<T> rows(3, n);
  rows.row(0).setZero();
  rows.row(1) = sweep.transpose();
  rows.row(2) = sweep.reverse().transpose();
  const Mat<T> y_rows = smax::softmax(rows, smax::rowwise);
  EXPECT_TRUE(within_ulps_of_reference(ref, y_rows.row(1), 2));
  EXPECT_TRUE(within_ulps_of_reference(HiArray(ref.reverse()), y_rows.row(2), 2));
  // The log-probabilities are the exact exponents.
  EXPECT_TRUE(same_values(sweep, smax::log_softmax(sweep)));
}

TYPED_TEST(SoftmaxPolicy, SumsToOneAndPreservesRanking) {
  using T = TypeParam;
  std::uint32_t seed = 100;
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      for (T t : {T(0.01), T(1), T(3)}) {
        const Vec<T> z = random_logits<T>(n, kind, ++seed);
        const Vec<T> y = smax::softmax(z, t);
        const Vec<T> ls = smax::log_softmax(z, t);
        SCOPED_TRACE(::testing::Message() << "n = " << n << ", " << name_of(kind) << ", T = " << t);
        long double sum = 0;
        for (Index i = 0; i < n; ++i) sum += y(i);
        EXPECT_LE(std::fabs(sum - 1), n * static_cast<long double>(eps<T>)) << show(sum);
        // Larger logits never get smaller probabilities; equal logits get equal ones.
        std::vector<Index> order(static_cast<std::size_t>(n));
        std::iota(order.begin(), order.end(), Index(0));
        std::sort(order.begin(), order.end(), [&](Index a, Index b) { return z(a) < z(b); });
        for (std::size_t k = 1; k < order.size(); ++k) {
          const Index a = order[k - 1], b = order[k];
          if (z(a) == z(b)) {
            EXPECT_EQ(y(a), y(b)) << "tie at " << a << " and " << b << ", z = " << show(z(a));
            EXPECT_EQ(ls(a), ls(b)) << "tie at " << a << " and " << b;
          } else {
            EXPECT_LE(y(a), y(b)) << "z[" << a << "] = " << show(z(a)) << " < z[" << b
                                  << "] = " << show(z(b));
            EXPECT_LE(ls(a), ls(b)) << "z[" << a << "] < z[" << b << "]";
          }
        }
      }
    }
  }
}

TYPED_TEST(SoftmaxPolicy, EmptyInputs) {
  using T = TypeParam;
  const Vec<T> none(0);
  EXPECT_EQ(smax::softmax(none).size(), 0);
  EXPECT_EQ(smax::log_softmax(none).size(), 0);
  EXPECT_EQ(smax::logsumexp(none), -inf<T>);
  EXPECT_EQ(smax::softmax(RowVec<T>(0)).size(), 0);
  EXPECT_EQ(smax::logsumexp(RowVec<T>(0)), -inf<T>);
  for (T t : {T(0), T(2), inf<T>}) {
    EXPECT_EQ(smax::softmax(none, t).size(), 0);
    EXPECT_EQ(smax::log_softmax(none, t).size(), 0);
  }
  // 0 x 4: no rows (rowwise: no distributions), four empty columns (colwise).
  const Mat<T> no_rows(0, 4);
  const Mat<T> y_rows = smax::softmax(no_rows, smax::rowwise);
  EXPECT_EQ(y_rows.rows(), 0);
  EXPECT_EQ(y_rows.cols(), 4);
  const Mat<T> ls_cols = smax::log_softmax(no_rows, smax::colwise);
  EXPECT_EQ(ls_cols.rows(), 0);
  EXPECT_EQ(ls_cols.cols(), 4);
  EXPECT_EQ(smax::logsumexp(no_rows, smax::rowwise).size(), 0);
  EXPECT_TRUE(
      same_values(RowVec<T>::Constant(4, -inf<T>), smax::logsumexp(no_rows, smax::colwise)));
  // 3 x 0: three empty rows.
  const MatR<T> no_cols(3, 0);
  EXPECT_EQ(smax::softmax(no_cols, smax::colwise).size(), 0);
  EXPECT_TRUE(same_values(Vec<T>::Constant(3, -inf<T>), smax::logsumexp(no_cols, smax::rowwise)));
  EXPECT_EQ(smax::logsumexp(no_cols, smax::colwise).size(), 0);
}

TYPED_TEST(SoftmaxPolicy, SizeOne) {
  using T = TypeParam;
  for (T x : {T(0), T(-3.5), T(1e30), denorm_min<T>, -big<T>}) {
    EXPECT_TRUE(same_values(vec<T>({1}), smax::softmax(vec<T>({x}))));
    EXPECT_TRUE(same_values(vec<T>({0}), smax::log_softmax(vec<T>({x}))));
    EXPECT_EQ(smax::logsumexp(vec<T>({x})), x);
    for (T t : {T(0), T(0.25), T(8), inf<T>}) {
      EXPECT_TRUE(same_values(vec<T>({1}), smax::softmax(vec<T>({x}), t)));
      EXPECT_TRUE(same_values(vec<T>({0}), smax::log_softmax(vec<T>({x}), t)));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Temperature

TYPED_TEST(SoftmaxTemperature, ZeroIsArgmaxWithTiesSplitEqually) {
  using T = TypeParam;
  const T ninf = -inf<T>;
  const long double log2 = std::log(2.0L);
  EXPECT_TRUE(same_values(vec<T>({0, 0.5, 0.5}), smax::softmax(vec<T>({1, 3, 3}), T(0))));
  const Vec<T> ls = smax::log_softmax(vec<T>({1, 3, 3}), T(0));
  EXPECT_EQ(ls(0), ninf);
  EXPECT_TRUE(within_ulps_of_reference(HiArray::Constant(2, -log2), ls.tail(2), 1));
  EXPECT_TRUE(same_values(vec<T>({1, 0, 0}), smax::softmax(vec<T>({5, 1, 2}), T(0))));
  EXPECT_TRUE(same_values(vec<T>({0, ninf, ninf}), smax::log_softmax(vec<T>({5, 1, 2}), T(0))));
  EXPECT_TRUE(same_values(vec<T>({0.5, 0, 0.5}), smax::softmax(vec<T>({1, ninf, 1}), T(0))));
  EXPECT_TRUE(
      same_values(vec<T>({0.5, 0, 0.5}), smax::softmax(vec<T>({big<T>, -big<T>, big<T>}), T(0))));
  // Three maxima in a longer row, in the packet body and the tail.
  Vec<T> z = random_logits<T>(17, logits::normal_1, 8);
  z(0) = z(8) = z(16) = T(10);
  const Vec<T> y = smax::softmax(z, T(0));
  const Vec<T> ly = smax::log_softmax(z, T(0));
  for (Index i = 0; i < 17; ++i) {
    if (i % 8 == 0) {
      EXPECT_LE(ulp_error<T>(y(i), 1.0L / 3), 0.5L) << "at " << i;
      EXPECT_LE(ulp_error<T>(ly(i), -std::log(3.0L)), 1.0L) << "at " << i;
    } else {
      EXPECT_EQ(y(i), T(0)) << "at " << i;
      EXPECT_EQ(ly(i), ninf) << "at " << i;
    }
  }
  // The limit T -> 0+: a tiny positive temperature agrees where it does not underflow.
  EXPECT_TRUE(same_values(smax::softmax(vec<T>({1, 3, 3}), T(0)),
                          smax::softmax(vec<T>({1, 3, 3}), T(1e-3))));
}

TYPED_TEST(SoftmaxTemperature, InfinityIsUniformOverNonMinusInfinityEntries) {
  using T = TypeParam;
  const T ninf = -inf<T>;
  const Vec<T> z = vec<T>({1, ninf, 5, 2});
  const Vec<T> y = smax::softmax(z, inf<T>);
  const Vec<T> ly = smax::log_softmax(z, inf<T>);
  for (Index i : {0, 2, 3}) {
    EXPECT_LE(ulp_error<T>(y(i), 1.0L / 3), 0.5L) << "at " << i;
    EXPECT_LE(ulp_error<T>(ly(i), -std::log(3.0L)), 1.0L) << "at " << i;
  }
  EXPECT_EQ(y(1), T(0));
  EXPECT_EQ(ly(1), ninf);
  EXPECT_TRUE(same_values(vec<T>({0.5, 0.5}), smax::softmax(vec<T>({big<T>, -big<T>}), inf<T>)));
  const Vec<T> w = random_logits<T>(17, logits::uniform_100, 9);
  const Vec<T> u = smax::softmax(w, inf<T>);
  for (Index i = 0; i < 17; ++i) EXPECT_LE(ulp_error<T>(u(i), 1.0L / 17), 0.5L) << "at " << i;
}

TYPED_TEST(SoftmaxTemperature, DividesTheShiftedLogits) {
  using T = TypeParam;
  // softmax(z, T)_i = exp((z_i - max) / T) / sum, against explicit formulas.
  struct item {
    long double a, b, t;
  };
  for (const item& c : {item{0, -1, 0.5L}, item{1000, 999, 0.5L}, item{0, -1, 2},
                        item{0, -0.015625L, 1.0L / 1024}, item{-3, 5, 1e3L}}) {
    const Vec<T> z = vec<T>({c.a, c.b});
    const T t = static_cast<T>(c.t);
    const long double d = (std::min(c.a, c.b) - std::max(c.a, c.b)) / static_cast<long double>(t);
    const long double small = std::exp(d) / (1 + std::exp(d)), large = 1 / (1 + std::exp(d));
    const HiArray expected = c.a >= c.b ? (HiArray(2) << large, small).finished()
                                        : (HiArray(2) << small, large).finished();
    const Vec<T> y = smax::softmax(z, t);
    EXPECT_LE(ulp_error<T>(y(0), expected(0)),
              softmax_bound_ulps<T>(c.a >= c.b ? 0 : d, expected(0)))
        << "z = " << z.transpose() << ", T = " << t;
    EXPECT_LE(ulp_error<T>(y(1), expected(1)),
              softmax_bound_ulps<T>(c.a >= c.b ? d : 0, expected(1)))
        << "z = " << z.transpose() << ", T = " << t;
  }
  // A power-of-two temperature scales exactly: softmax(z, 2^k) = softmax(z / 2^k).
  const Vec<T> z = random_logits<T>(33, logits::normal_30, 21);
  for (T t : {T(0.25), T(2), T(64)}) {
    EXPECT_TRUE(within_ulps(smax::softmax(Vec<T>(z / t)), smax::softmax(z, t), 2)) << "T = " << t;
    EXPECT_TRUE(within_ulps(smax::log_softmax(Vec<T>(z / t)), smax::log_softmax(z, t), 2))
        << "T = " << t;
  }
}

TYPED_TEST(SoftmaxTemperature, EntropyGrowsWithTemperature) {
  using T = TypeParam;
  for (const Vec<T>& z : {Vec<T>(random_logits<T>(33, logits::normal_1, 31)),
                          Vec<T>(random_logits<T>(17, logits::near_ties, 32)),
                          Vec<T>(random_logits<T>(100, logits::uniform_100, 33))}) {
    const long double n = static_cast<long double>(z.size());
    const long double slack = 4 * n * static_cast<long double>(eps<T>);
    long double previous = entropy(smax::softmax(z, T(0)));
    const long double lowest = previous;
    EXPECT_NEAR(static_cast<double>(previous),
                std::log(static_cast<double>((z.array() == z.maxCoeff()).count())), 1e-6);
    for (long double t = 1e-3L; t <= 1e3L; t *= 1.25L) {
      const long double h = entropy(smax::softmax(z, static_cast<T>(t)));
      EXPECT_GE(h, previous - slack) << "T = " << show(t);
      previous = std::max(previous, h);
    }
    const long double highest = entropy(smax::softmax(z, inf<T>));
    EXPECT_GE(highest, previous - slack);
    EXPECT_NEAR(static_cast<double>(highest), std::log(static_cast<double>(n)), 1e-6);
    EXPECT_GT(highest, lowest + 1);
  }
}

// ---------------------------------------------------------------------------------------
// Identities

TYPED_TEST(SoftmaxIdentities, ShiftInvariance) {
  using T = TypeParam;
  // Logits on a 1/64 grid, shifts that keep z + c exact: the shifted exponents equal the
  // unshifted ones, so the results agree to rounding noise of at most 2 ULP.
  std::uint32_t seed = 200;
  for (Index n : {2, 3, 17, 33, 1000}) {
    Vec<T> z = random_logits<T>(n, logits::normal_30, ++seed);
    z = (z.array() * T(64)).round() / T(64);
    for (T c : {T(1024), T(-512), T(3.5)}) {
      const Vec<T> shifted = z.array() + c;
      for (T t : {T(0.5), T(1), T(2)}) {
        SCOPED_TRACE(::testing::Message() << "n = " << n << ", c = " << c << ", T = " << t);
        EXPECT_TRUE(within_ulps(smax::softmax(z, t), smax::softmax(shifted, t), 2));
        EXPECT_TRUE(within_ulps(smax::log_softmax(z, t), smax::log_softmax(shifted, t), 2));
      }
      const long double expected = static_cast<long double>(smax::logsumexp(z)) + c;
      const T actual = smax::logsumexp(shifted);
      EXPECT_LE(std::fabs(actual - expected),
                8 * ulp_of<T>(std::max({std::fabs(expected), 1.0L, std::fabs(expected - c)})))
          << "n = " << n << ", c = " << c;
    }
  }
}

TYPED_TEST(SoftmaxIdentities, LogSoftmaxIsZMinusLogsumexp) {
  using T = TypeParam;
  std::uint32_t seed = 300;
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      const Vec<T> z = random_logits<T>(n, kind, ++seed);
      const Vec<T> ls = smax::log_softmax(z);
      const long double lse = smax::logsumexp(z);
      for (Index i = 0; i < n; ++i) {
        const long double expected = static_cast<long double>(z(i)) - lse;
        const long double scale = std::max({std::fabs(expected), std::fabs(lse), 1.0L});
        EXPECT_LE(std::fabs(ls(i) - expected), 8 * ulp_of<T>(scale))
            << "n = " << n << ", " << name_of(kind) << ", at " << i;
      }
    }
  }
}

TYPED_TEST(SoftmaxIdentities, ExpOfLogSoftmaxIsSoftmax) {
  using T = TypeParam;
  std::uint32_t seed = 400;
  const long double e = static_cast<long double>(eps<T>);
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      for (T t : {T(0.5), T(1), T(20)}) {
        const Vec<T> z = random_logits<T>(n, kind, ++seed);
        const Vec<T> ls = smax::log_softmax(z, t);
        const Vec<T> y = smax::softmax(z, t);
        for (Index i = 0; i < n; ++i) {
          const long double from_log = std::exp(static_cast<long double>(ls(i)));
          // log_softmax is within 4 ULP of max(|l|, 1) and softmax within 4 ULP + |d| eps/2:
          // their difference is at most (8 + 5 max(|l|, 1)) eps relative, plus a few
          // subnormal steps where y is subnormal.
          const long double a = std::fabs(static_cast<long double>(ls(i)));
          const long double tol = (8 + 5 * std::max(a, 1.0L)) * e * from_log + 2 * denorm_min<T>;
          EXPECT_LE(std::fabs(from_log - y(i)), tol)
              << "n = " << n << ", " << name_of(kind) << ", T = " << t << ", at " << i
              << ": log_softmax " << show(ls(i)) << ", softmax " << show(y(i));
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Batches whose distributions mix finite rows with the policy's limit cases. The kernels
// take lane_block rows at a time (transposed into a tile when rows are short and
// contiguous, copied when they lie side by side in a column-major matrix, two-pass online
// when long); a row with a non-finite maximum must get its own policy result there without
// changing the results of its neighbours.

template <typename T>
class SoftmaxBatchLimits : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxBatchLimits, FloatingTypes, TypeNames);

/// What row r of a mixed batch holds (r % 9): 0, 7 finite; 1 all -inf; 2 finite with some
/// -inf; 3 one +inf among finite and -inf entries; 4 two +inf; 5 one NaN; 6 +inf and NaN;
/// 8 finite with a large spread (entries beyond exp's range after the shift).
template <typename T>
Mat<T> mixed_batch(Index rows, Index cols, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-8, 8);
  std::uniform_int_distribution<Index> pick(0, cols - 1);
  Mat<T> z(rows, cols);
  for (Index r = 0; r < rows; ++r) {
    for (Index c = 0; c < cols; ++c) z(r, c) = static_cast<T>(u(gen));
    const Index a = pick(gen), b = cols > 1 ? (a + 1 + pick(gen) % (cols - 1)) % cols : a;
    switch (r % 9) {
      case 1:
        z.row(r).setConstant(-inf<T>);
        break;
      case 2:
        for (Index c = 0; c < cols; c += 2) z(r, c) = -inf<T>;
        z(r, a) = static_cast<T>(u(gen));  // at least one finite entry
        break;
      case 3:
        if (cols > 2) z(r, b) = -inf<T>;
        z(r, a) = inf<T>;
        break;
      case 4:
        z(r, a) = inf<T>;
        z(r, b) = inf<T>;
        break;
      case 5:
        z(r, a) = qnan<T>;
        break;
      case 6:
        z(r, a) = inf<T>;
        z(r, b) = qnan<T>;
        break;
      case 8:
        z(r, a) = static_cast<T>(std::is_same_v<T, float> ? 150 : 1000);
        break;
      default:
        break;
    }
  }
  return z;
}

/// The three forward ops of a batch, rowwise.
template <typename T>
struct forward_results {
  Mat<T> y, ly;
  Vec<T> lse;
};

/// Runs the three forward ops on z stored in one order, out of place and in place (the
/// kernels read every input before writing over it), and colwise on the transpose.
template <typename T, int Order>
forward_results<T> run_mixed_batch(const Mat<T>& zc, T t, const std::string& what) {
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>;
  const M z = zc;
  M y, ly;
  Vec<T> lse;
  smax::softmax_into(y, z, smax::rowwise, t);
  smax::log_softmax_into(ly, z, smax::rowwise, t);
  smax::logsumexp_into(lse, z, smax::rowwise);
  M y2 = z, ly2 = z;
  smax::softmax_into(y2, y2, smax::rowwise, t);
  smax::log_softmax_into(ly2, ly2, smax::rowwise, t);
  EXPECT_TRUE(bit_equal(y, y2)) << what << ": softmax in place";
  EXPECT_TRUE(bit_equal(ly, ly2)) << what << ": log_softmax in place";
  using MT = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic,
                           Order == Eigen::RowMajor ? Eigen::ColMajor : Eigen::RowMajor>;
  const MT zt = z.transpose();
  MT yt;
  smax::softmax_into(yt, zt, smax::colwise, t);
  EXPECT_TRUE(bit_equal(M(yt.transpose()), y)) << what << ": colwise on the transpose";
  return {y, ly, lse};
}

/// Checks every row of both storage orders' results against the policy: rows with a
/// finite maximum and no +inf or NaN against the long double reference with the
/// documented bounds, the others exactly (the one-distribution result, which the policy
/// tests above pin down).
template <typename T>
void check_mixed_batch(const Mat<T>& z, T t, const std::string& what) {
  const forward_results<T> res[2] = {run_mixed_batch<T, Eigen::RowMajor>(z, t, what),
                                     run_mixed_batch<T, Eigen::ColMajor>(z, t, what)};
  const char* order[2] = {" row-major", " column-major"};
  for (Index r = 0; r < z.rows(); ++r) {
    const Vec<T> row = z.row(r).transpose();
    bool finite_max = false, special = false;
    for (Index c = 0; c < row.size(); ++c) {
      finite_max = finite_max || std::isfinite(row(c));
      special = special || std::isnan(row(c)) || (std::isinf(row(c)) && row(c) > 0);
    }
    const std::string at = what + ", row " + std::to_string(r) + " (kind " + std::to_string(r % 9) +
                           "), T = " + show(t);
    if (finite_max && !special) {
      const reference ref = reference_for<T>(hi(row), t);
      const long double lse = t == T(1) ? ref.logsumexp : reference_for<T>(hi(row)).logsumexp;
      for (int o = 0; o < 2; ++o) {
        const Vec<T> y = res[o].y.row(r).transpose(), ly = res[o].ly.row(r).transpose();
        EXPECT_TRUE(softmax_within_bound(ref, y)) << at << order[o];
        EXPECT_TRUE(within_log_ulps_of_reference(ref.log_softmax, ly)) << at << order[o];
        EXPECT_LE(log_domain_error<T>(res[o].lse(r), lse), 4.0L) << at << order[o];
      }
    } else {
      const Vec<T> y = smax::softmax(row, t), ly = smax::log_softmax(row, t);
      const T lse = smax::logsumexp(row);
      for (int o = 0; o < 2; ++o) {
        EXPECT_TRUE(bit_equal(y, Vec<T>(res[o].y.row(r).transpose()))) << at << order[o];
        EXPECT_TRUE(bit_equal(ly, Vec<T>(res[o].ly.row(r).transpose()))) << at << order[o];
        EXPECT_TRUE(std::isnan(lse) ? std::isnan(res[o].lse(r)) : lse == res[o].lse(r))
            << at << order[o] << ": logsumexp " << show(res[o].lse(r)) << ", expected "
            << show(lse);
      }
    }
  }
}

TYPED_TEST(SoftmaxBatchLimits, NonFiniteRowsInLaneBlocksGetThePolicyResult) {
  using T = TypeParam;
  std::uint32_t seed = 900;
  // Short rows (tiles: transposed, permuted, gathered tails), rows around the tile length,
  // long rows (the two-pass kernel); row counts around the lane block and past the
  // dense-row threshold.
  for (Index cols : {1, 2, 3, 5, 8, 10, 16, 17, 32, 33, 64, 65, 129, 300}) {
    for (Index rows : {9, 70, 300}) {
      if (rows * cols > 20000) continue;
      const Mat<T> z = mixed_batch<T>(rows, cols, ++seed);
      for (T t : {T(1), rows == 70 ? T(3) : T(0.7)}) {
        check_mixed_batch<T>(z, t, std::to_string(rows) + "x" + std::to_string(cols));
      }
    }
  }
  // Column-major panels past 4 MiB, whose softmax output pass computes the exponentials
  // again rather than scaling the stored ones: a full panel (4 KiB of each column) of 1100
  // entries, and a partial one.
  const Index rows = Index(4096 / sizeof(T)) + 6;
  check_mixed_batch<T>(mixed_batch<T>(rows, 1100, 1234), T(1), std::to_string(rows) + "x1100");
  // Past 16 KiB the panels run the online normaliser; its +inf and NaN rows too (without
  // the entirely -inf rows, which still send such a panel to the lane blocks).
  const Index cols = Index(16384 / sizeof(T)) + 3;
  Mat<T> z = mixed_batch<T>(40, cols, 4321);
  for (Index r = 1; r < z.rows(); r += 9) z.row(r) = z.row(0);
  check_mixed_batch<T>(z, T(0.7), "40x" + std::to_string(cols) + " (online)");
}

TYPED_TEST(SoftmaxBatchLimits, FiniteRowsDoNotDependOnTheirNeighbours) {
  using T = TypeParam;
  // The same finite rows alone and in lane blocks (70 rows: two full, one partial) whose
  // other rows are -inf, +inf or NaN: bit for bit the same results. Short rows run a
  // packet's worth at a time in registers (AVX-512), which rewrite the lanes of infinite
  // maxima in place as the lane tile does; the rows of a column-major matrix past the last
  // whole packet take the tile, so the clean batch's copies of row 0 there must match row
  // 0. Column-major rows longer than a lane tile run in panels, which take their maxima
  // first up to 16 KiB rows and run the online normaliser beyond: 200 and 16 KiB + 3
  // entries cover both.
  using RM = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (Index cols :
       {Index(1), Index(2), Index(3), Index(4), Index(5), Index(8), Index(10), Index(12), Index(13),
        Index(16), Index(17), Index(40), Index(200), Index(16384 / sizeof(T)) + 3}) {
    for (int order = 0; order < 2; ++order) {
      const Mat<T> mixed = mixed_batch<T>(70, cols, 77 + static_cast<std::uint32_t>(cols));
      Mat<T> clean = mixed;
      for (Index r = 0; r < clean.rows(); ++r) {
        if (r % 9 != 0 && r % 9 != 7 && r % 9 != 8) clean.row(r) = clean.row(0);
      }
      // Only entirely -inf rows (padded samples) beside the finite ones: the register
      // kernels shift such lanes by 0 as the tile does, rather than leave the group to it.
      Mat<T> padded = clean;
      for (Index r = 1; r < padded.rows(); r += 9) padded.row(r).setConstant(-inf<T>);
      for (T t : {T(1), T(0.7)}) {
        Mat<T> a, b, la, lb;
        Vec<T> lsa, lsb;
        if (order == 0) {
          a = smax::softmax(mixed, smax::rowwise, t);
          b = smax::softmax(clean, smax::rowwise, t);
          la = smax::log_softmax(mixed, smax::rowwise, t);
          lb = smax::log_softmax(clean, smax::rowwise, t);
          lsa = smax::logsumexp(mixed, smax::rowwise);
          lsb = smax::logsumexp(clean, smax::rowwise);
        } else {
          a = smax::softmax(RM(mixed), smax::rowwise, t);
          b = smax::softmax(RM(clean), smax::rowwise, t);
          la = smax::log_softmax(RM(mixed), smax::rowwise, t);
          lb = smax::log_softmax(RM(clean), smax::rowwise, t);
          lsa = smax::logsumexp(RM(mixed), smax::rowwise);
          lsb = smax::logsumexp(RM(clean), smax::rowwise);
        }
        const std::string what = std::to_string(cols) + " columns, " +
                                 (order == 0 ? "column-major" : "row-major") + ", T = " + show(t);
        Mat<T> p, lp;
        Vec<T> lsp;
        if (order == 0) {
          p = smax::softmax(padded, smax::rowwise, t);
          lp = smax::log_softmax(padded, smax::rowwise, t);
          lsp = smax::logsumexp(padded, smax::rowwise);
        } else {
          p = smax::softmax(RM(padded), smax::rowwise, t);
          lp = smax::log_softmax(RM(padded), smax::rowwise, t);
          lsp = smax::logsumexp(RM(padded), smax::rowwise);
        }
        for (Index r = 0; r < padded.rows(); ++r) {
          if (r % 9 == 1) {
            EXPECT_TRUE(p.row(r).array().isNaN().all()) << "padded, " << what << ", row " << r;
            EXPECT_TRUE(lp.row(r).array().isNaN().all()) << "padded, " << what << ", row " << r;
            EXPECT_EQ(lsp(r), -inf<T>) << "padded, " << what << ", row " << r;
          } else {
            EXPECT_TRUE(bit_equal(b.row(r), p.row(r))) << "padded, " << what << ", row " << r;
            EXPECT_TRUE(bit_equal(lb.row(r), lp.row(r))) << "padded, " << what << ", row " << r;
            EXPECT_EQ(lsb(r), lsp(r)) << "padded, " << what << ", row " << r;
          }
        }
        for (Index r = 1; r < clean.rows(); ++r) {
          if (r % 9 != 0 && r % 9 != 7 && r % 9 != 8) {  // copies of row 0
            EXPECT_TRUE(bit_equal(b.row(0), b.row(r)))
                << "copy of row 0, " << what << ", row " << r;
            EXPECT_TRUE(bit_equal(lb.row(0), lb.row(r)))
                << "log_softmax, copy of row 0, " << what << ", row " << r;
            EXPECT_EQ(lsb(0), lsb(r)) << "logsumexp, copy of row 0, " << what << ", row " << r;
          }
        }
        for (Index r = 0; r < mixed.rows(); ++r) {
          if (r % 9 == 0 || r % 9 == 7 || r % 9 == 8) {
            EXPECT_TRUE(bit_equal(b.row(r), a.row(r))) << what << ", row " << r;
            EXPECT_TRUE(bit_equal(lb.row(r), la.row(r)))
                << "log_softmax, " << what << ", row " << r;
            EXPECT_EQ(lsb(r), lsa(r)) << "logsumexp, " << what << ", row " << r;
          }
        }
      }
    }
  }
}

TYPED_TEST(SoftmaxBatchLimits, FullyMaskedRowsInPanelsGiveThePolicyResult) {
  using T = TypeParam;
  // Rows entirely -inf (padded samples) among rows with some -inf entries (masks), in
  // column-major panels: NaN for softmax and log_softmax, -inf for logsumexp, and the other
  // rows bit for bit what they give without those neighbours, within the documented bound.
  for (Index cols : {Index(200), Index(16384 / sizeof(T)) + 3}) {
    Mat<T> z = loss::random_matrix<T>(70, cols, 93 + static_cast<unsigned>(cols), -20, 20);
    std::mt19937 gen(7);
    for (Index r = 0; r < z.rows(); ++r) {
      for (Index c = 1; c < cols; ++c) {
        if (r % 8 == 5 || gen() % 4 == 0) z(r, c) = -inf<T>;
      }
      if (r % 8 == 5) z(r, 0) = -inf<T>;
    }
    Mat<T> clean = z;
    for (Index r = 5; r < z.rows(); r += 8) clean.row(r) = z.row(0);
    for (T t : {T(1), T(0.7)}) {
      const std::string what = std::to_string(cols) + " columns, T = " + show(t);
      const Mat<T> y = smax::softmax(z, smax::rowwise, t),
                   cy = smax::softmax(clean, smax::rowwise, t);
      const Mat<T> ly = smax::log_softmax(z, smax::rowwise, t);
      const Mat<T> cly = smax::log_softmax(clean, smax::rowwise, t);
      const Vec<T> lse = smax::logsumexp(z, smax::rowwise);
      const Vec<T> clse = smax::logsumexp(clean, smax::rowwise);
      for (Index r = 0; r < z.rows(); ++r) {
        if (r % 8 == 5) {
          EXPECT_TRUE(y.row(r).array().isNaN().all()) << what << ", row " << r;
          EXPECT_TRUE(ly.row(r).array().isNaN().all()) << what << ", row " << r;
          EXPECT_EQ(lse(r), -inf<T>) << what << ", row " << r;
          continue;
        }
        EXPECT_TRUE(bit_equal(cy.row(r), y.row(r))) << what << ", row " << r;
        EXPECT_TRUE(bit_equal(cly.row(r), ly.row(r))) << what << ", row " << r;
        EXPECT_TRUE(bit_equal(clse.segment(r, 1), lse.segment(r, 1))) << what << ", row " << r;
        if (r % 16 == 0) {
          const Vec<T> row = z.row(r).transpose();
          EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(row), t), y.row(r)))
              << what << ", row " << r;
          EXPECT_LE(log_domain_error<T>(lse(r), reference_for<T>(hi(row)).logsumexp), 4.0L)
              << what << ", row " << r;
        }
      }
    }
  }
}

TYPED_TEST(SoftmaxBatchLimits, ColumnMajorPanelsAgreeAtAnySizeOffsetAndStride) {
  using T = TypeParam;
  // Rows of a column-major matrix longer than a lane tile run side by side in panels of up
  // to 4 KiB of lanes (1024 float or 512 double rows). Each lane's arithmetic is its own:
  // a row gives the same bits in a panel of any size, at any offset and stride, in place or
  // not; and each is within the documented bound of the exact softmax.
  const Index panel = Index(4096 / sizeof(T));
  const Index cols = 300;
  const Index rows = panel + 37;  // a full panel, then a partial one (not whole packets)
  const Mat<T> z = loss::random_matrix<T>(rows, cols, 91, -30, 30);
  const Vec<T> lse = smax::logsumexp(z, smax::rowwise);
  for (T t : {T(1), T(0.7), T(2.5)}) {
    const Mat<T> y = smax::softmax(z, smax::rowwise, t);
    const Mat<T> ly = smax::log_softmax(z, smax::rowwise, t);
    for (Index r0 : {Index(0), Index(5), panel - 3, panel + 1}) {
      const Index nr = std::min<Index>(29, rows - r0);
      Mat<T> big = Mat<T>::Zero(nr + 11, cols);  // another stride and panel size
      auto part = big.topRows(nr);
      part = z.middleRows(r0, nr);
      const Mat<T> p = smax::softmax(part, smax::rowwise, t);
      EXPECT_TRUE(bit_equal(y.middleRows(r0, nr), p)) << "rows from " << r0 << ", T = " << t;
      EXPECT_TRUE(bit_equal(ly.middleRows(r0, nr), smax::log_softmax(part, smax::rowwise, t)))
          << "rows from " << r0 << ", T = " << t;
      EXPECT_TRUE(bit_equal(lse.segment(r0, nr), smax::logsumexp(part, smax::rowwise)))
          << "rows from " << r0;
      smax::softmax_into(part, part, smax::rowwise, t);
      EXPECT_TRUE(bit_equal(p, part)) << "in place, rows from " << r0 << ", T = " << t;
    }
    for (Index r : {Index(0), Index(1), panel - 1, panel, rows - 1}) {
      const Vec<T> row = z.row(r).transpose();
      EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(row), t), y.row(r)))
          << "row " << r << ", T = " << t;
    }
  }
  // Softmax panels up to 4 MiB keep their exponentials for the output pass; a larger panel
  // computes them again, with the same bits.
  const Index wide = (Index(4) << 20) / (panel * Index(sizeof(T))) + 6;
  const Mat<T> w = loss::random_matrix<T>(panel, wide, 92, -30, 30);
  const Mat<T> wy = smax::softmax(w, smax::rowwise);
  for (Index r0 : {Index(0), panel - 29}) {
    EXPECT_TRUE(
        bit_equal(wy.middleRows(r0, 29), smax::softmax(w.middleRows(r0, 29), smax::rowwise)))
        << "4 MiB panel, rows from " << r0;
  }
  for (Index r : {Index(0), panel - 1}) {
    const Vec<T> row = w.row(r).transpose();
    EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(row)), wy.row(r))) << "row " << r;
  }
  // Maxima that grow after the first chunks of columns: the output pass's exponents reach
  // further down than the chunks' did, here below the exp's normal range (-2 span), where
  // an exp without its range check would return garbage instead of 0.
  const T span = std::is_same_v<T, float> ? T(60) : T(500);
  Mat<T> g(40, cols);
  for (Index r = 0; r < g.rows(); ++r) {
    for (Index c = 0; c < cols; ++c) g(r, c) = c % 2 == 1 ? -span : T(0);
    g(r, cols - 1 - r) = span;
  }
  const Mat<T> gy = smax::softmax(g, smax::rowwise);
  for (Index r : {Index(0), Index(17), Index(39)}) {
    const Vec<T> row = g.row(r).transpose();
    EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(row)), gy.row(r))) << "row " << r;
  }
}

// Large log_softmax outputs go out through non-temporal stores from the output's first
// 64-byte boundary on (kernels.hpp: stream_pays): the same bits as plain stores at every
// offset from that boundary, at T = 1, below and above, in place too. softmax keeps plain
// stores, which the same check covers.
TYPED_TEST(SoftmaxBatchLimits, OutputsJustPastTheirInputsMatchBitForBit) {
  using T = TypeParam;
  // Rows of a column-major matrix whose output lies 16-112 bytes past (or before) the input
  // modulo 4 KiB: the register kernels walk their groups backwards there. Any order gives
  // the same bits as an output elsewhere; a group done twice or skipped does not.
  const Index rows = 100, cols = 10;  // 6 whole groups of 16 floats (12 of 8 doubles) + a tail
  const Mat<T> z = loss::random_matrix<T>(rows, cols, 31, -20, 20);
  const Mat<T> expected = smax::softmax(z, smax::rowwise, T(0.7)),
               expected_log = smax::log_softmax(z, smax::rowwise);
  std::vector<T> buffer(static_cast<std::size_t>(3 * rows * cols + 4096));
  const std::uintptr_t page = 4096, at = reinterpret_cast<std::uintptr_t>(buffer.data());
  T* const x = buffer.data() + ((page - at % page) % page) / sizeof(T);
  for (Index gap : {Index(16), Index(64), Index(112), Index(4096 - 64)}) {
    // y - x = 2 pages + gap bytes: past the input, gap modulo 4 KiB.
    T* const y = x + (2 * 4096 + gap) / static_cast<Index>(sizeof(T));
    ASSERT_LE(y + rows * cols, buffer.data() + buffer.size());
    Eigen::Map<Mat<T>> in(x, rows, cols), out(y, rows, cols);
    in = z;
    out.setConstant(T(-1));
    smax::softmax_into(out, in, smax::rowwise, T(0.7));
    EXPECT_TRUE(bit_equal(Mat<T>(out), expected)) << "softmax, gap " << gap;
    out.setConstant(T(-1));
    smax::log_softmax_into(out, in, smax::rowwise);
    EXPECT_TRUE(bit_equal(Mat<T>(out), expected_log)) << "log_softmax, gap " << gap;
  }
}

TYPED_TEST(SoftmaxBatchLimits, StreamedOutputsMatchBitForBit) {
  using T = TypeParam;
  for (const Index cols : {1, 17, 100, 1000, 1001}) {
    const Index rows = 3;
    MatR<T> z(rows, cols);
    for (Index r = 0; r < rows; ++r) {
      z.row(r) = random_logits<T>(cols, logits::normal_1, 500 + std::uint32_t(r)).transpose();
    }
    z(1, 7 % cols) = -std::numeric_limits<T>::infinity();
    for (const T t : {T(1), T(0.25), T(3)}) {
      const MatR<T> y = smax::softmax(z, smax::rowwise, t);
      const MatR<T> logy = smax::log_softmax(z, smax::rowwise, t);
      const std::int64_t saved = smax::detail::stream_min_bytes();
      smax::detail::stream_min_bytes() = 0;
      for (Index offset = 0; offset < 17; offset += 3) {
        std::vector<T> buf(static_cast<std::size_t>(rows * cols + offset + 16));
        Eigen::Map<MatR<T>> out(buf.data() + offset, rows, cols);
        smax::log_softmax_into(out, z, smax::rowwise, t);
        EXPECT_TRUE(bit_equal(MatR<T>(out), logy))
            << cols << " columns, T = " << t << ", offset " << offset;
        smax::softmax_into(out, z, smax::rowwise, t);
        EXPECT_TRUE(bit_equal(MatR<T>(out), y))
            << cols << " columns, T = " << t << ", offset " << offset;
        out = z;
        smax::log_softmax_into(out, out, smax::rowwise, t);
        EXPECT_TRUE(bit_equal(MatR<T>(out), logy)) << "in place, " << cols << " columns, T = " << t;
      }
      smax::detail::stream_min_bytes() = saved;
    }
  }
  // Rows of a column-major matrix: its panels stream where each column starts a 64-byte line.
  const Index rows = 48, cols = 300;
  Mat<T> z(rows, cols);
  for (Index r = 0; r < rows; ++r) {
    z.row(r) = random_logits<T>(cols, logits::normal_1, 520 + std::uint32_t(r)).transpose();
  }
  for (const T t : {T(1), T(0.25), T(3)}) {
    const Mat<T> y = smax::softmax(z, smax::rowwise, t);
    const Mat<T> logy = smax::log_softmax(z, smax::rowwise, t);
    const std::int64_t saved = smax::detail::stream_min_bytes();
    smax::detail::stream_min_bytes() = 0;
    Mat<T> out(rows, cols);
    smax::log_softmax_into(out, z, smax::rowwise, t);
    EXPECT_TRUE(bit_equal(out, logy)) << "column-major, T = " << t;
    smax::softmax_into(out, z, smax::rowwise, t);
    EXPECT_TRUE(bit_equal(out, y)) << "column-major, T = " << t;
    smax::detail::stream_min_bytes() = saved;
  }
}

// Float rows longer than stored_exp_max_bytes take their streamed softmax output pass from x
// again instead of from the stored exponentials: the same bits, at the boundary and past it,
// with exponents in the normal range (N(0,1)) and below it (N(0,30)), at every temperature
// kind, at unaligned outputs and in place.
TEST(SoftmaxStreamedLongRows, MatchStoredExponentialsBitForBit) {
  using T = float;
  constexpr Index boundary = smax::detail::stored_exp_max_bytes / Index(sizeof(T));
  for (const Index cols : {boundary, boundary + 1, boundary + 35}) {
    for (const logits kind : {logits::normal_1, logits::normal_30}) {
      const Index rows = 2;
      MatR<T> z(rows, cols);
      for (Index r = 0; r < rows; ++r) {
        z.row(r) = random_logits<T>(cols, kind, 600 + std::uint32_t(r)).transpose();
      }
      z(1, 9) = -std::numeric_limits<T>::infinity();
      for (const T t : {T(1), T(0.25), T(3)}) {
        const MatR<T> y = smax::softmax(z, smax::rowwise, t);  // 8 MiB or less: not streamed
        const std::int64_t saved = smax::detail::stream_min_bytes();
        smax::detail::stream_min_bytes() = 0;
        for (const Index offset : {0, 5, 16}) {
          std::vector<T> buf(static_cast<std::size_t>(rows * cols + offset));
          Eigen::Map<MatR<T>> out(buf.data() + offset, rows, cols);
          smax::softmax_into(out, z, smax::rowwise, t);
          EXPECT_TRUE(bit_equal(MatR<T>(out), y))
              << cols << " columns, " << name_of(kind) << ", T = " << t << ", offset " << offset;
        }
        MatR<T> out = z;
        smax::softmax_into(out, out, smax::rowwise, t);
        EXPECT_TRUE(bit_equal(out, y)) << "in place, " << cols << " columns, T = " << t;
        smax::detail::stream_min_bytes() = saved;
      }
    }
  }
}

}  // namespace
