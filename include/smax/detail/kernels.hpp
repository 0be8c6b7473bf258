// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

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
  /// add(v[i]) for i < N, with the same bits: N is a power of two, and where count_ is a
  /// multiple of N those N values form a complete subtree, summed here level by level
  /// (which compilers vectorise) instead of through add's loop, whose trip count changes
  /// from value to value (that loop was an eighth of a 4096 x 10 float cross-entropy loss
  /// in a profile).
  template <int N>
  void add_all(const A* v) {
    static_assert(N > 1 && (N & (N - 1)) == 0, "N must be a power of two");
    if (count_ % N != 0) {
      for (int i = 0; i < N; ++i) add(v[i]);
      return;
    }
    A t[N / 2];
    for (int i = 0; i < N / 2; ++i) t[i] = v[2 * i] + v[2 * i + 1];
    int k = 1;
    for (int w = N / 2; w > 1; w /= 2, ++k) {
      for (int i = 0; i < w / 2; ++i) t[i] = t[2 * i] + t[2 * i + 1];
    }
    // k = log2(N): the root joins the counter where the last of the N adds would put it.
    A value = t[0];
    std::uint64_t c = count_ >> k;
    count_ += N;
    for (; (c & 1u) != 0 && k < levels - 1; c >>= 1, ++k) value += level_[k];
    level_[k] = value;
  }
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

/// Keeps a product rounded on its own before a TwoSum takes it: GCC contracts a multiply
/// and the add that takes its result into one FMA (-ffp-contract=fast, its default), and
/// whether it does depends on the code around them, so one row's sum came out with
/// different bits in two loops (double softmax_backward, a row alone against the same row
/// summed beside the previous row's output). Costs no instruction.
template <typename Packet>
EIGEN_ALWAYS_INLINE Packet rounded_apart(Packet v) {
  opaque(v);
  return v;
}

/// h + v as h' + (l' - l) without error (Knuth's TwoSum, any magnitudes): compensated_sum's
/// add on packets, lane by lane the same operations, so the same bits (and, unlike it,
/// kept under -ffast-math).
template <typename Packet>
EIGEN_ALWAYS_INLINE void two_sum(Packet& h, Packet& l, const Packet& v) {
  namespace ei = Eigen::internal;
  Packet s = ei::padd(h, v);
  opaque_under_fast_math(s);  // else s - h is folded to v and the error term to 0
  const Packet bv = ei::psub(s, h);
  l = ei::padd(l, ei::padd(ei::psub(h, ei::psub(s, bv)), ei::psub(v, bv)));
  h = s;
}

/// h + e as h' + (l' - l) without error (Dekker's Fast2Sum), for |h| >= |e|: the exp-sum
/// loops seed h with 1, above every exponential of an exponent <= 0 (with 2^K when the
/// exponentials are scaled by 2^K, see exp_sum_seed).
template <typename Packet>
EIGEN_ALWAYS_INLINE void fast_two_sum(Packet& h, Packet& l, const Packet& e) {
  namespace ei = Eigen::internal;
  Packet t = ei::padd(h, e);
  opaque_under_fast_math(t);  // else (t - h) is folded to e and the error term to 0
  l = ei::padd(l, ei::psub(e, ei::psub(t, h)));
  h = t;
}

/// The sum of n values in [0, one] (exponentials of exponents <= 0, scaled by one = 2^K)
/// as a value and an error term: for double by Fast2Sum seeded with one (see fast_two_sum);
/// for float in double, each addition already far below float's resolution (error term 0).
template <typename T>
std::pair<acc_t<T>, acc_t<T>> unit_terms(const T* v, Index n, T one = T(1)) {
  if constexpr (!exact_normalise<T>) {
    acc_t<T> s(0);
    for (Index j = 0; j < n; ++j) s += v[j];
    return {s, acc_t<T>(0)};
  } else {
    T h(one), l(0);
    for (Index j = 0; j < n; ++j) {
      T t = h + v[j];
      opaque_under_fast_math(t);
      l += v[j] - (t - h);
      h = t;
    }
    return {h - one, l};  // exact: one (a power of two <= h) is a multiple of h's ULP
  }
}

/// Adds unit_terms(v, n, one) to acc.
template <typename T, typename Acc>
void add_unit(Acc& acc, const T* v, Index n, T one = T(1)) {
  const auto [s, l] = unit_terms(v, n, one);
  if constexpr (!exact_normalise<T>) {
    acc.add(s);
  } else {
    acc.add(s, l);
  }
}

/// The total of an empty compensated_sum after add_unit(acc, v, n), bit for bit, without
/// the compensation steps that cannot change it (a fresh sum takes its first term
/// exactly): a Vector3f softmax, 21.1 -> 18.3 ns a call.
template <typename T>
acc_t<T> unit_total(const T* v, Index n) {
  const auto [s, l] = unit_terms(v, n);
  if constexpr (!exact_normalise<T>) return s;  // l is 0
  return s + l;
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
  bool normal = false;  // every exponent lies in [normal_lo, 0]: see set_min

  shift(T max, T temperature)
      : half(temperature > T(1) ? T(0.5) : T(1)),
        hmax(half * max),
        hT(half * temperature),
        divide(temperature != T(1)) {}

  T operator()(T x) const { return divide ? (half * x - hmax) / hT : x - hmax; }

  /// Records the distribution's smallest entry: when its exponent is >= normal_lo, so is
  /// every exponent, and the exp-sum loops take pexp_normal (same results, no range check).
  /// A NaN or -inf minimum leaves the checked path.
  void set_min(T min) {
    if constexpr (has_packet_exp<T>) normal = (*this)(min) >= exp_constants<T>::normal_lo;
  }

  template <typename Packet>
  EIGEN_ALWAYS_INLINE Packet operator()(const Packet& x) const {
    return divide ? apply<true>(x) : apply<false>(x);
  }

  /// A lane's halved base, half * m (m itself without Divide), as lane_exponent takes it.
  template <bool Divide, typename Packet>
  EIGEN_ALWAYS_INLINE Packet halved(const Packet& m) const {
    return Divide ? Eigen::internal::pmul(Eigen::internal::pset1<Packet>(half), m) : m;
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

/// Outputs of at least this many bytes in one call are written with non-temporal stores
/// where a kernel has them: the call's data cannot all stay in a last-level cache, and such
/// stores skip reading each output line before writing it (256 x 32000 floats,
/// softmax_backward: 1.54 -> 2.23 G/s). Smaller outputs stay in cache for the next
/// operation (1024 x 1000 streamed: 6.2 -> 3.4 G/s). Define SMAX_STREAM_MIN_BYTES to change it.
#ifndef SMAX_STREAM_MIN_BYTES
#define SMAX_STREAM_MIN_BYTES (std::int64_t(16) << 20)
#endif
/// The threshold in force; tests lower it to reach the streaming stores with small data.
inline std::int64_t& stream_min_bytes() {
  static std::int64_t bytes = SMAX_STREAM_MIN_BYTES;
  return bytes;
}
inline bool stream_pays(Index bytes) { return bytes >= stream_min_bytes(); }

inline constexpr Index block_size = 256;
inline constexpr Index gather_size = 256;

/// Packets holding p[0..n) (0 <= n <= size) and 0 in the other lanes, read with loads that
/// touch nothing past p[n - 1]. A wider load (a masked one included) that overlaps a store
/// still in flight cannot be forwarded from it and waits for the store to complete: with
/// the output of the previous call just after a Vector3f input, softmax of that vector
/// took 37 ns a call with a 64-byte masked load against 17 ns with the two ends apart
/// (Zen 4).
#if defined(EIGEN_VECTORIZE_SSE2)
EIGEN_ALWAYS_INLINE __m128 first_lanes(const float* p, Index n) {
  switch (n) {
    case 0:
      return _mm_setzero_ps();
    case 1:
      return _mm_load_ss(p);
    case 2:
      return _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    case 3:
      return _mm_movelh_ps(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))),
                           _mm_load_ss(p + 2));
    default:
      return _mm_loadu_ps(p);
  }
}

EIGEN_ALWAYS_INLINE __m128d first_lanes(const double* p, Index n) {
  return n >= 2 ? _mm_loadu_pd(p) : n == 1 ? _mm_load_sd(p) : _mm_setzero_pd();
}
#endif

#if defined(EIGEN_VECTORIZE_AVX)
/// As first_lanes, 0 <= n <= 256 bits' worth.
template <typename T>
EIGEN_ALWAYS_INLINE auto first_lanes_256(const T* p, Index n) {
  constexpr Index half = 16 / sizeof(T);
  if constexpr (std::is_same_v<T, float>) {
    if (n <= half) return _mm256_zextps128_ps256(first_lanes(p, n));
    return _mm256_insertf128_ps(_mm256_zextps128_ps256(_mm_loadu_ps(p)),
                                first_lanes(p + half, n - half), 1);
  } else {
    if (n <= half) return _mm256_zextpd128_pd256(first_lanes(p, n));
    return _mm256_insertf128_pd(_mm256_zextpd128_pd256(_mm_loadu_pd(p)),
                                first_lanes(p + half, n - half), 1);
  }
}
#endif

#if defined(EIGEN_VECTORIZE_AVX512)
/// As first_lanes, 0 <= n < 512 bits' worth.
template <typename T>
EIGEN_ALWAYS_INLINE auto first_lanes_512(const T* p, Index n) {
  constexpr Index half = 32 / sizeof(T);
  if constexpr (std::is_same_v<T, float>) {
    if (n <= half) return _mm512_zextps256_ps512(first_lanes_256(p, n));
    const __m512d lo = _mm512_zextpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(p)));
    return _mm512_castpd_ps(
        _mm512_insertf64x4(lo, _mm256_castps_pd(first_lanes_256(p + half, n - half)), 1));
  } else {
    if (n <= half) return _mm512_zextpd256_pd512(first_lanes_256(p, n));
    return _mm512_insertf64x4(_mm512_zextpd256_pd512(_mm256_loadu_pd(p)),
                              first_lanes_256(p + half, n - half), 1);
  }
}
#endif

/// A packet holding from[0..n) (n < packet size) and `pad` in the other lanes, reading
/// only from[0..n) (see first_lanes); elsewhere (no SSE2) through a buffer.
template <typename Packet, typename T>
EIGEN_ALWAYS_INLINE Packet load_first(const T* from, Index n, T pad) {
  namespace ei = Eigen::internal;
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (std::is_same_v<Packet, ei::Packet16f>) {
    return _mm512_mask_mov_ps(ei::pset1<Packet>(pad), static_cast<__mmask16>((1u << n) - 1u),
                              first_lanes_512(from, n));
  } else if constexpr (std::is_same_v<Packet, ei::Packet8d>) {
    return _mm512_mask_mov_pd(ei::pset1<Packet>(pad), static_cast<__mmask8>((1u << n) - 1u),
                              first_lanes_512(from, n));
  } else
#endif
#if defined(EIGEN_VECTORIZE_AVX)
      if constexpr (std::is_same_v<Packet, ei::Packet8f> || std::is_same_v<Packet, ei::Packet4d>) {
    const Packet lane = ei::plset<Packet>(T(0));
    return ei::pselect(ei::pcmp_lt(lane, ei::pset1<Packet>(static_cast<T>(n))),
                       first_lanes_256(from, n), ei::pset1<Packet>(pad));
  } else
#endif
#if defined(EIGEN_VECTORIZE_SSE2)
      if constexpr (std::is_same_v<Packet, ei::Packet4f> || std::is_same_v<Packet, ei::Packet2d>) {
    const Packet lane = ei::plset<Packet>(T(0));
    return ei::pselect(ei::pcmp_lt(lane, ei::pset1<Packet>(static_cast<T>(n))),
                       first_lanes(from, n), ei::pset1<Packet>(pad));
  } else
#endif
  {
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    alignas(64) T buf[ps];
    for (Index j = 0; j < ps; ++j) buf[j] = j < n ? from[j] : pad;
    return ei::pload<Packet>(buf);
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

/// A float packet as two packets of doubles (its low and high halves) and back, where the
/// target has the conversions; `available` is false elsewhere.
template <typename Packet>
struct widening {
  static constexpr bool available = false;
};

#if defined(EIGEN_VECTORIZE_SSE2)
template <>
struct widening<Eigen::internal::Packet4f> {
  static constexpr bool available = true;
  using Wide = Eigen::internal::Packet2d;
  EIGEN_ALWAYS_INLINE static Wide lo(const __m128& v) { return _mm_cvtps_pd(v); }
  EIGEN_ALWAYS_INLINE static Wide hi(const __m128& v) { return _mm_cvtps_pd(_mm_movehl_ps(v, v)); }
  EIGEN_ALWAYS_INLINE static __m128 narrow(const Wide& a, const Wide& b) {
    return _mm_movelh_ps(_mm_cvtpd_ps(a), _mm_cvtpd_ps(b));
  }
};
#endif
#if defined(EIGEN_VECTORIZE_AVX)
template <>
struct widening<Eigen::internal::Packet8f> {
  static constexpr bool available = true;
  using Wide = Eigen::internal::Packet4d;
  EIGEN_ALWAYS_INLINE static Wide lo(const __m256& v) {
    return _mm256_cvtps_pd(_mm256_castps256_ps128(v));
  }
  EIGEN_ALWAYS_INLINE static Wide hi(const __m256& v) {
    return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
  }
  EIGEN_ALWAYS_INLINE static __m256 narrow(const Wide& a, const Wide& b) {
    return _mm256_insertf128_ps(_mm256_zextps128_ps256(_mm256_cvtpd_ps(a)), _mm256_cvtpd_ps(b), 1);
  }
};
#endif
#if defined(EIGEN_VECTORIZE_AVX512)
template <>
struct widening<Eigen::internal::Packet16f> {
  static constexpr bool available = true;
  using Wide = Eigen::internal::Packet8d;
  EIGEN_ALWAYS_INLINE static Wide lo(const __m512& v) {
    return _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  }
  EIGEN_ALWAYS_INLINE static Wide hi(const __m512& v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  }
  EIGEN_ALWAYS_INLINE static __m512 narrow(const Wide& a, const Wide& b) {
    const __m512d lo = _mm512_zextpd256_pd512(_mm256_castps_pd(_mm512_cvtpd_ps(a)));
    return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm512_cvtpd_ps(b)), 1));
  }
};
#endif

/// Adds the lanes of an exp-sum block to acc: h0 and h1 (each lane seeded with one, a power
/// of two: 1, or the 2^K of a scaled exp-sum) and the error terms l, as exactly as acc_t<T>
/// allows.
template <typename T, typename Packet, typename Acc>
EIGEN_ALWAYS_INLINE void add_block(Acc& acc, const Packet& h0, const Packet& h1, const Packet& l,
                                   T one = T(1)) {
  namespace ei = Eigen::internal;
  constexpr Index ps = ei::unpacket_traits<Packet>::size;
  if constexpr (!exact_normalise<T>) {
    // float: the lanes of h are floats in [one, 33 one], so their sum in double is exact.
#if defined(EIGEN_VECTORIZE_AVX512)
    if constexpr (std::is_same_v<Packet, ei::Packet16f>) {
      // The four partial sums below, in registers: the h lanes (exact in any order), then
      // the l lanes four at a time in the loop's order, so the same bits. A softmax of 33
      // floats spent most of its 74 ns here and in the exp chain.
      using W = widening<Packet>;
      const __m512d h =
          _mm512_add_pd(_mm512_add_pd(W::lo(h0), W::hi(h0)), _mm512_add_pd(W::lo(h1), W::hi(h1)));
      __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(h), _mm512_extractf64x4_pd(h, 1));
      t = _mm256_add_pd(t, _mm256_cvtps_pd(_mm512_castps512_ps128(l)));
      t = _mm256_add_pd(t, _mm256_cvtps_pd(_mm512_extractf32x4_ps(l, 1)));
      t = _mm256_add_pd(t, _mm256_cvtps_pd(_mm512_extractf32x4_ps(l, 2)));
      t = _mm256_add_pd(t, _mm256_cvtps_pd(_mm512_extractf32x4_ps(l, 3)));
      alignas(32) double tt[4];
      _mm256_store_pd(tt, t);
      acc.add(((tt[0] + tt[1]) + (tt[2] + tt[3])) -
              static_cast<double>(2 * ps) * static_cast<double>(one));
      return;
    }
#endif
    static_assert((3 * ps) % 4 == 0, "four partial sums");
    alignas(64) T buf[3 * ps];
    ei::pstore(buf, h0);
    ei::pstore(buf + ps, h1);
    ei::pstore(buf + 2 * ps, l);
    double t[4] = {0, 0, 0, 0};
    for (Index j = 0; j < 3 * ps; j += 4) {
      for (Index q = 0; q < 4; ++q) t[q] += static_cast<double>(buf[j + q]);
    }
    acc.add(((t[0] + t[1]) + (t[2] + t[3])) -
            static_cast<double>(2 * ps) * static_cast<double>(one));
  } else {
    alignas(64) T buf[2 * ps];
    ei::pstore(buf, h0);
    ei::pstore(buf + ps, h1);
    T hi = -T(2 * ps) * one, lo = ei::predux(l);  // minus the seeds: exact
    for (Index j = 0; j < 2 * ps; ++j) {
      const T v = buf[j], s = hi + v, bv = s - hi;
      lo += (hi - (s - bv)) + (v - bv);
      hi = s;
    }
    acc.add(hi, lo);
  }
}

/// pexp_scaled when Scaled, else pexp_normal when Normal (see shift::set_min), else
/// pexp_accurate (kk and lo_k unused).
template <bool Scaled, bool Normal, typename Packet>
EIGEN_ALWAYS_INLINE Packet pexp_maybe_scaled(const Packet& kk, const Packet& lo_k,
                                             const Packet& v) {
  if constexpr (Scaled) {
    return pexp_scaled(v, kk, lo_k);
  } else if constexpr (Normal) {
    return pexp_normal(v);
  } else {
    return pexp_accurate(v);
  }
}

/// The seed of the exp-sum lanes: 2^K when the exponentials are scaled by 2^K (they are
/// then at most 2^K, and Fast2Sum needs the running sum to be the larger term), else 1.
template <bool Scaled, typename T>
T exp_sum_seed(const exp_scale<T>& sc) {
  if constexpr (Scaled) {
    return std::ldexp(T(1), sc.k);
  } else {
    return T(1);
  }
}

template <bool Store, bool Divide, bool Scaled, bool Normal, typename T, typename Acc>
void exp_sum_contiguous_impl(const T* x, T* out, Index n, const shift<T>& sh, Acc& acc,
                             const exp_scale<T>& sc, const T* ahead) {
  Index i = 0;
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    const Packet kk = ei::pset1<Packet>(sc.kk);
    const Packet lo_k = ei::pset1<Packet>(sc.lo_k);
    const T one = exp_sum_seed<Scaled>(sc);
    while (n - i >= ps) {
      // Blocks of up to 64 packets, summed exactly per lane (fast_two_sum), so the total
      // carries the rounding of acc alone: a plain sum rounds at every addition to the lane
      // that holds the largest terms, several ULP of the result.
      const Index end = i + std::min(64 * ps, (n - i) / ps * ps);
      Packet h0 = ei::pset1<Packet>(one), h1 = h0;
      Packet l0 = ei::pset1<Packet>(T(0)), l1 = l0;
      for (; i + 2 * ps <= end; i += 2 * ps) {
        if (ahead != nullptr) {
          for (Index k = 0; k < 2 * ps; k += Index(64 / sizeof(T))) ei::prefetch(ahead + i + k);
        }
        const Packet e0 = pexp_maybe_scaled<Scaled, Normal>(
            kk, lo_k, sh.template apply<Divide>(ei::ploadu<Packet>(x + i)));
        const Packet e1 = pexp_maybe_scaled<Scaled, Normal>(
            kk, lo_k, sh.template apply<Divide>(ei::ploadu<Packet>(x + i + ps)));
        if constexpr (Store) {
          ei::pstoreu(out + i, e0);
          ei::pstoreu(out + i + ps, e1);
        }
        fast_two_sum(h0, l0, e0);
        fast_two_sum(h1, l1, e1);
      }
      if (i < end) {
        const Packet e0 = pexp_maybe_scaled<Scaled, Normal>(
            kk, lo_k, sh.template apply<Divide>(ei::ploadu<Packet>(x + i)));
        if constexpr (Store) ei::pstoreu(out + i, e0);
        fast_two_sum(h0, l0, e0);
        i += ps;
      }
      add_block<T>(acc, h0, h1, ei::padd(l0, l1), one);
    }
    // The last partial packet. Padding lanes hold the maximum (exponent 0): padding with
    // -inf would also give 0 but sends the packet through the slow subnormal scaling and
    // FP assists, which costs more than the rest of a short row.
    if (i < n) {
      alignas(64) T buf[ps];
      const Index rest = n - i;
      const T pad = sh.hmax / sh.half;
      const Packet e = pexp_maybe_scaled<Scaled, Normal>(
          kk, lo_k, sh.template apply<Divide>(load_first<Packet>(x + i, rest, pad)));
      ei::pstore(buf, e);
      if constexpr (Store) store_first(out + i, e, rest);  // std::copy called memmove
      add_unit(acc, buf, rest, one);
      i = n;
    }
  }
  while (i < n) {
    const Index end = std::min(n, i + block_size);
    compensated_sum<acc_t<T>> s;
    for (; i < end; ++i) {
      const T e = Scaled ? sc.scalar(sh(x[i])) : std::exp(sh(x[i]));
      if constexpr (Store) out[i] = e;
      s.add(e);
    }
    acc.add(s.total());
  }
}

/// f(Divide, Scaled, Normal) (std::bool_constant each) for the exponentials of shift sh and
/// scale sc: pexp_scaled when sc.k != 0, else pexp_normal where sh.normal, else
/// pexp_accurate (see pexp_maybe_scaled). Every pass that takes a row's exponentials picks
/// the same one here, so a pass that takes them again gets the same bits.
template <typename T, typename F>
EIGEN_ALWAYS_INLINE void with_exp_variant(const shift<T>& sh, const exp_scale<T>& sc, F&& f) {
  using yes = std::true_type;
  using no = std::false_type;
  const auto pick = [&](auto divide) {
    if (sc.k != 0) {
      f(divide, yes(), no());
    } else if (sh.normal) {
      f(divide, no(), yes());
    } else {
      f(divide, no(), no());
    }
  };
  if (sh.divide) {
    pick(yes());
  } else {
    pick(no());
  }
}

/// Contiguous exp-sum: e_i = exp(shift(x_i)) 2^K (K = sc.k, 0 by default), stored to out
/// when Store, summed into acc (a compensated_sum or a pairwise_sum of acc_t<T>). out may
/// equal x (in place). With `ahead` (the next row, of n entries or more), its cache lines
/// are prefetched along the way: the exponentials bind this pass, and the next row's first
/// pass then finds its data in cache.
template <bool Store, typename T, typename Acc>
void exp_sum_contiguous(const T* x, T* out, Index n, const shift<T>& sh, Acc& acc,
                        const exp_scale<T>& sc = {}, const T* ahead = nullptr) {
  with_exp_variant(sh, sc, [&](auto divide, auto scaled, auto normal) {
    exp_sum_contiguous_impl<Store, decltype(divide)::value, decltype(scaled)::value,
                            decltype(normal)::value>(x, out, n, sh, acc, sc, ahead);
  });
}

