// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Threads: built with OpenMP (-fopenmp), smax splits large batches across
// Eigen::nbThreads() threads. The answers must not depend on the number of threads, for
// every layout and every function; without OpenMP this checks the serial path the same way.

#include "test_utils.hpp"

#include <smax/softmax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <gtest/gtest.h>

namespace {

using Eigen::Index;
using smax_test::FloatingTypes;
using smax_test::TypeNames;

template <typename M>
M random_batch(Index rows, Index cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-20.0, 20.0);
  M m(rows, cols);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) m(i, j) = static_cast<typename M::Scalar>(u(rng));
  }
  if (rows > 40 && cols > 2) {  // limit cases inside a parallel batch
    m(3, 1) = std::numeric_limits<typename M::Scalar>::infinity();
    m(37, 0) = -std::numeric_limits<typename M::Scalar>::infinity();
  }
  return m;
}

/// Runs f with nbThreads() = n, restoring the previous setting.
template <typename F>
void with_threads(int n, F&& f) {
  const int before = Eigen::nbThreads();
  Eigen::setNbThreads(n);
  f();
  Eigen::setNbThreads(before);
}

template <typename A, typename B>
void expect_close(const A& a, const B& b, double tol) {
  ASSERT_EQ(a.rows(), b.rows());
  ASSERT_EQ(a.cols(), b.cols());
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = static_cast<double>(a(i, j)), y = static_cast<double>(b(i, j));
      if (std::isnan(x) || std::isinf(x) || std::isnan(y) || std::isinf(y)) {
        EXPECT_TRUE((std::isnan(x) && std::isnan(y)) || x == y) << i << "," << j;
      } else {
        EXPECT_LE(std::fabs(x - y), tol * std::max(1.0, std::fabs(x))) << i << "," << j;
      }
    }
  }
}

template <typename T>
class Threads : public ::testing::Test {};
TYPED_TEST_SUITE(Threads, FloatingTypes, TypeNames);

TYPED_TEST(Threads, SameAnswerForAnyThreadCount) {
  using T = TypeParam;
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  const double tol = 8 * static_cast<double>(std::numeric_limits<T>::epsilon());
  const Index shapes[][2] = {{20000, 10}, {333, 1000}, {65, 4099}, {3, 70000}, {1, 200000}};
  std::uint32_t seed = 1;
  for (const auto& s : shapes) {
    SCOPED_TRACE(::testing::Message() << s[0] << "x" << s[1]);
    const RowMat zr = random_batch<RowMat>(s[0], s[1], ++seed);
    const ColMat zc = zr;
    const RowMat dy = random_batch<RowMat>(s[0], s[1], ++seed);
    RowMat y1, y2, l1, l2, g1, g2;
    ColMat c1, c2, cl1, cl2;
    Vec e1, e2, ec1, ec2;
    const auto run = [&](RowMat& y, RowMat& l, RowMat& g, ColMat& c, ColMat& cl, Vec& e, Vec& ec) {
      smax::softmax_into(y, zr, smax::rowwise, T(0.7));
      smax::log_softmax_into(l, zr, smax::rowwise);
      smax::softmax_backward_into(g, y, dy, smax::rowwise);
      smax::softmax_into(c, zc, smax::rowwise);
      smax::log_softmax_into(cl, zc, smax::rowwise, T(2));
      smax::logsumexp_into(e, zr, smax::rowwise);
      smax::logsumexp_into(ec, zc, smax::rowwise);
    };
    with_threads(1, [&] { run(y1, l1, g1, c1, cl1, e1, ec1); });
    with_threads(2, [&] { run(y2, l2, g2, c2, cl2, e2, ec2); });
    expect_close(y1, y2, tol);
    expect_close(l1, l2, tol);
    expect_close(g1, g2, tol);
    expect_close(c1, c2, tol);
    expect_close(cl1, cl2, tol);
    expect_close(e1, e2, tol);
    expect_close(ec1, ec2, tol);
    // In place, split across threads.
    RowMat inplace = zr;
    with_threads(2, [&] { smax::softmax_into(inplace, inplace, smax::rowwise, T(0.7)); });
    expect_close(y1, inplace, tol);
  }
}

}  // namespace
