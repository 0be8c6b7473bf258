// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

#include "test_utils.hpp"  // first: silences a GCC 12 false positive before Eigen

#include <smax/cross_entropy.hpp>

#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

#include <smax/smax.hpp>

namespace {

using namespace smax_test::loss;  // close, all_close, tol, error_of, MatL, ...
using smax_test::Mat;
using smax_test::Vec;
using Index = Eigen::Index;

template <typename T>
class CrossEntropy : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CrossEntropy, Scalars, smax_test::TypeNames);

template <typename T>
class NllLoss : public ::testing::Test {};
TYPED_TEST_SUITE(NllLoss, Scalars, smax_test::TypeNames);

constexpr long double inf_l = std::numeric_limits<long double>::infinity();

// ---------------------------------------------------------------------------------------
// Long double references. Samples are rows.

/// An option set, independent of the scalar type.
struct spec {
  smax::reduction red = smax::reduction::mean;
  double eps = 0;
  std::int64_t ignore = -100;
  std::vector<double> w;  // empty: no weights
  double T = 1;
};

/// smax options of scalar T for a spec; owns the weight storage the options view.
template <typename T>
struct options_for {
  Vec<T> w;
  smax::cross_entropy_options<T> o;
  explicit options_for(const spec& s) {
    o.reduction = s.red;
    o.label_smoothing = static_cast<T>(s.eps);
    o.ignore_index = s.ignore;
    o.temperature = static_cast<T>(s.T);
    if (!s.w.empty()) {
      w.resize(static_cast<Index>(s.w.size()));
      for (Index c = 0; c < w.size(); ++c) w(c) = static_cast<T>(s.w[static_cast<size_t>(c)]);
      o.weight = w;
    }
  }
  options_for(const options_for&) = delete;
  options_for& operator=(const options_for&) = delete;
};

long double weight_of(const spec& s, Index c) {
  return s.w.empty() ? 1.0L : static_cast<long double>(s.w[static_cast<size_t>(c)]);
}

std::vector<long double> ref_log_softmax(const MatL& z, Index n, long double T) {
  const Index C = z.cols();
  long double m = -inf_l;
  for (Index c = 0; c < C; ++c) m = std::max(m, z(n, c) / T);
  long double s = 0;
  for (Index c = 0; c < C; ++c) s += std::exp(z(n, c) / T - m);
  std::vector<long double> lp(static_cast<size_t>(C));
  for (Index c = 0; c < C; ++c) lp[static_cast<size_t>(c)] = z(n, c) / T - m - std::log(s);
  return lp;
}

struct ref_result {
  long double loss = 0;
  std::vector<long double> per_sample;
  MatL grad;  // of the reduced loss
};

/// The coefficient form: l_n = sum_c a_c (-log p_c), gradient (A p - a) / T / denominator.
/// coef(n, c) gives a_{n,c}; ignored(n) skips a sample; denom is the mean denominator.
template <typename Coef, typename Ignored>
ref_result ref_from_coefficients(const MatL& z, const spec& s, Coef coef, Ignored ignored,
                                 long double denom) {
  const Index N = z.rows(), C = z.cols();
  ref_result r;
  r.per_sample.assign(static_cast<size_t>(N), 0.0L);
  r.grad = MatL::Zero(N, C);
  const long double T = s.T;
  long double total = 0;
  for (Index n = 0; n < N; ++n) {
    if (ignored(n)) continue;
    const auto lp = ref_log_softmax(z, n, T);
    long double l = 0, A = 0;
    for (Index c = 0; c < C; ++c) {
      const long double a = coef(n, c);
      A += a;
      if (a != 0) l += a * -lp[static_cast<size_t>(c)];
    }
    for (Index c = 0; c < C; ++c) {
      r.grad(n, c) = (A * std::exp(lp[static_cast<size_t>(c)]) - coef(n, c)) / T;
    }
    r.per_sample[static_cast<size_t>(n)] = l;
    total += l;
  }
  const long double scale = s.red == smax::reduction::mean ? 1.0L / denom : 1.0L;
  r.loss = total * scale;
  r.grad *= scale;
  return r;
}

ref_result ref_index(const MatL& z, const std::vector<std::int64_t>& y, const spec& s) {
  const Index C = z.cols();
  const long double eps = s.eps;
  long double denom = 0;
  for (size_t n = 0; n < y.size(); ++n) {
    if (y[n] != s.ignore) denom += weight_of(s, static_cast<Index>(y[n]));
  }
  return ref_from_coefficients(
      z, s,
      [&](Index n, Index c) {
        const Index yn = static_cast<Index>(y[static_cast<size_t>(n)]);
        return (c == yn ? (1 - eps) * weight_of(s, yn) : 0.0L) + eps / C * weight_of(s, c);
      },
      [&](Index n) { return y[static_cast<size_t>(n)] == s.ignore; }, denom);
}

ref_result ref_probability(const MatL& z, const MatL& q, const spec& s) {
  const Index C = z.cols();
  const long double eps = s.eps;
  return ref_from_coefficients(
      z, s, [&](Index n, Index c) { return weight_of(s, c) * ((1 - eps) * q(n, c) + eps / C); },
      [](Index) { return false; }, static_cast<long double>(z.rows()));
}

/// PyTorch's composition, literally as aten/src/ATen/native/LossNLL.cpp builds it for
/// class-index targets: nll_loss of log_softmax with its weighted-mean denominator, plus for
/// label smoothing eps/C times the (masked) smooth loss -sum_c w_c log p_c reduced with the
/// same denominator.
long double pytorch_index_loss(const MatL& z, const std::vector<std::int64_t>& y, const spec& s) {
  const Index N = z.rows(), C = z.cols();
  long double nll = 0, smooth = 0, wsum = 0;
  for (Index n = 0; n < N; ++n) {
    const std::int64_t yn = y[static_cast<size_t>(n)];
    if (yn == s.ignore) continue;
    const auto lp = ref_log_softmax(z, n, s.T);
    nll += -weight_of(s, static_cast<Index>(yn)) * lp[static_cast<size_t>(yn)];
    wsum += weight_of(s, static_cast<Index>(yn));
    for (Index c = 0; c < C; ++c) smooth += -weight_of(s, c) * lp[static_cast<size_t>(c)];
  }
  if (s.red == smax::reduction::mean) {
    nll /= wsum;
    smooth /= wsum;
  }
  if (s.eps == 0) return nll;
  return (1 - static_cast<long double>(s.eps)) * nll + static_cast<long double>(s.eps) / C * smooth;
}

template <typename T>
MatL to_long(const Mat<T>& m) {
  return m.template cast<long double>();
}

/// Calls smax in the orientation asked for (samples as rows, or the transpose colwise) and
/// returns loss and gradient with samples as rows.
template <typename T, typename Targets>
std::pair<T, Mat<T>> smax_with_grad(const Mat<T>& z, const Targets& targets, const spec& s,
                                    bool colwise) {
  options_for<T> of(s);
  if (!colwise) {
    auto r = smax::cross_entropy_with_grad(z, targets, smax::rowwise, of.o);
    return {r.loss, r.grad};
  }
  const Mat<T> zt = z.transpose();
  if constexpr (smax::detail::loss::is_probability_targets_v<Targets>) {
    const Mat<T> qt = targets.transpose();
    auto r = smax::cross_entropy_with_grad(zt, qt, smax::colwise, of.o);
    return {r.loss, r.grad.transpose()};
  } else {
    auto r = smax::cross_entropy_with_grad(zt, targets, smax::colwise, of.o);
    return {r.loss, r.grad.transpose()};
  }
}

/// Every option combination: reductions, smoothing 0 / 0.1 / 1, weights (one of them 0),
/// ignore_index default (some samples -100) or naming a real class, temperatures.
std::vector<spec> all_specs() {
  std::vector<spec> out;
  for (auto red : {smax::reduction::mean, smax::reduction::sum}) {
    for (double eps : {0.0, 0.1, 1.0}) {
      for (bool weighted : {false, true}) {
        for (std::int64_t ignore : {std::int64_t(-100), std::int64_t(1)}) {
          for (double T : {1.0, 0.5, 3.0}) {
            spec s;
            s.red = red;
            s.eps = eps;
            s.ignore = ignore;
            s.T = T;
            if (weighted) s.w = std::vector<double>{0.5, 2.0, 0.0, 1.5};
            out.push_back(s);
          }
        }
      }
    }
  }
  return out;
}

std::string describe(const spec& s) {
  return std::string("red=") + (s.red == smax::reduction::mean ? "mean" : "sum") +
         " eps=" + std::to_string(s.eps) + " weighted=" + (s.w.empty() ? "no" : "yes") +
         " ignore=" + std::to_string(s.ignore) + " T=" + std::to_string(s.T);
}

/// Targets of the 6-sample batches: with the default ignore_index one sample is -100; with
/// ignore_index = 1 the samples of class 1 are ignored instead.
std::vector<std::int64_t> labels_for(const spec& s) {
  if (s.ignore == -100) return {3, -100, 1, 0, 2, 1};
  return {3, 1, 1, 0, 2, 1};
}
const std::vector<std::int64_t> labels = {3, -100, 1, 0, 2, 1};

// ---------------------------------------------------------------------------------------
// Hand-checkable values