/// Strided exp-sum: gathers chunks into a stack buffer so the vector exp still applies.
/// acc is a compensated_sum (or a pairwise_sum) of acc_t<T>; sc scales every exponential by
/// 2^K exactly (see pexp_scaled).
template <bool Store, typename T, typename Acc>
void exp_sum(const T* x, Index xs, T* out, Index os, Index n, const shift<T>& sh, Acc& acc,
             const exp_scale<T>& sc = {}, const T* ahead = nullptr) {
  if (xs == 1 && (!Store || os == 1)) {
    exp_sum_contiguous<Store>(x, out, n, sh, acc, sc, ahead);
    return;
  }
  alignas(64) T buf[gather_size];
  for (Index i0 = 0; i0 < n; i0 += gather_size) {
    const Index len = std::min(gather_size, n - i0);
    for (Index i = 0; i < len; ++i) buf[i] = x[(i0 + i) * xs];
    exp_sum_contiguous<Store>(buf, buf, len, sh, acc, sc);
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

/// Largest and smallest entries of a contiguous range in one pass, {-inf, +inf} when empty.
/// With a NaN both are unspecified, as for max_fast. The minimum costs nothing here: the
/// pass waits on loads.
template <typename T>
std::pair<T, T> max_min_fast(const T* x, Index n) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  T hi = -inf, lo = inf;
  Index i = 0;
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (n >= ps) {
      Packet a0 = ei::pset1<Packet>(-inf), a1 = a0, b0 = ei::pset1<Packet>(inf), b1 = b0;
      for (; i + 2 * ps <= n; i += 2 * ps) {
        const Packet v0 = ei::ploadu<Packet>(x + i), v1 = ei::ploadu<Packet>(x + i + ps);
        a0 = ei::pmax(a0, v0);
        a1 = ei::pmax(a1, v1);
        b0 = ei::pmin(b0, v0);
        b1 = ei::pmin(b1, v1);
      }
      if (i + ps <= n) {
        const Packet v0 = ei::ploadu<Packet>(x + i);
        a0 = ei::pmax(a0, v0);
        b0 = ei::pmin(b0, v0);
        i += ps;
      }
      hi = ei::predux_max(ei::pmax(a0, a1));
      lo = ei::predux_min(ei::pmin(b0, b1));
    }
  }
  for (; i < n; ++i) {
    hi = x[i] > hi ? x[i] : hi;
    lo = x[i] < lo ? x[i] : lo;
  }
  return {hi, lo};
}

/// A distribution's maximum, and its minimum where the same pass gives it for free (unit
/// stride; -inf otherwise), for shift::set_min. Both unspecified with a NaN, as max_fast.
template <typename T>
std::pair<T, T> max_and_floor(const T* x, Index n, Index xs) {
  if (xs == 1) return max_min_fast(x, n);
  return {max_fast(x, n, xs), -std::numeric_limits<T>::infinity()};
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

/// The maximum of a distribution shorter than a packet, x[0..n) with n > 0 (a NaN past
/// x[0] is skipped: the exponentials carry it into the sum).
template <typename T>
T tiny_max(const T* x, Index n) {
  T m = x[0];
  for (Index i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

/// exp(d) of a distribution's exponent packet d (lanes past n padded with exponent 0) into
/// buf, and the sum of its first n lanes (unit_total).
template <typename T, typename Packet>
acc_t<T> tiny_exp_total(const Packet& d, T* buf, Index n) {
  Eigen::internal::pstore(buf, pexp_accurate(d));
  return unit_total(buf, n);
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
    const T m = tiny_max(x, n);
    if (!is_finite(m) || temperature == T(0) || is_pos_inf(temperature)) return false;
    alignas(64) T buf[ps];
    const shift<T> sh(m, temperature);  // padding with m: exponent 0
    const Packet d = sh(load_first<Packet>(x, n, m));
    const acc_t<T> s = tiny_exp_total(d, buf, n);
    if constexpr (Op == forward_op::softmax) {
      if constexpr (exact_normalise<T>) {
        for (Index i = 0; i < n; ++i) y[i] = buf[i] / s;
      } else {
        const T inv = static_cast<T>(acc_t<T>(1) / s);
        for (Index i = 0; i < n; ++i) y[i] = buf[i] * inv;
      }
    } else {
      // The exponents as the packet holds them (sh(x[i]) each, bit for bit), not again
      // one by one: Vector3f log_softmax_into 22.3 -> 14.7 ns a call.
      ei::pstore(buf, ei::psub(d, ei::pset1<Packet>(static_cast<T>(std::log(s)))));
      for (Index i = 0; i < n; ++i) y[i] = buf[i];
    }
    return true;
  }
}

#if defined(EIGEN_VECTORIZE_AVX512)
EIGEN_ALWAYS_INLINE void stream_packet(float* to, const __m512& p) { _mm512_stream_ps(to, p); }
EIGEN_ALWAYS_INLINE void stream_packet(double* to, const __m512d& p) { _mm512_stream_pd(to, p); }
#endif

/// y[i] = f(x's packet at i) over n contiguous entries, whole packets and then the last
/// partial one (from load_first with `pad`); with AVX-512, from y's first 64-byte boundary
/// on, through non-temporal stores (stream_pays). y may alias x exactly.
template <typename T, typename F>
EIGEN_ALWAYS_INLINE void stream_map(const T* x, T* y, Index n, T pad, const F& f) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr Index ps = ei::unpacket_traits<Packet>::size;
  Index i = 0;
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (ps * Index(sizeof(T)) == 64) {
    const auto address = reinterpret_cast<std::uintptr_t>(y);
    if (address % sizeof(T) == 0) {
      const Index head = std::min(n, static_cast<Index>((64 - address % 64) % 64 / sizeof(T)));
      if (head > 0) store_first(y, f(load_first<Packet>(x, head, pad)), head);
      for (i = head; i + ps <= n; i += ps) stream_packet(y + i, f(ei::ploadu<Packet>(x + i)));
      _mm_sfence();  // order the non-temporal stores before the caller's
    }
  }
#endif
  for (; i + ps <= n; i += ps) ei::pstoreu(y + i, f(ei::ploadu<Packet>(x + i)));
  if (i < n) store_first(y + i, f(load_first<Packet>(x + i, n - i, pad)), n - i);
}

/// log_softmax's output pass for an output streamed to memory (stream_pays): y = shift(x) -
/// log(total), written once and never read (256 x 32000 floats: 1.45 -> 1.75 G/s). softmax
/// keeps its stored exponentials: taking them again from x to stream y measured slower
/// (2.12 -> 1.50 G/s there), as the exponentials and not memory bound it.
template <bool Divide, typename T>
void log_softmax_streamed(const T* x, T* y, Index n, const shift<T>& sh, acc_t<T> total) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  const Packet log_s = ei::pset1<Packet>(static_cast<T>(std::log(total)));
  stream_map(x, y, n, sh.hmax / sh.half,
             [&](const Packet& v) { return ei::psub(sh.template apply<Divide>(v), log_s); });
}

/// Longest float row, in bytes, whose streamed softmax or cross-entropy gradient
/// (stream_pays) scales its stored exponentials in place. A longer row leaves L2 (2 MB a core
/// on Emerald Rapids, 1 MB on Zen 4) before that pass reads it back, so the output pass takes
/// the exponentials again from x and streams them out (exp_times_streamed): softmax of
/// 16 x 1048576 floats 1.09-1.22 -> 1.41-1.46 G/s, 4 x 4194304 0.92-1.11 -> 1.32-1.35; rows
/// of 2 MiB broke even, 128 KiB rows ran 10 % slower, and double rows (slower exp) gained
/// nothing at 8 MiB (Xeon).
inline constexpr Index stored_exp_max_bytes = Index(2) << 20;

/// y = exp(shift(x)) 2^K * factor over a contiguous row longer than stored_exp_max_bytes,
/// streamed to memory: the exponentials exp_sum_contiguous takes (with_exp_variant), so
/// the same bits as multiplying stored ones by factor. y may alias x exactly.
template <typename T>
void exp_times_streamed(const T* x, T* y, Index n, const shift<T>& sh, const exp_scale<T>& sc,
                        T factor) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  const Packet kk = ei::pset1<Packet>(sc.kk), lo_k = ei::pset1<Packet>(sc.lo_k);
  const Packet f = ei::pset1<Packet>(factor);
  with_exp_variant(sh, sc, [&](auto divide, auto scaled, auto normal) {
    stream_map(x, y, n, sh.hmax / sh.half, [&](const Packet& v) {
      const Packet d = sh.template apply<decltype(divide)::value>(v);
      return ei::pmul(
          pexp_maybe_scaled<decltype(scaled)::value, decltype(normal)::value>(kk, lo_k, d), f);
    });
  });
}

