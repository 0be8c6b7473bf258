// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include <smax/detail/exp.hpp>
#include <smax/detail/fpclass.hpp>

/// \file
/// The kernels behind every public function. They see one distribution at a time as a
/// pointer, a length and an element stride; smax/detail/dispatch.hpp maps Eigen objects and
/// axes onto them. One max pass and one exp-sum pass serve softmax, log_softmax and
/// logsumexp; only the final pass differs.

#if defined(__GNUC__)
#pragma GCC diagnostic push
// Packet types (__m256 ...) as template arguments drop their alignment attributes; harmless
// here, as Eigen itself says in DisableStupidWarnings.h.
#pragma GCC diagnostic ignored "-Wignored-attributes"
#if !defined(__clang__)
// GCC 12 reports _mm512_undefined_* inside AVX-512 intrinsics as (maybe-)uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

namespace smax::detail {

using Index = Eigen::Index;

/// Accumulator type for sums of exponentials: double for float input (documented), so the
/// normaliser of a float distribution carries no visible rounding error at any length.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, float>, double, T>;

/// Normalise by dividing when the sum is kept in T itself (double): a reciprocal rounded to
/// T and a multiply would add up to an ULP there. float sums are double, and the reciprocal
/// rounded to float costs at most half an ULP.
template <typename T>
inline constexpr bool exact_normalise = std::is_same_v<acc_t<T>, T>;

/// Pairwise (binary-counter) summation of block sums: error grows with log2(blocks), not
/// with the number of blocks, which keeps double rows of 10^6+ entries within an ULP or two.
/// level_[k] holds the sum of 2^k blocks and is live only while bit k of count_ is set, so
/// nothing needs clearing. A is a scalar or a fixed-capacity Eigen array (one sum per lane).
template <typename A>
class pairwise_sum {
 public:
  void add(A value) {
    std::uint64_t c = count_++;
    int k = 0;
    for (; (c & 1u) != 0 && k < levels - 1; c >>= 1, ++k) value += level_[k];
    level_[k] = value;
  }
  void add(A value, const A& lo) { add(A(value + lo)); }
  /// Multiplies everything added so far by f (the online normaliser's rescaling).
  void scale(const A& f) {
    for (int k = 0; k < levels && (count_ >> k) != 0; ++k) {
      if ((count_ >> k) & 1u) level_[k] *= f;
    }
  }
  /// The total; `zero` is the empty sum (a scalar 0, or a zero array of the lanes' size).
  A total(A zero = A(0)) const {
    A s = zero;
    for (int k = 0; k < levels && (count_ >> k) != 0; ++k) {
      if ((count_ >> k) & 1u) s += level_[k];
    }
    return s;
  }

 private:
  static constexpr int levels = 48;
  A level_[levels];
  std::uint64_t count_ = 0;
};

/// A running sum with its rounding error kept aside (Knuth's TwoSum on every addition): the
/// total carries about one rounding at any length, where a pairwise sum carries one per
/// level of its tree, each up to half an ULP of the partial sum (up to 5 ULP of a softmax
/// output in double). A is a scalar or a fixed-capacity Eigen array; `zero` sizes it.
template <typename A>
class compensated_sum {
 public:
  explicit compensated_sum(const A& zero = A(0)) : hi_(zero), lo_(zero) {}
  void add(const A& v) {
    const A s = hi_ + v;
    const A bv = s - hi_;
    lo_ += (hi_ - (s - bv)) + (v - bv);
    hi_ = s;
  }
  /// Adds v + lo, where lo is a small correction (the error term of a partial sum).
  void add(const A& v, const A& lo) {
    add(v);
    lo_ += lo;
  }
  /// Multiplies everything added so far by f (the online normaliser's rescaling).
  void scale(const A& f) {
    hi_ *= f;
    lo_ *= f;
  }
  A total() const { return hi_ + lo_; }

 private:
  A hi_, lo_;
};

/// h + e as h' + (l' - l) without error (Dekker's Fast2Sum), for |h| >= |e|: the exp-sum
/// loops seed h with 1, above every exponential of an exponent <= 0.
template <typename Packet>
EIGEN_ALWAYS_INLINE void fast_two_sum(Packet& h, Packet& l, const Packet& e) {
  namespace ei = Eigen::internal;
  Packet t = ei::padd(h, e);
  opaque_under_fast_math(t);  // else (t - h) is folded to e and the error term to 0
  l = ei::padd(l, ei::psub(e, ei::psub(t, h)));
  h = t;
}

/// Adds n values in [0, 1] (exponentials of exponents <= 0) to acc: for double with
/// Fast2Sum seeded with 1 (see fast_two_sum), handing over the error term; for float each
/// addition in double is already far below float's resolution.
template <typename T, typename Acc>
void add_unit(Acc& acc, const T* v, Index n) {
  if constexpr (!exact_normalise<T>) {
    acc_t<T> s(0);
    for (Index j = 0; j < n; ++j) s += v[j];
    acc.add(s);
  } else {
    T h(1), l(0);
    for (Index j = 0; j < n; ++j) {
      T t = h + v[j];
      opaque_under_fast_math(t);
      l += v[j] - (t - h);
      h = t;
    }
    acc.add(h - T(1), l);  // h - 1 is exact: 1 is a multiple of h's ULP
  }
}

/// The map from a logit x to the exponent d = (x - max) / T, computed so it never
/// overflows where the true d is finite: for T > 1 both terms are halved first, which is
/// exact and keeps x - max finite even when the spread exceeds the largest finite value.
template <typename T>
struct shift {
  T half;  // 1, or 0.5 when T > 1
  T hmax;  // half * max
  T hT;    // half * T
  bool divide;

  shift(T max, T temperature)
      : half(temperature > T(1) ? T(0.5) : T(1)),
        hmax(half * max),
        hT(half * temperature),
        divide(temperature != T(1)) {}

  T operator()(T x) const { return divide ? (half * x - hmax) / hT : x - hmax; }

  template <typename Packet>
  EIGEN_ALWAYS_INLINE Packet operator()(const Packet& x) const {
    return divide ? apply<true>(x) : apply<false>(x);
  }

