// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// softmax_backward and log_softmax_backward: against their closed forms evaluated in long
// double, against central finite differences of the forward functions (double), the
// identity "gradients sum to 0", -inf entries, limits of the temperature and batches.

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/softmax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace {

using namespace smax_test;

template <typename T>
class SoftmaxBackward : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxBackward, FloatingTypes, TypeNames);

/// Seeded N(0, 1) upstream gradients.
template <typename T>
Vec<T> random_upstream(Index n, std::uint32_t seed) {
  return random_logits<T>(n, logits::normal_1, seed ^ 0x9e3779b9u);
}

/// Rounding-error bound of the softmax backward closed form y (dy - g) / T, g = <dy, y>,
/// entry by entry: a few roundings of each term, plus the error of the dot product, which
/// is accumulated in double for float (negligible) and in T for double (recursive
/// summation: at most (n - 1) eps sum |y_j dy_j|).
template <typename T>
struct softmax_backward_tolerance {
  softmax_backward_tolerance(const HiArray& y_, const HiArray& dy_, long double t_)
      : y(y_), dy(dy_), t(t_), g((y_ * dy_).sum()) {
    const long double e = static_cast<long double>(eps<T>);
    dot_error = std::is_same_v<T, float>
                    ? 0.0L
                    : static_cast<long double>(y.size()) * e * (y * dy).abs().sum();
  }
  long double operator()(Index i) const {
    const long double e = static_cast<long double>(eps<T>);
    return (4 * e * std::fabs(y(i)) * (std::fabs(dy(i)) + std::fabs(g)) +
            std::fabs(y(i)) * dot_error) /
               t +
           4 * static_cast<long double>(denorm_min<T>);
  }
  const HiArray& y;
  const HiArray& dy;
  long double t, g, dot_error = 0;
};

/// Bound for the log_softmax backward closed form (dy - exp(logy) s) / T, s = sum dy: exp
/// within an ULP or two, the sum's error as above.
template <typename T>
struct log_softmax_backward_tolerance {
  log_softmax_backward_tolerance(const HiArray& logy_, const HiArray& dy_, long double t_)
      : logy(logy_), dy(dy_), t(t_), s(dy_.sum()) {
    const long double e = static_cast<long double>(eps<T>);
    sum_error =
        std::is_same_v<T, float> ? 0.0L : static_cast<long double>(dy.size()) * e * dy.abs().sum();
  }
  long double operator()(Index i) const {
    const long double e = static_cast<long double>(eps<T>);
    const long double p = std::exp(logy(i));
    return (4 * e * (std::fabs(dy(i)) + p * std::fabs(s)) + p * sum_error) / t +
           4 * static_cast<long double>(denorm_min<T>);
  }
  const HiArray& logy;
  const HiArray& dy;
  long double t, s, sum_error = 0;
};

/// The closed forms in long double, from the T-typed inputs.
HiArray closed_softmax_backward(const HiArray& y, const HiArray& dy, long double t) {
  return y * (dy - (y * dy).sum()) / t;
}
HiArray closed_log_softmax_backward(const HiArray& logy, const HiArray& dy, long double t) {
  return (dy - logy.exp() * dy.sum()) / t;
}

template <typename T, typename D, typename Tol>
::testing::AssertionResult within_tolerance(const HiArray& expected,
                                            const Eigen::DenseBase<D>& actual, Tol tol) {
  const Vec<T> a = actual.derived();
  if (a.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "sizes differ: expected " << expected.size() << ", actual " << a.size();
  }
  ::testing::AssertionResult result = ::testing::AssertionSuccess();
  Index bad = 0;
  for (Index i = 0; i < a.size(); ++i) {
    const long double diff = std::fabs(static_cast<long double>(a(i)) - expected(i));
    if (!(diff <= tol(i))) {
      if (bad++ == 0) result = ::testing::AssertionFailure();
      if (bad <= 5) {
        result << "\n  at [" << i << "]: expected " << show(expected(i)) << ", actual "
               << show(a(i)) << ", difference " << show(diff) << " > tolerance " << show(tol(i));
      }
    }
  }
  return result;
}

TYPED_TEST(SoftmaxBackward, MatchesClosedForms) {
  using T = TypeParam;
  std::uint32_t seed = 10;
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      for (T t : {T(0.5), T(1), T(2), T(1e3)}) {
        const Vec<T> z = random_logits<T>(n, kind, ++seed);
        const Vec<T> dy = random_upstream<T>(n, seed);
        const Vec<T> y = smax::softmax(z, t);
        const Vec<T> logy = smax::log_softmax(z, t);
        const HiArray yh = hi(y), lh = hi(logy), dh = hi(dy);
        SCOPED_TRACE(::testing::Message() << "n = " << n << ", " << name_of(kind) << ", T = " << t);
        EXPECT_TRUE(within_tolerance<T>(closed_softmax_backward(yh, dh, t),
                                        smax::softmax_backward(y, dy, t),
                                        softmax_backward_tolerance<T>(yh, dh, t)));
        EXPECT_TRUE(within_tolerance<T>(closed_log_softmax_backward(lh, dh, t),
                                        smax::log_softmax_backward(logy, dy, t),
                                        log_softmax_backward_tolerance<T>(lh, dh, t)));
      }
    }
  }
}

