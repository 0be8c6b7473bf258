// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// libFuzzer target: softmax, log_softmax and logsumexp (vector, rowwise, colwise; both
// storage orders; plain matrices and strided Maps; temperatures including 0, +inf and
// invalid ones) and logsumexp_accumulator. Checked on every input:
// - errors are thrown exactly for an invalid temperature, and leave `_into` outputs untouched;
// - the `_into` forms (separate output, and in place) agree bit for bit with the returning
//   forms, and a strided Map gives the same bits as a plain matrix of the same layout;
// - the numerical policy: NaN exactly for the distributions the README lists, otherwise
//   probabilities in [0, 1] that sum to 1 within n eps, log_softmax <= 0, logsumexp >= max;
// - agreement with a long double reference of the policy within a documented tolerance.

#include "fuzz_support.hpp"

#include <smax/smax.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using namespace smax_fuzz;

/// The distributions of z along the axis (rowwise: rows; colwise: columns) as vectors.
template <typename M>
std::vector<std::vector<typename M::Scalar>> distributions(const M& z, bool rowwise) {
  std::vector<std::vector<typename M::Scalar>> out;
  const Index count = rowwise ? z.rows() : z.cols();
  const Index len = rowwise ? z.cols() : z.rows();
  for (Index d = 0; d < count; ++d) {
    std::vector<typename M::Scalar> v(static_cast<std::size_t>(len));
    for (Index k = 0; k < len; ++k) v[static_cast<std::size_t>(k)] = rowwise ? z(d, k) : z(k, d);
    out.push_back(std::move(v));
  }
  return out;
}

/// Checks softmax and log_softmax results of every distribution against the policy.
template <typename T, typename M>
void check_forward(const M& z, const M& sm, const M& ls, const Vec<T>& lse, bool rowwise, T t) {
  const auto dists = distributions(z, rowwise);
  const auto sms = distributions(sm, rowwise);
  const auto lss = distributions(ls, rowwise);
  for (std::size_t d = 0; d < dists.size(); ++d) {
    const std::vector<T>& v = dists[d];
    const reference r = reference_of(v, t);
    const std::size_t n = v.size();
    ld sum = 0;
    T max = -std::numeric_limits<T>::infinity();
    for (T x : v) max = std::isnan(x) ? max : std::max(max, x);
    for (std::size_t i = 0; i < n; ++i) {
      const T p = sms[d][i], lp = lss[d][i];
      SMAX_FUZZ_CHECK(std::isnan(p) == r.nan && std::isnan(lp) == r.nan,
                      "dist %zu entry %zu: softmax %g, log_softmax %g, policy NaN %d (n %zu, T %g)",
                      d, i, double(p), double(lp), int(r.nan), n, double(t));
      if (r.nan) continue;
      SMAX_FUZZ_CHECK(p >= T(0) && p <= T(1), "softmax %g outside [0, 1]", double(p));
      SMAX_FUZZ_CHECK(lp <= T(0), "log_softmax %g > 0", double(lp));
      SMAX_FUZZ_CHECK(close(p, r.p[i], softmax_tol<T>(r.p[i], r.d[i])),
                      "dist %zu entry %zu: softmax %.9Lg, reference %.9Lg (z %g, max %g, T %g, n "
                      "%zu)",
                      d, i, static_cast<ld>(p), r.p[i], double(v[i]), double(max), double(t), n);
      SMAX_FUZZ_CHECK(close(lp, r.logp[i], log_tol<T>(r.logp[i], r.d[i])),
                      "dist %zu entry %zu: log_softmax %.9Lg, reference %.9Lg (z %g, max %g, T %g, "
                      "n %zu)",
                      d, i, static_cast<ld>(lp), r.logp[i], double(v[i]), double(max), double(t),
                      n);
      sum += p;
    }
    if (!r.nan && n > 0) {
      SMAX_FUZZ_CHECK(std::fabs(sum - 1) <= static_cast<ld>(n + 2) * eps<T>,
                      "dist %zu: softmax sums to 1 + %Lg (n %zu, T %g)", d, sum - 1, n, double(t));
    }
    // logsumexp is temperature-free.
    const T l = lse(static_cast<Index>(d));
    SMAX_FUZZ_CHECK(std::isnan(l) == std::isnan(r.lse), "logsumexp %g, reference %Lg", double(l),
                    r.lse);
    if (!std::isnan(l)) {
      SMAX_FUZZ_CHECK(l >= max, "logsumexp %g < max %g", double(l), double(max));
      SMAX_FUZZ_CHECK(close(l, r.lse, log_tol<T>(r.lse, 0)), "logsumexp %.9Lg, reference %.9Lg",
                      static_cast<ld>(l), r.lse);
    }
  }
}

