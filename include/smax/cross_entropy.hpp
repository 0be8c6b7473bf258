// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>

#include <Eigen/Core>

#include <smax/axis.hpp>
#include <smax/detail/dispatch.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/detail/loss_kernels.hpp>
#include <smax/error.hpp>
#include <smax/softmax.hpp>

/// \file
/// Fused softmax cross-entropy (with PyTorch's CrossEntropyLoss semantics), its gradient,
/// per-sample losses, and nll_loss; plus the pieces the other losses share:
/// smax::reduction, smax::class_weights, smax::loss_with_grad.
///
/// Logits: a compile-time vector is one sample; a 2-D input takes smax::rowwise (each row
/// is one sample's logits, as PyTorch's (N, C)) or smax::colwise (each column is).
///
/// Targets are either
/// - class indices, one per sample: an integer (one sample), any Eigen integer vector
///   (VectorXi, Array<long, ...>, Map, Block), or a contiguous range of integers
///   (std::vector<int>, std::array<long, N>, a C array): anything `std::data` and `std::size`
///   accept; or
/// - class probabilities: an Eigen floating-point object of the logits' shape and scalar
///   type (soft labels).
///
/// The rules, exactly PyTorch's torch.nn.CrossEntropyLoss (checked against
/// aten/src/ATen/native/LossNLL.cpp and the CrossEntropyLoss documentation). With
/// log p_{n,c} = log_softmax(x_n / T)_c, C classes, N samples, w_c the class weight (1
/// without weights) and eps the label smoothing:
/// - Class indices y_n, per-sample loss
///     l_n = (1 - eps) w_{y_n} (-log p_{n,y_n}) + (eps / C) sum_c w_c (-log p_{n,c}),
///   and l_n = 0 for a sample whose y_n == ignore_index (it adds no loss, no gradient and no
///   weight). sum: sum_n l_n. mean: sum_n l_n / sum_{n not ignored} w_{y_n} (the count of
///   samples not ignored without weights): smoothing does not change the denominator.
/// - Class probabilities q_n, with q'_{n,c} = (1 - eps) q_{n,c} + eps / C,
///     l_n = sum_c w_c q'_{n,c} (-log p_{n,c}).
///   sum: sum_n l_n. mean: sum_n l_n / N: the weights do not enter the denominator.
///   ignore_index does not apply (see cross_entropy_options::ignore_index).
/// - Gradient: every case is l_n = sum_c a_{n,c} (-log p_{n,c}) with a_{n,c} >= 0, so
///     d l_n / d x_{n,c} = (A_n p_{n,c} - a_{n,c}) / T,   A_n = sum_c a_{n,c},
///   i.e. (softmax - target) times the weight factor A_n; mean divides by the denominator.
///   Without weights and smoothing A_n = 1: (p - onehot(y)) / T, or (p - q) / T.
///
/// Numerical policy (the core's, see softmax.hpp): logits of any finite magnitude (1e30,
/// FLT_MAX) never overflow into NaN; a -inf logit gets probability 0, so its gradient is
/// -a_{n,c} / T (exactly 0 for a class the target does not name); a class with a_{n,c} > 0
/// and logit -inf gives loss +inf (not NaN) and a finite gradient; a term whose coefficient
/// a_{n,c} is exactly 0 contributes 0 even where log p = -inf. A loss whose true value
/// exceeds the largest finite number (a target logit 2 * FLT_MAX below the maximum) is
/// +inf, its correct rounding.
/// Label smoothing puts mass on every class, so any -inf logit then gives +inf (as in
/// PyTorch). One +inf logit makes p one-hot on it; two, or any NaN, or only -inf logits make
/// that sample's loss and gradient NaN. Accumulation follows the core's exp-sum: sums over
/// classes in blocks of 256 summed in T, blocks combined pairwise in acc_t (double for
/// float); each sample's loss and the batch total are formed in acc_t. Logits may also be
/// long double (scalar code).
///
/// Where smax differs from PyTorch (PyTorch evaluates 0 * inf there): a zero coefficient
/// times a -inf log-probability (zero class weight, zero target probability, eps = 1 on the
/// target term) gives 0 in smax and NaN in PyTorch; an ignored sample's gradient row is 0
/// even when its logits are NaN.
///
/// Allocation: the `_into` forms never allocate when their inputs have direct access
/// (Matrix, Array, Map, Block, Ref) and the gradient is disjoint from the logits or the very
/// same elements (in place); an expression input, or a partial overlap, costs one
/// temporary. Errors throw smax::error before anything is written.

namespace smax {

/// How a loss combines its per-sample values. `none` is served by the separate
/// `*_per_sample` / `*_per_element` functions, which return one loss per sample.
enum class reduction {
  mean,  ///< Weighted mean (each loss documents its denominator).
  sum,   ///< Sum over samples.
  none   ///< Only for the per-sample functions; the scalar ones reject it.
};

/// A read-only view of per-class weights (PyTorch's `weight`): a pointer, a length and a
/// stride. It never owns or copies: the weights must outlive every call that uses them.
/// Default-constructed it is empty, meaning every class weighs 1.
///
/// Bind it to an lvalue Eigen vector with direct access (VectorXf, Map, a row or column
/// Block), a contiguous range (std::vector<float>, std::array), or a pointer and a length.
/// Temporaries that would dangle (`class_weights<float>(Eigen::VectorXf::Ones(3))`,
/// `std::vector<float>{...}`) are rejected at compile time.
template <typename T>
class class_weights {
  template <typename R>
  using range_of_t = std::enable_if_t<
      !detail::loss::is_eigen_v<std::decay_t<R>> &&
      std::is_same_v<typename detail::loss::range_value<std::decay_t<R>>::type, T>>;

