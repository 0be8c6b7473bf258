// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

// Shared helpers of the loss tests: tolerant comparison of scalars and Eigen objects
// (NaN equals NaN, infinities must match exactly), seeded random inputs, and central
// finite differences.

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace smax_loss_test {

using MatL = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Names the typed instantiations "float" and "double"; as TYPED_TEST_SUITE's third argument
/// it also avoids the empty variadic macro argument that clang's -Wpedantic rejects.
struct type_names {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "float" : std::is_same_v<T, double> ? "double" : "other";
  }
};

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

}  // namespace smax_loss_test