TYPED_TEST(CrossEntropy, HandComputedValues) {
  using T = TypeParam;
  const double r = tol<T>::rel * 4;
  Vec<T> z(3);
  z << 1, 2, 3;
  // -log softmax([1,2,3])_2 = log(e^-2 + e^-1 + 1) = log(1.50321472...) = 0.40760596444438...
  EXPECT_TRUE(close(smax::cross_entropy(z, 2), 0.407605964444380304L, r));
  // eps = 0.1: 0.9 * 0.4076... + 0.1/3 * (2.4076... + 1.4076... + 0.4076...) = 0.5076...
  smax::cross_entropy_options<T> o;
  o.label_smoothing = T(0.1);
  EXPECT_TRUE(close(smax::cross_entropy(z, 2, o), 0.507605964444380304L, r));
  // T = 2: logits [0.5, 1, 1.5]: log(e^-1 + e^-0.5 + 1) = 0.68026967064173...
  smax::cross_entropy_options<T> ot;
  ot.temperature = T(2);
  EXPECT_TRUE(close(smax::cross_entropy(z, 2, ot), 0.680269670641734576L, r));

  // Batch [[1,2,3], [0,0,0]], targets [2, 0], weights [1, 2, 3]:
  //   l = [3 * 0.40760596..., 1 * log 3], mean = (l0 + l1) / (w_2 + w_0) = 2.32143018.../4.
  Mat<T> zb(2, 3);
  zb << 1, 2, 3, 0, 0, 0;
  Vec<T> w(3);
  w << 1, 2, 3;
  const std::vector<int> y = {2, 0};
  smax::cross_entropy_options<T> ow;
  ow.weight = w;
  EXPECT_TRUE(close(smax::cross_entropy(zb, y, smax::rowwise, ow), 0.580357545500312651L, r));
  ow.reduction = smax::reduction::sum;
  EXPECT_TRUE(close(smax::cross_entropy(zb, y, smax::rowwise, ow), 2.32143018200125060L, r));
  // Weights and eps = 0.2, mean: PyTorch keeps the denominator sum w[y] = 4 for the smooth
  // term too: 0.8 * 2.3214.../4 + 0.2/3 * (sum_c w_c(-log p_0c) + 6 log 3)/4 = 0.68157452...
  ow.reduction = smax::reduction::mean;
  ow.label_smoothing = T(0.2);
  EXPECT_TRUE(close(smax::cross_entropy(zb, y, smax::rowwise, ow), 0.681574528378165787L, r));
  // Probability targets [[.25,.25,.5], [1,0,0]], same weights, eps = 0.2: the weights scale
  // each class term and the mean divides by N = 2, not by any weight.
  Mat<T> q(2, 3);
  q << 0.25, 0.25, 0.5, 1, 0, 0;
  EXPECT_TRUE(close(smax::cross_entropy(zb, q, smax::rowwise, ow), 1.64086726742301748L, r));
}

TYPED_TEST(CrossEntropy, GradientIsSoftmaxMinusOneHot) {
  using T = TypeParam;
  Vec<T> z(3);
  z << 1, 2, 3;
  const auto r = smax::cross_entropy_with_grad(z, 0);
  Vec<T> expected = smax::softmax(z);
  expected(0) -= 1;
  EXPECT_TRUE(all_close(r.grad, expected, tol<T>::rel * 4, 1e-3));
  EXPECT_NEAR(static_cast<double>(smax_test::loss::sum_of(r.grad)), 0.0, 10 * tol<T>::rel);
}

// ---------------------------------------------------------------------------------------
// Every option combination against PyTorch's composition and the closed-form gradient

TYPED_TEST(CrossEntropy, IndexTargetsMatchPyTorchForEveryCombination) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(6, 4, 11);
  const MatL zl = to_long(z);
  for (const spec& s : all_specs()) {
    for (bool colwise : {false, true}) {
      SCOPED_TRACE(describe(s) + (colwise ? " colwise" : " rowwise"));
      const std::vector<std::int64_t> labels = labels_for(s);
      const auto [loss, grad] = smax_with_grad(z, labels, s, colwise);
      const ref_result ref = ref_index(zl, labels, s);
      EXPECT_TRUE(close(loss, pytorch_index_loss(zl, labels, s), tol<T>::rel * 8));
      EXPECT_TRUE(close(loss, ref.loss, tol<T>::rel * 8));
      EXPECT_TRUE(all_close(grad, ref.grad, tol<T>::rel * 16, 1e-2));
      // Ignored samples: no gradient at all.
      for (Index n = 0; n < z.rows(); ++n) {
        if (labels[static_cast<size_t>(n)] == s.ignore) {
          EXPECT_TRUE((grad.row(n).array() == T(0)).all());
        }
      }
      // Per-sample losses (reduction none).
      options_for<T> of(s);
      const Vec<T> per = smax::cross_entropy_per_sample(z, labels, smax::rowwise, of.o);
      ASSERT_EQ(per.size(), z.rows());
      for (Index n = 0; n < z.rows(); ++n) {
        EXPECT_TRUE(close(per(n), ref.per_sample[static_cast<size_t>(n)], tol<T>::rel * 8));
      }
    }
  }
}

// rowwise on a column-major batch (Eigen's default layout) runs panels of samples side by
// side, one SIMD lane per sample: 16 packets wide with a gradient (64 to 256 samples), then
// 4 (16 to 64). 325 samples = a wide panel, a narrow one and a tail at every SIMD width.
TYPED_TEST(CrossEntropy, SamplePanelsMatchTheReferenceForEveryCombination) {
  using T = TypeParam;
  const Index N = 325;
  const Mat<T> z = smax_test::loss::random_matrix<T>(N, 4, 16, -6, 6);
  const MatL zl = to_long(z);
  for (const spec& s : all_specs()) {
    SCOPED_TRACE(describe(s));
    const std::vector<std::int64_t> base = labels_for(s);
    std::vector<std::int64_t> y;
    for (Index n = 0; n < N; ++n) y.push_back(base[static_cast<size_t>(n % 6)]);
    const ref_result ref = ref_index(zl, y, s);
    options_for<T> of(s);
    const auto r = smax::cross_entropy_with_grad(z, y, smax::rowwise, of.o);
    EXPECT_TRUE(close(r.loss, ref.loss, tol<T>::rel * 8));
    EXPECT_TRUE(all_close(r.grad, ref.grad, tol<T>::rel * 16, 1e-2));
    EXPECT_EQ(smax::cross_entropy(z, y, smax::rowwise, of.o), r.loss);
    // Short contiguous rows (row-major rowwise, column-major colwise) run the panels on a
    // transposed copy.
    using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const RowMajor zr = z;
    const auto rr = smax::cross_entropy_with_grad(zr, y, smax::rowwise, of.o);
    EXPECT_TRUE(close(rr.loss, ref.loss, tol<T>::rel * 8));
    EXPECT_TRUE(all_close(rr.grad, ref.grad, tol<T>::rel * 16, 1e-2));
    const Mat<T> zt = z.transpose();
    const auto rt = smax::cross_entropy_with_grad(zt, y, smax::colwise, of.o);
    EXPECT_EQ(rt.loss, rr.loss);
    EXPECT_TRUE(all_close(rt.grad.transpose(), rr.grad, 0.0, 0.0));
    RowMajor zr_inplace = zr;
    EXPECT_EQ(smax::cross_entropy_with_grad_into(zr_inplace, zr_inplace, y, smax::rowwise, of.o),
              rr.loss);
    EXPECT_TRUE(all_close(zr_inplace, rr.grad, 0.0, 0.0));
    Mat<T> inplace = z;
    EXPECT_EQ(smax::cross_entropy_with_grad_into(inplace, inplace, y, smax::rowwise, of.o), r.loss);
    EXPECT_TRUE(all_close(inplace, r.grad, 0.0, 0.0));
    const Vec<T> per = smax::cross_entropy_per_sample(z, y, smax::rowwise, of.o);
    for (Index n = 0; n < N; ++n) {
      EXPECT_TRUE(close(per(n), ref.per_sample[static_cast<size_t>(n)], tol<T>::rel * 8)) << n;
    }
    const Vec<T> up = Vec<T>::LinSpaced(N, T(-1), T(2));
    const Mat<T> gb = smax::cross_entropy_per_sample_backward(z, y, up, smax::rowwise, of.o);
    const ref_result ref_sum = ref_index(zl, y, [&] {
      spec t = s;
      t.red = smax::reduction::sum;
      return t;
    }());
    MatL expected = ref_sum.grad;
    for (Index n = 0; n < N; ++n) expected.row(n) *= static_cast<long double>(up(n));
    // Sum-reduction scale: entries are O(|up|) = O(1), and (A p - a) cancels near p = a.
    EXPECT_TRUE(all_close(gb, expected, tol<T>::rel * 16, 1.0));
  }
}

// Short contiguous rows reach the panels through register transposes (panel_tile_in /
// panel_tile_out), which read each row up to a whole number of 128-bit pieces: every class
// count, dense and padded rows, the last panel ending on the last sample (its loads would
// leave the input, so it copies entry by entry), ignored samples, smoothing and weights.
// Row-major rowwise must give, bit for bit, what the panels give reading the samples where
// they lie (rowwise on a column-major matrix), and write nothing between padded rows.
TYPED_TEST(CrossEntropy, ShortRowsThroughRegisterCopiesMatchDirectPanels) {
  using T = TypeParam;
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  for (const Index C : {1, 2, 3, 5, 8, 10, 13, 17, 31, 32}) {
    for (const Index N : {Index(192), Index(199)}) {
      const Mat<T> z = random_matrix<T>(N, C, 70 + unsigned(C), -8, 8);
      std::vector<std::int64_t> y(static_cast<std::size_t>(N));
      for (Index n = 0; n < N; ++n) y[std::size_t(n)] = n % 11 == 4 ? -100 : (n * 7 + 3) % C;
      const Vec<T> w = Vec<T>::LinSpaced(C, T(0.5), T(2));
      for (int variant = 0; variant < 2; ++variant) {
        smax::cross_entropy_options<T> o;
        if (variant == 1) {
          o.label_smoothing = T(0.1);
          o.weight = w;
        }
        SCOPED_TRACE(::testing::Message()
                     << C << " classes, " << N << " samples, variant " << variant);
        const auto direct = smax::cross_entropy_with_grad(z, y, smax::rowwise, o);
        const Vec<T> per = smax::cross_entropy_per_sample(z, y, smax::rowwise, o);
        for (const Index pad : {Index(0), Index(3)}) {
          const Index ld = C + pad;
          std::vector<T> in(static_cast<std::size_t>(N * ld), T(0));
          std::vector<T> out(in.size(), T(-7));
          Eigen::Map<RowMajor, 0, Stride> zr(in.data(), N, C, Stride(ld));
          Eigen::Map<RowMajor, 0, Stride> g(out.data(), N, C, Stride(ld));
          zr = z;
          EXPECT_EQ(smax::cross_entropy(zr, y, smax::rowwise, o), direct.loss) << "pad " << pad;
          EXPECT_EQ(smax::cross_entropy_with_grad_into(g, zr, y, smax::rowwise, o), direct.loss);
          EXPECT_TRUE(smax_test::bit_equal(direct.grad, Mat<T>(g))) << "pad " << pad;
          for (Index n = 0; n < N; ++n) {
            for (Index c = C; c < ld; ++c) ASSERT_EQ(out[std::size_t(n * ld + c)], T(-7));
          }
          const Vec<T> per_rows = smax::cross_entropy_per_sample(zr, y, smax::rowwise, o);
          EXPECT_TRUE(smax_test::bit_equal(per, per_rows)) << "pad " << pad;
        }
      }
    }
  }
}

