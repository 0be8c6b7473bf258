// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// libFuzzer target: distillation_loss (reduced, with_grad(_into), per_sample,
// per_sample_backward), both axes and storage orders, temperatures valid or not. Checked:
// - smax::error exactly for a bad temperature (not finite and > 0), a teacher of another
//   shape, or reduction none in the scalar forms; outputs untouched then;
// - reduced and with_grad losses bit-identical, `_into` and returning gradients too;
// - per sample, for finite logits: the loss is T^2 KL(q || p) >= 0 (within rounding), the
//   gradient T (p - q) sums to 0, both against a long double reference; a student equal to
//   its teacher has loss ~0.

#include "fuzz_support.hpp"

#include <smax/smax.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using namespace smax_fuzz;

template <typename T, typename M, typename Axis>
void check(bytes& in, const M& s, const M& t, Axis axis, bool rowwise) {
  using Plain = typename M::PlainObject;
  smax::distillation_options<T> opt;
  bool valid = true, valid_scalar = true;
  valid_scalar = pick_reduction(in, opt.reduction);  // none: the scalar forms reject it
  if (in.flag()) opt.temperature = in.temperature<T>();
  valid = valid && std::isfinite(opt.temperature) && opt.temperature > T(0);
  const bool bad_shape = in.in(0, 20) == 0;
  const Plain tt = bad_shape ? Plain(Plain::Zero(t.rows(), t.cols() + 1)) : Plain(t);
  valid = valid && !bad_shape;

  const T sentinel = T(-555);
  check_loss_forms<Plain>(
      "distillation_loss", s.rows(), s.cols(), valid && valid_scalar,
      [&] { return smax::distillation_loss(s, tt, axis, opt); },
      [&](auto& gm) { return smax::distillation_loss_with_grad_into(gm, s, tt, axis, opt); },
      [&] { return smax::distillation_loss_with_grad(s, tt, axis, opt); });
  const Index samples = rowwise ? s.rows() : s.cols();
  Vec<T> per(samples);
  per.setConstant(sentinel);
  bool threw = false;
  try {
    per = Eigen::Map<const Vec<T>>(smax::distillation_loss_per_sample(s, tt, axis, opt).data(),
                                   samples);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "per_sample threw %d", int(threw));
  if (threw) return;
  const Vec<T> ones = Vec<T>::Ones(samples);
  const Plain gb = smax::distillation_loss_per_sample_backward(s, tt, ones, axis, opt);
  const T temp = opt.temperature;
  const Index classes = rowwise ? s.cols() : s.rows();
  for (Index n = 0; n < samples; ++n) {
    std::vector<T> sv(static_cast<std::size_t>(classes)), tv(static_cast<std::size_t>(classes));
    bool finite = true;
    for (Index c = 0; c < classes; ++c) {
      sv[static_cast<std::size_t>(c)] = rowwise ? s(n, c) : s(c, n);
      tv[static_cast<std::size_t>(c)] = rowwise ? t(n, c) : t(c, n);
      finite = finite && std::isfinite(sv[static_cast<std::size_t>(c)]) &&
               std::isfinite(tv[static_cast<std::size_t>(c)]);
    }
    if (!finite || classes == 0) continue;
    const reference p = reference_of(sv, temp), q = reference_of(tv, temp);
    ld kl = 0, scale = 0;
    for (std::size_t c = 0; c < sv.size(); ++c) {
      if (q.p[c] > 0) {
        kl += q.p[c] * (q.logp[c] - p.logp[c]);
        // Each log-probability is accurate to a few ULP of max(|log p|, 1) (the documented
        // log_softmax bound), hence the + 2: near-identical distributions give a KL of
        // order eps, possibly slightly negative.
        // q_c itself carries the relative error |d_c| eps of its rounded exponent (the
        // documented softmax bound), which the factor log q_c - log p_c multiplies: a tiny
        // q_c against a huge -log p_c (corpus/fuzz_distillation/teacher-exp-conditioning).
        scale +=
            q.p[c] * (std::fabs(q.logp[c]) + std::fabs(p.logp[c]) + std::fabs(p.d[c]) +
                      std::fabs(q.d[c]) + 2 + std::fabs(q.d[c]) * std::fabs(q.logp[c] - p.logp[c]));
      }
    }
    const ld t2 = static_cast<ld>(temp) * temp;
    const ld lref = t2 * kl;
    const ld tol =
        (64 + 4 * static_cast<ld>(classes)) * eps<T> * t2 * std::max<ld>(scale, 1e-300L) + tiny<T>;
    if (!std::isfinite(lref) || t2 * scale > static_cast<ld>(std::numeric_limits<T>::max()) / 16) {
      continue;
    }
    if (!close(per(n), lref, tol)) {
      for (std::size_t c = 0; c < sv.size(); ++c) {
        std::fprintf(stderr, "  class %zu: student %.9Lg, teacher %.9Lg\n", c,
                     static_cast<ld>(sv[c]), static_cast<ld>(tv[c]));
      }
    }
    SMAX_FUZZ_CHECK(close(per(n), lref, tol),
                    "%s sample %ld: loss %.9Lg, reference %.9Lg (tol %Lg, T %Lg, C %ld, scale %Lg)",
                    sizeof(T) == 4 ? "float" : "double", long(n), static_cast<ld>(per(n)), lref,
                    tol, static_cast<ld>(temp), long(classes), scale);

    // KL >= 0; the long double reference itself may round a tiny KL below 0.
    SMAX_FUZZ_CHECK(per(n) >= std::min<ld>(lref, 0) - tol, "sample %ld: negative KL %g (tol %Lg)",
                    long(n), double(per(n)), tol);
    ld gsum = 0, gabs = 0;
    for (Index c = 0; c < classes; ++c) {
      const T gv = rowwise ? gb(n, c) : gb(c, n);
      const ld gr = static_cast<ld>(temp) *
                    (p.p[static_cast<std::size_t>(c)] - q.p[static_cast<std::size_t>(c)]);
      const ld gt = (32 + 2 * std::fabs(p.d[static_cast<std::size_t>(c)]) +
                     2 * std::fabs(q.d[static_cast<std::size_t>(c)])) *
                        eps<T> * temp *
                        (p.p[static_cast<std::size_t>(c)] + q.p[static_cast<std::size_t>(c)]) +
                    8 * tiny<T> * std::max<ld>(temp, 1);
      SMAX_FUZZ_CHECK(close(gv, gr, gt), "sample %ld class %ld: gradient %.9Lg, reference %.9Lg",
                      long(n), long(c), static_cast<ld>(gv), gr);
      gsum += gv;
      gabs += std::fabs(static_cast<ld>(gv));
    }
    SMAX_FUZZ_CHECK(
        std::fabs(gsum) <= (16 + 2 * static_cast<ld>(classes)) * eps<T> * (gabs + temp) +
                               4 * static_cast<ld>(classes) * tiny<T>,
        "sample %ld: gradient sums to %Lg", long(n), gsum);
  }
}