 public:
  /// The weights' (and the logits') scalar type.
  using scalar_type = T;

  /// No weights: every class weighs 1.
  class_weights() = default;

  /// size weights at data[0], data[stride], ...
  class_weights(const T* data, Eigen::Index size, Eigen::Index stride = 1)
      : data_(data), size_(size), stride_(stride), bound_(true) {}

  /// A view of the Eigen vector w (which must outlive its use).
  template <typename D>
  class_weights(const Eigen::DenseBase<D>& w)  // NOLINT(google-explicit-constructor)
      : data_(w.derived().data()),
        size_(w.size()),
        stride_(detail::loss::vector_stride(w)),
        bound_(true) {
    static_assert(std::is_same_v<typename D::Scalar, T>,
                  "smax::class_weights: the weights must have the logits' scalar type");
    static_assert(D::IsVectorAtCompileTime,
                  "smax::class_weights: the weights must be a compile-time vector");
    static_assert(detail::has_direct_access<D>,
                  "smax::class_weights: the weights must be stored (a Matrix, Array, Map or "
                  "Block), not an expression; evaluate it into a variable first");
  }

  /// Rejected: a view of a temporary would dangle. Keep the vector in a variable.
  template <typename D>
  class_weights(Eigen::PlainObjectBase<D>&&) = delete;

  /// A view of a contiguous range of T (which must outlive its use).
  template <typename R, typename = range_of_t<R>>
  class_weights(const R& r)  // NOLINT(google-explicit-constructor)
      : data_(std::data(r)), size_(static_cast<Eigen::Index>(std::size(r))), bound_(true) {}

  /// Rejected: a view of a temporary range would dangle.
  template <typename R, typename = range_of_t<R>,
            typename = std::enable_if_t<!std::is_lvalue_reference_v<R>>>
  class_weights(R&& r) = delete;

  /// No weights were given (every class weighs 1). Weights bound to an empty vector are
  /// not "no weights": they have length 0, which the losses reject.
  bool empty() const { return !bound_; }
  /// Number of weights (0 when empty).
  Eigen::Index size() const { return size_; }
  /// Distance between consecutive weights, in elements.
  Eigen::Index stride() const { return stride_; }
  /// The first weight (nullptr when empty).
  const T* data() const { return data_; }
  /// Weight of class c (1 when empty).
  T operator[](Eigen::Index c) const { return bound_ ? data_[c * stride_] : T(1); }

