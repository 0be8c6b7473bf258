// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

#include "test_utils.hpp"  // first: silences a GCC 12 false positive before Eigen

#include <smax/sigmoid.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace {

using namespace smax_test::loss;  // close, all_close, tol, error_of, MatL, ...
using smax_test::Mat;
using smax_test::Vec;
using Index = Eigen::Index;

template <typename T>
class Sigmoid : public ::testing::Test {};
template <typename T>
class BinaryCrossEntropy : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Sigmoid, Scalars, smax_test::TypeNames);
TYPED_TEST_SUITE(BinaryCrossEntropy, Scalars, smax_test::TypeNames);

long double ref_sigmoid(long double x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}
long double ref_log_sigmoid(long double x) {
  return std::min(x, 0.0L) - std::log1p(std::exp(-std::fabs(x)));
}
long double ref_softplus(long double x) {
  return std::max(x, 0.0L) + std::log1p(std::exp(-std::fabs(x)));
}

/// Distance in units in the last place of T, with the subnormal spacing as the floor.
template <typename T>
double ulps(T actual, long double expected) {
  const T e = static_cast<T>(expected);
  if (std::isinf(e) || std::isinf(actual)) return actual == e ? 0 : 1e30;
  const long double spacing = std::max<long double>(
      std::fabs(static_cast<long double>(std::nextafter(e, std::numeric_limits<T>::infinity())) -
                e),
      std::numeric_limits<T>::denorm_min());
  return static_cast<double>(std::fabs(static_cast<long double>(actual) - expected) / spacing);
}

/// x from -range to range in many small steps, both signs, plus the awkward points.
template <typename T>
Vec<T> sweep() {
  const double range = std::is_same_v<T, float> ? 110 : 760;
  std::vector<T> v;
  for (double x = -range; x <= range; x += range / 4000) v.push_back(static_cast<T>(x));
  for (double x : {0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 17.0, -17.0, 36.7, -36.7, 88.7,
                   -88.7, -103.0, -103.9}) {
    v.push_back(static_cast<T>(x));
  }
  return Eigen::Map<const Vec<T>>(v.data(), static_cast<Index>(v.size()));
}

TYPED_TEST(Sigmoid, AccurateEverywhere) {
  using T = TypeParam;
  const Vec<T> x = sweep<T>();
  const Vec<T> s = smax::sigmoid(x);
  const Vec<T> ls = smax::log_sigmoid(x);
  double worst_s = 0, worst_ls = 0;
  for (Index i = 0; i < x.size(); ++i) {
    worst_s = std::max(worst_s, ulps(s(i), ref_sigmoid(x(i))));
    worst_ls = std::max(worst_ls, ulps(ls(i), ref_log_sigmoid(x(i))));
  }
  EXPECT_LE(worst_s, 4.0);
  EXPECT_LE(worst_ls, 4.0);
}

TYPED_TEST(Sigmoid, LimitsAndHandValues) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  const T big = std::numeric_limits<T>::max();
  Vec<T> x(7);
  x << -inf, -big, T(-1e30), T(0), T(1e30), big, inf;
  const Vec<T> s = smax::sigmoid(x);
  const Vec<T> ls = smax::log_sigmoid(x);
  Vec<T> es(7), els(7);
  es << 0, 0, 0, 0.5, 1, 1, 1;
  els << -inf, -big, T(-1e30), -std::log(T(2)), 0, 0, 0;
  EXPECT_TRUE(all_close(s, es, 0.0, 0.0));
  EXPECT_TRUE(all_close(ls, els, tol<T>::rel, 0));
  Vec<T> nan_in(1);
  nan_in << std::numeric_limits<T>::quiet_NaN();
  EXPECT_TRUE(std::isnan(smax::sigmoid(nan_in)(0)));
  EXPECT_TRUE(std::isnan(smax::log_sigmoid(nan_in)(0)));
  // The tails keep full relative accuracy:
  //   sigmoid(-100) = 1/(1+e^100) = 3.7200759760208360e-44 (a float subnormal, not 0),
  //   log_sigmoid(40) = -log1p(e^-40) = -4.2483542552915890e-18 (not 0).
  Vec<T> tails(2);
  tails << T(-100), T(40);
  EXPECT_LE(ulps(smax::sigmoid(tails)(0), 3.72007597602083596296e-44L), 1.0);
  EXPECT_LE(ulps(smax::log_sigmoid(tails)(1), -4.24835425529158898630e-18L), 2.0);
}

