// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// libFuzzer target: sigmoid, log_sigmoid and binary_cross_entropy_with_logits (reduced,
// with_grad(_into), per_element(_into), per_element_backward), with pos_weight and weight
// (one value or one per class, valid or not), both axes and storage orders. Checked:
// - sigmoid in [0, 1] and log_sigmoid <= 0, NaN exactly for NaN input, both against a long
//   double reference; `_into` (separate and in place) bit-identical to the returning forms;
// - smax::error exactly for invalid arguments (weights, shapes, reduction none for the
//   scalar forms), with outputs untouched;
// - loss of the reduced and with_grad forms bit-identical; the per-element losses and the
//   per-element backward with dloss = 1 against the documented formula in long double; the
//   sum reduction against the sum of the references.

#include "fuzz_support.hpp"

#include <smax/smax.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using namespace smax_fuzz;

ld softplus(ld x) { return std::max(x, 0.0L) + std::log1p(std::exp(-std::fabs(x))); }

template <typename T, typename M>
void check_sigmoid(bytes& in, const M& x) {
  using Plain = typename M::PlainObject;
  const Plain s = smax::sigmoid(x), ls = smax::log_sigmoid(x);
  Plain o = Plain::Constant(x.rows(), x.cols(), T(9));
  smax::sigmoid_into(o, x);
  SMAX_FUZZ_CHECK(all_bit_equal(o, s), "sigmoid_into differs");
  smax::log_sigmoid_into(o, x);
  SMAX_FUZZ_CHECK(all_bit_equal(o, ls), "log_sigmoid_into differs");
  Plain ip = x;
  if (in.flag()) {
    smax::sigmoid_into(ip, ip);
    SMAX_FUZZ_CHECK(all_bit_equal(ip, s), "in-place sigmoid differs");
  } else {
    smax::log_sigmoid_into(ip, ip);
    SMAX_FUZZ_CHECK(all_bit_equal(ip, ls), "in-place log_sigmoid differs");
  }
  for (Index j = 0; j < x.cols(); ++j) {
    for (Index i = 0; i < x.rows(); ++i) {
      const T v = x(i, j);
      if (std::isnan(v)) {
        SMAX_FUZZ_CHECK(std::isnan(s(i, j)) && std::isnan(ls(i, j)), "NaN in, not NaN out");
        continue;
      }
      const ld xv = v;
      const ld ref_s = xv >= 0 ? 1 / (1 + std::exp(-xv)) : std::exp(xv) / (1 + std::exp(xv));
      const ld ref_ls = -softplus(-xv);
      SMAX_FUZZ_CHECK(s(i, j) >= T(0) && s(i, j) <= T(1), "sigmoid(%g) = %g", double(v),
                      double(s(i, j)));
      SMAX_FUZZ_CHECK(ls(i, j) <= T(0), "log_sigmoid(%g) = %g > 0", double(v), double(ls(i, j)));
      SMAX_FUZZ_CHECK(close(s(i, j), ref_s, 8 * eps<T> * ref_s + 2 * tiny<T>),
                      "sigmoid(%.9g) = %.9Lg, reference %.9Lg", double(v), static_cast<ld>(s(i, j)),
                      ref_s);
      SMAX_FUZZ_CHECK(close(ls(i, j), ref_ls, 8 * eps<T> * std::fabs(ref_ls) + 2 * tiny<T>),
                      "log_sigmoid(%.9g) = %.9Lg, reference %.9Lg", double(v),
                      static_cast<ld>(ls(i, j)), ref_ls);
    }
  }
}