  /// The packet map with `divide` known at compile time (hot loops branch once, outside).
  template <bool Divide, typename Packet>
  EIGEN_ALWAYS_INLINE Packet apply(const Packet& x) const {
    namespace ei = Eigen::internal;
    if constexpr (!Divide) {
      return ei::psub(x, ei::pset1<Packet>(hmax));
    } else {
      const Packet d = ei::psub(ei::pmul(ei::pset1<Packet>(half), x), ei::pset1<Packet>(hmax));
      return ei::pdiv(d, ei::pset1<Packet>(hT));
    }
  }
};

inline constexpr Index block_size = 256;
inline constexpr Index gather_size = 256;

/// A packet holding from[0..n) (n < packet size) and `pad` in the other lanes. AVX-512
/// loads with a mask; elsewhere through a buffer (whose scalar stores then stall the vector
/// load a little: store forwarding cannot merge them).
template <typename Packet, typename T>
EIGEN_ALWAYS_INLINE Packet load_first(const T* from, Index n, T pad) {
  namespace ei = Eigen::internal;
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (std::is_same_v<Packet, ei::Packet16f>) {
    return _mm512_mask_loadu_ps(ei::pset1<Packet>(pad), static_cast<__mmask16>((1u << n) - 1u),
                                from);
  } else if constexpr (std::is_same_v<Packet, ei::Packet8d>) {
    return _mm512_mask_loadu_pd(ei::pset1<Packet>(pad), static_cast<__mmask8>((1u << n) - 1u),
                                from);
  }
#endif
  constexpr Index ps = ei::unpacket_traits<Packet>::size;
  alignas(64) T buf[ps];
  for (Index j = 0; j < ps; ++j) buf[j] = j < n ? from[j] : pad;
  return ei::pload<Packet>(buf);
}

/// Adds the lanes of an exp-sum block to acc: h0 and h1 (each lane seeded with 1) and the
/// error terms l, as exactly as acc_t<T> allows.
template <typename T, typename Packet, typename Acc>
EIGEN_ALWAYS_INLINE void add_block(Acc& acc, const Packet& h0, const Packet& h1, const Packet& l) {
  namespace ei = Eigen::internal;
  constexpr Index ps = ei::unpacket_traits<Packet>::size;
  alignas(64) T buf[3 * ps];
  ei::pstore(buf, h0);
  ei::pstore(buf + ps, h1);
  if constexpr (!exact_normalise<T>) {
    // float: the lanes of h are floats in [1, 33], so their sum in double is exact.
    static_assert((3 * ps) % 4 == 0, "four partial sums");
    ei::pstore(buf + 2 * ps, l);
    double t[4] = {0, 0, 0, 0};
    for (Index j = 0; j < 3 * ps; j += 4) {
      for (Index q = 0; q < 4; ++q) t[q] += static_cast<double>(buf[j + q]);
    }
    acc.add(((t[0] + t[1]) + (t[2] + t[3])) - static_cast<double>(2 * ps));
  } else {
    T hi = -T(2 * ps), lo = ei::predux(l);  // minus the seeds: exact
    for (Index j = 0; j < 2 * ps; ++j) {
      const T v = buf[j], s = hi + v, bv = s - hi;
      lo += (hi - (s - bv)) + (v - bv);
      hi = s;
    }
    acc.add(hi, lo);
  }
}

template <bool Store, bool Divide, typename T, typename Acc>
void exp_sum_contiguous_impl(const T* x, T* out, Index n, const shift<T>& sh, Acc& acc) {
  Index i = 0;
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    while (n - i >= ps) {
      // Blocks of up to 64 packets, summed exactly per lane (fast_two_sum), so the total
      // carries the rounding of acc alone: a plain sum rounds at every addition to the lane
      // that holds the largest terms, several ULP of the result.
      const Index end = i + std::min(64 * ps, (n - i) / ps * ps);
      Packet h0 = ei::pset1<Packet>(T(1)), h1 = h0;
      Packet l0 = ei::pset1<Packet>(T(0)), l1 = l0;
      for (; i + 2 * ps <= end; i += 2 * ps) {
        const Packet e0 = pexp_accurate(sh.template apply<Divide>(ei::ploadu<Packet>(x + i)));
        const Packet e1 = pexp_accurate(sh.template apply<Divide>(ei::ploadu<Packet>(x + i + ps)));
        if constexpr (Store) {
          ei::pstoreu(out + i, e0);
          ei::pstoreu(out + i + ps, e1);
        }
        fast_two_sum(h0, l0, e0);
        fast_two_sum(h1, l1, e1);
      }
      if (i < end) {
        const Packet e0 = pexp_accurate(sh.template apply<Divide>(ei::ploadu<Packet>(x + i)));
        if constexpr (Store) ei::pstoreu(out + i, e0);
        fast_two_sum(h0, l0, e0);
        i += ps;
      }
      add_block<T>(acc, h0, h1, ei::padd(l0, l1));
    }
    // The last partial packet. Padding lanes hold the maximum (exponent 0): padding with
    // -inf would also give 0 but sends the packet through the slow subnormal scaling and
    // FP assists, which costs more than the rest of a short row.
    if (i < n) {
      alignas(64) T buf[ps];
      const Index rest = n - i;
      const T pad = sh.hmax / sh.half;
      ei::pstore(buf,
                 pexp_accurate(sh.template apply<Divide>(load_first<Packet>(x + i, rest, pad))));
      if constexpr (Store) std::copy(buf, buf + rest, out + i);
      add_unit(acc, buf, rest);
      i = n;
    }
  }
  while (i < n) {
    const Index end = std::min(n, i + block_size);
    compensated_sum<acc_t<T>> s;
    for (; i < end; ++i) {
      const T e = std::exp(sh(x[i]));
      if constexpr (Store) out[i] = e;
      s.add(e);
    }
    acc.add(s.total());
  }
}

/// Contiguous exp-sum: e_i = exp(shift(x_i)), stored to out when Store, summed into acc.
/// out may equal x (in place).
template <bool Store, typename T, typename Acc>
void exp_sum_contiguous(const T* x, T* out, Index n, const shift<T>& sh, Acc& acc) {
  if (sh.divide) {
    exp_sum_contiguous_impl<Store, true>(x, out, n, sh, acc);
  } else {
    exp_sum_contiguous_impl<Store, false>(x, out, n, sh, acc);
  }
}

/// Strided exp-sum: gathers chunks into a stack buffer so the vector exp still applies.
/// acc is a compensated_sum (or a pairwise_sum) of acc_t<T>.
template <bool Store, typename T, typename Acc>
void exp_sum(const T* x, Index xs, T* out, Index os, Index n, const shift<T>& sh, Acc& acc) {
  if (xs == 1 && (!Store || os == 1)) {
    exp_sum_contiguous<Store>(x, out, n, sh, acc);
    return;
  }
  alignas(64) T buf[gather_size];
  for (Index i0 = 0; i0 < n; i0 += gather_size) {
    const Index len = std::min(gather_size, n - i0);
    for (Index i = 0; i < len; ++i) buf[i] = x[(i0 + i) * xs];
    exp_sum_contiguous<Store>(buf, buf, len, sh, acc);
    if constexpr (Store) {
      for (Index i = 0; i < len; ++i) out[(i0 + i) * os] = buf[i];
    }
  }
}

/// Largest entry; NaN if any entry is NaN; -inf for an empty range.
template <typename T>
T max_nan(const T* x, Index n, Index xs) {
  if (n == 0) return -std::numeric_limits<T>::infinity();
  if (xs == 1) {
    return Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(x, n)
        .template maxCoeff<Eigen::PropagateNaN>();
  }
  return Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>(
             x, n, Eigen::InnerStride<>(xs))
      .template maxCoeff<Eigen::PropagateNaN>();
}

