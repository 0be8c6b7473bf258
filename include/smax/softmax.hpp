// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include <smax/axis.hpp>
#include <smax/detail/dispatch.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/error.hpp>

/// \file
/// softmax, log_softmax, logsumexp, their temperature forms and their backward passes.
///
/// Every function takes any Eigen dense object: Array or Matrix, fixed or dynamic size,
/// either storage order, Map, Ref, Block, and expressions such as `A * x + b` (evaluated
/// once). A compile-time vector is one distribution; a 2-D input takes smax::rowwise (each
/// row is a distribution) or smax::colwise (each column is).
///
/// Numerical policy (README, "Numerical policy"): the result is the mathematical limit
/// wherever it exists and NaN exactly where it does not.
/// - Finite inputs of any magnitude never overflow or underflow into NaN or inf: the
///   exponent is (z_i - max) / T, computed so that it cannot overflow while finite.
/// - -inf entries get probability exactly 0 (log-probability -inf). A distribution of only
///   -inf: softmax and log_softmax NaN, logsumexp -inf.
/// - One +inf entry: one-hot on it (log_softmax 0 there, -inf elsewhere); two or more: NaN
///   (logsumexp +inf).
/// - Any NaN makes its whole distribution NaN.
/// - Probabilities below the smallest subnormal are exactly 0; subnormal ones are correct
///   to an ULP of the subnormal grid.
/// - Empty input: empty output; logsumexp of nothing is -inf.
///
/// Accuracy (float and double, measured against a long double / MPFR reference): softmax
/// within 4 ULP (float; 5 for double; the full sweep in docs/accuracy.md finds up to 5.1 /
/// 6.8 on contiguous rows) + |z_i - max| / T * eps relative (the rounding of (z_i - max)
/// / T, two roundings when T != 1 and one, eps/2, when T = 1, amplified by exp: no max-shifted
/// algorithm avoids it); log_softmax and logsumexp within 4 ULP of
/// max(|result|, 1) (cancellation near 0 is unavoidable). Sums of exponentials are
/// accumulated pairwise, in double for float input.
///
/// Allocation: the `_into` forms write into caller storage and never allocate when the
/// input has direct access (Matrix, Array, Map, Block, Ref) and is either disjoint from the
/// output or the very same elements (in place). An expression input, or an input that
/// partially overlaps the output, is first evaluated into one temporary.
///
/// Errors: invalid arguments throw smax::error before anything is written.
///
/// Large outputs: with AVX-512, a call whose output holds 16 MiB or more (log_softmax and
/// the backward passes) writes it with non-temporal stores, which skip reading each
/// output line from memory first (256 x 32000 floats: 1.2-1.5x); the output is then in
/// memory, not in cache. Define SMAX_STREAM_MIN_BYTES (bytes) before including smax to
/// move the threshold.