TYPED_TEST(Sigmoid, IntoFormsArraysAndExpressions) {
  using T = TypeParam;
  const Mat<T> x = smax_test::loss::random_matrix<T>(3, 5, 201, -20, 20);
  const Mat<T> s = smax::sigmoid(x);
  Mat<T> inplace = x;
  smax::sigmoid_into(inplace, inplace);
  EXPECT_TRUE(all_close(inplace, s, 0.0, 0.0));
  const Eigen::Array<T, 3, 5> fixed = x.array();
  const Eigen::Array<T, 3, 5> fs = smax::sigmoid(fixed);
  EXPECT_TRUE(all_close(fs, s, 0.0, 0.0));
  EXPECT_TRUE(all_close(smax::sigmoid(x * T(1)), s, 0.0, 0.0));
  Mat<T> ls = Mat<T>::Zero(3, 5);
  smax::log_sigmoid_into(ls, x);
  EXPECT_TRUE(all_close(ls, smax::log_sigmoid(x), 0.0, 0.0));
  // sigmoid(x) + sigmoid(-x) = 1 and log_sigmoid(x) - log_sigmoid(-x) = x.
  const Mat<T> sn = smax::sigmoid((-x).eval());
  EXPECT_TRUE(all_close((s + sn).eval(), Mat<T>::Ones(3, 5), 4 * tol<T>::rel));
  Mat<T> wrong = Mat<T>::Constant(2, 2, T(7));
  const std::string m = error_of([&] { smax::sigmoid_into(wrong.block(0, 0, 2, 2), x); });
  EXPECT_NE(m.find("smax::sigmoid_into: argument 'out' is of shape 2x2"), std::string::npos) << m;
  EXPECT_TRUE((wrong.array() == T(7)).all());
}

// ---------------------------------------------------------------------------------------
// binary_cross_entropy_with_logits

struct bce_spec {
  smax::reduction red = smax::reduction::mean;
  std::vector<double> pw;  // empty, one value, or one per class
  std::vector<double> w;
};

template <typename T>
struct bce_options_for {
  Vec<T> pw, w;
  smax::binary_cross_entropy_options<T> o;
  explicit bce_options_for(const bce_spec& s) {
    o.reduction = s.red;
    if (!s.pw.empty()) {
      pw =
          Eigen::Map<const Eigen::VectorXd>(s.pw.data(), static_cast<Index>(s.pw.size())).cast<T>();
      o.pos_weight = pw;
    }
    if (!s.w.empty()) {
      w = Eigen::Map<const Eigen::VectorXd>(s.w.data(), static_cast<Index>(s.w.size())).cast<T>();
      o.weight = w;
    }
  }
  bce_options_for(const bce_options_for&) = delete;
  bce_options_for& operator=(const bce_options_for&) = delete;
};

long double class_value(const std::vector<double>& v, Index c) {
  if (v.empty()) return 1;
  return v.size() == 1 ? v[0] : v[static_cast<size_t>(c)];
}

/// PyTorch's formula (Loss.cpp): l = w [(1 - y) x + (1 + (pw - 1) y) softplus(-x)],
/// gradient w [(pw y + 1 - y) sigmoid(x) - pw y]; mean divides by the number of entries.
/// Samples are rows; the class of an entry is its column.
std::pair<long double, MatL> ref_bce(const MatL& x, const MatL& y, const bce_spec& s) {
  MatL g(x.rows(), x.cols());
  long double total = 0;
  for (Index n = 0; n < x.rows(); ++n) {
    for (Index c = 0; c < x.cols(); ++c) {
      const long double pw = class_value(s.pw, c), w = class_value(s.w, c);
      const long double xv = x(n, c), yv = y(n, c);
      total += w * ((1 - yv) * xv + (1 + (pw - 1) * yv) * ref_softplus(-xv));
      g(n, c) = w * ((pw * yv + 1 - yv) * ref_sigmoid(xv) - pw * yv);
    }
  }
  const long double scale = s.red == smax::reduction::mean ? 1.0L / (x.rows() * x.cols()) : 1.0L;
  return {total * scale, g * scale};
}

std::vector<bce_spec> bce_specs() {
  std::vector<bce_spec> out;
  for (auto red : {smax::reduction::mean, smax::reduction::sum}) {
    for (int p = 0; p < 3; ++p) {
      for (int q = 0; q < 3; ++q) {
        bce_spec s;
        s.red = red;
        if (p == 1) s.pw = std::vector<double>{2.5};
        if (p == 2) s.pw = std::vector<double>{3, 0.5, 1, 0, 7};
        if (q == 1) s.w = std::vector<double>{0.25};
        if (q == 2) s.w = std::vector<double>{1, 2, 0, 0.5, 4};
        out.push_back(s);
      }
    }
  }
  return out;
}

