// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// smax::attention: both paths (direct, streaming) against a long double reference over
// random shapes, masks (none, boolean, causal with offsets) and block sizes; the numerical
// policy (fully masked queries, masked NaN scores, NaN propagation, huge scores, infinite
// inputs, scale 0); the API surface (overloads, _into, Eigen input types, aliasing); and
// every argument error.
//
// Tolerance (stated once, used everywhere): for row i of the output,
//   |out_ij - ref_ij| <= eps * max|V| * (8 + 2 * c_i),
//   c_i = sum_j p_ij * (scale * sum_k |q_ik k_jk| + |z_ij|),
// with p the reference weights and z_ij = scale * (s_ij - max_j s_ij) the exponents. The
// first term covers the normalisation and the P V product (a few ULP of max|V|); the second
// is the first-order effect of rounding each score (one ULP of its condition number
// scale * sum_k |q_ik k_jk|) and each exponent (one ULP of |z_ij|), which changes the weight
// p_ij by that relative amount and the normaliser by its p-weighted mean (hence the 2). No
// algorithm that rounds the scores to T avoids that term; for scores of ordinary size
// (N(0, 1) entries, d <= 64) c_i is about 5 and the bound about 18 ULP of max|V|, against
// about 1.5 measured.

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/attention.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace {

using namespace smax_test;
using MatL = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;
using BoolMat = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;
using Keep = std::function<bool(Index, Index)>;

template <typename T>
class Attention : public ::testing::Test {};
TYPED_TEST_SUITE(Attention, FloatingTypes, TypeNames);

template <typename T>
class AttentionPolicy : public ::testing::Test {};
TYPED_TEST_SUITE(AttentionPolicy, FloatingTypes, TypeNames);

template <typename T>
class AttentionApi : public ::testing::Test {};
TYPED_TEST_SUITE(AttentionApi, FloatingTypes, TypeNames);

template <typename T>
class AttentionErrors : public ::testing::Test {};
TYPED_TEST_SUITE(AttentionErrors, FloatingTypes, TypeNames);

/// rows x cols entries from N(0, sigma^2), seeded.
template <typename T>
Mat<T> normal_matrix(Index rows, Index cols, std::uint32_t seed, double sigma = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, sigma);
  Mat<T> m(rows, cols);
  for (Index c = 0; c < cols; ++c)
    for (Index r = 0; r < rows; ++r) m(r, c) = static_cast<T>(normal(rng));
  return m;
}

/// rows x cols entries uniform in [-magnitude, magnitude], seeded.
template <typename T>
Mat<T> uniform_matrix(Index rows, Index cols, std::uint32_t seed, long double magnitude) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  Mat<T> m(rows, cols);
  for (Index c = 0; c < cols; ++c)
    for (Index r = 0; r < rows; ++r)
      m(r, c) = static_cast<T>(static_cast<long double>(uniform(rng)) * magnitude);
  return m;
}

/// A random boolean mask keeping about 70% of the entries; the rows listed keep nothing.
BoolMat random_mask(Index n, Index m, std::uint32_t seed, std::vector<Index> empty_rows = {}) {
  std::mt19937 rng(seed);
  BoolMat b(n, m);
  for (Index c = 0; c < m; ++c)
    for (Index r = 0; r < n; ++r) b(r, c) = rng() % 10 < 7;
  for (Index r : empty_rows)
    if (r < n) b.row(r).setConstant(false);
  return b;
}

/// The reference output and, per row, the conditioning term c_i of the tolerance.
struct reference_result {
  MatL out;
  std::vector<long double> cond;
  std::vector<bool> empty;  // the query keeps no key
};

/// softmax(Q K^T * scale) V over the kept keys, in long double from the inputs as given.
template <typename T>
reference_result reference(const Mat<T>& q, const Mat<T>& k, const Mat<T>& v, long double scale,
                           const Keep& keep) {
  const Index n = q.rows(), m = k.rows(), d = q.cols();
  const MatL Q = q.template cast<long double>(), K = k.template cast<long double>(),
             V = v.template cast<long double>();
  reference_result r;
  r.out = MatL::Zero(n, v.cols());
  r.cond.assign(static_cast<std::size_t>(n), 0.0L);
  r.empty.assign(static_cast<std::size_t>(n), true);
  std::vector<long double> s(static_cast<std::size_t>(m)), a(static_cast<std::size_t>(m));
  for (Index i = 0; i < n; ++i) {
    long double mx = -inf<long double>;
    for (Index j = 0; j < m; ++j) {
      if (!keep(i, j)) continue;
      long double dot = 0, abs_dot = 0;
      for (Index c = 0; c < d; ++c) {
        dot += Q(i, c) * K(j, c);
        abs_dot += std::fabs(Q(i, c) * K(j, c));
      }
      s[std::size_t(j)] = dot * scale;
      a[std::size_t(j)] = abs_dot * scale;
      mx = std::max(mx, s[std::size_t(j)]);
    }
    if (mx == -inf<long double>) continue;
    r.empty[std::size_t(i)] = false;
    long double sum = 0;
    for (Index j = 0; j < m; ++j)
      if (keep(i, j)) sum += std::exp(s[std::size_t(j)] - mx);
    long double cond = 0;
    for (Index j = 0; j < m; ++j) {
      if (!keep(i, j)) continue;
      const long double p = std::exp(s[std::size_t(j)] - mx) / sum;
      r.out.row(i) += p * V.row(j);
      cond += p * (a[std::size_t(j)] + std::fabs(s[std::size_t(j)] - mx));
    }
    r.cond[std::size_t(i)] = cond;
  }
  return r;
}