namespace smax {

namespace detail {

template <typename T>
void check_forward_temperature(const char* function, T temperature) {
  if (is_nan(temperature) || !(temperature >= T(0))) {
    fail(function, "temperature", to_text(temperature),
         "a number >= 0 (0 is the argmax limit, +inf the uniform limit)");
  }
}

template <typename T>
void check_backward_temperature(const char* function, T temperature) {
  if (is_nan(temperature) || !(temperature > T(0))) {
    fail(function, "temperature", to_text(temperature),
         "a number > 0 (+inf allowed; the T = 0 limit is piecewise constant and has no "
         "gradient)");
  }
}

template <typename Y, typename DY>
void check_same_shape(const char* function, const Eigen::DenseBase<Y>& y,
                      const Eigen::DenseBase<DY>& dy, const char* y_name) {
  if (y.rows() != dy.rows() || y.cols() != dy.cols()) {
    fail(function, "dy", "of shape " + shape_text(dy.rows(), dy.cols()),
         "the shape of '" + std::string(y_name) + "' (" + shape_text(y.rows(), y.cols()) + ")");
  }
}

/// Calls f with x itself when it can be read while out is written, else with a plain copy.
template <typename X, typename Out, typename F>
void with_readable(const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Out>& out, F&& f) {
  if constexpr (has_direct_access<X>) {
    if (safe_to_stream(x, out)) {
      f(x.derived());
      return;
    }
  }
  const typename X::PlainObject copy = x;
  f(copy);
}

template <typename Out, typename Axis>
auto output_batch(const Eigen::DenseBase<Out>& out, Axis axis) {
  auto b = make_batch(out, axis);
  using T = typename Out::Scalar;
  return batch<T>{const_cast<T*>(b.data), b.count, b.length, b.dstride, b.kstride};
}

template <forward_op Op, typename T>
void run_forward_serial(const batch<const T>& in, const batch<T>& out, T temperature,
                        bool stream = false) {
  if (in.kstride != 1 && in.dstride == 1 && out.dstride == 1 && in.count > 1) {
    // Distributions side by side (rows of a column-major matrix): vectorise across them.
    forward_across<Op>(in.data, in.kstride, out.data, out.kstride, in.count, in.length, temperature,
                       stream);
    return;
  }
  if (in.length <= short_length<T> && in.count > 1) {
    Index done = 0;
    if (in.kstride == 1 && out.kstride == 1 && in.dstride >= in.length &&
        out.dstride >= in.length) {
      done = forward_short_rows<Op>(in.data, in.dstride, out.data, out.dstride, in.count, in.length,
                                    temperature);
    }
    if (done < in.count) {
      forward_short<Op>(in.data + done * in.dstride, in.dstride, in.kstride,
                        out.data + done * out.dstride, out.dstride, out.kstride, in.count - done,
                        in.length, temperature);
    }
    return;
  }
  const bool prefetch_rows =
      in.kstride == 1 && in.length * static_cast<Index>(sizeof(T)) <= (Index(256) << 10);
  for (Index d = 0; d < in.count; ++d) {
    const T* x = in.data + d * in.dstride;
    // The next row's lines, prefetched while this row's exponentials run (256 x 32000
    // floats: log_softmax 1.53 -> 1.84 G/s, softmax 2.25 -> 2.31; rows past L2 lost,
    // 16 x 1048576 softmax 2.00 -> 1.83).
    const T* ahead = prefetch_rows && d + 1 < in.count ? x + in.dstride : nullptr;
    forward_one<Op>(x, in.kstride, out.data + d * out.dstride, out.kstride, in.length, temperature,
                    stream, ahead);
  }
}

template <forward_op Op, typename T>
void run_forward(const batch<const T>& in, const batch<T>& out, T temperature) {
  // Nothing to write.
  if (in.count == 0 || in.length == 0) return;
  const Index align = split_align<T>(in.dstride, in.kstride, in.length);
  const bool stream = stream_pays(in.count * in.length * static_cast<Index>(sizeof(T)));
  for_each_range(in.count, in.length, align, [&](Index begin, Index end) {
    run_forward_serial<Op>(sub_batch(in, begin, end), sub_batch(out, begin, end), temperature,
                           stream);
  });
}

/// Whether n entries at a and at b are either the same entries or disjoint (compared as
/// addresses: the two may point into different objects).
template <typename T>
bool same_or_apart(const T* a, const T* b, Index n) {
  const auto p = reinterpret_cast<std::uintptr_t>(a), q = reinterpret_cast<std::uintptr_t>(b);
  const auto bytes = static_cast<std::uintptr_t>(n) * sizeof(T);
  return p == q || p + bytes <= q || q + bytes <= p;
}

/// One contiguous distribution shorter than a packet (a Vector3f, a 1x3 row) straight to
/// forward_tiny, past the batch dispatch, which took longer than the distribution itself
/// (Vector3f softmax_into 20.3 -> 13.2 ns a call, dynamic 1x3 row 28.4 -> 13.0, Vector3d
/// 23.7 -> 13.2). The results are forward_one's, which takes the same kernel. False
/// (nothing written) where it does not apply, including an output that partly overlaps z
/// (the batch path copies z first).
template <forward_op Op, typename Out, typename D, typename Axis>
bool forward_single_tiny([[maybe_unused]] const Eigen::DenseBase<Out>& out,
                         [[maybe_unused]] const Eigen::DenseBase<D>& z, [[maybe_unused]] Axis axis,
                         [[maybe_unused]] typename D::Scalar temperature) {
  using T = typename D::Scalar;
  if constexpr (has_direct_access<D> && has_direct_access<Out> && has_packet_exp<T>) {
    constexpr Index ps = Eigen::internal::packet_traits<T>::size;
    if constexpr (D::SizeAtCompileTime == Eigen::Dynamic || D::SizeAtCompileTime < ps) {
      if (out.rows() != z.rows() || out.cols() != z.cols()) return false;
      const batch<const T> in = make_batch(z, axis);
      const batch<T> o = output_batch(out, axis);
      const Index n = in.length;
      if (in.count != 1 || n == 0 || n >= ps || in.kstride != 1 || o.kstride != 1 ||
          !same_or_apart<T>(in.data, o.data, n)) {
        return false;
      }
      return forward_tiny<Op>(in.data, o.data, n, temperature);
    }
  }
  return false;
}

template <forward_op Op, typename Out, typename D, typename Axis>
void forward_into(const char* function, const Eigen::DenseBase<Out>& out,
                  const Eigen::DenseBase<D>& z, Axis axis, typename D::Scalar temperature) {
  static_check_scalar<D>();
  static_check_output<Out, D>();
  static_check_same_shape<Out, D>();
  check_forward_temperature(function, temperature);
  check_output_shape(function, out, z.rows(), z.cols(), "z");
  if (forward_single_tiny<Op>(out, z, axis, temperature)) return;
  with_readable(z, out, [&](const auto& zz) {
    resize_to(out, z.rows(), z.cols());
    run_forward<Op>(make_batch(zz, axis), output_batch(out, axis), temperature);
  });
}

template <forward_op Op, typename D, typename Axis>
typename D::PlainObject forward_value(const char* function, const Eigen::DenseBase<D>& z, Axis axis,
                                      typename D::Scalar temperature) {
  static_check_scalar<D>();
  check_forward_temperature(function, temperature);
  typename D::PlainObject result;
  if constexpr (has_direct_access<D>) {
    result.resize(z.rows(), z.cols());
    if (forward_single_tiny<Op>(result, z, axis, temperature)) return result;
    run_forward<Op>(make_batch(z, axis), output_batch(result, axis), temperature);
  } else {
    result = z;  // evaluate the expression once, then work in place
    run_forward<Op>(make_batch(result, axis), output_batch(result, axis), temperature);
  }
  return result;
}

template <typename D>
constexpr void static_check_vector(const char* /*function*/) {
  static_assert(D::IsVectorAtCompileTime,
                "smax: this input is not a compile-time vector, so it is ambiguous which "
                "entries form a distribution; pass smax::rowwise (each row is one) or "
                "smax::colwise (each column is one) as the second argument");
}

enum class backward_op { softmax, log_softmax };

/// The checks every backward pass starts with (types, temperature, dy's shape; the output's
/// shape is left to the caller, which may check more first). Returns the name of y.
template <backward_op Op, typename Out, typename Y, typename DY>
const char* check_backward_inputs(const char* function, const Eigen::DenseBase<Y>& y,
                                  const Eigen::DenseBase<DY>& dy, typename Y::Scalar temperature) {
  static_check_scalar<Y>();
  static_assert(std::is_same_v<typename DY::Scalar, typename Y::Scalar>,
                "smax: 'dy' must have the same scalar type as 'y'");
  static_check_output<Out, Y>();
  static_check_same_shape<Y, DY>();
  static_check_same_shape<Out, Y>();
  const char* y_name = Op == backward_op::softmax ? "y" : "logy";
  check_backward_temperature(function, temperature);
  check_same_shape(function, y, dy, y_name);
  return y_name;
}

/// The backward pass of one contiguous distribution shorter than a packet straight to the
/// row kernel, past the batch dispatch (dynamic 1x3 row softmax_backward_into 29.1 -> 6.7 ns
/// a call; Vector3f, with packet_row_backward's registers, 13.9 -> 4.75). It is the kernel
/// the batch path gives a single row, so the same results. False (nothing written) where it
/// does not apply, including an output that partly overlaps y or dy.
template <backward_op Op, typename Out, typename Y, typename DY, typename Axis>
bool backward_single_tiny([[maybe_unused]] const Eigen::DenseBase<Out>& out,
                          [[maybe_unused]] const Eigen::DenseBase<Y>& y,
                          [[maybe_unused]] const Eigen::DenseBase<DY>& dy,
                          [[maybe_unused]] Axis axis,
                          [[maybe_unused]] typename Y::Scalar temperature) {
  using T = typename Y::Scalar;
  constexpr Index ps = Eigen::internal::packet_traits<T>::size;
  if constexpr (has_direct_access<Y> && has_direct_access<DY> && has_direct_access<Out> &&
                (Y::SizeAtCompileTime == Eigen::Dynamic || Y::SizeAtCompileTime < ps)) {
    if (out.rows() != y.rows() || out.cols() != y.cols()) return false;
    const batch<const T> yb = make_batch(y, axis), db = make_batch(dy, axis);
    const batch<T> ob = output_batch(out, axis);
    const Index n = yb.length;
    if (yb.count != 1 || n == 0 || n >= ps || yb.kstride != 1 || db.kstride != 1 ||
        ob.kstride != 1 || !same_or_apart<T>(yb.data, ob.data, n) ||
        !same_or_apart<T>(db.data, ob.data, n)) {
      return false;
    }
    if constexpr (Op == backward_op::softmax) {
      softmax_backward_one(yb.data, 1, db.data, 1, ob.data, 1, n, temperature);
    } else {
      log_softmax_backward_one(yb.data, 1, db.data, 1, ob.data, 1, n, temperature);
    }
    return true;
  }
  return false;
}

template <backward_op Op, typename Out, typename Y, typename DY, typename Axis>
void backward_into(const char* function, const Eigen::DenseBase<Out>& out,
                   const Eigen::DenseBase<Y>& y, const Eigen::DenseBase<DY>& dy, Axis axis,
                   typename Y::Scalar temperature) {
  using T = typename Y::Scalar;
  const char* y_name = check_backward_inputs<Op, Out>(function, y, dy, temperature);
  check_output_shape(function, out, y.rows(), y.cols(), y_name);
  if (backward_single_tiny<Op>(out, y, dy, axis, temperature)) return;
  with_readable(y, out, [&](const auto& yy) {
    with_readable(dy, out, [&](const auto& dd) {
      resize_to(out, y.rows(), y.cols());
      const batch<const T> yb = make_batch(yy, axis);
      const batch<const T> db = make_batch(dd, axis);
      const batch<T> ob = output_batch(out, axis);
      if (yb.count == 0 || yb.length == 0) return;  // nothing to write
      const bool side_by_side =
          yb.dstride == 1 && db.dstride == 1 && ob.dstride == 1 && yb.kstride != 1 && yb.count > 1;
      const Index align = side_by_side ? lane_block : Index(1);
      const bool stream = stream_pays(yb.count * yb.length * static_cast<Index>(sizeof(T)));
      for_each_range(yb.count, yb.length, align, [&](Index begin, Index end) {
        if (side_by_side) {
          // Distributions side by side (rows of a column-major matrix): vectorise across.
          begin += backward_across<Op == backward_op::log_softmax>(
              yb.data + begin, yb.kstride, db.data + begin, db.kstride, ob.data + begin, ob.kstride,
              end - begin, yb.length, temperature, stream);
        } else if (yb.kstride == 1 && db.kstride == 1 && ob.kstride == 1) {
          // Contiguous rows; the kernel takes the short ones (it checks their length).
          begin += backward_short_rows<Op == backward_op::log_softmax>(
              yb.data + begin * yb.dstride, yb.dstride, db.data + begin * db.dstride, db.dstride,
              ob.data + begin * ob.dstride, ob.dstride, end - begin, yb.length, temperature);
          begin += backward_long_rows_streamed<Op == backward_op::log_softmax>(
              yb.data + begin * yb.dstride, yb.dstride, db.data + begin * db.dstride, db.dstride,
              ob.data + begin * ob.dstride, ob.dstride, end - begin, yb.length, temperature,
              stream);
        }
        for (Index d = begin; d < end; ++d) {
          const T* yp = yb.data + d * yb.dstride;
          const T* dp = db.data + d * db.dstride;
          T* op = ob.data + d * ob.dstride;
          if constexpr (Op == backward_op::softmax) {
            softmax_backward_one(yp, yb.kstride, dp, db.kstride, op, ob.kstride, yb.length,
                                 temperature, stream);
          } else {
            log_softmax_backward_one(yp, yb.kstride, dp, db.kstride, op, ob.kstride, yb.length,
                                     temperature, stream);
          }
        }
      });
    });
  });
}

template <typename D>
using enable_if_axis_t = std::enable_if_t<is_axis_v<D>, int>;

}  // namespace detail

// ---------------------------------------------------------------------------------------
// softmax

/// Softmax of the compile-time vector z: y_i = exp((z_i - max) / T) / sum_j exp((z_j - max) / T).
///
/// Gradient: see softmax_backward. Temperature T >= 0: T < 1 sharpens, T > 1 flattens;
/// T = 0 is the limit T -> 0+ (one-hot on the maximum, ties split equally), T = +inf the
/// limit T -> inf (uniform over the entries that are not -inf). Edge cases follow the
/// numerical policy in this header's description. Complexity: two passes over z, one exp
/// per entry. Allocates only the result (nothing for fixed sizes).
/// \throws smax::error if T is negative or NaN.
template <typename D>
typename D::PlainObject softmax(const Eigen::DenseBase<D>& z, typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::softmax");
  return detail::forward_value<detail::forward_op::softmax>(
      "smax::softmax", z, detail::vector_axis_t<D>{}, temperature);
}

/// Softmax of each row (smax::rowwise) or each column (smax::colwise) of z, at temperature T.
/// Same formula, policy and errors as the vector form.
template <typename D, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject softmax(const Eigen::DenseBase<D>& z, Axis axis,
                                typename D::Scalar temperature = 1) {
  return detail::forward_value<detail::forward_op::softmax>("smax::softmax", z, axis, temperature);
}

/// Allocation-free softmax of the vector z into out (resized if it is a resizable plain
/// object, else it must already have z's shape). out may be z itself (in place).
/// \throws smax::error on a bad temperature or output shape; out is then untouched.
template <typename Out, typename D>
void softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z,
                  typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::softmax_into");
  detail::forward_into<detail::forward_op::softmax>("smax::softmax_into", out, z,
                                                    detail::vector_axis_t<D>{}, temperature);
}