// Below T = 1 the gradient of a subnormal probability is a normal number: y (dy - g) / T
// with y = 12345 denorm_min and T = 1e-5 (float) / 1e-20 (double). Multiplying first
// rounds y (dy - g) on the subnormal grid and the division magnifies that error to ~300
// (float) / ~4e4 (double) ULP of the result; dividing first keeps it within 2 ULP. Short
// (plain loop) and long (vectorised) rows, contiguous and strided.
TYPED_TEST(SoftmaxBackward, SubnormalProbabilitiesAtSmallTemperatures) {
  using T = TypeParam;
  const T t = std::is_same_v<T, float> ? T(1e-5) : T(1e-20);
  for (Index n : {Index(2), Index(40)}) {
    Vec<T> y(n), dy(n);
    for (Index i = 0; i < n; ++i) {
      y(i) = std::numeric_limits<T>::denorm_min() * static_cast<T>(12345 + 977 * i);
      dy(i) = static_cast<T>(-0.7) + static_cast<T>(i) / static_cast<T>(64);
    }
    y(0) = 1;
    dy(0) = T(0.3);
    const HiArray yh = hi(y), dh = hi(dy);
    const HiArray expected = closed_softmax_backward(yh, dh, t);
    const auto check = [&](const Vec<T>& got) {
      for (Index i = 1; i < n; ++i) {
        ASSERT_TRUE(std::fabs(expected(i)) >= std::numeric_limits<T>::min());  // normal
        EXPECT_LE(ulp_error<T>(got(i), expected(i)), 2) << "n = " << n << ", i = " << i;
      }
    };
    check(smax::softmax_backward(y, dy, t));
    std::vector<T> buf(static_cast<size_t>(2 * n));
    Eigen::Map<Vec<T>, 0, Eigen::InnerStride<2>> ys(buf.data(), n);
    ys = y;
    check(smax::softmax_backward(ys, dy, t));
  }
}

TYPED_TEST(SoftmaxBackward, GradientsSumToZero) {
  using T = TypeParam;
  const long double e = static_cast<long double>(eps<T>);
  std::uint32_t seed = 20;
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      for (T t : {T(0.5), T(1), T(4)}) {
        const Vec<T> z = random_logits<T>(n, kind, ++seed);
        const Vec<T> dy = random_upstream<T>(n, seed);
        const Vec<T> y = smax::softmax(z, t);
        const Vec<T> logy = smax::log_softmax(z, t);
        const Vec<T> gy = smax::softmax_backward(y, dy, t);
        const Vec<T> gl = smax::log_softmax_backward(logy, dy, t);
        const HiArray yh = hi(y), dh = hi(dy), lh = hi(logy);
        const long double g = (yh * dh).sum();
        const long double nn = static_cast<long double>(n);
        // sum_i y_i (dy_i - g) = g (1 - sum y): zero up to the rounding of y's sum and of
        // each term.
        const long double tol_y = ((nn + 4) * e * (yh.abs() * (dh.abs() + std::fabs(g))).sum()) / t;
        // sum_i dy_i - exp(logy_i) s = s (1 - sum exp(logy)), with logy within 4 ULP of
        // max(|logy|, 1).
        const long double tol_l =
            ((nn + 4) * e * (dh.abs().sum()) * (1 + 4 * std::max(1.0L, lh.abs().maxCoeff()))) / t;
        EXPECT_LE(std::fabs(hi(gy).sum()), tol_y)
            << "n = " << n << ", " << name_of(kind) << ", T = " << t;
        EXPECT_LE(std::fabs(hi(gl).sum()), tol_l)
            << "n = " << n << ", " << name_of(kind) << ", T = " << t;
      }
    }
  }
}

/// Central finite differences of L(z) = <w, f(z)> in double, step cbrt(eps max(1, |z_i|))
/// (the rounding of z_i itself is eps |z_i|, so the step scales with its cube root),
/// against the backward pass given (f(z), w). Entries where z_i = -inf are not perturbed.
template <typename Forward, typename Backward>
void expect_matches_finite_differences(const Vec<double>& z, const Vec<double>& w, double t,
                                       Forward forward, Backward backward) {
  const Index n = z.size();
  const Vec<double> f = forward(z, t);
  const Vec<double> grad = backward(f, w, t);
  ASSERT_EQ(grad.size(), n);
  const double scale = std::max(1.0, w.cwiseAbs().maxCoeff()) / std::min(t, 1.0);
  for (Index i = 0; i < n; ++i) {
    if (std::isinf(z(i))) continue;
    Vec<double> plus = z, minus = z;
    const double step =
        std::cbrt(std::numeric_limits<double>::epsilon() * std::max(1.0, std::fabs(z(i))));
    plus(i) += step;
    minus(i) -= step;
    const double h = plus(i) - minus(i);  // the step actually taken
    const auto loss = [&](const Vec<double>& x) {
      const Vec<double> fx = forward(x, t);
      long double s = 0;
      for (Index k = 0; k < n; ++k) {
        if (w(k) != 0) s += static_cast<long double>(w(k)) * fx(k);
      }
      return s;
    };
    const double fd = static_cast<double>((loss(plus) - loss(minus)) / h);
    EXPECT_NEAR(grad(i), fd, 2e-7 * scale / (t * t))
        << "at " << i << ", z = " << z.transpose() << ", T = " << t;
  }
}

