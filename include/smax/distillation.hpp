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
/// Knowledge-distillation loss (Hinton, Vinyals and Dean, 2015): the KL divergence from the
/// teacher's softened distribution to the student's, computed from logits on both sides.
///
/// With temperature T, q_n = softmax(teacher_n / T) and p_n = softmax(student_n / T):
///   l_n = T^2 KL(q_n || p_n) = T^2 sum_c q_{n,c} (log q_{n,c} - log p_{n,c}),
///   d l_n / d student_{n,c} = T (p_{n,c} - q_{n,c}).
/// The T^2 factor keeps the gradient's magnitude independent of T (Hinton et al., sec. 2).
/// Both log-probabilities come from the max-shifted log-softmax, never log(softmax): a
/// teacher probability that is 0 (logit -inf, or underflow) contributes exactly 0, and
/// logits of any finite magnitude do not overflow.
///
/// PyTorch equivalent:
/// \code{.py}
/// T * T * F.kl_div(F.log_softmax(student / T, 1), F.log_softmax(teacher / T, 1),
///                  reduction="batchmean", log_target=True)
/// \endcode
/// smax's reduction::mean is PyTorch's "batchmean" (sum over classes, mean over samples),
/// the true KL per sample. PyTorch's kl_div(reduction="mean") also divides by the number of
/// classes; smax does not offer that.
///
/// Edge cases (the core's policy): a student logit -inf where the teacher has mass gives
/// +inf (the gradient stays finite: T (0 - q_c)); one +inf logit makes that side one-hot;
/// NaN, two +inf, or only -inf logits on either side make the sample's loss and gradient
/// NaN. Empty batch with mean: 0/0 = NaN; with sum: 0.