/// softmax or log_softmax of one distribution of length n; y may alias x exactly.
template <forward_op Op, typename T>
void forward_one(const T* x, Index xs, T* y, Index ys, Index n, T temperature, bool stream = false,
                 const T* ahead = nullptr) {
  if (n == 0) return;
  if constexpr (has_packet_exp<T>) {
    constexpr Index ps = Eigen::internal::packet_traits<T>::size;
    if (xs == 1 && ys == 1 && n < ps && forward_tiny<Op>(x, y, n, temperature)) return;
  }
  const T nan = std::numeric_limits<T>::quiet_NaN();
  T m, lo;
  std::tie(m, lo) = max_and_floor(x, n, xs);
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
  shift<T> sh(m, temperature);
  sh.set_min(lo);
  compensated_sum<acc_t<T>> acc;
  if constexpr (has_packet_exp<T> && Op == forward_op::log_softmax) {
    if (stream && xs == 1 && ys == 1) {
      exp_sum<false>(x, xs, y, ys, n, sh, acc, {}, ahead);
      if (sh.divide) {
        log_softmax_streamed<true>(x, y, n, sh, acc.total());
      } else {
        log_softmax_streamed<false>(x, y, n, sh, acc.total());
      }
      return;
    }
  }
  if constexpr (has_packet_exp<T> && std::is_same_v<T, float> && Op == forward_op::softmax) {
    if (stream && xs == 1 && ys == 1 && n * Index(sizeof(T)) > stored_exp_max_bytes) {
      exp_sum<false>(x, xs, y, ys, n, sh, acc, {}, ahead);
      exp_times_streamed(x, y, n, sh, {}, static_cast<T>(acc_t<T>(1) / acc.total()));
      return;
    }
  }
  if constexpr (Op == forward_op::softmax) {
    exp_sum<true>(x, xs, y, ys, n, sh, acc, {}, ahead);
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
    exp_sum<false>(x, xs, y, ys, n, sh, acc, {}, ahead);
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

/// Columns the lane kernels prefetch ahead when they walk long strided distributions.
inline constexpr Index prefetch_columns = 16;

/// Asks for the cache lines of the n values at p ahead of use, into L2 (a no-op where the
/// compiler has no prefetch builtin). Strided columns sit in different pages, where the
/// hardware prefetchers, which follow streams within a page, do not reach; and with a
/// power-of-two stride they share a few L1 sets, where lines fetched ahead would evict
/// each other before use.
template <typename T>
EIGEN_ALWAYS_INLINE void prefetch_lanes(const T* p, Index n, bool write = false) {
#if defined(__GNUC__)
  const char* c = reinterpret_cast<const char*>(p);
  for (Index b = 0; b < n * Index(sizeof(T)); b += 64) {
    if (write) {
      __builtin_prefetch(c + b, 1, 1);
    } else {
      __builtin_prefetch(c + b, 0, 1);
    }
  }
#else
  static_cast<void>(p);
  static_cast<void>(n);
  static_cast<void>(write);
#endif
}

/// Longest distribution forward_lanes handles in three passes; longer ones take two passes
/// and one more exp per entry, which pays once the columns no longer stay in L1.
inline constexpr Index lanes_three_pass_max = 128;

/// log(sum(exp(x))) of one distribution.
template <typename T>
T logsumexp_one(const T* x, Index xs, Index n) {
  if constexpr (has_packet_exp<T>) {
    // Shorter than a packet: one exp in registers, the sum exp_sum's last partial packet
    // would give (unit_total), bit for bit (Vector3f 15.8 -> 12.3 ns a call).
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (xs == 1 && n > 0 && n < ps) {
      const T m = tiny_max(x, n);
      if (is_finite(m)) {
        alignas(64) T buf[ps];
        const shift<T> sh(m, T(1));
        const acc_t<T> s = tiny_exp_total(sh(load_first<Packet>(x, n, m)), buf, n);
        return static_cast<T>(static_cast<acc_t<T>>(m) + std::log(s));
      }
    }
  }
  T m, lo;
  std::tie(m, lo) = max_and_floor(x, n, xs);
  if (!is_finite(m)) {
    // -inf: empty or all -inf; +inf: the limit, unless a NaN hides behind it.
    return has_nan(x, n, xs) ? std::numeric_limits<T>::quiet_NaN() : m;
  }
  compensated_sum<acc_t<T>> acc;
  shift<T> sh(m, T(1));
  sh.set_min(lo);
  exp_sum<false>(x, xs, static_cast<T*>(nullptr), 1, n, sh, acc);
  return static_cast<T>(static_cast<acc_t<T>>(m) + std::log(acc.total()));
}

/// Longest distribution the lane tiles hold: lane_block of them fill 16 KiB, which stays
/// in L1 through the tile kernel's passes (float: 128, double: 64).
template <typename T>
inline constexpr Index tile_length = Index(16384 / sizeof(T)) / lane_block;

/// The lanes' maxima where finite, 0 where not (tested on the bits, so -ffinite-math-only
/// cannot fold it away).
template <typename A>
A finite_or_zero(const A& m) {
  A r = m;
  for (Index j = 0; j < m.size(); ++j) {
    if (!is_finite(m(j))) r(j) = typename A::Scalar(0);
  }
  return r;
}

/// One chunk's lane sums (Fast2Sum pairs h, l of packets 0..na, each h seeded with 1) as
/// acc_t arrays: h - 1, exact (1 is a multiple of h's ULP), and l; lanes past packet na: 0.
template <typename T, typename Packet, typename Sums>
void chunk_sums(const Packet* h, const Packet* l, int na, Sums& wide, Sums& wide_err) {
  namespace ei = Eigen::internal;
  constexpr int ps = ei::unpacket_traits<Packet>::size;
  alignas(64) T part[lane_block], err[lane_block];
  for (int i = 0; i < int(lane_block) / ps; ++i) {
    const Packet zero = ei::pset1<Packet>(T(0));
    ei::pstore(part + i * ps, i < na ? ei::psub(h[i], ei::pset1<Packet>(T(1))) : zero);
    ei::pstore(err + i * ps, i < na ? l[i] : zero);
  }
  // A plain loop: compilers vectorise the float-to-double widening, Eigen 3.4's cast does not.
  for (Index j = 0; j < lane_block; ++j) {
    wide(j) = static_cast<acc_t<T>>(part[j]);
    wide_err(j) = static_cast<acc_t<T>>(err[j]);
  }
}

/// Runs f(exp_fn) with pexp_normal when normal, else with pexp_accurate.
template <typename Packet, typename F>
EIGEN_ALWAYS_INLINE void with_packet_exp(bool normal, F&& f) {
  if (normal) {
    f([](const Packet& d) { return pexp_normal(d); });
  } else {
    f([](const Packet& d) { return pexp_accurate(d); });
  }
}

/// lane_block distributions side by side in a stack tile, one column per entry: entry k of
/// distribution j at v[k * lane_block + j]. The callers copy (rows of a column-major
/// matrix) or transpose (short contiguous rows) the distributions in, so the kernel below
/// runs on aligned packets in L1 whatever the layout and stride: a power-of-two column
/// stride would otherwise put every column of a lane block in the same few cache sets.
/// Lanes past the distributions of a partial block hold 0.
template <typename T>
struct lane_tile {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  static constexpr int ps = Eigen::internal::unpacket_traits<Packet>::size;
  static constexpr int packets = int(lane_block) / ps;  // per column
  static_assert(int(lane_block) % ps == 0, "a lane block must be whole packets");

  alignas(64) T v[tile_length<T> * lane_block];
  alignas(64) T m[lane_block];      // the lane maxima, as found
  alignas(64) T lo[lane_block];     // the lane minima, as found (for normal)
  alignas(64) T base[lane_block];   // what each lane's exponent subtracts (see prepare)
  alignas(64) T scale[lane_block];  // softmax: 1 / sum (float) or sum (double); log_softmax:
                                    // log(sum); logsumexp: the result

  T* column(Index k) { return v + k * lane_block; }

  bool finite = true;  // every lane's maximum is finite (set by prepare)

  void set_range(const Packet* mx, const Packet* mn) {
    for (int p = 0; p < packets; ++p) {
      Eigen::internal::pstore(m + p * ps, mx[p]);
      Eigen::internal::pstore(lo + p * ps, mn[p]);
    }
  }

  /// Sets base from the maxima. A lane whose maximum is infinite shifts by 0 instead, and
  /// the regular arithmetic then gives each lane forward_one's result: all -inf sums to 0,
  /// so softmax 0 * (1/0) and log_softmax -inf - log(0) are NaN and logsumexp -inf + log(0)
  /// is -inf; a NaN reaches its lane's sum and makes it NaN. A +inf lane is rewritten to a
  /// distribution with the same result: its +inf entries become 0 and the others -inf (1
  /// there, 0 elsewhere), or NaN throughout when it holds a NaN, or with Limits (softmax,
  /// log_softmax) two +inf. Without the rewrite its exponentials could overflow, and the
  /// compensated sum (tile_exp_sum) of an inf is inf - inf, NaN: logsumexp's m + log(sum)
  /// is then +inf as it should be, or NaN with a NaN.
  template <bool Limits>
  void prepare(Index len) {
    finite = all_finite_bits(m, lane_block);
    if (finite) {
      std::copy(m, m + lane_block, base);
      return;
    }
    const T inf = std::numeric_limits<T>::infinity();
    for (Index j = 0; j < lane_block; ++j) {
      base[j] = is_finite(m[j]) ? m[j] : T(0);
      if (!is_pos_inf(m[j])) continue;
      Index plus_inf = 0;
      bool nan = false;
      for (Index k = 0; k < len; ++k) {
        const T x = v[k * lane_block + j];
        plus_inf += is_pos_inf(x) ? 1 : 0;
        nan = nan || is_nan(x);
      }
      for (Index k = 0; k < len; ++k) {
        T& x = v[k * lane_block + j];
        x = nan || (Limits && plus_inf > 1) ? std::numeric_limits<T>::quiet_NaN()
                                            : (is_pos_inf(x) ? T(0) : -inf);
      }
    }
  }
};

/// (x - base) / T as shift<T> computes it, with the lane's halved base hb.
template <bool Divide, typename T, typename Packet>
EIGEN_ALWAYS_INLINE Packet lane_exponent(const Packet& x, const Packet& hb, const shift<T>& sh) {
  namespace ei = Eigen::internal;
  if constexpr (Divide) {
    return ei::pdiv(ei::psub(ei::pmul(ei::pset1<Packet>(sh.half), x), hb),
                    ei::pset1<Packet>(sh.hT));
  } else {
    return ei::psub(x, hb);
  }
}

/// Per-lane sums s[j] of exp((x - base) / T) over the tile's len columns: lane_chunk
/// columns summed exactly per lane (fast_two_sum, each lane seeded with 1, above every
/// exponential once prepare has set base), then compensated in acc_t<T>, as
/// forward_lanes_online and exp_sum_contiguous do (softmax within 4 ULP, logsumexp 2). With
/// Store the exponentials replace the entries.
template <bool Store, bool Divide, typename T>
void tile_exp_sum(lane_tile<T>& t, Index len, const shift<T>& sh, acc_t<T>* s) {
  namespace ei = Eigen::internal;
  using Tile = lane_tile<T>;
  using Packet = typename Tile::Packet;
  constexpr int ps = Tile::ps, np = Tile::packets;
  Packet hb[np];
  for (int p = 0; p < np; ++p) {
    const Packet b = ei::pload<Packet>(t.base + p * ps);
    hb[p] = sh.template halved<Divide>(b);
  }
  using Sums = Eigen::Array<acc_t<T>, lane_block, 1>;
  compensated_sum<Sums> acc(Sums::Zero());
  Sums wide, wide_err;
  const Packet one = ei::pset1<Packet>(T(1));
  // pexp_normal where every lane's smallest exponent (from the minima the loaders found) is
  // in its range; prepare's rewritten lanes (infinite maxima) keep the checked exp.
  bool normal = t.finite;
  for (int p = 0; p < np && normal; ++p) {
    const Packet d = lane_exponent<Divide>(ei::pload<Packet>(t.lo + p * ps), hb[p], sh);
    normal = !any_outside(d, ei::pset1<Packet>(exp_constants<T>::normal_lo),
                          ei::pset1<Packet>(std::numeric_limits<T>::infinity()));
  }
  for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
    Packet h[np], l[np];
    for (int p = 0; p < np; ++p) {
      h[p] = one;
      l[p] = ei::pset1<Packet>(T(0));
    }
    const Index k1 = std::min(len, k0 + lane_chunk);
    with_packet_exp<Packet>(normal, [&](auto exp_fn) {
      for (Index k = k0; k < k1; ++k) {
        T* c = t.column(k);
        for (int p = 0; p < np; ++p) {
          const Packet e = exp_fn(lane_exponent<Divide>(ei::pload<Packet>(c + p * ps), hb[p], sh));
          if constexpr (Store) ei::pstore(c + p * ps, e);
          fast_two_sum(h[p], l[p], e);
        }
      }
    });
    chunk_sums<T>(h, l, np, wide, wide_err);
    if (len <= lane_chunk) {
      // One chunk: added to the zero compensated sum it is exact, and the total is this.
      Eigen::Map<Sums, Eigen::Aligned> sums(s);
      sums = wide + wide_err;
      return;
    }
    acc.add(wide, wide_err);
  }
  Eigen::Map<Sums, Eigen::Aligned> sums(s);
  sums = acc.total();
}

/// Reads a tile's softmax or log_softmax outputs, a packet at a time, once run() has
/// filled in the per-lane scale.
template <forward_op Op, bool Divide, typename T>
struct tile_output {
  using Tile = lane_tile<T>;
  using Packet = typename Tile::Packet;
  static constexpr int ps = Tile::ps, np = Tile::packets;
  Tile& t;
  const shift<T>& sh;
  Packet hb[np];
  Packet sc[np];

  tile_output(Tile& tile, const shift<T>& s) : t(tile), sh(s) {}

  /// Prepares the tile (maxima in t.m, len columns) and runs the exp-sum pass.
  void run(Index len) {
    namespace ei = Eigen::internal;
    t.template prepare<true>(len);
    alignas(64) acc_t<T> s[lane_block];
    tile_exp_sum<Op == forward_op::softmax, Divide>(t, len, sh, s);
    if constexpr (Op == forward_op::softmax) {
      // float: one reciprocal per lane rounded from the double sum, then multiplies (as
      // forward_one); double: divide.
      for (Index j = 0; j < lane_block; ++j) {
        t.scale[j] = exact_normalise<T> ? static_cast<T>(s[j]) : static_cast<T>(acc_t<T>(1) / s[j]);
      }
    } else {
      using Sums = Eigen::Array<acc_t<T>, lane_block, 1>;
      const Sums log_s = Eigen::Map<const Sums, Eigen::Aligned>(s).log();
      for (Index j = 0; j < lane_block; ++j) t.scale[j] = static_cast<T>(log_s(j));
    }
    for (int p = 0; p < np; ++p) {
      const Packet b = ei::pload<Packet>(t.base + p * ps);
      hb[p] = sh.template halved<Divide>(b);
      sc[p] = ei::pload<Packet>(t.scale + p * ps);
    }
  }

  /// Packet p of output column k.
  EIGEN_ALWAYS_INLINE Packet operator()(Index k, int p) const {
    namespace ei = Eigen::internal;
    const Packet v = ei::pload<Packet>(t.v + k * lane_block + p * ps);
    if constexpr (Op == forward_op::softmax) {
      return exact_normalise<T> ? ei::pdiv(v, sc[p]) : ei::pmul(v, sc[p]);
    } else {
      return ei::psub(lane_exponent<Divide>(v, hb[p], sh), sc[p]);
    }
  }
};

/// Per-lane logsumexp of a filled tile (maxima in t.m) into t.scale.
template <typename T>
void tile_logsumexp(lane_tile<T>& t, Index len) {
  t.template prepare<false>(len);
  alignas(64) acc_t<T> s[lane_block];
  tile_exp_sum<false, false>(t, len, shift<T>(T(0), T(1)), s);
  using Sums = Eigen::Array<acc_t<T>, lane_block, 1>;
  const Sums log_s = Eigen::Map<const Sums, Eigen::Aligned>(s).log();
  for (Index j = 0; j < lane_block; ++j) {
    t.scale[j] = static_cast<T>(static_cast<acc_t<T>>(t.m[j]) + log_s(j));
  }
}

/// Copies nb <= lane_block distributions lying side by side (entry k of distribution j at
/// x[j + k * xk]) into the tile and records their maxima.
template <typename T>
void tile_load_across(lane_tile<T>& t, const T* x, Index xk, Index nb, Index len) {
  namespace ei = Eigen::internal;
  using Tile = lane_tile<T>;
  using Packet = typename Tile::Packet;
  constexpr int ps = Tile::ps, np = Tile::packets;
  Packet mx[np], mn[np];
  for (int p = 0; p < np; ++p) {
    mx[p] = ei::pset1<Packet>(-std::numeric_limits<T>::infinity());
    mn[p] = ei::pset1<Packet>(std::numeric_limits<T>::infinity());
  }
  if (nb == lane_block) {
    for (Index k = 0; k < len; ++k) {
      const T* xc = x + k * xk;
      T* c = t.column(k);
      for (int p = 0; p < np; ++p) {
        const Packet v = ei::ploadu<Packet>(xc + p * ps);
        ei::pstore(c + p * ps, v);
        mx[p] = ei::pmax(v, mx[p]);
        mn[p] = ei::pmin(v, mn[p]);
      }
    }
  } else {
    for (Index k = 0; k < len; ++k) {
      const T* xc = x + k * xk;
      T* c = t.column(k);
      for (int p = 0; p < np; ++p) {
        const Index rest = nb - p * ps;
        const Packet v = rest >= ps ? ei::ploadu<Packet>(xc + p * ps)
                         : rest > 0 ? load_first<Packet>(xc + p * ps, rest, T(0))
                                    : ei::pset1<Packet>(T(0));
        ei::pstore(c + p * ps, v);
        mx[p] = ei::pmax(v, mx[p]);
        mn[p] = ei::pmin(v, mn[p]);
      }
    }
  }
  t.set_range(mx, mn);
}

/// Writes packets f(k, p) to nb distributions side by side (entry k of distribution j at
/// y[j + k * yk]).
template <typename T, typename F>
void tile_store_across(const F& f, T* y, Index yk, Index nb, Index len) {
  namespace ei = Eigen::internal;
  constexpr int ps = lane_tile<T>::ps, np = lane_tile<T>::packets;
  if (nb == lane_block) {
    for (Index k = 0; k < len; ++k) {
      for (int p = 0; p < np; ++p) ei::pstoreu(y + k * yk + p * ps, f(k, p));
    }
    return;
  }
  for (Index k = 0; k < len; ++k) {
    T* yc = y + k * yk;
    for (int p = 0; p < np; ++p) {
      const Index rest = nb - p * ps;
      if (rest >= ps) {
        ei::pstoreu(yc + p * ps, f(k, p));
      } else if (rest > 0) {
        store_first(yc + p * ps, f(k, p), rest);
      }
    }
  }
}

/// Gathers nb <= lane_block distributions of any layout (entry k of distribution j at
/// x[j * xd + k * xk]) into the tile and records their maxima.
template <typename T>
void tile_load_gather(lane_tile<T>& t, const T* x, Index xd, Index xk, Index nb, Index len) {
  namespace ei = Eigen::internal;
  using Tile = lane_tile<T>;
  using Packet = typename Tile::Packet;
  constexpr int ps = Tile::ps, np = Tile::packets;
  for (Index k = 0; k < len; ++k) {
    T* c = t.column(k);
    for (Index j = 0; j < nb; ++j) c[j] = x[j * xd + k * xk];
    for (Index j = nb; j < lane_block; ++j) c[j] = T(0);
  }
  Packet mx[np], mn[np];
  for (int p = 0; p < np; ++p) mx[p] = mn[p] = ei::pload<Packet>(t.v + p * ps);
  for (Index k = 1; k < len; ++k) {
    for (int p = 0; p < np; ++p) {
      const Packet v = ei::pload<Packet>(t.column(k) + p * ps);
      mx[p] = ei::pmax(mx[p], v);
      mn[p] = ei::pmin(mn[p], v);
    }
  }
  t.set_range(mx, mn);
}

/// Scatters packets f(k, p) to nb distributions of any layout.
template <typename T, typename F>
void tile_store_scatter(const F& f, T* y, Index yd, Index yk, Index nb, Index len) {
  namespace ei = Eigen::internal;
  constexpr int ps = lane_tile<T>::ps, np = lane_tile<T>::packets;
  alignas(64) T buf[lane_block];
  for (Index k = 0; k < len; ++k) {
    for (int p = 0; p < np; ++p) ei::pstore(buf + p * ps, f(k, p));
    for (Index j = 0; j < nb; ++j) y[j * yd + k * yk] = buf[j];
  }
}

#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
/// Lane pairs (64 bits) interleaved: unpacklo_pd / unpackhi_pd on float packets.
EIGEN_ALWAYS_INLINE __m512 pairs_lo(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
EIGEN_ALWAYS_INLINE __m512 pairs_hi(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}

/// The 128-bit pieces at r, r + step, r + 2 step and r + 3 step as lane groups 0-3 of one
/// register (float-typed: AVX-512F has the float inserts, the double ones need DQ).
template <typename T>
EIGEN_ALWAYS_INLINE __m512 load_pieces(const T* r, Index step) {
  const auto piece = [](const T* q) {
    if constexpr (std::is_same_v<T, float>) {
      return _mm_loadu_ps(q);
    } else {
      return _mm_castpd_ps(_mm_loadu_pd(q));
    }
  };
  const __m512 v = _mm512_castps128_ps512(piece(r));
  const __m512 v1 = _mm512_insertf32x4(v, piece(r + step), 1);
  const __m512 v2 = _mm512_insertf32x4(v1, piece(r + 2 * step), 2);
  return _mm512_insertf32x4(v2, piece(r + 3 * step), 3);
}

/// The inverse of load_pieces: stores lane group L of p at y + L step, each cut to its
/// first `width` entries of T (a whole piece is 16 / sizeof(T)).
template <typename T>
EIGEN_ALWAYS_INLINE void store_pieces(__m512 p, T* y, Index step, int width) {
  constexpr int whole = 16 / static_cast<int>(sizeof(T));
  const __m128 piece[4] = {_mm512_castps512_ps128(p), _mm512_extractf32x4_ps(p, 1),
                           _mm512_extractf32x4_ps(p, 2), _mm512_extractf32x4_ps(p, 3)};
  const __mmask8 m = static_cast<__mmask8>((1u << width) - 1u);
  for (int L = 0; L < 4; ++L) {
    T* r = y + L * step;
    if constexpr (std::is_same_v<T, float>) {
      if (width == whole) {
        _mm_storeu_ps(r, piece[L]);
      } else {
        _mm_mask_storeu_ps(r, m, piece[L]);
      }
    } else {
      if (width == whole) {
        _mm_storeu_pd(r, _mm_castps_pd(piece[L]));
      } else {
        _mm_mask_storeu_pd(r, m, _mm_castps_pd(piece[L]));
      }
    }
  }
}
#endif

/// Columns per block of piece_columns_load for a packet type; 0: no such loader (Eigen's
/// ptranspose moves whole ps x ps blocks instead).
template <typename Packet>
inline constexpr int piece_columns = 0;

#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
template <>
inline constexpr int piece_columns<Eigen::internal::Packet16f> = 4;
template <>
inline constexpr int piece_columns<Eigen::internal::Packet8d> = 2;

/// The first piece_columns columns of a packet's worth of rows (row j at x + j * xd) as
/// packets c[k] (lane j: row j). Each row packet is put together from four 128-bit loads
/// (lane group L: rows L * w + b, w = piece_columns), so only a transpose within 128-bit
/// lanes is left to shuffles: two per column for float, one for double (plus the 128-bit
/// inserts, which take their operand from memory), where Eigen's ptranspose spends about
/// six per column of a 16 x 16 float block whatever the row length.
EIGEN_ALWAYS_INLINE void piece_columns_load(const float* x, Index xd, __m512* c) {
  __m512 p[4];
  for (int b = 0; b < 4; ++b) p[b] = load_pieces(x + b * xd, 4 * xd);
  const __m512 t0 = _mm512_unpacklo_ps(p[0], p[1]), t1 = _mm512_unpackhi_ps(p[0], p[1]);
  const __m512 t2 = _mm512_unpacklo_ps(p[2], p[3]), t3 = _mm512_unpackhi_ps(p[2], p[3]);
  c[0] = pairs_lo(t0, t2);
  c[1] = pairs_hi(t0, t2);
  c[2] = pairs_lo(t1, t3);
  c[3] = pairs_hi(t1, t3);
}

EIGEN_ALWAYS_INLINE void piece_columns_load(const double* x, Index xd, __m512d* c) {
  const __m512d p0 = _mm512_castps_pd(load_pieces(x, 2 * xd));
  const __m512d p1 = _mm512_castps_pd(load_pieces(x + xd, 2 * xd));
  c[0] = _mm512_unpacklo_pd(p0, p1);
  c[1] = _mm512_unpackhi_pd(p0, p1);
}

/// The inverse of piece_columns_load: writes the first `width` columns of c to the rows,
/// never past column width - 1.
EIGEN_ALWAYS_INLINE void piece_columns_store(const __m512* c, float* y, Index yd, int width) {
  const __m512 t0 = _mm512_unpacklo_ps(c[0], c[1]), t1 = _mm512_unpackhi_ps(c[0], c[1]);
  const __m512 t2 = _mm512_unpacklo_ps(c[2], c[3]), t3 = _mm512_unpackhi_ps(c[2], c[3]);
  const __m512 p[4] = {pairs_lo(t0, t2), pairs_hi(t0, t2), pairs_lo(t1, t3), pairs_hi(t1, t3)};
  for (int b = 0; b < 4; ++b) store_pieces(p[b], y + b * yd, 4 * yd, width);
}

EIGEN_ALWAYS_INLINE void piece_columns_store(const __m512d* c, double* y, Index yd, int width) {
  store_pieces(_mm512_castpd_ps(_mm512_unpacklo_pd(c[0], c[1])), y, 2 * yd, width);
  store_pieces(_mm512_castpd_ps(_mm512_unpackhi_pd(c[0], c[1])), y + yd, 2 * yd, width);
}
#endif

/// Whether piece_columns_load and piece_columns_store take Packet.
template <typename Packet>
inline constexpr bool has_piece_columns = piece_columns<Packet> > 0;

/// Whether the pieces beat ptranspose for rows of len entries (4096 rows, Zen 4): for float
/// up to 64 entries (1.0-1.2x); for double up to 16 (1.0-1.1x), at 32 they were 0.85x.
template <typename T>
bool pieces_pay(Index len) {
  return sizeof(T) == sizeof(float) || len <= 16;
}

/// Transposes lane_block contiguous rows (row j at x + j * xd) into the tile, ps rows at a
/// time through registers (piece_columns_load where there is one, else Eigen's ptranspose),
/// and records their maxima. Loads of a row's last partial packet run into the following
/// rows: callers make sure that memory is part of the input.
template <typename T>
void tile_load_rows(lane_tile<T>& t, const T* x, Index xd, Index len) {
  namespace ei = Eigen::internal;
  using Tile = lane_tile<T>;
  using Packet = typename Tile::Packet;
  constexpr int ps = Tile::ps, np = Tile::packets;
  Packet mx[np], mn[np];
  if constexpr (has_piece_columns<Packet>) {
    if (pieces_pay<T>(len)) {
      constexpr int w = piece_columns<Packet>;
      for (int g = 0; g < np; ++g) {
        const T* xg = x + g * ps * xd;
        // The extrema in registers (arrays indexed by g stay in memory), seeded with
        // column 0 as the transposes below do.
        Packet c[w];
        piece_columns_load(xg, xd, c);
        Packet gmx = c[0], gmn = c[0];
        const auto take = [&](Index k0, int width) {
          for (int i = 0; i < width; ++i) {
            ei::pstore(t.column(k0 + i) + g * ps, c[i]);
            gmx = ei::pmax(gmx, c[i]);
            gmn = ei::pmin(gmn, c[i]);
          }
        };
        for (Index k0 = 0; k0 < len; k0 += w) {
          if (k0 > 0) piece_columns_load(xg + k0, xd, c);
          if (k0 + w <= len) {
            take(k0, w);  // unrolled
          } else {
            take(k0, static_cast<int>(len - k0));
          }
        }
        mx[g] = gmx;
        mn[g] = gmn;
      }
      t.set_range(mx, mn);
      return;
    }
  }
  for (int g = 0; g < np; ++g) {
    const T* xg = x + g * ps * xd;
    Packet gmx = ei::pset1<Packet>(T(0)), gmn = gmx;  // set from column 0 below
    for (Index k0 = 0; k0 < len; k0 += ps) {
      ei::PacketBlock<Packet, ps> b;
      for (int i = 0; i < ps; ++i) b.packet[i] = ei::ploadu<Packet>(xg + i * xd + k0);
      ei::ptranspose(b);
      if (k0 == 0) gmx = gmn = b.packet[0];
      const int width = static_cast<int>(std::min<Index>(ps, len - k0));
      for (int i = 0; i < width; ++i) {
        ei::pstore(t.column(k0 + i) + g * ps, b.packet[i]);
        gmx = ei::pmax(gmx, b.packet[i]);
        gmn = ei::pmin(gmn, b.packet[i]);
      }
    }
    mx[g] = gmx;
    mn[g] = gmn;
  }
  t.set_range(mx, mn);
}

/// Writes packets f(k, p) back to lane_block contiguous rows (row j at y + j * yd),
/// transposing ps rows at a time; never writes past a row's end. With Pieces, through
/// piece_columns_store where it pays (4096 rows, Zen 4: the backward passes of 2-17 entries
/// 1.1-2.2x; float softmax outputs of 9-64 entries 0.9x, so the forward pass gives float
/// ptranspose).
template <bool Pieces, typename T, typename F>
void tile_store_rows(const F& f, T* y, Index yd, Index len) {
  namespace ei = Eigen::internal;
  using Tile = lane_tile<T>;
  using Packet = typename Tile::Packet;
  constexpr int ps = Tile::ps, np = Tile::packets;
  if constexpr (Pieces && has_piece_columns<Packet>) {
    if (pieces_pay<T>(len)) {
      constexpr int w = piece_columns<Packet>;
      for (int g = 0; g < np; ++g) {
        T* yg = y + g * ps * yd;
        for (Index k0 = 0; k0 < len; k0 += w) {
          const int width = static_cast<int>(std::min<Index>(w, len - k0));
          Packet c[w];
          for (int i = 0; i < w; ++i) c[i] = i < width ? f(k0 + i, g) : ei::pset1<Packet>(T(0));
          piece_columns_store(c, yg + k0, yd, width);
        }
      }
      return;
    }
  }
  for (int g = 0; g < np; ++g) {
    T* yg = y + g * ps * yd;
    for (Index k0 = 0; k0 < len; k0 += ps) {
      const int width = static_cast<int>(std::min<Index>(ps, len - k0));
      ei::PacketBlock<Packet, ps> b;
      for (int i = 0; i < ps; ++i) b.packet[i] = i < width ? f(k0 + i, g) : ei::pset1<Packet>(T(0));
      ei::ptranspose(b);
      if (width == ps) {
        for (int i = 0; i < ps; ++i) ei::pstoreu(yg + i * yd + k0, b.packet[i]);
      } else {
        for (int i = 0; i < ps; ++i) store_first(yg + i * yd + k0, b.packet[i], width);
      }
    }
  }
}

/// Runs the softmax or log_softmax tile kernel with `divide` known at compile time; f
/// receives the tile_output.
template <forward_op Op, typename T, typename F>
void with_tile_output(lane_tile<T>& t, Index len, const shift<T>& sh, F&& f) {
  if (sh.divide) {
    tile_output<Op, true, T> out(t, sh);
    out.run(len);
    f(out);
  } else {
    tile_output<Op, false, T> out(t, sh);
    out.run(len);
    f(out);
  }
}

/// log of the first nb <= lane_block lane sums, all through Eigen's vectorised log whatever
/// nb is (an array of nb lanes would take std::log in its tail, whose last bit may differ):
/// a lane's log_softmax and logsumexp then do not depend on how many lanes its kernel holds.
template <typename Sums>
Eigen::Array<typename Sums::Scalar, lane_block, 1> lanes_log(const Sums& s) {
  using Full = Eigen::Array<typename Sums::Scalar, lane_block, 1>;
  Full v = Full::Ones();
  v.head(s.size()) = s;
  return v.log();
}

/// forward_lanes for short distributions without a vectorised exp (long double): max,
/// exp-sum and scaling passes over the columns, on Eigen arrays.
template <forward_op Op, int N, typename T>
void forward_lanes_3pass(const T* x, Index xk, T* y, Index yk, Index nb, Index len, T temperature) {
  using Lanes = Eigen::Array<T, N, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, N, 1, Eigen::ColMajor, lane_block, 1>;
  const auto in = [&](Index k) { return Eigen::Map<const Lanes>(x + k * xk, nb); };
  const auto out = [&](Index k) { return Eigen::Map<Lanes>(y + k * yk, nb); };
  if (len == 0) return;

  Lanes m = in(0);
  for (Index k = 1; k < len; ++k) m = m.max(in(k));
  if (!all_finite(m) || temperature == T(0) || is_pos_inf(temperature)) {
    // Limits and non-finite maxima: handled one distribution at a time.
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

/// Longest distribution whose panels (forward_panel) take the lanes' maxima in a pass of
/// their own before summing, instead of the online normaliser's rescaling (which cost
/// 15% of a panel in exp(old - new) alone): a full panel of up to 16 MiB stays in the
/// last-level cache for the third read (softmax of 1024 float rows, Zen 4, before the
/// stored exponentials: 1.3x at 1000 columns, 1.2x at 2000, 1.1x at 4000; 0.9x at 8000
/// columns and for 256 rows of 16000).
template <typename T>
inline constexpr Index panel_max_first = Index(16384 / sizeof(T));

/// The first pass of forward_lanes_online over nb lanes side by side (element k of lane j
/// at x[j + k * xk]) at a finite positive temperature: each lane's maximum m, minimum lo and
/// compensated sum of exp((x - base) / T), base the lane's maximum where every maximum is
/// finite (`finite`), else 0 where it is not. logsumexp_lanes takes it for long lanes, so
/// that its lanes agree bit for bit with panel_online_sum's.
template <int N, typename T>
struct lanes_online_sums {
  using Lanes = Eigen::Array<T, N, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, N, 1, Eigen::ColMajor, lane_block, 1>;
  const T* x;
  Index xk, nb;
  T temperature;
  shift<T> sh;  // half, hT and divide; the max differs per lane
  Lanes m, lo;
  bool finite = true;  // every lane's running maximum is finite
  compensated_sum<Sums> acc;

  lanes_online_sums(const T* x_, Index xk_, Index nb_, T temperature_)
      : x(x_),
        xk(xk_),
        nb(nb_),
        temperature(temperature_),
        sh(T(0), temperature_),
        m(nb_),
        lo(Lanes::Constant(nb_, std::numeric_limits<T>::infinity())),
        acc(Sums::Zero(nb_)) {}

  Eigen::Map<const Lanes> in(Index k) const { return Eigen::Map<const Lanes>(x + k * xk, nb); }

  Lanes exponent(Index k, const Lanes& hm) const {
    if (sh.divide) return (sh.half * in(k)-hm) / sh.hT;
    return in(k)-hm;
  }

  /// The lanes' halved shift: m itself while every maximum is finite, else 0 where it is not.
  Lanes halved_base() const {
    if (finite) return sh.half * m;
    return sh.half * finite_or_zero(m);
  }

  /// Whether every exponent of lanes with halved bases hm and minima mins lies in
  /// [normal_lo, 0] (monotonic in x; a NaN or -inf minimum fails): exp_normal_op then gives
  /// exp_op's values without its range check.
  bool normal_range(const Lanes& hm, const Lanes& mins) const {
    if constexpr (has_packet_exp<T>) {
      const Lanes d = sh.divide ? Lanes((sh.half * mins - hm) / sh.hT) : Lanes(mins - hm);
      return (d >= exp_constants<T>::normal_lo).all();
    } else {
      return false;
    }
  }

  /// The pass over len > 0 columns. A NaN may or may not survive the max; either way it
  /// reaches the lane's sum.
  void run(Index len) {
    // forward_panel's choice, so that a lane's arithmetic does not depend on the kernel: the
    // maxima first, where the chunks then never rescale.
    const bool max_first = has_packet_exp<T> && len <= panel_max_first<T>;
    if (max_first) {
      m = in(0);
      for (Index k = 1; k < len; ++k) m = m.max(in(k));
      finite = all_finite(m);
    }
    for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
      const Index k1 = std::min(len, k0 + lane_chunk);
      for (Index k = k0 + prefetch_columns; k < std::min(len, k1 + prefetch_columns); ++k) {
        prefetch_lanes(x + k * xk, nb);
      }
      Lanes cm = in(k0), cn = cm;
      for (Index k = k0 + 1; k < k1; ++k) {
        cm = cm.max(in(k));
        cn = cn.min(in(k));
      }
      lo = lo.min(cn);
      const bool clean = finite && all_finite(cm);
      if (max_first) {  // m is final: no lane grows
      } else if (k0 == 0) {
        m = cm;
        finite = clean;
      } else if ((cm > m).any()) {
        const Lanes mn = m.max(cm);
        const Sums d = (m.template cast<acc_t<T>>() - mn.template cast<acc_t<T>>()) /
                       static_cast<acc_t<T>>(temperature);
        if (clean) {
          acc.scale(d.unaryExpr(exp_op<acc_t<T>>()));
        } else {
          // Lanes that did not grow keep their sum (-inf - -inf would be NaN); a lane that
          // leaves -inf scales its zero sum by exp(-inf) = 0.
          acc.scale((cm > m).select(d.unaryExpr(exp_op<acc_t<T>>()), Sums::Ones(nb)));
        }
        m = mn;
        if (!clean) finite = all_finite(m);
      }
      const Lanes hm = halved_base();
      // Seeded with 1, above every exponential of a lane whose maximum is finite (the
      // others hold 0s, or are recomputed by forward_one): fast_two_sum.
      Lanes h = Lanes::Ones(nb), l = Lanes::Zero(nb);
      if (finite && normal_range(hm, cn)) {
        for (Index k = k0; k < k1; ++k) {
          fast_two_sum_lanes(h, l, exponent(k, hm).unaryExpr(exp_normal_op<T>()));
        }
      } else {
        for (Index k = k0; k < k1; ++k) {
          fast_two_sum_lanes(h, l, exponent(k, hm).unaryExpr(exp_op<T>()));
        }
      }
      acc.add((h - T(1)).template cast<acc_t<T>>(), l.template cast<acc_t<T>>());
    }
  }
};

/// forward_lanes for long distributions, in two passes (an online normaliser): the first reads
/// chunks of lane_chunk columns, takes their maximum, rescales the lanes' running sums when it
/// grows (by exp(old - new), in acc_t) and adds the chunk's exponentials; the second writes the
/// outputs. Each chunk is read twice while it is in L1, the whole range only twice: with a
/// power-of-two column stride the slices of all columns share a few cache sets, so a three-pass
/// scheme would fetch every column from L3 three times. Up to panel_max_first entries it takes
/// the lanes' maxima in a walk of their own first, as forward_panel does there, so that no
/// chunk rescales and a lane's bits do not depend on which of the two kernels ran.
/// Non-finite entries keep the block on this path: a lane whose maximum is -inf so far
/// shifts by 0 (its sum stays 0, giving NaN as forward_one does when every entry is -inf), a
/// NaN reaches its lane's sum, and only lanes whose maximum is +inf or NaN are computed
/// by forward_one, before the second pass, which then leaves them alone.
template <forward_op Op, int N, typename T>
void forward_lanes_online(const T* x, Index xk, T* y, Index yk, Index nb, Index len,
                          T temperature) {
  using Pass1 = lanes_online_sums<N, T>;
  using Lanes = typename Pass1::Lanes;
  using Sums = typename Pass1::Sums;
  const auto out = [&](Index k) { return Eigen::Map<Lanes>(y + k * yk, nb); };
  if (len == 0) return;
  if (temperature == T(0) || is_pos_inf(temperature)) {
    for (Index j = 0; j < nb; ++j) forward_one<Op>(x + j, xk, y + j, yk, len, temperature);
    return;
  }
  Pass1 p(x, xk, nb, temperature);
  p.run(len);
  const Lanes& m = p.m;

  // Pass 2.
  const Sums s = p.acc.total();
  const Lanes hm = p.halved_base();
  // +inf and NaN maxima: those lanes one at a time, before the pass below overwrites x
  // when y is x; the pass then keeps what forward_one wrote there.
  Eigen::Array<bool, N, 1, Eigen::ColMajor, lane_block, 1> special(nb);
  bool any_special = false;
  for (Index j = 0; j < special.size(); ++j) {
    special(j) = !p.finite && !is_finite(m(j)) && !is_neg_inf(m(j));
    if (special(j)) {
      any_special = true;
      forward_one<Op>(x + j, xk, y + j, yk, len, temperature);
    }
  }
  const auto write = [&](Index k, const auto& value) {
    if (k + prefetch_columns < len) {
      prefetch_lanes(x + (k + prefetch_columns) * xk, nb);
      prefetch_lanes(y + (k + prefetch_columns) * yk, nb, true);
    }
    if (any_special) {
      out(k) = special.select(out(k), value);
    } else {
      out(k) = value;
    }
  };
  if constexpr (Op == forward_op::softmax) {
    // One loop per exp functor; exponent's temporary lives through each full expression.
    const auto pass = [&](auto exp_fn) {
      if constexpr (exact_normalise<T>) {
        const Lanes total = s.template cast<T>();
        for (Index k = 0; k < len; ++k) write(k, p.exponent(k, hm).unaryExpr(exp_fn) / total);
      } else {
        const Lanes inv = s.inverse().template cast<T>();
        for (Index k = 0; k < len; ++k) write(k, p.exponent(k, hm).unaryExpr(exp_fn) * inv);
      }
    };
    if (p.finite && p.normal_range(hm, p.lo)) {
      pass(exp_normal_op<T>());
    } else {
      pass(exp_op<T>());
    }
  } else {
    const Lanes log_s = lanes_log(s).head(nb).template cast<T>();
    for (Index k = 0; k < len; ++k) write(k, p.exponent(k, hm) - log_s);
  }
}

/// softmax or log_softmax of nb <= lane_block distributions that lie side by side in memory:
/// element k of distribution j is x[j + k * xk] (and y[j + k * yk]). This is the layout of
/// rows of a column-major matrix; each step reads one contiguous column slice, so the
/// distributions are vectorised across instead of gathered with a large stride.
/// N is lane_block for full blocks, Eigen::Dynamic (capacity lane_block) for the rest.
template <forward_op Op, int N, typename T>
void forward_lanes(const T* x, Index xk, T* y, Index yk, Index nb, Index len, T temperature) {
  if (temperature == T(0) || is_pos_inf(temperature)) {
    // The limits: rare, one distribution at a time.
    for (Index j = 0; j < nb; ++j) forward_one<Op>(x + j, xk, y + j, yk, len, temperature);
    return;
  }
  if constexpr (has_packet_exp<T>) {
    if (len <= tile_length<T>) {
      // Copied into an L1 tile, then three passes on aligned packets.
      lane_tile<T> t;
      tile_load_across(t, x, xk, nb, len);
      with_tile_output<Op>(t, len, shift<T>(T(0), temperature),
                           [&](const auto& f) { tile_store_across<T>(f, y, yk, nb, len); });
    } else {
      forward_lanes_online<Op, N>(x, xk, y, yk, nb, len, temperature);
    }
    return;
  }
  if (len <= lanes_three_pass_max) {
    forward_lanes_3pass<Op, N>(x, xk, y, yk, nb, len, temperature);
  } else {
    forward_lanes_online<Op, N>(x, xk, y, yk, nb, len, temperature);
  }
}

/// forward_lanes over count distributions side by side, lane_block at a time.
template <forward_op Op, typename T>
void forward_blocks(const T* x, Index xk, T* y, Index yk, Index count, Index len, T temperature) {
  Index j = 0;
  for (; j + lane_block <= count; j += lane_block) {
    forward_lanes<Op, int(lane_block)>(x + j, xk, y + j, yk, lane_block, len, temperature);
  }
  if (j < count)
    forward_lanes<Op, Eigen::Dynamic>(x + j, xk, y + j, yk, count - j, len, temperature);
}

/// Most distributions a panel kernel takes side by side: a 4 KiB column slice. Each step of a
/// panel walks one column slice of all its lanes, so the rows of a column-major matrix of up
/// to this many rows stream through memory in address order, where hardware prefetchers
/// follow; blocks of lane_block rows would read two cache lines of every column per pass,
/// which with a power-of-two stride also share a few cache sets.
template <typename T>
inline constexpr Index panel_max = Index(4096 / sizeof(T));

/// The state of a panel's exp-sum passes for nb <= panel_max lanes: each lane's maximum, and
/// per lane block a compensated sum of exp((x - max) / T).
template <typename T>
struct panel_state {
  using Sums = Eigen::Array<acc_t<T>, lane_block, 1>;
  alignas(64) T m[panel_max<T>];
  alignas(64) T lo[panel_max<T>];  // each lane's minimum
  compensated_sum<Sums> acc[panel_max<T> / lane_block];
  bool normal = true;  // every exponent of the panel lies in [normal_lo, 0]
  // Lanes whose maximum is +inf or NaN (panel_exp_sum), given lane_tile::prepare's
  // results: fix[j] is 0 for the others; 1 where +inf entries read as 0 and the rest as -inf
  // (so their exponentials are 1 and 0); 2 where every entry reads as NaN. Such a lane
  // shifts by 0 and computes what it may, then fixed() replaces it, so that the other
  // lanes keep the unchecked exp. rewrite: some lane is.
  alignas(64) T fix[panel_max<T>];
  bool rewrite = false;

  /// Settles fix for the lanes marked (fix[j] != 0) among nb lanes whose entry k is at
  /// x[j + k * xk]: 2 where the lane holds a NaN or, with Limits (softmax, log_softmax),
  /// two +inf; else 1. One walk over the columns for them all: a walk per lane would read a
  /// cache line for each of its entries.
  template <bool Limits>
  void settle_fix(const T* x, Index xk, Index nb, Index len) {
    std::uint16_t marked[panel_max<T>];  // lanes; fix[j] counts +inf from 1, -1 after a NaN
    Index n = 0;
    for (Index j = 0; j < nb; ++j) {
      if (fix[j] != T(0)) marked[n++] = static_cast<std::uint16_t>(j);
    }
    for (Index k = 0; k < len; ++k) {
      for (Index i = 0; i < n; ++i) {
        const T v = x[marked[i] + k * xk];
        T& f = fix[marked[i]];
        if (f > T(0)) f = is_nan(v) ? T(-1) : f + (is_pos_inf(v) ? T(1) : T(0));
      }
    }
    for (Index i = 0; i < n; ++i) {
      T& f = fix[marked[i]];
      f = f < T(0) || (Limits && f > T(2)) ? T(2) : T(1);
    }
    rewrite = n > 0;
  }

  /// r for the lanes j0 on that fix leaves alone; for the others hot where the entry v is
  /// +inf and cold elsewhere, or NaN.
  template <typename Packet>
  EIGEN_ALWAYS_INLINE Packet fixed(Index j0, const Packet& v, const Packet& r, T hot,
                                   T cold) const {
    namespace ei = Eigen::internal;
    const Packet f = ei::pload<Packet>(fix + j0), zero = ei::pset1<Packet>(T(0));
    const Packet inf = ei::pset1<Packet>(std::numeric_limits<T>::infinity());
    const Packet lane =
        ei::pselect(ei::pcmp_eq(v, inf), ei::pset1<Packet>(hot), ei::pset1<Packet>(cold));
    const Packet nan = ei::pset1<Packet>(std::numeric_limits<T>::quiet_NaN());
    return ei::pselect(ei::pcmp_eq(f, zero), r,
                       ei::pselect(ei::pcmp_eq(f, ei::pset1<Packet>(T(1))), lane, nan));
  }

  /// Adds a lane block's chunk sums (Fast2Sum pairs h, l with h seeded with 1) to block b.
  template <typename Packet>
  void add(Index b, const Packet* h, const Packet* l, int na) {
    Sums wide, wide_err;
    chunk_sums<T>(h, l, na, wide, wide_err);
    acc[b].add(wide, wide_err);
  }

  /// The lanes' halved bases (see shift) for lane j0 on, a packet.
  template <bool Divide, typename Packet>
  EIGEN_ALWAYS_INLINE Packet base(Index j0, const shift<T>& sh) const {
    return sh.template halved<Divide>(Eigen::internal::pload<Packet>(m + j0));
  }
};

/// Packet i of the nb lanes at p: a plain load when whole, else the first lanes and 0.
template <typename Packet, typename T>
EIGEN_ALWAYS_INLINE Packet load_lanes(const T* p, int i, Index nb) {
  constexpr int ps = Eigen::internal::unpacket_traits<Packet>::size;
  const Index rest = nb - Index(i) * ps;
  return rest >= ps ? Eigen::internal::ploadu<Packet>(p + i * ps)
                    : load_first<Packet>(p + i * ps, rest, T(0));
}

/// The online normaliser over a panel (the first pass of forward_lanes_online, on packets):
/// chunks of lane_chunk columns of each lane block are copied to an L1 buffer while their
/// maxima and minima are taken; a lane whose maximum grows rescales its sum by exp(old - new)
/// in acc_t; the chunk's exponentials are summed exactly per lane (Fast2Sum seeded with 1),
/// then compensated in acc_t. The checked exp runs only on chunks reaching below normal_lo.
/// A lane whose maximum turns +inf or NaN gets st.fix as in panel_exp_sum (its sums are then
/// of no use: panel_factors and fixed() give its results). Returns false where some lane is
/// all -inf so far: the callers then take the lane-block kernels. A NaN may slip past the
/// maxima; it reaches its lane's sum.
template <bool Divide, bool Limits, typename T>
bool panel_online_sum(const T* x, Index xk, Index nb, Index len, const shift<T>& sh, T temperature,
                      panel_state<T>& st) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  using A = acc_t<T>;
  using Sums = typename panel_state<T>::Sums;
  constexpr int ps = ei::unpacket_traits<Packet>::size;
  constexpr int np = int(lane_block) / ps;
  const Index blocks = (nb + lane_block - 1) / lane_block;
  const Packet inf = ei::pset1<Packet>(std::numeric_limits<T>::infinity());
  const Packet lo_limit = ei::pset1<Packet>(exp_constants<T>::normal_lo);
  alignas(64) T buf[lane_chunk * lane_block];
  alignas(64) T grown[lane_block];
  for (Index b = 0; b < blocks; ++b) st.acc[b] = compensated_sum<Sums>(Sums::Zero());
  st.normal = true;
  st.rewrite = false;
  const int packets = static_cast<int>((nb + ps - 1) / ps);
  for (int i = 0; i < packets; ++i) ei::pstore(st.fix + i * ps, ei::pset1<Packet>(T(0)));

  for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
    const Index k1 = std::min(len, k0 + lane_chunk);
    for (Index b = 0; b < blocks; ++b) {
      const Index j0 = b * lane_block, nbj = std::min(lane_block, nb - j0);
      const int na = static_cast<int>((nbj + ps - 1) / ps);  // packets holding lanes
      const T* xb = x + j0;
      for (Index k = k1; k < std::min(len, 2 * k1 - k0); ++k) prefetch_lanes(xb + k * xk, nbj);
      Packet cm[np], cn[np];
      for (int i = 0; i < na; ++i) {
        cm[i] = cn[i] = load_lanes<Packet>(xb + k0 * xk, i, nbj);
        ei::pstore(buf + i * ps, cm[i]);
      }
      for (Index k = k0 + 1; k < k1; ++k) {
        for (int i = 0; i < na; ++i) {
          const Packet v = load_lanes<Packet>(xb + k * xk, i, nbj);
          ei::pstore(buf + (k - k0) * lane_block + i * ps, v);
          cm[i] = ei::pmax(cm[i], v);
          cn[i] = ei::pmin(cn[i], v);
        }
      }
      bool grow = k0 == 0;
      for (int i = 0; i < na && !grow; ++i) {
        grow = any_outside(cm[i], ei::pnegate(inf), ei::pload<Packet>(st.m + j0 + i * ps));
      }
      if (grow) {
        for (int i = 0; i < na; ++i) {
          ei::pstore(grown + i * ps,
                     k0 == 0 ? cm[i] : ei::pmax(cm[i], ei::pload<Packet>(st.m + j0 + i * ps)));
        }
        for (Index j = 0; j < nbj; ++j) {
          if (is_finite(grown[j])) continue;
          if (is_neg_inf(grown[j])) return false;
          st.fix[j0 + j] = T(1);  // settled after the pass
          grown[j] = T(0);        // any finite shift: the lane's sums go unused
        }
        if (k0 > 0) {
          Sums d = Sums::Zero();
          for (Index j = 0; j < nbj; ++j) {
            d(j) = (static_cast<A>(st.m[j0 + j]) - static_cast<A>(grown[j])) /
                   static_cast<A>(temperature);
          }
          st.acc[b].scale(d.unaryExpr(exp_op<A>()));
        }
        std::copy(grown, grown + na * ps, st.m + j0);
      }
      Packet hb[np], h[np], l[np];
      bool normal = true;  // this chunk's exponents, from the maxima so far
      for (int i = 0; i < na; ++i) {
        hb[i] = st.template base<Divide, Packet>(j0 + i * ps, sh);
        normal = normal && !any_outside(lane_exponent<Divide>(cn[i], hb[i], sh), lo_limit, inf);
        T* lo = st.lo + j0 + i * ps;
        ei::pstore(lo, k0 == 0 ? cn[i] : ei::pmin(cn[i], ei::pload<Packet>(lo)));
        h[i] = ei::pset1<Packet>(T(1));
        l[i] = ei::pset1<Packet>(T(0));
      }
      with_packet_exp<Packet>(normal, [&](auto exp_fn) {
        for (Index k = 0; k < k1 - k0; ++k) {
          for (int i = 0; i < na; ++i) {
            const Packet v = ei::pload<Packet>(buf + k * lane_block + i * ps);
            fast_two_sum(h[i], l[i], exp_fn(lane_exponent<Divide>(v, hb[i], sh)));
          }
        }
      });
      st.add(b, h, l, na);
    }
  }
  st.template settle_fix<Limits>(x, xk, nb, len);
  for (Index j = 0; j < nb && st.rewrite; ++j) {
    if (st.fix[j] != T(0)) st.m[j] = st.lo[j] = T(0);  // not the other lanes' exp range
  }
  // The output pass shifts by the final maxima: its exponents reach lower than the chunks'.
  for (int i = 0; i < packets && st.normal; ++i) {
    const Packet d = lane_exponent<Divide>(ei::pload<Packet>(st.lo + i * ps),
                                           st.template base<Divide, Packet>(i * ps, sh), sh);
    st.normal = !any_outside(d, lo_limit, inf);
  }
  return true;
}

/// A panel's sums in two passes: the lanes' maxima (and minima, for st.normal) in one walk,
/// then exp((x - max) / T) of each chunk of lane_chunk columns summed as panel_online_sum
/// does; up to panel_max_first entries the same arithmetic as logsumexp_lanes and
/// forward_lanes_online, so a lane's result does not depend on its neighbours taking those
/// kernels. With Store the exponentials go to y (column k of lane j at y[j + k * yk], which
/// may be x). A lane whose maximum is +inf or NaN gets st.fix (the lane tile's prepare<Limits>
/// results), where the whole panel used to go to the lane blocks (1024 x 1000 floats with
/// one +inf row, softmax: 0.96 G/s that way, 2.05 now).
template <bool Divide, bool Store, bool Limits, typename T>
void panel_exp_sum(const T* x, Index xk, Index nb, Index len, const shift<T>& sh,
                   panel_state<T>& st, T* y = nullptr, Index yk = 0) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  using Sums = typename panel_state<T>::Sums;
  constexpr int ps = ei::unpacket_traits<Packet>::size;
  constexpr int np = int(lane_block) / ps;
  const Index blocks = (nb + lane_block - 1) / lane_block;
  const int packets = static_cast<int>((nb + ps - 1) / ps);
  T* lo = st.lo;
  for (int i = 0; i < packets; ++i) {
    const Packet v = load_lanes<Packet>(x, i, nb);
    ei::pstore(st.m + i * ps, v);
    ei::pstore(lo + i * ps, v);
  }
  // Four columns per visit of the running extrema: one store each per four column packets.
  Index k = 1;
  for (; k + 4 <= len; k += 4) {
    const T* xc = x + k * xk;
    for (int i = 0; i < packets; ++i) {
      const Packet v0 = load_lanes<Packet>(xc, i, nb), v1 = load_lanes<Packet>(xc + xk, i, nb);
      const Packet v2 = load_lanes<Packet>(xc + 2 * xk, i, nb);
      const Packet v3 = load_lanes<Packet>(xc + 3 * xk, i, nb);
      const Packet mx = ei::pmax(ei::pmax(v0, v1), ei::pmax(v2, v3));
      const Packet mn = ei::pmin(ei::pmin(v0, v1), ei::pmin(v2, v3));
      ei::pstore(st.m + i * ps, ei::pmax(ei::pload<Packet>(st.m + i * ps), mx));
      ei::pstore(lo + i * ps, ei::pmin(ei::pload<Packet>(lo + i * ps), mn));
    }
  }
  for (; k < len; ++k) {
    for (int i = 0; i < packets; ++i) {
      const Packet v = load_lanes<Packet>(x + k * xk, i, nb);
      ei::pstore(st.m + i * ps, ei::pmax(ei::pload<Packet>(st.m + i * ps), v));
      ei::pstore(lo + i * ps, ei::pmin(ei::pload<Packet>(lo + i * ps), v));
    }
  }
  st.rewrite = false;
  for (int i = 0; i < packets; ++i) ei::pstore(st.fix + i * ps, ei::pset1<Packet>(T(0)));
  for (Index j = 0; j < nb; ++j) {
    // A lane of -inf (a fully masked row) shifts by 0, as forward_lanes_online's does: its
    // sum is 0 and its results those of forward_one (NaN; logsumexp 0 + log(0) = -inf),
    // and its neighbours keep the panel. So does a rewritten lane.
    if (is_neg_inf(st.m[j])) {
      st.m[j] = T(0);
    } else if (!is_finite(st.m[j])) {
      st.fix[j] = T(1);
      st.m[j] = T(0);
      st.lo[j] = T(0);  // not the other lanes' exp range
    }
  }
  st.template settle_fix<Limits>(x, xk, nb, len);
  st.normal = true;
  const Packet inf = ei::pset1<Packet>(std::numeric_limits<T>::infinity());
  for (int i = 0; i < packets; ++i) {
    const Packet d = lane_exponent<Divide>(ei::pload<Packet>(lo + i * ps),
                                           st.template base<Divide, Packet>(i * ps, sh), sh);
    st.normal = st.normal && !any_outside(d, ei::pset1<Packet>(exp_constants<T>::normal_lo), inf);
  }
  for (Index b = 0; b < blocks; ++b) st.acc[b] = compensated_sum<Sums>(Sums::Zero());
  const auto pass = [&](auto rewrite) {
    with_packet_exp<Packet>(st.normal, [&](auto exp_fn) {
      for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
        const Index k1 = std::min(len, k0 + lane_chunk);
        const auto block = [&](Index b, auto na, auto nbj) {
          const Index j0 = b * lane_block;
          Packet hb[np], h[np], l[np];
          for (int i = 0; i < na; ++i) {
            hb[i] = st.template base<Divide, Packet>(j0 + i * ps, sh);
            h[i] = ei::pset1<Packet>(T(1));
            l[i] = ei::pset1<Packet>(T(0));
          }
          for (Index k = k0; k < k1; ++k) {
            for (int i = 0; i < na; ++i) {
              const Packet v = load_lanes<Packet>(x + k * xk + j0, i, nbj);
              Packet e = exp_fn(lane_exponent<Divide>(v, hb[i], sh));
              if constexpr (decltype(rewrite)::value) e = st.fixed(j0 + i * ps, v, e, T(1), T(0));
              if constexpr (Store) {
                T* to = y + k * yk + j0 + i * ps;
                const Index rest = nbj - Index(i) * ps;
                if (rest >= ps) {
                  ei::pstoreu(to, e);
                } else {
                  store_first(to, e, rest);
                }
              }
              fast_two_sum(h[i], l[i], e);
            }
          }
          st.add(b, h, l, na);
        };
        for (Index b = 0; b < blocks; ++b) {
          const Index nbj = std::min(lane_block, nb - b * lane_block);
          if (nbj == lane_block) {
            block(b, std::integral_constant<int, np>(),
                  std::integral_constant<Index, lane_block>());
          } else {
            block(b, static_cast<int>((nbj + ps - 1) / ps), nbj);
          }
        }
      }
    });
  };
  if (st.rewrite) {
    pass(std::true_type());
  } else {
    pass(std::false_type());
  }
}