template <typename T, typename M, typename Axis>
void run_batch(bytes& in, const M& z, Axis axis, T t, bool valid) {
  constexpr bool rowwise = std::is_same_v<Axis, smax::rowwise_t>;
  using Plain = typename M::PlainObject;
  const T sentinel = T(-12345);
  // Returning forms, or the error.
  Plain sm, ls;
  bool threw = false;
  try {
    sm = smax::softmax(z, axis, t);
    ls = smax::log_softmax(z, axis, t);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "softmax(T = %g) threw %d, expected %d", double(t), int(threw),
                  int(!valid));
  // _into forms into fixed-shape storage (a Map): untouched on error, same bits otherwise.
  Plain out_storage = Plain::Constant(z.rows(), z.cols(), sentinel);
  Eigen::Map<Plain> out(out_storage.data(), z.rows(), z.cols());
  threw = false;
  try {
    smax::softmax_into(out, z, axis, t);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "softmax_into threw %d", int(threw));
  if (!valid) {
    SMAX_FUZZ_CHECK((out_storage.array() == sentinel).all(), "softmax_into wrote before throwing");
    return;
  }
  SMAX_FUZZ_CHECK(all_bit_equal(out_storage, sm), "softmax_into differs from softmax");
  smax::log_softmax_into(out, z, axis, t);
  SMAX_FUZZ_CHECK(all_bit_equal(out_storage, ls), "log_softmax_into differs from log_softmax");
  // In place.
  Plain inplace = z;
  if (in.flag()) {
    smax::softmax_into(inplace, inplace, axis, t);
    SMAX_FUZZ_CHECK(all_bit_equal(inplace, sm), "in-place softmax_into differs");
  } else {
    smax::log_softmax_into(inplace, inplace, axis, t);
    SMAX_FUZZ_CHECK(all_bit_equal(inplace, ls), "in-place log_softmax_into differs");
  }
  // logsumexp per distribution.
  const auto lse_ret = smax::logsumexp(z, axis);
  Vec<T> lse(rowwise ? z.rows() : z.cols());
  smax::logsumexp_into(lse, z, axis);
  SMAX_FUZZ_CHECK(vector_bit_equal(lse_ret, lse), "logsumexp_into differs from logsumexp");
  check_forward<T>(Plain(z), sm, ls, lse, rowwise, t);
}

