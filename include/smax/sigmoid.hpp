// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <string>
#include <type_traits>

#include <Eigen/Core>

#include <smax/axis.hpp>
#include <smax/cross_entropy.hpp>
#include <smax/detail/dispatch.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/detail/loss_kernels.hpp>
#include <smax/error.hpp>
#include <smax/softmax.hpp>

/// \file
/// sigmoid, log_sigmoid and binary cross-entropy with logits (independent labels: one
/// sigmoid per entry instead of one softmax per sample).
///
/// Every formula goes through e = exp(-|x|), which never overflows:
///   sigmoid(x)     = 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0,
///   log_sigmoid(x) = -softplus(-x) = min(x, 0) - log1p(e),
///   softplus(x)    = max(x, 0) + log1p(e).
/// So both are exact limits at +-inf (sigmoid 0 and 1, log_sigmoid -inf and 0), keep full
/// relative accuracy in the tails (sigmoid(-100) = 3.7e-44, a float subnormal, not 0;
/// log_sigmoid(40) = -4.2e-18, not 0), and NaN stays NaN. The exponential is smax's
/// accurate vectorised exp (smax/detail/exp.hpp); log1p(e) on e in [0, 1] is a vectorised
/// series (loss_kernels.hpp). Measured error: within 3 ULP in float and double.

namespace smax {

namespace detail::loss {

/// sigmoid (Log false) or log_sigmoid (Log true) of every entry of x into out, in runs along
/// x's storage order.
template <bool Log, typename Out, typename D>
void sigmoid_family_into(const char* function, const Eigen::DenseBase<Out>& out,
                         const Eigen::DenseBase<D>& x) {
  static_check_scalar<D>();
  static_check_output<Out, D>();
  static_check_same_shape<Out, D>();
  check_output_shape(function, out, x.rows(), x.cols(), "x");
  using Axis = std::conditional_t<bool(D::IsRowMajor), rowwise_t, colwise_t>;
  with_readable(x, out, [&](const auto& xx) {
    resize_to(out, x.rows(), x.cols());
    // Entry by entry, so writing out while reading an exact alias is safe.
    const auto xb = make_batch(xx, Axis{});
    const auto ob = output_batch(out, Axis{});
    for (Index d = 0; d < xb.count; ++d) {
      sigmoid_run<Log>(xb.data + d * xb.dstride, xb.kstride, ob.data + d * ob.dstride, ob.kstride,
                       xb.length);
    }
  });
}

}  // namespace detail::loss

/// Logistic sigmoid 1 / (1 + exp(-x)) of every entry of x (any shape; Array stays Array).
///
/// Computed as 1/(1+e) or e/(1+e) with e = exp(-|x|): no overflow for any x, exact 0 and 1
/// at -inf and +inf, correct subnormals in the far negative tail, NaN propagates.
/// Gradient: sigmoid(x) (1 - sigmoid(x)). Accuracy: a few ULP. Complexity: one vectorised
/// exp per entry; allocates only the result (an expression input is evaluated once).
template <typename D>
typename D::PlainObject sigmoid(const Eigen::DenseBase<D>& x) {
  typename D::PlainObject result;
  result.resize(x.rows(), x.cols());
  detail::loss::sigmoid_family_into<false>("smax::sigmoid", result, x);
  return result;
}

/// Allocation-free sigmoid of x into out (resized if resizable, else x's shape; out may be
/// x itself). \throws smax::error on a wrong output shape; out is then untouched.
template <typename Out, typename D>
void sigmoid_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& x) {
  detail::loss::sigmoid_family_into<false>("smax::sigmoid_into", out, x);
}

/// log(sigmoid(x)) of every entry of x, computed as min(x, 0) - log1p(exp(-|x|)), never as
/// log of a rounded sigmoid: -inf at -inf, 0 at +inf, about x for x << 0 and -exp(-x) for
/// x >> 0 with full relative accuracy. Gradient: sigmoid(-x). Complexity: one exp and one
/// log1p per entry; allocates only the result.
template <typename D>
typename D::PlainObject log_sigmoid(const Eigen::DenseBase<D>& x) {
  typename D::PlainObject result;
  result.resize(x.rows(), x.cols());
  detail::loss::sigmoid_family_into<true>("smax::log_sigmoid", result, x);
  return result;
}

