// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// libFuzzer target: softmax_backward and log_softmax_backward (vector and both axes, both
// storage orders, strided Maps, in place). y and logy come either from the library's own
// forward pass of fuzzed logits (so -inf entries, one-hot and NaN rows occur) or straight
// from the bytes; dy is fuzzed. Checked on every input:
// - smax::error exactly for a bad temperature (not > 0, or NaN) or mismatched shapes, and
//   the `_into` output untouched then;
// - `_into` (separate, in place over y and over dy) and returning forms agree bit for bit;
// - for a y that is a softmax output and finite dy: entries with y_i = 0 get exactly 0,
//   the gradient is finite, sums to 0 within tolerance, and agrees with the long double
//   closed form; T = +inf gives 0.

#include "fuzz_support.hpp"

#include <smax/smax.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using namespace smax_fuzz;

template <typename T, typename M, typename Axis>
void run_axis(bytes& in, const M& y, const M& logy, const M& dy, Axis axis, T t, bool from_forward,
              bool shapes_ok) {
  constexpr bool rowwise = std::is_same_v<Axis, smax::rowwise_t>;
  using Plain = typename M::PlainObject;
  const bool valid = shapes_ok && t > T(0);
  const T sentinel = T(-777);
  for (int op = 0; op < 2; ++op) {
    const M& first = op == 0 ? y : logy;
    const auto call = [&](const auto& a, const auto& b) -> Plain {
      return op == 0 ? Plain(smax::softmax_backward(a, b, axis, t))
                     : Plain(smax::log_softmax_backward(a, b, axis, t));
    };
    const auto call_into = [&](auto&& out, const auto& a, const auto& b) {
      if (op == 0) {
        smax::softmax_backward_into(out, a, b, axis, t);
      } else {
        smax::log_softmax_backward_into(out, a, b, axis, t);
      }
    };
    Plain g;
    bool threw = false;
    try {
      g = call(first, dy);
    } catch (const smax::error& e) {
      smax_fuzz::note_error(e);
      threw = true;
    }
    SMAX_FUZZ_CHECK(threw == !valid, "op %d: threw %d, expected %d (T %g, shapes ok %d)", op,
                    int(threw), int(!valid), double(t), int(shapes_ok));
    Plain storage = Plain::Constant(first.rows(), first.cols(), sentinel);
    Eigen::Map<Plain> out(storage.data(), first.rows(), first.cols());
    threw = false;
    try {
      call_into(out, first, dy);
    } catch (const smax::error& e) {
      smax_fuzz::note_error(e);
      threw = true;
    }
    SMAX_FUZZ_CHECK(threw == !valid, "op %d: _into threw %d", op, int(threw));
    if (!valid) {
      SMAX_FUZZ_CHECK((storage.array() == sentinel).all(), "op %d: _into wrote before throwing",
                      op);
      continue;
    }
    SMAX_FUZZ_CHECK(all_bit_equal(storage, g), "op %d: _into differs from the returning form", op);
    // In place: over the first argument, or over dy.
    Plain a = first, b = dy;
    if (in.flag()) {
      call_into(a, a, b);
      SMAX_FUZZ_CHECK(all_bit_equal(a, g), "op %d: in place over y differs", op);
    } else {
      call_into(b, a, b);
      SMAX_FUZZ_CHECK(all_bit_equal(b, g), "op %d: in place over dy differs", op);
    }
    if (!from_forward) continue;
    // Values: per distribution, against the closed form in long double.
    const Index count = rowwise ? y.rows() : y.cols();
    const Index len = rowwise ? y.cols() : y.rows();
    for (Index d = 0; d < count; ++d) {
      const auto at = [&](const auto& m, Index k) { return rowwise ? m(d, k) : m(k, d); };
      bool finite_dy = true, nan_y = false;
      ld dot = 0, abs_dot = 0, sum_dy = 0, abs_dy = 0;
      for (Index k = 0; k < len; ++k) {
        finite_dy = finite_dy && std::isfinite(at(dy, k));
        nan_y = nan_y || std::isnan(at(y, k));
        dot += static_cast<ld>(at(y, k)) * at(dy, k);
        abs_dot += std::fabs(static_cast<ld>(at(y, k)) * at(dy, k));
        sum_dy += at(dy, k);
        abs_dy += std::fabs(static_cast<ld>(at(dy, k)));
      }
      // Sums that overflow T make inf - inf legitimately NaN: only ordinary ranges here.
      const ld big = static_cast<ld>(std::numeric_limits<T>::max()) / 16;
      if (!finite_dy || nan_y || abs_dot > big || abs_dy > big) continue;
      ld total = 0;
      bool skip_sum = false;
      for (Index k = 0; k < len; ++k) {
        const T v = at(g, k);
        const ld yk = at(y, k), dk = at(dy, k);
        if (std::isinf(t)) {
          SMAX_FUZZ_CHECK(v == T(0), "op %d: T = inf gives %g, not 0", op, double(v));
          continue;
        }
        if (op == 0 && yk == 0) {
          SMAX_FUZZ_CHECK(v == T(0), "softmax_backward: y = 0 gives %g, not 0", double(v));
        }
        ld expected, scale;
        if (op == 0) {
          expected = yk * (dk - dot) / t;
          scale = yk * (std::fabs(dk) + abs_dot) / t;
        } else {
          const ld p = std::exp(static_cast<ld>(at(logy, k)));
          expected = (dk - p * sum_dy) / t;
          scale = (std::fabs(dk) + p * abs_dy) / t;
        }
        if (scale > big) {
          skip_sum = true;
          continue;
        }
        SMAX_FUZZ_CHECK(std::isfinite(v), "op %d: gradient %g not finite (dist %ld, entry %ld)", op,
                        double(v), long(d), long(k));
        // The dot product or sum is rounded to T once; the rest are a few roundings.
        // exp(logy) in T is only as fine as T's grid: where it is subnormal, its absolute
        // error (up to denorm_min) is multiplied by sum(dy).
        const ld grid = op == 1 ? 2 * tiny<T> * abs_dy / t : 0;
        const ld tol =
            (16 + static_cast<ld>(len)) * eps<T> * scale + 8 * tiny<T> / std::min<ld>(t, 1) + grid;
        SMAX_FUZZ_CHECK(close(v, expected, tol),
                        "%s op %d: dist %ld entry %ld: %.9Lg, closed form %.9Lg (tol %Lg, T %g, "
                        "y %Lg, logy %Lg, dy %Lg, sum dy %Lg, <dy, y> %Lg, n %ld)",
                        sizeof(T) == 4 ? "float" : "double", op, long(d), long(k),
                        static_cast<ld>(v), expected, tol, double(t), yk,
                        static_cast<ld>(at(logy, k)), dk, sum_dy, dot, long(len));
        total += v;
      }
      if (op == 0 && !std::isinf(t) && !skip_sum) {
        // sum_i y_i (dy_i - <dy, y>) = <dy, y> (1 - sum y) ~ 0.
        const ld tol = (16 + 2 * static_cast<ld>(len)) * eps<T> * (abs_dot + std::fabs(dot)) / t +
                       static_cast<ld>(len) * 8 * tiny<T> / std::min<ld>(t, 1);
        SMAX_FUZZ_CHECK(std::fabs(total) <= tol, "softmax_backward sums to %Lg (tol %Lg)", total,
                        tol);
      }
    }
  }
}