/// Allocation-free softmax of each row or column of z into out; see softmax_into above.
template <typename Out, typename D, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z, Axis axis,
                  typename D::Scalar temperature = 1) {
  detail::forward_into<detail::forward_op::softmax>("smax::softmax_into", out, z, axis,
                                                    temperature);
}

// ---------------------------------------------------------------------------------------
// log_softmax

/// Log-softmax of the compile-time vector z: (z_i - max) / T - log sum_j exp((z_j - max) / T),
/// computed directly, never as log(softmax): entries far below the maximum keep full
/// relative accuracy (log_softmax([0, -200]) = [0, -200] in float).
///
/// Gradient: see log_softmax_backward. T = 0: -log(k) on the k maxima, -inf elsewhere;
/// T = +inf: -log(k) on the k entries that are not -inf. Edge cases follow the numerical
/// policy. Complexity: two passes over z plus the write. Allocates only the result.
/// \throws smax::error if T is negative or NaN.
template <typename D>
typename D::PlainObject log_softmax(const Eigen::DenseBase<D>& z,
                                    typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::log_softmax");
  return detail::forward_value<detail::forward_op::log_softmax>(
      "smax::log_softmax", z, detail::vector_axis_t<D>{}, temperature);
}

/// Log-softmax of each row (smax::rowwise) or column (smax::colwise) of z.
template <typename D, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject log_softmax(const Eigen::DenseBase<D>& z, Axis axis,
                                    typename D::Scalar temperature = 1) {
  return detail::forward_value<detail::forward_op::log_softmax>("smax::log_softmax", z, axis,
                                                                temperature);
}