/// Allocation-free log_sigmoid of x into out (may be x itself).
template <typename Out, typename D>
void log_sigmoid_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& x) {
  detail::loss::sigmoid_family_into<true>("smax::log_sigmoid_into", out, x);
}

// ---------------------------------------------------------------------------------------
// binary_cross_entropy_with_logits

/// Options of binary_cross_entropy_with_logits: PyTorch's BCEWithLogitsLoss arguments.
/// Both weight vectors are per class (the class of an entry is its position along the axis:
/// the column for smax::rowwise, the row for smax::colwise, the index for a vector), may
/// hold a single value for every class, and are views that must outlive the call.
template <typename T>
struct binary_cross_entropy_options {
  /// mean (default): sum over every entry / number of entries (N C), as PyTorch; or sum.
  /// The per-element functions ignore it; none is rejected by the scalar ones.
  ::smax::reduction reduction = ::smax::reduction::mean;
  /// pos_weight_c multiplies the positive term (y log sigmoid(x)); entries >= 0.
  class_weights<T> pos_weight{};
  /// weight_c multiplies the whole loss of an entry of class c; entries >= 0. PyTorch also
  /// accepts per-sample or per-element weights by broadcasting: multiply the result of
  /// binary_cross_entropy_with_logits_per_element yourself for those.
  class_weights<T> weight{};
};