TEST(SoftmaxBackwardFiniteDifferences, SoftmaxAndLogSoftmax) {
  const double ninf = -std::numeric_limits<double>::infinity();
  std::vector<Vec<double>> inputs = {
      vec<double>({3}),  // size 1: the gradient is 0
      vec<double>({0, 0}),
      vec<double>({2, 1, 0.1}),
      vec<double>({1000, 1001, 1002}),
      vec<double>({-1000, -1001, -1002}),
      vec<double>({0, -30, -60}),  // tiny probabilities
      vec<double>({1, ninf, 2, ninf}),
  };
  std::uint32_t seed = 30;
  for (Index n : {5, 17, 40}) {
    inputs.push_back(random_logits<double>(n, logits::normal_1, ++seed));
    inputs.push_back(random_logits<double>(n, logits::near_ties, ++seed));
  }
  const auto softmax = [](const Vec<double>& x, double t) {
    return Vec<double>(smax::softmax(x, t));
  };
  const auto log_softmax = [](const Vec<double>& x, double t) {
    return Vec<double>(smax::log_softmax(x, t));
  };
  const auto softmax_backward = [](const Vec<double>& y, const Vec<double>& w, double t) {
    return Vec<double>(smax::softmax_backward(y, w, t));
  };
  const auto log_softmax_backward = [](const Vec<double>& l, const Vec<double>& w, double t) {
    return Vec<double>(smax::log_softmax_backward(l, w, t));
  };
  for (const Vec<double>& z : inputs) {
    Vec<double> w = random_upstream<double>(z.size(), ++seed);
    // -inf entries have log-probability -inf: keep them out of <w, log_softmax>.
    for (Index i = 0; i < z.size(); ++i) {
      if (std::isinf(z(i))) w(i) = 0;
    }
    for (double t : {0.5, 1.0, 2.0, 10.0}) {
      expect_matches_finite_differences(z, w, t, softmax, softmax_backward);
      expect_matches_finite_differences(z, w, t, log_softmax, log_softmax_backward);
    }
  }
}

TYPED_TEST(SoftmaxBackward, MinusInfinityEntriesGiveNoNaN) {
  using T = TypeParam;
  const T ninf = -inf<T>;
  Vec<T> z = random_logits<T>(37, logits::normal_1, 50);
  for (Index i : {0, 3, 16, 17, 36}) z(i) = ninf;
  const Vec<T> dy = random_upstream<T>(37, 51) * T(1e6);
  for (T t : {T(0.5), T(1), T(2), inf<T>}) {
    SCOPED_TRACE(::testing::Message() << "T = " << t);
    const Vec<T> y = smax::softmax(z, t);
    const Vec<T> logy = smax::log_softmax(z, t);
    const Vec<T> gy = smax::softmax_backward(y, dy, t);
    const Vec<T> gl = smax::log_softmax_backward(logy, dy, t);
    EXPECT_TRUE(gy.allFinite());
    EXPECT_TRUE(gl.allFinite());
    for (Index i = 0; i < z.size(); ++i) {
      if (z(i) != ninf) continue;
      // y_i = 0: the softmax gradient is exactly 0.
      EXPECT_EQ(gy(i), T(0)) << "at " << i;
      // exp(logy_i) = 0: d/dz_i <dy, log_softmax(z)> = dy_i / T exactly.
      EXPECT_EQ(gl(i), dy(i) / t) << "at " << i;
    }
  }
  // With dy_i = 0 at the -inf entries (what a loss that ignores them passes), the
  // log_softmax gradient is exactly 0 there too.
  Vec<T> dz = dy;
  for (Index i = 0; i < z.size(); ++i) {
    if (z(i) == ninf) dz(i) = 0;
  }
  const Vec<T> g = smax::log_softmax_backward(smax::log_softmax(z), dz);
  for (Index i = 0; i < z.size(); ++i) {
    if (z(i) == ninf) {
      EXPECT_EQ(g(i), T(0)) << "at " << i;
    }
  }
  // One-hot probabilities (T = 0, or a +inf logit) have zero gradient everywhere.
  const Vec<T> one_hot = smax::softmax(vec<T>({1, 3, 2}), T(0));
  EXPECT_TRUE(same_values(Vec<T>::Zero(3), smax::softmax_backward(one_hot, vec<T>({4, -2, 7}))));
  // Log-probabilities from T = 0 ([-inf, -log 2, -log 2]) give finite gradients.
  const Vec<T> split = smax::log_softmax(vec<T>({1, 3, 3}), T(0));
  EXPECT_TRUE(smax::log_softmax_backward(split, vec<T>({4, -2, 7})).allFinite());
}

TYPED_TEST(SoftmaxBackward, InfiniteTemperatureHasZeroGradient) {
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(17, logits::normal_30, 60);
  const Vec<T> dy = random_upstream<T>(17, 61);
  EXPECT_TRUE(
      same_values(Vec<T>::Zero(17), smax::softmax_backward(smax::softmax(z, inf<T>), dy, inf<T>)));
  EXPECT_TRUE(same_values(Vec<T>::Zero(17),
                          smax::log_softmax_backward(smax::log_softmax(z, inf<T>), dy, inf<T>)));
}

TYPED_TEST(SoftmaxBackward, EmptyAndSizeOne) {
  using T = TypeParam;
  EXPECT_EQ(smax::softmax_backward(Vec<T>(0), Vec<T>(0)).size(), 0);
  EXPECT_EQ(smax::log_softmax_backward(Vec<T>(0), Vec<T>(0)).size(), 0);
  const Mat<T> none(0, 3);
  EXPECT_EQ(smax::softmax_backward(none, none, smax::rowwise).size(), 0);
  EXPECT_EQ(smax::log_softmax_backward(none, none, smax::colwise).size(), 0);
  // One entry: y = 1, so the gradient y (dy - y dy) is exactly 0.
  EXPECT_TRUE(same_values(vec<T>({0}), smax::softmax_backward(vec<T>({1}), vec<T>({5}))));
  EXPECT_TRUE(same_values(vec<T>({0}), smax::log_softmax_backward(vec<T>({0}), vec<T>({5}))));
}

