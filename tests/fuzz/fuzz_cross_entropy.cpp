// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// libFuzzer target: cross_entropy, cross_entropy_with_grad(_into), cross_entropy_per_sample
// (_into), cross_entropy_per_sample_backward(_into) and nll_loss, with class-index targets
// (in range, ignore_index, out of range, wrong count) and probability targets, every option
// (reduction, label_smoothing, ignore_index, weights, temperature) valid or not, both axes,
// both storage orders. Checked on every input:
// - smax::error exactly when an argument is invalid (an independent statement of the rules
//   in cross_entropy.hpp), with the gradient and loss outputs untouched;
// - the loss of cross_entropy and of cross_entropy_with_grad are bit-identical, the `_into`
//   and returning gradients too, and the in-place gradient (over the logits) as well;
// - for finite logits and targets: losses >= 0 (index targets), ignored samples give loss
//   and gradient 0, and the per-sample losses, the per-sample backward with dloss = 1 and
//   the sum-reduced gradient agree with a long double evaluation of the documented formula;
//   the sum reduction agrees with the sum of the references.

#include "fuzz_support.hpp"

#include <smax/smax.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using namespace smax_fuzz;

struct setup {
  Index samples = 0, classes = 0;
  bool rowwise = true;
};

/// Per-sample loss in long double from the documented formula (index targets): returns NaN
/// when the policy gives NaN, and fills the gradient row (A p - a) / T.
template <typename T>
ld ce_reference(const std::vector<T>& x, std::int64_t y, T eps_s, const std::vector<T>* w, T t,
                std::vector<ld>& grad, std::vector<ld>& amp, std::vector<ld>& gscale,
                std::vector<ld>& gsub, ld& loss_scale, ld& sub_scale, const std::vector<T>* q) {
  const std::size_t c_n = x.size();
  const reference r = reference_of(x, t);
  grad.assign(c_n, 0);
  std::vector<ld> a(c_n, 0);
  const auto wc = [&](std::size_t c) -> ld { return w ? static_cast<ld>((*w)[c]) : 1.0L; };
  for (std::size_t c = 0; c < c_n; ++c) {
    const ld smooth = static_cast<ld>(eps_s) / static_cast<ld>(c_n);
    if (q) {
      a[c] = wc(c) * ((1 - static_cast<ld>(eps_s)) * static_cast<ld>((*q)[c]) + smooth);
    } else {
      a[c] =
          wc(c) * (smooth + (static_cast<std::int64_t>(c) == y ? 1 - static_cast<ld>(eps_s) : 0));
    }
  }
  if (r.nan) return std::numeric_limits<ld>::quiet_NaN();
  ld loss = 0, big_a = 0;
  for (std::size_t c = 0; c < c_n; ++c) {
    if (a[c] != 0) loss += a[c] * -r.logp[c];
    big_a += a[c];
  }
  amp.assign(c_n, 0);
  gscale.assign(c_n, 0);
  ld abs_a = 0;
  loss_scale = 0;
  sub_scale = 0;
  for (std::size_t c = 0; c < c_n; ++c) {
    abs_a += std::fabs(a[c]);
    if (a[c] != 0) {
      const ld factor = std::fabs(r.logp[c]) + std::fabs(r.d[c]) + 1;
      loss_scale += std::fabs(a[c]) * factor;
      // a_c = w_c ((1 - eps) q_c + eps / C) is formed in T: where it is subnormal each
      // product rounds on the subnormal grid, an absolute error of up to denorm_min / 2
      // that no relative bound covers (corpus/fuzz_cross_entropy/subnormal-target-coefficient:
      // q_c = 7 denorm_min, loss 1.65e-321 against 1.67e-321).
      sub_scale += (1 + wc(c)) * factor;
    }
  }
  // The subnormal-grid error of each a_c (see sub_scale) enters the gradient through a_c
  // and through A p_c.
  ld w_total = 0;
  for (std::size_t c = 0; c < c_n; ++c) w_total += 1 + wc(c);
  gsub.assign(c_n, 0);
  for (std::size_t c = 0; c < c_n; ++c) {
    gsub[c] = (1 + wc(c) + r.p[c] * w_total) / static_cast<ld>(t);
    // The size of the terms of (A p_c - a_c) / T before they cancel.
    gscale[c] = (abs_a * r.p[c] + std::fabs(a[c])) / static_cast<ld>(t);
    grad[c] = (big_a * r.p[c] - a[c]) / static_cast<ld>(t);
    // The documented amplification of p_c's error: |d_c| eps relative.
    amp[c] = std::fabs(big_a) * r.p[c] * (std::isfinite(r.d[c]) ? std::fabs(r.d[c]) : 0);
  }
  return loss;
}

