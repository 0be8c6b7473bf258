// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

#include "test_utils.hpp"  // first: silences a GCC 12 false positive before Eigen

#include <smax/distillation.hpp>

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
class Distillation : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Distillation, Scalars, smax_test::TypeNames);

std::vector<long double> log_softmax_row(const MatL& z, Index n, long double T) {
  long double m = -std::numeric_limits<long double>::infinity();
  for (Index c = 0; c < z.cols(); ++c) m = std::max(m, z(n, c) / T);
  long double s = 0;
  for (Index c = 0; c < z.cols(); ++c) s += std::exp(z(n, c) / T - m);
  std::vector<long double> out;
  for (Index c = 0; c < z.cols(); ++c) out.push_back(z(n, c) / T - m - std::log(s));
  return out;
}

struct ref_result {
  long double loss = 0;
  std::vector<long double> per_sample;
  MatL grad;
};

/// T^2 KL(softmax(t/T) || softmax(s/T)) per sample (rows), terms with q = 0 skipped;
/// gradient T (p - q) / (N for mean).
ref_result ref_distill(const MatL& s, const MatL& t, long double T, bool mean) {
  const Index N = s.rows(), C = s.cols();
  ref_result r;
  r.grad = MatL::Zero(N, C);
  long double total = 0;
  for (Index n = 0; n < N; ++n) {
    const auto lp = log_softmax_row(s, n, T);
    const auto lq = log_softmax_row(t, n, T);
    long double kl = 0;
    for (Index c = 0; c < C; ++c) {
      const long double q = std::exp(lq[static_cast<size_t>(c)]);
      if (q > 0) kl += q * (lq[static_cast<size_t>(c)] - lp[static_cast<size_t>(c)]);
      r.grad(n, c) = T * (std::exp(lp[static_cast<size_t>(c)]) - q);
    }
    r.per_sample.push_back(T * T * kl);
    total += T * T * kl;
  }
  const long double scale = mean ? 1.0L / N : 1.0L;
  r.loss = total * scale;
  r.grad *= scale;
  return r;
}

template <typename T>
smax::distillation_options<T> options(double temperature, smax::reduction red) {
  smax::distillation_options<T> o;
  o.temperature = static_cast<T>(temperature);
  o.reduction = red;
  return o;
}

TYPED_TEST(Distillation, HandComputedValue) {
  using T = TypeParam;
  Vec<T> s(3), t(3);
  s << 1, 2, 3;
  t << 3, 2, 1;
  // T = 2: q = softmax([1.5, 1, 0.5]), p = softmax([0.5, 1, 1.5]);
  // 4 * sum q (log q - log p) = 4 * sum q * ([1.5,1,0.5] - [0.5,1,1.5]) (normalisers cancel
  // here by symmetry) = 4 * (q_0 - q_2) = 4 * (0.50648 - 0.18632) = 1.28062667131922...
  EXPECT_TRUE(close(smax::distillation_loss(s, t, options<T>(2, smax::reduction::mean)),
                    1.28062667131922579552L, tol<T>::rel * 4));
  // Identical logits: KL 0 and gradient 0.
  const auto r = smax::distillation_loss_with_grad(s, s, options<T>(3, smax::reduction::mean));
  EXPECT_NEAR(static_cast<double>(r.loss), 0.0, 10 * tol<T>::rel);
  EXPECT_NEAR(static_cast<double>(smax_test::loss::max_abs(r.grad)), 0.0, 10 * tol<T>::rel);
}