 private:
  const T* data_ = nullptr;
  Eigen::Index size_ = 0;
  Eigen::Index stride_ = 1;
  bool bound_ = false;
};

/// Options of the cross-entropy functions, PyTorch's CrossEntropyLoss arguments with the same
/// names and defaults, plus a temperature. T is the logits' scalar type.
///
/// \code
/// smax::cross_entropy_options<float> opt;
/// opt.label_smoothing = 0.1f;
/// opt.weight = class_weight;   // an Eigen::VectorXf that outlives the call
/// float loss = smax::cross_entropy(logits, labels, smax::rowwise, opt);
/// \endcode
template <typename T>
struct cross_entropy_options {
  /// mean (default) or sum for the scalar functions; the per-sample functions ignore it.
  ::smax::reduction reduction = ::smax::reduction::mean;
  /// eps in [0, 1]: the target becomes (1 - eps) target + eps / C (uniform).
  T label_smoothing = T(0);
  /// Samples whose class index equals it are ignored. Class-index targets only: with
  /// probability targets a value >= 0 (one that could name a class) is an error and a
  /// negative one is inert, which is PyTorch's rule ("ignore_index is not supported for
  /// floating point target" when ignore_index >= 0).
  std::int64_t ignore_index = -100;
  /// Per-class weights (empty: all 1); entries >= 0, not NaN.
  class_weights<T> weight{};
  /// T > 0, finite: the logits are divided by T (the gradient is scaled by 1/T accordingly).
  /// Not a PyTorch option: cross_entropy(x / T) there.
  T temperature = T(1);
};

/// Options of nll_loss: PyTorch's NLLLoss arguments.
template <typename T>
struct nll_loss_options {
  /// mean (default) or sum for the scalar functions; the per-sample functions ignore it.
  ::smax::reduction reduction = ::smax::reduction::mean;
  /// Samples whose class index equals it are ignored (no loss, gradient or weight).
  std::int64_t ignore_index = -100;
  /// Per-class weights (empty: all 1); entries >= 0, not NaN.
  class_weights<T> weight{};
};

/// A loss and its gradient with respect to the logits, computed together.
template <typename T, typename Grad>
struct loss_with_grad {
  /// The loss (reduced as the options say).
  T loss;
  /// d loss / d logits, shaped like the logits.
  Grad grad;
};

namespace detail::loss {

template <typename T>
strided_view<T> view_of(const class_weights<T>& w) {
  // Bound to an empty range: a non-null pointer so the view is not "no weights" and the
  // length check reports it (the pointer is never read: the length is 0).
  static const T none{};
  if (!w.empty() && w.data() == nullptr) return {&none, w.size(), w.stride()};
  return {w.data(), w.size(), w.stride()};
}

inline void check_reduction(const char* function, ::smax::reduction r, const char* per_sample) {
  if (r == ::smax::reduction::none) {
    fail(function, "options.reduction", "reduction::none",
         std::string("reduction::mean or reduction::sum (for one loss per sample call ") +
             per_sample + ")");
  }
}

/// Placeholder for an output a mode does not have.
struct no_output {
  static constexpr bool IsVectorAtCompileTime = true;
};

enum class loss_mode { loss, loss_grad, per_sample, per_sample_backward };

template <loss_mode Mode>
inline constexpr bool mode_has_grad =
    Mode == loss_mode::loss_grad || Mode == loss_mode::per_sample_backward;

template <loss_mode Mode, typename G, typename D>
constexpr void static_check_loss_outputs() {
  if constexpr (mode_has_grad<Mode>) {
    static_check_output<G, D>();
    static_check_same_shape<G, D>();
  }
}

template <typename L, typename D>
constexpr void static_check_loss_vector(const char* /*what*/) {
  static_assert(L::IsVectorAtCompileTime,
                "smax: the per-sample losses / upstream gradients must be a compile-time vector "
                "(one value per sample)");
  static_assert(std::is_same_v<typename L::Scalar, typename D::Scalar>,
                "smax: the per-sample vector must have the logits' scalar type");
}

template <typename U>
void check_upstream_length(const char* function, const Eigen::DenseBase<U>& u, Index n) {
  if (u.size() != n) {
    fail(function, "dloss", "of length " + std::to_string(u.size()),
         "one upstream gradient per sample (" + std::to_string(n) + ")");
  }
}

/// Calls f with the logits in readable form for the mode's outputs (see with_readable).
template <loss_mode Mode, typename D, typename G, typename L, typename F>
void with_loss_input(const Eigen::DenseBase<D>& x, const G& grad, const L& losses, F&& f) {
  if constexpr (mode_has_grad<Mode>) {
    with_readable(x, grad, f);
  } else if constexpr (Mode == loss_mode::per_sample) {
    with_readable(x, losses, f);
  } else {
    with_evaluated(x, f);
  }
}

/// Calls f with the upstream gradients (disjoint from the gradient output), or with nothing.
template <loss_mode Mode, typename U, typename G, typename F>
void with_upstream(const U& up, const G& grad, F&& f) {
  if constexpr (Mode == loss_mode::per_sample_backward) {
    with_disjoint(up, grad, f);
  } else {
    f(up);
  }
}

/// The shared driver of every cross-entropy entry point: checks everything, then sweeps the
/// samples with ce_sample. Returns the reduced loss in the reduced modes.
template <loss_mode Mode, typename D, typename Targets, typename Axis, typename G, typename L,
          typename U>
typename D::Scalar ce_run(const char* fn, const Eigen::DenseBase<D>& logits, const Targets& targets,
                          Axis axis, const cross_entropy_options<typename D::Scalar>& o,
                          const G& grad, const L& losses, const U& upstream) {
  using T = typename D::Scalar;
  using A = acc_t<T>;
  static_check_scalar<D>();
  static_check_targets<Targets>();
  static_check_loss_outputs<Mode, G, D>();
  constexpr bool reduced_mode = Mode == loss_mode::loss || Mode == loss_mode::loss_grad;
  constexpr bool has_grad = mode_has_grad<Mode>;
  if constexpr (Mode == loss_mode::per_sample) {
    static_check_output<L, D>();
    static_check_loss_vector<L, D>("losses");
  }
  if constexpr (Mode == loss_mode::per_sample_backward) static_check_loss_vector<U, D>("dloss");

  const Index n_samples = sample_count(logits, axis);
  const Index n_classes = class_count(logits, axis);
  check_loss_temperature(fn, o.temperature);
  check_label_smoothing(fn, o.label_smoothing);
  const strided_view<T> w = view_of(o.weight);
  check_class_weights(fn, "options.weight", w, n_classes);
  if constexpr (reduced_mode) check_reduction(fn, o.reduction, "smax::cross_entropy_per_sample");
  if constexpr (Mode == loss_mode::per_sample_backward) {
    check_upstream_length(fn, upstream, n_samples);
  }
  if constexpr (has_grad) check_output_shape(fn, grad, logits.rows(), logits.cols(), "logits");
  if constexpr (Mode == loss_mode::per_sample) {
    check_output_length(fn, losses, n_samples, "one loss per sample");
  }

  const T temperature = o.temperature;
  const T eps = o.label_smoothing;
  const T smooth = n_classes == 0 ? T(0) : eps / static_cast<T>(n_classes);

  // A gradient too large to stay in cache: rows that can are written with non-temporal stores.
  const bool stream_grad =
      has_grad && stream_pays(n_samples * n_classes * static_cast<Index>(sizeof(T)));

  // The sweep: sample_loss(d, x, xs, g, gs, gscale) returns sample d's loss (and writes
  // its gradient row); panel(width, d, x, xs, g, gs, gscales, losses), when given, does
  // width (a std::integral_constant: panel_width<T, K>()) samples at once, or returns false
  // to leave them to sample_loss.
  const auto sweep = [&](auto&& sample_loss, auto&& panel, A denom) -> T {
    const bool mean = o.reduction == ::smax::reduction::mean;
    const T red_scale = (reduced_mode && mean) ? static_cast<T>(A(1) / denom) : T(1);
    reduction_total<T> total;
    with_loss_input<Mode>(logits, grad, losses, [&](const auto& xx) {
      with_upstream<Mode>(upstream, grad, [&](const auto& up) {
        if constexpr (has_grad) resize_to(grad, logits.rows(), logits.cols());
        if constexpr (Mode == loss_mode::per_sample) resize_to_length(losses, n_samples);
        const batch<const T> xb = make_batch(xx, axis);
        batch<T> gb{nullptr, 0, 0, 0, 1};
        if constexpr (has_grad) gb = output_batch(grad, axis);
        const auto gscale_of = [&](Index d) -> T {
          if constexpr (Mode == loss_mode::per_sample_backward) {
            return up.coeff(d);
          } else {
            return red_scale;
          }
        };
        const auto record = [&](Index d, A ld) {
          if constexpr (Mode == loss_mode::per_sample) {
            writable(losses).coeffRef(d) = static_cast<T>(ld);
          } else {
            total.add(ld);
          }
        };
        constexpr bool has_panel = !std::is_same_v<std::decay_t<decltype(panel)>, std::nullptr_t>;
        constexpr Index Wd = panel_width<T, direct_panel_packets>();
        constexpr Index Wt = panel_width<T, tiled_panel_packets>();
        // Samples contiguous, classes strided: panels read the batch where it lies.
        const bool direct = has_panel && Wd > 1 && xb.dstride == 1 && xb.kstride != 1 &&
                            (!has_grad || gb.dstride == 1);
        // Wide panels where they measured faster: with a gradient to write, or when even a
        // narrow panel's columns exceed L2 (the loss alone, in cache, ran 0.85-0.93x wide).
        const bool wide =
            direct && (has_grad || n_classes * Wt * Index(sizeof(T)) > (Index(1) << 20));
        // Short rows otherwise (C <= tile / W): panels of a transposed copy on the stack.
        constexpr Index tile_size = 8192 / Index(sizeof(T));
        const bool tiled = has_panel && Wt > 1 && !direct && n_classes * Wt <= tile_size;
        // Samples d .. d + W - 1 as one panel; false: left to sample_loss.
        const auto run_panel = [&](auto width, Index d) -> bool {
          constexpr Index W = decltype(width)::value;
          T gscales[W];
          A panel_losses[W];
          for (Index i = 0; i < W; ++i) gscales[i] = gscale_of(d + i);
          bool done = false;
          if (direct) {
            done = panel(width, d, xb.data + d, xb.kstride, has_grad ? gb.data + d : nullptr,
                         gb.kstride, gscales, panel_losses);
          } else {
            alignas(64) T tile[tile_size];
            // The register copy reads each sample up to panel_tile_reach: within the input
            // unless these are its last samples.
            const bool overrun = (d + W - 1) * xb.dstride + panel_tile_reach<W, T>(n_classes) <=
                                 (n_samples - 1) * xb.dstride + n_classes;
            panel_tile_in<W>(xb.data + d * xb.dstride, xb.dstride, xb.kstride, n_classes, overrun,
                             tile);
            done = panel(width, d, tile, W, has_grad ? tile : nullptr, W, gscales, panel_losses);
            if (done && has_grad) {
              panel_tile_out<W>(tile, gb.data + d * gb.dstride, gb.dstride, gb.kstride, n_classes);
            }
          }
          if (done) {
            if constexpr (Mode != loss_mode::per_sample && W > 1) {
              total.template add_all<static_cast<int>(W)>(panel_losses);
            } else {
              for (Index i = 0; i < W; ++i) record(d + i, panel_losses[i]);
            }
          }
          return done;
        };
        for (Index d = 0; d < n_samples;) {
          if constexpr (has_panel) {
            if (wide && d + Wd <= n_samples && run_panel(std::integral_constant<Index, Wd>{}, d)) {
              d += Wd;
              continue;
            }
            // Narrow panels: a whole tiled or narrow sweep, and what a wide one leaves (the
            // last < Wt samples then go one at a time, each at the column stride).
            if ((direct || tiled) && d + Wt <= n_samples &&
                run_panel(std::integral_constant<Index, Wt>{}, d)) {
              d += Wt;
              continue;
            }
          }
          const T* x = xb.data + d * xb.dstride;
          T* g = has_grad ? gb.data + d * gb.dstride : nullptr;
          record(d, sample_loss(d, x, xb.kstride, g, gb.kstride, gscale_of(d)));
          ++d;
        }
      });
    });
    if constexpr (reduced_mode) {
      return static_cast<T>(mean ? total.mean(denom) : total.sum());
    } else {
      return T(0);
    }
  };

  if constexpr (is_index_targets_v<Targets>) {
    T result(0);
    with_index_view(targets, [&](const auto& tv) {
      check_index_count(fn, tv, n_samples);
      const A denom = check_indices<T>(fn, tv, n_classes, o.ignore_index, w);
      const A w_sum =
          w.empty() ? static_cast<A>(n_classes)
                    : blocked_sum<A>(n_classes, [&](Index c) { return static_cast<A>(w[c]); });
      result = sweep(
          [&](Index d, const T* x, Index xs, T* g, Index gs, T gscale) -> A {
            const std::int64_t y = tv[d];
            if (y == o.ignore_index) {
              if (g != nullptr) fill(g, n_classes, gs, T(0));
              return A(0);
            }
            const Index yc = static_cast<Index>(y);
            const index_model<T> model{yc, (T(1) - eps) * w.or_one(yc), smooth, w, w_sum};
            return ce_sample(x, xs, n_classes, temperature, model, g, gs, gscale, stream_grad);
          },
          [&](auto width, Index d0, const T* x, Index xs, T* g, Index gs, const T* gscales,
              A* out) {
            constexpr Index W = decltype(width)::value;
            Index y[W];
            bool ignored[W];
            T hot[W];
            for (Index i = 0; i < W; ++i) {
              const std::int64_t yi = tv[d0 + i];
              ignored[i] = yi == o.ignore_index;
              y[i] = ignored[i] ? 0 : static_cast<Index>(yi);
              hot[i] = ignored[i] ? T(0) : (T(1) - eps) * w.or_one(y[i]);
            }
            const index_panel_params<T> pp{smooth, w, w_sum, temperature};
            constexpr Index K = W == panel_width<T, direct_panel_packets>() ? direct_panel_packets
                                                                            : tiled_panel_packets;
            return ce_index_panel<K>(x, xs, g, gs, n_classes, y, ignored, hot, gscales, pp, out);
          },
          static_cast<A>(denom));
    });
    return result;
  } else {
    static_assert(std::is_same_v<typename Targets::Scalar, T>,
                  "smax: probability 'targets' must have the logits' scalar type");
    static_check_same_shape<Targets, D>();
    check_same_shape_as(fn, "targets", targets, logits, "logits");
    if (o.ignore_index >= 0) {
      fail(fn, "options.ignore_index", std::to_string(o.ignore_index),
           "a negative value (the default -100) with probability targets: ignore_index "
           "applies to class-index targets only");
    }
    T result(0);
    const auto run = [&](const auto& q) {
      const batch<const T> qb = make_batch(q, axis);
      result = sweep(
          [&](Index d, const T* x, Index xs, T* g, Index gs, T gscale) -> A {
            const probability_model<T> model{qb.data + d * qb.dstride, qb.kstride, T(1) - eps,
                                             smooth, w};
            return ce_sample(x, xs, n_classes, temperature, model, g, gs, gscale);
          },
          nullptr, static_cast<A>(n_samples));
    };
    if constexpr (has_grad) {
      with_disjoint(targets, grad, run);
    } else {
      with_evaluated(targets, run);
    }
    return result;
  }
}

/// Driver of the nll_loss entry points: loss_n = -w_{y_n} log_probs_{n, y_n}.
template <loss_mode Mode, typename D, typename Targets, typename Axis, typename G, typename L>
typename D::Scalar nll_run(const char* fn, const Eigen::DenseBase<D>& log_probs,
                           const Targets& targets, Axis axis,
                           const nll_loss_options<typename D::Scalar>& o, const G& grad,
                           const L& losses) {
  using T = typename D::Scalar;
  using A = acc_t<T>;
  static_check_scalar<D>();
  static_assert(is_index_targets_v<Targets>,
                "smax::nll_loss: 'targets' must be class indices (an integer, an Eigen integer "
                "vector, or a contiguous range of integers)");
  static_check_loss_outputs<Mode, G, D>();
  constexpr bool reduced_mode = Mode == loss_mode::loss || Mode == loss_mode::loss_grad;
  constexpr bool has_grad = mode_has_grad<Mode>;
  if constexpr (Mode == loss_mode::per_sample) {
    static_check_output<L, D>();
    static_check_loss_vector<L, D>("losses");
  }
  const Index n_samples = sample_count(log_probs, axis);
  const Index n_classes = class_count(log_probs, axis);
  const strided_view<T> w = view_of(o.weight);
  check_class_weights(fn, "options.weight", w, n_classes);
  if constexpr (reduced_mode) check_reduction(fn, o.reduction, "smax::nll_loss_per_sample");
  if constexpr (has_grad) {
    check_output_shape(fn, grad, log_probs.rows(), log_probs.cols(), "log_probs");
  }
  if constexpr (Mode == loss_mode::per_sample) {
    check_output_length(fn, losses, n_samples, "one loss per sample");
  }
  T result(0);
  with_index_view(targets, [&](const auto& tv) {
    check_index_count(fn, tv, n_samples);
    const A denom = check_indices<T>(fn, tv, n_classes, o.ignore_index, w);
    const bool mean = o.reduction == ::smax::reduction::mean;
    const T scale = (reduced_mode && mean) ? static_cast<T>(A(1) / denom) : T(1);
    reduction_total<T> total;
    // Only one entry per sample is read, before that sample's gradient row is written, so
    // an exact alias of log_probs and grad is safe.
    with_loss_input<Mode>(log_probs, grad, losses, [&](const auto& lp) {
      if constexpr (has_grad) resize_to(grad, log_probs.rows(), log_probs.cols());
      if constexpr (Mode == loss_mode::per_sample) resize_to_length(losses, n_samples);
      const batch<const T> b = make_batch(lp, axis);
      batch<T> gb{nullptr, 0, 0, 0, 1};
      if constexpr (has_grad) gb = output_batch(grad, axis);
      for (Index d = 0; d < n_samples; ++d) {
        const std::int64_t y = tv[d];
        A ld(0);
        T gy(0);
        if (y != o.ignore_index) {
          const Index yc = static_cast<Index>(y);
          const T wy = w.or_one(yc);
          ld = wy == T(0)
                   ? A(0)
                   : -static_cast<A>(wy) * static_cast<A>(b.data[d * b.dstride + yc * b.kstride]);
          gy = -wy * scale;
          if constexpr (has_grad) {
            T* g = gb.data + d * gb.dstride;
            fill(g, n_classes, gb.kstride, T(0));
            g[yc * gb.kstride] = gy;
          }
        } else if constexpr (has_grad) {
          fill(gb.data + d * gb.dstride, n_classes, gb.kstride, T(0));
        }
        if constexpr (Mode == loss_mode::per_sample) {
          writable(losses).coeffRef(d) = static_cast<T>(ld);
        } else {
          total.add(ld);
        }
      }
    });
    if constexpr (reduced_mode) {
      result = static_cast<T>(mean ? total.mean(denom) : total.sum());
    }
  });
  return result;
}

inline constexpr no_output none_out{};

}  // namespace detail::loss

// ---------------------------------------------------------------------------------------
// cross_entropy

/// Softmax cross-entropy of the logits of one sample (a compile-time vector) against a class
/// index (an integer, or a range of one) or a probability vector of the same shape.
///
/// Formula, gradient, options and edge cases: see the axis form below and this header's
/// description. Complexity: one max pass and one exp-sum pass over the logits (plus one
/// linear pass with label smoothing or probability targets). Allocates nothing (except to
/// evaluate an expression argument).
/// \throws smax::error on any invalid argument (see the axis form).
template <typename D, typename Targets>
typename D::Scalar cross_entropy(const Eigen::DenseBase<D>& logits, const Targets& targets,
                                 const cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::cross_entropy");
  return detail::loss::ce_run<detail::loss::loss_mode::loss>(
      "smax::cross_entropy", logits, targets, detail::vector_axis_t<D>{}, options,
      detail::loss::none_out, detail::loss::none_out, detail::loss::none_out);
}

/// Softmax cross-entropy of a batch of logits (smax::rowwise: each row is a sample, as
/// PyTorch's (N, C); smax::colwise: each column is), reduced by options.reduction.
///
/// Index targets: l_n = (1 - eps) w_{y_n} (-log p_{n,y_n}) + (eps / C) sum_c w_c (-log p_{n,c}),
/// 0 when y_n == ignore_index; mean = sum_n l_n / sum_{n not ignored} w_{y_n}.
/// Probability targets: l_n = sum_c w_c ((1 - eps) q_{n,c} + eps / C) (-log p_{n,c});
/// mean = sum_n l_n / N. Here p_n = softmax(x_n / T).
///
/// Gradient (cross_entropy_with_grad): (A_n p_n - a_n) / T per sample, divided by the mean
/// denominator; see the header description.
///
/// Edge cases: the mean over nothing (every sample ignored, an empty batch, or target
/// weights that sum to 0) is 0/0 = NaN, as in PyTorch; the sum is then 0. A target class
/// whose logit is -inf gives +inf. See the header description for the rest of the policy.
///
/// Complexity: per sample one max pass, one exp-sum pass (plus one linear pass with label
/// smoothing or probability targets), O(N) to check the targets and O(C) the weights.
/// Allocates nothing (except to evaluate an expression argument).
/// \throws smax::error if options.reduction is none (use cross_entropy_per_sample), the
/// temperature is not finite and > 0, label_smoothing is outside [0, 1], the weights do not
/// have one entry >= 0 per class, the index targets are not one per sample or an index is
/// neither ignore_index nor in [0, C) (the message names the sample and the value), the
/// probability targets are not shaped like the logits, or ignore_index >= 0 with
/// probability targets.
template <typename D, typename Targets, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar cross_entropy(const Eigen::DenseBase<D>& logits, const Targets& targets,
                                 Axis axis,
                                 const cross_entropy_options<typename D::Scalar>& options = {}) {
  return detail::loss::ce_run<detail::loss::loss_mode::loss>(
      "smax::cross_entropy", logits, targets, axis, options, detail::loss::none_out,
      detail::loss::none_out, detail::loss::none_out);
}

/// Allocation-free fused cross-entropy of one sample: returns the loss and writes d loss /
/// d logits into grad (resized if it is a resizable plain object, else it must have the
/// logits' shape; it may be the logits themselves, for an in-place update).
/// \throws smax::error as cross_entropy, or if grad has the wrong shape; grad is then
/// untouched.
template <typename Out, typename D, typename Targets>
typename D::Scalar cross_entropy_with_grad_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& logits, const Targets& targets,
    const cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::cross_entropy_with_grad_into");
  return detail::loss::ce_run<detail::loss::loss_mode::loss_grad>(
      "smax::cross_entropy_with_grad_into", logits, targets, detail::vector_axis_t<D>{}, options,
      grad.derived(), detail::loss::none_out, detail::loss::none_out);
}