namespace detail::loss {

template <loss_mode Mode, typename D, typename Y, typename Axis, typename G, typename L, typename U>
typename D::Scalar bce_loss_run(const char* fn, const Eigen::DenseBase<D>& x,
                                const Eigen::DenseBase<Y>& y, Axis axis,
                                const binary_cross_entropy_options<typename D::Scalar>& o,
                                const G& grad, const L& losses, const U& upstream) {
  using T = typename D::Scalar;
  using A = acc_t<T>;
  static_check_scalar<D>();
  static_assert(std::is_same_v<typename Y::Scalar, T>,
                "smax::binary_cross_entropy_with_logits: the targets must have the logits' "
                "scalar type (probabilities in [0, 1])");
  static_check_same_shape<D, Y>();
  static_check_loss_outputs<Mode, G, D>();
  constexpr bool reduced_mode = Mode == loss_mode::loss || Mode == loss_mode::loss_grad;
  constexpr bool has_grad = mode_has_grad<Mode>;
  if constexpr (Mode == loss_mode::per_sample) {
    static_check_output<L, D>();
    static_check_same_shape<L, D>();
  }
  if constexpr (Mode == loss_mode::per_sample_backward) {
    static_assert(std::is_same_v<typename U::Scalar, T>,
                  "smax: 'dloss' must have the logits' scalar type");
    static_check_same_shape<U, D>();
  }
  const Index n_samples = sample_count(x, axis);
  const Index n_classes = class_count(x, axis);
  const strided_view<T> pw = view_of(o.pos_weight);
  const strided_view<T> w = view_of(o.weight);
  check_class_weights(fn, "options.pos_weight", pw, n_classes, true);
  check_class_weights(fn, "options.weight", w, n_classes, true);
  if constexpr (reduced_mode) {
    check_reduction(fn, o.reduction, "smax::binary_cross_entropy_with_logits_per_element");
  }
  check_same_shape_as(fn, "targets", y, x, "logits");
  if constexpr (Mode == loss_mode::per_sample_backward) {
    check_same_shape_as(fn, "dloss", upstream, x, "logits");
  }
  if constexpr (has_grad) check_output_shape(fn, grad, x.rows(), x.cols(), "logits");
  if constexpr (Mode == loss_mode::per_sample) {
    check_output_shape(fn, losses, x.rows(), x.cols(), "logits");
  }

  const bool mean = o.reduction == ::smax::reduction::mean;
  const A count = static_cast<A>(n_samples) * static_cast<A>(n_classes);
  const T red_scale = (reduced_mode && mean) ? static_cast<T>(A(1) / count) : T(1);
  reduction_total<T> total;
  // Every element of every input is read before the same element of an output is written,
  // so exact aliases are safe: with_readable copies only partial overlaps.
  const auto body = [&](const auto& xx, const auto& yy, const auto& uu) {
    if constexpr (has_grad) resize_to(grad, x.rows(), x.cols());
    if constexpr (Mode == loss_mode::per_sample) resize_to(losses, x.rows(), x.cols());
    const batch<const T> xb = make_batch(xx, axis);
    const batch<const T> yb = make_batch(yy, axis);
    batch<const T> ub{nullptr, 0, 0, 0, 1};
    if constexpr (Mode == loss_mode::per_sample_backward) ub = make_batch(uu, axis);
    batch<T> gb{nullptr, 0, 0, 0, 1};
    if constexpr (has_grad) gb = output_batch(grad, axis);
    batch<T> lb{nullptr, 0, 0, 0, 1};
    if constexpr (Mode == loss_mode::per_sample) lb = output_batch(losses, axis);
    for (Index d = 0; d < n_samples; ++d) {
      const A s =
          bce_run(xb.data + d * xb.dstride, xb.kstride, yb.data + d * yb.dstride, yb.kstride,
                  n_classes, w, pw, Index(0), Index(1),
                  Mode == loss_mode::per_sample_backward ? ub.data + d * ub.dstride : nullptr,
                  ub.kstride, has_grad ? gb.data + d * gb.dstride : nullptr, gb.kstride, red_scale,
                  Mode == loss_mode::per_sample ? lb.data + d * lb.dstride : nullptr, lb.kstride,
                  reduced_mode);
      total.add(s);
    }
  };
  if constexpr (has_grad) {
    with_readable(x, grad, [&](const auto& xx) {
      with_readable(y, grad, [&](const auto& yy) {
        if constexpr (Mode == loss_mode::per_sample_backward) {
          with_readable(upstream, grad, [&](const auto& uu) { body(xx, yy, uu); });
        } else {
          body(xx, yy, none_out);
        }
      });
    });
  } else if constexpr (Mode == loss_mode::per_sample) {
    with_readable(x, losses, [&](const auto& xx) {
      with_readable(y, losses, [&](const auto& yy) { body(xx, yy, none_out); });
    });
  } else {
    with_evaluated(x, [&](const auto& xx) {
      with_evaluated(y, [&](const auto& yy) { body(xx, yy, none_out); });
    });
  }
  if constexpr (reduced_mode) {
    return static_cast<T>(mean ? total.mean(count) : total.sum());
  } else {
    return T(0);
  }
}

}  // namespace detail::loss

/// Binary cross-entropy with logits of one vector of independent labels (a compile-time
/// vector: entry c is class c). See the axis form.
template <typename D, typename Y>
typename D::Scalar binary_cross_entropy_with_logits(
    const Eigen::DenseBase<D>& logits, const Eigen::DenseBase<Y>& targets,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::binary_cross_entropy_with_logits");
  return detail::loss::bce_loss_run<detail::loss::loss_mode::loss>(
      "smax::binary_cross_entropy_with_logits", logits, targets, detail::vector_axis_t<D>{},
      options, detail::loss::none_out, detail::loss::none_out, detail::loss::none_out);
}