template <typename T, typename M, typename Axis, typename Targets>
void run_with(bytes& in, const M& x, const Targets& targets, Axis axis,
              const smax::cross_entropy_options<T>& opt, bool valid_common, bool valid_scalar,
              const setup& s, const std::vector<std::int64_t>* idx, const M* probs,
              const std::vector<T>* weights) {
  using Plain = typename M::PlainObject;
  const T sentinel = T(-31337);
  const bool valid = valid_common && valid_scalar;
  T loss = 0;
  bool threw = false;
  try {
    loss = smax::cross_entropy(x, targets, axis, opt);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "cross_entropy threw %d, expected %d", int(threw), int(!valid));
  // with_grad, into Map storage (fixed shape).
  Plain gstore = Plain::Constant(x.rows(), x.cols(), sentinel);
  Eigen::Map<Plain> gmap(gstore.data(), x.rows(), x.cols());
  threw = false;
  T loss2 = 0;
  try {
    loss2 = smax::cross_entropy_with_grad_into(gmap, x, targets, axis, opt);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "cross_entropy_with_grad_into threw %d", int(threw));
  if (!valid) {
    SMAX_FUZZ_CHECK((gstore.array() == sentinel).all(), "gradient written before throwing");
  } else {
    SMAX_FUZZ_CHECK(bit_equal(loss, loss2), "cross_entropy %g != with_grad_into loss %g",
                    double(loss), double(loss2));
    const auto r = smax::cross_entropy_with_grad(x, targets, axis, opt);
    SMAX_FUZZ_CHECK(bit_equal(r.loss, loss), "with_grad loss differs");
    SMAX_FUZZ_CHECK(all_bit_equal(r.grad, gstore), "with_grad gradient differs from _into");
    if (probs == nullptr) {  // probability targets may not alias the gradient
      Plain inplace = x;
      const T l3 = smax::cross_entropy_with_grad_into(inplace, inplace, targets, axis, opt);
      SMAX_FUZZ_CHECK(bit_equal(l3, loss) && all_bit_equal(inplace, gstore),
                      "in-place gradient differs");
    }
  }
  // Per-sample losses: independent of the reduction.
  Vec<T> per(s.samples);
  per.setConstant(sentinel);
  threw = false;
  try {
    smax::cross_entropy_per_sample_into(per, x, targets, axis, opt);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid_common, "per_sample_into threw %d, expected %d", int(threw),
                  int(!valid_common));
  if (!valid_common) {
    SMAX_FUZZ_CHECK((per.array() == sentinel).all(), "per-sample losses written before throwing");
    return;
  }
  const auto per_ret = smax::cross_entropy_per_sample(x, targets, axis, opt);
  SMAX_FUZZ_CHECK(vector_bit_equal(per_ret, per), "per_sample differs from per_sample_into");
  // Per-sample backward with unit upstream gradients == gradient of the sum.
  const Vec<T> ones = Vec<T>::Ones(s.samples);
  const Plain gb = smax::cross_entropy_per_sample_backward(x, targets, ones, axis, opt);
  smax::cross_entropy_options<T> sum_opt = opt;
  sum_opt.reduction = smax::reduction::sum;
  const auto rs = smax::cross_entropy_with_grad(x, targets, axis, sum_opt);

  // Values, sample by sample.
  ld sum_ref = 0, denom = 0, total_scale = 0, total_sub = 0;
  bool any_nan = false, all_finite = true;
  for (Index n = 0; n < s.samples; ++n) {
    std::vector<T> row(static_cast<std::size_t>(s.classes));
    std::vector<T> q(static_cast<std::size_t>(s.classes));
    for (Index c = 0; c < s.classes; ++c) {
      row[static_cast<std::size_t>(c)] = s.rowwise ? x(n, c) : x(c, n);
      if (probs) q[static_cast<std::size_t>(c)] = s.rowwise ? (*probs)(n, c) : (*probs)(c, n);
    }
    bool finite_row = true;
    for (T v : row) finite_row = finite_row && std::isfinite(v);
    for (T v : q) finite_row = finite_row && std::isfinite(v);
    all_finite = all_finite && finite_row;
    const std::int64_t y = idx ? (*idx)[static_cast<std::size_t>(n)] : 0;
    const T l = per(n);
    if (idx && y == opt.ignore_index) {
      SMAX_FUZZ_CHECK(l == T(0), "ignored sample %ld has loss %g", long(n), double(l));
      for (Index c = 0; c < s.classes; ++c) {
        const T g = s.rowwise ? gb(n, c) : gb(c, n);
        SMAX_FUZZ_CHECK(g == T(0), "ignored sample has gradient %g", double(g));
      }
      continue;
    }
    if (idx) denom += weights ? static_cast<ld>((*weights)[static_cast<std::size_t>(y)]) : 1.0L;
    if (!finite_row) continue;
    std::vector<ld> gref, gamp, gsc, gsub;
    ld loss_scale = 0, sub_scale = 0;
    const ld lref = ce_reference(row, y, opt.label_smoothing, weights, opt.temperature, gref, gamp,
                                 gsc, gsub, loss_scale, sub_scale, probs ? &q : nullptr);
    any_nan = any_nan || std::isnan(lref);
    sum_ref += lref;
    if (std::isnan(lref)) continue;
    const ld big = static_cast<ld>(std::numeric_limits<T>::max()) / 1024;
    if (!(loss_scale < big)) {
      any_nan = true;  // no reliable sum either
      continue;
    }
    total_scale += loss_scale;
    total_sub += sub_scale;
    SMAX_FUZZ_CHECK(l >= T(0) || probs != nullptr, "negative loss %g", double(l));
    const ld ltol =
        (64 + 4 * static_cast<ld>(s.classes)) * eps<T> * loss_scale + tiny<T> * (1 + sub_scale);
    if (!close(l, lref, ltol)) {
      for (Index c = 0; c < s.classes; ++c) {
        std::fprintf(stderr, "  x[%ld] = %.9g%s", long(c), double(row[static_cast<size_t>(c)]),
                     probs ? "" : "\n");
        if (probs) std::fprintf(stderr, ", q = %.9g\n", double(q[static_cast<size_t>(c)]));
      }
    }
    SMAX_FUZZ_CHECK(close(l, lref, ltol),
                    "sample %ld: loss %.9Lg, reference %.9Lg (tol %Lg, T %g, smoothing %g, "
                    "target %ld, %s targets)",
                    long(n), static_cast<ld>(l), lref, ltol, double(opt.temperature),
                    double(opt.label_smoothing), long(y), probs ? "probability" : "index");
    for (Index c = 0; c < s.classes; ++c) {
      const T g = s.rowwise ? gb(n, c) : gb(c, n);
      const ld gr = gref[static_cast<std::size_t>(c)];
      const ld gtol = ((64 + 4 * static_cast<ld>(s.classes)) * gsc[static_cast<std::size_t>(c)] +
                       4 * gamp[static_cast<std::size_t>(c)] / static_cast<ld>(opt.temperature)) *
                          eps<T> +
                      16 * tiny<T> / std::min<ld>(static_cast<ld>(opt.temperature), 1) +
                      tiny<T> * gsub[static_cast<std::size_t>(c)];
      if (gtol > static_cast<ld>(std::numeric_limits<T>::max()) / 4) continue;
      SMAX_FUZZ_CHECK(close(g, gr, gtol),
                      "%s sample %ld class %ld: gradient %.17Lg, reference %.17Lg (tol %Lg, T %Lg, "
                      "C %ld, logit %Lg)",
                      sizeof(T) == 4 ? "float" : "double", long(n), long(c), static_cast<ld>(g), gr,
                      gtol, static_cast<ld>(opt.temperature), long(s.classes),
                      static_cast<ld>(row[static_cast<std::size_t>(c)]));
      const T g2 = s.rowwise ? rs.grad(n, c) : rs.grad(c, n);
      SMAX_FUZZ_CHECK(close(g2, gr, gtol), "sum-reduced gradient %.9Lg, reference %.9Lg",
                      static_cast<ld>(g2), gr);
    }
  }
  if (all_finite && !any_nan && s.samples > 0) {
    const ld tol = (64 + 4 * static_cast<ld>(s.classes + s.samples)) * eps<T> * total_scale +
                   tiny<T> * (1 + total_sub);
    SMAX_FUZZ_CHECK(close(rs.loss, sum_ref, tol), "sum reduction %.9Lg, sum of references %.9Lg",
                    static_cast<ld>(rs.loss), sum_ref);
    (void)denom;
  }
  (void)in;
}