namespace smax {

/// Options of the distillation loss.
template <typename T>
struct distillation_options {
  /// mean (default): sum_n l_n / N, PyTorch's "batchmean"; sum: sum_n l_n. The per-sample
  /// functions ignore it; none is rejected by the scalar ones.
  ::smax::reduction reduction = ::smax::reduction::mean;
  /// T > 0, finite: both sides' logits are divided by T, and the loss is multiplied by T^2.
  T temperature = T(1);
};

namespace detail::loss {

template <loss_mode Mode, typename D, typename E, typename Axis, typename G, typename L, typename U>
typename D::Scalar kl_run(const char* fn, const Eigen::DenseBase<D>& student,
                          const Eigen::DenseBase<E>& teacher, Axis axis,
                          const distillation_options<typename D::Scalar>& o, const G& grad,
                          const L& losses, const U& upstream) {
  using T = typename D::Scalar;
  using A = acc_t<T>;
  static_check_scalar<D>();
  static_assert(std::is_same_v<typename E::Scalar, T>,
                "smax::distillation_loss: the teacher logits must have the student logits' "
                "scalar type");
  static_check_same_shape<D, E>();
  static_check_loss_outputs<Mode, G, D>();
  constexpr bool reduced_mode = Mode == loss_mode::loss || Mode == loss_mode::loss_grad;
  constexpr bool has_grad = mode_has_grad<Mode>;
  if constexpr (Mode == loss_mode::per_sample) {
    static_check_output<L, D>();
    static_check_loss_vector<L, D>("losses");
  }
  if constexpr (Mode == loss_mode::per_sample_backward) static_check_loss_vector<U, D>("dloss");

  const Index n_samples = sample_count(student, axis);
  const Index n_classes = class_count(student, axis);
  const T temperature = o.temperature;
  check_loss_temperature(fn, temperature);
  if constexpr (reduced_mode) {
    check_reduction(fn, o.reduction, "smax::distillation_loss_per_sample");
  }
  check_same_shape_as(fn, "teacher", teacher, student, "student");
  if constexpr (Mode == loss_mode::per_sample_backward) {
    check_upstream_length(fn, upstream, n_samples);
  }
  if constexpr (has_grad) {
    check_output_shape(fn, grad, student.rows(), student.cols(), "student");
  }
  if constexpr (Mode == loss_mode::per_sample) {
    check_output_length(fn, losses, n_samples, "one loss per sample");
  }

  const bool mean = o.reduction == ::smax::reduction::mean;
  const T red_scale = (reduced_mode && mean) ? static_cast<T>(A(1) / A(n_samples)) : T(1);
  reduction_total<T> total;
  with_loss_input<Mode>(student, grad, losses, [&](const auto& ss) {
    with_loss_input<Mode>(teacher, grad, losses, [&](const auto& tt) {
      with_upstream<Mode>(upstream, grad, [&](const auto& up) {
        if constexpr (has_grad) resize_to(grad, student.rows(), student.cols());
        if constexpr (Mode == loss_mode::per_sample) resize_to_length(losses, n_samples);
        const batch<const T> sb = make_batch(ss, axis);
        const batch<const T> tb = make_batch(tt, axis);
        batch<T> gb{nullptr, 0, 0, 0, 1};
        if constexpr (has_grad) gb = output_batch(grad, axis);
        for (Index d = 0; d < n_samples; ++d) {
          T gscale = red_scale;
          if constexpr (Mode == loss_mode::per_sample_backward) gscale = up.coeff(d);
          T* g = has_grad ? gb.data + d * gb.dstride : nullptr;
          const A loss =
              kl_sample(sb.data + d * sb.dstride, sb.kstride, tb.data + d * tb.dstride, tb.kstride,
                        n_classes, temperature, g, gb.kstride, gscale * temperature);
          if constexpr (Mode == loss_mode::per_sample) {
            writable(losses).coeffRef(d) = static_cast<T>(loss);
          } else {
            total.add(loss);
          }
        }
      });
    });
  });
  if constexpr (reduced_mode) {
    return static_cast<T>(mean ? total.mean(A(n_samples)) : total.sum());
  } else {
    return T(0);
  }
}

}  // namespace detail::loss

/// Distillation loss of one sample (compile-time vectors): T^2 KL(softmax(teacher / T) ||
/// softmax(student / T)). See the axis form. Allocates nothing.
template <typename D, typename E>
typename D::Scalar distillation_loss(const Eigen::DenseBase<D>& student,
                                     const Eigen::DenseBase<E>& teacher,
                                     const distillation_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::distillation_loss");
  return detail::loss::kl_run<detail::loss::loss_mode::loss>(
      "smax::distillation_loss", student, teacher, detail::vector_axis_t<D>{}, options,
      detail::loss::none_out, detail::loss::none_out, detail::loss::none_out);
}

/// Distillation loss of a batch (smax::rowwise: each row is a sample; smax::colwise: each
/// column): l_n = T^2 sum_c q_{n,c} (log q_{n,c} - log p_{n,c}) with q = softmax(teacher/T),
/// p = softmax(student/T); mean (PyTorch's "batchmean") = sum_n l_n / N, or sum.
///
/// Gradient with respect to the student logits (distillation_loss_with_grad):
/// T (p - q), divided by N for mean. No gradient flows to the teacher.
/// Edge cases: see this header's description. Complexity: per sample a max pass and an
/// exp-sum pass on each side, then one sweep with two vectorised exps per entry. Allocates
/// nothing (except to evaluate expression arguments).
/// \throws smax::error if the teacher's shape differs from the student's, the temperature
/// is not finite and > 0, or options.reduction is none (use
/// distillation_loss_per_sample).
template <typename D, typename E, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar distillation_loss(const Eigen::DenseBase<D>& student,
                                     const Eigen::DenseBase<E>& teacher, Axis axis,
                                     const distillation_options<typename D::Scalar>& options = {}) {
  return detail::loss::kl_run<detail::loss::loss_mode::loss>(
      "smax::distillation_loss", student, teacher, axis, options, detail::loss::none_out,
      detail::loss::none_out, detail::loss::none_out);
}

/// Allocation-free distillation loss of one sample; the gradient with respect to the
/// student logits goes to grad (which may be the student logits themselves).
template <typename Out, typename D, typename E>
typename D::Scalar distillation_loss_with_grad_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& student,
    const Eigen::DenseBase<E>& teacher,
    const distillation_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::distillation_loss_with_grad_into");
  return detail::loss::kl_run<detail::loss::loss_mode::loss_grad>(
      "smax::distillation_loss_with_grad_into", student, teacher, detail::vector_axis_t<D>{},
      options, grad.derived(), detail::loss::none_out, detail::loss::none_out);
}