/// Binary cross-entropy with logits (PyTorch's BCEWithLogitsLoss) of a batch: each row
/// (smax::rowwise) or column (smax::colwise) is a sample, each entry an independent label
/// y in [0, 1] (soft labels allowed) of the class given by its position. Per entry
///   l = w_c [pw_c y softplus(-x) + (1 - y) softplus(x)]
///     = -w_c [pw_c y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))],
/// mean = sum of l / (number of entries), sum = sum of l.
///
/// Gradient (binary_cross_entropy_with_logits_with_grad):
///   dl/dx = w_c [(1 - y + pw_c y) sigmoid(x) - pw_c y]  (= sigmoid(x) - y without weights),
/// divided by the number of entries for mean.
/// Edge cases: finite for any finite x (no exp overflow, no log(0)); a label that is exactly
/// 0 or 1 makes the other term vanish even at x = -+inf (loss 0 for x = +inf, y = 1; PyTorch
/// gives NaN there); x = -inf with y > 0 gives +inf; NaN propagates; empty input with mean
/// is 0/0 = NaN. Complexity: one vectorised exp and one log1p per entry; allocates nothing
/// (except to evaluate expression arguments).
/// \throws smax::error if the targets' shape differs from the logits', pos_weight or weight
/// is neither one value nor one per class, has an entry < 0 or NaN, or reduction is none
/// (use binary_cross_entropy_with_logits_per_element).
template <typename D, typename Y, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar binary_cross_entropy_with_logits(
    const Eigen::DenseBase<D>& logits, const Eigen::DenseBase<Y>& targets, Axis axis,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  return detail::loss::bce_loss_run<detail::loss::loss_mode::loss>(
      "smax::binary_cross_entropy_with_logits", logits, targets, axis, options,
      detail::loss::none_out, detail::loss::none_out, detail::loss::none_out);
}

/// Allocation-free BCE with logits of one vector: returns the loss, writes the gradient to
/// grad (may be the logits or the targets themselves).
template <typename Out, typename D, typename Y>
typename D::Scalar binary_cross_entropy_with_logits_with_grad_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& logits,
    const Eigen::DenseBase<Y>& targets,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::binary_cross_entropy_with_logits_with_grad_into");
  return detail::loss::bce_loss_run<detail::loss::loss_mode::loss_grad>(
      "smax::binary_cross_entropy_with_logits_with_grad_into", logits, targets,
      detail::vector_axis_t<D>{}, options, grad.derived(), detail::loss::none_out,
      detail::loss::none_out);
}

/// Allocation-free BCE with logits of a batch: returns the reduced loss and writes its
/// gradient to grad (resized if resizable, else the logits' shape; may be the logits or the
/// targets themselves). One sweep computes both. Allocates nothing for inputs with direct
/// access. \throws smax::error as binary_cross_entropy_with_logits, or on a grad of the
/// wrong shape; grad is then untouched.
template <typename Out, typename D, typename Y, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar binary_cross_entropy_with_logits_with_grad_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& logits,
    const Eigen::DenseBase<Y>& targets, Axis axis,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  return detail::loss::bce_loss_run<detail::loss::loss_mode::loss_grad>(
      "smax::binary_cross_entropy_with_logits_with_grad_into", logits, targets, axis, options,
      grad.derived(), detail::loss::none_out, detail::loss::none_out);
}

/// BCE with logits of one vector and its gradient (`.loss`, `.grad`).
template <typename D, typename Y>
loss_with_grad<typename D::Scalar, typename D::PlainObject>
binary_cross_entropy_with_logits_with_grad(
    const Eigen::DenseBase<D>& logits, const Eigen::DenseBase<Y>& targets,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::binary_cross_entropy_with_logits_with_grad");
  loss_with_grad<typename D::Scalar, typename D::PlainObject> r{};
  r.loss = detail::loss::bce_loss_run<detail::loss::loss_mode::loss_grad>(
      "smax::binary_cross_entropy_with_logits_with_grad", logits, targets,
      detail::vector_axis_t<D>{}, options, r.grad, detail::loss::none_out, detail::loss::none_out);
  return r;
}