/// Allocation-free fused cross-entropy of a batch: returns the reduced loss and writes its
/// gradient with respect to the logits into grad, in the same sweep: per sample one max
/// pass, one exp-sum pass that stores exp((x - max)/T) into grad, and one scaling pass that
/// turns it into (A_n p_n - a_n) / (T * denominator) (sum: denominator 1). Ignored samples
/// get a zero gradient row.
///
/// grad: resized if it is a resizable plain object, else it must have the logits' shape.
/// It may be the logits themselves (in place); probability targets may alias neither.
/// Allocates nothing when the inputs have direct access and grad does not partially overlap
/// them. \throws smax::error as cross_entropy, or if grad has the wrong shape; grad is then
/// untouched.
template <typename Out, typename D, typename Targets, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar cross_entropy_with_grad_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& logits, const Targets& targets,
    Axis axis, const cross_entropy_options<typename D::Scalar>& options = {}) {
  return detail::loss::ce_run<detail::loss::loss_mode::loss_grad>(
      "smax::cross_entropy_with_grad_into", logits, targets, axis, options, grad.derived(),
      detail::loss::none_out, detail::loss::none_out);
}

/// Fused cross-entropy of one sample and its gradient: `.loss` and `.grad` (the logits'
/// plain type). Same as cross_entropy_with_grad_into, which it calls; allocates the gradient
/// only (nothing for fixed sizes).
template <typename D, typename Targets>
loss_with_grad<typename D::Scalar, typename D::PlainObject> cross_entropy_with_grad(
    const Eigen::DenseBase<D>& logits, const Targets& targets,
    const cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::cross_entropy_with_grad");
  loss_with_grad<typename D::Scalar, typename D::PlainObject> r{};
  r.loss = detail::loss::ce_run<detail::loss::loss_mode::loss_grad>(
      "smax::cross_entropy_with_grad", logits, targets, detail::vector_axis_t<D>{}, options, r.grad,
      detail::loss::none_out, detail::loss::none_out);
  return r;
}