template <typename T>
void run(bytes& in) {
  const std::uint8_t shape = in.byte();
  Index rows, cols;
  if (shape % 8 == 0) {  // long distributions
    rows = in.in(0, 3);
    cols = in.in(0, 600);
  } else {
    rows = in.in(0, 40);
    cols = in.in(0, 70);
  }
  const bool transpose = in.flag();
  if (transpose) std::swap(rows, cols);
  const T t = in.temperature<T>();
  const bool valid = t >= T(0);  // NaN and negative are errors; 0 and +inf are limits

  // Values, drawn once, then laid out as a plain matrix of either order.
  Mat<T> z(rows, cols);
  const bool fill_same = in.flag();  // a row pattern repeated (ties across lanes)
  for (Index j = 0; j < cols; ++j) {
    for (Index i = 0; i < rows; ++i) {
      z(i, j) = (fill_same && i > 0) ? z(0, j) : in.value<T>();
    }
  }
  const bool row_major = in.flag();
  const bool rowwise_axis = in.flag();
  const Index inner = in.in(1, 3);
  const Index pad = in.in(0, 5);

  // A vector: one distribution, through the vector API (plain, and a strided Map).
  if (rows == 1 || cols == 1) {
    const Vec<T> v = Eigen::Map<const Vec<T>>(z.data(), z.size());
    bool threw = false;
    Vec<T> sm, ls;
    try {
      sm = smax::softmax(v, t);
      ls = smax::log_softmax(v, t);
    } catch (const smax::error& e) {
      smax_fuzz::note_error(e);
      threw = true;
    }
    SMAX_FUZZ_CHECK(threw == !valid, "vector softmax threw %d", int(threw));
    if (valid) {
      std::vector<T> buf(static_cast<std::size_t>(v.size() * inner + 1), T(7));
      Eigen::Map<Vec<T>, 0, Eigen::InnerStride<>> sv(buf.data(), v.size(),
                                                     Eigen::InnerStride<>(inner));
      sv = v;
      SMAX_FUZZ_CHECK(all_bit_equal(Vec<T>(smax::softmax(sv, t)), sm), "strided softmax differs");
      SMAX_FUZZ_CHECK(all_bit_equal(Vec<T>(smax::log_softmax(sv, t)), ls),
                      "strided log_softmax differs");
      const T l = smax::logsumexp(v);
      SMAX_FUZZ_CHECK(bit_equal(smax::logsumexp(sv), l), "strided logsumexp differs");
      Vec<T> lse(1);
      lse(0) = l;
      Mat<T> zc = v, smc = sm, lsc = ls;
      check_forward<T>(zc, smc, lsc, lse, false, t);
      // Streaming: value by value, and in two merged halves.
      smax::logsumexp_accumulator<T> acc, a1, a2;
      for (Index i = 0; i < v.size(); ++i) acc.push(v(i));
      const Index half = v.size() / 2;
      a1.push(v.head(half));
      a2.push(v.tail(v.size() - half));
      a1.merge(a2);
      for (const T s : {acc.value(), a1.value()}) {
        SMAX_FUZZ_CHECK(
            std::isnan(s) == std::isnan(l) && (std::isnan(l) || close(s, l, log_tol<T>(l, 0))),
            "accumulator %g, logsumexp %g", double(s), double(l));
      }
    }
  }

  // Batches: plain matrix in the chosen order, and the same values behind a strided Map.
  if (row_major) {
    const MatR<T> zr = z;
    strided_storage<T> st(rows, cols, inner, pad, true, T(3));
    for (Index i = 0; i < rows; ++i) {
      for (Index j = 0; j < cols; ++j) st.at(i, j) = z(i, j);
    }
    const MapR<T> zm(st.buffer.data(), rows, cols, DynStride(st.outer, st.inner));
    if (rowwise_axis) {
      run_batch<T>(in, zr, smax::rowwise, t, valid);
      if (valid) {
        SMAX_FUZZ_CHECK(all_bit_equal(MatR<T>(smax::softmax(zm, smax::rowwise, t)),
                                      smax::softmax(zr, smax::rowwise, t)) ||
                            st.inner != 1,
                        "strided Map (row-major, rowwise) differs");
      }
    } else {
      run_batch<T>(in, zr, smax::colwise, t, valid);
    }
    if (valid) {
      // Different layouts may sum in different orders; each must meet the policy.
      const MatR<T> a = smax::softmax(zm, smax::rowwise, t),
                    b = smax::log_softmax(zm, smax::rowwise, t);
      Vec<T> lse = smax::logsumexp(zm, smax::rowwise);
      check_forward<T>(MatR<T>(zr), a, b, lse, true, t);
    }
  } else {
    strided_storage<T> st(rows, cols, inner, pad, false, T(3));
    for (Index i = 0; i < rows; ++i) {
      for (Index j = 0; j < cols; ++j) st.at(i, j) = z(i, j);
    }
    const MapC<T> zm(st.buffer.data(), rows, cols, DynStride(st.outer, st.inner));
    if (rowwise_axis) {
      run_batch<T>(in, z, smax::rowwise, t, valid);
    } else {
      run_batch<T>(in, z, smax::colwise, t, valid);
    }
    if (valid) {
      const Mat<T> a = smax::softmax(zm, smax::rowwise, t),
                   b = smax::log_softmax(zm, smax::rowwise, t);
      const Vec<T> lse = smax::logsumexp(zm, smax::rowwise);
      check_forward<T>(Mat<T>(z), a, b, lse, true, t);
      const Mat<T> c = smax::softmax(zm, smax::colwise, t),
                   e = smax::log_softmax(zm, smax::colwise, t);
      const Vec<T> lsec = smax::logsumexp(zm, smax::colwise).transpose();
      check_forward<T>(Mat<T>(z), c, e, lsec, false, t);
    }
  }
}

}  // namespace

SMAX_FUZZ_FLOAT_AND_DOUBLE_TARGET