TYPED_TEST(BinaryCrossEntropy, HandComputedValues) {
  using T = TypeParam;
  Vec<T> x(2), y(2), pw(1);
  x << 2, -1;
  y << 1, 0;
  pw << 3;
  // (softplus(-2) + softplus(-1)) / 2 = (0.126928 + 0.313262) / 2 = 0.22009484928059767
  EXPECT_TRUE(
      close(smax::binary_cross_entropy_with_logits(x, y), 0.220094849280597665L, tol<T>::rel * 4));
  // pos_weight 3 triples the positive term: (3 * 0.126928... + 0.313262...) / 2 = 0.34702286...
  smax::binary_cross_entropy_options<T> o;
  o.pos_weight = pw;
  EXPECT_TRUE(close(smax::binary_cross_entropy_with_logits(x, y, o), 0.347022860323570162L,
                    tol<T>::rel * 4));
  // Gradient without weights: sigmoid(x) - y, divided by the number of entries.
  const auto r = smax::binary_cross_entropy_with_logits_with_grad(x, y);
  Vec<T> g(2);
  g << static_cast<T>((ref_sigmoid(2) - 1) / 2), static_cast<T>(ref_sigmoid(-1) / 2);
  EXPECT_TRUE(all_close(r.grad, g, tol<T>::rel * 4, 1e-2));
}

// A finite loss whose factors overflow in T on the way: pos_weight y softplus(-x) with
// x = -max / 2 exceeds max, the weight brings it back (fuzz_sigmoid_bce: float
// x = -1.7e38, y = 0.85 gave inf against 1.22e37).
TYPED_TEST(BinaryCrossEntropy, OverflowingFactorsOfAFiniteLoss) {
  using T = TypeParam;
  using L = long double;
  Vec<T> x(1), y(1), pw(1), w(1);
  x << -std::numeric_limits<T>::max() / 2;
  y << T(0.85);
  pw << T(1e10);
  w << T(1e-11);
  smax::binary_cross_entropy_options<T> o;
  o.pos_weight = pw;
  o.weight = w;
  const L expected = L(w(0)) * (L(pw(0)) * L(y(0)) * -L(x(0)));  // softplus(x) = 0 in L too
  const T loss = smax::binary_cross_entropy_with_logits(x, y, o);
  EXPECT_TRUE(std::isfinite(loss)) << loss;
  EXPECT_TRUE(close(loss, expected, tol<T>::rel * 4)) << loss << " against " << expected;
}

TYPED_TEST(BinaryCrossEntropy, UnderflowingFactorsOfANormalLoss) {
  using T = TypeParam;
  using L = long double;
  // pw_c y below the normal range, then multiplied by softplus(-x) near the largest
  // finite value: the loss is normal (fuzz_sigmoid_bce: 0 came out for 1.3e-9). A subnormal
  // pw_c, and a normal pw_c whose product with y is subnormal or rounds to 0.
  const T tiny = std::numeric_limits<T>::min();
  const T denorm = std::numeric_limits<T>::denorm_min();
  for (const T pwc : {denorm, T(3) * denorm, tiny, tiny / T(64)}) {
    for (const T yv : {T(0.35), T(1) / T(3), T(1e-3)}) {
      Vec<T> x(2), y(2), pw(1);
      x << -std::numeric_limits<T>::max() / 2, -std::numeric_limits<T>::max();
      y << yv, yv;
      pw << pwc;
      smax::binary_cross_entropy_options<T> o;
      o.pos_weight = pw;
      o.reduction = smax::reduction::none;
      const Vec<T> per = smax::binary_cross_entropy_with_logits_per_element(x, y, o);
      for (Index i = 0; i < 2; ++i) {
        const L expected = L(pwc) * L(yv) * -L(x(i));  // softplus(x) = 0 in L too
        EXPECT_LE(std::fabs(L(per(i)) / expected - 1), L(tol<T>::rel) * 4)
            << "pw " << pwc << ", y " << yv << ", x " << x(i) << ": " << per(i) << " against "
            << expected;
      }
    }
  }
}