/// Fused cross-entropy of a batch and its gradient with respect to the logits: `.loss` (the
/// reduced loss, as cross_entropy) and `.grad` (the logits' plain type, Array stays Array).
/// One fused computation (cross_entropy_with_grad_into); allocates the gradient only.
template <typename D, typename Targets, typename Axis, detail::enable_if_axis_t<Axis> = 0>
loss_with_grad<typename D::Scalar, typename D::PlainObject> cross_entropy_with_grad(
    const Eigen::DenseBase<D>& logits, const Targets& targets, Axis axis,
    const cross_entropy_options<typename D::Scalar>& options = {}) {
  loss_with_grad<typename D::Scalar, typename D::PlainObject> r{};
  r.loss = detail::loss::ce_run<detail::loss::loss_mode::loss_grad>(
      "smax::cross_entropy_with_grad", logits, targets, axis, options, r.grad,
      detail::loss::none_out, detail::loss::none_out);
  return r;
}

/// Allocation-free per-sample cross-entropy (PyTorch's reduction='none'): writes l_n of
/// every sample (0 for ignored ones) into the vector losses (resized if resizable, either
/// orientation). options.reduction is not used. Same formulas, policy, complexity and
/// errors as cross_entropy, plus an error if losses cannot hold one value per sample.
template <typename Out, typename D, typename Targets, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
void cross_entropy_per_sample_into(const Eigen::DenseBase<Out>& losses,
                                   const Eigen::DenseBase<D>& logits, const Targets& targets,
                                   Axis axis,
                                   const cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::loss::ce_run<detail::loss::loss_mode::per_sample>(
      "smax::cross_entropy_per_sample_into", logits, targets, axis, options, detail::loss::none_out,
      losses.derived(), detail::loss::none_out);
}