/// Checks out against the reference with the tolerance above; `worst` receives the largest
/// error in units of eps * max|V|.
template <typename T>
::testing::AssertionResult within_tolerance(const reference_result& ref, const Mat<T>& out,
                                            long double vmax, long double* worst = nullptr) {
  if (out.rows() != ref.out.rows() || out.cols() != ref.out.cols()) {
    return ::testing::AssertionFailure()
           << "shape " << out.rows() << "x" << out.cols() << ", expected " << ref.out.rows() << "x"
           << ref.out.cols();
  }
  const long double unit = static_cast<long double>(eps<T>) * std::max(vmax, 1e-30L);
  Index failures = 0;
  std::ostringstream report;
  for (Index i = 0; i < out.rows(); ++i) {
    const long double allowed = 8.0L + 2.0L * ref.cond[std::size_t(i)];
    for (Index c = 0; c < out.cols(); ++c) {
      const long double got = static_cast<long double>(out(i, c));
      const long double err = std::fabs(got - ref.out(i, c)) / unit;
      if (worst != nullptr && err > *worst) *worst = err;
      if (!(err <= allowed) && ++failures <= 5) {
        report << "\n  at (" << i << ", " << c << "): reference " << show(ref.out(i, c))
               << ", actual " << show(out(i, c)) << ", error " << show(err)
               << " eps*max|V| > allowed " << show(allowed);
      }
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " entries beyond tolerance:" << report.str();
}

template <typename T>
smax::attention_options<T> direct() {
  smax::attention_options<T> o;
  o.path = smax::attention_path::direct;
  return o;
}

template <typename T>
smax::attention_options<T> streaming(Index query_block = 64, Index key_block = 256) {
  smax::attention_options<T> o;
  o.path = smax::attention_path::streaming;
  o.query_block = query_block;
  o.key_block = key_block;
  return o;
}

/// Every path configuration the accuracy tests run.
template <typename T>
std::vector<std::pair<std::string, smax::attention_options<T>>> all_paths() {
  return {{"direct", direct<T>()},
          {"streaming 64x256", streaming<T>()},
          {"streaming 5x7", streaming<T>(5, 7)},
          {"streaming 16x64", streaming<T>(16, 64)}};
}

struct shape {
  Index n, m, d, dv;
};

// n != m, d = 1, 8, 16, 64, dv != d, sizes below, at and beyond the default blocks.
constexpr shape shapes[] = {{1, 1, 1, 1},     {5, 9, 1, 3},      {37, 53, 8, 5},
                            {64, 64, 64, 64}, {70, 300, 64, 17}, {130, 45, 16, 128}};

/// Runs attention with one of the masks of the sweep (0: none, 1-4: causal offsets, 5:
/// boolean) and returns the keep predicate it used.
template <typename T>
Mat<T> run_masked(int kind, const Mat<T>& q, const Mat<T>& k, const Mat<T>& v,
                  const smax::attention_options<T>& o, const BoolMat& b, Keep* keep) {
  const Index n = q.rows(), m = k.rows();
  const Index offsets[] = {0, 0, -3, m - n, 5};
  if (kind == 0) {
    *keep = [](Index, Index) { return true; };
    return smax::attention(q, k, v, o);
  }
  if (kind <= 4) {
    const Index off = offsets[kind];
    *keep = [off](Index i, Index j) { return j <= i + off; };
    return smax::attention(q, k, v, smax::causal_mask{off}, o);
  }
  *keep = [&b](Index i, Index j) { return b(i, j); };
  return smax::attention(q, k, v, b, o);
}

// ---------------------------------------------------------------------------------------
// Accuracy

// Both paths, every block configuration, every mask kind, against the reference; prints the
// largest error of each path (the figures quoted in the README).
TYPED_TEST(Attention, BothPathsAgreeWithTheReference) {
  using T = TypeParam;
  long double worst_direct = 0, worst_streaming = 0;
  std::uint32_t seed = 100;
  for (const shape& sh : shapes) {
    const Mat<T> q = normal_matrix<T>(sh.n, sh.d, ++seed);
    const Mat<T> k = normal_matrix<T>(sh.m, sh.d, ++seed);
    const Mat<T> v = normal_matrix<T>(sh.m, sh.dv, ++seed);
    const BoolMat b = random_mask(sh.n, sh.m, ++seed, {0, 2});
    const long double vmax = static_cast<long double>(v.cwiseAbs().maxCoeff());
    const long double scale = 1.0L / std::sqrt(static_cast<long double>(sh.d));
    for (int kind = 0; kind <= 5; ++kind) {
      reference_result ref;
      bool have_ref = false;
      for (const auto& [name, o] : all_paths<T>()) {
        Keep keep;
        const Mat<T> out = run_masked<T>(kind, q, k, v, o, b, &keep);
        if (!have_ref) {
          ref = reference(q, k, v, scale, keep);
          have_ref = true;
        }
        long double& worst = name == "direct" ? worst_direct : worst_streaming;
        EXPECT_TRUE(within_tolerance(ref, out, vmax, &worst))
            << name << ", n " << sh.n << " m " << sh.m << " d " << sh.d << " dv " << sh.dv
            << ", mask kind " << kind;
      }
    }
  }
  std::printf("[ measured ] %s: max error direct %.2Lf, streaming %.2Lf (eps * max|V|)\n",
              TypeNames::GetName<T>(0).c_str(), worst_direct, worst_streaming);
  // The tolerance allows ~18; much more than the measured ~1.5 would mean a lost digit.
  EXPECT_LT(worst_direct, 4.0L);
  EXPECT_LT(worst_streaming, 4.0L);
}

// Scores of magnitude ~50 (entries N(0, 9), d = 64): the error grows with the scores'
// condition number as the tolerance says, on both paths.
TYPED_TEST(Attention, LargeScoresStayWithinTheConditioningBound) {
  using T = TypeParam;
  const Mat<T> q = normal_matrix<T>(40, 64, 11, 3.0), k = normal_matrix<T>(150, 64, 12, 3.0);
  const Mat<T> v = normal_matrix<T>(150, 24, 13);
  const long double vmax = static_cast<long double>(v.cwiseAbs().maxCoeff());
  const reference_result ref =
      reference(q, k, v, 0.125L, [](Index i, Index j) { return j <= i + 100; });
  for (const auto& [name, o] : all_paths<T>()) {
    EXPECT_TRUE(
        within_tolerance(ref, Mat<T>(smax::attention(q, k, v, smax::causal_mask{100}, o)), vmax))
        << name;
  }
}

// Block sizes that divide n and m, that do not, of 1, and larger than the inputs.
TYPED_TEST(Attention, BlockSizesThatDoAndDoNotDivide) {
  using T = TypeParam;
  const Index n = 48, m = 96;
  const Mat<T> q = normal_matrix<T>(n, 16, 21), k = normal_matrix<T>(m, 16, 22);
  const Mat<T> v = normal_matrix<T>(m, 8, 23);
  const long double vmax = static_cast<long double>(v.cwiseAbs().maxCoeff());
  const Index blocks[][2] = {{1, 1}, {16, 32}, {48, 96}, {7, 13}, {5, 96}, {48, 1}, {1000, 1000}};
  for (const auto& bs : blocks) {
    const auto o = streaming<T>(bs[0], bs[1]);
    const reference_result plain = reference(q, k, v, 0.25L, [](Index, Index) { return true; });
    EXPECT_TRUE(within_tolerance(plain, Mat<T>(smax::attention(q, k, v, o)), vmax))
        << bs[0] << "x" << bs[1];
    const reference_result causal =
        reference(q, k, v, 0.25L, [](Index i, Index j) { return j <= i + 7; });
    EXPECT_TRUE(
        within_tolerance(causal, Mat<T>(smax::attention(q, k, v, smax::causal_mask{7}, o)), vmax))
        << bs[0] << "x" << bs[1] << " causal";
  }
}

// ---------------------------------------------------------------------------------------
// Numerical policy

// A query that keeps no key gets exact zeros, even where V holds NaN and inf, on both paths
// and for every kind of mask; m = 0 makes every row such a query.
TYPED_TEST(AttentionPolicy, QueriesThatKeepNoKeyGetZeroRows) {
  using T = TypeParam;
  const Index n = 20, m = 30;
  const Mat<T> q = normal_matrix<T>(n, 8, 31), k = normal_matrix<T>(m, 8, 32);
  Mat<T> v = normal_matrix<T>(m, 4, 33);
  v(3, 1) = qnan<T>;
  v(7, 2) = inf<T>;
  const BoolMat b = random_mask(n, m, 34, {0, 5, 19});
  for (const auto& [name, o] : all_paths<T>()) {
    const Mat<T> a = smax::attention(q, k, v, b, o);
    for (Index r : {0, 5, 19}) EXPECT_TRUE(same_values(Mat<T>::Zero(1, 4), a.row(r))) << name;
    // Offset -4: queries 0..3 see nothing.
    const Mat<T> c = smax::attention(q, k, v, smax::causal_mask{-4}, o);
    EXPECT_TRUE(same_values(Mat<T>::Zero(4, 4), c.topRows(4))) << name;
    // An offset that hides everything, and one far beyond the keys (clamped, no overflow).
    EXPECT_TRUE(
        same_values(Mat<T>::Zero(n, 4), smax::attention(q, k, v, smax::causal_mask{-n - 100}, o)))
        << name;
    const Mat<T> all =
        smax::attention(q, k, v, smax::causal_mask{std::numeric_limits<Index>::max() / 2}, o);
    EXPECT_TRUE(same_values(Mat<T>(smax::attention(q, k, v, o)), all)) << name;
    const Mat<T> no_keys = smax::attention(q, k.topRows(0), v.topRows(0), o);
    EXPECT_TRUE(same_values(Mat<T>::Zero(n, 4), no_keys)) << name;
  }
}

// Masked scores are ignored whatever their value: a key whose row of K is NaN, masked for
// every query, leaves the result equal to attention without that key.
TYPED_TEST(AttentionPolicy, MaskedScoresAreIgnoredWhateverTheirValue) {
  using T = TypeParam;
  const Index n = 12, m = 10;
  const Mat<T> q = normal_matrix<T>(n, 8, 41);
  Mat<T> k = normal_matrix<T>(m, 8, 42);
  const Mat<T> v = normal_matrix<T>(m, 3, 43);
  k.row(m - 1).setConstant(qnan<T>);
  k(m - 2, 0) = inf<T>;
  BoolMat b = random_mask(n, m, 44);
  b.col(m - 1).setConstant(false);
  b.col(m - 2).setConstant(false);
  b.col(0).setConstant(true);
  const BoolMat b_rest = b.leftCols(m - 2);
  for (const auto& [name, o] : all_paths<T>()) {
    const Mat<T> with = smax::attention(q, k, v, b, o);
    const Mat<T> without = smax::attention(q, k.topRows(m - 2), v.topRows(m - 2), b_rest, o);
    EXPECT_TRUE(all_close(without, with, 8 * eps<T>, 8 * eps<T>)) << name;
    // Causal: keys m-2 and m-1 are hidden from queries 0..m-3 (offset 0).
    const Mat<T> c = smax::attention(q, k, v, smax::causal, o);
    const Mat<T> c_without =
        smax::attention(q.topRows(m - 2), k.topRows(m - 2), v.topRows(m - 2), smax::causal, o);
    EXPECT_TRUE(all_close(c_without, c.topRows(m - 2), 8 * eps<T>, 8 * eps<T>)) << name;
  }
}

// NaN in a kept score makes its query's row NaN and leaves the others alone.
TYPED_TEST(AttentionPolicy, NaNInAKeptScoreReachesItsRowOnly) {
  using T = TypeParam;
  const Index n = 70, m = 80;
  Mat<T> q = normal_matrix<T>(n, 8, 51);
  Mat<T> k = normal_matrix<T>(m, 8, 52);
  const Mat<T> v = normal_matrix<T>(m, 5, 53);
  q(3, 2) = qnan<T>;   // every score of query 3
  k(40, 6) = qnan<T>;  // key 40: queries that keep it (causal: i >= 40)
  const Mat<T> q_clean = normal_matrix<T>(n, 8, 51);
  const Mat<T> k_clean = normal_matrix<T>(m, 8, 52);
  for (const auto& [name, o] : all_paths<T>()) {
    const Mat<T> a = smax::attention(q, k, v, smax::causal, o);
    for (Index i = 0; i < n; ++i) {
      const bool nan_row = i == 3 || i >= 40;
      for (Index c = 0; c < 5; ++c) {
        EXPECT_EQ(std::isnan(a(i, c)), nan_row) << name << " at (" << i << ", " << c << ")";
      }
    }
    // The rows without NaN are the clean answer.
    const Mat<T> clean = smax::attention(q_clean, k_clean, v, smax::causal, o);
    EXPECT_TRUE(all_close(clean.middleRows(4, 36), a.middleRows(4, 36), 8 * eps<T>, 8 * eps<T>))
        << name;
  }
}

// Entries of 1e4 and 1e18 (float; 1e150 in double), and spreads that overflow the score
// GEMM itself (1e19 * 1e19 * 64 > FLT_MAX): the weights are one-hot on the largest score,
// as in the reference, and the output is exactly that key's value row; never NaN.
TYPED_TEST(AttentionPolicy, HugeScoresNeverOverflowIntoNaN) {
  using T = TypeParam;
  const Index n = 50, m = 70, d = 64;
  const long double huge_mags[] = {1e4L, std::is_same_v<T, float> ? 1e18L : 1e150L,
                                   std::is_same_v<T, float> ? 1e19L : 1e160L,
                                   static_cast<long double>(big<T>) / 2};
  for (long double mag : huge_mags) {
    const Mat<T> q = uniform_matrix<T>(n, d, 61, mag);
    const Mat<T> k = uniform_matrix<T>(m, d, 62, mag);
    const Mat<T> v = normal_matrix<T>(m, 6, 63);
    const MatL s = q.template cast<long double>() * k.template cast<long double>().transpose();
    for (const auto& [name, o] : all_paths<T>()) {
      for (bool causal : {false, true}) {
        const Mat<T> a = causal ? Mat<T>(smax::attention(q, k, v, smax::causal, o))
                                : smax::attention(q, k, v, o);
        for (Index i = 0; i < n; ++i) {
          Index best = 0;
          const Index last = causal ? std::min(i, m - 1) : m - 1;
          for (Index j = 1; j <= last; ++j)
            if (s(i, j) > s(i, best)) best = j;
          EXPECT_TRUE(same_values(v.row(best), a.row(i)))
              << name << ", magnitude " << show(mag) << ", causal " << causal << ", row " << i;
        }
      }
    }
  }
}

// Huge rows of Q and a huge key next to ordinary ones: the power-of-two prescale is per
// row, so the ordinary rows keep their full accuracy (normal tolerance), the huge row is
// one-hot on the huge key.
TYPED_TEST(AttentionPolicy, OrdinaryRowsKeepTheirAccuracyNextToHugeOnes) {
  using T = TypeParam;
  const Index n = 40, m = 60, d = 16;
  const T q_big = std::is_same_v<T, float> ? T(1e36) : T(1e200);
  const T k_big = std::is_same_v<T, float> ? T(1e30) : T(1e160);
  Mat<T> q = normal_matrix<T>(n, d, 71);
  Mat<T> k = normal_matrix<T>(m, d, 72);
  const Mat<T> v = normal_matrix<T>(m, 7, 73);
  for (Index i = 1; i < n; ++i) q(i, 0) = -T(0.5) - std::abs(q(i, 0));  // key 0 scores << 0
  q.row(0).setZero();
  q(0, 0) = q_big;
  k.row(0).setZero();
  k(0, 0) = k_big;  // q_big * k_big overflows T
  const long double vmax = static_cast<long double>(v.cwiseAbs().maxCoeff());
  const reference_result ref = reference(q, k, v, 0.25L, [](Index, Index) { return true; });
  for (const auto& [name, o] : all_paths<T>()) {
    const Mat<T> a = smax::attention(q, k, v, o);
    EXPECT_TRUE(same_values(v.row(0), a.row(0))) << name;
    const reference_result rest{ref.out.bottomRows(n - 1),
                                std::vector<long double>(ref.cond.begin() + 1, ref.cond.end()),
                                std::vector<bool>(ref.empty.begin() + 1, ref.empty.end())};
    EXPECT_TRUE(within_tolerance(rest, Mat<T>(a.bottomRows(n - 1)), vmax)) << name;
  }
}

// Infinite inputs make infinite scores, which follow smax::softmax's policy identically on
// both paths: one +inf takes all the weight, two give NaN, -inf gets weight 0.
TYPED_TEST(AttentionPolicy, InfiniteScoresFollowSoftmaxOnBothPaths) {
  using T = TypeParam;
  Mat<T> q(3, 1), k(3, 1), v(3, 2);
  q << inf<T>, -inf<T>, T(1);
  k << T(1), T(-1), T(-2);  // scores: [inf, -inf, -inf], [-inf, inf, inf], finite
  v << 1, 2, 3, 4, 5, 6;
  for (const auto& [name, o] : all_paths<T>()) {
    const Mat<T> a = smax::attention(q, k, v, o);
    EXPECT_TRUE(same_values(v.row(0), a.row(0))) << name;
    EXPECT_TRUE(std::isnan(a(1, 0)) && std::isnan(a(1, 1))) << name;
    EXPECT_TRUE(all_close(Mat<T>(smax::attention(q.bottomRows(1), k, v, o)), a.row(2))) << name;
  }
}

// scale = 0: every kept key weighs the same (the T = +inf limit), masked ones nothing.
TYPED_TEST(AttentionPolicy, ScaleZeroGivesEqualWeightsToTheKeptKeys) {
  using T = TypeParam;
  const Index n = 9, m = 11;
  const Mat<T> q = normal_matrix<T>(n, 4, 81, 100.0), k = normal_matrix<T>(m, 4, 82, 100.0);
  const Mat<T> v = normal_matrix<T>(m, 3, 83);
  const BoolMat b = random_mask(n, m, 84, {4});
  for (const auto& [name, base] : all_paths<T>()) {
    auto o = base;
    o.scale = T(0);
    const Mat<T> a = smax::attention(q, k, v, b, o);
    const Mat<T> c = smax::attention(q, k, v, smax::causal_mask{1}, o);
    for (Index i = 0; i < n; ++i) {
      Eigen::Matrix<long double, 1, Eigen::Dynamic> mean = Eigen::Matrix<long double, 1, 3>::Zero();
      Eigen::Matrix<long double, 1, Eigen::Dynamic> causal_mean = mean;
      long double count = 0;
      for (Index j = 0; j < m; ++j) {
        if (b(i, j)) {
          mean += v.row(j).template cast<long double>();
          ++count;
        }
      }
      if (count > 0) mean /= count;
      for (Index j = 0; j <= std::min(i + 1, m - 1); ++j)
        causal_mean += v.row(j).template cast<long double>();
      causal_mean /= static_cast<long double>(std::min(i + 2, m));
      EXPECT_TRUE(all_close(mean.template cast<T>(), a.row(i), 8 * eps<T>, 8 * eps<T>))
          << name << " row " << i;
      EXPECT_TRUE(all_close(causal_mean.template cast<T>(), c.row(i), 8 * eps<T>, 8 * eps<T>))
          << name << " row " << i;
    }
  }
}

// A causal mask's hidden key blocks are never read by the streaming path: NaN in values that
// no query of the first block may see does not reach it (the direct path multiplies those
// zero weights by NaN). The same for blocks a boolean mask hides entirely.
TYPED_TEST(AttentionPolicy, StreamingSkipsHiddenKeyBlocks) {
  using T = TypeParam;
  const Index n = 64, m = 64;
  const Mat<T> q = normal_matrix<T>(n, 8, 91), k = normal_matrix<T>(m, 8, 92);
  Mat<T> v = normal_matrix<T>(m, 4, 93);
  v.bottomRows(32).setConstant(qnan<T>);
  const Mat<T> a = smax::attention(q, k, v, smax::causal, streaming<T>(32, 32));
  EXPECT_TRUE(a.topRows(32).allFinite());
  EXPECT_TRUE(a.bottomRows(32).array().isNaN().all());
  BoolMat b = BoolMat::Constant(n, m, true);
  b.topRightCorner(32, 32).setConstant(false);
  const Mat<T> c = smax::attention(q, k, v, b, streaming<T>(32, 32));
  EXPECT_TRUE(c.topRows(32).allFinite());
  // The skipped blocks change nothing: the answer is attention over the first 32 keys.
  const Mat<T> first = smax::attention(q.topRows(32), k.topRows(32), v.topRows(32), streaming<T>());
  EXPECT_TRUE(all_close(first, c.topRows(32), 8 * eps<T>, 8 * eps<T>));
}

// ---------------------------------------------------------------------------------------
// API surface

// The automatic path is the direct one up to attention_direct_max_scores scores (
// attention_direct_max_scores_causal with a causal mask) and the streaming one beyond, bit
// for bit.
TYPED_TEST(AttentionApi, AutomaticPathSwitchesAtTheThreshold) {
  using T = TypeParam;
  const Index m = 1024, limit = smax::attention_direct_max_scores;
  const Mat<T> k = normal_matrix<T>(m, 2, 102), v = normal_matrix<T>(m, 2, 103);
  for (Index n : {limit / m, limit / m + 1}) {
    const Mat<T> q = normal_matrix<T>(n, 2, 101);
    const Mat<T> expected = smax::attention(q, k, v, n * m <= limit ? direct<T>() : streaming<T>());
    EXPECT_TRUE(bit_equal(expected, Mat<T>(smax::attention(q, k, v)))) << "n = " << n;
    // The boolean mask shares the threshold.
    const BoolMat b = random_mask(n, m, 104);
    const Mat<T> masked =
        smax::attention(q, k, v, b, n * m <= limit ? direct<T>() : streaming<T>());
    EXPECT_TRUE(bit_equal(masked, Mat<T>(smax::attention(q, k, v, b)))) << "n = " << n;
  }
  const Index mc = 256, limit_causal = smax::attention_direct_max_scores_causal;
  for (Index n : {limit_causal / mc, limit_causal / mc + 1}) {
    const Mat<T> q = normal_matrix<T>(n, 2, 105);
    const Mat<T> expected = smax::attention(q, k.topRows(mc), v.topRows(mc), smax::causal,
                                            n * mc <= limit_causal ? direct<T>() : streaming<T>());
    EXPECT_TRUE(
        bit_equal(expected, Mat<T>(smax::attention(q, k.topRows(mc), v.topRows(mc), smax::causal))))
        << "causal, n = " << n;
  }
  // The two paths do differ in their last bits here, or the checks above would prove nothing.
  const Mat<T> q = normal_matrix<T>(300, 2, 106);
  EXPECT_FALSE(bit_equal(Mat<T>(smax::attention(q, k, v, direct<T>())),
                         Mat<T>(smax::attention(q, k, v, streaming<T>()))));
}

// A workspace changes nothing in the results, keeps its buffers between calls (growing only
// when a call needs more) and gives them back on release().
TYPED_TEST(AttentionApi, WorkspaceIsReusedAndChangesNothing) {
  using T = TypeParam;
  const Mat<T> q = normal_matrix<T>(50, 8, 161), k = normal_matrix<T>(70, 8, 162);
  const Mat<T> v = normal_matrix<T>(70, 6, 163);
  const BoolMat b = random_mask(50, 70, 164, {3});
  for (const auto& [name, base] : all_paths<T>()) {
    smax::attention_workspace<T> workspace;
    EXPECT_EQ(workspace.bytes(), 0u);
    auto o = base;
    o.workspace = &workspace;
    EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q, k, v, b, base)),
                          Mat<T>(smax::attention(q, k, v, b, o))))
        << name;
    const std::size_t held = workspace.bytes();
    EXPECT_GT(held, 0u) << name;
    EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q, k, v, smax::causal, base)),
                          Mat<T>(smax::attention(q, k, v, smax::causal, o))))
        << name;
    // Smaller inputs fit in what is held.
    EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q.topRows(9), k, v, base)),
                          Mat<T>(smax::attention(q.topRows(9), k, v, o))))
        << name;
    EXPECT_EQ(workspace.bytes(), held) << name;
    workspace.release();
    EXPECT_EQ(workspace.bytes(), 0u) << name;
  }
}