// A panel's losses enter the batch total through pairwise_sum::add_all, which must leave
// exactly what one add per loss leaves: at every count before it (aligned or not to the
// panel), for losses of every magnitude and sign, and through reduction_total, whose
// double form rescales on huge losses.
TEST(PairwiseSum, AddAllMatchesOneAddAtATime) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> mant(-1, 1);
  std::uniform_int_distribution<int> expo(-30, 30);
  const auto value = [&] { return std::ldexp(mant(gen), expo(gen)); };
  // Counts before: aligned to 64 and to 256 (the subtree path, joining levels that are
  // set and unset) and not aligned (one add at a time).
  for (const Index before : {0, 1, 5, 63, 64, 65, 128, 192, 256, 320, 448, 960, 1984, 4032}) {
    std::vector<double> head(static_cast<std::size_t>(before)), v64(64), v256(256);
    for (double& h : head) h = value();
    for (double& x : v64) x = value();
    for (double& x : v256) x = value();
    smax::detail::pairwise_sum<double> one, all;
    for (const double h : head) {
      one.add(h);
      all.add(h);
    }
    for (const double x : v64) one.add(x);
    all.add_all<64>(v64.data());
    for (const double x : v256) one.add(x);
    all.add_all<256>(v256.data());
    const double a = one.total(), b = all.total();
    EXPECT_EQ(std::memcmp(&a, &b, sizeof a), 0) << before << " before: " << a << " vs " << b;
  }
  // reduction_total: its float form (losses summed in double) and its double form, whose
  // huge losses make it rescale (add_all then adds one at a time).
  const auto reduction_matches = [&](auto scalar, bool huge) {
    std::vector<double> v(64);
    for (double& x : v) x = value();
    if (huge) v[17] = 1e300;
    smax::detail::loss::reduction_total<decltype(scalar)> one, all;
    for (int twice = 0; twice < 2; ++twice) {
      for (const double x : v) one.add(x);
      all.template add_all<64>(v.data());
    }
    const double a = one.sum(), b = all.sum();
    return std::memcmp(&a, &b, sizeof a) == 0;
  };
  EXPECT_TRUE(reduction_matches(0.0f, false));
  EXPECT_TRUE(reduction_matches(0.0, false));
  EXPECT_TRUE(reduction_matches(0.0, true));
}

// Float rows longer than stored_exp_max_bytes with a gradient streamed to memory write the
// gradient in one pass, the exponentials taken again from the logits (without smoothing):
// the same bits as scaling stored exponentials, at the boundary and past it, for exponents
// in and below the normal range, scaled exponentials (T < 1), weights, an ignored sample, a
// subnormal temperature (whose scales overflow: the careful path), smoothing (not
// streamed), unaligned and in place.
TEST(CrossEntropyStreamedLongRows, MatchStoredExponentialsBitForBit) {
  using T = float;
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  constexpr Index boundary = smax::detail::stored_exp_max_bytes / Index(sizeof(T));
  for (const Index C : {boundary, boundary + 1, boundary + 37}) {
    for (const double spread : {3.0, 150.0}) {
      const RowMajor z = random_matrix<T>(2, C, 90 + unsigned(C % 7), -spread, spread);
      const Vec<T> w = Vec<T>::LinSpaced(C, T(0.25), T(4));
      for (int variant = 0; variant < 6; ++variant) {
        smax::cross_entropy_options<T> o;
        std::vector<std::int64_t> y = {C / 3, C - 1};
        if (variant == 1) o.temperature = T(0.5);
        if (variant == 2) o.temperature = T(3);
        if (variant == 3) {
          o.weight = w;
          y[1] = -100;
        }
        if (variant == 4) o.temperature = T(1e-39);
        if (variant == 5) o.label_smoothing = T(0.1);
        SCOPED_TRACE(::testing::Message()
                     << C << " classes, spread " << spread << ", variant " << variant);
        const auto ref = smax::cross_entropy_with_grad(z, y, smax::rowwise, o);  // not streamed
        const std::int64_t saved = smax::detail::stream_min_bytes();
        smax::detail::stream_min_bytes() = 0;
        for (const Index offset : {0, 3}) {
          std::vector<T> buf(static_cast<std::size_t>(2 * C + offset));
          Eigen::Map<RowMajor> g(buf.data() + offset, 2, C);
          const T loss = smax::cross_entropy_with_grad_into(g, z, y, smax::rowwise, o);
          EXPECT_TRUE(loss == ref.loss || (std::isnan(loss) && std::isnan(ref.loss))) << offset;
          EXPECT_TRUE(smax_test::bit_equal(ref.grad, RowMajor(g))) << "offset " << offset;
        }
        RowMajor inplace = z;
        const T loss = smax::cross_entropy_with_grad_into(inplace, inplace, y, smax::rowwise, o);
        EXPECT_TRUE(loss == ref.loss || (std::isnan(loss) && std::isnan(ref.loss)));
        EXPECT_TRUE(smax_test::bit_equal(ref.grad, inplace)) << "in place";
        smax::detail::stream_min_bytes() = saved;
      }
    }
  }
}

// Non-finite logits inside panels: the panel hands such samples back to the one-sample
// path, and an ignored sample's NaN poisons nothing.
TYPED_TEST(CrossEntropy, SamplePanelsKeepThePolicyForNonFiniteLogits) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  // Wide and narrow panels as above; C * narrow panel width fits the stack tile at every
  // SIMD width.
  const Index N = 325, C = 29;
  Mat<T> z = smax_test::loss::random_matrix<T>(N, C, 17, -6, 6);
  std::vector<int> y;
  for (Index n = 0; n < N; ++n) y.push_back(static_cast<int>((n * 7) % C));
  z(5, 0) = -inf;            // not the target (5 * 7 % 29 = 6)
  z(20, 3) = std::nanf("");  // an ignored sample
  y[20] = -100;
  z(100, 8) = inf;                          // one +inf: one-hot
  z(120, 1) = std::nanf("");                // NaN: that sample only
  z(70, static_cast<Index>(y[70])) = -inf;  // target -inf: loss +inf
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajor zr = z;
  for (T eps : {T(0), T(0.2)}) {
    smax::cross_entropy_options<T> o;
    o.label_smoothing = eps;
    smax::cross_entropy_options<T> one = o;  // one sample at a time: no panels
    one.reduction = smax::reduction::sum;
    Vec<T> per_one(N);
    Mat<T> g_one(N, C);
    for (Index n = 0; n < N; ++n) {
      if (y[static_cast<size_t>(n)] == -100) {
        per_one(n) = T(0);
        g_one.row(n).setZero();
        continue;
      }
      const auto r = smax::cross_entropy_with_grad(z.row(n), y[static_cast<size_t>(n)], one);
      per_one(n) = r.loss;
      g_one.row(n) = r.grad;
    }
    EXPECT_TRUE(std::isnan(per_one(120)));
    EXPECT_EQ(per_one(70), inf);
    const Vec<T> up = Vec<T>::Ones(N);
    for (bool row_major : {false, true}) {
      SCOPED_TRACE(row_major ? "row-major" : "column-major");
      const Vec<T> per = row_major ? smax::cross_entropy_per_sample(zr, y, smax::rowwise, o)
                                   : smax::cross_entropy_per_sample(z, y, smax::rowwise, o);
      const Mat<T> g =
          row_major ? Mat<T>(smax::cross_entropy_per_sample_backward(zr, y, up, smax::rowwise, o))
                    : smax::cross_entropy_per_sample_backward(z, y, up, smax::rowwise, o);
      EXPECT_TRUE(all_close(per, per_one, tol<T>::rel * 8));
      EXPECT_TRUE(all_close(g, g_one, tol<T>::rel * 16, 1.0));
      EXPECT_EQ(per(20), T(0));
      EXPECT_TRUE((g.row(20).array() == T(0)).all());
      EXPECT_EQ(g(5, 0), eps == T(0) ? T(0) : -eps / C);
    }
  }
}

// A valid but tiny (subnormal) temperature: (A p - a) / T overflows, and the gradient must
// be the infinities (or exact zeros) it rounds to, never 0 * inf = NaN (found by
// tests/fuzz). Both the one-sample path and the sample panels.
TYPED_TEST(CrossEntropy, TinyTemperatureGivesInfinitiesNotNaN) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  smax::cross_entropy_options<T> o;
  o.temperature = std::numeric_limits<T>::denorm_min() * T(64);
  Vec<T> z(3);
  z << T(0.6875), T(0), T(0.6875);
  const auto r = smax::cross_entropy_with_grad(z, 1, o);
  EXPECT_EQ(r.loss, inf);
  EXPECT_EQ(r.grad(0), inf);   // (0.5 - 0) / T
  EXPECT_EQ(r.grad(1), -inf);  // (0 - 1) / T
  EXPECT_EQ(r.grad(2), inf);
  const Mat<T> zb = smax_test::loss::random_matrix<T>(133, 7, 18);
  const std::vector<int> y(133, 2);
  for (const Mat<T>& g : {Mat<T>(smax::cross_entropy_with_grad(zb, y, smax::rowwise, o).grad),
                          Mat<T>(smax::cross_entropy_per_sample_backward(zb, y, Vec<T>::Ones(133),
                                                                         smax::rowwise, o))}) {
    for (Index i = 0; i < g.size(); ++i) EXPECT_FALSE(std::isnan(g(i))) << i;
  }
}