/// Largest entry, or -inf for an empty range. Cheaper than max_nan: if there is a NaN the
/// result is unspecified, so callers either see the NaN later (it makes the sum of
/// exponentials NaN) or check with has_nan on their rare non-finite paths.
template <typename T>
T max_fast(const T* x, Index n, Index xs) {
  if (n == 0) return -std::numeric_limits<T>::infinity();
  if (xs == 1) return Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(x, n).maxCoeff();
  return Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>(
             x, n, Eigen::InnerStride<>(xs))
      .maxCoeff();
}

template <typename T>
bool has_nan(const T* x, Index n, Index xs) {
  for (Index i = 0; i < n; ++i) {
    if (is_nan(x[i * xs])) return true;
  }
  return false;
}

template <typename T, typename Pred>
Index count_if(const T* x, Index n, Index xs, Pred pred) {
  Index c = 0;
  for (Index i = 0; i < n; ++i) c += pred(x[i * xs]) ? 1 : 0;
  return c;
}

template <typename T>
void fill(T* y, Index n, Index ys, T value) {
  for (Index i = 0; i < n; ++i) y[i * ys] = value;
}

enum class forward_op { softmax, log_softmax };

/// Writes the limit cases where some entries are selected (value `hit`) and the rest get
/// probability 0: one +inf entry, T = 0 (the maxima) and T = +inf (the finite entries).
template <forward_op Op, typename T, typename Pred>
void write_selected(const T* x, Index xs, T* y, Index ys, Index n, Index hits, Pred selected) {
  const T inf = std::numeric_limits<T>::infinity();
  const T hit = Op == forward_op::softmax ? T(1) / T(hits)
                                          : T(0) - std::log(T(hits));  // +0, not -0, for one hit
  const T miss = Op == forward_op::softmax ? T(0) : -inf;
  for (Index i = 0; i < n; ++i) y[i * ys] = selected(x[i * xs]) ? hit : miss;
}

/// softmax or log_softmax of a contiguous distribution shorter than a packet, in registers:
/// one load, one exp, no loop. Returns false (nothing written) for the cases forward_one
/// handles in general: non-finite maximum, T = 0 or +inf.
template <forward_op Op, typename T>
bool forward_tiny(const T* x, T* y, Index n, T temperature) {
  if constexpr (!has_packet_exp<T>) {
    return false;
  } else {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    T m = x[0];
    for (Index i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
    if (!is_finite(m) || temperature == T(0) || is_pos_inf(temperature)) return false;
    alignas(64) T buf[ps];
    const shift<T> sh(m, temperature);  // padding with m: exponent 0
    ei::pstore(buf, pexp_accurate(sh(load_first<Packet>(x, n, m))));
    compensated_sum<acc_t<T>> acc;
    add_unit(acc, buf, n);
    const acc_t<T> s = acc.total();
    if constexpr (Op == forward_op::softmax) {
      if constexpr (exact_normalise<T>) {
        for (Index i = 0; i < n; ++i) y[i] = buf[i] / s;
      } else {
        const T inv = static_cast<T>(acc_t<T>(1) / s);
        for (Index i = 0; i < n; ++i) y[i] = buf[i] * inv;
      }
    } else {
      const T log_s = static_cast<T>(std::log(s));
      for (Index i = 0; i < n; ++i) y[i] = sh(x[i]) - log_s;
    }
    return true;
  }
}

/// softmax or log_softmax of one distribution of length n; y may alias x exactly.
template <forward_op Op, typename T>
void forward_one(const T* x, Index xs, T* y, Index ys, Index n, T temperature) {
  if (n == 0) return;
  if constexpr (has_packet_exp<T>) {
    constexpr Index ps = Eigen::internal::packet_traits<T>::size;
    if (xs == 1 && ys == 1 && n < ps && forward_tiny<Op>(x, y, n, temperature)) return;
  }
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const T m = max_fast(x, n, xs);
  const bool limit_case = !is_finite(m) || temperature == T(0) || is_pos_inf(temperature);
  if (is_nan(m) || is_neg_inf(m) || (limit_case && has_nan(x, n, xs))) {
    // NaN anywhere, or nothing but -inf (0/0): no limit exists. (A NaN on the regular path
    // below turns the sum, and with it every output, into NaN.)
    fill(y, n, ys, nan);
    return;
  }
  if (is_pos_inf(m)) {
    const auto plus_inf = [](T v) { return is_pos_inf(v); };
    if (count_if(x, n, xs, plus_inf) > 1) {
      fill(y, n, ys, nan);  // inf - inf
    } else {
      write_selected<Op>(x, xs, y, ys, n, 1, plus_inf);
    }
    return;
  }
  if (temperature == T(0)) {
    const auto is_max = [m](T v) { return v == m; };
    write_selected<Op>(x, xs, y, ys, n, count_if(x, n, xs, is_max), is_max);
    return;
  }
  if (is_pos_inf(temperature)) {
    const auto not_minus_inf = [](T v) { return !is_neg_inf(v); };
    write_selected<Op>(x, xs, y, ys, n, count_if(x, n, xs, not_minus_inf), not_minus_inf);
    return;
  }
  const shift<T> sh(m, temperature);
  compensated_sum<acc_t<T>> acc;
  if constexpr (Op == forward_op::softmax) {
    exp_sum<true>(x, xs, y, ys, n, sh, acc);
    // float: one reciprocal, rounded once from the wide (double) sum, then multiplies: at
    // most half an ULP more than dividing, and several times faster. double: divide.
    if constexpr (exact_normalise<T>) {
      const T total = static_cast<T>(acc.total());
      if (ys == 1) {
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(y, n) /= total;
      } else {
        for (Index i = 0; i < n; ++i) y[i * ys] /= total;
      }
      return;
    }
    const T inv = static_cast<T>(acc_t<T>(1) / acc.total());
    if (ys == 1) {
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(y, n) *= inv;
    } else {
      for (Index i = 0; i < n; ++i) y[i * ys] *= inv;
    }
  } else {
    exp_sum<false>(x, xs, y, ys, n, sh, acc);
    const T log_s = static_cast<T>(std::log(acc.total()));
    if (xs == 1 && ys == 1) {
      const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> xm(x, n);
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> ym(y, n);
      if (sh.divide) {
        ym = (sh.half * xm - sh.hmax) / sh.hT - log_s;
      } else {
        ym = (xm - sh.hmax) - log_s;
      }
    } else {
      for (Index i = 0; i < n; ++i) y[i * ys] = sh(x[i * xs]) - log_s;
    }
  }
}

inline constexpr Index lane_block = 32;  // distributions handled side by side
// Columns summed per lane (exactly, with their error terms) before entering acc_t.
inline constexpr Index lane_chunk = 16;

/// Lane-wise fast_two_sum on Eigen arrays: h + e as h' + (l' - l), exact while h >= e.
template <typename Lanes, typename E>
EIGEN_ALWAYS_INLINE void fast_two_sum_lanes(Lanes& h, Lanes& l, const E& e) {
  const Lanes t = h + e;
  l += e - (t - h);
  h = t;
}

/// forward_lanes for short distributions: max, exp-sum and scaling passes over the columns.
template <forward_op Op, int N, typename T>
void forward_lanes_3pass(const T* x, Index xk, T* y, Index yk, Index nb, Index len, T temperature) {
  using Lanes = Eigen::Array<T, N, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, N, 1, Eigen::ColMajor, lane_block, 1>;
  const auto in = [&](Index k) { return Eigen::Map<const Lanes>(x + k * xk, nb); };
  const auto out = [&](Index k) { return Eigen::Map<Lanes>(y + k * yk, nb); };
  if (len == 0) return;

  // A NaN may or may not survive this max; either way it reaches the lane's sum, and NaN
  // sums make the whole distribution NaN.
  Lanes m = in(0);
  for (Index k = 1; k < len; ++k) m = m.max(in(k));
  if (!all_finite(m) || temperature == T(0) || is_pos_inf(temperature)) {
    // Limits and non-finite maxima: rare, handled one distribution at a time.
    for (Index j = 0; j < nb; ++j) forward_one<Op>(x + j, xk, y + j, yk, len, temperature);
    return;
  }
  const shift<T> sh(T(0), temperature);  // half, hT and divide; the max differs per lane
  const Lanes hm = sh.half * m;
  const auto exponent = [&](Index k) -> Lanes {
    if (sh.divide) return (sh.half * in(k)-hm) / sh.hT;
    return in(k)-hm;
  };

  compensated_sum<Sums> acc(Sums::Zero(nb));
  for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
    Lanes h = Lanes::Ones(nb), l = Lanes::Zero(nb);  // seeded with 1 >= e: fast_two_sum
    for (Index k = k0; k < std::min(len, k0 + lane_chunk); ++k) {
      const Lanes e = exponent(k).unaryExpr(exp_op<T>());
      if constexpr (Op == forward_op::softmax) out(k) = e;
      fast_two_sum_lanes(h, l, e);
    }
    acc.add((h - T(1)).template cast<acc_t<T>>(), l.template cast<acc_t<T>>());
  }
  const Sums s = acc.total();
  if constexpr (Op == forward_op::softmax) {
    if constexpr (exact_normalise<T>) {
      const Lanes total = s.template cast<T>();
      for (Index k = 0; k < len; ++k) out(k) /= total;
    } else {
      const Lanes inv = s.inverse().template cast<T>();
      for (Index k = 0; k < len; ++k) out(k) *= inv;
    }
  } else {
    const Lanes log_s = s.log().template cast<T>();
    for (Index k = 0; k < len; ++k) out(k) = exponent(k) - log_s;
  }
}