/// The panel's per-lane output factors into sc: 1 / sum rounded from acc_t (float) or the
/// sum (double) for softmax, as forward_one; log(sum) for log_softmax. Lanes past nb: 1, 0.
template <forward_op Op, typename T>
void panel_factors(const panel_state<T>& st, Index nb, T* sc) {
  using A = acc_t<T>;
  for (Index b = 0; b * lane_block < nb; ++b) {
    typename panel_state<T>::Sums s = st.acc[b].total();
    for (Index j = nb - b * lane_block; j < lane_block; ++j) s(j) = A(1);  // lanes past nb
    if constexpr (Op == forward_op::log_softmax) s = lanes_log(s);
    for (Index j = 0; j < lane_block; ++j) {
      if constexpr (Op == forward_op::softmax) {
        sc[b * lane_block + j] =
            exact_normalise<T> ? static_cast<T>(s(j)) : static_cast<T>(A(1) / s(j));
      } else {
        sc[b * lane_block + j] = static_cast<T>(s(j));
      }
    }
  }
  // A fixed lane's sum counts its one +inf (as the lane tile's), or is NaN: set here, as
  // panel_online_sum leaves such sums unused.
  for (Index j = 0; j < nb && st.rewrite; ++j) {
    if (st.fix[j] != T(0)) {
      sc[j] = st.fix[j] == T(2)           ? std::numeric_limits<T>::quiet_NaN()
              : Op == forward_op::softmax ? T(1)
                                          : T(0);
    }
  }
}