// With label smoothing every class carries a coefficient, and at a tiny T the term of a
// low logit, (max - x_c) / T, overflows T although eps / C brings it back: the loss is
// finite (1.3e34 for float below). It was +inf (found by fuzz_cross_entropy); the linear
// term is now divided by T once, in the accumulator type. Single sample (ce_sample) and a
// column-major batch (sample panels).
TYPED_TEST(CrossEntropy, SmoothingAtTinyTemperatureGivesAFiniteLoss) {
  using T = TypeParam;
  spec sp;
  sp.T = static_cast<double>(std::numeric_limits<T>::denorm_min() * T(192));
  sp.eps = std::is_same_v<T, float> ? 4.3e-10 : 1e-20;
  sp.red = smax::reduction::sum;
  options_for<T> of(sp);
  Mat<T> z = smax_test::loss::random_matrix<T>(37, 5, 29, -8, 8);
  z(0, 0) = T(7.9375);
  z(0, 1) = T(-8);
  std::vector<std::int64_t> y(37);  // the argmax: only the smoothing terms are huge
  for (Index n = 0; n < 37; ++n) z.row(n).maxCoeff(&y[static_cast<size_t>(n)]);
  const ref_result ref = ref_index(z.template cast<long double>(), y, sp);
  ASSERT_TRUE(std::isfinite(ref.loss));
  ASSERT_GT(ref.per_sample[0], 1e30L);
  const Vec<T> per = smax::cross_entropy_per_sample(z, y, smax::rowwise, of.o);
  for (Index n = 0; n < 37; ++n) {
    EXPECT_TRUE(close(per(n), ref.per_sample[static_cast<size_t>(n)], tol<T>::rel * 16)) << n;
  }
  EXPECT_TRUE(close(smax::cross_entropy(z, y, smax::rowwise, of.o), ref.loss, tol<T>::rel * 16));
  const Vec<T> z0 = z.row(0).transpose();
  EXPECT_TRUE(close(smax::cross_entropy(z0, y[0], of.o), ref.per_sample[0], tol<T>::rel * 16));
}

// Logits spread over more than the type's range: with label smoothing every class carries
// a coefficient, and max - x_c (here 1.25 MAX), or the block sum of the terms w_c (max -
// x_c) in T (3 x 0.75 MAX), overflows T although eps / C brings the loss back into range
// (0.047 MAX and 0.056 MAX, T = 1). Both were +inf (found by fuzz_cross_entropy: float,
// weighted smoothing, logits up to 7.5e29). Rows (ce_sample) and columns of a column-major
// batch (sample panels, which hand such samples to ce_sample).
TYPED_TEST(CrossEntropy, LogitsSpreadBeyondTheRangeGiveAFiniteLoss) {
  using T = TypeParam;
  const T big = std::numeric_limits<T>::max();
  spec sp;
  sp.eps = 0.1;
  sp.red = smax::reduction::mean;  // the sum of 37 such losses overflows
  for (const std::vector<T>& row : {std::vector<T>{big, -big / 4, 0, big / 2},
                                    std::vector<T>{big / 2, -big / 4, -big / 4, -big / 4}}) {
    for (const bool weighted : {false, true}) {
      sp.w = weighted ? std::vector<double>{0.5, 2, 1, 0.25} : std::vector<double>{};
      options_for<T> of(sp);
      Mat<T> z(37, 4);
      for (Index n = 0; n < 37; ++n) {
        for (Index c = 0; c < 4; ++c) z(n, c) = row[static_cast<size_t>((c + n) % 4)];
      }
      std::vector<std::int64_t> y(37);
      for (Index n = 0; n < 37; ++n) z.row(n).maxCoeff(&y[static_cast<size_t>(n)]);
      const ref_result ref = ref_index(z.template cast<long double>(), y, sp);
      ASSERT_TRUE(std::isfinite(ref.loss));
      const Vec<T> per = smax::cross_entropy_per_sample(z, y, smax::rowwise, of.o);
      const Mat<T> zt = z.transpose();  // samples side by side: the panels
      const Vec<T> per_t = smax::cross_entropy_per_sample(zt, y, smax::colwise, of.o);
      for (Index n = 0; n < 37; ++n) {
        const long double r = ref.per_sample[static_cast<size_t>(n)];
        EXPECT_TRUE(close(per(n), r, tol<T>::rel * 16)) << n << ": " << per(n) << " vs " << r;
        EXPECT_TRUE(close(per_t(n), r, tol<T>::rel * 16)) << n << ": " << per_t(n) << " vs " << r;
      }
      EXPECT_TRUE(
          close(smax::cross_entropy(z, y, smax::rowwise, of.o), ref.loss, tol<T>::rel * 16));
    }
  }
}

// A heavy class weight makes A p_c a normal number where p_c itself is below the subnormal
// range: float exp(-104) = 6.8e-46 times 3e8 is 2.0e-37 (double: exp(-750) times 1e20).
// The gradient was 0 at T = 1 (found by fuzz_cross_entropy); the exponentials are now
// scaled by 2^K there too. Rows and a column-major batch (panels).
TYPED_TEST(CrossEntropy, HeavyWeightsKeepGradientsOfUnderflowedProbabilities) {
  using T = TypeParam;
  const bool is_float = std::is_same_v<T, float>;
  spec sp;
  sp.red = smax::reduction::sum;
  sp.w = {is_float ? 3e8 : 1e20, is_float ? 3e8 : 1e20};
  for (const double temperature : {1.0, 2.0}) {
    sp.T = temperature;
    options_for<T> of(sp);
    Mat<T> z(37, 2);
    for (Index n = 0; n < 37; ++n) {
      z(n, 0) = T(0.25) * static_cast<T>(n % 3);
      z(n, 1) = static_cast<T>(temperature) * (is_float ? T(-104) : T(-750));
    }
    const std::vector<std::int64_t> y(37, 0);
    const ref_result ref = ref_index(z.template cast<long double>(), y, sp);
    ASSERT_GT(std::fabs(ref.grad(0, 1)), static_cast<long double>(std::numeric_limits<T>::min()));
    const Mat<T> g = smax::cross_entropy_with_grad(z, y, smax::rowwise, of.o).grad;
    const Mat<T> zt = z.transpose();
    const Mat<T> gt = smax::cross_entropy_with_grad(zt, y, smax::colwise, of.o).grad;
    for (Index n = 0; n < 37; ++n) {
      for (Index c = 0; c < 2; ++c) {
        // Class 0: A (p_0 - 1) cancels (the documented scale is A / T); class 1: A p_1 / T
        // relative to itself.
        const double floor = c == 0 ? sp.w[0] / temperature : 0.0;
        EXPECT_TRUE(close(g(n, c), ref.grad(n, c), tol<T>::rel * 16, floor)) << n << "," << c;
        EXPECT_TRUE(close(gt(c, n), ref.grad(n, c), tol<T>::rel * 16, floor)) << n << "," << c;
      }
    }
  }
}

// A zero probability target under the largest finite weight has coefficient 0, so its
// gradient is A p_c / T (0 here, where A = 0). The gradient was NaN below T = 1: the
// weight was multiplied by 1 / T before the target (found by fuzz_cross_entropy).
TYPED_TEST(CrossEntropy, ZeroTargetUnderHugeWeightHasNoNaNGradient) {
  using T = TypeParam;
  smax::cross_entropy_options<T> o;
  o.temperature = T(0.001);
  o.reduction = smax::reduction::sum;
  Vec<T> w(2);
  w << 0, std::numeric_limits<T>::max();
  o.weight = w;
  Mat<T> z(3, 2), q(3, 2);
  z << T(-7.625), T(-8), T(1), T(2), T(0.5), T(-0.5);
  q << T(0.5), T(0), T(1), T(0), T(0.25), T(0);
  const auto r = smax::cross_entropy_with_grad(z, q, smax::rowwise, o);
  EXPECT_EQ(r.loss, T(0));
  for (Index i = 0; i < r.grad.size(); ++i) EXPECT_EQ(r.grad(i), T(0)) << i;
}

// gscale / T overflows at a subnormal T (double: 1 / 4.9e-322), but (A p_c - a_c) / T can
// be an ordinary number: with label smoothing eps = 1000 denorm_min and T = 100 denorm_min
// the class the target does not name gets -eps / (2 T) = -5. It was -inf, and 0 * inf =
// NaN on the one-hot (+inf logit) path (found by fuzz_cross_entropy).
TYPED_TEST(CrossEntropy, SubnormalTemperatureKeepsFiniteGradientsFinite) {
  using T = TypeParam;
  smax::cross_entropy_options<T> o;
  o.temperature = std::numeric_limits<T>::denorm_min() * T(100);
  o.label_smoothing = std::numeric_limits<T>::denorm_min() * T(1000);
  const T inf = std::numeric_limits<T>::infinity();
  for (const T first : {T(0), inf}) {
    Vec<T> z(2);
    z << first, T(-7.9375);
    const auto r = smax::cross_entropy_with_grad(z, 0, o);
    EXPECT_TRUE(std::isfinite(r.grad(0))) << r.grad(0);  // 5 minus a cancellation
    EXPECT_NEAR(static_cast<double>(r.grad(1)), -5.0, 1e-5) << "z0 = " << first;
  }
}