TYPED_TEST(SoftmaxBackward, BatchesMatchTheirDistributions) {
  using T = TypeParam;
  const Index rows = 6, cols = 19;
  Mat<T> z(rows, cols), dy(rows, cols);
  for (Index r = 0; r < rows; ++r) {
    z.row(r) = random_logits<T>(cols, logits::normal_1, 70 + std::uint32_t(r)).transpose();
    dy.row(r) = random_upstream<T>(cols, 80 + std::uint32_t(r)).transpose();
  }
  const T t = T(1.5);
  const auto check = [&](const auto& y, const auto& logy, const auto& d, auto axis) {
    constexpr bool by_row = std::is_same_v<decltype(axis), smax::rowwise_t>;
    const auto gy = smax::softmax_backward(y, d, axis, t);
    const auto gl = smax::log_softmax_backward(logy, d, axis, t);
    const Index count = by_row ? y.rows() : y.cols();
    for (Index k = 0; k < count; ++k) {
      const auto part = [&](const auto& m) {
        return by_row ? Vec<T>(m.row(k).transpose()) : Vec<T>(m.col(k));
      };
      const HiArray yh = hi(part(y)), lh = hi(part(logy)), dh = hi(part(d));
      EXPECT_TRUE(within_tolerance<T>(closed_softmax_backward(yh, dh, t), part(gy),
                                      softmax_backward_tolerance<T>(yh, dh, t)))
          << "distribution " << k;
      EXPECT_TRUE(within_tolerance<T>(closed_log_softmax_backward(lh, dh, t), part(gl),
                                      log_softmax_backward_tolerance<T>(lh, dh, t)))
          << "distribution " << k;
    }
  };
  const Mat<T> y = smax::softmax(z, smax::rowwise, t);
  const Mat<T> logy = smax::log_softmax(z, smax::rowwise, t);
  check(y, logy, dy, smax::rowwise);
  check(MatR<T>(y), MatR<T>(logy), MatR<T>(dy), smax::rowwise);
  check(Mat<T>(y.transpose()), Mat<T>(logy.transpose()), Mat<T>(dy.transpose()), smax::colwise);
  check(MatR<T>(y.transpose()), MatR<T>(logy.transpose()), MatR<T>(dy.transpose()), smax::colwise);
  // Mixed storage orders between y and dy.
  check(y, logy, MatR<T>(dy), smax::rowwise);
}

// Rows of a column-major matrix (and columns of a row-major one) run a panel of up to 4 KiB
// of distributions side by side: every row within the closed forms' bounds, at counts
// below one packet, across a panel's end and with a tail done one at a time; a row's bits
// do not depend on where in a panel it sits; NaN and huge values stay in their row; the
// output may be y or dy itself.
TYPED_TEST(SoftmaxBackward, ColumnMajorPanelsMatchTheClosedForms) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  for (const Index rows : {3, 16, 37, 1045}) {
    for (const Index cols : {1, 5, 300}) {
      for (const T t : {T(1), T(0.5), T(2.5)}) {
        Mat<T> z(rows, cols), dy(rows, cols);
        for (Index r = 0; r < rows; ++r) {
          const std::uint32_t seed = 3000 + std::uint32_t(r) + 7919u * std::uint32_t(cols);
          z.row(r) = random_logits<T>(cols, logits::normal_1, seed).transpose();
          dy.row(r) = random_upstream<T>(cols, seed).transpose();
        }
        const Index special = std::min<Index>(21, rows - 1);
        if (cols > 1) z(std::min<Index>(2, rows - 1), 0) = -inf;
        dy.row(std::min<Index>(9, rows - 1)) *= T(1e30);
        dy(special, cols - 1) = std::numeric_limits<T>::quiet_NaN();
        const Mat<T> y = smax::softmax(z, smax::rowwise, t);
        const Mat<T> logy = smax::log_softmax(z, smax::rowwise, t);
        const Mat<T> gy = smax::softmax_backward(y, dy, smax::rowwise, t);
        const Mat<T> gl = smax::log_softmax_backward(logy, dy, smax::rowwise, t);
        for (Index r = 0; r < rows; ++r) {
          const std::string where = std::to_string(rows) + "x" + std::to_string(cols) +
                                    ", T = " + std::to_string(t) + ", row " + std::to_string(r);
          if (r == special) {
            // The NaN reaches every entry of its own row's sums, and no other row.
            EXPECT_TRUE(gy.row(r).array().isNaN().all()) << where;
            EXPECT_TRUE(gl.row(r).array().isNaN().all()) << where;
            continue;
          }
          const HiArray yh = hi(Vec<T>(y.row(r).transpose()));
          const HiArray lh = hi(Vec<T>(logy.row(r).transpose()));
          const HiArray dh = hi(Vec<T>(dy.row(r).transpose()));
          ASSERT_TRUE(within_tolerance<T>(closed_softmax_backward(yh, dh, t), gy.row(r).transpose(),
                                          softmax_backward_tolerance<T>(yh, dh, t)))
              << "softmax, " << where;
          ASSERT_TRUE(within_tolerance<T>(closed_log_softmax_backward(lh, dh, t),
                                          gl.row(r).transpose(),
                                          log_softmax_backward_tolerance<T>(lh, dh, t)))
              << "log_softmax, " << where;
        }
        // The same rows one packet further on in their panel (a block without the first 16
        // rows): bit for bit, except the tail left to the one-at-a-time path, which is the
        // same rows in both.
        if (rows > 16) {
          const Index n = rows - 16;
          const Mat<T> by =
              smax::softmax_backward(y.bottomRows(n), dy.bottomRows(n), smax::rowwise, t);
          const Mat<T> bl =
              smax::log_softmax_backward(logy.bottomRows(n), dy.bottomRows(n), smax::rowwise, t);
          EXPECT_TRUE(bit_equal(
              Vec<T>(Eigen::Map<const Vec<T>>(by.data(), by.size())),
              Vec<T>(Eigen::Map<const Vec<T>>(Mat<T>(gy.bottomRows(n)).data(), by.size()))))
              << "softmax, " << rows << "x" << cols << ", T = " << t;
          EXPECT_TRUE(bit_equal(
              Vec<T>(Eigen::Map<const Vec<T>>(bl.data(), bl.size())),
              Vec<T>(Eigen::Map<const Vec<T>>(Mat<T>(gl.bottomRows(n)).data(), bl.size()))))
              << "log_softmax, " << rows << "x" << cols << ", T = " << t;
        }
        // In place, over y and over dy (exact aliasing).
        Mat<T> over_y = y, over_dy = dy;
        smax::softmax_backward_into(over_y, over_y, dy, smax::rowwise, t);
        smax::softmax_backward_into(over_dy, y, over_dy, smax::rowwise, t);
        EXPECT_TRUE(bit_equal(Vec<T>(Eigen::Map<const Vec<T>>(over_y.data(), over_y.size())),
                              Vec<T>(Eigen::Map<const Vec<T>>(gy.data(), gy.size()))));
        EXPECT_TRUE(bit_equal(Vec<T>(Eigen::Map<const Vec<T>>(over_dy.data(), over_dy.size())),
                              Vec<T>(Eigen::Map<const Vec<T>>(gy.data(), gy.size()))));
        Mat<T> over_logy = logy;
        smax::log_softmax_backward_into(over_logy, over_logy, dy, smax::rowwise, t);
        EXPECT_TRUE(bit_equal(Vec<T>(Eigen::Map<const Vec<T>>(over_logy.data(), over_logy.size())),
                              Vec<T>(Eigen::Map<const Vec<T>>(gl.data(), gl.size()))));
      }
    }
  }
}

