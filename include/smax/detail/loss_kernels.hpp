// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include <smax/detail/dispatch.hpp>
#include <smax/detail/fpclass.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/error.hpp>

/// \file
/// The kernels behind the losses (cross_entropy.hpp, distillation.hpp, sigmoid.hpp): target
/// adapters, argument checks and the per-sample fused loss/gradient sweeps. They reuse the
/// core's max pass (max_fast, has_nan), exp-sum pass (exp_sum with shift) and pairwise
/// accumulation.

// GCC 12 reports the _mm512_undefined_* inside AVX-512 min/max/extract intrinsics as
// (maybe-)uninitialized (GCC bug 105593). The pragmas below silence it where those
// intrinsics are inlined into functions of this file, but not inside an out-of-line copy of
// an Eigen function (an unrolled reduction, pldexp, plog1p), which no pragma here reaches.
// Hence the plain packet loops below (exp_n, log1p_unit_n, packet_sum, block_sum) and the
// pselect functors instead of .sum(), .max(0), .min(0) and Eigen's log1p.
#if defined(__GNUC__)
#pragma GCC diagnostic push
// As in kernels.hpp: packet types as template arguments drop their alignment attributes
// (harmless); and the GCC 12 false positive above.
#pragma GCC diagnostic ignored "-Wignored-attributes"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

// Everything here lives in smax::detail::loss, apart from the core (smax::detail), so the
// two can grow independently without name clashes.
namespace smax::detail::loss {

// ---------------------------------------------------------------------------------------
// Reading inputs

/// A read-only strided vector: element i is data[i * stride]. An empty view (data null)
/// stands for "all ones" where it is used as class weights.
template <typename T>
struct strided_view {
  const T* data = nullptr;
  Index size = 0;
  Index stride = 1;

  bool empty() const { return data == nullptr; }
  T operator[](Index i) const { return data[i * stride]; }
  T or_one(Index i) const { return data == nullptr ? T(1) : data[i * stride]; }
};

/// Stride between consecutive entries of an Eigen vector with direct access.
template <typename D>
Index vector_stride(const Eigen::DenseBase<D>& v) {
  const D& d = v.derived();
  return d.rows() == 1 ? Index(d.colStride()) : Index(d.rowStride());
}

/// Calls f with x itself when it has direct access, else with a plain copy (an expression
/// is evaluated once).
template <typename X, typename F>
void with_evaluated(const Eigen::DenseBase<X>& x, F&& f) {
  if constexpr (has_direct_access<X>) {
    f(x.derived());
  } else {
    const typename X::PlainObject copy = x;
    f(copy);
  }
}

/// True when the memory of a and b overlaps.
template <typename A, typename B>
bool overlaps(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  const auto [alo, ahi] = address_range(a);
  const auto [blo, bhi] = address_range(b);
  return alo < bhi && blo < ahi && alo != ahi && blo != bhi;
}

/// Calls f with x itself when x has direct access and shares no memory with out, else with
/// a plain copy: for inputs that are still read after out has been (partly) written.
template <typename X, typename Out, typename F>
void with_disjoint(const Eigen::DenseBase<X>& x, const Eigen::DenseBase<Out>& out, F&& f) {
  if constexpr (has_direct_access<X>) {
    if (!overlaps(x, out)) {
      f(x.derived());
      return;
    }
  }
  const typename X::PlainObject copy = x;
  f(copy);
}

template <typename X>
inline constexpr bool is_eigen_v = std::is_base_of_v<Eigen::EigenBase<X>, X>;

template <typename X, typename = void>
struct range_value {
  using type = void;
};
template <typename X>
struct range_value<X, std::void_t<decltype(std::data(std::declval<const X&>())),
                                  decltype(std::size(std::declval<const X&>()))>> {
  using type =
      std::remove_cv_t<std::remove_pointer_t<decltype(std::data(std::declval<const X&>()))>>;
};

template <typename X, typename = void>
struct eigen_scalar {
  using type = void;
};
template <typename X>
struct eigen_scalar<X, std::enable_if_t<is_eigen_v<X>>> {
  using type = typename X::Scalar;
};

/// What a targets argument is: class indices, or class probabilities.
enum class target_kind { index, probability, unsupported };

template <typename X>
constexpr target_kind kind_of_targets() {
  if constexpr (is_eigen_v<X>) {
    using S = typename eigen_scalar<X>::type;
    if constexpr (std::is_floating_point_v<S>) return target_kind::probability;
    if constexpr (std::is_integral_v<S>) return target_kind::index;
    return target_kind::unsupported;
  } else if constexpr (std::is_integral_v<X>) {
    return target_kind::index;
  } else if constexpr (std::is_integral_v<typename range_value<X>::type>) {
    return target_kind::index;
  } else {
    return target_kind::unsupported;
  }
}

template <typename X>
inline constexpr bool is_index_targets_v = kind_of_targets<X>() == target_kind::index;
template <typename X>
inline constexpr bool is_probability_targets_v = kind_of_targets<X>() == target_kind::probability;

template <typename X>
constexpr void static_check_targets() {
  static_assert(kind_of_targets<X>() != target_kind::unsupported,
                "smax: 'targets' must be class indices (an integer, an Eigen integer vector, or "
                "a contiguous range of integers such as std::vector<int>) or class "
                "probabilities (an Eigen floating-point object shaped like the logits)");
}

/// Class indices of a batch, read through a pointer and a stride (any integer type).
template <typename I>
struct index_view {
  const I* data;
  Index size;
  Index stride;

  I raw(Index i) const { return data[i * stride]; }
  /// The index as int64, saturated (an unsigned value above INT64_MAX stays out of range).
  std::int64_t operator[](Index i) const {
    const I v = raw(i);
    if constexpr (std::is_unsigned_v<I>) {
      if (v > static_cast<std::make_unsigned_t<std::int64_t>>(
                  std::numeric_limits<std::int64_t>::max())) {
        return std::numeric_limits<std::int64_t>::max();
      }
    }
    return static_cast<std::int64_t>(v);
  }
};

/// Calls f with an index_view of class-index targets (an Eigen integer vector is evaluated
/// once if it is an expression; a single integer is a batch of one).
template <typename X, typename F>
void with_index_view(const X& targets, F&& f) {
  if constexpr (is_eigen_v<X>) {
    static_assert(X::IsVectorAtCompileTime,
                  "smax: class-index 'targets' must be a compile-time vector (one index per "
                  "sample), e.g. Eigen::VectorXi");
    with_evaluated(targets, [&](const auto& t) {
      using I = std::remove_cv_t<std::remove_pointer_t<decltype(t.data())>>;
      f(index_view<I>{t.data(), t.size(), vector_stride(t)});
    });
  } else if constexpr (std::is_integral_v<X>) {
    f(index_view<X>{&targets, 1, 1});
  } else {
    using I = typename range_value<X>::type;
    f(index_view<I>{std::data(targets), static_cast<Index>(std::size(targets)), 1});
  }
}

// ---------------------------------------------------------------------------------------
// Checks shared by the losses (all run before any output is written)

template <typename T>
void check_loss_temperature(const char* function, T temperature) {
  if (!is_finite(temperature) || !(temperature > T(0))) {
    fail(function, "options.temperature", to_text(temperature),
         "a finite number > 0 (T = 0 has no gradient, T = +inf no information)");
  }
}

template <typename T>
void check_label_smoothing(const char* function, T eps) {
  if (is_nan(eps) || !(eps >= T(0) && eps <= T(1))) {
    fail(function, "options.label_smoothing", to_text(eps), "a number in [0, 1]");
  }
}

/// Per-class weights: empty, or n entries, each >= 0 (+inf allowed, NaN not).
template <typename T>
void check_class_weights(const char* function, const char* argument, const strided_view<T>& w,
                         Index n, bool allow_one = false) {
  if (w.empty()) return;
  if (w.size != n && !(allow_one && w.size == 1)) {
    fail(function, argument, "of length " + std::to_string(w.size),
         "one weight per class (" + std::to_string(n) + ")" +
             (allow_one ? std::string(", or a single weight for all classes") : std::string()));
  }
  for (Index c = 0; c < w.size; ++c) {
    const T v = w[c];
    if (is_nan(v) || !(v >= T(0))) {
      fail(function, argument, to_text(v) + " at class " + std::to_string(c),
           "weights >= 0 (not NaN)");
    }
  }
}

template <typename D, typename Axis>
Index sample_count(const Eigen::DenseBase<D>& x, Axis) {
  return std::is_same_v<Axis, rowwise_t> ? x.rows() : x.cols();
}

template <typename D, typename Axis>
Index class_count(const Eigen::DenseBase<D>& x, Axis) {
  return std::is_same_v<Axis, rowwise_t> ? x.cols() : x.rows();
}

template <typename A, typename B>
void check_same_shape_as(const char* function, const char* argument, const Eigen::DenseBase<A>& a,
                         const Eigen::DenseBase<B>& b, const char* b_name) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    fail(function, argument, "of shape " + shape_text(a.rows(), a.cols()),
         "the shape of '" + std::string(b_name) + "' (" + shape_text(b.rows(), b.cols()) + ")");
  }
}