TYPED_TEST(Distillation, MatchesReferenceForEveryOption) {
  using T = TypeParam;
  const Mat<T> s = smax_test::loss::random_matrix<T>(5, 6, 101, -4, 4);
  const Mat<T> t = smax_test::loss::random_matrix<T>(5, 6, 102, -4, 4);
  for (double temp : {1.0, 0.5, 2.0, 7.0}) {
    for (auto red : {smax::reduction::mean, smax::reduction::sum}) {
      SCOPED_TRACE("T=" + std::to_string(temp) + (red == smax::reduction::mean ? " mean" : " sum"));
      const auto o = options<T>(temp, red);
      const ref_result ref =
          ref_distill(s.template cast<long double>(), t.template cast<long double>(), temp,
                      red == smax::reduction::mean);
      const auto r = smax::distillation_loss_with_grad(s, t, smax::rowwise, o);
      EXPECT_TRUE(close(r.loss, ref.loss, tol<T>::rel * 16, 1e-2));
      EXPECT_TRUE(all_close(r.grad, ref.grad, tol<T>::rel * 16, 1e-2));
      // colwise on the transposes gives the transposed gradient.
      const Mat<T> st = s.transpose(), tt = t.transpose();
      const auto rc = smax::distillation_loss_with_grad(st, tt, smax::colwise, o);
      EXPECT_TRUE(close(rc.loss, ref.loss, tol<T>::rel * 16, 1e-2));
      EXPECT_TRUE(all_close(rc.grad.transpose(), ref.grad, tol<T>::rel * 16, 1e-2));
      const Vec<T> per = smax::distillation_loss_per_sample(s, t, smax::rowwise, o);
      for (Index n = 0; n < 5; ++n) {
        EXPECT_TRUE(close(per(n), ref.per_sample[static_cast<size_t>(n)], tol<T>::rel * 16, 1e-2));
      }
    }
  }
}