/// Per-sample cross-entropy (PyTorch's reduction='none'): one loss per sample, a column for
/// smax::rowwise and a row for smax::colwise (Array input gives an Array). Ignored samples
/// get 0. options.reduction is not used. Allocates the result only.
template <typename D, typename Targets, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename detail::reduced<D, Axis>::type cross_entropy_per_sample(
    const Eigen::DenseBase<D>& logits, const Targets& targets, Axis axis,
    const cross_entropy_options<typename D::Scalar>& options = {}) {
  typename detail::reduced<D, Axis>::type result;
  detail::loss::ce_run<detail::loss::loss_mode::per_sample>(
      "smax::cross_entropy_per_sample", logits, targets, axis, options, detail::loss::none_out,
      result, detail::loss::none_out);
  return result;
}

/// Allocation-free backward pass of cross_entropy_per_sample: given the upstream gradients
/// dloss_n = dL/dl_n (one per sample), writes dL/dx_n = dloss_n (A_n p_n - a_n) / T into
/// grad (ignored samples: 0). grad may be the logits themselves; dloss may not overlap grad
/// (it is then copied). options.reduction is not used. Same complexity as
/// cross_entropy_with_grad_into; allocates nothing for inputs with direct access.
/// \throws smax::error as cross_entropy, if dloss does not have one entry per sample, or
/// grad has the wrong shape; grad is then untouched.
template <typename Out, typename D, typename Targets, typename DL, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
void cross_entropy_per_sample_backward_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& logits, const Targets& targets,
    const Eigen::DenseBase<DL>& dloss, Axis axis,
    const cross_entropy_options<typename D::Scalar>& options = {}) {
  detail::loss::ce_run<detail::loss::loss_mode::per_sample_backward>(
      "smax::cross_entropy_per_sample_backward_into", logits, targets, axis, options,
      grad.derived(), detail::loss::none_out, dloss.derived());
}