/// BCE with logits of a batch and its gradient with respect to the logits (`.loss`,
/// `.grad`); one fused computation. Allocates the gradient only.
template <typename D, typename Y, typename Axis, detail::enable_if_axis_t<Axis> = 0>
loss_with_grad<typename D::Scalar, typename D::PlainObject>
binary_cross_entropy_with_logits_with_grad(
    const Eigen::DenseBase<D>& logits, const Eigen::DenseBase<Y>& targets, Axis axis,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  loss_with_grad<typename D::Scalar, typename D::PlainObject> r{};
  r.loss = detail::loss::bce_loss_run<detail::loss::loss_mode::loss_grad>(
      "smax::binary_cross_entropy_with_logits_with_grad", logits, targets, axis, options, r.grad,
      detail::loss::none_out, detail::loss::none_out);
  return r;
}

/// Allocation-free per-element BCE with logits (PyTorch's reduction='none'): writes l of
/// every entry into losses (the logits' shape; may alias logits or targets).
/// options.reduction is not used.
template <typename Out, typename D, typename Y, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void binary_cross_entropy_with_logits_per_element_into(
    const Eigen::DenseBase<Out>& losses, const Eigen::DenseBase<D>& logits,
    const Eigen::DenseBase<Y>& targets, Axis axis,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::loss::bce_loss_run<detail::loss::loss_mode::per_sample>(
      "smax::binary_cross_entropy_with_logits_per_element_into", logits, targets, axis, options,
      detail::loss::none_out, losses.derived(), detail::loss::none_out);
}

/// Per-element BCE with logits of one vector (reduction none); see the axis form.
template <typename D, typename Y>
typename D::PlainObject binary_cross_entropy_with_logits_per_element(
    const Eigen::DenseBase<D>& logits, const Eigen::DenseBase<Y>& targets,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::binary_cross_entropy_with_logits_per_element");
  typename D::PlainObject result;
  detail::loss::bce_loss_run<detail::loss::loss_mode::per_sample>(
      "smax::binary_cross_entropy_with_logits_per_element", logits, targets,
      detail::vector_axis_t<D>{}, options, detail::loss::none_out, result, detail::loss::none_out);
  return result;
}

/// Per-element BCE with logits of a batch (reduction none): the logits' shape, l per entry.
/// options.reduction is not used. Allocates the result only.
template <typename D, typename Y, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject binary_cross_entropy_with_logits_per_element(
    const Eigen::DenseBase<D>& logits, const Eigen::DenseBase<Y>& targets, Axis axis,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  typename D::PlainObject result;
  detail::loss::bce_loss_run<detail::loss::loss_mode::per_sample>(
      "smax::binary_cross_entropy_with_logits_per_element", logits, targets, axis, options,
      detail::loss::none_out, result, detail::loss::none_out);
  return result;
}

/// Backward pass of the per-element loss: dloss (the logits' shape) times dl/dx per entry,
/// written into grad (may alias logits, targets or dloss exactly). Allocates nothing for
/// inputs with direct access.
template <typename Out, typename D, typename Y, typename DL, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
void binary_cross_entropy_with_logits_per_element_backward_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& logits,
    const Eigen::DenseBase<Y>& targets, const Eigen::DenseBase<DL>& dloss, Axis axis,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::loss::bce_loss_run<detail::loss::loss_mode::per_sample_backward>(
      "smax::binary_cross_entropy_with_logits_per_element_backward_into", logits, targets, axis,
      options, grad.derived(), detail::loss::none_out, dloss.derived());
}

/// Backward pass of the per-element loss, returning the gradient (the logits' plain type).
template <typename D, typename Y, typename DL, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject binary_cross_entropy_with_logits_per_element_backward(
    const Eigen::DenseBase<D>& logits, const Eigen::DenseBase<Y>& targets,
    const Eigen::DenseBase<DL>& dloss, Axis axis,
    const binary_cross_entropy_options<typename D::Scalar>& options = {}) {
  typename D::PlainObject grad;
  detail::loss::bce_loss_run<detail::loss::loss_mode::per_sample_backward>(
      "smax::binary_cross_entropy_with_logits_per_element_backward", logits, targets, axis, options,
      grad, detail::loss::none_out, dloss.derived());
  return grad;
}

}  // namespace smax