TYPED_TEST(BinaryCrossEntropy, MatchesPyTorchFormulaForEveryOption) {
  using T = TypeParam;
  const Mat<T> x = smax_test::loss::random_matrix<T>(4, 5, 202, -8, 8);
  Mat<T> y = smax_test::loss::random_matrix<T>(4, 5, 203, 0, 1);
  y(0, 0) = 0;
  y(1, 1) = 1;
  for (const bce_spec& s : bce_specs()) {
    bce_options_for<T> of(s);
    const auto [loss, grad] =
        ref_bce(x.template cast<long double>(), y.template cast<long double>(), s);
    const auto r = smax::binary_cross_entropy_with_logits_with_grad(x, y, smax::rowwise, of.o);
    EXPECT_TRUE(close(r.loss, loss, tol<T>::rel * 16, 1e-2));
    EXPECT_TRUE(all_close(r.grad, grad, tol<T>::rel * 16, 1e-2));
    // colwise on the transposes.
    const Mat<T> xt = x.transpose(), yt = y.transpose();
    const auto rc = smax::binary_cross_entropy_with_logits_with_grad(xt, yt, smax::colwise, of.o);
    EXPECT_TRUE(close(rc.loss, loss, tol<T>::rel * 16, 1e-2));
    EXPECT_TRUE(all_close(rc.grad.transpose(), grad, tol<T>::rel * 16, 1e-2));
    // The other tiers.
    EXPECT_EQ(smax::binary_cross_entropy_with_logits(x, y, smax::rowwise, of.o), r.loss);
    Mat<T> g(4, 5);
    EXPECT_EQ(smax::binary_cross_entropy_with_logits_with_grad_into(g, x, y, smax::rowwise, of.o),
              r.loss);
    EXPECT_TRUE(all_close(g, r.grad, 0.0, 0.0));
    Mat<T> inplace = x;
    EXPECT_EQ(smax::binary_cross_entropy_with_logits_with_grad_into(inplace, inplace, y,
                                                                    smax::rowwise, of.o),
              r.loss);
    EXPECT_TRUE(all_close(inplace, r.grad, 0.0, 0.0));
    const Mat<T> per =
        smax::binary_cross_entropy_with_logits_per_element(x, y, smax::rowwise, of.o);
    const T denom = s.red == smax::reduction::mean ? T(20) : T(1);
    EXPECT_TRUE(close(smax_test::loss::sum_of(per) / denom, r.loss, tol<T>::rel * 16, 1e-2));
    const Mat<T> gb = smax::binary_cross_entropy_with_logits_per_element_backward(
        x, y, Mat<T>::Constant(4, 5, T(1) / denom), smax::rowwise, of.o);
    EXPECT_TRUE(all_close(gb, r.grad, tol<T>::rel * 4, 1e-2));
  }
}

TYPED_TEST(BinaryCrossEntropy, GradientsMatchFiniteDifferences) {
  using T = TypeParam;
  const Mat<T> x = smax_test::loss::random_matrix<T>(3, 5, 204, -6, 6);
  const Mat<T> y = smax_test::loss::random_matrix<T>(3, 5, 205, 0, 1);
  const Eigen::MatrixXd yd = y.template cast<double>();
  for (const bce_spec& s : bce_specs()) {
    bce_options_for<T> of(s);
    bce_options_for<double> od(s);
    const auto f = [&](const Eigen::MatrixXd& v) {
      return smax::binary_cross_entropy_with_logits(v, yd, smax::rowwise, od.o);
    };
    const auto r = smax::binary_cross_entropy_with_logits_with_grad(x, y, smax::rowwise, of.o);
    EXPECT_TRUE(all_close(r.grad, smax_test::loss::numeric_grad(f, x.template cast<double>()),
                          tol<T>::fd, 1e-2));
  }
  // Per-element backward with an arbitrary upstream.
  const Mat<T> up = smax_test::loss::random_matrix<T>(3, 5, 206);
  bce_spec s;
  s.pw = std::vector<double>{2, 1, 0.5, 3, 1};
  bce_options_for<T> of(s);
  bce_options_for<double> od(s);
  const Mat<T> g =
      smax::binary_cross_entropy_with_logits_per_element_backward(x, y, up, smax::rowwise, of.o);
  const Eigen::MatrixXd upd = up.template cast<double>();
  const auto f = [&](const Eigen::MatrixXd& v) {
    return smax_test::loss::dot_of(
        smax::binary_cross_entropy_with_logits_per_element(v, yd, smax::rowwise, od.o), upd);
  };
  EXPECT_TRUE(
      all_close(g, smax_test::loss::numeric_grad(f, x.template cast<double>()), tol<T>::fd, 1e-2));
}