/// Backward pass of cross_entropy_per_sample; see cross_entropy_per_sample_backward_into.
/// Returns the gradient in the logits' plain type; allocates it only.
template <typename D, typename Targets, typename DL, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject cross_entropy_per_sample_backward(
    const Eigen::DenseBase<D>& logits, const Targets& targets, const Eigen::DenseBase<DL>& dloss,
    Axis axis, const cross_entropy_options<typename D::Scalar>& options = {}) {
  typename D::PlainObject grad;
  detail::loss::ce_run<detail::loss::loss_mode::per_sample_backward>(
      "smax::cross_entropy_per_sample_backward", logits, targets, axis, options, grad,
      detail::loss::none_out, dloss.derived());
  return grad;
}

// ---------------------------------------------------------------------------------------
// nll_loss

/// Negative log-likelihood of one sample's log-probabilities (a compile-time vector) at a
/// class index: -w_y log_probs_y. See the axis form.
template <typename D, typename Targets>
typename D::Scalar nll_loss(const Eigen::DenseBase<D>& log_probs, const Targets& targets,
                            const nll_loss_options<typename D::Scalar>& options = {}) {
  detail::static_check_vector<D>("smax::nll_loss");
  return detail::loss::nll_run<detail::loss::loss_mode::loss>(
      "smax::nll_loss", log_probs, targets, detail::vector_axis_t<D>{}, options,
      detail::loss::none_out, detail::loss::none_out);
}