// A probability target of -226 denorm_min at T = 11 denorm_min (found by
// fuzz_cross_entropy; tests/fuzz/corpus/fuzz_cross_entropy/subnormal-coefficient-unscaled-
// linear): (max - x_c) / T overflows, and the fallback formed a_c (max - x_c) = -226
// denorm_min * 15.3125 on the subnormal grid before dividing by T, a relative error of
// 1.1e-4 (double: loss -314.636 against -314.602; float the same way). a_c / T is normal:
// the coefficient is now divided by T first.
TYPED_TEST(CrossEntropy, SubnormalTargetAtSubnormalTemperatureKeepsItsDigits) {
  using T = TypeParam;
  const T dm = std::numeric_limits<T>::denorm_min();
  spec sp;
  sp.T = static_cast<double>(dm * T(11));
  sp.red = smax::reduction::sum;
  options_for<T> of(sp);
  Mat<T> z(3, 2), q(3, 2);
  z << T(7.8125), T(-7.5), T(-7.5), T(7.8125), T(1), T(0.5);
  q << T(0), dm * T(-226), dm * T(-100), T(0), T(0), dm * T(-3);
  const ref_result ref = ref_probability(to_long(z), to_long(q), sp);
  ASSERT_TRUE(close(ref.per_sample[0], -314.602272727272727L, 1e-15));
  const double rel = tol<T>::rel * 4;
  const Vec<T> per = smax::cross_entropy_per_sample(z, q, smax::rowwise, of.o);
  const Mat<T> zt = z.transpose(), qt = q.transpose();
  const Vec<T> per_t = smax::cross_entropy_per_sample(zt, qt, smax::colwise, of.o);
  for (Index n = 0; n < 3; ++n) {
    const long double r = ref.per_sample[static_cast<size_t>(n)];
    EXPECT_TRUE(close(per(n), r, rel, 0)) << n;
    EXPECT_TRUE(close(per_t(n), r, rel, 0)) << n;
    const Vec<T> zv = z.row(n).transpose(), qv = q.row(n).transpose();
    EXPECT_TRUE(close(smax::cross_entropy(zv, qv, of.o), r, rel, 0)) << n;
  }
  EXPECT_TRUE(close(smax::cross_entropy(z, q, smax::rowwise, of.o), ref.loss, rel, 0));
}

/// Logits whose probabilities are subnormal while p / T is normal (T a power of two <= 2^-20):
/// samples as rows, the maximum 0 at class n % 3, every other class at (x - max) / T in
/// [-96, -88] (float) or [-717, -709] (double), exact in T: p / T stays normal after a
/// mean over up to 150 samples.
template <typename T>
Mat<T> subnormal_probability_logits(Index rows, Index cols, T temperature) {
  const double lo = std::is_same_v<T, float> ? -96.0 : -717.0;
  const double hi = std::is_same_v<T, float> ? -88.0 : -709.0;
  Mat<T> z(rows, cols);
  for (Index n = 0; n < rows; ++n) {
    for (Index c = 0; c < cols; ++c) {
      const double frac = std::fmod(0.618033988749895 * static_cast<double>(n * cols + c + 1), 1.0);
      // 20 fractional bits at most: s * T stays exact.
      const double s = std::round((lo + (hi - lo) * frac) * 1024.0) / 1024.0;
      z(n, c) = c == n % 3 ? T(0) : static_cast<T>(s) * temperature;
    }
  }
  return z;
}

/// Gradient entries against the long double reference: relative to the entry itself where
/// the target coefficient is 0 (the p_c / T terms), to gscale / T at the target class
/// (p_y - 1 cancels), plus denorm_min (a subnormal result's own rounding).
template <typename T, typename G>
::testing::AssertionResult gradient_digits(const G& g, const MatL& ref,
                                           const std::vector<std::int64_t>& y, long double gscale,
                                           T temperature) {
  for (Index n = 0; n < ref.rows(); ++n) {
    for (Index c = 0; c < ref.cols(); ++c) {
      const bool target = c == y[static_cast<size_t>(n)];
      const double floor =
          target ? static_cast<double>(std::fabs(gscale) / static_cast<long double>(temperature))
                 : 0.0;
      const long double diff = static_cast<long double>(g(n, c)) - ref(n, c);
      const auto r = close(static_cast<long double>(g(n, c)), ref(n, c), tol<T>::rel, floor);
      if (!r && !(std::fabs(diff) <= std::numeric_limits<T>::denorm_min()))
        return ::testing::AssertionFailure() << "(" << n << ", " << c << "): " << r.message();
    }
  }
  return ::testing::AssertionSuccess();
}

// p_c = exp((x_c - max) / T) subnormal, p_c / T normal (T = 2^-20): the gradient used to
// round p_c on the subnormal grid and multiply by 1 / T afterwards, up to ~1e4 ULP off
// (docs/accuracy.md measured 447 / 488 ULP beyond the amplification); the exponentials are
// now computed scaled by an exact power of two. Every path: a vector, a strided vector, the
// sample panels (column-major rowwise: direct; row-major short rows: tiled), long row-major
// rows (one sample at a time), colwise, in place, each reduction, per-sample backward,
// class weights, probability targets.
TYPED_TEST(CrossEntropy, SubnormalProbabilitiesAtSmallTemperatureKeepTheirDigits) {
  using T = TypeParam;
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const T temperature = std::ldexp(T(1), -20);
  for (const Index C : {Index(7), Index(300)}) {
    const Index N = 133;
    SCOPED_TRACE("C = " + std::to_string(C));
    const Mat<T> z = subnormal_probability_logits<T>(N, C, temperature);
    const MatL zl = to_long(z);
    std::vector<std::int64_t> y;
    for (Index n = 0; n < N; ++n) y.push_back((n * 5 + 1) % C);
    for (bool weighted : {false, true}) {
      for (auto red : {smax::reduction::mean, smax::reduction::sum}) {
        spec sp;
        sp.T = static_cast<double>(temperature);
        sp.red = red;
        if (weighted) {
          for (Index c = 0; c < C; ++c) sp.w.push_back(0.25 + 0.5 * static_cast<double>(c % 5));
        }
        SCOPED_TRACE(describe(sp));
        options_for<T> of(sp);
        const ref_result ref = ref_index(zl, y, sp);
        long double denom = 0;
        for (Index n = 0; n < N; ++n)
          denom += weight_of(sp, static_cast<Index>(y[static_cast<size_t>(n)]));
        const long double gs = red == smax::reduction::mean ? 1.0L / denom : 1.0L;
        // Column-major rowwise: the direct panels.
        const auto r = smax::cross_entropy_with_grad(z, y, smax::rowwise, of.o);
        EXPECT_TRUE(gradient_digits(r.grad, ref.grad, y, gs, temperature));
        EXPECT_TRUE(close(r.loss, ref.loss, tol<T>::rel * 8));
        // Row-major rowwise: tiled panels (C = 7) or one sample at a time (C = 300).
        const RowMajor zr = z;
        const auto rr = smax::cross_entropy_with_grad(zr, y, smax::rowwise, of.o);
        EXPECT_TRUE(gradient_digits(rr.grad, ref.grad, y, gs, temperature));
        // Colwise on the transpose, and in place.
        Mat<T> zt = z.transpose();
        const auto rt = smax::cross_entropy_with_grad(zt, y, smax::colwise, of.o);
        EXPECT_TRUE(gradient_digits(Mat<T>(rt.grad.transpose()), ref.grad, y, gs, temperature));
        EXPECT_EQ(smax::cross_entropy_with_grad_into(zt, zt, y, smax::colwise, of.o), rt.loss);
        EXPECT_TRUE(all_close(zt, rt.grad, 0.0, 0.0));
        if (red == smax::reduction::sum) {
          // reduction none: the per-sample backward with upstream gradients.
          const Vec<T> up = Vec<T>::LinSpaced(N, T(0.5), T(2));
          const Mat<T> gb = smax::cross_entropy_per_sample_backward(z, y, up, smax::rowwise, of.o);
          MatL expected = ref.grad;
          for (Index n = 0; n < N; ++n) expected.row(n) *= static_cast<long double>(up(n));
          EXPECT_TRUE(gradient_digits(gb, expected, y, 2.0L, temperature));
        }
      }
    }
    // One sample: contiguous and strided vectors (a row of the column-major matrix).
    smax::cross_entropy_options<T> o;
    o.temperature = temperature;
    spec sp;
    sp.T = static_cast<double>(temperature);
    sp.red = smax::reduction::sum;
    const ref_result ref = ref_index(zl, y, sp);
    for (Index n = 0; n < 6; ++n) {
      const Vec<T> zv = z.row(n).transpose();
      const std::vector<std::int64_t> yn = {y[static_cast<size_t>(n)]};
      const MatL refn = ref.grad.row(n);
      const auto rv = smax::cross_entropy_with_grad(zv, yn[0], o);
      EXPECT_TRUE(gradient_digits(Mat<T>(rv.grad.transpose()), refn, yn, 1.0L, temperature)) << n;
      const auto rs = smax::cross_entropy_with_grad(z.row(n), yn[0], o);
      EXPECT_TRUE(gradient_digits(Mat<T>(rs.grad), refn, yn, 1.0L, temperature)) << n;
    }
    // Probability targets (one-hot: the same gradient).
    Mat<T> q = Mat<T>::Zero(N, C);
    for (Index n = 0; n < N; ++n) q(n, static_cast<Index>(y[static_cast<size_t>(n)])) = T(1);
    o.reduction = smax::reduction::sum;
    const auto rq = smax::cross_entropy_with_grad(z, q, smax::rowwise, o);
    EXPECT_TRUE(gradient_digits(rq.grad, ref.grad, y, 1.0L, temperature));
  }
}

TYPED_TEST(CrossEntropy, ProbabilityTargetsMatchReferenceForEveryCombination) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(5, 4, 12);
  const Mat<T> q = smax_test::loss::random_distributions<T>(5, 4, 13);
  for (spec s : all_specs()) {
    if (s.ignore >= 0) continue;  // ignore_index does not apply to probabilities
    for (bool colwise : {false, true}) {
      SCOPED_TRACE(describe(s) + (colwise ? " colwise" : " rowwise"));
      const auto [loss, grad] = smax_with_grad(z, q, s, colwise);
      const ref_result ref = ref_probability(to_long(z), to_long(q), s);
      EXPECT_TRUE(close(loss, ref.loss, tol<T>::rel * 8));
      EXPECT_TRUE(all_close(grad, ref.grad, tol<T>::rel * 16, 1e-2));
    }
  }
}