TYPED_TEST(BinaryCrossEntropy, AnyMagnitude) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  const T big = std::numeric_limits<T>::max();
  smax::binary_cross_entropy_options<T> o;
  o.reduction = smax::reduction::sum;
  const auto one = [&](T xv, T yv) {
    Vec<T> x(1), y(1);
    x << xv;
    y << yv;
    return smax::binary_cross_entropy_with_logits_with_grad(x, y, o);
  };
  // Confident and right: 0 (or the tiny exp(-|x|)), gradient 0.
  for (T xv : {T(1e30), big, inf}) {
    const auto r = one(xv, 1);
    EXPECT_EQ(r.loss, T(0));  // PyTorch: 0 * inf = NaN at x = +inf
    EXPECT_EQ(r.grad(0), T(0));
    const auto rn = one(-xv, 0);
    EXPECT_EQ(rn.loss, T(0));
    EXPECT_EQ(rn.grad(0), T(0));
  }
  // Confident and wrong: |x| (finite x), +inf at x = -+inf; gradient -1 / +1.
  EXPECT_EQ(one(T(-1e30), 1).loss, T(1e30));
  EXPECT_EQ(one(-big, 1).loss, big);
  EXPECT_EQ(one(-inf, 1).loss, inf);
  EXPECT_EQ(one(-inf, 1).grad(0), T(-1));
  EXPECT_EQ(one(inf, 0).loss, inf);
  EXPECT_EQ(one(inf, 0).grad(0), T(1));
  // A soft label at an infinite logit: +inf.
  EXPECT_EQ(one(inf, T(0.5)).loss, inf);
  // Moderate tail: softplus(-40) = 4.248354255291589e-18 keeps its relative accuracy.
  EXPECT_TRUE(close(one(T(40), 1).loss, 4.24835425529158898630e-18L, tol<T>::rel * 4, 0));
  // NaN propagates.
  EXPECT_TRUE(std::isnan(one(std::numeric_limits<T>::quiet_NaN(), 1).loss));
  // Empty: mean NaN, sum 0.
  const Mat<T> empty(0, 3);
  EXPECT_TRUE(std::isnan(smax::binary_cross_entropy_with_logits(empty, empty, smax::rowwise)));
  EXPECT_EQ(smax::binary_cross_entropy_with_logits(empty, empty, smax::rowwise, o), T(0));
}

TYPED_TEST(BinaryCrossEntropy, BadArgumentsThrowAndLeaveOutputsUntouched) {
  using T = TypeParam;
  const Mat<T> x = smax_test::loss::random_matrix<T>(3, 4, 207);
  const Mat<T> y = smax_test::loss::random_matrix<T>(3, 4, 208, 0, 1);
  Mat<T> g = Mat<T>::Constant(3, 4, T(7));
  const auto has = [](const std::string& m, const char* part) {
    return m.find(part) != std::string::npos;
  };
  const auto msg = [&](const smax::binary_cross_entropy_options<T>& o) {
    return error_of(
        [&] { smax::binary_cross_entropy_with_logits_with_grad_into(g, x, y, smax::rowwise, o); });
  };
  smax::binary_cross_entropy_options<T> o;
  Vec<T> three(3);
  three << 1, 1, 1;
  o.pos_weight = three;
  std::string m = msg(o);
  EXPECT_TRUE(has(m,
                  "smax::binary_cross_entropy_with_logits_with_grad_into: argument "
                  "'options.pos_weight' is of length 3"))
      << m;
  Vec<T> neg(4);
  neg << 1, 1, 1, -1;
  o = {};
  o.weight = neg;
  m = msg(o);
  EXPECT_TRUE(has(m, "'options.weight' is -1 at class 3")) << m;
  o = {};
  o.reduction = smax::reduction::none;
  m = msg(o);
  EXPECT_TRUE(has(m, "smax::binary_cross_entropy_with_logits_per_element")) << m;
  const Mat<T> y_wrong(4, 3);
  m = error_of(
      [&] { smax::binary_cross_entropy_with_logits_with_grad_into(g, x, y_wrong, smax::rowwise); });
  EXPECT_TRUE(has(m, "'targets' is of shape 4x3")) << m;
  m = error_of([&] {
    smax::binary_cross_entropy_with_logits_per_element_backward_into(g, x, y, y_wrong,
                                                                     smax::rowwise);
  });
  EXPECT_TRUE(has(m, "'dloss' is of shape 4x3")) << m;
  EXPECT_TRUE((g.array() == T(7)).all());
}

}  // namespace