// Every overload and the _into forms agree bit for bit; the scale argument equals the option.
TYPED_TEST(AttentionApi, OverloadsAndIntoFormsAgree) {
  using T = TypeParam;
  const Mat<T> q = normal_matrix<T>(20, 8, 111), k = normal_matrix<T>(30, 8, 112);
  const Mat<T> v = normal_matrix<T>(30, 5, 113);
  const BoolMat b = random_mask(20, 30, 114, {1});
  for (const auto& [name, base] : all_paths<T>()) {
    auto o = base;
    o.scale = T(0.3);
    const Mat<T> plain = smax::attention(q, k, v, o);
    const Mat<T> masked = smax::attention(q, k, v, b, o);
    const Mat<T> causal = smax::attention(q, k, v, smax::causal_mask{2}, o);
    Mat<T> out;
    smax::attention_into(out, q, k, v, o);
    EXPECT_TRUE(bit_equal(plain, out)) << name;
    smax::attention_into(out, q, k, v, b, o);
    EXPECT_TRUE(bit_equal(masked, out)) << name;
    smax::attention_into(out, q, k, v, smax::causal_mask{2}, o);
    EXPECT_TRUE(bit_equal(causal, out)) << name;
    // A Map and a Block of the right shape, and a row-major output.
    std::vector<T> storage(20 * 5, T(-7));
    smax::attention_into(Eigen::Map<Mat<T>>(storage.data(), 20, 5), q, k, v, b, o);
    EXPECT_TRUE(bit_equal(masked, Eigen::Map<Mat<T>>(storage.data(), 20, 5))) << name;
    Mat<T> wide = Mat<T>::Constant(25, 9, T(-7));
    smax::attention_into(wide.block(2, 3, 20, 5), q, k, v, o);
    EXPECT_TRUE(bit_equal(plain, wide.block(2, 3, 20, 5))) << name;
    EXPECT_TRUE(same_values(Mat<T>::Constant(2, 9, T(-7)), wide.topRows(2))) << name;
    MatR<T> row_major;
    smax::attention_into(row_major, q, k, v, smax::causal_mask{2}, o);
    EXPECT_TRUE(all_close(causal, row_major, 4 * eps<T>, 4 * eps<T>)) << name;
  }
  // The scale overloads are the option.
  auto o = smax::attention_options<T>{};
  o.scale = T(0.3);
  EXPECT_TRUE(
      bit_equal(Mat<T>(smax::attention(q, k, v, o)), Mat<T>(smax::attention(q, k, v, T(0.3)))));
  EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q, k, v, b, o)),
                        Mat<T>(smax::attention(q, k, v, b, T(0.3)))));
  Mat<T> out;
  smax::attention_into(out, q, k, v, smax::causal, T(0.3));
  EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q, k, v, smax::causal, o)), out));
  smax::attention_into(out, q, k, v, T(0.3));
  EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q, k, v, o)), out));
  // The default scale is 1 / sqrt(d): d = 64 makes it exactly 1/8.
  const Mat<T> q64 = normal_matrix<T>(6, 64, 115), k64 = normal_matrix<T>(7, 64, 116);
  EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q64, k64, v.topRows(7))),
                        Mat<T>(smax::attention(q64, k64, v.topRows(7), T(0.125)))));
}