// Batches of short contiguous rows run 32 rows at a time across the rows (log_softmax
// always, softmax in double), or with AVX-512 float rows four at a time (up to four packets
// each); each row must come out bit for bit as it does alone, at every length
// up to the tiles' limit, with rows padded by a wider stride or dense (from 128 rows on,
// log_softmax writes those blocks as they lie), special values in single rows, and the
// output over dy.
TYPED_TEST(SoftmaxBackward, ShortRowBlocksMatchSingleRowsBitForBit) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  for (const Index cols : {1, 2, 3, 7, 10, 16, 17, 31, 32, 33, 48, 63, 64, 65}) {
    for (const auto& [rows, pad] :
         {std::pair<Index, Index>{31, 5}, {32, 5}, {70, 5}, {70, 0}, {128, 0}, {165, 0}}) {
      for (const T t : {T(1), T(0.25), T(3)}) {
        const Index width = cols + pad;  // rows sit in a wider row-major matrix, or dense
        MatR<T> zw(rows, width), dyw(rows, width);
        for (Index r = 0; r < rows; ++r) {
          zw.row(r) = random_logits<T>(width, logits::normal_1, 900 + std::uint32_t(r)).transpose();
          dyw.row(r) = random_upstream<T>(width, 700 + std::uint32_t(r)).transpose();
        }
        // Special rows: a -inf logit (y = 0, log y = -inf), huge upstream gradients, a NaN.
        if (cols > 1) zw(5, 0) = -inf;  // (alone it would make the row NaN)
        dyw.row(std::min<Index>(40, rows - 1)) *= T(1e30);
        dyw(std::min<Index>(33, rows - 1), cols - 1) = std::numeric_limits<T>::quiet_NaN();
        // 2^60 + 1 - 2^60: 0 summed in order, 1 when the big terms meet first, so a row alone
        // must take the same path as in a block.
        if (cols >= 3) {
          dyw(7 % rows, 0) = std::ldexp(T(1), 60);
          dyw(7 % rows, 1) = T(1);
          dyw(7 % rows, 2) = -std::ldexp(T(1), 60);
        }
        const auto z = zw.leftCols(cols);
        const auto dy = dyw.leftCols(cols);
        const MatR<T> y = smax::softmax(z, smax::rowwise, t);
        const MatR<T> logy = smax::log_softmax(z, smax::rowwise, t);
        const MatR<T> gy = smax::softmax_backward(y, dy, smax::rowwise, t);
        const MatR<T> gl = smax::log_softmax_backward(logy, dy, smax::rowwise, t);
        MatR<T> over_dy = dy;  // the output written over dy (exact aliasing)
        smax::log_softmax_backward_into(over_dy, logy, over_dy, smax::rowwise, t);
        for (Index r = 0; r < rows; ++r) {
          const Vec<T> yr = y.row(r).transpose(), lr = logy.row(r).transpose();
          const Vec<T> dr = dy.row(r).transpose();
          const Vec<T> sy = smax::softmax_backward(yr, dr, t);
          const Vec<T> sl = smax::log_softmax_backward(lr, dr, t);
          ASSERT_TRUE(bit_equal(sy, Vec<T>(gy.row(r).transpose())))
              << "softmax, " << rows << "x" << cols << " T = " << t << ", row " << r;
          ASSERT_TRUE(bit_equal(sl, Vec<T>(gl.row(r).transpose())))
              << "log_softmax, " << rows << "x" << cols << " T = " << t << ", row " << r;
          ASSERT_TRUE(bit_equal(sl, Vec<T>(over_dy.row(r).transpose())))
              << "log_softmax over dy, " << rows << "x" << cols << " T = " << t << ", row " << r;
        }
        // The NaN stays in its row.
        const Index nan_row = std::min<Index>(33, rows - 1);
        for (Index r = 0; r < rows; ++r) {
          if (r != nan_row) {
            ASSERT_FALSE(gl.row(r).hasNaN()) << "row " << r;
          }
        }
      }
    }
  }
}