TYPED_TEST(CrossEntropy, OneHotProbabilitiesEqualIndexTargets) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(4, 5, 14);
  const std::vector<int> y = {4, 0, 2, 2};
  Mat<T> q = Mat<T>::Zero(4, 5);
  for (Index n = 0; n < 4; ++n) q(n, y[static_cast<size_t>(n)]) = 1;
  smax::cross_entropy_options<T> o;
  o.label_smoothing = T(0.3);
  o.reduction = smax::reduction::sum;
  Vec<T> w(5);
  w << 1, 2, 3, 4, 5;
  o.weight = w;
  // With weights the means differ (sum w[y] vs N); the sums agree.
  const auto a = smax::cross_entropy_with_grad(z, y, smax::rowwise, o);
  const auto b = smax::cross_entropy_with_grad(z, q, smax::rowwise, o);
  EXPECT_TRUE(close(a.loss, b.loss, tol<T>::rel * 8));
  EXPECT_TRUE(all_close(a.grad, b.grad, tol<T>::rel * 16, 1e-2));
}

// ---------------------------------------------------------------------------------------
// Finite differences (double), for every combination, both target kinds

TYPED_TEST(CrossEntropy, GradientsMatchFiniteDifferences) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(6, 4, 21);
  const Mat<T> q = smax_test::loss::random_distributions<T>(6, 4, 22);
  const Eigen::MatrixXd zd = z.template cast<double>();
  const Eigen::MatrixXd qd = q.template cast<double>();
  for (const spec& s : all_specs()) {
    SCOPED_TRACE(describe(s));
    const std::vector<std::int64_t> labels = labels_for(s);
    options_for<double> od(s);
    const auto f_index = [&](const Eigen::MatrixXd& x) {
      return smax::cross_entropy(x, labels, smax::rowwise, od.o);
    };
    const Eigen::MatrixXd fd = smax_test::loss::numeric_grad(f_index, zd);
    EXPECT_TRUE(all_close(smax_with_grad(z, labels, s, false).second, fd, tol<T>::fd, 1e-2));
    if (s.ignore < 0) {
      const auto f_prob = [&](const Eigen::MatrixXd& x) {
        return smax::cross_entropy(x, qd, smax::rowwise, od.o);
      };
      const Eigen::MatrixXd fdq = smax_test::loss::numeric_grad(f_prob, zd);
      EXPECT_TRUE(all_close(smax_with_grad(z, q, s, false).second, fdq, tol<T>::fd, 1e-2));
    }
  }
}

TYPED_TEST(CrossEntropy, PerSampleBackwardMatchesFiniteDifferences) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(6, 4, 23);
  Vec<T> up(6);
  up << 0.5, -1, 2, 0.25, 3, -0.75;
  spec s;
  s.eps = 0.15;
  s.w = std::vector<double>{1, 2, 0.5, 3};
  s.T = 1.7;
  options_for<T> of(s);
  const Mat<T> g = smax::cross_entropy_per_sample_backward(z, labels, up, smax::rowwise, of.o);
  options_for<double> od(s);
  const Eigen::VectorXd upd = up.template cast<double>();
  const auto f = [&](const Eigen::MatrixXd& x) {
    return smax_test::loss::dot_of(smax::cross_entropy_per_sample(x, labels, smax::rowwise, od.o),
                                   upd);
  };
  EXPECT_TRUE(
      all_close(g, smax_test::loss::numeric_grad(f, z.template cast<double>()), tol<T>::fd, 1e-2));
}

// ---------------------------------------------------------------------------------------
// The tiers agree; aliasing

TYPED_TEST(CrossEntropy, AllFormsAgree) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(6, 5, 31);
  const std::vector<long> y = {4, 0, -100, 2, 1, 3};
  Vec<T> w(5);
  w << 1, 0.5, 2, 1.5, 3;
  for (auto red : {smax::reduction::mean, smax::reduction::sum}) {
    smax::cross_entropy_options<T> o;
    o.reduction = red;
    o.label_smoothing = T(0.1);
    o.weight = w;
    o.temperature = T(1.3);
    const T loss = smax::cross_entropy(z, y, smax::rowwise, o);
    const auto r = smax::cross_entropy_with_grad(z, y, smax::rowwise, o);
    Mat<T> g(6, 5);
    const T loss_into = smax::cross_entropy_with_grad_into(g, z, y, smax::rowwise, o);
    EXPECT_EQ(loss, r.loss);
    EXPECT_EQ(loss, loss_into);
    EXPECT_TRUE(all_close(g, r.grad, 0.0, 0.0));
    // In place: the gradient overwrites the logits.
    Mat<T> inplace = z;
    const T loss_inplace =
        smax::cross_entropy_with_grad_into(inplace, inplace, y, smax::rowwise, o);
    EXPECT_EQ(loss, loss_inplace);
    EXPECT_TRUE(all_close(inplace, r.grad, 0.0, 0.0));
    // Per-sample losses and their backward pass reproduce the reduction.
    const Vec<T> per = smax::cross_entropy_per_sample(z, y, smax::rowwise, o);
    T denom = 0;
    for (long t : y) denom += t == -100 ? T(0) : w(t);
    const T scale = red == smax::reduction::mean ? T(1) / denom : T(1);
    EXPECT_TRUE(close(smax_test::loss::sum_of(per) * scale, loss, tol<T>::rel * 8));
    const Vec<T> up = Vec<T>::Constant(6, scale);
    const Mat<T> gb = smax::cross_entropy_per_sample_backward(z, y, up, smax::rowwise, o);
    EXPECT_TRUE(all_close(gb, r.grad, tol<T>::rel * 8, 1e-2));
    Vec<T> per_into(6);
    smax::cross_entropy_per_sample_into(per_into, z, y, smax::rowwise, o);
    EXPECT_TRUE(all_close(per_into, per, 0.0, 0.0));
    Mat<T> gb_into = z;
    smax::cross_entropy_per_sample_backward_into(gb_into, gb_into, y, up, smax::rowwise, o);
    EXPECT_TRUE(all_close(gb_into, gb, 0.0, 0.0));
  }
}

TYPED_TEST(CrossEntropy, ProbabilityTargetsAliasingTheGradientAreCopied) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(3, 4, 32);
  const Mat<T> q = smax_test::loss::random_distributions<T>(3, 4, 33);
  const auto expected = smax::cross_entropy_with_grad(z, q, smax::rowwise);
  Mat<T> buf = q;  // the gradient overwrites the targets
  const T loss = smax::cross_entropy_with_grad_into(buf, z, buf, smax::rowwise);
  EXPECT_EQ(loss, expected.loss);
  EXPECT_TRUE(all_close(buf, expected.grad, 0.0, 0.0));
}

TYPED_TEST(CrossEntropy, TemperatureIsLogitsOverT) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(4, 6, 34);
  const std::vector<int> y = {5, 1, 0, 3};
  smax::cross_entropy_options<T> o;
  o.temperature = T(4);
  const auto r = smax::cross_entropy_with_grad(z, y, smax::rowwise, o);
  const Mat<T> zs = z / T(4);
  const auto plain = smax::cross_entropy_with_grad(zs, y, smax::rowwise);
  EXPECT_TRUE(close(r.loss, plain.loss, tol<T>::rel * 8));
  // Chain rule: d/dz = (d/d(z/T)) / T.
  EXPECT_TRUE(all_close(r.grad, (plain.grad / T(4)).eval(), tol<T>::rel * 16, 1e-2));
}

// ---------------------------------------------------------------------------------------
// Input types