// Map, Block, row-major, Array, fixed-size and expression inputs and masks give the plain
// result (to rounding: a different storage order may change the GEMM's summation).
TYPED_TEST(AttentionApi, AnyEigenInput) {
  using T = TypeParam;
  const Mat<T> q = normal_matrix<T>(6, 4, 121), k = normal_matrix<T>(5, 4, 122);
  const Mat<T> v = normal_matrix<T>(5, 3, 123);
  const BoolMat b = random_mask(6, 5, 124);
  for (const auto& [name, o] : all_paths<T>()) {
    const Mat<T> expected = smax::attention(q, k, v, b, o);
    const auto close = [&](const auto& actual) {
      return all_close(expected, actual, 4 * eps<T>, 4 * eps<T>);
    };
    // Map, and a Block of a larger matrix.
    const Eigen::Map<const Mat<T>> qm(q.data(), 6, 4);
    Mat<T> big = Mat<T>::Zero(10, 10);
    big.block(1, 2, 5, 4) = k;
    EXPECT_TRUE(close(smax::attention(qm, big.block(1, 2, 5, 4), v, b, o))) << name;
    // Row-major, Array, and an expression for each input.
    const MatR<T> qr = q, kr = k, vr = v;
    EXPECT_TRUE(close(smax::attention(qr, kr, vr, b, o))) << name;
    EXPECT_TRUE(close(smax::attention(q.array(), k.array(), v.array(), b, o))) << name;
    EXPECT_TRUE(close(smax::attention(q * T(1), k + Mat<T>::Zero(5, 4), v * T(1), b, o))) << name;
    // A boolean expression as the mask, and a row-major mask.
    const Mat<T> bf = b.template cast<T>().matrix();
    EXPECT_TRUE(close(smax::attention(q, k, v, bf.array() > T(0.5), o))) << name;
    const Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> br = b;
    EXPECT_TRUE(close(smax::attention(q, k, v, br, o))) << name;
    // Fixed sizes stay fixed; one query gives a row vector.
    const Eigen::Matrix<T, 6, 4> qf = q;
    const Eigen::Matrix<T, 5, 3> vf = v;
    static_assert(std::is_same_v<decltype(smax::attention(qf, k, vf)), Eigen::Matrix<T, 6, 3>>);
    static_assert(std::is_same_v<decltype(smax::attention(q.row(0), k, v)),
                                 Eigen::Matrix<T, 1, Eigen::Dynamic>>);
    static_assert(std::is_same_v<decltype(smax::attention(q, k, v)), Mat<T>>);
    EXPECT_TRUE(close(smax::attention(qf, k, vf, b, o))) << name;
    EXPECT_TRUE(all_close(expected.row(2), smax::attention(q.row(2), k, v, b.row(2), o), 4 * eps<T>,
                          4 * eps<T>))
        << name;
  }
}