template <typename I>
void check_index_count(const char* function, const index_view<I>& t, Index samples) {
  if (t.size != samples) {
    fail(function, "targets", "of length " + std::to_string(t.size),
         "one class index per sample (" + std::to_string(samples) + ")");
  }
}

/// Validates every class index (ignore_index, or in [0, classes)) and returns the mean
/// denominator: sum of weight[target] over the samples not ignored (their count without
/// weights), accumulated pairwise in acc_t<T>.
template <typename T, typename I>
acc_t<T> check_indices(const char* function, const index_view<I>& t, Index classes,
                       std::int64_t ignore_index, const strided_view<T>& w) {
  pairwise_sum<acc_t<T>> total;
  acc_t<T> block(0);
  Index in_block = 0;
  for (Index i = 0; i < t.size; ++i) {
    const std::int64_t y = t[i];
    if (y == ignore_index) continue;
    if (y < 0 || y >= static_cast<std::int64_t>(classes)) {
      fail(function, "targets", to_text(+t.raw(i)) + " at sample " + std::to_string(i),
           "a class index in [0, " + std::to_string(classes) + ") or ignore_index (" +
               std::to_string(ignore_index) + ")");
    }
    block += static_cast<acc_t<T>>(w.or_one(static_cast<Index>(y)));
    if (++in_block == block_size) {
      total.add(block);
      block = acc_t<T>(0);
      in_block = 0;
    }
  }
  total.add(block);
  return total.total();
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// The batch total of the per-sample losses (in acc_t<T>) and its mean, which does not
/// overflow on the way: in double the sum of finite losses can pass the range although
/// their mean is finite (37 losses of 0.05 MAX). From the first loss of 2^960 or more on,
/// the sum holds everything scaled by 2^-64 (exact for what counts next to such a loss), so
/// the mean comes out finite; below that (any usual batch) nothing changes, at the cost of
/// one comparison per sample. float sums in double, which no batch overflows.
template <typename T>
class reduction_total {
  using A = acc_t<T>;
  static constexpr A up = A(18446744073709551616.0);  // 2^64
  static constexpr A down = A(1) / up;
  static constexpr A huge = std::numeric_limits<A>::max() * down;

 public:
  void add(A loss) {
    if constexpr (exact_normalise<T>) {
      if (!scaled_ && std::fabs(loss) >= huge) {
        sum_.scale(down);
        scaled_ = true;
      }
      sum_.add(scaled_ ? loss * down : loss);
    } else {
      sum_.add(loss);
    }
  }
  /// add(v[i]) for i < N (a power of two), with the same bits.
  template <int N>
  void add_all(const A* v) {
    if constexpr (exact_normalise<T>) {
      bool large = scaled_;
      for (int i = 0; i < N; ++i) large = large || std::fabs(v[i]) >= huge;
      if (large) {
        for (int i = 0; i < N; ++i) add(v[i]);
        return;
      }
    }
    sum_.template add_all<N>(v);
  }
  A sum() const { return scaled_ ? sum_.total() * up : sum_.total(); }
  A mean(A denominator) const {
    return scaled_ ? sum_.total() / denominator * up : sum_.total() / denominator;
  }

 private:
  pairwise_sum<A> sum_;
  bool scaled_ = false;
};

/// Sum of term(i) for i in [0, n), in blocks added pairwise (accurate for long rows).
template <typename A, typename F>
A blocked_sum(Index n, F&& term) {
  pairwise_sum<A> total;
  for (Index i0 = 0; i0 < n; i0 += block_size) {
    const Index end = std::min(n, i0 + block_size);
    A s(0);
    for (Index i = i0; i < end; ++i) s += term(i);
    total.add(s);
  }
  return total.total();
}

/// Calls f with an Eigen map of the strided range (unit-stride map when s == 1).
template <typename P, typename F>
void with_map(P* p, Index n, Index s, F&& f) {
  using T = std::remove_const_t<P>;
  using Vec = std::conditional_t<std::is_const_v<P>, const Eigen::Array<T, Eigen::Dynamic, 1>,
                                 Eigen::Array<T, Eigen::Dynamic, 1>>;
  if (s == 1) {
    f(Eigen::Map<Vec>(p, n));
  } else {
    using S = Eigen::InnerStride<>;
    f(Eigen::Map<Vec, 0, S>(p, n, S(s)));
  }
}

/// a * b, except exactly 0 where a is 0 (even when b is inf or NaN): the zero-coefficient
/// rule of the losses, as an Eigen functor that vectorises (Eigen 3.4's select() does not).
template <typename T>
struct zero_safe_product_op {
  T operator()(const T& a, const T& b) const { return a == T(0) ? T(0) : a * b; }
  template <typename Packet>
  EIGEN_STRONG_INLINE Packet packetOp(const Packet& a, const Packet& b) const {
    namespace ei = Eigen::internal;
    const Packet zero = ei::pset1<Packet>(T(0));
    return ei::pselect(ei::pcmp_eq(a, zero), zero, ei::pmul(a, b));
  }
};

/// sigmoid(x) from x and e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) otherwise (one
/// rounding either way). NaN stays NaN.
template <typename T>
struct sigmoid_from_exp_op {
  T operator()(const T& x, const T& e) const { return (x >= T(0) ? T(1) : e) / (T(1) + e); }
  template <typename Packet>
  EIGEN_STRONG_INLINE Packet packetOp(const Packet& x, const Packet& e) const {
    namespace ei = Eigen::internal;
    const Packet one = ei::pset1<Packet>(T(1));
    const Packet num = ei::pselect(ei::pcmp_le(ei::pset1<Packet>(T(0)), x), one, e);
    return ei::pdiv(num, ei::padd(one, e));
  }
};

/// Sum of n <= block_size contiguous values, with Eigen packets and two accumulators.
template <typename T>
T packet_sum(const T* p, Index n) {
  Index i = 0;
  T s(0);
  if constexpr (Eigen::internal::packet_traits<T>::Vectorizable) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (n >= 2 * ps) {
      Packet a0 = ei::ploadu<Packet>(p);
      Packet a1 = ei::ploadu<Packet>(p + ps);
      for (i = 2 * ps; i + 2 * ps <= n; i += 2 * ps) {
        a0 = ei::padd(a0, ei::ploadu<Packet>(p + i));
        a1 = ei::padd(a1, ei::ploadu<Packet>(p + i + ps));
      }
      s = ei::predux(ei::padd(a0, a1));
    }
  }
  for (; i < n; ++i) s += p[i];
  return s;
}

/// Sum of an Eigen array expression of at most block_size entries: evaluated (vectorised)
/// into a stack buffer, then packet_sum. Used instead of Eigen's .sum(), whose out-of-line
/// reduction trips GCC 12's AVX-512 maybe-uninitialized false positive where no pragma here
/// can reach it.
template <typename E>
typename E::Scalar block_sum(const E& e) {
  static_assert(gather_size <= block_size, "chunks must fit block_sum's buffer");
  using T = typename E::Scalar;
  alignas(64) T buf[block_size];
  const Index n = e.size();
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(buf, n) = e;
  return packet_sum(buf, n);
}

/// x for x > 0, else 0 (NaN gives 0: callers get their NaN from log1p(exp(-|x|))).
template <typename T>
struct positive_part_op {
  T operator()(const T& x) const { return x > T(0) ? x : T(0); }
  template <typename Packet>
  EIGEN_STRONG_INLINE Packet packetOp(const Packet& x) const {
    namespace ei = Eigen::internal;
    const Packet zero = ei::pset1<Packet>(T(0));
    return ei::pselect(ei::pcmp_lt(zero, x), x, zero);
  }
};

/// x for x < 0, else 0 (same NaN remark).
template <typename T>
struct negative_part_op {
  T operator()(const T& x) const { return x < T(0) ? x : T(0); }
  template <typename Packet>
  EIGEN_STRONG_INLINE Packet packetOp(const Packet& x) const {
    namespace ei = Eigen::internal;
    const Packet zero = ei::pset1<Packet>(T(0));
    return ei::pselect(ei::pcmp_lt(x, zero), x, zero);
  }
};

/// out[i] = f(in[i]) for n contiguous values (out may equal in): packets through pf, the
/// tail through sf. A plain packet loop rather than an Eigen expression: it keeps the packet
/// function inlined in a small function (see the GCC note at the top of this file).
template <typename T, typename PF, typename SF>
void apply_n(const T* in, T* out, Index n, PF&& pf, SF&& sf) {
  Index i = 0;
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    for (; i + ps <= n; i += ps) ei::pstoreu(out + i, pf(ei::ploadu<Packet>(in + i)));
  }
  for (; i < n; ++i) out[i] = sf(in[i]);
}