/// Lowers the threshold of the non-temporal output stores for its lifetime.
struct streaming_everything {
  std::int64_t saved = smax::detail::stream_min_bytes();
  streaming_everything() { smax::detail::stream_min_bytes() = 0; }
  ~streaming_everything() { smax::detail::stream_min_bytes() = saved; }
};

// Large outputs go out through non-temporal stores from the output's first 64-byte boundary
// on (kernels.hpp: stream_pays): the same bits as plain stores, at every offset of the
// output from that boundary, for rows of every length class, at T = 1, below and above,
// and written over dy.
TYPED_TEST(SoftmaxBackward, StreamedOutputsMatchBitForBit) {
  using T = TypeParam;
  for (const Index cols : {1, 17, 33, 65, 100, 1000, 1001}) {
    const Index rows = 3;
    MatR<T> z(rows, cols), dy(rows, cols);
    for (Index r = 0; r < rows; ++r) {
      z.row(r) = random_logits<T>(cols, logits::normal_1, 300 + std::uint32_t(r)).transpose();
      dy.row(r) = random_upstream<T>(cols, 310 + std::uint32_t(r)).transpose();
    }
    for (const T t : {T(1), T(0.25), T(3)}) {
      const MatR<T> y = smax::softmax(z, smax::rowwise, t);
      const MatR<T> logy = smax::log_softmax(z, smax::rowwise, t);
      const MatR<T> gy = smax::softmax_backward(y, dy, smax::rowwise, t);
      const MatR<T> gl = smax::log_softmax_backward(logy, dy, smax::rowwise, t);
      for (Index offset = 0; offset < 17; offset += 3) {
        std::vector<T> buf(static_cast<std::size_t>(rows * cols + offset + 16));
        Eigen::Map<MatR<T>> out(buf.data() + offset, rows, cols);
        const streaming_everything streamed;
        smax::softmax_backward_into(out, y, dy, smax::rowwise, t);
        ASSERT_TRUE(bit_equal(MatR<T>(out), gy))
            << cols << " columns, T = " << t << ", offset " << offset;
        smax::log_softmax_backward_into(out, logy, dy, smax::rowwise, t);
        ASSERT_TRUE(bit_equal(MatR<T>(out), gl))
            << cols << " columns, T = " << t << ", offset " << offset;
        out = dy;
        smax::softmax_backward_into(out, y, out, smax::rowwise, t);
        ASSERT_TRUE(bit_equal(MatR<T>(out), gy)) << "over dy, " << cols << " columns, T = " << t;
      }
    }
  }
  // Rows of a column-major matrix: its panels stream where each column starts a 64-byte line.
  const Index rows = 48, cols = 300;
  Mat<T> z(rows, cols), dy(rows, cols);
  for (Index r = 0; r < rows; ++r) {
    z.row(r) = random_logits<T>(cols, logits::normal_1, 400 + std::uint32_t(r)).transpose();
    dy.row(r) = random_upstream<T>(cols, 410 + std::uint32_t(r)).transpose();
  }
  for (const T t : {T(1), T(0.25), T(3)}) {
    const Mat<T> y = smax::softmax(z, smax::rowwise, t);
    const Mat<T> logy = smax::log_softmax(z, smax::rowwise, t);
    const Mat<T> gy = smax::softmax_backward(y, dy, smax::rowwise, t);
    const Mat<T> gl = smax::log_softmax_backward(logy, dy, smax::rowwise, t);
    const streaming_everything streamed;
    Mat<T> out(rows, cols);
    smax::softmax_backward_into(out, y, dy, smax::rowwise, t);
    ASSERT_TRUE(bit_equal(out, gy)) << "column-major, T = " << t;
    smax::log_softmax_backward_into(out, logy, dy, smax::rowwise, t);
    ASSERT_TRUE(bit_equal(out, gl)) << "column-major, T = " << t;
    out = dy;
    smax::log_softmax_backward_into(out, logy, out, smax::rowwise, t);
    ASSERT_TRUE(bit_equal(out, gl)) << "column-major over dy, T = " << t;
  }
}