// out may share memory with q, k or v: the input is copied first, so the result is the
// same as into fresh storage.
TYPED_TEST(AttentionApi, OutputMayAliasAnInput) {
  using T = TypeParam;
  const Index n = 24, m = 24, d = 8;
  for (const auto& [name, o] : all_paths<T>()) {
    const Mat<T> q0 = normal_matrix<T>(n, d, 131), k0 = normal_matrix<T>(m, d, 132);
    const Mat<T> v0 = normal_matrix<T>(m, d, 133);
    const Mat<T> expected = smax::attention(q0, k0, v0, smax::causal, o);
    Mat<T> q = q0, k = k0, v = v0;
    smax::attention_into(q, q, k0, v0, smax::causal, o);
    EXPECT_TRUE(bit_equal(expected, q)) << name << ": out is q";
    smax::attention_into(k, q0, k, v0, smax::causal, o);
    EXPECT_TRUE(bit_equal(expected, k)) << name << ": out is k";
    smax::attention_into(v, q0, k0, v, smax::causal, o);
    EXPECT_TRUE(bit_equal(expected, v)) << name << ": out is v";
    // Partial overlap: out is a block that covers half of v.
    Mat<T> buffer(m + n / 2, d);
    buffer.topRows(m) = v0;
    smax::attention_into(buffer.bottomRows(n), q0, k0, buffer.topRows(m), smax::causal, o);
    EXPECT_TRUE(bit_equal(expected, buffer.bottomRows(n))) << name << ": out overlaps v";
    // out is resized away from an aliased q's shape: the copy was made first.
    Mat<T> qq = q0;
    smax::attention_into(qq, qq, k0, v0.leftCols(3), smax::causal, o);
    EXPECT_TRUE(bit_equal(Mat<T>(smax::attention(q0, k0, v0.leftCols(3), smax::causal, o)), qq))
        << name;
  }
}