/// out[i] = exp(in[i]) with the core's accurate vectorised exp.
template <typename T>
void exp_n(const T* in, T* out, Index n) {
  apply_n(
      in, out, n, [](const auto& p) { return pexp_accurate(p); }, [](T v) { return std::exp(v); });
}

/// Terms of the series in plog1p_unit: (1/9)^K / (2K + 1) is below half an ULP of T.
template <typename T>
inline constexpr int log1p_terms = std::is_same_v<T, float> ? 8 : 17;

/// log1p(e) for e in [0, 1] (the e = exp(-|x|) of the sigmoid family), as
/// 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...) with s = e / (2 + e) in [0, 1/3]: basic
/// packet arithmetic only, within about 2 ULP, exact 0 at 0, full relative accuracy for
/// tiny e. NaN stays NaN.
template <typename Packet>
EIGEN_STRONG_INLINE Packet plog1p_unit(const Packet& e) {
  namespace ei = Eigen::internal;
  using T = typename ei::unpacket_traits<Packet>::type;
  constexpr int K = log1p_terms<T>;
  // d = 2 + e rounds; its error err = e - (d - 2) is exact (d - 2 is, by Sterbenz), so
  // s = e / (d + err) ~ q (1 - err / d) with q = e / d recovers that rounding.
  const Packet two = ei::pset1<Packet>(T(2));
  const Packet d = ei::padd(two, e);
  const Packet err = ei::psub(e, ei::psub(d, two));
  const Packet q = ei::pdiv(e, d);
  const Packet s = ei::psub(q, ei::pmul(q, ei::pdiv(err, d)));
  const Packet s2 = ei::pmul(s, s);
  Packet p = ei::pset1<Packet>(static_cast<T>(1.0L / (2 * K + 1)));
  for (int k = K - 1; k >= 0; --k) {
    p = ei::pmadd(p, s2, ei::pset1<Packet>(static_cast<T>(1.0L / (2 * k + 1))));
  }
  return ei::pmul(ei::padd(s, s), p);
}

/// out[i] = log1p(in[i]) for n contiguous values in [0, 1] (out may equal in).
template <typename T>
void log1p_unit_n(const T* in, T* out, Index n) {
  apply_n(
      in, out, n, [](const auto& p) { return plog1p_unit(p); }, [](T v) { return std::log1p(v); });
}

template <typename T>
inline constexpr bool has_packet_select =
    Eigen::internal::packet_traits<T>::Vectorizable&& Eigen::internal::packet_traits<T>::size > 1;

/// Sum over blocks of term(i0, len, d), where d is the Eigen expression of
/// -s_c = -(x_c - max) / T >= 0 for the block [i0, i0 + len) (the same values as -sh(x_c),
/// vectorised); block results are added pairwise.
template <typename A, typename T, typename F>
A neg_shifted_sum(const T* x, Index xs, Index n, const shift<T>& sh, F&& term) {
  pairwise_sum<A> total;
  for (Index i0 = 0; i0 < n; i0 += block_size) {
    const Index len = std::min(block_size, n - i0);
    with_map(x + i0 * xs, len, xs, [&](const auto& xm) {
      if (sh.divide) {
        total.add(term(i0, len, (sh.hmax - sh.half * xm) / sh.hT));
      } else {
        total.add(term(i0, len, sh.hmax - xm));
      }
    });
  }
  return total.total();
}

// ---------------------------------------------------------------------------------------
// Softmax cross-entropy of one sample
//
// Every cross-entropy variant is loss = sum_c a_c * (-log p_c) with p = softmax(x / T) and
// non-negative coefficients a_c (the "target model"); its gradient with respect to x is
// (A p_c - a_c) / T with A = sum_c a_c. Writing -log p_c = L - s_c with s_c = (x_c - max)/T
// <= 0 and L = log sum_c exp(s_c) >= 0 gives loss = A L + sum_c a_c (-s_c): a sum of
// non-negative terms, so it carries no cancellation. Terms with a_c = 0 are skipped (they
// contribute 0 even where log p_c = -inf).

/// A and sum_c a_c (-s_c) of one sample.
template <typename T>
struct ce_totals {
  acc_t<T> a_sum;
  acc_t<T> linear;
};

/// Class-index target y with label smoothing eps and class weights w:
/// a_c = (1 - eps) w_y [c == y] + (eps / C) w_c.
template <typename T>
struct index_model {
  Index y;
  T hot;     // (1 - eps) * w_y
  T smooth;  // eps / C
  strided_view<T> w;
  acc_t<T> w_sum;  // sum_c w_c (C without weights)

  T coef(Index c) const {
    T a = smooth == T(0) ? T(0) : smooth * w.or_one(c);
    if (c == y) a += hot;
    return a;
  }

  ce_totals<T> totals(const T* x, Index xs, Index n, const shift<T>& sh) const {
    using A = acc_t<T>;
    A linear(0);
    if (hot != T(0)) linear += static_cast<A>(hot) * -static_cast<A>(sh(x[y * xs]));
    if (smooth != T(0)) {
      A s(0);
      // Block sums in T (non-negative terms, vectorised), blocks combined in A, as the
      // core's exp-sum does.
      if (w.empty()) {
        s = neg_shifted_sum<A>(
            x, xs, n, sh, [](Index, Index, const auto& d) { return static_cast<A>(block_sum(d)); });
      } else {
        s = neg_shifted_sum<A>(x, xs, n, sh, [&](Index i0, Index len, const auto& d) {
          A r(0);
          with_map(w.data + i0 * w.stride, len, w.stride, [&](const auto& wm) {
            r = static_cast<A>(block_sum(wm.binaryExpr(d, zero_safe_product_op<T>())));
          });
          return r;
        });
      }
      linear += static_cast<A>(smooth) * s;
    }
    return {static_cast<A>(hot) + static_cast<A>(smooth) * w_sum, linear};
  }

  /// g holds exp(s_c); turns it into k1 * exp(s_c) - k2 * a_c.
  void finish(T* g, Index gs, Index n, T k1, T k2) const {
    with_map(g, n, gs, [&](auto&& gm) {
      if (smooth == T(0)) {
        gm *= k1;
      } else if (w.empty()) {
        gm = k1 * gm - k2 * smooth;
      } else {
        with_map(w.data, n, w.stride, [&](const auto& wm) { gm = k1 * gm - (k2 * smooth) * wm; });
      }
    });
    finish_target(g, gs, k2);
  }

  /// Whether finish only multiplies by k1 before finish_target (no smoothing): the
  /// gradient can then be written as k1 exp(s_c) in one pass (exp_times_streamed).
  bool scales_only() const { return smooth == T(0); }

  /// The target's term of finish: g_y -= k2 a_y.
  void finish_target(T* g, Index gs, T k2) const { g[y * gs] -= k2 * hot; }
};

/// Probability targets q with label smoothing eps and class weights w:
/// a_c = w_c ((1 - eps) q_c + eps / C).
template <typename T>
struct probability_model {
  const T* q;
  Index qs;
  T keep;    // 1 - eps
  T smooth;  // eps / C
  strided_view<T> w;

  T coef(Index c) const { return w.or_one(c) * (keep * q[c * qs] + smooth); }

  ce_totals<T> totals(const T* x, Index xs, Index n, const shift<T>& sh) const {
    using A = acc_t<T>;
    pairwise_sum<A> a_sum;
    const A linear = neg_shifted_sum<A>(x, xs, n, sh, [&](Index i0, Index len, const auto& d) {
      A r(0);
      with_map(q + i0 * qs, len, qs, [&](const auto& qm) {
        const auto add = [&](const auto& a) {  // a: the block's coefficients a_c
          a_sum.add(static_cast<A>(block_sum(a)));
          r = static_cast<A>(block_sum(a.binaryExpr(d, zero_safe_product_op<T>())));
        };
        if (w.empty()) {
          add(keep * qm + smooth);
        } else {
          with_map(w.data + i0 * w.stride, len, w.stride,
                   [&](const auto& wm) { add(wm * (keep * qm + smooth)); });
        }
      });
      return r;
    });
    return {a_sum.total(), linear};
  }

  bool scales_only() const { return false; }
  void finish_target(T*, Index, T) const {}

  void finish(T* g, Index gs, Index n, T k1, T k2) const {
    with_map(g, n, gs, [&](auto&& gm) {
      with_map(q, n, qs, [&](const auto& qm) {
        if (w.empty()) {
          gm = k1 * gm - k2 * (keep * qm + smooth);
        } else {
          with_map(w.data, n, w.stride,
                   // a_c first, as coef(): k2 w_c may overflow where a_c = 0 (a zero
                   // target under a huge weight), and inf * 0 is NaN.
                   [&](const auto& wm) { gm = k1 * gm - k2 * (wm * (keep * qm + smooth)); });
        }
      });
    });
  }
};