// Batches of long contiguous rows with streamed outputs sum row j + 1 in the loop that
// writes row j (kernels.hpp, packet_rows_backward_stream_t): each row bit for bit as it
// comes out alone (not streamed), with rows padded by a wider stride or dense, at T = 1,
// below and above, for a row whose sum is 0 (summed again in full), huge and NaN upstream
// gradients in the rows after them, at every output offset, and written over y and dy.
TYPED_TEST(SoftmaxBackward, StreamedBatchesOfLongRowsMatchSingleRows) {
  using T = TypeParam;
  for (const Index cols : {33, 64, 65, 95, 96, 97, 1000, 1001}) {
    for (const Index pad : {0, 7}) {
      const Index rows = 5, width = cols + pad;
      MatR<T> zw(rows, width), dyw(rows, width);
      for (Index r = 0; r < rows; ++r) {
        zw.row(r) = random_logits<T>(width, logits::normal_1, 500 + std::uint32_t(r)).transpose();
        dyw.row(r) = random_upstream<T>(width, 510 + std::uint32_t(r)).transpose();
      }
      dyw.row(1).setZero();  // <y, dy> = 0: below the sum's threshold
      dyw.row(2) *= T(1e30);
      dyw(3, cols / 2) = std::numeric_limits<T>::quiet_NaN();
      const auto z = zw.leftCols(cols);
      const auto dy = dyw.leftCols(cols);
      for (const T t : {T(1), T(0.25), T(3)}) {
        const MatR<T> y = smax::softmax(z, smax::rowwise, t);
        const MatR<T> logy = smax::log_softmax(z, smax::rowwise, t);
        MatR<T> gy(rows, cols), gl(rows, cols);
        for (Index r = 0; r < rows; ++r) {
          gy.row(r) =
              smax::softmax_backward(Vec<T>(y.row(r).transpose()), Vec<T>(dy.row(r).transpose()), t)
                  .transpose();
          gl.row(r) = smax::log_softmax_backward(Vec<T>(logy.row(r).transpose()),
                                                 Vec<T>(dy.row(r).transpose()), t)
                          .transpose();
        }
        const streaming_everything streamed;
        for (Index offset = 0; offset < 16; offset += 5) {
          std::vector<T> buf(static_cast<std::size_t>(rows * width + offset + 16));
          Eigen::Map<MatR<T>, 0, Eigen::OuterStride<>> out(buf.data() + offset, rows, cols,
                                                           Eigen::OuterStride<>(width));
          const std::string where = std::to_string(cols) + " columns, pad " + std::to_string(pad) +
                                    ", T = " + std::to_string(t) + ", offset " +
                                    std::to_string(offset);
          smax::softmax_backward_into(out, y, dy, smax::rowwise, t);
          ASSERT_TRUE(bit_equal(MatR<T>(out), gy)) << "softmax, " << where;
          smax::log_softmax_backward_into(out, logy, dy, smax::rowwise, t);
          ASSERT_TRUE(bit_equal(MatR<T>(out), gl)) << "log_softmax, " << where;
        }
        MatR<T> over = y;
        smax::softmax_backward_into(over, over, dy, smax::rowwise, t);
        ASSERT_TRUE(bit_equal(over, gy)) << "softmax over y, " << cols << " columns, T = " << t;
        over = dy;
        smax::log_softmax_backward_into(over, logy, over, smax::rowwise, t);
        ASSERT_TRUE(bit_equal(over, gl))
            << "log_softmax over dy, " << cols << " columns, T = " << t;
      }
    }
  }
}

// Long rows whose output lies 48-160 bytes past y or dy modulo 4 KiB load four packets
// before storing them (kernels.hpp, packet_row_backward_long_t): the same bits as any other
// placement, for whole-packet rows and rows with a partial last packet, at T = 1 and not.
TYPED_TEST(SoftmaxBackward, OutputsJustPastTheirInputsMatchBitForBit) {
  using T = TypeParam;
  for (const Index cols : {65, 100, 1000, 1001}) {
    const Index rows = 2;
    MatR<T> z(rows, cols), dy(rows, cols);
    for (Index r = 0; r < rows; ++r) {
      z.row(r) = random_logits<T>(cols, logits::normal_1, 600 + std::uint32_t(r)).transpose();
      dy.row(r) = random_upstream<T>(cols, 610 + std::uint32_t(r)).transpose();
    }
    for (const T t : {T(1), T(0.5)}) {
      const MatR<T> y = smax::softmax(z, smax::rowwise, t);
      const MatR<T> expected = smax::softmax_backward(y, dy, smax::rowwise, t);
      for (const std::uintptr_t past : {48, 64, 96, 160}) {
        std::vector<T> buf(static_cast<std::size_t>(rows * cols) + 4096);
        const auto base = reinterpret_cast<std::uintptr_t>(buf.data());
        const auto want = (reinterpret_cast<std::uintptr_t>(y.data()) + past) % 4096;
        T* at = buf.data() + (want - base % 4096 + 4096) % 4096 / sizeof(T);
        ASSERT_EQ(
            (reinterpret_cast<std::uintptr_t>(at) - reinterpret_cast<std::uintptr_t>(y.data())) %
                4096,
            past);
        Eigen::Map<MatR<T>> out(at, rows, cols);
        smax::softmax_backward_into(out, y, dy, smax::rowwise, t);
        ASSERT_TRUE(bit_equal(MatR<T>(out), expected))
            << cols << " columns, " << past << " bytes past y";
      }
    }
  }
}

// The float <y, dy> of long rows adds float products and their exact errors (kernels.hpp:
// packet_row_total). Where those errors are not exact (products below about 2^-103) or a
// product overflows float, the row is summed again with products exact in double: the
// gradient's g is then <y, dy> rounded once to float, as for every other row.
TEST(SoftmaxBackwardLongRows, TinyAndOverflowingProductsKeepAnExactSum) {
  const Index n = 1000;
  Vec<float> y = Vec<float>::Constant(n, 1e-20f), dy(n);
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> u(-1, 1);
  for (Index i = 0; i < n; ++i) dy(i) = 1e-25f * u(gen);  // products near denorm_min
  y(0) = 1e10f;                                           // out_0 = -1e10 g shows g's error
  dy(0) = 0;
  const Vec<float> tiny = smax::softmax_backward(y, dy);
  const float g = static_cast<float>((hi(y) * hi(dy)).sum());
  ASSERT_NE(g, 0.0f);
  EXPECT_EQ(tiny(0), -(y(0) * g));  // summed from rounded products: 10 denorm_min off
  // Two products beyond float's range that cancel (1e40 - 1e40): g = 0, not NaN.
  y.setConstant(1e-3f);
  dy.setZero();
  y(0) = y(1) = 1e20f;
  dy(0) = 1e20f;
  dy(1) = -1e20f;
  const Vec<float> huge = smax::softmax_backward(y, dy);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(huge(0), inf);  // 1e20 * 1e20 overflows, as its exact value does
  EXPECT_EQ(huge(1), -inf);
  EXPECT_TRUE((huge.tail(n - 2).array() == 0.0f).all()) << huge.tail(n - 2).transpose();
}