/// Writes f(j, packet of x) for each column slice of nb lanes, packet by packet; with
/// `stream` (stream_pays), through non-temporal stores where every whole packet of y starts
/// a 64-byte line (AVX-512).
template <typename Packet, typename T, typename F>
EIGEN_ALWAYS_INLINE void panel_write(const T* x, Index xk, T* y, Index yk, Index nb, Index len,
                                     F&& f, bool stream = false) {
  constexpr Index ps = Eigen::internal::unpacket_traits<Packet>::size;
  const Index whole = nb / ps * ps;
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (ps * Index(sizeof(T)) == 64) {
    if (stream && reinterpret_cast<std::uintptr_t>(y) % 64 == 0 &&
        (yk * Index(sizeof(T))) % 64 == 0) {
      for (Index k = 0; k < len; ++k) {
        const T* xc = x + k * xk;
        T* yc = y + k * yk;
        for (Index j = 0; j < whole; j += ps) {
          stream_packet(yc + j, f(j, Eigen::internal::ploadu<Packet>(xc + j)));
        }
        if (whole < nb) {
          store_first(yc + whole, f(whole, load_first<Packet>(xc + whole, nb - whole, T(0))),
                      nb - whole);
        }
      }
      _mm_sfence();
      return;
    }
  }
#else
  (void)stream;
#endif
  for (Index k = 0; k < len; ++k) {
    const T* xc = x + k * xk;
    T* yc = y + k * yk;
    for (Index j = 0; j < whole; j += ps) {
      Eigen::internal::pstoreu(yc + j, f(j, Eigen::internal::ploadu<Packet>(xc + j)));
    }
    if (whole < nb) {
      store_first(yc + whole, f(whole, load_first<Packet>(xc + whole, nb - whole, T(0))),
                  nb - whole);
    }
  }
}

/// Largest softmax panel whose exp-sum pass stores its exponentials for the output pass to
/// scale, instead of that pass computing them again, while x and y stay in the last-level
/// cache (float, Zen 4: 1.05x at 1024x1000, 1.2x at 4096x200; 0.8x at 1024x3000, 12 MiB).
inline constexpr Index panel_store_bytes = Index(4) << 20;

/// softmax or log_softmax of nb <= panel_max distributions side by side (as forward_lanes),
/// finite positive temperature, len > 0; forward_lanes_online's arithmetic, so a lane's
/// result does not depend on its neighbours taking that kernel. Up to panel_max_first
/// entries: the maxima, then the exp-sum pass (storing softmax's exponentials in y when the
/// panel is at most panel_store_bytes), then the output pass; longer: the online
/// normaliser, then an output pass computing the exponentials again. Returns false, having
/// written nothing, where past panel_max_first entries some lane's first lane_chunk
/// entries are all -inf (see panel_online_sum).
template <forward_op Op, bool Divide, typename T>
bool forward_panel(const T* x, Index xk, T* y, Index yk, Index nb, Index len, T temperature,
                   bool stream) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  const shift<T> sh(T(0), temperature);  // half, hT; the maxima are per lane
  panel_state<T> st;
  alignas(64) T sc[panel_max<T>];
  const auto factor = [&](Index j) { return ei::pload<Packet>(sc + j); };
  constexpr bool softmax = Op == forward_op::softmax;
  const auto normalise = [&](Index j, const Packet& e) {
    return exact_normalise<T> ? ei::pdiv(e, factor(j)) : ei::pmul(e, factor(j));
  };
  if (softmax && len <= panel_max_first<T> && nb * len * Index(sizeof(T)) <= panel_store_bytes) {
    panel_exp_sum<Divide, true, true>(x, xk, nb, len, sh, st, y, yk);
    panel_factors<Op>(st, nb, sc);
    panel_write<Packet>(y, yk, y, yk, nb, len, normalise);
    return true;
  }
  if (len <= panel_max_first<T>) {
    panel_exp_sum<Divide, false, true>(x, xk, nb, len, sh, st);
  } else if (!panel_online_sum<Divide, true>(x, xk, nb, len, sh, temperature, st)) {
    return false;
  }
  panel_factors<Op>(st, nb, sc);
  const auto output = [&](auto rewrite) {
    with_packet_exp<Packet>(st.normal, [&](auto exp_fn) {
      panel_write<Packet>(
          x, xk, y, yk, nb, len,
          [&](Index j, const Packet& v) {
            constexpr bool fix = decltype(rewrite)::value;
            const Packet d = lane_exponent<Divide>(v, st.template base<Divide, Packet>(j, sh), sh);
            if constexpr (softmax) {
              const Packet e = exp_fn(d);
              return normalise(j, fix ? st.fixed(j, v, e, T(1), T(0)) : e);
            } else {
              const T minus_inf = -std::numeric_limits<T>::infinity();
              return ei::psub(fix ? st.fixed(j, v, d, T(0), minus_inf) : d, factor(j));
            }
          },
          stream && !softmax);  // softmax streamed measured 3 % slower (256 x 32000 float)
    });
  };
  if (st.rewrite) {
    output(std::true_type());
  } else {
    output(std::false_type());
  }
  return true;
}

#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
/// Longest distributions the register kernel below takes: every entry of a packet's worth
/// of them held in zmm registers, within one chunk of tile_exp_sum's exact lane sums
/// (lane_chunk). Float softmax and log_softmax outputs of 13-16 entries leave too few
/// registers (4096 rows of 16: 0.98 / 0.95x the tile); logsumexp keeps no outputs (1.12x
/// at 16).
template <bool Lse>
inline constexpr Index register_rows_max = Lse ? lane_chunk : 12;

/// The lanes of a packet that are not finite, +inf or NaN (on the bits: -ffinite-math-only
/// cannot fold them away).
EIGEN_ALWAYS_INLINE __mmask16 nonfinite_lanes(__m512 v) {
  const __m512i e = _mm512_set1_epi32(0x7f800000);
  return _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), e), e);
}
EIGEN_ALWAYS_INLINE __mmask8 nonfinite_lanes(__m512d v) {
  const __m512i e = _mm512_set1_epi64(0x7ff0000000000000);
  return _mm512_cmpeq_epi64_mask(_mm512_and_si512(_mm512_castpd_si512(v), e), e);
}
EIGEN_ALWAYS_INLINE __mmask16 plus_inf_lanes(__m512 v) {
  return _mm512_cmpeq_epi32_mask(_mm512_castps_si512(v), _mm512_set1_epi32(0x7f800000));
}
EIGEN_ALWAYS_INLINE __mmask8 plus_inf_lanes(__m512d v) {
  return _mm512_cmpeq_epi64_mask(_mm512_castpd_si512(v), _mm512_set1_epi64(0x7ff0000000000000));
}
EIGEN_ALWAYS_INLINE __mmask16 nan_lanes(__m512 v) {
  const __m512i a = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff));
  return _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7f800000));
}
EIGEN_ALWAYS_INLINE __mmask8 nan_lanes(__m512d v) {
  const __m512i a = _mm512_and_si512(_mm512_castpd_si512(v), _mm512_set1_epi64(0x7fffffffffffffff));
  return _mm512_cmpgt_epi64_mask(a, _mm512_set1_epi64(0x7ff0000000000000));
}
/// b where m is set, a elsewhere.
EIGEN_ALWAYS_INLINE __m512 blend_lanes(__mmask16 m, __m512 a, __m512 b) {
  return _mm512_mask_blend_ps(m, a, b);
}
EIGEN_ALWAYS_INLINE __m512d blend_lanes(__mmask8 m, __m512d a, __m512d b) {
  return _mm512_mask_blend_pd(m, a, b);
}
EIGEN_ALWAYS_INLINE __m512 zero_lanes(__m512 v, __mmask16 m) {
  return _mm512_mask_mov_ps(v, m, _mm512_setzero_ps());
}
EIGEN_ALWAYS_INLINE __m512d zero_lanes(__m512d v, __mmask8 m) {
  return _mm512_mask_mov_pd(v, m, _mm512_setzero_pd());
}

/// lane_tile::prepare's rewrite of the lanes whose maximum is +inf, on columns c[0..len):
/// +inf entries become 0 and the others -inf, or NaN throughout when the lane holds a NaN
/// or, with Limits, two +inf.
template <bool Limits, int K, typename P, typename M>
EIGEN_ALWAYS_INLINE void rewrite_plus_inf_lanes(P* c, int len, M lanes) {
  namespace ei = Eigen::internal;
  using T = typename ei::unpacket_traits<P>::type;
  M one = 0, two = 0, nan = 0;
  for (int k = 0; k < K; ++k) {
    if (k < len) {
      const M i = plus_inf_lanes(c[k]);
      two = M(two | (one & i));
      one = M(one | i);
      nan = M(nan | nan_lanes(c[k]));
    }
  }
  const M bad = M(lanes & (Limits ? M(nan | two) : nan));
  const P minus_inf = ei::pset1<P>(-std::numeric_limits<T>::infinity());
  const P zero = ei::pset1<P>(T(0)), qnan = ei::pset1<P>(std::numeric_limits<T>::quiet_NaN());
  for (int k = 0; k < K; ++k) {
    if (k < len) {
      const P r = blend_lanes(bad, blend_lanes(plus_inf_lanes(c[k]), minus_inf, zero), qnan);
      c[k] = blend_lanes(lanes, c[k], r);
    }
  }
}

/// The forward ops of a packet's worth (ps) of distributions of len <= K entries, entirely
/// in registers: the lane tile's operations in the same order, so the same bits, without
/// its round trips through L1 and its per-block setup (4096 distributions of 10 floats,
/// softmax: contiguous rows 1.40 -> 1.48 G/s, side by side 1.87 -> 2.67; rows of 8, 0.94 ->
/// 1.64). Across: side by side (entry k of distribution j at x[j + k * xs]); else
/// contiguous rows (row j at x + j * xs) transposed through piece_columns_load, whose loads
/// reach entry K - 1 of each row. Non-finite maxima are handled as the tile's prepare
/// handles them. logsumexp writes lse[j * os].
template <bool Lse, forward_op Op, bool Divide, int K, bool Across, typename T>
EIGEN_ALWAYS_INLINE void register_rows(const T* x, Index xs, T* y, Index ys, int len,
                                       const shift<T>& sh, T* lse, Index os) {
  namespace ei = Eigen::internal;
  using P = typename lane_tile<T>::Packet;
  constexpr int ps = lane_tile<T>::ps, w = piece_columns<P>;
  static_assert(K % w == 0, "whole piece columns");
  P c[K];
  if constexpr (Across) {
    for (int k = 0; k < K; ++k) c[k] = k < len ? ei::ploadu<P>(x + k * xs) : c[0];
  } else {
    for (int k = 0; k < K; k += w) piece_columns_load(x + k, xs, c + k);
  }
  P mx = c[0], mn = c[0];
  for (int k = 0; k < K; ++k) {
    if (k < len) {
      mx = ei::pmax(mx, c[k]);
      mn = ei::pmin(mn, c[k]);
    }
  }
  // As the tile's prepare: a lane whose maximum is not finite shifts by 0 and takes the
  // checked exp, a +inf one once rewritten (logsumexp's mx + log(sum) is then +inf or NaN).
  const auto nonfinite = nonfinite_lanes(mx);
  if (nonfinite != 0) {
    const auto plus_inf = plus_inf_lanes(mx);
    if (plus_inf != 0) rewrite_plus_inf_lanes<!Lse, K>(c, len, plus_inf);
  }
  const P hb = sh.template halved<Divide>(zero_lanes(mx, nonfinite));
  const bool normal =
      nonfinite == 0 &&
      !any_outside(lane_exponent<Divide>(mn, hb, sh), ei::pset1<P>(exp_constants<T>::normal_lo),
                   ei::pset1<P>(std::numeric_limits<T>::infinity()));
  const P one = ei::pset1<P>(T(1));
  P h = one, l = ei::pset1<P>(T(0));
  constexpr bool Soft = !Lse && Op == forward_op::softmax;
  with_packet_exp<P>(normal, [&](auto exp_fn) {
    for (int k = 0; k < K; ++k) {
      if (k < len) {
        const P d = lane_exponent<Divide>(c[k], hb, sh);
        const P ek = exp_fn(d);
        fast_two_sum(h, l, ek);
        c[k] = Soft ? ek : d;
      }
    }
  });
  // The lane sums (h - 1) + l in acc_t, then the per-lane result r: as chunk_sums,
  // tile_exp_sum and tile_output form them (float: in double, a half packet at a time).
  P r;
  if constexpr (std::is_same_v<T, float>) {
    const auto lo = [](P v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); };
    const auto hi = [](P v) {
      return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    };
    const auto join = [](__m512d a, __m512d b) {
      return _mm512_castpd_ps(
          _mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(a))),
                             _mm256_castps_pd(_mm512_cvtpd_ps(b)), 1));
    };
    const P part = ei::psub(h, one);
    const __m512d s0 = _mm512_add_pd(lo(part), lo(l)), s1 = _mm512_add_pd(hi(part), hi(l));
    if constexpr (Lse) {
      r = join(_mm512_add_pd(lo(mx), ei::plog(s0)), _mm512_add_pd(hi(mx), ei::plog(s1)));
    } else if constexpr (Soft) {
      const __m512d d1 = _mm512_set1_pd(1.0);
      r = join(_mm512_div_pd(d1, s0), _mm512_div_pd(d1, s1));  // 1 / sum
    } else {
      r = join(ei::plog(s0), ei::plog(s1));
    }
  } else {
    const P s = ei::padd(ei::psub(h, one), l);
    r = Lse ? ei::padd(mx, ei::plog(s)) : Soft ? s : ei::plog(s);
  }
  if constexpr (Lse) {
    if (os == 1) {
      ei::pstoreu(lse, r);
    } else {
      alignas(64) T buf[ps];
      ei::pstore(buf, r);
      for (int j = 0; j < ps; ++j) lse[j * os] = buf[j];
    }
    return;
  }
  // Entries past len are computed but stored nowhere.
  for (int k = 0; k < K; ++k) {
    if constexpr (!Soft) {
      c[k] = ei::psub(c[k], r);
    } else if constexpr (exact_normalise<T>) {
      c[k] = ei::pdiv(c[k], r);
    } else {
      c[k] = ei::pmul(c[k], r);
    }
  }
  if constexpr (Across) {
    for (int k = 0; k < K; ++k) {
      if (k < len) ei::pstoreu(y + k * ys, c[k]);
    }
  } else {
    for (int k = 0; k < K; k += w) piece_columns_store(c + k, y + k, ys, std::min(w, len - k));
  }
}

/// f(std::integral_constant<int, K>) for the least multiple K of W that is >= len (at most
/// Most, which len does not exceed).
template <int W, int Most, int K = W, typename F>
EIGEN_ALWAYS_INLINE Index with_register_columns(Index len, const F& f) {
  if constexpr (K >= Most) {
    return f(std::integral_constant<int, Most>());
  } else {
    if (len <= K) return f(std::integral_constant<int, K>());
    return with_register_columns<W, Most, K + W>(len, f);
  }
}

/// Runs register_rows over groups of ps distributions: all whole groups when Across, else
/// the groups of rows whose loads stay within the input (entries up to K - 1 of each row;
/// the last rows are left to the caller). Returns the distributions done. softmax and
/// log_softmax write y (ys as xs), logsumexp lse[j * os]. Kept out of line: inside
/// forward_short_rows it slowed the tile loop there by 5-8% (log_softmax, 4096 float rows
/// of 13-20).
template <bool Lse, forward_op Op, bool Across, typename T>
EIGEN_DONT_INLINE Index register_rows_run(const T* x, Index xs, T* y, Index ys, Index count,
                                          Index len, T temperature, T* lse, Index os) {
  const shift<T> sh(T(0), temperature);
  using P = typename lane_tile<T>::Packet;
  constexpr int ps = lane_tile<T>::ps, w = piece_columns<P>;
  // Distribution j0 starts at x + j0 * step (and y + j0 * ystep).
  const Index step = Across ? 1 : xs, ystep = Across ? 1 : ys;
  const auto run = [&](auto divide, auto columns) {
    constexpr bool D = decltype(divide)::value;
    constexpr int K = decltype(columns)::value;
    const Index last = (count - 1) * xs + len;  // rows: one past the input's last entry
    Index end = 0;
    while (end + ps <= count && (Across || (end + ps - 1) * xs + K <= last)) end += ps;
    const auto group = [&](Index j0) {
      // Only the output in use is offset (the other is null).
      T* const yj = Lse ? y : y + j0 * ystep;
      T* const lj = Lse ? lse + j0 * os : lse;
      register_rows<Lse, Op, D, K, Across>(x + j0 * step, xs, yj, ys, static_cast<int>(len), sh, lj,
                                           os);
    };
    // A group's loads wait for the stores of the groups before it still in flight when
    // their addresses match in the low 12 bits (4 KiB aliasing). Side by side, output
    // 16-112 bytes past the input modulo 4 KiB ran 1.43-1.61 G/s forwards against 2.2-2.5
    // backwards (4096 x 10 floats; backwards is as slow 16-112 bytes before), so such
    // outputs walk the groups backwards. Contiguous rows ran 1.51-1.54 at every gap tried
    // (steps of 128 bytes).
    const Index group_bytes = ps * static_cast<Index>(sizeof(T));
    const Index gap = Lse || !Across ? 0
                                     : static_cast<Index>((reinterpret_cast<std::uintptr_t>(y) -
                                                           reinterpret_cast<std::uintptr_t>(x)) &
                                                          4095u);
    if (gap > 0 && gap <= 3 * group_bytes) {
      for (Index j0 = end; j0 > 0;) group(j0 -= ps);
    } else {
      for (Index j0 = 0; j0 < end; j0 += ps) group(j0);
    }
    return end;
  };
  constexpr int most = static_cast<int>(register_rows_max<Lse>) / w * w;
  if (sh.divide) {
    return with_register_columns<w, most>(len, [&](auto k) { return run(std::true_type(), k); });
  }
  return with_register_columns<w, most>(len, [&](auto k) { return run(std::false_type(), k); });
}

/// Whether the register kernels take T: float, and double side by side (forward_across).
/// Double rows and double logsumexp stay on the tile: 4096 x 10, rows: softmax 0.76 ->
/// 0.73 G/s, log_softmax 0.74 -> 0.66; side by side: softmax 0.85 -> 0.99, log_softmax 0.81
/// -> 0.84, logsumexp 0.98 -> 0.97.
template <typename T, bool Across>
inline constexpr bool has_register_rows = std::is_same_v<T, float> ||
                                          (Across && std::is_same_v<T, double>);
#endif

/// softmax or log_softmax of count distributions side by side (see forward_lanes): panels
/// for distributions longer than a lane tile, lane blocks otherwise (and for a panel that
/// holds a non-finite maximum).
template <forward_op Op, typename T>
void forward_across(const T* x, Index xk, T* y, Index yk, Index count, Index len, T temperature,
                    bool stream = false) {
#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
  if constexpr (has_register_rows<T, true>) {
    if (len <= register_rows_max<false> && temperature != T(0) && !is_pos_inf(temperature)) {
      const Index done = register_rows_run<false, Op, true>(x, xk, y, yk, count, len, temperature,
                                                            static_cast<T*>(nullptr), 0);
      if (done < count)
        forward_blocks<Op>(x + done, xk, y + done, yk, count - done, len, temperature);
      return;
    }
  }
#endif
  if constexpr (has_packet_exp<T>) {
    if (len > tile_length<T> && temperature != T(0) && !is_pos_inf(temperature)) {
      for (Index j = 0; j < count; j += panel_max<T>) {
        const Index nb = std::min(panel_max<T>, count - j);
        const bool done =
            temperature == T(1)
                ? forward_panel<Op, false>(x + j, xk, y + j, yk, nb, len, temperature, stream)
                : forward_panel<Op, true>(x + j, xk, y + j, yk, nb, len, temperature, stream);
        if (!done) forward_blocks<Op>(x + j, xk, y + j, yk, nb, len, temperature);
      }
      return;
    }
  }
  forward_blocks<Op>(x, xk, y, yk, count, len, temperature);
}

/// Longest distribution the short-row path transposes into its tile: rows up to this
/// length are too short for forward_one to run at full speed one at a time.
template <typename T>
inline constexpr Index short_length = Index(8192 / sizeof(T)) / lane_block;