// T^2 KL is finite where log p alone overflows: a subnormal T, or logits near the top of
// the range at T < 1. Both gave +inf (found by fuzz_distillation); the kernel now works on
// T log p below T = 1.
TYPED_TEST(Distillation, TinyTemperaturesAndHugeLogitsStayFinite) {
  using T = TypeParam;
  const T max = std::numeric_limits<T>::max();
  const T huge = max / 32;  // 1e37 (float), 5e306 (double)
  struct Case {
    T temperature;
    std::vector<T> s, t;
  };
  const std::vector<Case> cases = {
      // Subnormal T: q and p are one-hot on different classes, loss 2 T, gradient +-T.
      {std::numeric_limits<T>::denorm_min() * 4096, {0, 3, 1, -2}, {1, T(0.5), 2, 0}},
      {std::numeric_limits<T>::denorm_min() * 4096, {0, 1, 3, -2}, {1, T(0.5), 2, 0}},
      {T(0.027), {huge, -huge, 0}, {-huge, huge, huge / 2}},
      {T(0.5), {huge, -huge, 0}, {-huge, huge, huge / 2}},
      {T(1e-30), {1, 2, T(2.5)}, {T(2.5), 2, 1}},
      // Student logits spread over more than the type's range: x - max (1.25 MAX) overflows
      // T although T^2 KL is finite (0.75 MAX T at T <= 1). It was +inf (found by
      // fuzz_distillation: float, 3.4e38 against -1.5e31, T = 7e-4).
      {T(7e-4), {max, -max / 4, 0}, {0, 0, 0}},
      {T(0.5), {max, -max / 4, 0}, {1, 2, 3}},
      {T(1), {max, -max / 4, 0, T(-7.5)}, {0, 0, 0, T(0.25)}},
      {T(1), {max, -max / 4, -max / 4, -max / 4}, {0, 0, 0, 0}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("T=" + std::to_string(static_cast<double>(c.temperature)));
    const Index C = static_cast<Index>(c.s.size());
    Mat<T> s(1, C), t(1, C);
    for (Index k = 0; k < C; ++k) {
      s(0, k) = c.s[static_cast<size_t>(k)];
      t(0, k) = c.t[static_cast<size_t>(k)];
    }
    const auto o = options<T>(static_cast<double>(c.temperature), smax::reduction::sum);
    const ref_result ref = ref_distill(s.template cast<long double>(),
                                       t.template cast<long double>(), c.temperature, false);
    ASSERT_TRUE(std::isfinite(ref.loss));
    const auto r = smax::distillation_loss_with_grad(s, t, smax::rowwise, o);
    EXPECT_TRUE(std::isfinite(r.loss)) << r.loss;
    // The rounding of (z - max) and of T log s is relative to the logits: |z| eps / T
    // in log p, times T^2: absolute |z| eps T, plus the subnormal grid.
    const long double zmax = std::max(s.cwiseAbs().maxCoeff(), t.cwiseAbs().maxCoeff());
    const long double abs_tol = 8 * zmax * c.temperature * std::numeric_limits<T>::epsilon() +
                                4 * static_cast<long double>(std::numeric_limits<T>::denorm_min());
    EXPECT_LE(std::fabs(r.loss - ref.loss), abs_tol) << r.loss << " vs " << ref.loss;
    for (Index k = 0; k < C; ++k) {
      EXPECT_TRUE(std::isfinite(r.grad(0, k)));
      EXPECT_LE(std::fabs(r.grad(0, k) - ref.grad(0, k)), abs_tol + 4 * c.temperature * tol<T>::rel)
          << k << ": " << r.grad(0, k) << " vs " << ref.grad(0, k);
    }
    const Vec<T> per = smax::distillation_loss_per_sample(s, t, smax::rowwise, o);
    EXPECT_EQ(per(0), r.loss);
  }
}

// The mean of 37 losses of about 0.37 MAX each: their sum passes double's range (the batch
// total used to overflow to +inf), their mean does not.
TYPED_TEST(Distillation, MeanOfHugeLossesStaysFinite) {
  using T = TypeParam;
  const T max = std::numeric_limits<T>::max();
  Mat<T> s(37, 3), t(37, 3);
  for (Index n = 0; n < 37; ++n) {
    s.row(n) << max, -max / 4, T(n % 5);
    t.row(n) << 0, T(0.125) * T(n % 3), 0;
  }
  const auto o = options<T>(0.5, smax::reduction::mean);
  const ref_result ref =
      ref_distill(s.template cast<long double>(), t.template cast<long double>(), 0.5L, true);
  ASSERT_TRUE(std::isfinite(ref.loss));
  ASSERT_GT(ref.loss * 37, static_cast<long double>(max));
  EXPECT_TRUE(close(smax::distillation_loss(s, t, smax::rowwise, o), ref.loss, tol<T>::rel * 16));
}

TYPED_TEST(Distillation, GradientIsTTimesPMinusQ) {
  using T = TypeParam;
  const Mat<T> s = smax_test::loss::random_matrix<T>(4, 5, 103);
  const Mat<T> t = smax_test::loss::random_matrix<T>(4, 5, 104);
  const T temp = T(3);
  const auto r =
      smax::distillation_loss_with_grad(s, t, smax::rowwise, options<T>(3, smax::reduction::sum));
  const Mat<T> p = smax::softmax(s, smax::rowwise, temp);
  const Mat<T> q = smax::softmax(t, smax::rowwise, temp);
  EXPECT_TRUE(all_close(r.grad, (temp * (p - q)).eval(), tol<T>::rel * 16, 1e-2));
  // The T^2 factor: the same loss is T^2 times cross-entropy(student/T, q) minus entropy(q).
  smax::cross_entropy_options<T> co;
  co.temperature = temp;
  co.reduction = smax::reduction::sum;
  const T ce = smax::cross_entropy(s, q, smax::rowwise, co);
  const T entropy = smax::cross_entropy(t, q, smax::rowwise, co);
  EXPECT_TRUE(close(r.loss, temp * temp * (ce - entropy), tol<T>::rel * 64, 1));
}

TYPED_TEST(Distillation, GradientsMatchFiniteDifferences) {
  using T = TypeParam;
  const Mat<T> s = smax_test::loss::random_matrix<T>(4, 5, 105);
  const Mat<T> t = smax_test::loss::random_matrix<T>(4, 5, 106);
  const Eigen::MatrixXd td = t.template cast<double>();
  for (double temp : {1.0, 0.5, 4.0}) {
    for (auto red : {smax::reduction::mean, smax::reduction::sum}) {
      const auto od = options<double>(temp, red);
      const auto f = [&](const Eigen::MatrixXd& x) {
        return smax::distillation_loss(x, td, smax::rowwise, od);
      };
      const auto r = smax::distillation_loss_with_grad(s, t, smax::rowwise, options<T>(temp, red));
      EXPECT_TRUE(all_close(r.grad, smax_test::loss::numeric_grad(f, s.template cast<double>()),
                            tol<T>::fd, 1e-2))
          << "T=" << temp;
    }
  }
  // Per-sample backward: d/ds sum_n u_n l_n.
  Vec<T> up(4);
  up << 1, -2, 0.5, 3;
  const auto o = options<T>(2, smax::reduction::mean);
  const Mat<T> g = smax::distillation_loss_per_sample_backward(s, t, up, smax::rowwise, o);
  const Eigen::VectorXd upd = up.template cast<double>();
  const auto od = options<double>(2, smax::reduction::mean);
  const auto f = [&](const Eigen::MatrixXd& x) {
    return smax_test::loss::dot_of(smax::distillation_loss_per_sample(x, td, smax::rowwise, od),
                                   upd);
  };
  EXPECT_TRUE(
      all_close(g, smax_test::loss::numeric_grad(f, s.template cast<double>()), tol<T>::fd, 1e-2));
}

TYPED_TEST(Distillation, FormsAgreeAndWorkInPlace) {
  using T = TypeParam;
  const Mat<T> s = smax_test::loss::random_matrix<T>(4, 7, 107);
  const Mat<T> t = smax_test::loss::random_matrix<T>(4, 7, 108);
  const auto o = options<T>(2.5, smax::reduction::mean);
  const auto r = smax::distillation_loss_with_grad(s, t, smax::rowwise, o);
  EXPECT_EQ(smax::distillation_loss(s, t, smax::rowwise, o), r.loss);
  Mat<T> g(4, 7);
  EXPECT_EQ(smax::distillation_loss_with_grad_into(g, s, t, smax::rowwise, o), r.loss);
  EXPECT_TRUE(all_close(g, r.grad, 0.0, 0.0));
  Mat<T> inplace = s;
  EXPECT_EQ(smax::distillation_loss_with_grad_into(inplace, inplace, t, smax::rowwise, o), r.loss);
  EXPECT_TRUE(all_close(inplace, r.grad, 0.0, 0.0));
  Mat<T> teacher_slot = t;
  EXPECT_EQ(smax::distillation_loss_with_grad_into(teacher_slot, s, teacher_slot, smax::rowwise, o),
            r.loss);
  EXPECT_TRUE(all_close(teacher_slot, r.grad, 0.0, 0.0));
  const Vec<T> per = smax::distillation_loss_per_sample(s, t, smax::rowwise, o);
  EXPECT_TRUE(close(smax_test::loss::sum_of(per) / 4, r.loss, tol<T>::rel * 8));
  const Mat<T> gb = smax::distillation_loss_per_sample_backward(s, t, Vec<T>::Constant(4, T(0.25)),
                                                                smax::rowwise, o);
  EXPECT_TRUE(all_close(gb, r.grad, tol<T>::rel * 4, 1e-2));
  Mat<T> gb_into = Mat<T>::Zero(4, 7);
  smax::distillation_loss_per_sample_backward_into(gb_into, s, t, Vec<T>::Constant(4, T(0.25)),
                                                   smax::rowwise, o);
  EXPECT_TRUE(all_close(gb_into, gb, 0.0, 0.0));
  // One sample, no axis; a row-major Array and an expression.
  const Vec<T> s0 = s.row(0).transpose(), t0 = t.row(0).transpose();
  const auto r0 = smax::distillation_loss_with_grad(s0, t0, o);
  EXPECT_TRUE(close(r0.loss, per(0), tol<T>::rel * 4));
  Vec<T> g0(7);
  EXPECT_EQ(smax::distillation_loss_with_grad_into(g0, s0, t0, o), r0.loss);
  const Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> sa = s.array();
  EXPECT_TRUE(
      close(smax::distillation_loss(sa, t.array(), smax::rowwise, o), r.loss, tol<T>::rel * 4));
  EXPECT_TRUE(
      close(smax::distillation_loss(s * T(1), t, smax::rowwise, o), r.loss, tol<T>::rel * 4));
}

TYPED_TEST(Distillation, NumericalPolicy) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  const T big = std::numeric_limits<T>::max();
  const auto o = options<T>(2, smax::reduction::sum);
  // A teacher probability of 0 (logit -inf) contributes 0: no log(0), no 0 * inf.
  Vec<T> s(4), t(4);
  s << 0.5, -1, 2, 0;
  t << 1, -inf, 0, -inf;
  const auto r = smax::distillation_loss_with_grad(s, t, o);
  ASSERT_TRUE(std::isfinite(r.loss));
  EXPECT_TRUE(r.grad.allFinite());
  const ref_result ref = ref_distill(s.transpose().template cast<long double>(),
                                     t.transpose().template cast<long double>(), 2, false);
  EXPECT_TRUE(close(r.loss, ref.loss, tol<T>::rel * 16, 1e-2));
  EXPECT_TRUE(all_close(r.grad.transpose(), ref.grad, tol<T>::rel * 16, 1e-2));
  // The student gives -inf where the teacher has mass: +inf, gradient finite.
  Vec<T> s2 = s;
  s2(0) = -inf;
  const auto r2 = smax::distillation_loss_with_grad(s2, t, o);
  EXPECT_EQ(r2.loss, inf);
  EXPECT_TRUE(r2.grad.allFinite());
  // Huge logits on both sides: no overflow; identical huge logits give 0.
  Vec<T> h(3), ht(3);
  h << big, -big, big / 2;
  ht << big / 2, big, -big;
  const auto rh = smax::distillation_loss_with_grad(h, ht, o);
  EXPECT_FALSE(std::isnan(rh.loss));
  EXPECT_TRUE(rh.grad.allFinite());
  EXPECT_EQ(smax::distillation_loss(h, h, o), T(0));
  Vec<T> e30(3);
  e30 << T(1e30), T(1e30) + T(1e24), T(1e30) - T(1e24);
  EXPECT_TRUE(std::isfinite(smax::distillation_loss(e30, h, o)));
  // One +inf on each side at the same class: both one-hot, KL 0.
  Vec<T> pinf(3);
  pinf << 0, inf, 1;
  EXPECT_EQ(smax::distillation_loss(pinf, pinf, o), T(0));
  // NaN: NaN.
  Vec<T> nan_in = s;
  nan_in(2) = std::numeric_limits<T>::quiet_NaN();
  const auto rn = smax::distillation_loss_with_grad(nan_in, t, o);
  EXPECT_TRUE(std::isnan(rn.loss));
  EXPECT_TRUE(rn.grad.array().isNaN().all());
  // Empty batch: mean NaN, sum 0.
  const Mat<T> empty(0, 3);
  EXPECT_TRUE(std::isnan(smax::distillation_loss(empty, empty, smax::rowwise)));
  EXPECT_EQ(smax::distillation_loss(empty, empty, smax::rowwise, o), T(0));
}