/// The exponent K of the exact scale 2^K (pexp_scaled) of the exponentials e_c = exp(s_c)
/// behind a gradient gscale (A p_c - a_c) / T, p_c = e_c / sum e. Below T = 1 an e_c
/// rounded on the subnormal grid and then multiplied by about A / T would carry an error of
/// up to A denorm_min / T (hundreds of ULP of a normal result); stored as e_c 2^K with
/// 2^K >= 2 |A| / T it is rounded once, after the scaling, wherever the result is normal.
/// From T = 1 up the same holds for large coefficients (class weights of 3e8: a float
/// e_c = exp(-104) = 0 against a gradient of 2e-37; corpus/fuzz_cross_entropy/heavy-weight-
/// underflowed-probability), so there K > 0 from A / T >= 8 on: K = 0 leaves A / T < 16,
/// an error under 8 denorm_min, and the usual path (A = 1) unchanged. K is at most what keeps
/// n 2^K finite. It depends on A and T only, so the loss-only and gradient forms sum the
/// same values.
template <typename T>
int gradient_exp_scale(acc_t<T> a_sum, T temperature, Index n) {
  if (!is_finite(a_sum) || a_sum == acc_t<T>(0)) return 0;
  int bits = 0;
  for (Index m = n; m > 0; m >>= 1) ++bits;
  const int k_max = std::numeric_limits<T>::max_exponent - 2 - bits;
  const int k = exponent_of(a_sum) - exponent_of(temperature) + (temperature < T(1) ? 2 : -3);
  return std::clamp(k, 0, k_max);
}

/// sum_c a_c (max - x_c) / T term by term, when the vectorised linear term overflowed
/// although a small a_c (smoothing, a small weight, a subnormal target) may bring each
/// product back into range: a tiny T, or logits spread wider than T's range (x_c - max, or
/// the block sums of w_c (max - x_c), overflow T). Each term as a_c ((max - x_c) / T) where
/// that quotient is finite, else as (a_c / T) (max - x_c), else a_c (max - x_c) / T.
/// Dividing the coefficient first keeps a subnormal a_c exact (a_c / T is normal), where
/// a_c (max - x_c) would round it on the subnormal grid (fuzz input corpus/fuzz_cross_
/// entropy/subnormal-coefficient-unscaled-linear: a_c = -1.1e-321, T = 5.4e-323, loss off
/// by 1.1e-4 relative). max - x_c itself is taken in halves where it overflows.
template <typename T, typename Model>
acc_t<T> unscaled_linear(const T* x, Index xs, Index n, T max, T temperature, const Model& model) {
  using A = acc_t<T>;
  const A t = static_cast<A>(temperature);
  return blocked_sum<A>(n, [&](Index c) -> A {
    const A a = static_cast<A>(model.coef(c));
    if (a == A(0)) return A(0);  // 0 even against max - x_c = +inf
    const T xc = x[c * xs];
    A d = static_cast<A>(max - xc);  // the rounding of the shift's x_c - max
    A twice(1);
    if (!is_finite(d) && is_finite(xc)) {
      // Two finite values further apart than T's range (MAX and -MAX / 4: the test
      // CrossEntropy.LogitsSpreadBeyondTheRangeGiveAFiniteLoss).
      d = static_cast<A>(max) / 2 - static_cast<A>(xc) / 2;
      twice = A(2);
    }
    const A q = d / t;
    if (is_finite(q)) return twice * (a * q);
    const A r = a / t;
    return twice * (is_finite(r) ? r * d : a * d / t);
  });
}

/// gscale * d / T, for a T so small that gscale / T overflows: exactly 0 for d = 0 (never
/// 0 * inf), finite wherever the true value is.
template <typename A>
A scale_gradient(A d, A gscale, A temperature) {
  if (d == A(0)) return A(0);
  const A q = d / temperature;
  return is_finite(q) ? q * gscale : d * gscale / temperature;
}

/// Loss sum_c a_c (-log p_c) of one sample of length n (p = softmax(x / T)); when g is not
/// null, also writes g_c = gscale * (A p_c - a_c) / T. g may alias x exactly: x is read in
/// full (max, linear term) before the exp-sum pass stores exp(s_c) into g, and the final
/// pass only reads g. Passes: max; linear term (only a read of x_y without smoothing);
/// exp-sum (stores into g); scale. With `stream` (the gradient is written to memory,
/// stream_pays), a contiguous float row longer than stored_exp_max_bytes whose model only
/// scales (Model::scales_only) writes its gradient in a pass of its own instead, the
/// exponentials taken again from x and streamed out (same bits).
template <typename T, typename Model>
acc_t<T> ce_sample(const T* x, Index xs, Index n, T temperature, const Model& model, T* g, Index gs,
                   T gscale, bool stream = false) {
  using A = acc_t<T>;
  const T inf = std::numeric_limits<T>::infinity();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  if (n == 0) return A(0);
  // The cheap max: a NaN it misses makes the exp-sum, and so the loss and every gradient
  // entry, NaN on the regular path; the +inf path below checks for one explicitly.
  T m, lo;
  std::tie(m, lo) = max_and_floor(x, n, xs);
  if (is_nan(m) || is_neg_inf(m) || (is_pos_inf(m) && has_nan(x, n, xs))) {
    // NaN anywhere, or only -inf: softmax is undefined (0/0).
    if (g != nullptr) fill(g, n, gs, nan);
    return static_cast<A>(nan);
  }
  if (is_pos_inf(m)) {
    // One +inf logit: p is one-hot on it (log p = 0 there, -inf elsewhere); two: undefined.
    Index hot = -1, count = 0;
    for (Index c = 0; c < n; ++c) {
      if (is_pos_inf(x[c * xs])) {
        hot = c;
        ++count;
      }
    }
    if (count > 1) {
      if (g != nullptr) fill(g, n, gs, nan);
      return static_cast<A>(nan);
    }
    A a_sum(0);
    bool off_hot = false;
    for (Index c = 0; c < n; ++c) {
      const T a = model.coef(c);
      a_sum += static_cast<A>(a);
      off_hot = off_hot || (c != hot && a != T(0));
    }
    if (g != nullptr) {
      for (Index c = 0; c < n; ++c) {
        const A d = (c == hot ? a_sum : A(0)) - static_cast<A>(model.coef(c));
        g[c * gs] = static_cast<T>(scale_gradient(d, static_cast<A>(gscale), A(temperature)));
      }
    }
    return off_hot ? static_cast<A>(inf) : A(0);
  }
  shift<T> sh(m, temperature);
  sh.set_min(lo);
  ce_totals<T> tot = model.totals(x, xs, n, sh);
  if (!is_finite(tot.linear)) {
    // A term or a block sum overflowed (a tiny T, or logits spread over T's whole range):
    // term by term (+inf again where the loss is +inf: a_c > 0 on an x_c = -inf).
    tot.linear = unscaled_linear(x, xs, n, m, temperature, model);
  }
  // The exponentials are e_c 2^K (exactly; K = 0 from T = 1 up), and so is their sum.
  const exp_scale<T> sc(gradient_exp_scale<T>(tot.a_sum, temperature, n));
  const bool streamed = g != nullptr && stream && has_packet_exp<T> && std::is_same_v<T, float> &&
                        xs == 1 && gs == 1 && n * Index(sizeof(T)) > stored_exp_max_bytes &&
                        model.scales_only();
  compensated_sum<A> acc;
  if (g != nullptr && !streamed) {
    exp_sum<true>(x, xs, g, gs, n, sh, acc, sc);
  } else {
    exp_sum<false>(x, xs, static_cast<T*>(nullptr), 1, n, sh, acc, sc);
  }
  const A s_scaled = acc.total();
  const A s = sc.k == 0 ? s_scaled : std::ldexp(s_scaled, -sc.k);  // exact
  if (g != nullptr) {
    // p_c = e_c 2^K / (s 2^K): the scale cancels in k1 = gscale A / (T s 2^K).
    const A k2 = static_cast<A>(gscale) / static_cast<A>(temperature);
    const A k1 = k2 * tot.a_sum / s_scaled;
    const bool finite_scales = is_finite(static_cast<T>(k1)) && is_finite(static_cast<T>(k2));
    if (finite_scales && streamed) {
      if constexpr (has_packet_exp<T>) exp_times_streamed(x, g, n, sh, sc, static_cast<T>(k1));
      model.finish_target(g, gs, static_cast<T>(k2));
    } else if (finite_scales) {
      model.finish(g, gs, n, static_cast<T>(k1), static_cast<T>(k2));
    } else {
      if (streamed) {
        compensated_sum<A> again;  // the exponentials the path below reads from g
        exp_sum<true>(x, xs, g, gs, n, sh, again, sc);
      }
      // A tiny temperature: the scales overflow T (or A), and k1 e - k2 a would be 0 * inf
      // or inf - inf. (A p - a) / T as A e 2^K / (s 2^K T) - a / T where both quotients
      // are finite (p itself may be subnormal, (s 2^K) T is not); otherwise A p - a first:
      // the gradient is then +-inf, or exactly 0.
      const A st = s_scaled * static_cast<A>(temperature);
      for (Index c = 0; c < n; ++c) {
        const A e = static_cast<A>(g[c * gs]);
        const A a = static_cast<A>(model.coef(c));
        const A q = tot.a_sum * e / st - a / static_cast<A>(temperature);
        if (is_finite(q)) {
          g[c * gs] = static_cast<T>(q == A(0) ? A(0) : q * static_cast<A>(gscale));
        } else {
          const A d = tot.a_sum * e / s_scaled - a;
          g[c * gs] = static_cast<T>(scale_gradient(d, static_cast<A>(gscale), A(temperature)));
        }
      }
    }
  }
  return tot.a_sum * std::log(s) + tot.linear;
}