TYPED_TEST(CrossEntropy, AcceptsEveryTargetContainer) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(3, 4, 41);
  const T expected = smax::cross_entropy(z, std::vector<int>{3, 0, 2}, smax::rowwise);
  Eigen::VectorXi vi(3);
  vi << 3, 0, 2;
  Eigen::Array<long, Eigen::Dynamic, 1> al(3);
  al << 3, 0, 2;
  Eigen::Matrix<std::int64_t, 1, 3> row_vector;
  row_vector << 3, 0, 2;
  Eigen::Matrix<int, 3, 2> two_columns;
  two_columns << 9, 3, 9, 0, 9, 2;
  Eigen::Matrix<std::uint8_t, Eigen::Dynamic, 1> bytes(3);
  bytes << 3, 0, 2;
  const std::vector<long> vl = {3, 0, 2};
  const std::array<int, 3> arr = {3, 0, 2};
  const int carr[3] = {3, 0, 2};
  const int storage[6] = {3, -1, 0, -1, 2, -1};
  EXPECT_EQ(smax::cross_entropy(z, vi, smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(z, al, smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(z, row_vector, smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(z, two_columns.col(1), smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(z, bytes, smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(z, vl, smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(z, arr, smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(z, carr, smax::rowwise), expected);
  EXPECT_EQ(smax::cross_entropy(
                z, Eigen::Map<const Eigen::VectorXi, 0, Eigen::InnerStride<2>>(storage, 3),
                smax::rowwise),
            expected);
  EXPECT_EQ(smax::cross_entropy(z, (vi.array() + 0).matrix(), smax::rowwise), expected);
}

TYPED_TEST(CrossEntropy, AcceptsEveryLogitsType) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(3, 4, 42);
  const std::vector<int> y = {1, 3, 0};
  const auto ref = smax::cross_entropy_with_grad(z, y, smax::rowwise);
  const double r = tol<T>::rel * 8;

  const Eigen::Matrix<T, 3, 4> fixed = z;
  const auto rf = smax::cross_entropy_with_grad(fixed, y, smax::rowwise);
  static_assert(std::is_same_v<decltype(rf.grad), Eigen::Matrix<T, 3, 4>>);
  EXPECT_TRUE(close(rf.loss, ref.loss, r));
  EXPECT_TRUE(all_close(rf.grad, ref.grad, r, 1e-2));

  const Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = z.array();
  const auto ra = smax::cross_entropy_with_grad(row_major, y, smax::rowwise);
  static_assert(std::is_same_v<typename decltype(ra.grad)::Scalar, T>);
  EXPECT_TRUE(close(ra.loss, ref.loss, r));
  EXPECT_TRUE(all_close(ra.grad, ref.grad, r, 1e-2));

  Mat<T> big = Mat<T>::Zero(5, 7);
  big.block(1, 2, 3, 4) = z;
  EXPECT_TRUE(close(smax::cross_entropy(big.block(1, 2, 3, 4), y, smax::rowwise), ref.loss, r));
  Mat<T> gblock = Mat<T>::Constant(5, 7, T(42));
  smax::cross_entropy_with_grad_into(gblock.block(1, 2, 3, 4), big.block(1, 2, 3, 4), y,
                                     smax::rowwise);
  EXPECT_TRUE(all_close(gblock.block(1, 2, 3, 4), ref.grad, r, 1e-2));
  EXPECT_EQ(gblock(0, 0), T(42));

  const Eigen::Map<const Mat<T>> map(z.data(), 3, 4);
  EXPECT_TRUE(close(smax::cross_entropy(map, y, smax::rowwise), ref.loss, r));
  // An expression is evaluated once.
  const Mat<T> half = z / T(2);
  EXPECT_TRUE(close(smax::cross_entropy(z * T(0.5), y, smax::rowwise),
                    smax::cross_entropy(half, y, smax::rowwise), r));
  // Ref and a Matrix output that needs resizing.
  const Eigen::Ref<const Mat<T>> ref_arg(z);
  Mat<T> resized;
  EXPECT_TRUE(
      close(smax::cross_entropy_with_grad_into(resized, ref_arg, y, smax::rowwise), ref.loss, r));
  EXPECT_TRUE(all_close(resized, ref.grad, r, 1e-2));
}

TYPED_TEST(CrossEntropy, OneSampleForms) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(1, 5, 43);
  const Vec<T> col = z.transpose();
  const Eigen::Matrix<T, 1, Eigen::Dynamic> row = z;
  const auto batch = smax::cross_entropy_with_grad(z, std::vector<int>{2}, smax::rowwise);
  const auto a = smax::cross_entropy_with_grad(col, 2);
  const auto b = smax::cross_entropy_with_grad(row, std::array<int, 1>{2});
  EXPECT_EQ(a.loss, batch.loss);
  EXPECT_EQ(b.loss, batch.loss);
  EXPECT_TRUE(all_close(a.grad.transpose(), batch.grad, 0.0, 0.0));
  EXPECT_TRUE(all_close(b.grad, batch.grad, 0.0, 0.0));
  Vec<T> g(5);
  EXPECT_EQ(smax::cross_entropy_with_grad_into(g, col, 2), batch.loss);
  const Vec<T> q = smax::softmax(col);
  // Cross-entropy of a distribution with itself is its entropy; the gradient is 0.
  const auto self = smax::cross_entropy_with_grad(col, q);
  EXPECT_NEAR(static_cast<double>(smax_test::loss::max_abs(self.grad)), 0.0, 10 * tol<T>::rel);
}

// Weights are views: lvalues bind, temporaries that would dangle do not compile.
static_assert(std::is_constructible_v<smax::class_weights<float>, Eigen::VectorXf&>);
static_assert(std::is_constructible_v<smax::class_weights<float>, const std::vector<float>&>);
static_assert(!std::is_constructible_v<smax::class_weights<float>, Eigen::VectorXf&&>);
static_assert(!std::is_constructible_v<smax::class_weights<float>, std::vector<float>&&>);

TYPED_TEST(CrossEntropy, WeightsFromAnyStorage) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(4, 3, 44);
  const std::vector<int> y = {2, 0, 1, 2};
  Vec<T> w(3);
  w << 0.5, 2, 1.5;
  smax::cross_entropy_options<T> o;
  o.label_smoothing = T(0.1);
  o.weight = w;
  const T expected = smax::cross_entropy(z, y, smax::rowwise, o);
  const std::vector<T> wv = {T(0.5), T(2), T(1.5)};
  o.weight = wv;
  EXPECT_EQ(smax::cross_entropy(z, y, smax::rowwise, o), expected);
  const std::array<T, 3> wa = {T(0.5), T(2), T(1.5)};
  o.weight = wa;
  EXPECT_EQ(smax::cross_entropy(z, y, smax::rowwise, o), expected);
  Mat<T> table(2, 3);  // column-major: a row is strided
  table << 9, 9, 9, 0.5, 2, 1.5;
  o.weight = table.row(1);
  EXPECT_EQ(smax::cross_entropy(z, y, smax::rowwise, o), expected);
  o.weight = smax::class_weights<T>(wv.data(), 3);
  EXPECT_EQ(smax::cross_entropy(z, y, smax::rowwise, o), expected);
  o.weight = {};
  EXPECT_NE(smax::cross_entropy(z, y, smax::rowwise, o), expected);
}

// ---------------------------------------------------------------------------------------
// Numerical policy

TYPED_TEST(CrossEntropy, HugeLogitsDoNotOverflow) {
  using T = TypeParam;
  const T big = std::numeric_limits<T>::max();
  const double r = tol<T>::rel * 8;
  // Shift invariance at 1e30: same loss as [0, 1, 2].
  Vec<T> small(3), shifted(3);
  small << 0, 1, 2;
  shifted << T(1e30), T(1e30), T(1e30);
  EXPECT_EQ(smax::cross_entropy(shifted, 1), static_cast<T>(std::log(3.0L)));
  Vec<T> spread(3);
  spread << T(-1e30), T(0), T(1e30);
  auto r1 = smax::cross_entropy_with_grad(spread, 2);
  EXPECT_EQ(r1.loss, T(0));
  EXPECT_TRUE(all_close(r1.grad, Vec<T>::Zero(3), 0.0, 0.0));
  r1 = smax::cross_entropy_with_grad(spread, 0);
  EXPECT_TRUE(close(r1.loss, 2e30L, r, 1));
  Vec<T> g0(3);
  g0 << -1, 0, 1;
  EXPECT_TRUE(all_close(r1.grad, g0, 0.0, 0.0));
  // FLT_MAX / DBL_MAX: a spread of 2 * max still gives no NaN; a loss above max is +inf,
  // the correctly rounded value.
  Vec<T> extreme(3);
  extreme << big, -big, big / 2;
  auto r2 = smax::cross_entropy_with_grad(extreme, 0);
  EXPECT_EQ(r2.loss, T(0));
  EXPECT_TRUE(r2.grad.allFinite());
  r2 = smax::cross_entropy_with_grad(extreme, 2);
  EXPECT_TRUE(close(r2.loss, static_cast<long double>(big) / 2, r));
  r2 = smax::cross_entropy_with_grad(extreme, 1);
  EXPECT_EQ(r2.loss, std::numeric_limits<T>::infinity());
  EXPECT_TRUE(r2.grad.allFinite());
  // With temperature > 1 the spread is halved first: still finite.
  smax::cross_entropy_options<T> o;
  o.temperature = T(4);
  EXPECT_TRUE(close(smax::cross_entropy(extreme, 2, o), static_cast<long double>(big) / 8, r));
}

TYPED_TEST(CrossEntropy, InfiniteLogits) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  Vec<T> z(4);
  z << 1, -inf, 2, -inf;
  // -inf for classes that are not the target: probability 0, gradient 0.
  auto r = smax::cross_entropy_with_grad(z, 2);
  Vec<T> finite(2);
  finite << 1, 2;
  EXPECT_TRUE(close(r.loss, smax::cross_entropy(finite, 1), tol<T>::rel * 4));
  EXPECT_EQ(r.grad(1), T(0));
  EXPECT_EQ(r.grad(3), T(0));
  EXPECT_TRUE(r.grad.allFinite());
  // A target whose logit is -inf: +inf, not NaN; the gradient stays finite (-1 there).
  r = smax::cross_entropy_with_grad(z, 1);
  EXPECT_EQ(r.loss, inf);
  EXPECT_EQ(r.grad(1), T(-1));
  EXPECT_TRUE(r.grad.allFinite());
  // Label smoothing puts mass on the -inf classes: +inf, as PyTorch.
  smax::cross_entropy_options<T> o;
  o.label_smoothing = T(0.1);
  EXPECT_EQ(smax::cross_entropy(z, 2, o), inf);
  // ... unless that class weighs 0: a zero coefficient contributes 0.
  Vec<T> w(4);
  w << 1, 0, 1, 0;
  o.weight = w;
  EXPECT_TRUE(std::isfinite(smax::cross_entropy(z, 2, o)));
  // Probability targets with q = 0 on the -inf classes: finite.
  Vec<T> q(4);
  q << 0.5, 0, 0.5, 0;
  EXPECT_TRUE(std::isfinite(smax::cross_entropy(z, q)));
  // eps = 1: the target term has coefficient 0, so a -inf target logit adds nothing. (Sum:
  // the mean would divide by the target's weight, 0 here.)
  smax::cross_entropy_options<T> o1;
  o1.reduction = smax::reduction::sum;
  o1.label_smoothing = T(1);
  o1.weight = w;
  EXPECT_TRUE(std::isfinite(smax::cross_entropy(z, 1, o1)));
  // One +inf logit: one-hot on it.
  Vec<T> pinf(3);
  pinf << 0, inf, 1;
  r = smax::cross_entropy_with_grad(pinf, 1);
  EXPECT_EQ(r.loss, T(0));
  EXPECT_TRUE(all_close(r.grad, Vec<T>::Zero(3), 0.0, 0.0));
  r = smax::cross_entropy_with_grad(pinf, 0);
  EXPECT_EQ(r.loss, inf);
  Vec<T> g(3);
  g << -1, 1, 0;
  EXPECT_TRUE(all_close(r.grad, g, 0.0, 0.0));
  // Two +inf, NaN, or only -inf: NaN loss and gradient for that sample.
  Vec<T> two(3);
  two << inf, 0, inf;
  r = smax::cross_entropy_with_grad(two, 1);
  EXPECT_TRUE(std::isnan(r.loss));
  EXPECT_TRUE(r.grad.array().isNaN().all());
  Vec<T> nan_in(3);
  nan_in << 0, std::numeric_limits<T>::quiet_NaN(), 1;
  EXPECT_TRUE(std::isnan(smax::cross_entropy(nan_in, 0)));
  const Vec<T> all_neg = Vec<T>::Constant(3, -inf);
  EXPECT_TRUE(std::isnan(smax::cross_entropy(all_neg, 0)));
}

TYPED_TEST(CrossEntropy, IgnoredAndEmptyBatches) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(3, 4, 51);
  const std::vector<int> ignored = {-100, -100, -100};
  smax::cross_entropy_options<T> o;
  o.label_smoothing = T(0.2);
  // The mean of nothing is 0/0 = NaN; the gradient is still exactly 0.
  const auto r = smax::cross_entropy_with_grad(z, ignored, smax::rowwise, o);
  EXPECT_TRUE(std::isnan(r.loss));
  EXPECT_TRUE((r.grad.array() == T(0)).all());
  o.reduction = smax::reduction::sum;
  EXPECT_EQ(smax::cross_entropy(z, ignored, smax::rowwise, o), T(0));
  // An ignored sample's logits are never looked at.
  Mat<T> bad = z;
  bad.row(1).setConstant(std::numeric_limits<T>::quiet_NaN());
  const std::vector<int> y = {0, -100, 2};
  const auto rb = smax::cross_entropy_with_grad(bad, y, smax::rowwise, o);
  EXPECT_TRUE(std::isfinite(rb.loss));
  EXPECT_TRUE(rb.grad.allFinite());
  // Empty batch.
  const Mat<T> empty(0, 4);
  const std::vector<int> none;
  EXPECT_TRUE(std::isnan(smax::cross_entropy(empty, none, smax::rowwise)));
  EXPECT_EQ(smax::cross_entropy(empty, none, smax::rowwise, o), T(0));
  EXPECT_EQ(smax::cross_entropy_with_grad(empty, none, smax::rowwise).grad.size(), 0);
  // Weighted mean whose target weights sum to 0: 0/0 = NaN too.
  Vec<T> w(4);
  w << 0, 1, 1, 1;
  smax::cross_entropy_options<T> ow;
  ow.weight = w;
  EXPECT_TRUE(std::isnan(smax::cross_entropy(z, std::vector<int>{0, 0, 0}, smax::rowwise, ow)));
}

// ---------------------------------------------------------------------------------------
// Errors: message names function, argument, sample and value; outputs untouched

TYPED_TEST(CrossEntropy, BadArgumentsThrowAndLeaveOutputsUntouched) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(3, 4, 61);
  Mat<T> g = Mat<T>::Constant(3, 4, T(7));
  const auto untouched = [&] { return (g.array() == T(7)).all(); };
  const auto msg = [&](auto&& targets, const smax::cross_entropy_options<T>& o) {
    return error_of([&] { smax::cross_entropy_with_grad_into(g, z, targets, smax::rowwise, o); });
  };
  const smax::cross_entropy_options<T> plain;
  const auto has = [](const std::string& m, const std::string& part) {
    return m.find(part) != std::string::npos;
  };

  std::string m = msg(std::vector<int>{0, 4, 1}, plain);
  EXPECT_TRUE(has(m, "smax::cross_entropy_with_grad_into")) << m;
  EXPECT_TRUE(has(m, "'targets' is 4 at sample 1")) << m;
  EXPECT_TRUE(has(m, "[0, 4)")) << m;
  EXPECT_TRUE(untouched());
  m = msg(std::vector<int>{0, 1, -1}, plain);
  EXPECT_TRUE(has(m, "'targets' is -1 at sample 2")) << m;
  EXPECT_TRUE(has(m, "ignore_index (-100)")) << m;
  m = msg(std::vector<int>{0, 1}, plain);
  EXPECT_TRUE(has(m, "'targets' is of length 2")) << m;
  EXPECT_TRUE(untouched());

  const Mat<T> q_wrong(3, 5);
  m = msg(q_wrong, plain);
  EXPECT_TRUE(has(m, "'targets' is of shape 3x5")) << m;
  EXPECT_TRUE(has(m, "3x4")) << m;

  smax::cross_entropy_options<T> o;
  o.ignore_index = 0;
  const Mat<T> q = smax_test::loss::random_distributions<T>(3, 4, 62);
  m = msg(q, o);
  EXPECT_TRUE(has(m, "'options.ignore_index' is 0")) << m;
  o.ignore_index = -1;  // negative: inert, as in PyTorch
  EXPECT_EQ(msg(q, o), "");
  g.setConstant(T(7));

  Vec<T> w3(3);
  w3 << 1, 1, 1;
  o = plain;
  o.weight = w3;
  m = msg(std::vector<int>{0, 1, 2}, o);
  EXPECT_TRUE(has(m, "'options.weight' is of length 3")) << m;
  // An empty vector is not "no weights" (found by tests/fuzz).
  const std::vector<T> no_weights;
  o = plain;
  o.weight = no_weights;
  m = msg(std::vector<int>{0, 1, 2}, o);
  EXPECT_TRUE(has(m, "'options.weight' is of length 0")) << m;
  Vec<T> wneg(4);
  wneg << 1, 1, -2, 1;
  o.weight = wneg;
  m = msg(std::vector<int>{0, 1, 2}, o);
  EXPECT_TRUE(has(m, "'options.weight' is -2 at class 2")) << m;
  Vec<T> wnan(4);
  wnan << 1, std::numeric_limits<T>::quiet_NaN(), 1, 1;
  o.weight = wnan;
  m = msg(q, o);
  EXPECT_TRUE(has(m, "'options.weight' is nan at class 1")) << m;

  o = plain;
  for (T eps : {T(-0.1), T(1.5), std::numeric_limits<T>::quiet_NaN()}) {
    o.label_smoothing = eps;
    m = msg(std::vector<int>{0, 1, 2}, o);
    EXPECT_TRUE(has(m, "'options.label_smoothing' is")) << m;
    EXPECT_TRUE(has(m, "[0, 1]")) << m;
  }
  o = plain;
  for (T t :
       {T(0), T(-1), std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN()}) {
    o.temperature = t;
    m = msg(std::vector<int>{0, 1, 2}, o);
    EXPECT_TRUE(has(m, "'options.temperature' is")) << m;
  }
  o = plain;
  o.reduction = smax::reduction::none;
  m = msg(std::vector<int>{0, 1, 2}, o);
  EXPECT_TRUE(has(m, "smax::cross_entropy_per_sample")) << m;
  Mat<T> fixed_wrong = Mat<T>::Constant(3, 4, T(7));
  m = error_of([&] {
    smax::cross_entropy_with_grad_into(fixed_wrong.block(0, 0, 2, 4), z, std::vector<int>{0, 1, 2},
                                       smax::rowwise);
  });
  EXPECT_TRUE(has(m, "'out' is of shape 2x4")) << m;
  m = error_of([&] {
    smax::cross_entropy_per_sample_backward(z, std::vector<int>{0, 1, 2}, Vec<T>::Ones(2),
                                            smax::rowwise);
  });
  EXPECT_TRUE(has(m, "'dloss' is of length 2")) << m;
  EXPECT_TRUE(untouched());
  EXPECT_TRUE((fixed_wrong.array() == T(7)).all());
}