/// Allocation-free log-softmax of the vector z into out (may be z itself).
/// \throws smax::error on a bad temperature or output shape; out is then untouched.
template <typename Out, typename D>
void log_softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z,
                      typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::log_softmax_into");
  detail::forward_into<detail::forward_op::log_softmax>("smax::log_softmax_into", out, z,
                                                        detail::vector_axis_t<D>{}, temperature);
}

/// Allocation-free log-softmax of each row or column of z into out.
template <typename Out, typename D, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void log_softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z, Axis axis,
                      typename D::Scalar temperature = 1) {
  detail::forward_into<detail::forward_op::log_softmax>("smax::log_softmax_into", out, z, axis,
                                                        temperature);
}

// ---------------------------------------------------------------------------------------
// logsumexp

/// log(sum_i exp(z_i)) of the compile-time vector z, as max + log(sum exp(z_i - max)).
///
/// Gradient: softmax(z). Edge cases: empty or all -inf gives -inf; any +inf gives +inf;
/// any NaN gives NaN. Accuracy: 4 ULP of max(|result|, 1). Complexity: two passes, one exp
/// per entry; allocates nothing (except to evaluate an expression argument).
template <typename D>
typename D::Scalar logsumexp(const Eigen::DenseBase<D>& z) {
  detail::static_check_scalar<D>();
  detail::static_check_vector<D>("smax::logsumexp");
  if constexpr (detail::has_direct_access<D>) {
    const auto b = detail::make_batch(z, detail::vector_axis_t<D>{});
    return detail::logsumexp_one(b.data, b.kstride, b.length);
  } else {
    const typename D::PlainObject copy = z;
    return detail::logsumexp_one(copy.data(), Eigen::Index(1), copy.size());
  }
}