/// forward_lanes for long distributions, in two passes (an online normaliser): the first reads
/// chunks of lane_chunk columns, takes their maximum, rescales the lanes' running sums when it
/// grows (by exp(old - new), in acc_t) and adds the chunk's exponentials; the second writes the
/// outputs. Each chunk is read twice while it is in L1, the whole range only twice: with a
/// power-of-two column stride the slices of all columns share a few cache sets, so a three-pass
/// scheme would fetch every column from L3 three times.
template <forward_op Op, int N, typename T>
void forward_lanes_online(const T* x, Index xk, T* y, Index yk, Index nb, Index len,
                          T temperature) {
  using Lanes = Eigen::Array<T, N, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, N, 1, Eigen::ColMajor, lane_block, 1>;
  const auto in = [&](Index k) { return Eigen::Map<const Lanes>(x + k * xk, nb); };
  const auto out = [&](Index k) { return Eigen::Map<Lanes>(y + k * yk, nb); };
  if (len == 0) return;
  if (temperature == T(0) || is_pos_inf(temperature)) {
    for (Index j = 0; j < nb; ++j) forward_one<Op>(x + j, xk, y + j, yk, len, temperature);
    return;
  }
  const shift<T> sh(T(0), temperature);  // half, hT and divide; the max differs per lane
  const auto exponent = [&](Index k, const Lanes& hm) -> Lanes {
    if (sh.divide) return (sh.half * in(k)-hm) / sh.hT;
    return in(k)-hm;
  };

  // Pass 1. A NaN may or may not survive the max; either way it reaches the lane's sum.
  Lanes m(nb);
  compensated_sum<Sums> acc(Sums::Zero(nb));
  for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
    const Index k1 = std::min(len, k0 + lane_chunk);
    Lanes cm = in(k0);
    for (Index k = k0 + 1; k < k1; ++k) cm = cm.max(in(k));
    if (!all_finite(cm)) {
      // Limits and non-finite entries: rare, handled one distribution at a time.
      for (Index j = 0; j < nb; ++j) forward_one<Op>(x + j, xk, y + j, yk, len, temperature);
      return;
    }
    if (k0 == 0) {
      m = cm;
    } else if ((cm > m).any()) {
      const Lanes mn = m.max(cm);
      const Sums d = (m.template cast<acc_t<T>>() - mn.template cast<acc_t<T>>()) /
                     static_cast<acc_t<T>>(temperature);
      acc.scale(d.unaryExpr(exp_op<acc_t<T>>()));
      m = mn;
    }
    const Lanes hm = sh.half * m;
    Lanes h = Lanes::Ones(nb), l = Lanes::Zero(nb);
    for (Index k = k0; k < k1; ++k) fast_two_sum_lanes(h, l, exponent(k, hm).unaryExpr(exp_op<T>()));
    acc.add((h - T(1)).template cast<acc_t<T>>(), l.template cast<acc_t<T>>());
  }

  // Pass 2.
  const Sums s = acc.total();
  const Lanes hm = sh.half * m;
  if constexpr (Op == forward_op::softmax) {
    if constexpr (exact_normalise<T>) {
      const Lanes total = s.template cast<T>();
      for (Index k = 0; k < len; ++k) out(k) = exponent(k, hm).unaryExpr(exp_op<T>()) / total;
    } else {
      const Lanes inv = s.inverse().template cast<T>();
      for (Index k = 0; k < len; ++k) out(k) = exponent(k, hm).unaryExpr(exp_op<T>()) * inv;
    }
  } else {
    const Lanes log_s = s.log().template cast<T>();
    for (Index k = 0; k < len; ++k) out(k) = exponent(k, hm) - log_s;
  }
}

/// Longest distribution forward_lanes handles in three passes; longer ones take two passes
/// and one more exp per entry, which pays once the columns no longer stay in L1.
inline constexpr Index lanes_three_pass_max = 128;

