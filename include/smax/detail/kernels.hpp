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
    namespace ei = Eigen::internal;
    if (!divide) return ei::psub(x, ei::pset1<Packet>(hmax));
    const Packet d = ei::psub(ei::pmul(ei::pset1<Packet>(half), x), ei::pset1<Packet>(hmax));
    return ei::pdiv(d, ei::pset1<Packet>(hT));
  }
};

inline constexpr Index block_size = 256;
inline constexpr Index gather_size = 256;

/// Contiguous exp-sum: e_i = exp(shift(x_i)), stored to out when Store, summed into acc.
/// out may equal x (in place).
template <bool Store, typename T>
void exp_sum_contiguous(const T* x, T* out, Index n, const shift<T>& sh,
                        pairwise_sum<acc_t<T>>& acc) {
  Index i = 0;
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    while (n - i >= ps) {
      // Blocks of 8 packets: each lane adds 4 values before the block joins the pairwise
      // sum, which keeps double rows of any length within an ULP or two.
      const Index end = i + std::min(8 * ps, (n - i) / ps * ps);
      Packet a0 = ei::pset1<Packet>(T(0));
      Packet a1 = ei::pset1<Packet>(T(0));
      for (; i + 2 * ps <= end; i += 2 * ps) {
        const Packet e0 = pexp_accurate(sh(ei::ploadu<Packet>(x + i)));
        const Packet e1 = pexp_accurate(sh(ei::ploadu<Packet>(x + i + ps)));
        if constexpr (Store) {
          ei::pstoreu(out + i, e0);
          ei::pstoreu(out + i + ps, e1);
        }
        a0 = ei::padd(a0, e0);
        a1 = ei::padd(a1, e1);
      }
      if (i < end) {
        const Packet e0 = pexp_accurate(sh(ei::ploadu<Packet>(x + i)));
        if constexpr (Store) ei::pstoreu(out + i, e0);
        a0 = ei::padd(a0, e0);
        i += ps;
      }
      acc.add(static_cast<acc_t<T>>(ei::predux(ei::padd(a0, a1))));
    }
  }
  if constexpr (has_packet_exp<T>) {
    // The last partial packet. Padding lanes hold the maximum (exponent 0): padding with
    // -inf would also give 0 but sends the packet through the slow subnormal scaling and
    // FP assists, which costs more than the rest of a short row.
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (i < n) {
      alignas(64) T buf[ps];
      const Index rest = n - i;
      const T pad = sh.hmax / sh.half;
      for (Index j = 0; j < ps; ++j) buf[j] = j < rest ? x[i + j] : pad;
      ei::pstore(buf, pexp_accurate(sh(ei::pload<Packet>(buf))));
      if constexpr (Store) std::copy(buf, buf + rest, out + i);
      acc_t<T> s(0);
      for (Index j = 0; j < rest; ++j) s += buf[j];
      acc.add(s);
      i = n;
    }
  }
  while (i < n) {
    const Index end = std::min(n, i + block_size);
    acc_t<T> s(0);
    for (; i < end; ++i) {
      const T e = std::exp(sh(x[i]));
      if constexpr (Store) out[i] = e;
      s += e;
    }
    acc.add(s);
  }
}