// Empty shapes: no queries, no value columns, and d = 0 (every score 0: equal weights).
TYPED_TEST(AttentionApi, EmptyShapes) {
  using T = TypeParam;
  const Mat<T> k = normal_matrix<T>(5, 3, 141), v = normal_matrix<T>(5, 2, 142);
  for (const auto& [name, o] : all_paths<T>()) {
    EXPECT_EQ(smax::attention(Mat<T>(0, 3), k, v, o).rows(), 0) << name;
    const Mat<T> no_cols = smax::attention(normal_matrix<T>(4, 3, 143), k, Mat<T>(5, 0), o);
    EXPECT_EQ(no_cols.rows(), 4);
    EXPECT_EQ(no_cols.cols(), 0);
    const Mat<T> flat = smax::attention(Mat<T>(4, 0), Mat<T>(5, 0), v, o);
    const Mat<T> mean = v.colwise().mean().replicate(4, 1);
    EXPECT_TRUE(all_close(mean, flat, 4 * eps<T>, 4 * eps<T>)) << name;
  }
}

// ---------------------------------------------------------------------------------------
// Errors: message, and the output untouched

TYPED_TEST(AttentionErrors, EveryInvalidArgument) {
  using T = TypeParam;
  using loss::error_of;
  const Mat<T> q = normal_matrix<T>(4, 3, 151), k = normal_matrix<T>(5, 3, 152);
  const Mat<T> v = normal_matrix<T>(5, 2, 153);
  const BoolMat b = BoolMat::Constant(4, 5, true);
  Mat<T> out = Mat<T>::Constant(4, 2, T(-7));
  const Mat<T> sentinel = out;
  const auto expect_error = [&](const std::string& message, auto&& call) {
    EXPECT_EQ(error_of(call), message);
    EXPECT_TRUE(bit_equal(sentinel, out)) << message;
  };
  expect_error(
      "smax::attention_into: argument 'k' is of shape 5x2; expected 3 columns (d, as 'q' has)",
      [&] { smax::attention_into(out, q, k.leftCols(2), v); });
  expect_error(
      "smax::attention_into: argument 'v' is of shape 4x2; expected 5 rows (one per key, as "
      "'k' has)",
      [&] { smax::attention_into(out, q, k, v.topRows(4)); });
  expect_error(
      "smax::attention_into: argument 'mask' is of shape 5x4; expected the shape 4x5 (queries x "
      "keys)",
      [&] { smax::attention_into(out, q, k, v, BoolMat::Constant(5, 4, true)); });
  for (T bad : {T(-1), -inf<T>, inf<T>, qnan<T>}) {
    expect_error("smax::attention_into: argument 'scale' is " + show(bad) +
                     "; expected a finite number >= 0 (0 gives equal weights to the kept keys)",
                 [&] { smax::attention_into(out, q, k, v, b, bad); });
  }
  smax::attention_options<T> o;
  o.query_block = 0;
  expect_error("smax::attention_into: argument 'options.query_block' is 0; expected a number >= 1",
               [&] { smax::attention_into(out, q, k, v, o); });
  o.query_block = 8;
  o.key_block = -3;
  expect_error("smax::attention_into: argument 'options.key_block' is -3; expected a number >= 1",
               [&] { smax::attention_into(out, q, k, v, smax::causal, o); });
  o.key_block = 8;
  o.path = static_cast<smax::attention_path>(7);
  expect_error(
      "smax::attention_into: argument 'options.path' is 7; expected attention_path::automatic, "
      "direct or streaming",
      [&] { smax::attention_into(out, q, k, v, o); });
  // Storage that cannot be resized must have the shape n x dv.
  std::vector<T> storage(3 * 2, T(-7));
  Eigen::Map<Mat<T>> small(storage.data(), 3, 2);
  EXPECT_EQ(error_of([&] { smax::attention_into(small, q, k, v); }),
            "smax::attention_into: argument 'out' is of shape 3x2; expected storage of shape 4x2 "
            "(rows of 'q' x columns of 'v'), or a resizable matrix");
  EXPECT_TRUE(std::all_of(storage.begin(), storage.end(), [](T x) { return x == T(-7); }));
  // The value form names itself; options are checked before shapes.
  EXPECT_EQ(error_of([&] { smax::attention(q, k.leftCols(2), v, T(-1)); }),
            "smax::attention: argument 'scale' is -1; expected a finite number >= 0 (0 gives "
            "equal weights to the kept keys)");
  EXPECT_EQ(error_of([&] { smax::attention(q, k, v.topRows(2), smax::causal); }),
            "smax::attention: argument 'v' is of shape 2x2; expected 5 rows (one per key, as 'k' "
            "has)");
}

}  // namespace