/// Allocation-free logsumexp of each row (smax::rowwise) or column (smax::colwise) of z,
/// one value per distribution, into the vector out (either orientation; resized if it is a
/// resizable plain object).
/// \throws smax::error if out cannot hold one value per distribution; out is then untouched.
template <typename Out, typename D, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void logsumexp_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z, Axis axis) {
  detail::static_check_scalar<D>();
  detail::static_check_output<Out, D>();
  static_assert(Out::IsVectorAtCompileTime,
                "smax::logsumexp_into: 'out' must be a compile-time vector (one value per "
                "distribution)");
  const Eigen::Index count = std::is_same_v<Axis, rowwise_t> ? z.rows() : z.cols();
  detail::check_output_length("smax::logsumexp_into", out, count,
                              "one value per distribution of 'z'");
  detail::with_readable(z, out, [&](const auto& zz) {
    detail::resize_to_length(out, count);
    const auto b = detail::make_batch(zz, axis);
    auto& o = detail::writable(out);
    const Eigen::Index os = o.innerStride();
    using T = std::remove_const_t<std::remove_pointer_t<decltype(b.data)>>;
    detail::for_each_range(
        b.count, b.length, detail::split_align<T>(b.dstride, b.kstride, b.length),
        [&](Eigen::Index begin, Eigen::Index end) {
          detail::logsumexp_batch(b.data + begin * b.dstride, b.dstride, b.kstride, end - begin,
                                  b.length, o.data() + begin * os, os);
        });
  });
}