TYPED_TEST(Distillation, BadArgumentsThrowAndLeaveOutputsUntouched) {
  using T = TypeParam;
  const Mat<T> s = smax_test::loss::random_matrix<T>(3, 4, 109);
  Mat<T> g = Mat<T>::Constant(3, 4, T(7));
  const auto has = [](const std::string& m, const char* part) {
    return m.find(part) != std::string::npos;
  };
  const Mat<T> t_wrong(3, 5);
  std::string m =
      error_of([&] { smax::distillation_loss_with_grad_into(g, s, t_wrong, smax::rowwise); });
  EXPECT_TRUE(has(m, "smax::distillation_loss_with_grad_into: argument 'teacher' is of shape 3x5"))
      << m;
  for (T temp :
       {T(0), T(-2), std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN()}) {
    smax::distillation_options<T> o;
    o.temperature = temp;
    m = error_of([&] { smax::distillation_loss_with_grad_into(g, s, s, smax::rowwise, o); });
    EXPECT_TRUE(has(m, "'options.temperature' is")) << m;
  }
  smax::distillation_options<T> o;
  o.reduction = smax::reduction::none;
  m = error_of([&] { smax::distillation_loss(s, s, smax::rowwise, o); });
  EXPECT_TRUE(has(m, "smax::distillation_loss_per_sample")) << m;
  m = error_of(
      [&] { smax::distillation_loss_with_grad_into(g.block(0, 0, 3, 3), s, s, smax::rowwise); });
  EXPECT_TRUE(has(m, "'out' is of shape 3x3")) << m;
  m = error_of([&] {
    smax::distillation_loss_per_sample_backward_into(g, s, s, Vec<T>::Ones(4), smax::rowwise);
  });
  EXPECT_TRUE(has(m, "'dloss' is of length 4")) << m;
  EXPECT_TRUE((g.array() == T(7)).all());
}

}  // namespace