/// softmax or log_softmax of nb <= lane_block distributions that lie side by side in memory:
/// element k of distribution j is x[j + k * xk] (and y[j + k * yk]). This is the layout of
/// rows of a column-major matrix; each step reads one contiguous column slice, so the
/// distributions are vectorised across instead of gathered with a large stride.
/// N is lane_block for full blocks, Eigen::Dynamic (capacity lane_block) for the rest.
template <forward_op Op, int N, typename T>
void forward_lanes(const T* x, Index xk, T* y, Index yk, Index nb, Index len, T temperature) {
  if (len <= lanes_three_pass_max) {
    forward_lanes_3pass<Op, N>(x, xk, y, yk, nb, len, temperature);
  } else {
    forward_lanes_online<Op, N>(x, xk, y, yk, nb, len, temperature);
  }
}

/// softmax or log_softmax of count distributions side by side (see forward_lanes).
template <forward_op Op, typename T>
void forward_across(const T* x, Index xk, T* y, Index yk, Index count, Index len, T temperature) {
  Index j = 0;
  for (; j + lane_block <= count; j += lane_block) {
    forward_lanes<Op, int(lane_block)>(x + j, xk, y + j, yk, lane_block, len, temperature);
  }
  if (j < count)
    forward_lanes<Op, Eigen::Dynamic>(x + j, xk, y + j, yk, count - j, len, temperature);
}

/// Longest distribution the short-row path transposes into its 8 KiB tile.
template <typename T>
inline constexpr Index short_length = Index(8192 / sizeof(T)) / lane_block;

/// softmax or log_softmax of count short distributions stored one after another (element k
/// of distribution j at x[j * xd + k * xk]): one distribution is too short to fill a vector
/// register, so blocks of lane_block of them are transposed into a stack tile and
/// vectorised across, as in forward_lanes.
template <forward_op Op, typename T>
void forward_short(const T* x, Index xd, Index xk, T* y, Index yd, Index yk, Index count, Index len,
                   T temperature) {
  alignas(64) T tile[lane_block * short_length<T>];
  for (Index j0 = 0; j0 < count; j0 += lane_block) {
    const Index nb = std::min(lane_block, count - j0);
    for (Index j = 0; j < nb; ++j) {
      for (Index k = 0; k < len; ++k) tile[j + k * nb] = x[(j0 + j) * xd + k * xk];
    }
    if (nb == lane_block) {
      forward_lanes<Op, int(lane_block)>(tile, nb, tile, nb, nb, len, temperature);
    } else {
      forward_lanes<Op, Eigen::Dynamic>(tile, nb, tile, nb, nb, len, temperature);
    }
    for (Index j = 0; j < nb; ++j) {
      for (Index k = 0; k < len; ++k) y[(j0 + j) * yd + k * yk] = tile[j + k * nb];
    }
  }
}

/// Stores the first n (< packet size) lanes of p to `to`.
template <typename Packet, typename T>
EIGEN_ALWAYS_INLINE void store_first(T* to, const Packet& p, Index n) {
  namespace ei = Eigen::internal;
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (std::is_same_v<Packet, ei::Packet16f>) {
    _mm512_mask_storeu_ps(to, static_cast<__mmask16>((1u << n) - 1u), p);
    return;
  } else if constexpr (std::is_same_v<Packet, ei::Packet8d>) {
    _mm512_mask_storeu_pd(to, static_cast<__mmask8>((1u << n) - 1u), p);
    return;
  }
#endif
  alignas(64) T buf[ei::unpacket_traits<Packet>::size];
  ei::pstore(buf, p);
  std::copy(buf, buf + n, to);
}

/// The lane kernel on registers: c[k] holds entry k of ps distributions (one per lane), m
/// their lane-wise maxima, all finite; replaces c[k] by the outputs.
template <forward_op Op, bool Divide, typename T, typename Packet>
EIGEN_ALWAYS_INLINE void lanes_in_registers(Packet* c, Index len, const Packet& m,
                                            const shift<T>& sh) {
  namespace ei = Eigen::internal;
  constexpr int ps = ei::unpacket_traits<Packet>::size;
  using Wide = Eigen::Array<acc_t<T>, ps, 1>;
  const Packet hm = Divide ? ei::pmul(ei::pset1<Packet>(sh.half), m) : m;
  const auto exponent = [&](const Packet& v) {
    if constexpr (Divide) {
      return ei::pdiv(ei::psub(ei::pmul(ei::pset1<Packet>(sh.half), v), hm),
                      ei::pset1<Packet>(sh.hT));
    } else {
      return ei::psub(v, hm);
    }
  };
  compensated_sum<Wide> acc(Wide::Zero());
  alignas(64) T part_buf[ps];
  alignas(64) T err_buf[ps];
  using Part = Eigen::Map<const Eigen::Array<T, ps, 1>, Eigen::Aligned>;
  for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
    Packet h = ei::pset1<Packet>(T(1)), l = ei::pset1<Packet>(T(0));
    for (Index k = k0; k < std::min(len, k0 + lane_chunk); ++k) {
      const Packet e = pexp_accurate(exponent(c[k]));
      if constexpr (Op == forward_op::softmax) c[k] = e;
      fast_two_sum(h, l, e);
    }
    ei::pstore(part_buf, ei::psub(h, ei::pset1<Packet>(T(1))));
    ei::pstore(err_buf, l);
    acc.add(Part(part_buf).template cast<acc_t<T>>(), Part(err_buf).template cast<acc_t<T>>());
  }
  const Wide s = acc.total();
  Eigen::Map<Eigen::Array<T, ps, 1>, Eigen::Aligned> lane_values(part_buf);
  if constexpr (Op == forward_op::softmax) {
    if constexpr (exact_normalise<T>) {
      lane_values = s.template cast<T>();
      const Packet total = ei::pload<Packet>(part_buf);
      for (Index k = 0; k < len; ++k) c[k] = ei::pdiv(c[k], total);
    } else {
      lane_values = s.inverse().template cast<T>();
      const Packet inv = ei::pload<Packet>(part_buf);
      for (Index k = 0; k < len; ++k) c[k] = ei::pmul(c[k], inv);
    }
  } else {
    lane_values = s.log().template cast<T>();
    const Packet log_s = ei::pload<Packet>(part_buf);
    for (Index k = 0; k < len; ++k) c[k] = ei::psub(exponent(c[k]), log_s);
  }
}