// ---------------------------------------------------------------------------------------
// Cross-entropy of a panel of samples side by side (index targets)
//
// When the samples are contiguous and the classes strided (rowwise on a column-major
// matrix, Eigen's default layout), one sample at a time reads its row with a large stride.
// The panel kernel instead walks the classes once per pass and treats panel_width samples
// at a time, each lane of a packet one sample: every load is contiguous. Each sample's
// arithmetic is that of ce_sample (the same shifted exponent, so the same exp values);
// only the order of the sums differs (blocks of panel_block classes summed in T, blocks
// added in acc_t).
//
// Panels read in place (samples contiguous, classes strided) take sixteen packets (256
// float samples: 1 KiB of each class column) where that measured faster than four: with a
// gradient to write, or columns beyond L2 (cross_entropy decides). Column-major loss +
// gradient, float: 1024x1000 1.59 -> 1.67-1.86 G/s, 2048x2000 0.88 -> 0.90-0.97,
// 256x32000 0.73 -> 1.16-1.26 (whole columns, read in order); 1000x1000 1.67-1.71 ->
// 1.56-1.59 (its 4000-byte stride); double 1024x1000 0.46 -> 0.59-0.62. The loss alone in
// cache ran 0.85-0.93x wide. The panel's stack grows from ~10 KiB to ~25 KiB (float).
// Panels of a transposed copy (short rows) keep four, so that rows of up to 32 classes fit
// the copy.
inline constexpr Index direct_panel_packets = 16;
inline constexpr Index tiled_panel_packets = 4;

template <typename T, Index K>
constexpr Index panel_width() {
  if constexpr (has_packet_exp<T>) {
    return K *
           Eigen::internal::unpacket_traits<typename Eigen::internal::packet_traits<T>::type>::size;
  } else {
    return 1;
  }
}

inline constexpr Index panel_block = 16;

/// The packets and pieces (piece_columns columns of a packet's worth of samples) through
/// which panel_tile_in and panel_tile_out copy W samples; `fit` when there are such pieces
/// (AVX-512VL) and W is a whole number of packets.
template <Index W, typename T>
struct panel_pieces {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  static constexpr Index ps = Eigen::internal::unpacket_traits<Packet>::size;
  static constexpr int w = piece_columns<Packet>;
  static constexpr bool fit = w > 0 && W % ps == 0;
};

/// How far panel_tile_in reads each contiguous sample of n classes: n rounded up to a whole
/// number of pieces where it copies through registers.
template <Index W, typename T>
Index panel_tile_reach(Index n) {
  using P = panel_pieces<W, T>;
  if constexpr (P::fit) return (n + P::w - 1) / P::w * P::w;
  return n;
}

/// Copies W samples of n classes (class c of sample i at x[i * xd + c * xk]) into a panel's
/// tile, tile[i + c * W]. Contiguous samples (xk == 1) whose loads may run past each
/// sample's last class up to panel_tile_reach (`overrun`: the caller checked that memory is
/// input) go through piece_columns_load, 128-bit loads and in-lane shuffles:
/// entry by entry, this copy took a sixth of a 4096 x 10 float loss.
template <Index W, typename T>
void panel_tile_in(const T* x, Index xd, Index xk, Index n, bool overrun, T* tile) {
#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
  using P = panel_pieces<W, T>;
  if constexpr (P::fit) {
    if (xk == 1 && overrun) {
      for (Index r = 0; r < W; r += P::ps) {
        for (Index c0 = 0; c0 < n; c0 += P::w) {
          typename P::Packet c[P::w];
          piece_columns_load(x + r * xd + c0, xd, c);
          const Index width = std::min<Index>(P::w, n - c0);
          for (Index i = 0; i < width; ++i) Eigen::internal::pstore(tile + (c0 + i) * W + r, c[i]);
        }
      }
      return;
    }
  }
#else
  (void)overrun;
#endif
  for (Index c = 0; c < n; ++c) {
    for (Index i = 0; i < W; ++i) tile[i + c * W] = x[i * xd + c * xk];
  }
}

/// The inverse of panel_tile_in for a gradient: g[i * gd + c * gk] = tile[i + c * W], never
/// past a sample's last class.
template <Index W, typename T>
void panel_tile_out(const T* tile, T* g, Index gd, Index gk, Index n) {
#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
  using P = panel_pieces<W, T>;
  if constexpr (P::fit) {
    if (gk == 1) {
      for (Index r = 0; r < W; r += P::ps) {
        for (Index c0 = 0; c0 < n; c0 += P::w) {
          const int width = static_cast<int>(std::min<Index>(P::w, n - c0));
          typename P::Packet c[P::w];
          for (int i = 0; i < P::w; ++i) {
            c[i] = i < width ? Eigen::internal::pload<typename P::Packet>(tile + (c0 + i) * W + r)
                             : Eigen::internal::pset1<typename P::Packet>(T(0));
          }
          piece_columns_store(c, g + r * gd + c0, gd, width);
        }
      }
      return;
    }
  }
#endif
  for (Index i = 0; i < W; ++i) {
    for (Index c = 0; c < n; ++c) g[i * gd + c * gk] = tile[i + c * W];
  }
}

/// What the panel shares: the smoothing, the weights and the temperature.
template <typename T>
struct index_panel_params {
  T smooth;  // eps / C
  strided_view<T> w;
  acc_t<T> w_sum;
  T temperature;
};