/// logsumexp of each row (smax::rowwise: a column vector, like m.rowwise().sum()) or each
/// column (smax::colwise: a row vector) of z. Array input gives an Array, Matrix a Matrix.
template <typename D, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename detail::reduced<D, Axis>::type logsumexp(const Eigen::DenseBase<D>& z, Axis axis) {
  typename detail::reduced<D, Axis>::type result;
  logsumexp_into(result, z, axis);
  return result;
}

// ---------------------------------------------------------------------------------------
// backward passes

/// Vector-Jacobian product of softmax: given y = softmax(z, T) and dy = dL/dy, returns
/// dL/dz = y * (dy - <dy, y>) / T, for the compile-time vector y.
///
/// Entries with y_i = 0 (from -inf logits) get gradient exactly 0 when dy_i is finite.
/// T = +inf gives 0. The dot product is accumulated in double for float.
/// Complexity: two passes. Allocates only the result.
/// \throws smax::error if dy's shape differs from y's, or T is not > 0 (T = 0 has no
/// gradient).
template <typename Y, typename DY>
typename Y::PlainObject softmax_backward(const Eigen::DenseBase<Y>& y,
                                         const Eigen::DenseBase<DY>& dy,
                                         typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::softmax_backward");
  detail::check_same_shape("smax::softmax_backward", y, dy, "y");
  typename Y::PlainObject result;
  result.resize(y.rows(), y.cols());
  detail::backward_into<detail::backward_op::softmax>("smax::softmax_backward", result, y, dy,
                                                      detail::vector_axis_t<Y>{}, temperature);
  return result;
}