// ---------------------------------------------------------------------------------------
// nll_loss

TYPED_TEST(NllLoss, EqualsCrossEntropyOfLogSoftmax) {
  using T = TypeParam;
  const Mat<T> z = smax_test::loss::random_matrix<T>(6, 4, 71);
  const Mat<T> lp = smax::log_softmax(z, smax::rowwise);
  for (const spec& s : all_specs()) {
    if (s.eps != 0 || s.T != 1) continue;
    SCOPED_TRACE(describe(s));
    const std::vector<std::int64_t> labels = labels_for(s);
    options_for<T> of(s);
    smax::nll_loss_options<T> no;
    no.reduction = s.red;
    no.ignore_index = s.ignore;
    no.weight = of.o.weight;
    const T ce = smax::cross_entropy(z, labels, smax::rowwise, of.o);
    EXPECT_TRUE(close(smax::nll_loss(lp, labels, smax::rowwise, no), ce, tol<T>::rel * 8));
    const Vec<T> per = smax::nll_loss_per_sample(lp, labels, smax::rowwise, no);
    const Vec<T> per_ce = smax::cross_entropy_per_sample(z, labels, smax::rowwise, of.o);
    EXPECT_TRUE(all_close(per, per_ce, tol<T>::rel * 8));
    // Gradient: -w_y / denominator at the target, 0 elsewhere.
    const auto r = smax::nll_loss_with_grad(lp, labels, smax::rowwise, no);
    EXPECT_EQ(r.loss, smax::nll_loss(lp, labels, smax::rowwise, no));
    long double denom = 0;
    for (auto y : labels) denom += y == s.ignore ? 0.0L : weight_of(s, static_cast<Index>(y));
    for (Index n = 0; n < 6; ++n) {
      for (Index c = 0; c < 4; ++c) {
        const auto y = labels[static_cast<size_t>(n)];
        long double e = 0;
        if (y != s.ignore && c == y) {
          e = -weight_of(s, c) / (s.red == smax::reduction::mean ? denom : 1.0L);
        }
        EXPECT_TRUE(close(r.grad(n, c), e, tol<T>::rel * 4));
      }
    }
  }
}

TYPED_TEST(NllLoss, OneSampleAndErrors) {
  using T = TypeParam;
  Vec<T> lp(3);
  lp << std::log(T(0.2)), std::log(T(0.3)), std::log(T(0.5));
  EXPECT_TRUE(close(smax::nll_loss(lp, 1), -std::log(0.3L), tol<T>::rel * 4));
  const std::string m = error_of([&] { smax::nll_loss(lp, 3); });
  EXPECT_NE(m.find("smax::nll_loss: argument 'targets' is 3 at sample 0"), std::string::npos) << m;
  smax::nll_loss_options<T> o;
  o.reduction = smax::reduction::none;
  EXPECT_NE(error_of([&] { smax::nll_loss(lp, 1, o); }).find("smax::nll_loss_per_sample"),
            std::string::npos);
}

}  // namespace