/// Strided exp-sum: gathers chunks into a stack buffer so the vector exp still applies.
template <bool Store, typename T>
void exp_sum(const T* x, Index xs, T* out, Index os, Index n, const shift<T>& sh,
             pairwise_sum<acc_t<T>>& acc) {
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
    if (std::isnan(x[i * xs])) return true;
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

/// softmax or log_softmax of one distribution of length n; y may alias x exactly.
template <forward_op Op, typename T>
void forward_one(const T* x, Index xs, T* y, Index ys, Index n, T temperature) {
  if (n == 0) return;
  const T inf = std::numeric_limits<T>::infinity();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const T m = max_fast(x, n, xs);
  const bool limit_case = !std::isfinite(m) || temperature == T(0) || temperature == inf;
  if (std::isnan(m) || m == -inf || (limit_case && has_nan(x, n, xs))) {
    // NaN anywhere, or nothing but -inf (0/0): no limit exists. (A NaN on the regular path
    // below turns the sum, and with it every output, into NaN.)
    fill(y, n, ys, nan);
    return;
  }
  if (m == inf) {
    const auto is_inf = [inf](T v) { return v == inf; };
    if (count_if(x, n, xs, is_inf) > 1) {
      fill(y, n, ys, nan);  // inf - inf
    } else {
      write_selected<Op>(x, xs, y, ys, n, 1, is_inf);
    }
    return;
  }
  if (temperature == T(0)) {
    const auto is_max = [m](T v) { return v == m; };
    write_selected<Op>(x, xs, y, ys, n, count_if(x, n, xs, is_max), is_max);
    return;
  }
  if (temperature == inf) {
    const auto is_finite = [inf](T v) { return v != -inf; };
    write_selected<Op>(x, xs, y, ys, n, count_if(x, n, xs, is_finite), is_finite);
    return;
  }
  const shift<T> sh(m, temperature);
  pairwise_sum<acc_t<T>> acc;
  if constexpr (Op == forward_op::softmax) {
    exp_sum<true>(x, xs, y, ys, n, sh, acc);
    const T s = static_cast<T>(acc.total());
    if (ys == 1) {
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>(y, n) /= s;
    } else {
      for (Index i = 0; i < n; ++i) y[i * ys] /= s;
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
inline constexpr Index lane_chunk = 16;  // columns summed before entering the pairwise sum

/// softmax or log_softmax of nb <= lane_block distributions that lie side by side in memory:
/// element k of distribution j is x[j + k * xk] (and y[j + k * yk]). This is the layout of
/// rows of a column-major matrix; each step reads one contiguous column slice, so the
/// distributions are vectorised across instead of gathered with a large stride.
/// N is lane_block for full blocks, Eigen::Dynamic (capacity lane_block) for the rest.
template <forward_op Op, int N, typename T>
void forward_lanes(const T* x, Index xk, T* y, Index yk, Index nb, Index len, T temperature) {
  using Lanes = Eigen::Array<T, N, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, N, 1, Eigen::ColMajor, lane_block, 1>;
  const auto in = [&](Index k) { return Eigen::Map<const Lanes>(x + k * xk, nb); };
  const auto out = [&](Index k) { return Eigen::Map<Lanes>(y + k * yk, nb); };
  if (len == 0) return;

  // A NaN may or may not survive this max; either way it reaches the lane's sum, and NaN
  // sums make the whole distribution NaN.
  Lanes m = in(0);
  for (Index k = 1; k < len; ++k) m = m.max(in(k));
  const T inf = std::numeric_limits<T>::infinity();
  if (!m.isFinite().all() || temperature == T(0) || temperature == inf) {
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

  pairwise_sum<Sums> acc;
  for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
    Lanes part = Lanes::Zero(nb);
    for (Index k = k0; k < std::min(len, k0 + lane_chunk); ++k) {
      const Lanes e = exponent(k).unaryExpr(exp_op<T>());
      if constexpr (Op == forward_op::softmax) out(k) = e;
      part += e;
    }
    acc.add(part.template cast<acc_t<T>>());
  }
  const Sums s = acc.total(Sums::Zero(nb));
  if constexpr (Op == forward_op::softmax) {
    const Lanes st = s.template cast<T>();
    for (Index k = 0; k < len; ++k) out(k) /= st;
  } else {
    const Lanes log_s = s.log().template cast<T>();
    for (Index k = 0; k < len; ++k) out(k) = exponent(k) - log_s;
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

/// log(sum(exp(x))) of one distribution.
template <typename T>
T logsumexp_one(const T* x, Index xs, Index n) {
  const T m = max_fast(x, n, xs);
  if (!std::isfinite(m)) {
    // -inf: empty or all -inf; +inf: the limit, unless a NaN hides behind it.
    return has_nan(x, n, xs) ? std::numeric_limits<T>::quiet_NaN() : m;
  }
  pairwise_sum<acc_t<T>> acc;
  exp_sum<false>(x, xs, static_cast<T*>(nullptr), 1, n, shift<T>(m, T(1)), acc);
  return static_cast<T>(static_cast<acc_t<T>>(m) + std::log(acc.total()));
}

/// Sum of block_sum(i, len) over blocks of block_size entries, the block sums added
/// pairwise in acc_t<T>.
template <typename T, typename F>
acc_t<T> sum_blocks(Index n, F&& block_sum) {
  pairwise_sum<acc_t<T>> acc;
  for (Index i = 0; i < n; i += block_size) {
    acc.add(static_cast<acc_t<T>>(block_sum(i, std::min(block_size, n - i))));
  }
  return acc.total();
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

/// dz = y * (dy - <dy, y>) / T for one distribution; out may alias y or dy exactly.
template <typename T>
void softmax_backward_one(const T* y, Index ys, const T* dy, Index dys, T* out, Index os, Index n,
                          T temperature) {
  with_maps(y, ys, dy, dys, out, os, n, [&](const auto& ym, const auto& dym, auto&& om) {
    const T g = static_cast<T>(sum_blocks<T>(n, [&](Index i, Index len) {
      // Products and sums in acc_t: dy - <dy, y> cancels, so <dy, y> must be tight.
      return (ym.segment(i, len).template cast<acc_t<T>>() *
              dym.segment(i, len).template cast<acc_t<T>>())
          .sum();
    }));
    if (temperature == T(1)) {
      om = ym * (dym - g);
    } else {
      om = ym * (dym - g) / temperature;
    }
  });
}

/// dz = (dy - exp(logy) * sum(dy)) / T for one distribution; out may alias logy or dy.
template <typename T>
void log_softmax_backward_one(const T* logy, Index ls, const T* dy, Index dys, T* out, Index os,
                              Index n, T temperature) {
  with_maps(logy, ls, dy, dys, out, os, n, [&](const auto& lm, const auto& dym, auto&& om) {
    const T s = static_cast<T>(sum_blocks<T>(n, [&](Index i, Index len) {
      return dym.segment(i, len).template cast<acc_t<T>>().sum();
    }));
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