/// softmax_backward for each row (smax::rowwise) or column (smax::colwise).
template <typename Y, typename DY, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename Y::PlainObject softmax_backward(const Eigen::DenseBase<Y>& y,
                                         const Eigen::DenseBase<DY>& dy, Axis axis,
                                         typename Y::Scalar temperature = 1) {
  detail::check_same_shape("smax::softmax_backward", y, dy, "y");
  typename Y::PlainObject result;
  result.resize(y.rows(), y.cols());
  detail::backward_into<detail::backward_op::softmax>("smax::softmax_backward", result, y, dy, axis,
                                                      temperature);
  return result;
}

/// Allocation-free softmax_backward into out, which may be y or dy itself.
template <typename Out, typename Y, typename DY>
void softmax_backward_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<Y>& y,
                           const Eigen::DenseBase<DY>& dy, typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::softmax_backward_into");
  detail::backward_into<detail::backward_op::softmax>("smax::softmax_backward_into", out, y, dy,
                                                      detail::vector_axis_t<Y>{}, temperature);
}

/// Allocation-free softmax_backward of each row or column into out.
template <typename Out, typename Y, typename DY, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void softmax_backward_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<Y>& y,
                           const Eigen::DenseBase<DY>& dy, Axis axis,
                           typename Y::Scalar temperature = 1) {
  detail::backward_into<detail::backward_op::softmax>("smax::softmax_backward_into", out, y, dy,
                                                      axis, temperature);
}

/// Vector-Jacobian product of log_softmax: given logy = log_softmax(z, T) and dy = dL/dlogy,
/// returns dL/dz = (dy - exp(logy) * sum(dy)) / T, for the compile-time vector logy.
///
/// Entries with logy_i = -inf contribute exp(-inf) = 0: never NaN from them. T = +inf
/// gives 0. The sum is accumulated in double for float. Allocates only the result.
/// \throws smax::error if dy's shape differs from logy's, or T is not > 0.
template <typename Y, typename DY>
typename Y::PlainObject log_softmax_backward(const Eigen::DenseBase<Y>& logy,
                                             const Eigen::DenseBase<DY>& dy,
                                             typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::log_softmax_backward");
  detail::check_same_shape("smax::log_softmax_backward", logy, dy, "logy");
  typename Y::PlainObject result;
  result.resize(logy.rows(), logy.cols());
  detail::backward_into<detail::backward_op::log_softmax>(
      "smax::log_softmax_backward", result, logy, dy, detail::vector_axis_t<Y>{}, temperature);
  return result;
}

/// log_softmax_backward for each row (smax::rowwise) or column (smax::colwise).
template <typename Y, typename DY, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename Y::PlainObject log_softmax_backward(const Eigen::DenseBase<Y>& logy,
                                             const Eigen::DenseBase<DY>& dy, Axis axis,
                                             typename Y::Scalar temperature = 1) {
  detail::check_same_shape("smax::log_softmax_backward", logy, dy, "logy");
  typename Y::PlainObject result;
  result.resize(logy.rows(), logy.cols());
  detail::backward_into<detail::backward_op::log_softmax>("smax::log_softmax_backward", result,
                                                          logy, dy, axis, temperature);
  return result;
}

/// Allocation-free log_softmax_backward into out, which may be logy or dy itself.
template <typename Out, typename Y, typename DY>
void log_softmax_backward_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<Y>& logy,
                               const Eigen::DenseBase<DY>& dy, typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::log_softmax_backward_into");
  detail::backward_into<detail::backward_op::log_softmax>(
      "smax::log_softmax_backward_into", out, logy, dy, detail::vector_axis_t<Y>{}, temperature);
}

/// Allocation-free log_softmax_backward of each row or column into out.
template <typename Out, typename Y, typename DY, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void log_softmax_backward_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<Y>& logy,
                               const Eigen::DenseBase<DY>& dy, Axis axis,
                               typename Y::Scalar temperature = 1) {
  detail::backward_into<detail::backward_op::log_softmax>("smax::log_softmax_backward_into", out,
                                                          logy, dy, axis, temperature);
}

}  // namespace smax