// The strided vector kernels against the contiguous ones: equal within the bound the
// closed-form check uses (len + 16 roundings of the scale), exactly equal where either is
// not finite (NaN matches NaN).
template <typename T>
void check_layouts_agree(const Vec<T>& y, const Vec<T>& logy, const Vec<T>& dy, T t,
                         const Vec<T>& s1, const Vec<T>& g1, const Vec<T>& s2, const Vec<T>& g2) {
  const Index len = y.size();
  ld abs_dot = 0, abs_dy = 0;
  for (Index k = 0; k < len; ++k) {
    abs_dot += std::fabs(static_cast<ld>(y(k)) * dy(k));
    abs_dy += std::fabs(static_cast<ld>(dy(k)));
  }
  for (Index k = 0; k < len; ++k) {
    const ld p = std::exp(static_cast<ld>(logy(k)));
    const ld scale[2] = {std::fabs(static_cast<ld>(y(k))) * (std::fabs(dy(k)) + abs_dot) / t,
                         (std::fabs(static_cast<ld>(dy(k))) + p * abs_dy) / t};
    const T got[2] = {s1(k), s2(k)}, want[2] = {g1(k), g2(k)};
    // <dy, y> (op 0) or sum(dy) (op 1) whose terms add up beyond T's range: each summation
    // order may give inf, NaN or, by luck, a finite value (the closed-form check in run_axis
    // skips these inputs too). Found by fuzzing: y that is no distribution, near 1e307.
    const ld top = static_cast<ld>(std::numeric_limits<T>::max());
    const bool sum_overflows[2] = {!(abs_dot <= top), !(abs_dy <= top)};
    for (int op = 0; op < 2; ++op) {
      if (sum_overflows[op]) continue;
      if (!(scale[op] <= top)) {
        // The terms overflow T (or are infinite): inf - inf in one summation order can be
        // +-inf in another, so both must be non-finite, not equal. (Found by fuzzing: y of
        // order 1e307 that is no distribution, strided NaN against contiguous inf.)
        SMAX_FUZZ_CHECK(std::isfinite(got[op]) == std::isfinite(want[op]),
                        "op %d: strided gives %g, contiguous %g at %ld", op, double(got[op]),
                        double(want[op]), long(k));
        continue;
      }
      if (!std::isfinite(got[op]) || !std::isfinite(want[op])) {
        SMAX_FUZZ_CHECK((std::isnan(got[op]) && std::isnan(want[op])) || got[op] == want[op],
                        "op %d: strided gives %g, contiguous %g at %ld", op, double(got[op]),
                        double(want[op]), long(k));
        continue;
      }
      const ld tol = 2 * (16 + static_cast<ld>(len)) * eps<T> * scale[op] +
                     16 * tiny<T> / std::min<ld>(t, 1) + (op == 1 ? 4 * tiny<T> * abs_dy / t : 0);
      SMAX_FUZZ_CHECK(close(got[op], static_cast<ld>(want[op]), tol),
                      "op %d: strided gives %.9g, contiguous %.9g at %ld (tol %Lg)", op,
                      double(got[op]), double(want[op]), long(k), tol);
    }
  }
}