template <typename T>
void run(bytes& in) {
  const Index rows = in.in(0, 40), cols = in.in(0, 70);
  const bool row_major = in.flag(), rowwise = in.flag();
  Mat<T> s(rows, cols), t(rows, cols);
  const bool plain = in.in(0, 2) == 0;
  for (Index k = 0; k < s.size(); ++k) s.data()[k] = plain ? in.plain<T>() : in.value<T>();
  const std::uint8_t mode = in.byte();
  for (Index k = 0; k < t.size(); ++k) {
    // Sometimes the teacher is the student (KL 0), or close to it.
    t.data()[k] = mode % 4 == 0   ? s.data()[k]
                  : mode % 4 == 1 ? s.data()[k] + in.plain<T>() / T(64)
                  : plain         ? in.plain<T>()
                                  : in.value<T>();
  }
  if (row_major) {
    const MatR<T> sr = s, tr = t;
    if (rowwise) {
      check<T>(in, sr, tr, smax::rowwise, true);
    } else {
      check<T>(in, sr, tr, smax::colwise, false);
    }
  } else if (rowwise) {
    check<T>(in, s, t, smax::rowwise, true);
  } else {
    check<T>(in, s, t, smax::colwise, false);
  }
}

}  // namespace

SMAX_FUZZ_FLOAT_AND_DOUBLE_TARGET