// The backward passes' sums (<y, dy> for softmax, sum dy for log_softmax) are compensated in
// double and taken in double for float: terms that cancel (big, -big) keep the small terms
// beside them, which a plain sum in T rounds away (error ~ ULP(big), far above the bound
// below). y are powers of two, so every product is exact and the long double reference is
// exact. Every path that sums a row: short and long contiguous rows (alone and in a batch,
// 165 dense rows: log_softmax's blocks as they lie, and a tail), rows of a column-major
// matrix (lanes side by side) and strided rows.
TYPED_TEST(SoftmaxBackward, CancellingSumsKeepTheirSmallTerms) {
  using T = TypeParam;
  const T big = T(4) / eps<T>;
  // The sum's own precision: double for float (its sums are taken in double).
  const long double es = static_cast<long double>(eps<double>);
  for (const Index n : {3, 4, 7, 8, 9, 10, 16, 17, 31, 32, 33, 100, 1000}) {
    const Index rows = 165;
    MatR<T> y(rows, n), logy(rows, n), dy(rows, n), dl(rows, n);  // dl: log_softmax's dy
    for (Index r = 0; r < rows; ++r) {
      for (Index k = 0; k < n; ++k) {
        y(r, k) = std::ldexp(T(1), -1 - static_cast<int>((r + k) % 4));
        logy(r, k) = std::log(y(r, k));
        dy(r, k) = T(1) + static_cast<T>((r + 3 * k) % 8) / T(8);  // small, few bits
      }
      const Index at = r % (n - 2);  // the cancelling pair: at, at + 2
      dy(r, at) = big * static_cast<T>(1 + r % 3);
      dy(r, at + 2) = -(y(r, at) * dy(r, at)) / y(r, at + 2);  // exact: y is a power of two
      dl.row(r) = dy.row(r);
      dl(r, at + 2) = -dl(r, at);  // sum dy cancels
    }
    dy(5, 0) = -dy(5, 0);  // a row whose pair does not cancel
    dl(5, 0) = -dl(5, 0);
    const auto check = [&](const MatR<T>& gy, const MatR<T>& gl, const char* how) {
      for (Index r = 0; r < rows; ++r) {
        long double g = 0, s = 0, gabs = 0, sabs = 0;
        for (Index k = 0; k < n; ++k) {
          const long double p = static_cast<long double>(y(r, k)) * dy(r, k);
          g += p;
          gabs += std::fabs(p);
          s += dl(r, k);
          sabs += std::fabs(static_cast<long double>(dl(r, k)));
        }
        for (Index k = 0; k < n; ++k) {
          const long double yk = y(r, k), dk = dy(r, k);
          const long double e = static_cast<long double>(eps<T>);
          const long double second = static_cast<long double>(n * n) * es * es;
          const long double want_y = yk * (dk - g);
          const long double tol_y =
              4 * e * yk * (std::fabs(dk) + std::fabs(g)) + yk * second * gabs;
          ASSERT_LE(std::fabs(gy(r, k) - want_y), tol_y)
              << how << ", softmax, n = " << n << ", row " << r << ", entry " << k << ": g = " << g;
          const long double lk = dl(r, k);
          const long double want_l = lk - yk * s;
          const long double tol_l =
              4 * e * (std::fabs(lk) + yk * std::fabs(s)) + yk * second * sabs;
          ASSERT_LE(std::fabs(gl(r, k) - want_l), tol_l)
              << how << ", log_softmax, n = " << n << ", row " << r << ", entry " << k;
        }
      }
    };
    check(smax::softmax_backward(y, dy, smax::rowwise),
          smax::log_softmax_backward(logy, dl, smax::rowwise), "contiguous rows");
    MatR<T> gy(rows, n), gl(rows, n);
    for (Index r = 0; r < rows; ++r) {
      gy.row(r) =
          smax::softmax_backward(Vec<T>(y.row(r).transpose()), Vec<T>(dy.row(r).transpose()))
              .transpose();
      gl.row(r) =
          smax::log_softmax_backward(Vec<T>(logy.row(r).transpose()), Vec<T>(dl.row(r).transpose()))
              .transpose();
    }
    check(gy, gl, "single rows");
    const Mat<T> yc = y, lc = logy, dc = dy, dlc = dl;
    check(MatR<T>(smax::softmax_backward(yc, dc, smax::rowwise)),
          MatR<T>(smax::log_softmax_backward(lc, dlc, smax::rowwise)), "column-major rows");
    // Strided rows: every other column of a wider matrix.
    Mat<T> yw(rows, 2 * n), lw(rows, 2 * n), dw(rows, 2 * n), dlw(rows, 2 * n);
    for (Index k = 0; k < n; ++k) {
      yw.col(2 * k) = y.col(k);
      lw.col(2 * k) = logy.col(k);
      dw.col(2 * k) = dy.col(k);
      dlw.col(2 * k) = dl.col(k);
    }
    using Strided = Eigen::Map<const MatR<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
    const Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic> st(1, 2 * rows);
    const Strided ys(yw.data(), rows, n, st), ls(lw.data(), rows, n, st),
        ds(dw.data(), rows, n, st), dls(dlw.data(), rows, n, st);
    check(MatR<T>(smax::softmax_backward(ys, ds, smax::rowwise)),
          MatR<T>(smax::log_softmax_backward(ls, dls, smax::rowwise)), "strided rows");
  }
}
}  // namespace