/// softmax or log_softmax of count short distributions stored one after another (element k
/// of distribution j at x[j * xd + k * xk]): one distribution is too short to fill a vector
/// register, so blocks of lane_block of them are gathered into a stack tile and
/// vectorised across, as in forward_lanes.
template <forward_op Op, typename T>
void forward_short(const T* x, Index xd, Index xk, T* y, Index yd, Index yk, Index count, Index len,
                   T temperature) {
  if constexpr (has_packet_exp<T>) {
    if (temperature != T(0) && !is_pos_inf(temperature)) {
      const shift<T> sh(T(0), temperature);
      lane_tile<T> t;
      for (Index j0 = 0; j0 < count; j0 += lane_block) {
        const Index nb = std::min(lane_block, count - j0);
        tile_load_gather(t, x + j0 * xd, xd, xk, nb, len);
        with_tile_output<Op>(t, len, sh, [&](const auto& f) {
          tile_store_scatter<T>(f, y + j0 * yd, yd, yk, nb, len);
        });
      }
      return;
    }
  }
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

/// Short contiguous rows (element k of row j at x[j * xd + k], xd >= len, and the same for
/// y): blocks of lane_block rows are transposed into the tile in registers (Eigen's
/// ptranspose), run through the tile kernel and transposed back. Loads of a row's last
/// partial packet run into the following rows, so the last rows (whose loads would leave
/// the matrix) are left to the caller: returns the number of rows done.
template <forward_op Op, typename T>
Index forward_short_rows(const T* x, Index xd, T* y, Index yd, Index count, Index len,
                         T temperature) {
  if constexpr (!has_packet_exp<T>) {
    return 0;
  } else {
    constexpr int ps = lane_tile<T>::ps;
    if (len == 0 || len > short_length<T> || temperature == T(0) || is_pos_inf(temperature)) {
      return 0;
    }
#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
    if constexpr (has_register_rows<T, false>) {
      if (len <= register_rows_max<false>) {
        return register_rows_run<false, Op, false>(x, xd, y, yd, count, len, temperature,
                                                   static_cast<T*>(nullptr), 0);
      }
    }
#endif
    const shift<T> sh(T(0), temperature);
    lane_tile<T> t;
    const Index padded = (len + ps - 1) / ps * ps;
    // Last element read for block j0: row j0 + lane_block - 1, up to its padded length.
    const Index last = (count - 1) * xd + len;  // one past the last element of x
    Index j0 = 0;
    for (; j0 + lane_block <= count && (j0 + lane_block - 1) * xd + padded <= last;
         j0 += lane_block) {
      tile_load_rows(t, x + j0 * xd, xd, len);
      with_tile_output<Op>(t, len, sh, [&](const auto& f) {
        tile_store_rows<!std::is_same_v<T, float>>(f, y + j0 * yd, yd, len);
      });
    }
    return j0;
  }
}

/// logsumexp of short contiguous rows (as forward_short_rows): out[j * os] for the rows
/// done, which are returned (a multiple of lane_block).
template <typename T>
Index logsumexp_short_rows(const T* x, Index xd, Index count, Index len, T* out, Index os) {
  if constexpr (!has_packet_exp<T>) {
    return 0;
  } else {
    constexpr int ps = lane_tile<T>::ps;
    if (len == 0 || len > short_length<T>) return 0;
#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
    if constexpr (has_register_rows<T, false>) {
      if (len <= register_rows_max<true>)
        return register_rows_run<true, forward_op::softmax, false>(x, xd, static_cast<T*>(nullptr),
                                                                   0, count, len, T(1), out, os);
    }
#endif
    lane_tile<T> t;
    const Index padded = (len + ps - 1) / ps * ps;
    const Index last = (count - 1) * xd + len;
    Index j0 = 0;
    for (; j0 + lane_block <= count && (j0 + lane_block - 1) * xd + padded <= last;
         j0 += lane_block) {
      tile_load_rows(t, x + j0 * xd, xd, len);
      tile_logsumexp(t, len);
      for (Index j = 0; j < lane_block; ++j) out[(j0 + j) * os] = t.scale[j];
    }
    return j0;
  }
}

/// logsumexp of nb <= lane_block distributions side by side (element k of distribution j
/// at x[j + k * xk], the rows of a column-major matrix) into out[j * os]. A lane whose
/// maximum is not finite shifts by 0: m + log(sum) is then -inf (all -inf) or NaN (a NaN
/// anywhere), as logsumexp_one gives; a +inf lane is +inf unless it holds a NaN. Past
/// panel_max_first entries the sums come from the online normaliser (lanes_online_sums),
/// as logsumexp_batch's panels take panel_online_sum there.
template <int N, typename T>
void logsumexp_lanes(const T* x, Index xk, Index nb, Index len, T* out, Index os) {
  using Lanes = Eigen::Array<T, N, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, N, 1, Eigen::ColMajor, lane_block, 1>;
  const auto in = [&](Index k) { return Eigen::Map<const Lanes>(x + k * xk, nb); };
  if (len == 0) {
    for (Index j = 0; j < nb; ++j) out[j * os] = -std::numeric_limits<T>::infinity();
    return;
  }
  if constexpr (has_packet_exp<T>) {
    if (len <= tile_length<T>) {
      lane_tile<T> t;
      tile_load_across(t, x, xk, nb, len);
      tile_logsumexp(t, len);
      for (Index j = 0; j < nb; ++j) out[j * os] = t.scale[j];
      return;
    }
  }
  Lanes m;
  Sums total;
  if (has_packet_exp<T> && len > panel_max_first<T>) {
    // The online normaliser, as logsumexp_batch's panels take these lengths: one read of
    // the columns instead of two.
    lanes_online_sums<N, T> p(x, xk, nb, T(1));
    p.run(len);
    m = p.m;
    total = p.acc.total();
  } else {
    m = in(0);
    for (Index k = 1; k < len; ++k) m = m.max(in(k));
    const Lanes base = finite_or_zero(m);
    compensated_sum<Sums> acc(Sums::Zero(nb));
    for (Index k0 = 0; k0 < len; k0 += lane_chunk) {
      Lanes h = Lanes::Ones(nb), l = Lanes::Zero(nb);
      for (Index k = k0; k < std::min(len, k0 + lane_chunk); ++k) {
        fast_two_sum_lanes(h, l, (in(k)-base).unaryExpr(exp_op<T>()));
      }
      acc.add((h - T(1)).template cast<acc_t<T>>(), l.template cast<acc_t<T>>());
    }
    total = acc.total();
  }
  const Sums r = m.template cast<acc_t<T>>() + lanes_log(total).head(nb);
  for (Index j = 0; j < m.size(); ++j) {
    // A +inf lane's exponentials may overflow, and its compensated sum is then inf - inf.
    out[j * os] = !is_pos_inf(m(j))         ? static_cast<T>(r(j))
                  : has_nan(x + j, len, xk) ? std::numeric_limits<T>::quiet_NaN()
                                            : m(j);
  }
}

/// logsumexp_lanes over count distributions side by side, lane_block at a time.
template <typename T>
void logsumexp_blocks(const T* x, Index xk, Index count, Index len, T* out, Index os) {
  Index d = 0;
  for (; d + lane_block <= count; d += lane_block) {
    logsumexp_lanes<int(lane_block)>(x + d, xk, lane_block, len, out + d * os, os);
  }
  if (d < count) logsumexp_lanes<Eigen::Dynamic>(x + d, xk, count - d, len, out + d * os, os);
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
    if constexpr (has_packet_exp<T>) {
      if (len > tile_length<T>) {
        for (; d < count; d += panel_max<T>) {
          const Index nb = std::min(panel_max<T>, count - d);
          panel_state<T> st;
          const shift<T> sh(T(0), T(1));
          // Long distributions: the online normaliser reads the columns once, not twice
          // (256 x 32000 float: 1.24 -> 2.06 G/s), as logsumexp_lanes does there.
          bool done = true;
          if (len > panel_max_first<T>) {
            done = panel_online_sum<false, false>(x + d, xk, nb, len, sh, T(1), st);
          } else {
            panel_exp_sum<false, false, false>(x + d, xk, nb, len, sh, st);
          }
          if (done) {
            for (Index b = 0; b * lane_block < nb; ++b) {
              const auto log_s = lanes_log(st.acc[b].total());
              for (Index j = b * lane_block; j < std::min(nb, (b + 1) * lane_block); ++j) {
                out[(d + j) * os] =
                    static_cast<T>(static_cast<acc_t<T>>(st.m[j]) + log_s(j - b * lane_block));
                // A rewritten lane (a +inf maximum): +inf, or NaN where it holds a NaN.
                if (st.rewrite && st.fix[j] != T(0)) {
                  out[(d + j) * os] = st.fix[j] == T(1) ? std::numeric_limits<T>::infinity()
                                                        : std::numeric_limits<T>::quiet_NaN();
                }
              }
            }
          } else {
            logsumexp_blocks(x + d, xk, nb, len, out + d * os, os);
          }
        }
        return;
      }
    }
#if defined(EIGEN_VECTORIZE_AVX512) && defined(__AVX512VL__)
    if constexpr (has_register_rows<T, false>) {
      if (len <= register_rows_max<true>) {
        d = register_rows_run<true, forward_op::softmax, true>(x, xk, static_cast<T*>(nullptr), 0,
                                                               count, len, T(1), out, os);
      }
    }
#endif
    if (d < count) logsumexp_blocks(x + d, xk, count - d, len, out + d * os, os);
    return;
  }
  if (xk == 1 && xd >= len && count > 1) d = logsumexp_short_rows(x, xd, count, len, out, os);
  for (; d < count; ++d) out[d * os] = logsumexp_one(x + d * xd, xk, len);
}

/// The granularity at which a batch may be split across threads (for_each_range): whole
/// lane blocks where the kernels run distributions side by side (strided distributions, short
/// rows), single distributions where they take them one at a time, so that a batch of 16
/// rows of a million entries still splits.
template <typename T>
Index split_align(Index xd, Index xk, Index len) {
  const bool side_by_side = (xk != 1 && xd == 1) || (xk == 1 && len <= short_length<T>);
  return side_by_side ? lane_block : Index(1);
}