template <typename T, typename M, typename Axis>
void check_bce(bytes& in, const M& x, const M& y, Axis axis, bool rowwise) {
  using Plain = typename M::PlainObject;
  smax::binary_cross_entropy_options<T> opt;
  const Index classes = rowwise ? x.cols() : x.rows();
  bool valid = true, valid_scalar = true;
  valid_scalar = pick_reduction(in, opt.reduction);  // none: the scalar forms reject it
  std::vector<T> pw, w;
  const auto make_weights = [&](std::vector<T>& v) {
    const std::uint8_t k = in.byte();
    const Index len = k % 4 == 0 ? 1 : k % 11 == 0 ? in.in(0, 71) : classes;
    for (Index c = 0; c < len; ++c) {
      v.push_back(in.in(0, 20) == 0 ? in.value<T>() : static_cast<T>(in.byte()) / T(64));
    }
    // Bound weights of length 0 are a wrong length, not "no weights" (only a
    // default-constructed class_weights means that).
    bool ok = len == classes || len == 1;
    for (T e : v) ok = ok && !std::isnan(e) && e >= T(0);
    valid = valid && ok;
  };
  if (in.flag()) {
    make_weights(pw);
    opt.pos_weight = smax::class_weights<T>(pw.data(), static_cast<Index>(pw.size()));
  }
  if (in.flag()) {
    make_weights(w);
    opt.weight = smax::class_weights<T>(w.data(), static_cast<Index>(w.size()));
  }
  const bool bad_shape = in.in(0, 20) == 0;
  const Plain yy = bad_shape ? Plain(Plain::Zero(y.rows() + 1, y.cols())) : Plain(y);
  valid = valid && !bad_shape;

  const T sentinel = T(-4242);
  const T loss = check_loss_forms<Plain>(
      "bce", x.rows(), x.cols(), valid && valid_scalar,
      [&] { return smax::binary_cross_entropy_with_logits(x, yy, axis, opt); },
      [&](auto& gm) {
        return smax::binary_cross_entropy_with_logits_with_grad_into(gm, x, yy, axis, opt);
      },
      [&] { return smax::binary_cross_entropy_with_logits_with_grad(x, yy, axis, opt); });
  Plain per = Plain::Constant(x.rows(), x.cols(), sentinel);
  Eigen::Map<Plain> pm(per.data(), x.rows(), x.cols());
  bool threw = false;
  try {
    smax::binary_cross_entropy_with_logits_per_element_into(pm, x, yy, axis, opt);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "per_element_into threw %d", int(threw));
  if (threw) {
    SMAX_FUZZ_CHECK((per.array() == sentinel).all(), "losses written before throwing");
    return;
  }
  SMAX_FUZZ_CHECK(
      all_bit_equal(Plain(smax::binary_cross_entropy_with_logits_per_element(x, yy, axis, opt)),
                    per),
      "per_element differs from per_element_into");
  const Plain ones = Plain::Ones(x.rows(), x.cols());
  const Plain gb =
      smax::binary_cross_entropy_with_logits_per_element_backward(x, yy, ones, axis, opt);
  ld sum_ref = 0, abs_err = 0;
  bool all_finite = true;
  for (Index j = 0; j < x.cols(); ++j) {
    for (Index i = 0; i < x.rows(); ++i) {
      const Index c = rowwise ? j : i;
      const ld xv = x(i, j), yv = y(i, j);
      const ld pwc = pw.empty() ? 1 : pw[static_cast<std::size_t>(pw.size() == 1 ? 0 : c)];
      const ld wc = w.empty() ? 1 : w[static_cast<std::size_t>(w.size() == 1 ? 0 : c)];
      if (!std::isfinite(xv) || !std::isfinite(yv) || !std::isfinite(pwc) || !std::isfinite(wc)) {
        all_finite = false;
        continue;
      }
      // l = w [pw y softplus(-x) + (1 - y) softplus(x)]; dl/dx = w [(1 - y + pw y) s - pw y].
      const ld a = pwc * yv, b = 1 - yv;
      const ld l = wc * ((a != 0 ? a * softplus(-xv) : 0) + (b != 0 ? b * softplus(xv) : 0));
      const ld sg = xv >= 0 ? 1 / (1 + std::exp(-xv)) : std::exp(xv) / (1 + std::exp(xv));
      const ld dl = wc * ((1 - yv + a) * sg - a);
      const ld scale = std::fabs(wc) * (std::fabs(a) * softplus(-xv) + std::fabs(b) * softplus(xv));
      const ld gscale = std::fabs(wc) * (std::fabs(1 - yv) + 2 * std::fabs(a));
      sum_ref += l;
      if (scale > static_cast<ld>(std::numeric_limits<T>::max()) / 16) {
        all_finite = false;
        continue;
      }
      // softplus and the sigmoid may underflow before the weights multiply them: a weight
      // of 1e298 turns the absolute error of an underflow (denorm_min / 2) into 1e-25.
      const ld underflow = 2 * std::fabs(wc) * (std::fabs(a) + std::fabs(b) + 1) *
                           static_cast<ld>(std::numeric_limits<T>::denorm_min());
      // The sum carries every element's absolute error (corpus/fuzz_sigmoid_bce/subnormal-
      // losses-sum: float losses near 1e-43 sum to 4.302e-43 against 4.333e-43).
      abs_err += 4 * tiny<T> + underflow;
      SMAX_FUZZ_CHECK(
          close(per(i, j), l, 16 * eps<T> * std::max(scale, 1e-30L) + 4 * tiny<T> + underflow),
          "bce(x %.9g, y %.9g) = %.9Lg, reference %.9Lg", double(xv), double(yv),
          static_cast<ld>(per(i, j)), l);
      SMAX_FUZZ_CHECK(close(gb(i, j), dl, 16 * eps<T> * gscale + 4 * tiny<T> + underflow),
                      "bce grad(x %.9g, y %.9g) = %.9Lg, reference %.9Lg", double(xv), double(yv),
                      static_cast<ld>(gb(i, j)), dl);
    }
  }
  if (all_finite && valid_scalar && opt.reduction == smax::reduction::sum && x.size() > 0) {
    ld abs_sum = 0;
    for (Index k = 0; k < per.size(); ++k) abs_sum += std::fabs(static_cast<ld>(per.data()[k]));
    SMAX_FUZZ_CHECK(close(loss, sum_ref,
                          (32 + static_cast<ld>(x.size())) * eps<T> * abs_sum + tiny<T> + abs_err),
                    "bce sum %.9Lg, reference %.9Lg", static_cast<ld>(loss), sum_ref);
  }
}