/// Allocation-free distillation loss of a batch: returns the reduced loss and writes
/// T (p - q) / (N for mean, 1 for sum) into grad (resized if resizable, else the student's
/// shape; it may be the student or teacher logits themselves). Allocates nothing for inputs
/// with direct access. \throws smax::error as distillation_loss, or on a grad of the wrong
/// shape; grad is then untouched.
template <typename Out, typename D, typename E, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar distillation_loss_with_grad_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& student,
    const Eigen::DenseBase<E>& teacher, Axis axis,
    const distillation_options<typename D::Scalar>& options = {}) {
  return detail::loss::kl_run<detail::loss::loss_mode::loss_grad>(
      "smax::distillation_loss_with_grad_into", student, teacher, axis, options, grad.derived(),
      detail::loss::none_out, detail::loss::none_out);
}

/// Distillation loss of one sample and its gradient with respect to the student logits.
template <typename D, typename E>
loss_with_grad<typename D::Scalar, typename D::PlainObject> distillation_loss_with_grad(
    const Eigen::DenseBase<D>& student, const Eigen::DenseBase<E>& teacher,
    const distillation_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::distillation_loss_with_grad");
  loss_with_grad<typename D::Scalar, typename D::PlainObject> r{};
  r.loss = detail::loss::kl_run<detail::loss::loss_mode::loss_grad>(
      "smax::distillation_loss_with_grad", student, teacher, detail::vector_axis_t<D>{}, options,
      r.grad, detail::loss::none_out, detail::loss::none_out);
  return r;
}

/// Distillation loss of a batch and its gradient with respect to the student logits
/// (`.loss`, `.grad`); one fused computation. Allocates the gradient only.
template <typename D, typename E, typename Axis, detail::enable_if_axis_t<Axis> = 0>
loss_with_grad<typename D::Scalar, typename D::PlainObject> distillation_loss_with_grad(
    const Eigen::DenseBase<D>& student, const Eigen::DenseBase<E>& teacher, Axis axis,
    const distillation_options<typename D::Scalar>& options = {}) {
  loss_with_grad<typename D::Scalar, typename D::PlainObject> r{};
  r.loss = detail::loss::kl_run<detail::loss::loss_mode::loss_grad>(
      "smax::distillation_loss_with_grad", student, teacher, axis, options, r.grad,
      detail::loss::none_out, detail::loss::none_out);
  return r;
}

/// Per-sample distillation loss (reduction none): T^2 KL(q_n || p_n) for each sample, a
/// column for smax::rowwise, a row for smax::colwise. options.reduction is not used.
/// Allocates the result only.
template <typename D, typename E, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename detail::reduced<D, Axis>::type distillation_loss_per_sample(
    const Eigen::DenseBase<D>& student, const Eigen::DenseBase<E>& teacher, Axis axis,
    const distillation_options<typename D::Scalar>& options = {}) {
  typename detail::reduced<D, Axis>::type result;
  detail::loss::kl_run<detail::loss::loss_mode::per_sample>(
      "smax::distillation_loss_per_sample", student, teacher, axis, options, detail::loss::none_out,
      result, detail::loss::none_out);
  return result;
}

/// Backward pass of distillation_loss_per_sample: dloss_n T (p_n - q_n) for each sample,
/// written into grad (may be the student logits; dloss may not overlap it, else it is
/// copied). Allocates nothing for inputs with direct access.
template <typename Out, typename D, typename E, typename DL, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
void distillation_loss_per_sample_backward_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& student,
    const Eigen::DenseBase<E>& teacher, const Eigen::DenseBase<DL>& dloss, Axis axis,
    const distillation_options<typename D::Scalar>& options = {}) {
  detail::loss::kl_run<detail::loss::loss_mode::per_sample_backward>(
      "smax::distillation_loss_per_sample_backward_into", student, teacher, axis, options,
      grad.derived(), detail::loss::none_out, dloss.derived());
}

/// Backward pass of distillation_loss_per_sample, returning the gradient (student's plain
/// type).
template <typename D, typename E, typename DL, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject distillation_loss_per_sample_backward(
    const Eigen::DenseBase<D>& student, const Eigen::DenseBase<E>& teacher,
    const Eigen::DenseBase<DL>& dloss, Axis axis,
    const distillation_options<typename D::Scalar>& options = {}) {
  typename D::PlainObject grad;
  detail::loss::kl_run<detail::loss::loss_mode::per_sample_backward>(
      "smax::distillation_loss_per_sample_backward", student, teacher, axis, options, grad,
      detail::loss::none_out, dloss.derived());
  return grad;
}

}  // namespace smax