/// sum_i a[i] * b[i] (sum_i a[i] when b is null) over n contiguous floats, each widened to
/// double first, so every product is exact and the sum carries double rounding only.
/// Eigen 3.4 does not vectorise float-to-double casts; this does, where the target has them.
inline double wide_dot(const float* a, const float* b, Index n) {
  Index i = 0;
  double s = 0;
#if defined(EIGEN_VECTORIZE_AVX512)
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  // W's conversions called directly: through function pointers GCC 12 left them out of
  // line, a call per packet (4096 rows of 16 / 20 floats, softmax_backward: 1.49 / 0.96
  // against 2.70 / 2.05 G/s).
  using W = widening<Eigen::internal::Packet16f>;
  for (; i + 16 <= n; i += 16) {
    const __m512 va = _mm512_loadu_ps(a + i);
    if (b != nullptr) {
      const __m512 vb = _mm512_loadu_ps(b + i);
      s0 = _mm512_fmadd_pd(W::lo(va), W::lo(vb), s0);
      s1 = _mm512_fmadd_pd(W::hi(va), W::hi(vb), s1);
    } else {
      s0 = _mm512_add_pd(s0, W::lo(va));
      s1 = _mm512_add_pd(s1, W::hi(va));
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

/// dot_compensated's state, a step at a time, for callers that interleave a row's sum with
/// other work (packet_rows_backward_stream_t): add_step(a, b, i) for i = 0, step, ... while
/// i + step <= n, then finish from the first entry not stepped over.
struct dot_compensated_acc {
  using Packet = typename Eigen::internal::packet_traits<double>::type;
  static constexpr bool vectorised = Eigen::internal::packet_traits<double>::Vectorizable;
  static constexpr Index ps = Eigen::internal::unpacket_traits<Packet>::size;
  static constexpr Index step = vectorised ? 2 * ps : 1;
  Packet h0 = Eigen::internal::pset1<Packet>(0.0), h1 = h0, l0 = h0, l1 = h0;

  EIGEN_ALWAYS_INLINE static Packet term(const double* a, const double* b, Index k) {
    namespace ei = Eigen::internal;
    const Packet va = ei::ploadu<Packet>(a + k);
    return b == nullptr ? va : rounded_apart(ei::pmul(va, ei::ploadu<Packet>(b + k)));
  }
  EIGEN_ALWAYS_INLINE void add_step(const double* a, const double* b, Index i) {
    two_sum(h0, l0, term(a, b, i));
    two_sum(h1, l1, term(a, b, i + ps));
  }
  /// Adds the steps' sums and entries i.. to acc.
  template <typename Acc>
  void finish(const double* a, const double* b, Index i, Index n, Acc& acc) {
    namespace ei = Eigen::internal;
    if constexpr (vectorised) {
      if (i + ps <= n) {
        two_sum(h0, l0, term(a, b, i));
        i += ps;
      }
      two_sum(h0, l0, h1);
      alignas(64) double buf[ps];
      ei::pstore(buf, h0);
      for (Index j = 0; j < ps; ++j) acc.add(buf[j]);
      acc.add(0.0, ei::predux(ei::padd(l0, l1)));
    }
    for (; i < n; ++i) acc.add(b == nullptr ? a[i] : rounded_apart(a[i] * b[i]));
  }
};

/// Adds sum_i a[i] * b[i] (sum_i a[i] when b is null) over n contiguous doubles to acc,
/// each rounded product through TwoSum: dy - <dy, y> cancels (softmax_backward), which
/// exposes every rounding of a plain sum of the products (up to 15 ULP of the gradient's
/// scale). The products' own roundings stay: together at most half an ULP of sum |a b|.
template <typename Acc>
void dot_compensated(const double* a, const double* b, Index n, Acc& acc) {
  dot_compensated_acc d;
  Index i = 0;
  if constexpr (dot_compensated_acc::vectorised) {
    for (; i + dot_compensated_acc::step <= n; i += dot_compensated_acc::step) d.add_step(a, b, i);
  }
  d.finish(a, b, i, n, acc);
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
          s += static_cast<double>(a[k * as]) *
               (b == nullptr ? 1.0 : static_cast<double>(b[k * bs]));
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
/// than such a row. Float products from 16 entries on take wide_dot (dot_blocks' own sum of
/// such a row): 4096 rows of 16 / 32 entries, softmax_backward 1.6x / 2.2x. The sums of
/// dy alone stay in order, as backward_short_rows' lanes sum them.
template <typename T>
acc_t<T> short_dot(const T* a, const T* b, Index n) {
  if constexpr (!exact_normalise<T>) {
    if (b != nullptr && n >= 16) return wide_dot(a, b, n);
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

/// (dy - exp(logy) * s) / T on packets: one short row, or a column of rows in
/// backward_short_rows (the same operations, so the same bits).
template <typename Packet, typename T>
EIGEN_ALWAYS_INLINE Packet log_softmax_backward_packet(const Packet& logy, const Packet& dy,
                                                       const Packet& s, T temperature) {
  namespace ei = Eigen::internal;
  const Packet v = ei::psub(dy, ei::pmul(pexp_accurate(logy), s));
  return temperature == T(1) ? v : ei::pdiv(v, ei::pset1<Packet>(temperature));
}

/// One packet of a backward pass from y (log y when Log), dy and the distribution's sum g
/// (<y, dy>, or sum dy when Log): softmax_backward_one's and log_softmax_backward_one's
/// operations, lane by lane.
template <bool Log, typename Packet, typename T>
EIGEN_ALWAYS_INLINE Packet backward_packet(const Packet& yv, const Packet& dv, const Packet& g,
                                           T temperature) {
  namespace ei = Eigen::internal;
  if constexpr (Log) {
    return log_softmax_backward_packet(yv, dv, g, temperature);
  } else {
    const Packet d = ei::psub(dv, g);
    if (temperature == T(1)) return ei::pmul(yv, d);
    const Packet t = ei::pset1<Packet>(temperature);
    if (temperature > T(1)) return ei::pdiv(ei::pmul(yv, d), t);
    // Below T = 1: divide first unless (dy - g) / T overflows (softmax_backward_one).
    const Packet q = ei::pdiv(d, t);
    return ei::pselect(ei::pcmp_le(ei::pabs(q), ei::pset1<Packet>(std::numeric_limits<T>::max())),
                       ei::pmul(yv, q), ei::pdiv(ei::pmul(yv, d), t));
  }
}

#if defined(EIGEN_VECTORIZE_AVX512)
/// Where the packets of a block of lane_block dense rows (row j at j * len) take their rows'
/// sums from: lane i of flat packet q belongs to row r = (q ps + i) / len, found at lane
/// r - base[q] of the two sum packets from base[q] on (the rows of one packet span at most
/// ps + 1 of them). log_softmax_backward then writes such a block as it lies, a packet at
/// a time, and never transposes log y (4096 rows of 10, Zen 4, through the tiles: float 1.6
/// against 0.93 G/s, double 0.78 against 0.59; packet_rows_backward has since taken float
/// rows below 16). The forward passes measured slower that way: one broadcast more per
/// packet for log_softmax, the exponentials again for softmax (float 1.09 / 1.13 against
/// 1.12 / 1.40 G/s).
template <typename T>
struct dense_sums_plan {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  using Lane = std::conditional_t<std::is_same_v<T, float>, std::int32_t, std::int64_t>;
  static constexpr int ps = Eigen::internal::unpacket_traits<Packet>::size;
  static constexpr int packets_max = int(lane_block * backward_short_max) / ps;
  static_assert(int(lane_block) >= 2 * ps, "two sum packets must fit in a lane block");

  alignas(64) Lane idx[packets_max][ps];
  int base[packets_max];
  int packets;  // lane_block * len / ps: a block's packets

  explicit dense_sums_plan(Index len) : packets(static_cast<int>(lane_block * len) / ps) {
    Index row = 0, col = 0;  // of flat position q * ps + i, stepped without divisions
    for (int q = 0; q < packets; ++q) {
      base[q] = static_cast<int>(std::min<Index>(row / ps, lane_block / ps - 2) * ps);
      for (int i = 0; i < ps; ++i) {
        idx[q][i] = static_cast<Lane>(row - base[q]);
        if (++col == len) {
          col = 0;
          ++row;
        }
      }
    }
  }

  /// Packet q's lanes of the rows' sums g[0..lane_block).
  EIGEN_ALWAYS_INLINE Packet sums(const T* g, int q) const {
    namespace ei = Eigen::internal;
    const __m512i i = _mm512_load_si512(idx[q]);
    const Packet a = ei::pload<Packet>(g + base[q]), b = ei::pload<Packet>(g + base[q] + ps);
    if constexpr (std::is_same_v<T, float>) {
      return _mm512_permutex2var_ps(a, i, b);
    } else {
      return _mm512_permutex2var_pd(a, i, b);
    }
  }
};

/// The backward pass of a block of lane_block dense rows as it lies (whole packets), from
/// the rows' sums g[0..lane_block); out may alias y or dy exactly.
template <bool Log, typename T>
EIGEN_ALWAYS_INLINE void dense_block_backward(const T* y, const T* dy, T* out,
                                              const dense_sums_plan<T>& plan, const T* g,
                                              T temperature) {
  namespace ei = Eigen::internal;
  using Packet = typename dense_sums_plan<T>::Packet;
  constexpr int ps = dense_sums_plan<T>::ps;
  for (int q = 0; q < plan.packets; ++q) {
    ei::pstoreu(out + q * ps, backward_packet<Log>(ei::ploadu<Packet>(y + q * ps),
                                                   ei::ploadu<Packet>(dy + q * ps), plan.sums(g, q),
                                                   temperature));
  }
}
#endif

#if defined(EIGEN_VECTORIZE_AVX512)
/// Float rows of up to packet_row_max entries, up to four packets each (AVX-512). A row's
/// sum (<y, dy>, or sum dy when Log) is taken in double in a fixed tree: each packet's two
/// halves widened (softmax: the exact products) and added lane by lane, the packets' 8
/// lanes added in order, then halves of 4, 2 and 1 lanes. One row (packet_row_sum) and four
/// side by side (packet_rows_sum4) run the same additions, so a row's gradient does not
/// depend on its neighbours. The loops they replace spent their time in a chain of
/// dependent double adds (4096 rows of 10 / 20: 1.26 / 2.05 G/s), or in Eigen's
/// expressions and their scalar tails (33 / 40: 1.37 / 1.56). log_softmax takes up to two
/// packets, but not rows of 17-19 (packet_rows_take): there the second exponential, on a
/// mostly empty packet, costs more than backward_short_rows' tiles, which run whole ones
/// (4096 rows of 17 / 20 / 24 / 28 / 32, tiles against packets: 1.78 / 1.86 / 1.89 / 1.91 /
/// 1.96 against 1.60 / 1.88 / 2.23 / 2.50 / 2.85 G/s).
template <bool Log>
inline constexpr Index packet_row_max = Log ? 32 : 64;
inline constexpr int packet_row_packets = 4;  // packet_row_max<false> / 16

/// Whether float rows of n > 0 entries take the packet rows (else the tiles or longer rows'
/// code).
template <bool Log>
constexpr bool packet_rows_take(Index n) {
  return n <= packet_row_max<Log> && (!Log || n <= 16 || n >= 20);
}

/// The 8 double terms of a row's sum before the tree, from its np packets. Half: the last
/// packet holds at most 8 entries (half_last), so its upper half is zeros and is not
/// widened: Zen 4 runs the conversions and the extraction of the upper half at half the
/// rate of the other operations (4096 rows, softmax_backward, 3 / 17 floats: 0.71 / 2.22
/// -> 0.82-0.98 / 2.8 G/s; log_softmax_backward of 3: 0.98 -> 1.42).
template <bool Log, bool Half = false>
EIGEN_ALWAYS_INLINE __m512d packet_row_terms(const __m512* yv, const __m512* dv, int np) {
  using W = widening<Eigen::internal::Packet16f>;
  __m512d t = _mm512_setzero_pd();
  for (int k = 0; k < np; ++k) {
    __m512d u;
    if (Half && k == np - 1) {
      u = Log ? W::lo(dv[k]) : _mm512_mul_pd(W::lo(yv[k]), W::lo(dv[k]));
    } else {
      u = Log ? _mm512_add_pd(W::lo(dv[k]), W::hi(dv[k]))
              : _mm512_add_pd(_mm512_mul_pd(W::lo(yv[k]), W::lo(dv[k])),
                              _mm512_mul_pd(W::hi(yv[k]), W::hi(dv[k])));
    }
    t = k == 0 ? u : _mm512_add_pd(t, u);
  }
  return t;
}

/// Whether the last packet of a row of n > 0 entries holds at most 8 of them.
constexpr bool half_last(Index n) { return (n - 1) % 16 < 8; }

/// The tree over one row's terms.
EIGEN_ALWAYS_INLINE double packet_row_sum(const __m512d t) {
  const __m256d t4 = _mm256_add_pd(_mm512_castpd512_pd256(t), _mm512_extractf64x4_pd(t, 1));
  const __m128d t2 = _mm_add_pd(_mm256_castpd256_pd128(t4), _mm256_extractf128_pd(t4, 1));
  return _mm_cvtsd_f64(_mm_add_pd(t2, _mm_unpackhi_pd(t2, t2)));
}

/// The tree over four rows' terms at once: row r's sum in lane 2 r.
EIGEN_ALWAYS_INLINE __m512d packet_rows_sum4(const __m512d* t) {
  // [row a lanes 0-3, row b lanes 0-3] + [lanes 4-7 of a, of b]: each row's 4-lane step.
  const auto halves = [](const __m512d a, const __m512d b) {
    return _mm512_add_pd(_mm512_shuffle_f64x2(a, b, 0x44), _mm512_shuffle_f64x2(a, b, 0xEE));
  };
  const __m512d u01 = halves(t[0], t[1]), u23 = halves(t[2], t[3]);
  // 128-bit pieces: [0 of row 0, 0 of row 1, 0 of 2, 0 of 3] + [1 of 0, 1 of 1, ...].
  const __m512d v =
      _mm512_add_pd(_mm512_shuffle_f64x2(u01, u23, 0x88), _mm512_shuffle_f64x2(u01, u23, 0xDD));
  return _mm512_add_pd(v, _mm512_permute_pd(v, 0x55));
}

/// The lanes of packet k of a row of n entries.
EIGEN_ALWAYS_INLINE __mmask16 packet_row_mask(Index n, int k) {
  const Index r = n - 16 * k;
  return r >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << r) - 1u);
}

/// The NP packets of a row of n <= NP ps entries from p, zeros past its end; the last
/// partial packet through load_first, so no load reaches past the row.
template <typename Packet, int NP, typename T>
EIGEN_ALWAYS_INLINE void load_row_packets(const T* p, Index n, Packet* v) {
  constexpr Index ps = Eigen::internal::unpacket_traits<Packet>::size;
  for (int k = 0; k < NP; ++k) {
    const Index r = n - ps * k;
    v[k] = r >= ps ? Eigen::internal::ploadu<Packet>(p + ps * k)
                   : load_first<Packet>(p + ps * k, r, T(0));
  }
}

/// packet_row_backward for rows of NP packets.
template <bool Log, int NP>
EIGEN_ALWAYS_INLINE void packet_row_backward_np(const float* y, const float* dy, float* out,
                                                Index n, float temperature) {
  using P = Eigen::internal::Packet16f;
  __m512 yv[NP], dv[NP];
  load_row_packets<P, NP>(y, n, yv);
  load_row_packets<P, NP>(dy, n, dv);
  const float g = static_cast<float>(packet_row_sum(
      half_last(n) ? packet_row_terms<Log, true>(yv, dv, NP) : packet_row_terms<Log>(yv, dv, NP)));
  for (int k = 0; k < NP; ++k) {
    const P v = backward_packet<Log>(yv[k], dv[k], Eigen::internal::pset1<P>(g), temperature);
    _mm512_mask_storeu_ps(out + 16 * k, packet_row_mask(n, k), v);
  }
}

/// The backward pass of one float row of n <= packet_row_max<Log> entries; the loads
/// end at the row's last entry (load_first), where a masked load waits for earlier stores
/// to the bytes past it. The packet count is a template argument so the row stays in
/// registers (with a run-time count its arrays lived on the stack: a Vector3f took 37 ns a
/// call, 19.6 in registers). Out of line: inlined into softmax_backward_one it tipped GCC
/// 12 into calling that and short_dot once per row of 17-32 entries.
template <bool Log>
EIGEN_DONT_INLINE void packet_row_backward(const float* y, const float* dy, float* out, Index n,
                                           float temperature) {
  // Tested in order, not a jump table: one compare ahead of the shortest rows (Vector3f
  // softmax_backward_into 5.2 ns a call through a switch, 4.75 this way; 4.15 with a
  // copy of the kernel for n < 16 in front, not kept).
  if (n <= 16) return packet_row_backward_np<Log, 1>(y, dy, out, n, temperature);
  if (n <= 32) return packet_row_backward_np<Log, 2>(y, dy, out, n, temperature);
  if (n <= 48) return packet_row_backward_np<Log, 3>(y, dy, out, n, temperature);
  packet_row_backward_np<Log, packet_row_packets>(y, dy, out, n, temperature);
}

/// packet_row_backward over count contiguous rows of 0 < n <= packet_row_max<Log> entries
/// (row j of y at y + j * yd, the same for dy and out), four at a time with their trees
/// side by side, so the rows' latency chains overlap. Masked loads and stores touch each
/// row's entries only; out may alias y or dy exactly.
template <bool Log, int NP, bool Half>
void packet_rows_backward_np(const float* y, Index yd, const float* dy, Index dyd, float* out,
                             Index od, Index count, Index n, float temperature) {
  using P = Eigen::internal::Packet16f;
  __mmask16 m[NP];
  for (int k = 0; k < NP; ++k) m[k] = packet_row_mask(n, k);
  Index j = 0;
  if constexpr (Log) {
    if (yd == n && dyd == n && od == n && n < 16 && count >= 4 * lane_block) {
      // Dense rows: the exponentials of whole packets of the block as it lies
      // (dense_sums_plan), not of one padded packet per row (4096 rows of 3 / 8 / 10: 0.98 /
      // 1.83 / 2.07 G/s against 0.52 / 1.40 / 1.75). softmax has no exponential and gained
      // nothing from it (2.0 / 2.4 against 2.1 / 2.5 at 8 / 10 entries).
      const dense_sums_plan<float> plan(n);
      const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
      for (; j + lane_block <= count; j += lane_block) {
        alignas(64) float g[lane_block];
        for (Index r0 = 0; r0 < lane_block; r0 += 4) {
          __m512d t[4];
          for (int r = 0; r < 4; ++r) {
            const __m512 dv = _mm512_maskz_loadu_ps(m[0], dy + (j + r0 + r) * dyd);
            t[r] = packet_row_terms<true, Half>(&dv, &dv, 1);
          }
          const __m256 gs = _mm512_cvtpd_ps(packet_rows_sum4(t));
          _mm_store_ps(g + r0, _mm256_castps256_ps128(_mm256_permutevar8x32_ps(gs, evens)));
        }
        dense_block_backward<true>(y + j * yd, dy + j * dyd, out + j * od, plan, g, temperature);
      }
    }
  }
  for (; j + 4 <= count; j += 4) {
    __m512 yv[4][NP], dv[4][NP];
    __m512d t[4];
    for (int r = 0; r < 4; ++r) {
      for (int k = 0; k < NP; ++k) {
        yv[r][k] = _mm512_maskz_loadu_ps(m[k], y + (j + r) * yd + 16 * k);
        dv[r][k] = _mm512_maskz_loadu_ps(m[k], dy + (j + r) * dyd + 16 * k);
      }
      t[r] = packet_row_terms<Log, Half>(yv[r], dv[r], NP);
    }
    alignas(32) float g[8];
    _mm256_store_ps(g, _mm512_cvtpd_ps(packet_rows_sum4(t)));
    for (int r = 0; r < 4; ++r) {
      for (int k = 0; k < NP; ++k) {
        const P v = backward_packet<Log>(yv[r][k], dv[r][k], _mm512_set1_ps(g[2 * r]), temperature);
        _mm512_mask_storeu_ps(out + (j + r) * od + 16 * k, m[k], v);
      }
    }
  }
  for (; j < count; ++j) {
    packet_row_backward<Log>(y + j * yd, dy + j * dyd, out + j * od, n, temperature);
  }
}

/// packet_rows_backward_np with the rows' packet count.
template <bool Log>
void packet_rows_backward(const float* y, Index yd, const float* dy, Index dyd, float* out,
                          Index od, Index count, Index n, float temperature) {
  const auto run = [&](auto np, auto half) {
    packet_rows_backward_np<Log, decltype(np)::value, decltype(half)::value>(
        y, yd, dy, dyd, out, od, count, n, temperature);
  };
  const auto with_half = [&](auto np) {
    if (half_last(n)) {
      run(np, std::true_type{});
    } else {
      run(np, std::false_type{});
    }
  };
  if constexpr (Log) {
    if (n <= 16) {
      with_half(std::integral_constant<int, 1>{});
    } else {
      with_half(std::integral_constant<int, 2>{});
    }
  } else {
    switch ((n + 15) / 16) {
      case 1:
        return with_half(std::integral_constant<int, 1>{});
      case 2:
        return with_half(std::integral_constant<int, 2>{});
      case 3:
        return with_half(std::integral_constant<int, 3>{});
      default:
        return with_half(std::integral_constant<int, 4>{});
    }
  }
}

/// Double rows of up to backward_short_max entries (up to four packets of 8), four rows at
/// a time: each row's products (log_softmax: its dy) summed lane by lane through TwoSum, then the
/// four rows' 8 lanes in one tree of shuffles whose every step is a TwoSum of the value
/// terms and a plain add of the error terms (four rows of 8 lanes -> 2 x 4 -> 4 x 2 -> 4
/// x 1). That is a compensated sum as tight as short_dot's in-order one (one rounding of
/// the total, plus the products' own), where the tiles spent most of their time
/// transposing y and dy in and the outputs back out (4096 rows of 10 / 32: 1.0 / 1.26 G/s,
/// against 1.37 / 2.3 for Eigen's plain sums; log_softmax of 10 / 32, dy alone through the
/// tiles: 0.78 / 0.82, against 0.83 / 0.98 this way). A single row runs the same code with
/// three empty neighbours, so rows come out the same alone and in a batch.
EIGEN_ALWAYS_INLINE void tree_step(__m512d& h, __m512d& l, const __m512d a, const __m512d b,
                                   const __m512d la, const __m512d lb) {
  h = a;
  l = _mm512_add_pd(la, lb);
  two_sum<Eigen::internal::Packet8d>(h, l, b);  // (la + lb) + the error of a + b
}

/// The tree over four rows' lane sums (h, l: values and error terms): row r's sum in
/// g[2 r].
EIGEN_ALWAYS_INLINE void packet_rows4_tree_f64(const __m512d (&h)[4], const __m512d (&l)[4],
                                               double* g) {
  // [lanes 0-3 of row a, of row b] + [lanes 4-7 of a, of b].
  __m512d h01, l01, h23, l23, hv, lv;
  tree_step(h01, l01, _mm512_shuffle_f64x2(h[0], h[1], 0x44),
            _mm512_shuffle_f64x2(h[0], h[1], 0xEE), _mm512_shuffle_f64x2(l[0], l[1], 0x44),
            _mm512_shuffle_f64x2(l[0], l[1], 0xEE));
  tree_step(h23, l23, _mm512_shuffle_f64x2(h[2], h[3], 0x44),
            _mm512_shuffle_f64x2(h[2], h[3], 0xEE), _mm512_shuffle_f64x2(l[2], l[3], 0x44),
            _mm512_shuffle_f64x2(l[2], l[3], 0xEE));
  // 128-bit pieces: [piece 0 of rows 0-3] + [piece 1 of rows 0-3].
  tree_step(hv, lv, _mm512_shuffle_f64x2(h01, h23, 0x88), _mm512_shuffle_f64x2(h01, h23, 0xDD),
            _mm512_shuffle_f64x2(l01, l23, 0x88), _mm512_shuffle_f64x2(l01, l23, 0xDD));
  // Lane 2 r + lane 2 r + 1, and the total: row r's sum in lane 2 r.
  __m512d hs, ls;
  tree_step(hs, ls, hv, _mm512_permute_pd(hv, 0x55), lv, _mm512_permute_pd(lv, 0x55));
  _mm512_store_pd(g, _mm512_add_pd(hs, ls));
}

/// packet_rows4_tree_f64 for a single row, on 256- and 128-bit halves: the row's lanes take
/// the same additions in the same order, so the same sum, without the three empty rows'
/// shuffles and masked loads (Xeon, AVX-512: Vector3d softmax_backward_into 33 -> 8.9 ns a
/// call, log_softmax_backward_into 31 -> 12.6).
EIGEN_ALWAYS_INLINE double packet_row1_tree_f64(const __m512d h, const __m512d l) {
  namespace ei = Eigen::internal;
  __m256d h4 = _mm512_castpd512_pd256(h);
  __m256d l4 = _mm256_add_pd(_mm512_castpd512_pd256(l), _mm512_extractf64x4_pd(l, 1));
  two_sum<ei::Packet4d>(h4, l4, _mm512_extractf64x4_pd(h, 1));
  __m128d h2 = _mm256_castpd256_pd128(h4);
  __m128d l2 = _mm_add_pd(_mm256_castpd256_pd128(l4), _mm256_extractf128_pd(l4, 1));
  two_sum<ei::Packet2d>(h2, l2, _mm256_extractf128_pd(h4, 1));
  // Lane 0 + lane 1 (lane 1 of the result unused).
  __m128d h1 = h2;
  __m128d l1 = _mm_add_pd(l2, _mm_unpackhi_pd(l2, l2));
  two_sum<ei::Packet2d>(h1, l1, _mm_unpackhi_pd(h2, h2));
  return _mm_cvtsd_f64(_mm_add_sd(h1, l1));
}

/// One row's lane sums from its NP packets: the products y dy (dy alone when Log) through
/// TwoSum lane by lane into h, the error terms into l.
template <bool Log, int NP>
EIGEN_ALWAYS_INLINE void row_lanes_f64(const __m512d* yv, const __m512d* dv, __m512d& h,
                                       __m512d& l) {
  const auto term = [&](int k) { return Log ? dv[k] : _mm512_mul_pd(yv[k], dv[k]); };
  h = term(0);
  l = _mm512_setzero_pd();
  for (int k = 1; k < NP; ++k) two_sum<Eigen::internal::Packet8d>(h, l, term(k));
}

/// Loads rows (1-4) rows' NP packets of dy (and of y when LoadY) with masked loads (zeros
/// past the rows) and sums each row's lanes through TwoSum: <y, dy>, or sum dy when Log. Each row's
/// sum right after its loads: loading every row first ran 12 % slower (softmax, 32 entries).
template <bool Log, bool LoadY, int NP>
EIGEN_ALWAYS_INLINE void packet_rows4_lanes_f64(__m512d (&yv)[4][NP], __m512d (&dv)[4][NP],
                                                __m512d (&h)[4], __m512d (&l)[4], const double* y,
                                                Index yd, const double* dy, Index dyd, int rows,
                                                const __mmask8* m) {
  for (int r = 0; r < 4; ++r) {
    for (int k = 0; k < NP; ++k) {
      const __mmask8 mk = r < rows ? m[k] : __mmask8(0);
      if constexpr (LoadY) yv[r][k] = _mm512_maskz_loadu_pd(mk, y + r * yd + 8 * k);
      dv[r][k] = _mm512_maskz_loadu_pd(mk, dy + r * dyd + 8 * k);
    }
    row_lanes_f64<Log, NP>(yv[r], dv[r], h[r], l[r]);
  }
}

/// rows (1-4) rows of n entries from y (log y when Log) and dy (row r at r * yd, r * dyd)
/// into out (r * od).
template <bool Log, int NP>
EIGEN_ALWAYS_INLINE void packet_rows4_backward_f64(const double* y, Index yd, const double* dy,
                                                   Index dyd, double* out, Index od, int rows,
                                                   const __mmask8* m, double temperature) {
  __m512d yv[4][NP], dv[4][NP], h[4], l[4];
  packet_rows4_lanes_f64<Log, true, NP>(yv, dv, h, l, y, yd, dy, dyd, rows, m);
  alignas(64) double g[8];
  packet_rows4_tree_f64(h, l, g);
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < NP; ++k) {
      const Eigen::internal::Packet8d v =
          backward_packet<Log>(yv[r][k], dv[r][k], _mm512_set1_pd(g[2 * r]), temperature);
      _mm512_mask_storeu_pd(out + r * od + 8 * k, m[k], v);
    }
  }
}

/// One row of n entries: packet_rows4_backward_f64's operations for its row, so the same
/// bits. The loads end at the row's last entry (see load_first).
template <bool Log, int NP>
EIGEN_ALWAYS_INLINE void packet_row1_backward_f64(const double* y, const double* dy, double* out,
                                                  Index n, const __mmask8* m, double temperature) {
  using P = Eigen::internal::Packet8d;
  __m512d yv[NP], dv[NP];
  load_row_packets<P, NP>(y, n, yv);
  load_row_packets<P, NP>(dy, n, dv);
  __m512d h, l;
  row_lanes_f64<Log, NP>(yv, dv, h, l);
  const P g = _mm512_set1_pd(packet_row1_tree_f64(h, l));
  for (int k = 0; k < NP; ++k) {
    _mm512_mask_storeu_pd(out + 8 * k, m[k], backward_packet<Log>(yv[k], dv[k], g, temperature));
  }
}

template <bool Log, int NP>
void packet_rows_backward_f64_np(const double* y, Index yd, const double* dy, Index dyd,
                                 double* out, Index od, Index count, Index n, double temperature) {
  __mmask8 m[NP];
  for (int k = 0; k < NP; ++k) {
    const Index r = n - 8 * k;
    m[k] = r >= 8 ? __mmask8(0xFF) : static_cast<__mmask8>((1u << r) - 1u);
  }
  if (count == 1) return packet_row1_backward_f64<Log, NP>(y, dy, out, n, m, temperature);
  Index j = 0;
  if constexpr (Log) {
    if (yd == n && dyd == n && od == n && count >= 4 * lane_block) {
      // Dense rows: the exponentials of the block's whole packets as it lies
      // (dense_sums_plan), not of one padded packet per row.
      const dense_sums_plan<double> plan(n);
      for (; j + lane_block <= count; j += lane_block) {
        alignas(64) double g[lane_block];
        for (Index r0 = 0; r0 < lane_block; r0 += 4) {
          __m512d dv[4][NP], h[4], l[4];
          packet_rows4_lanes_f64<true, false, NP>(dv, dv, h, l, nullptr, 0, dy + (j + r0) * n, n, 4,
                                                  m);
          alignas(64) double gs[8];
          packet_rows4_tree_f64(h, l, gs);
          for (int r = 0; r < 4; ++r) g[r0 + r] = gs[2 * r];
        }
        dense_block_backward<true>(y + j * n, dy + j * n, out + j * n, plan, g, temperature);
      }
    }
  }
  for (; j + 4 <= count; j += 4) {
    packet_rows4_backward_f64<Log, NP>(y + j * yd, yd, dy + j * dyd, dyd, out + j * od, od, 4, m,
                                       temperature);
  }
  if (j < count) {
    packet_rows4_backward_f64<Log, NP>(y + j * yd, yd, dy + j * dyd, dyd, out + j * od, od,
                                       static_cast<int>(count - j), m, temperature);
  }
}

/// Backward passes of count contiguous double rows of 0 < n <= backward_short_max entries
/// (softmax, or log_softmax from log y when Log), four at a time (packet_rows4_lanes_f64,
/// packet_rows4_tree_f64); out may alias y or dy exactly.
template <bool Log>
void packet_rows_backward_f64(const double* y, Index yd, const double* dy, Index dyd, double* out,
                              Index od, Index count, Index n, double temperature) {
  switch ((n + 7) / 8) {
    case 1:
      return packet_rows_backward_f64_np<Log, 1>(y, yd, dy, dyd, out, od, count, n, temperature);
    case 2:
      return packet_rows_backward_f64_np<Log, 2>(y, yd, dy, dyd, out, od, count, n, temperature);
    case 3:
      return packet_rows_backward_f64_np<Log, 3>(y, yd, dy, dyd, out, od, count, n, temperature);
    default:
      return packet_rows_backward_f64_np<Log, 4>(y, yd, dy, dyd, out, od, count, n, temperature);
  }
}

/// The sum of a backward pass over one contiguous float row of n entries, in double: sum dy
/// (Log), each entry widened; or <y, dy>, each product rounded to float (p) and its rounding
/// error e = fma(y, dy, -p) kept apart, the p summed in double and the e in float (|e| <=
/// 2^-24 |p|, so their float sum errs far below float's resolution). That is two conversions
/// per packet where widening both factors takes four, and Zen 4 runs them at half the rate
/// of the other operations (1000 floats in L1: 7.2 -> 9.6 G/s). e is exact unless a product
/// is below about 2^-103 (an error of at most 2^-150 each) or overflows: a row whose sum is
/// below 2^-60 in magnitude, or not finite, is summed again by dot_blocks (products exact
/// in double).
template <bool Log>
struct packet_row_total_acc {
  using W = widening<Eigen::internal::Packet16f>;
  static constexpr Index step = 32;  // add_step's entries
  __m512d s[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(),
                  _mm512_setzero_pd()};
  __m512 e = _mm512_setzero_ps();

  /// Adds packet (yv, dv) to the sums of slot k (0 or 2).
  EIGEN_ALWAYS_INLINE void add(const __m512 yv, const __m512 dv, int k) {
    if constexpr (Log) {
      s[k] = _mm512_add_pd(s[k], W::lo(dv));
      s[k + 1] = _mm512_add_pd(s[k + 1], W::hi(dv));
    } else {
      const __m512 p = _mm512_mul_ps(yv, dv);
      e = _mm512_add_ps(e, _mm512_fmsub_ps(yv, dv, p));
      s[k] = _mm512_add_pd(s[k], W::lo(p));
      s[k + 1] = _mm512_add_pd(s[k + 1], W::hi(p));
    }
  }
  /// The two packets from entry i (i + step <= n): slot 0 for the first, 2 for the second;
  /// a row's steps are every step entries, then its last packets (add_tail).
  EIGEN_ALWAYS_INLINE void add_step(const float* y, const float* dy, Index i) {
    add(Log ? _mm512_setzero_ps() : _mm512_loadu_ps(y + i), _mm512_loadu_ps(dy + i), 0);
    add(Log ? _mm512_setzero_ps() : _mm512_loadu_ps(y + i + 16), _mm512_loadu_ps(dy + i + 16), 2);
  }
  /// The packets of entries i.. (i a multiple of 32 past the last whole step), masked.
  EIGEN_ALWAYS_INLINE void add_tail(const float* y, const float* dy, Index i, Index n) {
    for (; i < n; i += 16) {
      const __mmask16 m = packet_row_mask(n - i, 0);
      add(Log ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, y + i),
          _mm512_maskz_loadu_ps(m, dy + i), 0);
    }
  }
  /// The row's sum, from all of its packets added as above.
  double total([[maybe_unused]] const float* y, [[maybe_unused]] const float* dy,
               [[maybe_unused]] Index n) const {
    const __m512d t = _mm512_add_pd(_mm512_add_pd(s[0], s[1]), _mm512_add_pd(s[2], s[3]));
    if constexpr (Log) {
      return _mm512_reduce_add_pd(t);
    } else {
      const double sum = _mm512_reduce_add_pd(_mm512_add_pd(t, _mm512_add_pd(W::lo(e), W::hi(e))));
      // |sum| <= sum |p| bounds the e's errors (n 2^-150 at most) far below float's
      // resolution once |sum| >= 2^-60; the rest (0, tiny, or not finite: rare) go again.
      if (!(std::fabs(sum) >= 0x1p-60 && std::fabs(sum) <= std::numeric_limits<double>::max())) {
        return dot_blocks(y, 1, dy, 1, n);
      }
      return sum;
    }
  }
};

/// A long row's backward sum from y and dy (<y, dy>, or sum dy when Log), a step of two
/// packets at a time, as packet_row_backward_long takes it: float through
/// packet_row_total_acc, double through dot_compensated_acc (dot_blocks' sum of a contiguous
/// double row). long_row_total runs every step; packet_rows_backward_stream_t interleaves
/// them with the previous row's output.
template <bool Log, typename T>
struct long_row_sum;

template <bool Log>
struct long_row_sum<Log, float> : packet_row_total_acc<Log> {};

template <bool Log>
struct long_row_sum<Log, double> {
  static constexpr Index step = dot_compensated_acc::step;
  dot_compensated_acc d;
  compensated_sum<double> acc;
  EIGEN_ALWAYS_INLINE void add_step(const double* y, const double* dy, Index i) {
    Log ? d.add_step(dy, nullptr, i) : d.add_step(y, dy, i);
  }
  void add_tail(const double* y, const double* dy, Index i, Index n) {
    Log ? d.finish(dy, nullptr, i, n, acc) : d.finish(y, dy, i, n, acc);
  }
  double total(const double*, const double*, Index) const { return acc.total(); }
};

/// The sum of one row of n entries, every step of long_row_sum in order.
template <bool Log, typename T>
T long_row_total(const T* y, const T* dy, Index n) {
  using S = long_row_sum<Log, T>;
  S acc;
  Index i = 0;
  for (; i + S::step <= n; i += S::step) acc.add_step(y, dy, i);
  acc.add_tail(y, dy, i, n);
  return static_cast<T>(acc.total(y, dy, n));
}

/// Masked AVX-512 loads and stores of a row's packets, for float and double alike.
template <typename T>
struct masked_lanes;
template <>
struct masked_lanes<float> {
  using Packet = __m512;
  using Mask = __mmask16;
  static constexpr Index size = 16;
  static Mask first(Index n) { return n >= 16 ? Mask(0xFFFF) : static_cast<Mask>((1u << n) - 1u); }
  static Packet load(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(float* p, Mask m, const Packet& v) { _mm512_mask_storeu_ps(p, m, v); }
};
template <>
struct masked_lanes<double> {
  using Packet = __m512d;
  using Mask = __mmask8;
  static constexpr Index size = 8;
  static Mask first(Index n) { return n >= 8 ? Mask(0xFF) : static_cast<Mask>((1u << n) - 1u); }
  static Packet load(Mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(double* p, Mask m, const Packet& v) { _mm512_mask_storeu_pd(p, m, v); }
};

/// packet_row_backward_long over count contiguous rows with streamed outputs (row j of y at
/// y + j * yd, the same for dy and out): the loop that writes row j also sums row j + 1
/// (long_row_sum, in the same order, so the same bits), so its loads from beyond the
/// caches overlap the row's non-temporal stores instead of following them (Xeon, 256 x
/// 32000 / 16 x 1048576, three runs: softmax_backward 1.55-1.88 / 0.85-1.01 -> 2.05-2.35 /
/// 1.18-1.28 G/s, log_softmax_backward 1.86-2.23 / 1.05-1.15 -> 2.57-2.61 / 1.37-1.40;
/// double softmax_backward, two runs: 0.53-0.59 / 0.41-0.42 -> 0.77-0.83 / 0.54-0.55).
/// Outputs that stay in cache gained nothing this way (1024 x 1000). out may alias y or dy
/// exactly: row j + 1 is read before it is written.
template <bool Log, bool Unit, typename T>
void packet_rows_backward_stream_t(const T* y, Index yd, const T* dy, Index dyd, T* out, Index od,
                                   Index count, Index n, T temperature) {
  using L = masked_lanes<T>;
  using S = long_row_sum<Log, T>;
  constexpr Index ps = L::size;
  static_assert(S::step == 2 * ps, "a sum step beside two output packets");
  const T t = Unit ? T(1) : temperature;
  T total = long_row_total<Log>(y, dy, n);
  for (Index j = 0; j < count; ++j) {
    const T* const yj = y + j * yd;
    const T* const dj = dy + j * dyd;
    T* const oj = out + j * od;
    const typename L::Packet g = Eigen::internal::pset1<typename L::Packet>(total);
    const auto at = [&](Index i, typename L::Mask m) {
      return backward_packet<Log>(L::load(m, yj + i), L::load(m, dj + i), g, t);
    };
    const auto address = reinterpret_cast<std::uintptr_t>(oj);
    const Index head = static_cast<Index>((64 - address % 64) % 64 / sizeof(T));
    Index i = std::min(head, n);
    if (i > 0) L::store(oj, L::first(i), at(0, L::first(i)));
    if (j + 1 < count) {
      // Row j + 1's sum: its steps beside row j's packets, then the rest.
      const T* const yn = yj + yd;
      const T* const dn = dj + dyd;
      S acc;
      Index k = 0;
      for (; k + S::step <= n && i + 2 * ps <= n; k += S::step, i += 2 * ps) {
        acc.add_step(yn, dn, k);
        stream_packet(oj + i, at(i, L::first(ps)));
        stream_packet(oj + i + ps, at(i + ps, L::first(ps)));
      }
      for (; k + S::step <= n; k += S::step) acc.add_step(yn, dn, k);
      acc.add_tail(yn, dn, k, n);
      total = static_cast<T>(acc.total(yn, dn, n));
    }
    for (; i + ps <= n; i += ps) stream_packet(oj + i, at(i, L::first(ps)));
    if (i < n) L::store(oj + i, L::first(n - i), at(i, L::first(n - i)));
  }
  _mm_sfence();  // order the non-temporal stores before the caller's
}

template <bool Log, bool Unit, typename T>
void packet_row_backward_long_t(const T* y, const T* dy, T* out, Index n, T temperature,
                                bool stream) {
  using L = masked_lanes<T>;
  using P = typename L::Packet;
  constexpr Index ps = L::size;
  const auto address = reinterpret_cast<std::uintptr_t>(out);
  if (stream && address % sizeof(T) == 0) {
    return packet_rows_backward_stream_t<Log, Unit>(y, n, dy, n, out, n, 1, n, temperature);
  }
  const P g = Eigen::internal::pset1<P>(long_row_total<Log>(y, dy, n));
  const T t = Unit ? T(1) : temperature;
  const auto at = [&](Index i, typename L::Mask m) {
    return backward_packet<Log>(L::load(m, y + i), L::load(m, dy + i), g, t);
  };
  Index i = 0;
  // A load whose address matches an earlier store still in flight in its low 12 bits waits
  // for it. With out 48-160 bytes past y or dy modulo 4 KiB, each packet's loads meet the
  // last packet's store (1024 x 1000 floats, out 48 / 64 / 128 bytes past y: 4.0 / 4.35 /
  // 5.05 G/s, against 6.0 elsewhere); four packets loaded before their stores then run 4.95
  // / 5.3 / 5.2 (but 3-8 % slower than one at a time at other offsets).
  const auto near_past = [out](const T* a) {
    const auto d =
        (reinterpret_cast<std::uintptr_t>(out) - reinterpret_cast<std::uintptr_t>(a)) % 4096;
    return d >= 48 && d <= 160;
  };
  if (near_past(y) || near_past(dy)) {
    for (; i + 4 * ps <= n; i += 4 * ps) {
      const P v0 = at(i, L::first(ps)), v1 = at(i + ps, L::first(ps));
      const P v2 = at(i + 2 * ps, L::first(ps)), v3 = at(i + 3 * ps, L::first(ps));
      Eigen::internal::pstoreu(out + i, v0);
      Eigen::internal::pstoreu(out + i + ps, v1);
      Eigen::internal::pstoreu(out + i + 2 * ps, v2);
      Eigen::internal::pstoreu(out + i + 3 * ps, v3);
    }
  }
  for (; i + ps <= n; i += ps) Eigen::internal::pstoreu(out + i, at(i, L::first(ps)));
  if (i < n) L::store(out + i, L::first(n - i), at(i, L::first(n - i)));
}

/// The backward pass of one contiguous row longer than the packet rows and the tiles take:
/// its sum (long_row_total: float packet_row_total_acc, double dot_compensated), then whole
/// packets, the last one masked, where Eigen's expressions took up to 30 entries per row through
/// scalar code to align the output (1024 rows of 1000 floats, softmax_backward: 4.6 -> 6.0
/// G/s with the float sum's two conversions). With `stream`, packet_rows_backward_stream_t
/// for the one row: the output from its first 64-byte boundary on goes out through
/// non-temporal stores (stream_pays).
template <bool Log, typename T>
EIGEN_DONT_INLINE void packet_row_backward_long(const T* y, const T* dy, T* out, Index n,
                                                T temperature, bool stream) {
  // T = 1 on its own: its loop then has no test of T in it.
  if (temperature == T(1)) {
    packet_row_backward_long_t<Log, true>(y, dy, out, n, temperature, stream);
  } else {
    packet_row_backward_long_t<Log, false>(y, dy, out, n, temperature, stream);
  }
}

/// Whether a contiguous row of n entries takes packet_row_backward_long (AVX-512): float
/// rows longer than the packet rows (packet_row_max, which for Log is backward_short_max),
/// double softmax rows longer than backward_short_max. softmax_backward_one and
/// log_softmax_backward_one send such rows there, and backward_long_rows_streamed batches
/// exactly these.
template <bool Log, typename T>
constexpr bool long_backward_row(Index n) {
  if constexpr (std::is_same_v<T, float>) {
    return n > packet_row_max<Log>;
  } else if constexpr (std::is_same_v<T, double> && !Log) {
    return n > backward_short_max;
  } else {
    return false;
  }
}
static_assert(packet_row_max<true> == backward_short_max,
              "log_softmax_backward_one's long float rows start past backward_short_max");
#endif

/// Backward passes of count >= 2 contiguous rows that packet_row_backward_long would take
/// one at a time (long_backward_row), with streamed outputs (stream_pays):
/// packet_rows_backward_stream_t. Returns the rows done: all of them, or 0 where the rows are not
/// such rows (the caller runs them one at a time). Out of line: inlined, it tipped GCC 12 into
/// calling backward_into's body for a Vector3f log_softmax_backward_into (9.95 -> 10.8 ns a call).
template <bool Log, typename T>
EIGEN_DONT_INLINE Index backward_long_rows_streamed(
    [[maybe_unused]] const T* y, [[maybe_unused]] Index yd, [[maybe_unused]] const T* dy,
    [[maybe_unused]] Index dyd, [[maybe_unused]] T* out, [[maybe_unused]] Index od,
    [[maybe_unused]] Index count, [[maybe_unused]] Index n, [[maybe_unused]] T temperature,
    [[maybe_unused]] bool stream) {
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (std::is_same_v<T, float> || (std::is_same_v<T, double> && !Log)) {
    if (!stream || count < 2 || !long_backward_row<Log, T>(n) ||
        reinterpret_cast<std::uintptr_t>(out) % sizeof(T) != 0) {
      return 0;
    }
    if (temperature == T(1)) {
      packet_rows_backward_stream_t<Log, true>(y, yd, dy, dyd, out, od, count, n, temperature);
    } else {
      packet_rows_backward_stream_t<Log, false>(y, yd, dy, dyd, out, od, count, n, temperature);
    }
    return count;
  }
#endif
  return 0;
}

/// dz = y * (dy - <dy, y>) / T for one distribution; out may alias y or dy exactly.
template <typename T>
void softmax_backward_one(const T* y, Index ys, const T* dy, Index dys, T* out, Index os, Index n,
                          T temperature, bool stream = false) {
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    if (ys == 1 && dys == 1 && os == 1) {
      if (!long_backward_row<false, T>(n)) {
        return packet_row_backward<false>(y, dy, out, n, temperature);
      }
      return packet_row_backward_long<false>(y, dy, out, n, temperature, stream);
    }
  } else if constexpr (std::is_same_v<T, double>) {
    if (ys == 1 && dys == 1 && os == 1) {
      if (n > 0 && !long_backward_row<false, T>(n)) {
        return packet_rows_backward_f64<false>(y, n, dy, n, out, n, 1, n, temperature);
      }
      return packet_row_backward_long<false>(y, dy, out, n, temperature, stream);
    }
  }
#else
  (void)stream;
#endif
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
                              Index n, T temperature, bool stream = false) {
#if defined(EIGEN_VECTORIZE_AVX512)
  // (Double rows longer than backward_short_max stay below: bound by their exponentials,
  // they ran 6 % slower through packet_row_backward_long.)
  if constexpr (std::is_same_v<T, double>) {
    if (ls == 1 && dys == 1 && os == 1 && n > 0 && n <= backward_short_max) {
      return packet_rows_backward_f64<true>(logy, n, dy, n, out, n, 1, n, temperature);
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (ls == 1 && dys == 1 && os == 1) {
      if (packet_rows_take<true>(n))
        return packet_row_backward<true>(logy, dy, out, n, temperature);
      // Rows of up to backward_short_max keep the in-order sum of backward_short_rows' lanes.
      if (long_backward_row<true, T>(n)) {
        return packet_row_backward_long<true>(logy, dy, out, n, temperature, stream);
      }
    }
  }
#else
  (void)stream;
#endif
  if constexpr (has_packet_exp<T>) {
    if (ls == 1 && dys == 1 && os == 1) {
      // Contiguous rows: a packet at a time (a partial last one padded with 0), with the
      // packet operations of backward_short_rows, so a short row comes out the same there:
      // a scalar dy - e * s may be contracted to an FMA where the packets are not. Longer
      // rows too: Eigen's expression takes its last entries through the scalar exp (4096
      // rows of 100 floats: 1.13 G/s, of 64: 2.1).
      namespace ei = Eigen::internal;
      using Packet = typename ei::packet_traits<T>::type;
      constexpr Index ps = ei::unpacket_traits<Packet>::size;
      const T* none = nullptr;
      const Packet s = ei::pset1<Packet>(static_cast<T>(
          n <= backward_short_max ? short_dot(dy, none, n) : dot_blocks(dy, dys, none, 1, n)));
      for (Index i0 = 0; i0 < n; i0 += ps) {
        const Index len = std::min(ps, n - i0);
        const bool whole = len == ps;
        const Packet l =
            whole ? ei::ploadu<Packet>(logy + i0) : load_first<Packet>(logy + i0, len, T(0));
        const Packet d =
            whole ? ei::ploadu<Packet>(dy + i0) : load_first<Packet>(dy + i0, len, T(0));
        const Packet v = log_softmax_backward_packet(l, d, s, temperature);
        if (whole) {
          ei::pstoreu(out + i0, v);
        } else {
          store_first(out + i0, v, len);
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

/// Backward passes of short contiguous rows (row j of y at y + j * yd, the same for dy and
/// out; softmax when !Log, log_softmax with y = log y when Log): blocks of lane_block rows
/// are transposed into two lane tiles and reduced across the rows, where one row at a time
/// spends most of its time in its horizontal sum. Per lane, the sums are short_dot's (in
/// acc_t, the columns in order) and the outputs softmax_backward_one's and
/// log_softmax_backward_one's. Rows whose padded loads would leave y or dy are left to the
/// caller: returns the number of rows done. out may alias y or dy exactly (a block is read
/// in full before it is written). On AVX-512, float rows that packet_rows_take go to
/// packet_rows_backward instead, and double rows of up to backward_short_max to
/// packet_rows_backward_f64, all of them.
template <bool Log, typename T>
Index backward_short_rows(const T* y, Index yd, const T* dy, Index dyd, T* out, Index od,
                          Index count, Index len, T temperature) {
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    if (len > 0 && packet_rows_take<Log>(len)) {
      packet_rows_backward<Log>(y, yd, dy, dyd, out, od, count, len, temperature);
      return count;
    }
  } else if constexpr (std::is_same_v<T, double>) {
    if (len > 0 && len <= backward_short_max) {
      packet_rows_backward_f64<Log>(y, yd, dy, dyd, out, od, count, len, temperature);
      return count;
    }
  }
#endif
  if constexpr (!has_packet_exp<T> || (!Log && !exact_normalise<T>)) {
    // float softmax: one row at a time measured as fast or faster (4096 rows of 1, 3, 17
    // entries: 0.45 / 0.91 / 1.8 G/s against 0.26 / 0.73 / 1.5 with the tiles, AVX-512;
    // dense rows of 8 / 10 written as they lie: 1.21 / 1.30 against 1.26 / 1.29), its
    // widened dot being cheap next to transposing both y and dy.
    return 0;
  } else {
    namespace ei = Eigen::internal;
    using Tile = lane_tile<T>;
    using Packet = typename Tile::Packet;
    constexpr int ps = Tile::ps;
    if (len == 0 || len > backward_short_max || count < lane_block) return 0;
    // log_softmax of dense rows: the outputs written as the rows lie (dense_sums_plan), so
    // log y is never transposed. softmax needs y in the tile for its sums anyway, and
    // transposing the outputs back measured faster there (double, 4096 rows of 32: 1.32
    // against 1.08 G/s).
    bool dense = false;
#if defined(EIGEN_VECTORIZE_AVX512)
    // The plan's setup (lane_block * len steps) pays from a few blocks on.
    dense = Log && yd == len && dyd == len && od == len && count >= 4 * lane_block;
#endif
    const Index padded = (len + ps - 1) / ps * ps;
    const Index y_end = (count - 1) * yd + len, dy_end = (count - 1) * dyd + len;
    Tile ty, td;
    using Wide = Eigen::Array<acc_t<T>, lane_block, 1>;
    alignas(64) T g[lane_block];
#if defined(EIGEN_VECTORIZE_AVX512)
    std::optional<dense_sums_plan<T>> plan;
    if (dense) plan.emplace(len);
#endif
    const Packet t = ei::pset1<Packet>(temperature);
    Index j0 = 0;
    for (; j0 + lane_block <= count && (j0 + lane_block - 1) * yd + padded <= y_end &&
           (j0 + lane_block - 1) * dyd + padded <= dy_end;
         j0 += lane_block) {
      if (!dense) tile_load_rows(ty, y + j0 * yd, yd, len);
      tile_load_rows(td, dy + j0 * dyd, dyd, len);
      // Per lane: sum_k y_k dy_k (softmax) or sum_k dy_k (log_softmax), as short_dot.
      if constexpr (!exact_normalise<T>) {
        // float reaches here for log_softmax only: sum_k dy_k in double.
        Wide s = Wide::Zero();
        for (Index k = 0; k < len; ++k) {
          const T* b = td.column(k);
          // A plain loop: compilers vectorise the widening, Eigen 3.4's cast does not.
          for (Index j = 0; j < lane_block; ++j) s(j) += static_cast<acc_t<T>>(b[j]);
        }
        for (Index j = 0; j < lane_block; ++j) g[j] = static_cast<T>(s(j));
      } else {
        // compensated_sum's TwoSum per lane, on the tile's packets in registers.
        constexpr int np = Tile::packets;
        Packet hi[np], lo[np];
        for (int p = 0; p < np; ++p) hi[p] = lo[p] = ei::pzero(t);
        for (Index k = 0; k < len; ++k) {
          for (int p = 0; p < np; ++p) {
            Packet v = ei::pload<Packet>(td.column(k) + p * ps);
            if constexpr (!Log) v = ei::pmul(ei::pload<Packet>(ty.column(k) + p * ps), v);
            two_sum(hi[p], lo[p], v);
          }
        }
        for (int p = 0; p < np; ++p) ei::pstore(g + p * ps, ei::padd(hi[p], lo[p]));
      }
#if defined(EIGEN_VECTORIZE_AVX512)
      if (dense) {
        dense_block_backward<Log>(y + j0 * yd, dy + j0 * dyd, out + j0 * od, *plan, g, temperature);
        continue;
      }
#endif
      const auto f = [&](Index k, int p) {
        return backward_packet<Log>(ei::pload<Packet>(ty.column(k) + p * ps),
                                    ei::pload<Packet>(td.column(k) + p * ps),
                                    ei::pload<Packet>(g + p * ps), temperature);
      };
      tile_store_rows<true>(f, out + j0 * od, od, len);
    }
    return j0;
  }
}

/// Packets of distributions in a backward_across panel: 4 KiB of each column, as
/// forward_panel takes. softmax_backward 1024 x 1000 float, AVX-512: 1.65 G/s with 64
/// distributions at a time (the sums in registers), 2.26 / 2.18 / 2.21 with 128 / 256 /
/// 512, 2.66 with 1024; the longer runs of each column outweigh the reuse a panel small
/// enough for L2 would give the second pass.
template <typename T>
inline constexpr Index backward_panel =
    Index(4096 / sizeof(T)) / Eigen::internal::packet_traits<T>::size;

/// Whether backward_across has packet code for T on this target.
template <typename T>
inline constexpr bool has_backward_across =
    has_packet_exp<T> &&
    (exact_normalise<T> || widening<typename Eigen::internal::packet_traits<T>::type>::available);

/// Backward passes of a panel of np packets' worth of distributions side by side (entry k
/// of distribution j at y[j + k * yk], the same for dy and out; np <= backward_panel<T>):
/// per lane the sum over the columns (<y, dy>, or sum dy when Log), then the outputs. The
/// sums are those of the strided one-at-a-time path: float in double, column by column
/// (every product exact, so an FMA rounds as the multiply-then-add does); double through
/// compensated_sum's TwoSum. out may alias y or dy exactly (an entry is read before it is
/// written).
template <bool Log, typename T>
void backward_across_panel(const T* y, Index yk, const T* dy, Index dyk, T* out, Index ok, Index np,
                           Index len, T temperature, bool stream = false) {
  (void)stream;  // AVX-512 only
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr Index ps = ei::unpacket_traits<Packet>::size;
  constexpr Index max_np = backward_panel<T>;
  alignas(64) T g[max_np * ps];
  if constexpr (!exact_normalise<T>) {
    using W = widening<Packet>;
    using Wide = typename W::Wide;
    alignas(64) double s[max_np * ps];
    for (Index i = 0; i < np * ps; ++i) s[i] = 0.0;
    constexpr Index hw = ps / 2;
    for (Index k = 0; k < len; ++k) {
      const T* yc = y + k * yk;
      const T* dc = dy + k * dyk;
      for (Index p = 0; p < np; ++p) {
        const Packet d = ei::ploadu<Packet>(dc + p * ps);
        Wide s0 = ei::pload<Wide>(s + p * ps), s1 = ei::pload<Wide>(s + p * ps + hw);
        if constexpr (Log) {
          s0 = ei::padd(s0, W::lo(d));
          s1 = ei::padd(s1, W::hi(d));
        } else {
          const Packet v = ei::ploadu<Packet>(yc + p * ps);
          s0 = ei::pmadd(W::lo(v), W::lo(d), s0);
          s1 = ei::pmadd(W::hi(v), W::hi(d), s1);
        }
        ei::pstore(s + p * ps, s0);
        ei::pstore(s + p * ps + hw, s1);
      }
    }
    for (Index p = 0; p < np; ++p) {
      ei::pstore(g + p * ps,
                 W::narrow(ei::pload<Wide>(s + p * ps), ei::pload<Wide>(s + p * ps + hw)));
    }
  } else {
    alignas(64) T hl[2 * max_np * ps];
    for (Index i = 0; i < 2 * np * ps; ++i) hl[i] = T(0);
    for (Index k = 0; k < len; ++k) {
      const T* yc = y + k * yk;
      const T* dc = dy + k * dyk;
      for (Index p = 0; p < np; ++p) {
        Packet v = ei::ploadu<Packet>(dc + p * ps);
        if constexpr (!Log) v = ei::pmul(ei::ploadu<Packet>(yc + p * ps), v);
        Packet h = ei::pload<Packet>(hl + 2 * p * ps), l = ei::pload<Packet>(hl + (2 * p + 1) * ps);
        two_sum(h, l, v);
        ei::pstore(hl + 2 * p * ps, h);
        ei::pstore(hl + (2 * p + 1) * ps, l);
      }
    }
    for (Index p = 0; p < np; ++p) {
      ei::pstore(g + p * ps, ei::padd(ei::pload<Packet>(hl + 2 * p * ps),
                                      ei::pload<Packet>(hl + (2 * p + 1) * ps)));
    }
  }
  const auto at = [&](const T* yc, const T* dc, Index p) {
    return backward_packet<Log>(ei::ploadu<Packet>(yc + p * ps), ei::ploadu<Packet>(dc + p * ps),
                                ei::pload<Packet>(g + p * ps), temperature);
  };
#if defined(EIGEN_VECTORIZE_AVX512)
  // Non-temporal stores (stream_pays) where every packet of out starts a 64-byte line.
  if (stream && reinterpret_cast<std::uintptr_t>(out) % 64 == 0 &&
      (ok * Index(sizeof(T))) % 64 == 0 && ps * Index(sizeof(T)) == 64) {
    for (Index k = 0; k < len; ++k) {
      for (Index p = 0; p < np; ++p)
        stream_packet(out + k * ok + p * ps, at(y + k * yk, dy + k * dyk, p));
    }
    _mm_sfence();
    return;
  }
#endif
  for (Index k = 0; k < len; ++k) {
    for (Index p = 0; p < np; ++p)
      ei::pstoreu(out + k * ok + p * ps, at(y + k * yk, dy + k * dyk, p));
  }
}

/// Backward passes of count distributions side by side (rows of a column-major matrix),
/// vectorised across them a panel at a time, where one distribution at a time walks its
/// row at the column stride (softmax_backward 1024 x 1000 float: 0.080 G/s, against 4.4
/// for contiguous rows). Returns the number of distributions done (a multiple of the packet
/// size); the caller does the rest one at a time.
template <bool Log, typename T>
Index backward_across(const T* y, Index yk, const T* dy, Index dyk, T* out, Index ok, Index count,
                      Index len, T temperature, bool stream = false) {
  if constexpr (!has_backward_across<T>) {
    (void)stream;
    return 0;
  } else {
    constexpr Index ps = Eigen::internal::packet_traits<T>::size;
    Index j = 0;
    while (j + ps <= count) {
      const Index np = std::min(backward_panel<T>, (count - j) / ps);
      backward_across_panel<Log>(y + j, yk, dy + j, dyk, out + j, ok, np, len, temperature, stream);
      j += np * ps;
    }
    return j;
  }
}

}  // namespace smax::detail

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