template <typename T>
void run(bytes& in) {
  Index rows = in.in(0, 40), cols = in.in(0, 70);
  if (in.flag()) std::swap(rows, cols);
  T t = in.temperature<T>();
  const bool from_forward = in.in(0, 3) != 0;
  Mat<T> z(rows, cols), dy(rows, cols);
  for (Index k = 0; k < z.size(); ++k) z.data()[k] = in.value<T>();
  const bool plain_dy = in.flag();
  for (Index k = 0; k < dy.size(); ++k) dy.data()[k] = plain_dy ? in.plain<T>() : in.value<T>();
  const bool rowwise = in.flag();
  const bool row_major = in.flag();
  const bool bad_shape = in.in(0, 15) == 0;
  // A forward pass makes y and logy (T = 0 is no forward temperature for these checks).
  const T tf = (t > T(0)) ? t : T(1);
  Mat<T> y = z, logy = z;
  if (from_forward) {
    if (rowwise) {
      y = smax::softmax(z, smax::rowwise, tf);
      logy = smax::log_softmax(z, smax::rowwise, tf);
    } else {
      y = smax::softmax(z, smax::colwise, tf);
      logy = smax::log_softmax(z, smax::colwise, tf);
    }
  }
  if (bad_shape) dy.conservativeResize(rows, cols + 1);  // wrong shape: an error

  // Vector API for a single distribution.
  if (!bad_shape && (rows == 1 || cols == 1)) {
    const Vec<T> yv = Eigen::Map<const Vec<T>>(y.data(), y.size());
    const Vec<T> lv = Eigen::Map<const Vec<T>>(logy.data(), logy.size());
    const Vec<T> dv = Eigen::Map<const Vec<T>>(dy.data(), dy.size());
    const bool valid = t > T(0);
    bool threw = false;
    Vec<T> g1, g2;
    try {
      g1 = smax::softmax_backward(yv, dv, t);
      g2 = smax::log_softmax_backward(lv, dv, t);
    } catch (const smax::error& e) {
      smax_fuzz::note_error(e);
      threw = true;
    }
    SMAX_FUZZ_CHECK(threw == !valid, "vector backward threw %d (T %g)", int(threw), double(t));
    if (valid) {
      const Index inner = in.in(1, 4);
      std::vector<T> buf(static_cast<std::size_t>(yv.size() * inner + 1), T(5));
      Eigen::Map<Vec<T>, 0, Eigen::InnerStride<>> ys(buf.data(), yv.size(),
                                                     Eigen::InnerStride<>(inner));
      ys = yv;
      // Strided and contiguous kernels may sum in different orders: they agree within the
      // accuracy bound, not bit for bit (README, "Backward passes").
      const Vec<T> s1 = smax::softmax_backward(ys, dv, t);
      ys = lv;
      const Vec<T> s2 = smax::log_softmax_backward(ys, dv, t);
      check_layouts_agree<T>(yv, lv, dv, t, s1, g1, s2, g2);
      Vec<T> o(yv.size());
      smax::softmax_backward_into(o, yv, dv, t);
      SMAX_FUZZ_CHECK(all_bit_equal(o, g1), "vector softmax_backward_into differs");
    }
  }
  const bool shapes_ok = !bad_shape;
  if (row_major) {
    const MatR<T> yr = y, lr = logy, dr = dy;
    if (rowwise) {
      run_axis<T>(in, yr, lr, dr, smax::rowwise, t, from_forward, shapes_ok);
    } else {
      run_axis<T>(in, yr, lr, dr, smax::colwise, t, from_forward, shapes_ok);
    }
  } else if (rowwise) {
    run_axis<T>(in, y, logy, dy, smax::rowwise, t, from_forward, shapes_ok);
  } else {
    run_axis<T>(in, y, logy, dy, smax::colwise, t, from_forward, shapes_ok);
  }
}

}  // namespace

SMAX_FUZZ_FLOAT_AND_DOUBLE_TARGET