/// Losses (into loss[0..W)) and, when g is not null, gradients of the W = panel_width<T, K>()
/// samples x[i + c ld] (i < W, c < n): sample i has coefficient hot[i] on class y[i] (an
/// ignored sample: ignored[i], loss 0, gradient row 0) and gradient scale gscale[i]. g may
/// be x itself (gld == ld). Returns false, having written nothing, when a sample's maximum
/// is not finite (NaN, +-inf): the caller then uses ce_sample, which owns those cases.
template <Index K, typename T>
bool ce_index_panel(const T* x, Index ld, T* g, Index gld, Index n, const Index* y,
                    const bool* ignored, const T* hot, const T* gscale,
                    const index_panel_params<T>& pp, acc_t<T>* loss) {
  if constexpr (!has_packet_exp<T>) {
    return false;
  } else {
    namespace ei = Eigen::internal;
    using A = acc_t<T>;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    constexpr Index W = K * ps;
    if (n == 0) return false;

    // Pass 1: the maxima.
    Packet mx[K];
    for (Index k = 0; k < K; ++k) mx[k] = ei::ploadu<Packet>(x + k * ps);
    for (Index c = 1; c < n; ++c) {
      for (Index k = 0; k < K; ++k)
        mx[k] = ei::pmax(mx[k], ei::ploadu<Packet>(x + c * ld + k * ps));
    }
    alignas(64) T m[W];
    for (Index k = 0; k < K; ++k) ei::pstoreu(m + k * ps, mx[k]);
    if (!all_finite_bits(m, W)) return false;
    if (g != nullptr) {
      for (Index i = 0; i < W; ++i) {
        // A tiny temperature overflows the gradient's scales: ce_sample's careful path.
        const A k = static_cast<A>(gscale[i]) / static_cast<A>(pp.temperature) *
                    (static_cast<A>(hot[i]) + static_cast<A>(pp.smooth) * pp.w_sum + A(1));
        if (!is_finite(static_cast<T>(k))) return false;
      }
    }

    // The shift of ce_sample: s = (half x - half max) / (half T), or x - max when T == 1.
    const shift<T> sh0(T(0), pp.temperature);
    const bool divide = sh0.divide;
    const Packet half = ei::pset1<Packet>(sh0.half);
    const Packet hT = ei::pset1<Packet>(sh0.hT);
    Packet hmax[K];
    alignas(64) T hm[W];
    for (Index i = 0; i < W; ++i) hm[i] = sh0.half * m[i];
    for (Index k = 0; k < K; ++k) hmax[k] = ei::ploadu<Packet>(hm + k * ps);
    const auto neg_s = [&](const Packet& v, Index k) {  // -s >= 0
      return divide ? ei::pdiv(ei::psub(hmax[k], ei::pmul(half, v)), hT) : ei::psub(hmax[k], v);
    };
    const auto scalar_neg_s = [&](T v, Index i) {
      return divide ? (hm[i] - sh0.half * v) / sh0.hT : hm[i] - v;
    };

    // The linear term sum_c a_c (-s_c), read before any gradient is written (g may be x).
    A linear[W];
    for (Index i = 0; i < W; ++i) {
      linear[i] = (ignored[i] || hot[i] == T(0))
                      ? A(0)
                      : static_cast<A>(hot[i]) * static_cast<A>(scalar_neg_s(x[i + y[i] * ld], i));
    }
    // Adds the block sums bs into the per-sample totals in A.
    const auto flush = [&](Packet* bs, A* total) {
      alignas(64) T t[W];
      for (Index k = 0; k < K; ++k) {
        ei::pstoreu(t + k * ps, bs[k]);
        bs[k] = ei::pset1<Packet>(T(0));
      }
      for (Index i = 0; i < W; ++i) total[i] += static_cast<A>(t[i]);
    };
    if (pp.smooth != T(0)) {
      A smooth_sum[W] = {};
      Packet bs[K];
      for (Index k = 0; k < K; ++k) bs[k] = ei::pset1<Packet>(T(0));
      for (Index c = 0; c < n; ++c) {
        const T wc = pp.w.or_one(c);
        if (wc != T(0)) {  // a zero weight contributes 0, even against -s = +inf
          const Packet wp = ei::pset1<Packet>(wc);
          for (Index k = 0; k < K; ++k) {
            bs[k] =
                ei::padd(bs[k], ei::pmul(wp, neg_s(ei::ploadu<Packet>(x + c * ld + k * ps), k)));
          }
        }
        if ((c + 1) % panel_block == 0 || c + 1 == n) flush(bs, smooth_sum);
      }
      for (Index i = 0; i < W; ++i) linear[i] += static_cast<A>(pp.smooth) * smooth_sum[i];
    }
    for (Index i = 0; i < W; ++i) {
      // An overflowed term: ce_sample's unscaled sum (nothing is written yet).
      if (!is_finite(linear[i])) return false;
    }

    // Pass 2: exp(s) 2^K into g (K per sample, as ce_sample picks it: 0 from T = 1 up
    // unless the coefficients are large), and its sums.
    const A a_smooth = static_cast<A>(pp.smooth) * pp.w_sum;
    int scale[W] = {};
    bool scaled = false, uniform = true;
    // Without weights every sample has the same A, hence the same K (the ignored ones
    // whatever K: their rows become 0): computed once, it costs nothing on short rows.
    Index first = 0;
    while (first < W && ignored[first]) ++first;
    if (first == W) {
      first = -1;
    } else if (!pp.w.empty()) {  // without weights every sample's coefficient is the same
      for (Index i = first + 1; i < W; ++i)
        uniform = uniform && (ignored[i] || hot[i] == hot[first]);
    }
    if (uniform) {
      const int k = first < 0 ? 0
                              : gradient_exp_scale<T>(static_cast<A>(hot[first]) + a_smooth,
                                                      pp.temperature, n);
      for (Index i = 0; i < W; ++i) scale[i] = k;
      scaled = k != 0;
    } else {
      for (Index i = 0; i < W; ++i) {
        scale[i] = gradient_exp_scale<T>(static_cast<A>(hot[i]) + a_smooth, pp.temperature, n);
        scaled = scaled || scale[i] != 0;
      }
    }
    // The exponential sums as in ce_sample: each lane seeded with its 2^K (every e <= 2^K)
    // so that Fast2Sum is exact on every addition, blocks of panel_block classes handed
    // exactly (h - seed, l) to a compensated total per sample (a plain sum in T rounds the
    // lane holding the largest terms at every addition: up to 8.8 ULP of a double gradient).
    A sum[W] = {};
    {
      alignas(64) T seed[W];
      for (Index i = 0; i < W; ++i) seed[i] = pow2_of<T>(scale[i]);
      Packet seeds[K], bs[K], ls[K];
      for (Index k = 0; k < K; ++k) {
        seeds[k] = ei::ploadu<Packet>(seed + k * ps);
        bs[k] = seeds[k];
        ls[k] = ei::pset1<Packet>(T(0));
      }
      A hi[W] = {}, lo[W] = {};
      const auto flush_exact = [&]() {
        alignas(64) T h[W];
        alignas(64) T l[W];
        for (Index k = 0; k < K; ++k) {
          ei::pstoreu(h + k * ps, ei::psub(bs[k], seeds[k]));  // exact (see add_unit)
          ei::pstoreu(l + k * ps, ls[k]);
          bs[k] = seeds[k];
          ls[k] = ei::pset1<Packet>(T(0));
        }
        for (Index i = 0; i < W; ++i) {
          const A v = static_cast<A>(h[i]), t = hi[i] + v, bv = t - hi[i];
          lo[i] += (hi[i] - (t - bv)) + (v - bv) + static_cast<A>(l[i]);
          hi[i] = t;
        }
      };
      if (!scaled) {
        for (Index c = 0; c < n; ++c) {
          for (Index k = 0; k < K; ++k) {
            const Packet v = ei::ploadu<Packet>(x + c * ld + k * ps);
            const Packet e = pexp_accurate(ei::pnegate(neg_s(v, k)));
            if (g != nullptr) ei::pstoreu(g + c * gld + k * ps, e);
            fast_two_sum(bs[k], ls[k], e);
          }
          if ((c + 1) % panel_block == 0 || c + 1 == n) flush_exact();
        }
      } else {
        // The same loop with pexp_scaled, written out: a lambda shared by both slowed the
        // unscaled loop by ~25% (clang, direct panels).
        Packet kk[K], lo_k[K];
        if (uniform) {
          const exp_scale<T> sc(scale[0]);
          for (Index k = 0; k < K; ++k) {
            kk[k] = ei::pset1<Packet>(sc.kk);
            lo_k[k] = ei::pset1<Packet>(sc.lo_k);
          }
        } else {
          alignas(64) T kb[W];
          alignas(64) T lb[W];
          for (Index i = 0; i < W; ++i) {
            const exp_scale<T> sc(scale[i]);
            kb[i] = sc.kk;
            lb[i] = sc.lo_k;
          }
          for (Index k = 0; k < K; ++k) {
            kk[k] = ei::ploadu<Packet>(kb + k * ps);
            lo_k[k] = ei::ploadu<Packet>(lb + k * ps);
          }
        }
        for (Index c = 0; c < n; ++c) {
          for (Index k = 0; k < K; ++k) {
            const Packet v = ei::ploadu<Packet>(x + c * ld + k * ps);
            const Packet e = pexp_scaled(ei::pnegate(neg_s(v, k)), kk[k], lo_k[k]);
            if (g != nullptr) ei::pstoreu(g + c * gld + k * ps, e);
            fast_two_sum(bs[k], ls[k], e);
          }
          if ((c + 1) % panel_block == 0 || c + 1 == n) flush_exact();
        }
      }
      for (Index i = 0; i < W; ++i) sum[i] = hi[i] + lo[i];
    }

    // Losses; pass 3: g = k1 exp(s) 2^K - k2 a (the scale cancels in k1, as in ce_sample).
    alignas(64) T k1[W];
    alignas(64) T k2[W];
    A log_sum[W];  // one log per sample: vectorised, it matters for short rows
    for (Index i = 0; i < W; ++i) log_sum[i] = sum[i] * pow2_of<A>(-scale[i]);  // exact
    {
      Eigen::Map<Eigen::Array<A, W, 1>> out(log_sum);
      out = out.log();
    }
    for (Index i = 0; i < W; ++i) {
      const A a_sum = static_cast<A>(hot[i]) + a_smooth;
      loss[i] = ignored[i] ? A(0) : a_sum * log_sum[i] + linear[i];
    }
    if (g == nullptr) return true;
    // Every lane computed, the ignored ones then cleared: a loop compilers vectorise (with
    // the choice inside, its two divisions per lane were an eighth of a 4096 x 10 loss and
    // gradient in a profile).
    for (Index i = 0; i < W; ++i) {
      const A a_sum = static_cast<A>(hot[i]) + a_smooth;
      const A k = static_cast<A>(gscale[i]) / static_cast<A>(pp.temperature);
      k1[i] = static_cast<T>(k * a_sum / sum[i]);
      k2[i] = static_cast<T>(k);
    }
    for (Index i = 0; i < W; ++i) {
      if (ignored[i]) k1[i] = k2[i] = T(0);
    }
    Packet k1p[K], k2s[K];
    for (Index k = 0; k < K; ++k) {
      k1p[k] = ei::ploadu<Packet>(k1 + k * ps);
      k2s[k] = ei::pmul(ei::ploadu<Packet>(k2 + k * ps), ei::pset1<Packet>(pp.smooth));
    }
    for (Index c = 0; c < n; ++c) {
      T* gc = g + c * gld;
      if (pp.smooth == T(0)) {
        for (Index k = 0; k < K; ++k) {
          ei::pstoreu(gc + k * ps, ei::pmul(k1p[k], ei::ploadu<Packet>(gc + k * ps)));
        }
      } else {
        const Packet wp = ei::pset1<Packet>(pp.w.or_one(c));
        for (Index k = 0; k < K; ++k) {
          const Packet e = ei::ploadu<Packet>(gc + k * ps);
          ei::pstoreu(gc + k * ps, ei::psub(ei::pmul(k1p[k], e), ei::pmul(k2s[k], wp)));
        }
      }
    }
    for (Index i = 0; i < W; ++i) {
      if (ignored[i]) {
        for (Index c = 0; c < n; ++c) g[i + c * gld] = T(0);  // even where exp(s) was NaN
      } else {
        g[i + y[i] * gld] -= k2[i] * hot[i];
      }
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------
// Log-softmax evaluated entry by entry (distillation reads two of them side by side)

template <typename T>
struct log_softmax_state {
  enum class kind { finite, one_hot, undefined };
  kind k = kind::undefined;
  shift<T> sh{T(0), T(1)};
  T log_s = T(0);
  Index hot = -1;

  /// log p_c / 4 in acc_t<T> (T log p_c / 4 when scaled), finite wherever log p_c is,
  /// including where T's own log p_c overflowed: x_c - max of two finite values can
  /// exceed T's range.
  acc_t<T> quarter_log_p(T x, Index c, bool scaled) const {
    using A = acc_t<T>;
    if (k == kind::one_hot) return c == hot ? A(0) : -std::numeric_limits<A>::infinity();
    // The shift's max and T back: hmax = half max, hT = half T, half 1 or 0.5.
    const A half = static_cast<A>(sh.half);
    const A d = static_cast<A>(x) / 4 - static_cast<A>(sh.hmax) / half / 4;
    const A t = static_cast<A>(sh.hT) / half;
    const A ls = static_cast<A>(log_s) / 4;
    if (scaled) return d - t * ls;
    return (sh.divide ? d / t : d) - ls;
  }

  /// out[i] = log p_{c0 + i} for the len entries x[0], x[xs], ... of classes c0, c0 + 1, ...
  /// Scaled (only for T <= 1): T log p_{c0 + i} = (x - max) - T log s, which stays finite
  /// where log p itself overflows (a tiny T).
  void write_log_p(const T* x, Index xs, Index len, Index c0, T* out, bool scaled = false) const {
    using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;
    Eigen::Map<Vec> om(out, len);
    if (k == kind::finite) {
      with_map(x, len, xs, [&](const auto& xm) {
        if (scaled) {
          om = (xm - sh.hmax) - sh.hT * log_s;
        } else if (sh.divide) {
          om = (sh.half * xm - sh.hmax) / sh.hT - log_s;
        } else {
          om = (xm - sh.hmax) - log_s;
        }
      });
    } else if (k == kind::one_hot) {
      om.setConstant(-std::numeric_limits<T>::infinity());
      if (hot >= c0 && hot < c0 + len) out[hot - c0] = T(0);
    } else {
      om.setConstant(std::numeric_limits<T>::quiet_NaN());
    }
  }
};

/// The normaliser of log_softmax(x / T) for one distribution, with the core's policy.
template <typename T>
log_softmax_state<T> make_log_softmax_state(const T* x, Index xs, Index n, T temperature) {
  using S = log_softmax_state<T>;
  S st;
  T m, lo;
  std::tie(m, lo) = max_and_floor(x, n, xs);
  if (is_nan(m) || is_neg_inf(m)) return st;  // undefined (also for n == 0; never read then)
  if (is_pos_inf(m)) {
    if (has_nan(x, n, xs)) return st;
    Index count = 0;
    for (Index c = 0; c < n; ++c) {
      if (is_pos_inf(x[c * xs])) {
        st.hot = c;
        ++count;
      }
    }
    if (count == 1) st.k = S::kind::one_hot;
    return st;
  }
  st.sh = shift<T>(m, temperature);
  st.sh.set_min(lo);
  compensated_sum<acc_t<T>> acc;
  exp_sum<false>(x, xs, static_cast<T*>(nullptr), 1, n, st.sh, acc);
  st.log_s = static_cast<T>(std::log(acc.total()));
  // A NaN the cheap max missed shows up here, in the sum.
  if (!is_nan(st.log_s)) st.k = S::kind::finite;
  return st;
}

/// T^2 KL(q || p) = T^2 sum_c q_c (log q_c - log p_c) of one sample, q = softmax(t / T)
/// (teacher), p = softmax(s / T) (student), terms with q_c = 0 contributing 0. When g is not
/// null, also writes g_c = gscale * (p_c - q_c). g may alias s or t exactly (entry c of both
/// is read before g_c is written). Passes: max and exp-sum of each side, then one sweep in
/// chunks with the vectorised exp. For T < 1 the sweep works on T log p and T log q and
/// multiplies by T once: log p alone overflows when T is tiny (a subnormal T, or 1e37
/// logits at T = 0.03) although T^2 KL is finite.
template <typename T>
acc_t<T> kl_sample(const T* s, Index ss, const T* t, Index ts, Index n, T temperature, T* g,
                   Index gs, T gscale) {
  using A = acc_t<T>;
  using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  if (n == 0) return A(0);
  const auto sp = make_log_softmax_state(s, ss, n, temperature);
  const auto tq = make_log_softmax_state(t, ts, n, temperature);
  using K = typename log_softmax_state<T>::kind;
  if (sp.k == K::undefined || tq.k == K::undefined) {
    if (g != nullptr) fill(g, n, gs, nan);
    return static_cast<A>(nan);
  }
  const bool scaled = temperature < T(1);
  pairwise_sum<A> total, quarters;  // quarters: chunks that overflowed T, a quarter of each
  alignas(64) T lp[gather_size];
  alignas(64) T lq[gather_size];
  alignas(64) T p[gather_size];
  alignas(64) T q[gather_size];
  for (Index i0 = 0; i0 < n; i0 += gather_size) {
    const Index len = std::min(gather_size, n - i0);
    sp.write_log_p(s + i0 * ss, ss, len, i0, lp, scaled);
    tq.write_log_p(t + i0 * ts, ts, len, i0, lq, scaled);
    const Eigen::Map<const Vec> lpm(lp, len), lqm(lq, len);
    Eigen::Map<Vec> pm(p, len), qm(q, len);
    if (scaled) {
      // q from the unscaled log q: T log q / T would carry the subnormal rounding of T log s
      // (a subnormal T) into q. Where log q overflows to -inf, q is 0 anyway.
      tq.write_log_p(t + i0 * ts, ts, len, i0, q);
      exp_n(q, q, len);
    } else {
      exp_n(lq, q, len);
    }
    // Chunk sums in T, chunks combined in A (the terms carry their own rounding anyway).
    const T chunk = block_sum(qm.binaryExpr(lqm - lpm, zero_safe_product_op<T>()));
    if (is_finite(chunk)) {
      total.add(static_cast<A>(chunk));
    } else {
      // A term or the sum overflowed T although the loss may be finite (a float student
      // of 3.4e38 against -1.5e31 at T = 7e-4: x - max overflows, the loss is 2.1e35;
      // corpus/fuzz_distillation/overflowed-chunk-sum): a quarter of each term in A, from
      // the logits (+inf again where some q_c > 0 meets p_c = 0).
      A part(0);
      for (Index i = 0; i < len; ++i) {
        if (q[i] == T(0)) continue;
        const Index c = i0 + i;
        part += static_cast<A>(q[i]) *
                (tq.quarter_log_p(t[c * ts], c, scaled) - sp.quarter_log_p(s[c * ss], c, scaled));
      }
      quarters.add(part);
    }
    if (g != nullptr) {
      if (scaled) {
        sp.write_log_p(s + i0 * ss, ss, len, i0, p);
        exp_n(p, p, len);
      } else {
        exp_n(lp, p, len);
      }
      pm = gscale * (pm - qm);
      with_map(g + i0 * gs, len, gs, [&](auto&& gm) { gm = pm; });
    }
  }
  const A tt = static_cast<A>(temperature);
  const A factor = scaled ? tt : tt * tt;
  const A q4 = quarters.total();
  return q4 == A(0) ? factor * total.total() : factor * total.total() + 4 * (factor * q4);
}

// ---------------------------------------------------------------------------------------
// Sigmoid family, elementwise
//
// With e = exp(-|x|) (never overflows) and l = log1p(e):
//   softplus(x)  = max(x, 0) + l,     softplus(-x) = max(-x, 0) + l,
//   sigmoid(x)   = 1 / (1 + e) for x >= 0, e / (1 + e) otherwise,
//   log_sigmoid(x) = -softplus(-x) = min(x, 0) - l.

/// sigmoid (Log false) or log_sigmoid (Log true) of n strided values; y may alias x
/// exactly (each chunk is read before it is written).
template <bool Log, typename T>
void sigmoid_run(const T* x, Index xs, T* y, Index ys, Index n) {
  using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;
  alignas(64) T xb[gather_size];
  alignas(64) T eb[gather_size];
  alignas(64) T ob[gather_size];
  for (Index i0 = 0; i0 < n; i0 += gather_size) {
    const Index len = std::min(gather_size, n - i0);
    for (Index i = 0; i < len; ++i) {
      xb[i] = x[(i0 + i) * xs];
      eb[i] = -std::fabs(xb[i]);
    }
    exp_n(eb, eb, len);  // e = exp(-|x|)
    const Eigen::Map<const Vec> xm(xb, len);
    Eigen::Map<Vec> em(eb, len), om(ob, len);
    if constexpr (Log) {
      log1p_unit_n(eb, eb, len);
      om = xm.unaryExpr(negative_part_op<T>()) - em;
    } else {
      om = xm.binaryExpr(em, sigmoid_from_exp_op<T>());
    }
    for (Index i = 0; i < len; ++i) y[(i0 + i) * ys] = ob[i];
  }
}

/// One loss of bce_run in long double, with its zero-safe products: a factor that is 0
/// makes its term 0 even where softplus is inf.
template <typename T>
T bce_wide(T x, T y, T w, T pw) {
  using L = long double;
  const auto times = [](L f, L v) { return f == 0 ? L(0) : f * v; };
  const L xl = x, yl = y;
  const L lp = std::log1p(std::exp(-std::fabs(xl)));
  const L sp_pos = std::max(xl, L(0)) + lp, sp_neg = std::max(-xl, L(0)) + lp;
  return static_cast<T>(times(w, times(L(pw) * yl, sp_neg) + times(L(1) - yl, sp_pos)));
}

/// BCE-with-logits of one strided run of n elements of classes c0, c0 + cstep, ... (class
/// weights w and positive weights pw: each empty, a single value, or one per class):
///   l = w_c [pw_c y softplus(-x) + (1 - y) softplus(x)],   a term whose factor (pw_c y or
///       1 - y, or w_c for the whole) is 0 contributes 0 even where softplus is +inf;
///   dl/dx = w_c [(1 - y) sigmoid(x) - pw_c y sigmoid(-x)].
/// When g is not null writes gscale * u_i * dl/dx_i to g (u_i = 1 when u is null); when l
/// is not null writes the losses to l; g and l may alias x, y or u exactly (element i of
/// every input is read before element i of an output is written). Returns the sum of the
/// losses when want_loss, else 0.
template <typename T>
acc_t<T> bce_run(const T* x, Index xs, const T* y, Index ys, Index n, const strided_view<T>& w,
                 const strided_view<T>& pw, Index c0, Index cstep, const T* u, Index us, T* g,
                 Index gs, T gscale, T* l, Index ls, bool want_loss) {
  using A = acc_t<T>;
  using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;
  const auto class_value = [](const strided_view<T>& v, Index c) {
    return v.empty() ? T(1) : v.size == 1 ? v[0] : v[c];
  };
  alignas(64) T xb[gather_size];
  alignas(64) T yb[gather_size];
  alignas(64) T wb[gather_size];
  alignas(64) T pb[gather_size];
  alignas(64) T eb[gather_size];
  alignas(64) T ob[gather_size];
  pairwise_sum<A> total;
  for (Index i0 = 0; i0 < n; i0 += gather_size) {
    const Index len = std::min(gather_size, n - i0);
    for (Index i = 0; i < len; ++i) {
      const Index c = c0 + (i0 + i) * cstep;
      xb[i] = x[(i0 + i) * xs];
      yb[i] = y[(i0 + i) * ys];
      wb[i] = class_value(w, c);
      pb[i] = class_value(pw, c);
    }
    const Eigen::Map<const Vec> xm(xb, len), ym(yb, len), wm(wb, len), pm(pb, len);
    Eigen::Map<Vec> em(eb, len), om(ob, len);
    for (Index i = 0; i < len; ++i) eb[i] = -std::fabs(xb[i]);
    exp_n(eb, eb, len);  // e = exp(-|x|): never overflows
    if (want_loss || l != nullptr) {
      log1p_unit_n(eb, ob, len);
      const auto sp_pos = xm.unaryExpr(positive_part_op<T>()) + om;     // softplus(x)
      const auto sp_neg = (-xm).unaryExpr(positive_part_op<T>()) + om;  // softplus(-x)
      const auto a_pos = pm * ym;                                       // factor of -log sigmoid(x)
      const auto a_neg = T(1) - ym;  // factor of -log sigmoid(-x)
      const zero_safe_product_op<T> times;
      om = wm.binaryExpr(a_pos.binaryExpr(sp_neg, times) + a_neg.binaryExpr(sp_pos, times), times);
      // Losses the factors' roundings spoil are taken again in long double (bce_wide):
      // - the product of three factors can overflow on the way to a finite loss (x =
      //   -1.7e38, y = 0.85, pw_c y softplus(-x) = inf in float, w_c that brings it to
      //   1.2e37): an infinite loss, which comes out inf only where it is;
      // - pw_c y below the normal range has lost its digits (all of them when it rounds to
      //   0) before softplus(-x), up to 3.4e38, multiplies it: x = -1.7e38, y = 0.35 and a
      //   subnormal pw_c gave 0 for 1.3e-9 (found by fuzz_sigmoid_bce).
      const T normal_min = std::numeric_limits<T>::min();
      const auto spoilt = [&](Index i) {
        return (!is_finite(ob[i]) && !is_nan(ob[i])) ||
               (std::fabs(pb[i] * yb[i]) < normal_min && pb[i] != T(0) && yb[i] != T(0));
      };
      if (!all_finite_bits(ob, len) ||
          (a_pos.abs() < normal_min && pm != T(0) && ym != T(0)).any()) {
        for (Index i = 0; i < len; ++i) {
          if (spoilt(i)) ob[i] = bce_wide(xb[i], yb[i], wb[i], pb[i]);
        }
      }
      // Chunk sums in T, chunks combined in A.
      if (want_loss) total.add(static_cast<A>(packet_sum(ob, len)));
      if (l != nullptr) {
        for (Index i = 0; i < len; ++i) l[(i0 + i) * ls] = ob[i];
      }
    }
    if (g != nullptr) {
      const auto sig_pos = xm.binaryExpr(em, sigmoid_from_exp_op<T>());     // sigmoid(x)
      const auto sig_neg = (-xm).binaryExpr(em, sigmoid_from_exp_op<T>());  // sigmoid(-x)
      om = gscale * wm * ((T(1) - ym) * sig_pos - pm * ym * sig_neg);
      if (u != nullptr) {
        for (Index i = 0; i < len; ++i) g[(i0 + i) * gs] = u[(i0 + i) * us] * ob[i];
      } else {
        for (Index i = 0; i < len; ++i) g[(i0 + i) * gs] = ob[i];
      }
    }
  }
  return total.total();
}

}  // namespace smax::detail::loss

namespace Eigen::internal {
template <typename T>
struct functor_traits<smax::detail::loss::zero_safe_product_op<T>> {
  enum {
    Cost = 3 * NumTraits<T>::MulCost,
    PacketAccess = smax::detail::loss::has_packet_select<T>
  };
};
template <typename T>
struct functor_traits<smax::detail::loss::positive_part_op<T>> {
  enum { Cost = 2, PacketAccess = smax::detail::loss::has_packet_select<T> };
};
template <typename T>
struct functor_traits<smax::detail::loss::negative_part_op<T>> {
  enum { Cost = 2, PacketAccess = smax::detail::loss::has_packet_select<T> };
};
template <typename T>
struct functor_traits<smax::detail::loss::sigmoid_from_exp_op<T>> {
  enum {
    Cost = 3 * NumTraits<T>::MulCost + 10,
    PacketAccess = smax::detail::loss::has_packet_select<T>
  };
};
}  // namespace Eigen::internal

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