/// Loads ps rows of len entries (row j at x + j * xd) as len column packets c[k] (lane j =
/// x[j * xd + k]) with in-register transposes; returns the lane-wise maxima. Reads up to a
/// packet past the end of each row (callers make sure that memory is part of the input).
template <typename T, typename Packet>
EIGEN_ALWAYS_INLINE Packet load_transposed(const T* x, Index xd, Index len, Packet* c) {
  namespace ei = Eigen::internal;
  constexpr int ps = ei::unpacket_traits<Packet>::size;
  for (Index ch = 0; ch * ps < len; ++ch) {
    ei::PacketBlock<Packet, ps> b;
    for (int j = 0; j < ps; ++j) b.packet[j] = ei::ploadu<Packet>(x + j * xd + ch * ps);
    ei::ptranspose(b);
    for (int k = 0; k < ps; ++k) c[ch * ps + k] = b.packet[k];
  }
  Packet m = c[0];
  for (Index k = 1; k < len; ++k) m = ei::pmax(m, c[k]);
  return m;
}

/// Short contiguous rows (element k of row j at x[j * xd + k], xd >= len, and the same for
/// y): blocks of ps rows are loaded a packet per row, transposed in registers (Eigen's
/// ptranspose) so each packet holds one column, run through lanes_in_registers and
/// transposed back. Loads of a row's last partial packet run into the following rows, so
/// the last rows (whose loads would leave the matrix) are left to the caller: returns the
/// number of rows done.
template <forward_op Op, typename T>
Index forward_short_rows(const T* x, Index xd, T* y, Index yd, Index count, Index len,
                         T temperature) {
  if constexpr (!has_packet_exp<T>) {
    return 0;
  } else {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr int ps = ei::unpacket_traits<Packet>::size;
    const T inf = std::numeric_limits<T>::infinity();
    if (len == 0 || len > short_length<T> || temperature == T(0) || is_pos_inf(temperature)) {
      return 0;
    }
    const Index chunks = (len + ps - 1) / ps;
    // Last element read for block j0: row j0 + ps - 1, up to chunk end chunks * ps.
    const Index last = (count - 1) * xd + len;  // one past the last element of x
    const shift<T> sh(T(0), temperature);
    Packet c[short_length<T> + ps];
    Index j0 = 0;
    for (; j0 + ps <= count && (j0 + ps - 1) * xd + chunks * ps <= last; j0 += ps) {
      const Packet m = load_transposed(x + j0 * xd, xd, len, c);
      // Infinite maxima take the scalar kernel, one row at a time. (A NaN may or may not
      // survive pmax; either way it reaches its row's sum, which turns the row into NaN.)
      if (ei::predux_any(ei::pcmp_le(ei::pset1<Packet>(inf), ei::pabs(m)))) {
        for (Index j = 0; j < ps; ++j) {
          forward_one<Op>(x + (j0 + j) * xd, 1, y + (j0 + j) * yd, 1, len, temperature);
        }
        continue;
      }
      if (sh.divide) {
        lanes_in_registers<Op, true>(c, len, m, sh);
      } else {
        lanes_in_registers<Op, false>(c, len, m, sh);
      }
      for (Index ch = 0; ch < chunks; ++ch) {
        ei::PacketBlock<Packet, ps> b;
        for (int k = 0; k < ps; ++k) b.packet[k] = c[ch * ps + k];
        ei::ptranspose(b);
        const Index width = std::min<Index>(ps, len - ch * ps);
        if (width == ps) {
          for (int j = 0; j < ps; ++j) ei::pstoreu(y + (j0 + j) * yd + ch * ps, b.packet[j]);
        } else {
          for (int j = 0; j < ps; ++j) store_first(y + (j0 + j) * yd + ch * ps, b.packet[j], width);
        }
      }
    }
    return j0;
  }
}

/// log(sum(exp(x))) of one distribution.
template <typename T>
T logsumexp_one(const T* x, Index xs, Index n) {
  const T m = max_fast(x, n, xs);
  if (!is_finite(m)) {
    // -inf: empty or all -inf; +inf: the limit, unless a NaN hides behind it.
    return has_nan(x, n, xs) ? std::numeric_limits<T>::quiet_NaN() : m;
  }
  compensated_sum<acc_t<T>> acc;
  exp_sum<false>(x, xs, static_cast<T*>(nullptr), 1, n, shift<T>(m, T(1)), acc);
  return static_cast<T>(static_cast<acc_t<T>>(m) + std::log(acc.total()));
}

/// logsumexp of short contiguous rows (as forward_short_rows): out[j * os] for the rows
/// done, which are returned (a multiple of the packet size).
template <typename T>
Index logsumexp_short_rows(const T* x, Index xd, Index count, Index len, T* out, Index os) {
  if constexpr (!has_packet_exp<T>) {
    return 0;
  } else {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr int ps = ei::unpacket_traits<Packet>::size;
    using Wide = Eigen::Array<acc_t<T>, ps, 1>;
    const T inf = std::numeric_limits<T>::infinity();
    if (len == 0 || len > short_length<T>) return 0;
    const Index chunks = (len + ps - 1) / ps;
    const Index last = (count - 1) * xd + len;
    Packet c[short_length<T> + ps];
    alignas(64) T buf[ps];
    alignas(64) T err_buf[ps];
    Index j0 = 0;
    for (; j0 + ps <= count && (j0 + ps - 1) * xd + chunks * ps <= last; j0 += ps) {
      const Packet m = load_transposed(x + j0 * xd, xd, len, c);
      if (ei::predux_any(ei::pcmp_le(ei::pset1<Packet>(inf), ei::pabs(m)))) {
        for (Index j = 0; j < ps; ++j)
          out[(j0 + j) * os] = logsumexp_one(x + (j0 + j) * xd, 1, len);
        continue;
      }
      compensated_sum<Wide> acc(Wide::Zero());
      using Part = Eigen::Map<const Eigen::Array<T, ps, 1>, Eigen::Aligned>;
      for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
        Packet h = ei::pset1<Packet>(T(1)), l = ei::pset1<Packet>(T(0));
        for (Index k = k0; k < std::min(len, k0 + lane_chunk); ++k) {
          fast_two_sum(h, l, pexp_accurate(ei::psub(c[k], m)));
        }
        ei::pstore(buf, ei::psub(h, ei::pset1<Packet>(T(1))));
        ei::pstore(err_buf, l);
        acc.add(Part(buf).template cast<acc_t<T>>(), Part(err_buf).template cast<acc_t<T>>());
      }
      const Wide s = acc.total();
      ei::pstore(buf, m);
      const Wide r =
          Eigen::Map<const Eigen::Array<T, ps, 1>, Eigen::Aligned>(buf).template cast<acc_t<T>>() +
          s.log();
      for (Index j = 0; j < ps; ++j) out[(j0 + j) * os] = static_cast<T>(r(j));
    }
    return j0;
  }
}