template <typename T>
void run(bytes& in) {
  const Index rows = in.in(0, 40), cols = in.in(0, 70);
  const bool row_major = in.flag(), rowwise = in.flag();
  Mat<T> x(rows, cols), y(rows, cols);
  const bool plain = in.in(0, 2) == 0;
  for (Index k = 0; k < x.size(); ++k) x.data()[k] = plain ? in.plain<T>() * T(4) : in.value<T>();
  for (Index k = 0; k < y.size(); ++k) {
    const std::uint8_t b = in.byte();
    // Labels in [0, 1] (the documented domain; values outside are not checked by smax and
    // can overflow intermediates), and NaN.
    y.data()[k] = b < 100   ? T(0)
                  : b < 200 ? T(1)
                  : b < 254 ? static_cast<T>(b - 200) / T(54)
                            : std::numeric_limits<T>::quiet_NaN();
  }
  if (row_major) {
    const MatR<T> xr = x, yr = y;
    check_sigmoid<T>(in, xr);
    if (rowwise) {
      check_bce<T>(in, xr, yr, smax::rowwise, true);
    } else {
      check_bce<T>(in, xr, yr, smax::colwise, false);
    }
  } else {
    check_sigmoid<T>(in, x);
    if (rowwise) {
      check_bce<T>(in, x, y, smax::rowwise, true);
    } else {
      check_bce<T>(in, x, y, smax::colwise, false);
    }
  }
}

}  // namespace

SMAX_FUZZ_FLOAT_AND_DOUBLE_TARGET