template <typename T>
void run(bytes& in) {
  setup s;
  s.samples = in.in(0, 40);
  s.classes = in.in(0, 70);
  s.rowwise = in.flag();
  const bool row_major = in.flag();
  const Index rows = s.rowwise ? s.samples : s.classes;
  const Index cols = s.rowwise ? s.classes : s.samples;
  Mat<T> x(rows, cols);
  const bool plain_logits = in.in(0, 2) == 0;
  for (Index k = 0; k < x.size(); ++k) x.data()[k] = plain_logits ? in.plain<T>() : in.value<T>();

  smax::cross_entropy_options<T> opt;
  bool valid_common = true, valid_scalar = true;
  valid_scalar = pick_reduction(in, opt.reduction);  // none: the scalar forms reject it
  if (in.flag()) {
    opt.label_smoothing = in.flag() ? static_cast<T>(in.byte()) / T(255) : in.value<T>();
  }
  valid_common = valid_common && !std::isnan(opt.label_smoothing) && opt.label_smoothing >= T(0) &&
                 opt.label_smoothing <= T(1);
  if (in.flag()) {
    const T t = in.temperature<T>();
    opt.temperature = t;
  }
  valid_common = valid_common && std::isfinite(opt.temperature) && opt.temperature > T(0);
  std::vector<T> weights;
  const bool use_weights = in.flag();
  if (use_weights) {
    const Index len = in.in(0, 15) == 0 ? in.in(0, 71) : s.classes;
    for (Index c = 0; c < len; ++c) {
      weights.push_back(in.in(0, 20) == 0 ? in.value<T>() : static_cast<T>(in.byte()) / T(64));
    }
    opt.weight = smax::class_weights<T>(weights.data(), static_cast<Index>(weights.size()));
    // Weights bound to an empty vector have length 0 (not "no weights"): wrong unless the
    // logits have no classes either.
    bool ok = static_cast<Index>(weights.size()) == s.classes;
    for (T v : weights) ok = ok && !std::isnan(v) && v >= T(0);
    valid_common = valid_common && ok;
  }
  const std::uint8_t ii = in.byte();
  opt.ignore_index = ii % 4 == 0 ? static_cast<std::int64_t>(in.in(-3, 5)) : -100;

  const bool probability_targets = in.in(0, 3) == 0;
  const auto dispatch = [&](const auto& xs) {
    using M = std::decay_t<decltype(xs)>;
    if (probability_targets) {
      M q(rows, cols);
      for (Index k = 0; k < q.size(); ++k) {
        q.data()[k] = in.in(0, 30) == 0 ? in.value<T>() : static_cast<T>(in.byte()) / T(255);
      }
      const bool ok = opt.ignore_index < 0;
      if (s.rowwise) {
        run_with<T>(in, xs, q, smax::rowwise, opt, valid_common && ok, valid_scalar, s, nullptr, &q,
                    (use_weights && !weights.empty()) ? &weights : nullptr);
      } else {
        run_with<T>(in, xs, q, smax::colwise, opt, valid_common && ok, valid_scalar, s, nullptr, &q,
                    (use_weights && !weights.empty()) ? &weights : nullptr);
      }
      return;
    }
    std::vector<std::int64_t> idx;
    const Index count = in.in(0, 15) == 0 ? in.in(0, 41) : s.samples;
    bool ok = count == s.samples;
    for (Index n = 0; n < count; ++n) {
      const std::uint8_t b = in.byte();
      std::int64_t y = s.classes > 0 ? static_cast<std::int64_t>(b % s.classes) : 0;
      if (b >= 240) y = static_cast<std::int64_t>(b) - 250;  // out of range or ignore_index
      if (b == 239) y = opt.ignore_index;
      idx.push_back(y);
      ok = ok && (y == opt.ignore_index || (y >= 0 && y < s.classes));
    }
    // Targets as an Eigen integer vector or a std::vector, alternately.
    const bool eigen_targets = in.flag();
    const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> ev =
        Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>>(
            idx.data(), static_cast<Index>(idx.size()));
    const auto go = [&](const auto& targets) {
      if (s.rowwise) {
        run_with<T>(in, xs, targets, smax::rowwise, opt, valid_common && ok, valid_scalar, s,
                    ok ? &idx : nullptr, static_cast<const M*>(nullptr),
                    (use_weights && !weights.empty()) ? &weights : nullptr);
      } else {
        run_with<T>(in, xs, targets, smax::colwise, opt, valid_common && ok, valid_scalar, s,
                    ok ? &idx : nullptr, static_cast<const M*>(nullptr),
                    (use_weights && !weights.empty()) ? &weights : nullptr);
      }
    };
    if (eigen_targets) {
      go(ev);
    } else {
      go(idx);
    }
  };
  if (row_major) {
    dispatch(MatR<T>(x));
  } else {
    dispatch(x);
  }
}

}  // namespace

SMAX_FUZZ_FLOAT_AND_DOUBLE_TARGET