/// logsumexp of nb <= lane_block distributions side by side (element k of distribution j
/// at x[j + k * xk], the rows of a column-major matrix) into out[j * os].
template <int N, typename T>
void logsumexp_lanes(const T* x, Index xk, Index nb, Index len, T* out, Index os) {
  using Lanes = Eigen::Array<T, N, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, N, 1, Eigen::ColMajor, lane_block, 1>;
  const auto in = [&](Index k) { return Eigen::Map<const Lanes>(x + k * xk, nb); };
  if (len == 0) {
    for (Index j = 0; j < nb; ++j) out[j * os] = -std::numeric_limits<T>::infinity();
    return;
  }
  Lanes m = in(0);
  for (Index k = 1; k < len; ++k) m = m.max(in(k));
  if (!all_finite(m)) {
    for (Index j = 0; j < nb; ++j) out[j * os] = logsumexp_one(x + j, xk, len);
    return;
  }
  compensated_sum<Sums> acc(Sums::Zero(nb));
  for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
    Lanes h = Lanes::Ones(nb), l = Lanes::Zero(nb);
    for (Index k = k0; k < std::min(len, k0 + lane_chunk); ++k) {
      fast_two_sum_lanes(h, l, (in(k)-m).unaryExpr(exp_op<T>()));
    }
    acc.add((h - T(1)).template cast<acc_t<T>>(), l.template cast<acc_t<T>>());
  }
  const Sums r = m.template cast<acc_t<T>>() + acc.total().log();
  for (Index j = 0; j < nb; ++j) out[j * os] = static_cast<T>(r(j));
}

/// logsumexp of count distributions (element k of distribution d at x[d * xd + k * xk])
/// into out[d * os], choosing the layout's fastest path.
template <typename T>
void logsumexp_batch(const T* x, Index xd, Index xk, Index count, Index len, T* out, Index os) {
  if (len == 0) {  // empty distributions: -inf, and x (maybe null) is never offset
    for (Index j = 0; j < count; ++j) out[j * os] = -std::numeric_limits<T>::infinity();
    return;
  }
  Index d = 0;
  if (xk != 1 && xd == 1 && count > 1) {
    for (; d + lane_block <= count; d += lane_block) {
      logsumexp_lanes<int(lane_block)>(x + d, xk, lane_block, len, out + d * os, os);
    }
    if (d < count) logsumexp_lanes<Eigen::Dynamic>(x + d, xk, count - d, len, out + d * os, os);
    return;
  }
  if (xk == 1 && xd >= len && count > 1) d = logsumexp_short_rows(x, xd, count, len, out, os);
  for (; d < count; ++d) out[d * os] = logsumexp_one(x + d * xd, xk, len);
}

/// sum_i a[i] * b[i] (sum_i a[i] when b is null) over n contiguous floats, each widened to
/// double first, so every product is exact and the sum carries double rounding only.
/// Eigen 3.4 does not vectorise float-to-double casts; this does, where the target has them.
inline double wide_dot(const float* a, const float* b, Index n) {
  Index i = 0;
  double s = 0;
#if defined(EIGEN_VECTORIZE_AVX512)
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  const auto lo = [](__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); };
  const auto hi = [](__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  for (; i + 16 <= n; i += 16) {
    const __m512 va = _mm512_loadu_ps(a + i);
    if (b != nullptr) {
      const __m512 vb = _mm512_loadu_ps(b + i);
      s0 = _mm512_fmadd_pd(lo(va), lo(vb), s0);
      s1 = _mm512_fmadd_pd(hi(va), hi(vb), s1);
    } else {
      s0 = _mm512_add_pd(s0, lo(va));
      s1 = _mm512_add_pd(s1, hi(va));
    }
  }
  s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
#elif defined(EIGEN_VECTORIZE_AVX)
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __m256d a0 = _mm256_cvtps_pd(_mm_loadu_ps(a + i));
    const __m256d a1 = _mm256_cvtps_pd(_mm_loadu_ps(a + i + 4));
    if (b != nullptr) {
      s0 = _mm256_add_pd(s0, _mm256_mul_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(b + i))));
      s1 = _mm256_add_pd(s1, _mm256_mul_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(b + i + 4))));
    } else {
      s0 = _mm256_add_pd(s0, a0);
      s1 = _mm256_add_pd(s1, a1);
    }
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(s0, s1));
  s = (t[0] + t[1]) + (t[2] + t[3]);
#elif defined(EIGEN_VECTORIZE_SSE2)
  __m128d s0 = _mm_setzero_pd(), s1 = _mm_setzero_pd();
  for (; i + 4 <= n; i += 4) {
    const __m128 va = _mm_loadu_ps(a + i);
    const __m128d a0 = _mm_cvtps_pd(va), a1 = _mm_cvtps_pd(_mm_movehl_ps(va, va));
    if (b != nullptr) {
      const __m128 vb = _mm_loadu_ps(b + i);
      s0 = _mm_add_pd(s0, _mm_mul_pd(a0, _mm_cvtps_pd(vb)));
      s1 = _mm_add_pd(s1, _mm_mul_pd(a1, _mm_cvtps_pd(_mm_movehl_ps(vb, vb))));
    } else {
      s0 = _mm_add_pd(s0, a0);
      s1 = _mm_add_pd(s1, a1);
    }
  }
  alignas(16) double t[2];
  _mm_store_pd(t, _mm_add_pd(s0, s1));
  s = t[0] + t[1];
#endif
  for (; i < n; ++i)
    s += static_cast<double>(a[i]) * (b != nullptr ? static_cast<double>(b[i]) : 1.0);
  return s;
}

/// Adds sum_i a[i] * b[i] (sum_i a[i] when b is null) over n contiguous doubles to acc,
/// each rounded product through TwoSum: dy - <dy, y> cancels (softmax_backward), which
/// exposes every rounding of a plain sum of the products (up to 15 ULP of the gradient's
/// scale). The products' own roundings stay: together at most half an ULP of sum |a b|.
template <typename Acc>
void dot_compensated(const double* a, const double* b, Index n, Acc& acc) {
  Index i = 0;
  if constexpr (Eigen::internal::packet_traits<double>::Vectorizable) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<double>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    const auto two_sum = [](Packet& h, Packet& l, const Packet& v) {
      const Packet t = ei::padd(h, v);
      const Packet bv = ei::psub(t, h);
      l = ei::padd(l, ei::padd(ei::psub(h, ei::psub(t, bv)), ei::psub(v, bv)));
      h = t;
    };
    const auto load = [&](Index k) {
      const Packet va = ei::ploadu<Packet>(a + k);
      return b == nullptr ? va : ei::pmul(va, ei::ploadu<Packet>(b + k));
    };
    Packet h0 = ei::pset1<Packet>(0.0), h1 = h0, l0 = h0, l1 = h0;
    for (; i + 2 * ps <= n; i += 2 * ps) {
      two_sum(h0, l0, load(i));
      two_sum(h1, l1, load(i + ps));
    }
    if (i + ps <= n) {
      two_sum(h0, l0, load(i));
      i += ps;
    }
    two_sum(h0, l0, h1);
    alignas(64) double buf[ps];
    ei::pstore(buf, h0);
    for (Index j = 0; j < ps; ++j) acc.add(buf[j]);
    acc.add(0.0, ei::predux(ei::padd(l0, l1)));
  }
  for (; i < n; ++i) acc.add(b == nullptr ? a[i] : a[i] * b[i]);
}