/// Negative log-likelihood for users who already hold log-probabilities (PyTorch's NLLLoss):
/// l_n = -w_{y_n} log_probs_{n,y_n}, 0 when y_n == ignore_index; sum = sum_n l_n; mean =
/// sum_n l_n / sum_{n not ignored} w_{y_n} (0/0 = NaN when nothing is left).
/// cross_entropy(x, y) == nll_loss(log_softmax(x), y) without smoothing.
///
/// Gradient (nll_loss_with_grad): -w_{y_n} / denominator at (n, y_n), 0 elsewhere.
/// Edge cases: log_probs are used as given (no check that they normalise); a zero weight
/// times a -inf log-probability is 0. Complexity O(N) reads plus O(C) weight checks;
/// allocates nothing (except to evaluate an expression argument).
/// \throws smax::error if options.reduction is none (use nll_loss_per_sample), the weights
/// are bad, or a target is neither ignore_index nor in [0, C) (naming sample and value).
template <typename D, typename Targets, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar nll_loss(const Eigen::DenseBase<D>& log_probs, const Targets& targets, Axis axis,
                            const nll_loss_options<typename D::Scalar>& options = {}) {
  return detail::loss::nll_run<detail::loss::loss_mode::loss>("smax::nll_loss", log_probs, targets,
                                                              axis, options, detail::loss::none_out,
                                                              detail::loss::none_out);
}

/// Allocation-free nll_loss with its gradient with respect to log_probs written into grad
/// (the shape of log_probs; may be log_probs itself). Returns the reduced loss.
template <typename Out, typename D, typename Targets, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
typename D::Scalar nll_loss_with_grad_into(
    const Eigen::DenseBase<Out>& grad, const Eigen::DenseBase<D>& log_probs, const Targets& targets,
    Axis axis, const nll_loss_options<typename D::Scalar>& options = {}) {
  return detail::loss::nll_run<detail::loss::loss_mode::loss_grad>(
      "smax::nll_loss_with_grad_into", log_probs, targets, axis, options, grad.derived(),
      detail::loss::none_out);
}

/// nll_loss and its gradient with respect to log_probs: `.loss` and `.grad`.
template <typename D, typename Targets, typename Axis, detail::enable_if_axis_t<Axis> = 0>
loss_with_grad<typename D::Scalar, typename D::PlainObject> nll_loss_with_grad(
    const Eigen::DenseBase<D>& log_probs, const Targets& targets, Axis axis,
    const nll_loss_options<typename D::Scalar>& options = {}) {
  loss_with_grad<typename D::Scalar, typename D::PlainObject> r{};
  r.loss = detail::loss::nll_run<detail::loss::loss_mode::loss_grad>(
      "smax::nll_loss_with_grad", log_probs, targets, axis, options, r.grad,
      detail::loss::none_out);
  return r;
}

/// Per-sample nll_loss (reduction='none'): -w_{y_n} log_probs_{n,y_n}, 0 for ignored
/// samples; a column for smax::rowwise, a row for smax::colwise. options.reduction is not
/// used. Allocates the result only.
template <typename D, typename Targets, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename detail::reduced<D, Axis>::type nll_loss_per_sample(
    const Eigen::DenseBase<D>& log_probs, const Targets& targets, Axis axis,
    const nll_loss_options<typename D::Scalar>& options = {}) {
  typename detail::reduced<D, Axis>::type result;
  detail::loss::nll_run<detail::loss::loss_mode::per_sample>("smax::nll_loss_per_sample", log_probs,
                                                             targets, axis, options,
                                                             detail::loss::none_out, result);
  return result;
}

}  // namespace smax