/// sum_i a[i * as] * b[i * bs] (or of a alone when b is null) in acc_t<T>: float products
/// are exact in double and their double sum far below float's resolution; double sums are
/// compensated (dot_compensated).
template <typename T>
acc_t<T> dot_blocks(const T* a, Index as, const T* b, Index bs, Index n) {
  const bool contiguous = as == 1 && (b == nullptr || bs == 1);
  if constexpr (std::is_same_v<T, float>) {
    pairwise_sum<double> acc;
    for (Index i = 0; i < n; i += block_size) {
      const Index len = std::min(block_size, n - i);
      if (contiguous) {
        acc.add(wide_dot(a + i, b == nullptr ? nullptr : b + i, len));
      } else {
        double s = 0;
        for (Index k = i; k < i + len; ++k) {
          s += static_cast<double>(a[k * as]) * (b == nullptr ? 1.0 : static_cast<double>(b[k * bs]));
        }
        acc.add(s);
      }
    }
    return acc.total();
  } else {
    compensated_sum<acc_t<T>> acc;
    if (contiguous && std::is_same_v<T, double>) {
      if constexpr (std::is_same_v<T, double>) dot_compensated(a, b, n, acc);
    } else {
      for (Index k = 0; k < n; ++k) acc.add(b == nullptr ? a[k * as] : a[k * as] * b[k * bs]);
    }
    return acc.total();
  }
}

/// dot_blocks for short contiguous rows, in scalar loops: dot_compensated's setup costs more
/// than such a row.
template <typename T>
acc_t<T> short_dot(const T* a, const T* b, Index n) {
  if constexpr (!exact_normalise<T>) {
    acc_t<T> s(0);
    for (Index i = 0; i < n; ++i) {
      s += static_cast<acc_t<T>>(a[i]) * (b == nullptr ? acc_t<T>(1) : static_cast<acc_t<T>>(b[i]));
    }
    return s;
  } else {
    compensated_sum<T> s;
    for (Index i = 0; i < n; ++i) s.add(b == nullptr ? a[i] : a[i] * b[i]);
    return s.total();
  }
}

/// Calls f with Eigen maps of the three strided ranges: unit-stride maps (vectorised) when
/// every stride is 1, strided maps otherwise.
template <typename T, typename F>
void with_maps(const T* a, Index as, const T* b, Index bs, T* out, Index os, Index n, F&& f) {
  using Vec = Eigen::Array<T, Eigen::Dynamic, 1>;
  if (as == 1 && bs == 1 && os == 1) {
    f(Eigen::Map<const Vec>(a, n), Eigen::Map<const Vec>(b, n), Eigen::Map<Vec>(out, n));
  } else {
    using S = Eigen::InnerStride<>;
    f(Eigen::Map<const Vec, 0, S>(a, n, S(as)), Eigen::Map<const Vec, 0, S>(b, n, S(bs)),
      Eigen::Map<Vec, 0, S>(out, n, S(os)));
  }
}

/// Longest distribution the backward passes handle with plain loops.
inline constexpr Index backward_short_max = 32;

/// dz = y * (dy - <dy, y>) / T for one distribution; out may alias y or dy exactly.
template <typename T>
void softmax_backward_one(const T* y, Index ys, const T* dy, Index dys, T* out, Index os, Index n,
                          T temperature) {
  if (n <= backward_short_max && ys == 1 && dys == 1 && os == 1) {
    // Short rows: plain loops, no per-row map and block machinery.
    const T g = static_cast<T>(short_dot(y, dy, n));
    if (temperature == T(1)) {
      for (Index i = 0; i < n; ++i) out[i] = y[i] * (dy[i] - g);
    } else if (temperature > T(1)) {
      for (Index i = 0; i < n; ++i) out[i] = y[i] * (dy[i] - g) / temperature;
    } else {
      for (Index i = 0; i < n; ++i) {
        const T q = (dy[i] - g) / temperature;
        out[i] = std::fabs(q) <= std::numeric_limits<T>::max() ? y[i] * q
                                                               : y[i] * (dy[i] - g) / temperature;
      }
    }
    return;
  }
  with_maps(y, ys, dy, dys, out, os, n, [&](const auto& ym, const auto& dym, auto&& om) {
    // Products and sums in acc_t: dy - <dy, y> cancels, so <dy, y> must be tight.
    const T g = static_cast<T>(dot_blocks(y, ys, dy, dys, n));
    if (temperature == T(1)) {
      om = ym * (dym - g);
    } else if (temperature > T(1)) {
      om = ym * (dym - g) / temperature;
    } else {
      // Below T = 1, y (dy - g) rounded on the subnormal grid and then divided by T would
      // carry an error of denorm_min / T: divide first, unless (dy - g) / T overflows.
      const auto q = (dym - g) / temperature;
      om = (q.abs() <= std::numeric_limits<T>::max()).select(ym * q, ym * (dym - g) / temperature);
    }
  });
}

/// dz = (dy - exp(logy) * sum(dy)) / T for one distribution; out may alias logy or dy.
template <typename T>
void log_softmax_backward_one(const T* logy, Index ls, const T* dy, Index dys, T* out, Index os,
                              Index n, T temperature) {
  if constexpr (has_packet_exp<T>) {
    if (n <= backward_short_max && ls == 1 && dys == 1 && os == 1) {
      // Short rows: the exps a packet at a time through a padded buffer (padding 0), plain
      // loops for the rest.
      namespace ei = Eigen::internal;
      using Packet = typename ei::packet_traits<T>::type;
      constexpr Index ps = ei::unpacket_traits<Packet>::size;
      const T s = static_cast<T>(short_dot(dy, static_cast<const T*>(nullptr), n));
      alignas(64) T buf[ps];
      for (Index i0 = 0; i0 < n; i0 += ps) {
        const Index len = std::min(ps, n - i0);
        ei::pstore(buf, len == ps ? pexp_accurate(ei::ploadu<Packet>(logy + i0))
                                  : pexp_accurate(load_first<Packet>(logy + i0, len, T(0))));
        for (Index j = 0; j < len; ++j) {
          const T v = dy[i0 + j] - buf[j] * s;
          out[i0 + j] = temperature == T(1) ? v : v / temperature;
        }
      }
      return;
    }
  }
  with_maps(logy, ls, dy, dys, out, os, n, [&](const auto& lm, const auto& dym, auto&& om) {
    const T s = static_cast<T>(dot_blocks(dy, dys, static_cast<const T*>(nullptr), 1, n));
    if (temperature == T(1)) {
      om = dym - lm.unaryExpr(exp_op<T>()) * s;
    } else {
      om = (dym - lm.unaryExpr(exp_op<T>()) * s) / temperature;
    }
  });
}

}  // namespace smax::detail

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
