// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include <Eigen/Core>

#include <smax/axis.hpp>
#include <smax/causal.hpp>
#include <smax/detail/dispatch.hpp>
#include <smax/detail/fpclass.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/error.hpp>
#include <smax/softmax.hpp>

/// \file
/// masked_softmax, masked_log_softmax, masked_logsumexp and their backward passes: softmax
/// over the entries a mask keeps.
///
/// The mask is a boolean Eigen object of the input's shape (Array<bool> or Matrix<bool>,
/// fixed or dynamic, Map, Block, Ref, or an expression such as `(x.array() > 0)`; true =
/// keep), or, for a 2-D input with an axis, smax::causal / smax::causal_mask{offset}, which
/// is never materialised.
///
/// Numerical policy (README, "Numerical policy", masked rows):
/// - A masked-out entry is structurally absent: probability exactly 0, log-probability
///   -inf, gradient exactly 0, whatever its logit (NaN, +inf, -inf) and whatever the
///   upstream gradient there (NaN, inf), even when the kept entries give NaN.
/// - A fully masked distribution has nothing to distribute: masked_softmax gives all zeros,
///   masked_log_softmax all -inf, masked_logsumexp -inf, the backward passes all zeros (the
///   policy of JAX's `where=`, Optax and PyTorch's attention path).
/// - The kept entries follow smax::softmax's policy exactly: kept entries that are all -inf
///   are not "fully masked" (NaN there, as softmax of all -inf); a NaN among them makes them
///   all NaN; one kept +inf is one-hot, two are NaN; T = 0 is the argmax among the kept
///   entries (ties split equally), T = +inf is uniform over the kept entries that are not
///   -inf. Accuracy is softmax's (this header runs the same kernels).
///
/// Speed: the kept logits are written into the output and smax::softmax's kernels run there
/// in place, a block of distributions at a time while it is in cache. The masked places get
/// a stand-in logit 80 T (float; 700 T for double) below the kept maximum, whose exp is a
/// tiny normal number that changes no sum (exp(-inf) would take the vectorised exp's slow
/// underflow path), and are set to 0 (-inf) afterwards; short contiguous rows take -inf
/// directly. A causal mask only reads and exponentiates the kept prefixes.
///
/// Allocation: the `_into` forms allocate nothing when the input has direct access (and is
/// disjoint from the output or the output itself) and the mask has direct access or is
/// causal. An expression mask is first evaluated into one boolean temporary (so it may
/// read the very array being overwritten in place), as is an expression input.
///
/// Errors: invalid arguments throw smax::error before anything is written: the temperature
/// first, then the shapes ('dy', 'mask', 'out').

#if defined(__GNUC__)
#pragma GCC diagnostic push
// Packet types (__m256 ...) as template arguments drop their alignment attributes; harmless
// here, as in smax/detail/kernels.hpp.
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace smax {

namespace detail {

template <typename M>
inline constexpr bool is_causal_mask = std::is_same_v<std::decay_t<M>, causal_mask>;

template <typename M>
inline constexpr bool is_dense_mask = std::is_base_of_v<Eigen::DenseBase<M>, M>;

template <typename D, typename M>
constexpr void static_check_mask() {
  static_assert(is_causal_mask<M> || is_dense_mask<M>,
                "smax: 'mask' must be a boolean Eigen object of the input's shape (Array<bool>, "
                "Matrix<bool>, Map, Block or an expression such as (x.array() > 0); true = keep) "
                "or smax::causal / smax::causal_mask{offset}");
  if constexpr (is_dense_mask<M>) {
    static_assert(std::is_same_v<typename M::Scalar, bool>,
                  "smax: 'mask' must have scalar type bool (true = keep); convert other types "
                  "with a comparison, e.g. (m.array() != 0)");
    static_check_same_shape<D, M>();
  }
}

template <typename M>
constexpr void static_check_vector_mask() {
  static_assert(!is_causal_mask<M>,
                "smax: smax::causal masks a 2-D input (query i, key j): pass the axis after "
                "the mask, smax::rowwise (each row is a query) or smax::colwise");
}

template <typename D, typename M>
void check_mask_shape(const char* function, const Eigen::DenseBase<D>& z, const M& mask,
                      const char* z_name) {
  if constexpr (is_dense_mask<M>) {
    if (mask.rows() != z.rows() || mask.cols() != z.cols()) {
      fail(function, "mask", "of shape " + shape_text(mask.rows(), mask.cols()),
           "the shape of '" + std::string(z_name) + "' (" + shape_text(z.rows(), z.cols()) + ")");
    }
  }
}

/// Calls f with the mask in a form that can be read at any time: a causal mask or a boolean
/// object with direct access as it is, an expression evaluated once into a plain object
/// (before the output is written: the expression may read the array written in place).
template <typename M, typename F>
void with_mask(const M& mask, F&& f) {
  if constexpr (is_causal_mask<M>) {
    f(mask);
  } else if constexpr (has_direct_access<M>) {
    f(mask);
  } else {
    const typename M::PlainObject plain = mask;
    f(plain);
  }
}

/// A causal mask over a batch: distribution d keeps its first kept(d) entries.
struct causal_keep {
  Index offset;
  Index length;

  /// offset clamped to [-count, length], where every value beyond gives the same masks, so
  /// that d + offset and i - offset never overflow.
  causal_keep(Index offset_, Index count, Index length_)
      : offset(std::clamp(offset_, -count, length_)), length(length_) {}

  Index kept(Index d) const { return std::clamp(d + offset + 1, Index(0), length); }
};

template <typename M, typename Axis>
auto keep_of(const M& mask, Axis axis, Index count, Index length) {
  if constexpr (is_causal_mask<M>) {
    static_cast<void>(axis);
    return causal_keep(mask.offset, count, length);
  } else {
    static_cast<void>(count);
    static_cast<void>(length);
    return make_batch(mask, axis);
  }
}

/// What a masked-out entry holds: probability 0, log-probability -inf.
template <forward_op Op, typename T>
constexpr T masked_value() {
  return Op == forward_op::softmax ? T(0) : -std::numeric_limits<T>::infinity();
}

// ---------------------------------------------------------------------------------------
// Selecting by a boolean mask, a packet at a time.
//
// Compilers do not vectorise loops over a bool mask reliably (GCC 12 and clang 14 leave
// the masked maximum scalar everywhere and the select scalar without AVX2), and branches
// on a random mask mispredict half the time. So the bytes of ps bools are widened into a
// lane mask by hand where the target allows (x86: SSE2, AVX2, AVX-512F); elsewhere the
// loops are scalar and branch-free.

/// keep_select<Packet>::run(k, a, b): lane j is k[j] ? a[j] : b[j], for the ps bools at k.
template <typename Packet>
struct keep_select {
  static constexpr bool available = false;
};

#if defined(EIGEN_VECTORIZE_SSE2)
template <>
struct keep_select<Eigen::internal::Packet4f> {
  static constexpr bool available = true;
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet4f run(const bool* k,
                                                           const Eigen::internal::Packet4f& a,
                                                           const Eigen::internal::Packet4f& b) {
    std::int32_t bytes;
    std::memcpy(&bytes, k, 4);
    const __m128i zero = _mm_setzero_si128();
    const __m128i w = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(bytes), zero), zero);
    // 0 - 1 sets every bit of a kept lane.
    return Eigen::internal::pselect(_mm_castsi128_ps(_mm_sub_epi32(zero, w)), a, b);
  }
};
template <>
struct keep_select<Eigen::internal::Packet2d> {
  static constexpr bool available = true;
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet2d run(const bool* k,
                                                           const Eigen::internal::Packet2d& a,
                                                           const Eigen::internal::Packet2d& b) {
    std::uint16_t bytes;
    std::memcpy(&bytes, k, 2);
    const __m128i zero = _mm_setzero_si128();
    const __m128i w = _mm_unpacklo_epi32(
        _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(bytes), zero), zero), zero);
    return Eigen::internal::pselect(_mm_castsi128_pd(_mm_sub_epi64(zero, w)), a, b);
  }
};
#endif
#if defined(EIGEN_VECTORIZE_AVX2)
template <>
struct keep_select<Eigen::internal::Packet8f> {
  static constexpr bool available = true;
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet8f run(const bool* k,
                                                           const Eigen::internal::Packet8f& a,
                                                           const Eigen::internal::Packet8f& b) {
    const __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(k)));
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_setzero_si256(), w)));
  }
};
template <>
struct keep_select<Eigen::internal::Packet4d> {
  static constexpr bool available = true;
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet4d run(const bool* k,
                                                           const Eigen::internal::Packet4d& a,
                                                           const Eigen::internal::Packet4d& b) {
    std::int32_t bytes;
    std::memcpy(&bytes, k, 4);
    const __m256i w = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(bytes));
    return _mm256_blendv_pd(b, a, _mm256_castsi256_pd(_mm256_sub_epi64(_mm256_setzero_si256(), w)));
  }
};
#endif
#if defined(EIGEN_VECTORIZE_AVX512)
template <>
struct keep_select<Eigen::internal::Packet16f> {
  static constexpr bool available = true;
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet16f run(const bool* k,
                                                            const Eigen::internal::Packet16f& a,
                                                            const Eigen::internal::Packet16f& b) {
    const __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k)));
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(w, w), b, a);
  }
};
template <>
struct keep_select<Eigen::internal::Packet8d> {
  static constexpr bool available = true;
  static EIGEN_ALWAYS_INLINE Eigen::internal::Packet8d run(const bool* k,
                                                           const Eigen::internal::Packet8d& a,
                                                           const Eigen::internal::Packet8d& b) {
    const __m512i w = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(k)));
    return _mm512_mask_blend_pd(_mm512_test_epi64_mask(w, w), b, a);
  }
};
#endif

template <typename T>
using packet_of = typename Eigen::internal::packet_traits<T>::type;

/// keep ? a : b without a branch (a branch on a random mask mispredicts half the time, and
/// compilers turn the plain conditional into one): a select on the bits for float and
/// double, the conditional elsewhere.
template <typename T>
EIGEN_ALWAYS_INLINE T keep_or(bool keep, T a, T b) {
  if constexpr (has_float_bits<T>) {
    using U = typename float_bits<T>::type;
    const U m = U(0) - static_cast<U>(keep);
    const U r = (bits_of(a) & m) | (bits_of(b) & ~m);
    T result;
    std::memcpy(&result, &r, sizeof result);
    return result;
  } else {
    return keep ? a : b;
  }
}

/// True when the mask loops below run a packet at a time for T (bools are bytes of 0 or 1).
template <typename T>
inline constexpr bool has_keep_select = has_packet_exp<T>&& keep_select<packet_of<T>>::available &&
                                        sizeof(bool) == 1;

/// max over i < n of (k[i] ? z[i] : -inf): -inf when nothing, or only -inf, is kept. (A
/// kept NaN may or may not show; the kernels see it either way.)
template <typename T>
T kept_max(const T* z, Index zs, const bool* k, Index ks, Index n) {
  const T ninf = -std::numeric_limits<T>::infinity();
  T m = ninf;
  Index i = 0;
  if constexpr (has_keep_select<T>) {
    namespace ei = Eigen::internal;
    using Packet = packet_of<T>;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (zs == 1 && ks == 1 && n >= 2 * ps) {
      const Packet pinf = ei::pset1<Packet>(ninf);
      Packet m0 = pinf, m1 = pinf;
      for (; i + 2 * ps <= n; i += 2 * ps) {
        m0 = ei::pmax(m0, keep_select<Packet>::run(k + i, ei::ploadu<Packet>(z + i), pinf));
        m1 = ei::pmax(m1,
                      keep_select<Packet>::run(k + i + ps, ei::ploadu<Packet>(z + i + ps), pinf));
      }
      m = ei::predux_max(ei::pmax(m0, m1));
    }
  }
  for (; i < n; ++i) {
    const T x = keep_or(k[i * ks], z[i * zs], ninf);
    m = x > m ? x : m;
  }
  return m;
}

/// m[i] = max(m[i], k[i] ? z[i] : -inf) for i < n: the running maxima of distributions
/// that lie side by side.
template <typename T>
void kept_max_across(const T* z, Index zs, const bool* k, Index ks, T* m, Index n) {
  const T ninf = -std::numeric_limits<T>::infinity();
  Index i = 0;
  if constexpr (has_keep_select<T>) {
    namespace ei = Eigen::internal;
    using Packet = packet_of<T>;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (zs == 1 && ks == 1) {
      const Packet pinf = ei::pset1<Packet>(ninf);
      for (; i + ps <= n; i += ps) {
        ei::pstoreu(m + i,
                    ei::pmax(ei::ploadu<Packet>(m + i),
                             keep_select<Packet>::run(k + i, ei::ploadu<Packet>(z + i), pinf)));
      }
    }
  }
  for (; i < n; ++i) {
    const T x = keep_or(k[i * ks], z[i * zs], ninf);
    m[i] = x > m[i] ? x : m[i];
  }
}

/// o[i] = k[i] ? z[i] : fill[i * fs] for i < n (fs = 0: one fill value). o may be z.
template <typename T>
void keep_or_fill(const T* z, Index zs, const bool* k, Index ks, T* o, Index os, Index n,
                  const T* fill, Index fs) {
  Index i = 0;
  if constexpr (has_keep_select<T>) {
    namespace ei = Eigen::internal;
    using Packet = packet_of<T>;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (zs == 1 && ks == 1 && os == 1) {
      if (fs == 0) {
        const Packet f = ei::pset1<Packet>(*fill);
        for (; i + ps <= n; i += ps) {
          ei::pstoreu(o + i, keep_select<Packet>::run(k + i, ei::ploadu<Packet>(z + i), f));
        }
      } else if (fs == 1) {
        for (; i + ps <= n; i += ps) {
          ei::pstoreu(o + i, keep_select<Packet>::run(k + i, ei::ploadu<Packet>(z + i),
                                                      ei::ploadu<Packet>(fill + i)));
        }
      }
    }
  }
  for (; i < n; ++i) o[i * os] = keep_or(k[i * ks], z[i * zs], fill[i * fs]);
}

/// True when distribution d keeps at least one entry.
inline bool keeps_any(const batch<const bool>& m, Index d, Index n) {
  const bool* k = m.data + d * m.dstride;
  for (Index i = 0; i < n; ++i) {
    if (k[i * m.kstride]) return true;
  }
  return false;
}

/// The values written into the masked places of n distributions whose kept maxima are
/// m[0..n), into v[0..n), so that the softmax kernels compute no exp that underflows: such
/// exps (exp(-inf) among them) leave the vectorised exp's fast path and cost several times a
/// normal one. Each is v = m - 80 T (float; m - 700 T for double): the kernels' exponent
/// (v - m) / T lies in [-86, -70] ([-705, -690]), so exp(v) is a normal number yet changes no
/// sum of exponentials, which holds at least 1 (the maximum's own term), by more than
/// n e^-70 (n e^-690): nothing for any n that fits in memory. The masked outputs are
/// overwritten afterwards. -inf (exact, slower) where the kernels compute no exp (m not
/// finite, T = 0 or +inf), for long double, and where no such v exists (T so small against
/// |m| that v rounds to m, or so large that it overflows). Branch-free: short distributions
/// side by side need one per lane.
template <typename T>
void masked_fillers(const T* m, T* v, Index n, T temperature) {
  const T ninf = -std::numeric_limits<T>::infinity();
  if constexpr (!has_packet_exp<T>) {
    static_cast<void>(m);
    std::fill(v, v + n, ninf);
  } else {
    constexpr bool single = std::is_same_v<T, float>;
    constexpr T target = single ? T(-80) : T(-700);
    constexpr T lowest = single ? T(-86) : T(-705);
    constexpr T highest = single ? T(-70) : T(-690);
    if (temperature == T(0) || is_pos_inf(temperature)) {
      std::fill(v, v + n, ninf);
      return;
    }
    const shift<T> sh(T(0), temperature);  // half, hT and divide, as the kernels use them
    for (Index i = 0; i < n; ++i) {
      const T mi = m[i];
      const T vi = mi + target * temperature;
      // The exponent the kernels will compute.
      const T d = sh.divide ? (sh.half * vi - sh.half * mi) / sh.hT : vi - mi;
      // & rather than &&: no branches.
      const int ok = static_cast<int>(is_finite(mi)) & static_cast<int>(is_finite(vi)) &
                     static_cast<int>(d >= lowest) & static_cast<int>(d <= highest);
      v[i] = keep_or(ok != 0, vi, ninf);
    }
  }
}

/// masked_fillers for one distribution.
template <typename T>
T masked_filler(T m, T temperature) {
  T v;
  masked_fillers(&m, &v, Index(1), temperature);
  return v;
}

/// Most distributions selected and normalised together (the bound of the stack arrays of
/// per-distribution maxima, fill values and flags): a whole float panel.
inline constexpr Index masked_block_max = 1024;
/// Entries per block of distributions: the block is selected, then normalised while it is
/// still in cache (64 KiB of float).
inline constexpr Index masked_block_elements = Index(1) << 14;

/// True when the distributions of out lie side by side (rows of a column-major matrix): the
/// mask passes then walk each position across them, as the kernels do.
template <typename T>
bool side_by_side(const batch<T>& out) {
  return out.kstride != 1 && out.dstride == 1;
}

/// Distributions per block: one long contiguous distribution at a time (forward_one works
/// on one anyway, and it stays in L1); distributions side by side longer than a lane tile
/// by whole panels (panel_max), whose passes walk each column slice in address order, where
/// blocks of a few lane blocks read a few cache lines per column at the column stride
/// (rowwise on a column-major float 1024x1000: 4.8x the row-major time); else whole lane
/// blocks, so that the vectorised-across kernels (forward_across, forward_short_rows) keep
/// their full width.
template <typename T>
Index masked_block(const batch<T>& out, Index length) {
  if (out.kstride == 1 && length > short_length<T>) return 1;
  static_assert(panel_max<T> <= masked_block_max, "a panel must fit the block's arrays");
  if (side_by_side(out) && length > tile_length<T>) return panel_max<T>;
  return std::clamp(masked_block_elements / length / lane_block * lane_block, lane_block,
                    masked_block_max);
}

template <typename T>
batch<const T> as_input(const batch<T>& b) {
  return batch<const T>{b.data, b.count, b.length, b.dstride, b.kstride};
}

/// Masked forward pass of a block of short distributions stored one after another (the
/// kernels' short-row paths): -inf in the masked places, the kernels in place, then the
/// distributions without a limit. No filler here: the per-distribution maxima it needs,
/// taken one short distribution at a time, cost more than the slow exps of -inf (measured at
/// 4096 x 10 float: 3.3 against 2.5 times the unmasked time; with exp.hpp selecting 0 for
/// lanes below its range instead of scaling them, the -inf route costs 1.3 times).
template <forward_op Op, typename T>
void masked_forward_short(const batch<const T>& in, const batch<T>& out, const batch<const bool>& m,
                          Index d0, Index d1, T temperature) {
  const T ninf = -std::numeric_limits<T>::infinity();
  const T empty = masked_value<Op, T>();
  const Index n = in.length, nb = d1 - d0;
  if (in.kstride == 1 && out.kstride == 1 && m.kstride == 1 && in.dstride == n &&
      out.dstride == n && m.dstride == n) {
    // One run over the whole block.
    keep_or_fill(in.data + d0 * n, Index(1), m.data + d0 * n, Index(1), out.data + d0 * n, Index(1),
                 nb * n, &ninf, Index(0));
  } else {
    for (Index d = d0; d < d1; ++d) {
      keep_or_fill(in.data + d * in.dstride, in.kstride, m.data + d * m.dstride, m.kstride,
                   out.data + d * out.dstride, out.kstride, n, &ninf, Index(0));
    }
  }
  const batch<T> ob = sub_batch(out, d0, d1);
  run_forward_serial<Op>(as_input(ob), ob, temperature);
  // With -inf in the masked places, the kernels already wrote them exactly 0 (-inf),
  // unless the distribution has no limit, which they fill with NaN: nothing kept at all,
  // or kept entries that are NaN, two +inf or all -inf.
  for (Index d = d0; d < d1; ++d) {
    T* o = out.data + d * out.dstride;
    if (!is_nan(o[0])) continue;
    if (keeps_any(m, d, n)) {
      keep_or_fill(o, out.kstride, m.data + d * m.dstride, m.kstride, o, out.kstride, n, &empty,
                   Index(0));
    } else {
      fill(o, n, out.kstride, empty);
    }
  }
}

/// Masked forward pass of distributions [d0, d1) under a boolean mask: the kept maxima, the
/// kernel input (the kept logits, masked_filler elsewhere), the kernels in place, then the
/// masked places and the distributions that keep nothing. in and out are disjoint or the
/// same (with_readable).
template <forward_op Op, typename T>
void masked_forward_block(const batch<const T>& in, const batch<T>& out, const batch<const bool>& m,
                          Index d0, Index d1, T temperature) {
  const bool across = side_by_side(out);
  if (!across && masked_block(out, in.length) > 1) {
    masked_forward_short<Op>(in, out, m, d0, d1, temperature);
    return;
  }
  // Else a block of distributions side by side, or a single long one.
  const T ninf = -std::numeric_limits<T>::infinity();
  const T empty = masked_value<Op, T>();
  const Index n = in.length, nb = d1 - d0;
  alignas(64) T mx[masked_block_max];
  alignas(64) T fill_values[masked_block_max];
  if (across) {
    std::fill(mx, mx + nb, ninf);
    for (Index i = 0; i < n; ++i) {
      kept_max_across(in.data + d0 * in.dstride + i * in.kstride, in.dstride,
                      m.data + d0 * m.dstride + i * m.kstride, m.dstride, mx, nb);
    }
  } else {
    mx[0] = kept_max(in.data + d0 * in.dstride, in.kstride, m.data + d0 * m.dstride, m.kstride, n);
  }
  masked_fillers(mx, fill_values, nb, temperature);
  // Distributions that keep nothing: 0 in every place, so that the lane kernels see finite
  // maxima (an all -inf lane would come out NaN); their outputs are overwritten below. (A
  // -inf maximum with something kept, all -inf, keeps the -inf filler: the kernels must see
  // it to give NaN.)
  bool nothing[masked_block_max] = {};  // nb >= 1 always; zeroed for GCC -Wmaybe-uninitialized
  bool any_neg_inf = false;
  for (Index j = 0; j < nb; ++j) any_neg_inf = any_neg_inf || is_neg_inf(mx[j]);
  if (across && any_neg_inf) {
    // Whether each distribution keeps anything, walking the mask position by position
    // across them as the passes above do: a distribution at a time would read its mask
    // entries at the column stride, a cache line each.
    unsigned char kept[masked_block_max] = {};  // | vectorises, || does not
    for (Index i = 0; i < n; ++i) {
      const bool* k = m.data + d0 * m.dstride + i * m.kstride;
      if (m.dstride == 1) {
        for (Index j = 0; j < nb; ++j) kept[j] = static_cast<unsigned char>(kept[j] | k[j]);
      } else {
        for (Index j = 0; j < nb; ++j) {
          kept[j] = static_cast<unsigned char>(kept[j] | k[j * m.dstride]);
        }
      }
    }
    for (Index j = 0; j < nb; ++j) nothing[j] = is_neg_inf(mx[j]) && kept[j] == 0;
  } else if (any_neg_inf) {
    for (Index j = 0; j < nb; ++j) nothing[j] = is_neg_inf(mx[j]) && !keeps_any(m, d0 + j, n);
  }
  for (Index j = 0; j < nb; ++j) {
    if (nothing[j]) fill_values[j] = T(0);
  }
  if (!across && nothing[0]) {
    fill(out.data + d0 * out.dstride, n, out.kstride, empty);
    return;
  }
  if (across) {
    for (Index i = 0; i < n; ++i) {
      keep_or_fill(in.data + d0 * in.dstride + i * in.kstride, in.dstride,
                   m.data + d0 * m.dstride + i * m.kstride, m.dstride,
                   out.data + d0 * out.dstride + i * out.kstride, out.dstride, nb, fill_values,
                   Index(1));
    }
  } else {
    keep_or_fill(in.data + d0 * in.dstride, in.kstride, m.data + d0 * m.dstride, m.kstride,
                 out.data + d0 * out.dstride, out.kstride, n, fill_values, Index(0));
  }

  const batch<T> ob = sub_batch(out, d0, d1);
  run_forward_serial<Op>(as_input(ob), ob, temperature);

  // The masked places hold the kernels' outputs for the filler (tiny, or 0 / -inf for a
  // -inf filler) or NaN (kept entries without a limit: NaN, two +inf, all -inf): masked
  // entries are absent whatever the kept ones give.
  if (across) {
    for (Index i = 0; i < n; ++i) {
      T* o = out.data + d0 * out.dstride + i * out.kstride;
      keep_or_fill(o, out.dstride, m.data + d0 * m.dstride + i * m.kstride, m.dstride, o,
                   out.dstride, nb, &empty, Index(0));
    }
  }
  if (across) {
    // A distribution that keeps nothing is masked in every place: the pass above has
    // written it. (Filling it again here, a column stride apart, took 54-65% of a
    // masked_softmax of a column-major 1024 x 1000 float matrix, every 8th row masked.)
    return;
  } else if (is_finite(fill_values[0]) || is_nan(out.data[d0 * out.dstride])) {
    T* o = out.data + d0 * out.dstride;
    keep_or_fill(o, out.kstride, m.data + d0 * m.dstride, m.kstride, o, out.kstride, n, &empty,
                 Index(0));
  }
}

/// The first of distributions [d0, d1) that keeps position i under a causal mask: d keeps
/// i when i < kept(d), that is when d >= i - offset.
inline Index first_keeping(const causal_keep& c, Index i, Index d0, Index d1) {
  return std::clamp(i - c.offset, d0, d1);
}

/// Writes the kernel input of distributions [d0, d1) under a causal mask, up to position
/// lmax (the longest kept prefix of the block): the logits on each kept prefix, a filler
/// after it (masked_filler of the prefix's maximum).
template <typename T>
void select_prefixes(const batch<const T>& in, const batch<T>& out, const causal_keep& c, Index d0,
                     Index d1, Index lmax, T temperature) {
  const bool in_place = in.data == out.data;
  if (!side_by_side(out)) {
    for (Index d = d0; d < d1; ++d) {
      const T* z = in.data + d * in.dstride;
      T* o = out.data + d * out.dstride;
      const Index kept = c.kept(d);
      const T v = masked_filler(max_fast(z, kept, in.kstride), temperature);
      if (!in_place) {
        for (Index i = 0; i < kept; ++i) o[i * out.kstride] = z[i * in.kstride];
      }
      fill(o + kept * out.kstride, lmax - kept, out.kstride, v);
    }
    return;
  }
  // Side by side: position by position across the distributions that keep it, as Eigen
  // array operations on the contiguous runs.
  using Run = Eigen::Array<T, Eigen::Dynamic, 1>;
  using Strided = Eigen::Map<const Run, 0, Eigen::InnerStride<>>;
  const Index nb = d1 - d0;
  alignas(64) T buf[masked_block_max];
  Eigen::Map<Run> fill_values(buf, nb);
  fill_values.setConstant(-std::numeric_limits<T>::infinity());
  const auto kept_run = [&](Index i, Index first) {
    return Strided(in.data + first * in.dstride + i * in.kstride, d1 - first,
                   Eigen::InnerStride<>(in.dstride));
  };
  for (Index i = 0; i < lmax; ++i) {
    const Index first = first_keeping(c, i, d0, d1);
    auto f = fill_values.segment(first - d0, d1 - first);
    f = f.max(kept_run(i, first));
  }
  masked_fillers(buf, buf, nb, temperature);
  for (Index i = 0; i < lmax; ++i) {
    const Index first = first_keeping(c, i, d0, d1);
    Eigen::Map<Run> o(out.data + d0 + i * out.kstride, nb);  // out.dstride == 1
    o.head(first - d0) = fill_values.head(first - d0);
    if (!in_place) o.tail(d1 - first) = kept_run(i, first);
  }
}

/// Masked forward pass of distributions [d0, d1) under a causal mask: the kernels see only
/// the block's longest kept prefix.
template <forward_op Op, typename T>
void masked_forward_block(const batch<const T>& in, const batch<T>& out, const causal_keep& c,
                          Index d0, Index d1, T temperature) {
  const Index lmax = c.kept(d1 - 1);  // kept(d) grows with d
  if (lmax > 0) {
    const batch<T> ob{out.data + d0 * out.dstride, d1 - d0, lmax, out.dstride, out.kstride};
    if (d1 - d0 == 1) {
      // One distribution: its kept prefix, straight from the input.
      run_forward_serial<Op>(
          batch<const T>{in.data + d0 * in.dstride, 1, lmax, in.dstride, in.kstride}, ob,
          temperature);
    } else {
      select_prefixes(in, out, c, d0, d1, lmax, temperature);
      run_forward_serial<Op>(as_input(ob), ob, temperature);
    }
  }
  // Everything past each kept prefix (where the kernels saw a filler), and whole
  // distributions that keep nothing.
  const T empty = masked_value<Op, T>();
  if (side_by_side(out)) {
    for (Index i = 0; i < in.length; ++i) {
      T* o = out.data + d0 + i * out.kstride;
      std::fill(o, o + (first_keeping(c, i, d0, d1) - d0), empty);
    }
  } else {
    for (Index d = d0; d < d1; ++d) {
      const Index kept = c.kept(d);
      fill(out.data + d * out.dstride + kept * out.kstride, in.length - kept, out.kstride, empty);
    }
  }
}

template <forward_op Op, typename T, typename Keep>
void run_masked_forward(const batch<const T>& in, const batch<T>& out, const Keep& keep,
                        T temperature) {
  if (in.count == 0 || in.length == 0) return;  // nothing to write
  const Index block = masked_block(out, in.length);
  for_each_range(in.count, in.length, lane_block, [&](Index begin, Index end) {
    for (Index d0 = begin; d0 < end; d0 += block) {
      masked_forward_block<Op>(in, out, keep, d0, std::min(end, d0 + block), temperature);
    }
  });
}

template <forward_op Op, typename Out, typename D, typename M, typename Axis>
void masked_forward_into(const char* function, const Eigen::DenseBase<Out>& out,
                         const Eigen::DenseBase<D>& z, const M& mask, Axis axis,
                         typename D::Scalar temperature) {
  static_check_scalar<D>();
  static_check_output<Out, D>();
  static_check_same_shape<Out, D>();
  static_check_mask<D, M>();
  check_forward_temperature(function, temperature);
  check_mask_shape(function, z, mask, "z");
  check_output_shape(function, out, z.rows(), z.cols(), "z");
  with_mask(mask, [&](const auto& mm) {
    with_readable(z, out, [&](const auto& zz) {
      resize_to(out, z.rows(), z.cols());
      const auto in = make_batch(zz, axis);
      run_masked_forward<Op>(in, output_batch(out, axis), keep_of(mm, axis, in.count, in.length),
                             temperature);
    });
  });
}

template <forward_op Op, typename D, typename M, typename Axis>
typename D::PlainObject masked_forward_value(const char* function, const Eigen::DenseBase<D>& z,
                                             const M& mask, Axis axis,
                                             typename D::Scalar temperature) {
  static_check_scalar<D>();
  static_check_mask<D, M>();
  check_forward_temperature(function, temperature);
  check_mask_shape(function, z, mask, "z");
  typename D::PlainObject result;
  with_mask(mask, [&](const auto& mm) {
    if constexpr (has_direct_access<D>) {
      result.resize(z.rows(), z.cols());
      const auto in = make_batch(z, axis);
      run_masked_forward<Op>(in, output_batch(result, axis), keep_of(mm, axis, in.count, in.length),
                             temperature);
    } else {
      result = z;  // evaluate the expression once, then work in place
      const auto in = make_batch(result, axis);
      run_masked_forward<Op>(in, output_batch(result, axis), keep_of(mm, axis, in.count, in.length),
                             temperature);
    }
  });
  return result;
}

/// logsumexp of the kept entries of one distribution under a boolean mask.
template <typename T>
T masked_logsumexp_one(const T* x, Index xs, const bool* k, Index ks, Index n) {
  if (xs == 1 && ks == 1) {
    // Contiguous: the kept maximum, then chunks with -inf in the masked places (vectorised
    // selects; exp(-inf) is an exact 0 off the exp's fast path), where the loops below
    // branch or gather one entry at a time (1024 x 1000 float, 1 in 4 masked: 8x).
    const T ninf = -std::numeric_limits<T>::infinity();
    const T m = kept_max(x, xs, k, ks, n);
    if (!is_finite(m)) {
      // A kept NaN may or may not have reached the maximum.
      for (Index i = 0; i < n; ++i) {
        if (k[i] && is_nan(x[i])) return std::numeric_limits<T>::quiet_NaN();
      }
      return m;  // -inf: nothing kept, or only -inf; +inf: the limit
    }
    const shift<T> sh(m, T(1));
    compensated_sum<acc_t<T>> acc;
    alignas(64) T buf[gather_size];
    for (Index i0 = 0; i0 < n; i0 += gather_size) {
      const Index c = std::min(gather_size, n - i0);
      keep_or_fill(x + i0, Index(1), k + i0, Index(1), buf, Index(1), c, &ninf, Index(0));
      exp_sum<false>(buf, 1, static_cast<T*>(nullptr), 1, c, sh, acc);  // a NaN reaches it
    }
    return static_cast<T>(static_cast<acc_t<T>>(m) + std::log(acc.total()));
  }
  T m = -std::numeric_limits<T>::infinity();
  bool nan = false;
  for (Index i = 0; i < n; ++i) {
    if (k[i * ks]) {
      const T v = x[i * xs];
      nan = nan || is_nan(v);
      m = v > m ? v : m;
    }
  }
  if (nan) return std::numeric_limits<T>::quiet_NaN();
  if (!is_finite(m)) return m;  // -inf: nothing kept, or only -inf; +inf: the limit
  // The kept entries, packed into a stack buffer a chunk at a time, through the vectorised
  // exp-sum: masked entries cost no exp.
  const shift<T> sh(m, T(1));
  compensated_sum<acc_t<T>> acc;
  alignas(64) T buf[gather_size];
  Index c = 0;
  for (Index i = 0; i < n; ++i) {
    buf[c] = x[i * xs];
    c += k[i * ks] ? 1 : 0;
    if (c == gather_size) {
      exp_sum<false>(buf, 1, static_cast<T*>(nullptr), 1, c, sh, acc);
      c = 0;
    }
  }
  if (c > 0) exp_sum<false>(buf, 1, static_cast<T*>(nullptr), 1, c, sh, acc);
  return static_cast<T>(static_cast<acc_t<T>>(m) + std::log(acc.total()));
}

template <typename T>
T masked_logsumexp_at(const batch<const T>& b, const batch<const bool>& m, Index d) {
  return masked_logsumexp_one(b.data + d * b.dstride, b.kstride, m.data + d * m.dstride, m.kstride,
                              b.length);
}

template <typename T>
T masked_logsumexp_at(const batch<const T>& b, const causal_keep& c, Index d) {
  return logsumexp_one(b.data + d * b.dstride, b.kstride, c.kept(d));
}

/// masked_logsumexp of the nb <= lane_block distributions [d0, d0 + nb) lying side by side
/// (b.dstride == 1, the rows of a column-major matrix), vectorised across them as
/// logsumexp_lanes is: the kept maxima walking the columns, then per column the kept
/// entries (-inf elsewhere, exp 0) summed exactly per lane over lane_chunk columns and
/// compensated in acc_t. A distribution at a time would read each entry and mask value a
/// column stride apart (1024 x 1000 float: 0.16 G/s). Distributions whose kept maximum is
/// not finite take masked_logsumexp_one.
template <typename T>
void masked_logsumexp_lanes(const batch<const T>& b, const batch<const bool>& m, Index d0, Index nb,
                            T* out, Index os) {
  using Lanes = Eigen::Array<T, Eigen::Dynamic, 1, Eigen::ColMajor, lane_block, 1>;
  using Sums = Eigen::Array<acc_t<T>, Eigen::Dynamic, 1, Eigen::ColMajor, lane_block, 1>;
  using Keep = Eigen::Array<bool, Eigen::Dynamic, 1, Eigen::ColMajor, lane_block, 1>;
  const Index n = b.length;
  const T ninf = -std::numeric_limits<T>::infinity();
  alignas(64) T mx[lane_block];
  std::fill(mx, mx + nb, ninf);
  for (Index i = 0; i < n; ++i) {
    kept_max_across(b.data + d0 + i * b.kstride, Index(1), m.data + d0 * m.dstride + i * m.kstride,
                    m.dstride, mx, nb);
  }
  Lanes base(nb);
  for (Index j = 0; j < nb; ++j) base(j) = is_finite(mx[j]) ? mx[j] : T(0);
  const Lanes minus_inf = Lanes::Constant(nb, ninf);
  compensated_sum<Sums> acc(Sums::Zero(nb));
  for (Index k0 = 0; k0 < n; k0 += lane_chunk) {
    // Seeded with 1, above every kept exponential of a lane with a finite maximum (the
    // others are recomputed below): fast_two_sum.
    Lanes h = Lanes::Ones(nb), l = Lanes::Zero(nb);
    for (Index k = k0; k < std::min(n, k0 + lane_chunk); ++k) {
      const Eigen::Map<const Lanes> x(b.data + d0 + k * b.kstride, nb);
      const Eigen::Map<const Keep, 0, Eigen::InnerStride<>> keep(
          m.data + d0 * m.dstride + k * m.kstride, nb, Eigen::InnerStride<>(m.dstride));
      const Lanes v = keep.select(x - base, minus_inf);
      fast_two_sum_lanes(h, l, v.unaryExpr(exp_op<T>()));
    }
    acc.add((h - T(1)).template cast<acc_t<T>>(), l.template cast<acc_t<T>>());
  }
  const auto log_s = lanes_log(acc.total());
  for (Index j = 0; j < nb; ++j) {
    const Index d = d0 + j;
    out[d * os] = is_finite(mx[j]) ? static_cast<T>(static_cast<acc_t<T>>(mx[j]) + log_s(j))
                                   : masked_logsumexp_one(b.data + d * b.dstride, b.kstride,
                                                          m.data + d * m.dstride, m.kstride, n);
  }
}

/// masked_logsumexp of distributions [begin, end) into out[d * os].
template <typename T>
void masked_logsumexp_range(const batch<const T>& b, const batch<const bool>& m, Index begin,
                            Index end, T* out, Index os) {
  if (b.kstride != 1 && b.dstride == 1 && b.length > 0) {
    for (Index d0 = begin; d0 < end; d0 += lane_block) {
      masked_logsumexp_lanes(b, m, d0, std::min(lane_block, end - d0), out, os);
    }
    return;
  }
  for (Index d = begin; d < end; ++d) out[d * os] = masked_logsumexp_at(b, m, d);
}

template <typename T>
void masked_logsumexp_range(const batch<const T>& b, const causal_keep& c, Index begin, Index end,
                            T* out, Index os) {
  for (Index d = begin; d < end; ++d) out[d * os] = masked_logsumexp_at(b, c, d);
}

template <typename Out, typename D, typename M, typename Axis>
void masked_logsumexp_impl(const char* function, const Eigen::DenseBase<Out>& out,
                           const Eigen::DenseBase<D>& z, const M& mask, Axis axis) {
  static_check_scalar<D>();
  static_check_output<Out, D>();
  static_check_mask<D, M>();
  static_assert(Out::IsVectorAtCompileTime,
                "smax::masked_logsumexp_into: 'out' must be a compile-time vector (one value "
                "per distribution)");
  const Index count = std::is_same_v<Axis, rowwise_t> ? z.rows() : z.cols();
  check_mask_shape(function, z, mask, "z");
  check_output_length(function, out, count, "one value per distribution of 'z'");
  with_mask(mask, [&](const auto& mm) {
    with_readable(z, out, [&](const auto& zz) {
      resize_to_length(out, count);
      const auto b = make_batch(zz, axis);
      const auto keep = keep_of(mm, axis, b.count, b.length);
      auto& o = writable(out);
      const Index os = o.innerStride();
      for_each_range(b.count, b.length, lane_block, [&](Index begin, Index end) {
        masked_logsumexp_range(b, keep, begin, end, o.data(), os);
      });
    });
  });
}

/// Masked backward pass of one distribution under a boolean mask: the kept part of <y, dy>
/// (softmax) or of sum(dy) (log_softmax), then the unmasked formula, then exact zeros in the
/// masked places. The sums see 0 in the masked places, selected rather than multiplied in,
/// so a NaN or inf in y or dy there cannot leak; a chunk at a time through stack buffers,
/// with the unmasked kernels' dot products and their order of summation. out may alias y or
/// dy exactly.
template <backward_op Op, typename T>
void masked_backward_one(const T* y, Index ys, const T* dy, Index dys, T* out, Index os, Index n,
                         const batch<const bool>& m, Index d, T temperature) {
  const bool* k = m.data + d * m.dstride;
  const Index ks = m.kstride;
  const T zero(0);
  if (n <= backward_short_max && ys == 1 && dys == 1 && os == 1) {
    // Short rows: plain branch-free loops, as the unmasked kernels do (in order; AVX-512
    // float rows there take packet_row_backward's tree instead).
    acc_t<T> s(0);
    for (Index i = 0; i < n; ++i) {
      const acc_t<T> v = Op == backward_op::softmax
                             ? static_cast<acc_t<T>>(y[i]) * static_cast<acc_t<T>>(dy[i])
                             : static_cast<acc_t<T>>(dy[i]);
      s += keep_or(k[i * ks], v, acc_t<T>(0));
    }
    const T g = static_cast<T>(s);
    for (Index i = 0; i < n; ++i) {
      const bool keep = k[i * ks];
      T v;
      if constexpr (Op == backward_op::softmax) {
        v = y[i] * (dy[i] - g);
      } else {
        v = dy[i] - exp_op<T>()(keep_or(keep, y[i], zero)) * g;
      }
      out[i] = keep_or(keep, temperature == T(1) ? v : v / temperature, zero);
    }
    return;
  }
  alignas(64) T ybuf[gather_size];
  alignas(64) T dbuf[gather_size];
  compensated_sum<acc_t<T>> acc;
  for (Index i0 = 0; i0 < n; i0 += gather_size) {
    const Index len = std::min(gather_size, n - i0);
    keep_or_fill(dy + i0 * dys, dys, k + i0 * ks, ks, dbuf, Index(1), len, &zero, Index(0));
    if constexpr (Op == backward_op::softmax) {
      keep_or_fill(y + i0 * ys, ys, k + i0 * ks, ks, ybuf, Index(1), len, &zero, Index(0));
      acc.add(dot_blocks(ybuf, Index(1), dbuf, Index(1), len));
    } else {
      acc.add(dot_blocks(dbuf, Index(1), static_cast<const T*>(nullptr), Index(1), len));
    }
  }
  const T g = static_cast<T>(acc.total());
  if constexpr (Op == backward_op::softmax) {
    with_maps(y, ys, dy, dys, out, os, n, [&](const auto& ym, const auto& dym, auto&& om) {
      if (temperature == T(1)) {
        om = ym * (dym - g);
      } else {
        om = ym * (dym - g) / temperature;
      }
    });
  } else {
    // exp(logy) of the kept entries only, a chunk at a time: the masked ones are -inf (or
    // anything), whose exp would take the vectorised exp's slow underflow path.
    using Run = Eigen::Array<T, Eigen::Dynamic, 1>;
    for (Index i0 = 0; i0 < n; i0 += gather_size) {
      const Index len = std::min(gather_size, n - i0);
      keep_or_fill(y + i0 * ys, ys, k + i0 * ks, ks, ybuf, Index(1), len, &zero, Index(0));
      Eigen::Map<Run> e(ybuf, len);
      e = e.unaryExpr(exp_op<T>());
      with_maps(dy + i0 * dys, dys, ybuf, Index(1), out + i0 * os, os, len,
                [&](const auto& dym, const auto& em, auto&& om) {
                  if (temperature == T(1)) {
                    om = dym - em * g;
                  } else {
                    om = (dym - em * g) / temperature;
                  }
                });
    }
  }
  keep_or_fill(out, os, k, ks, out, os, n, &zero, Index(0));
}

/// Masked backward pass of one distribution under a causal mask: the unmasked kernel on the
/// kept prefix, zeros after it.
template <backward_op Op, typename T>
void masked_backward_one(const T* y, Index ys, const T* dy, Index dys, T* out, Index os, Index n,
                         const causal_keep& c, Index d, T temperature) {
  const Index kept = c.kept(d);
  if constexpr (Op == backward_op::softmax) {
    softmax_backward_one(y, ys, dy, dys, out, os, kept, temperature);
  } else {
    log_softmax_backward_one(y, ys, dy, dys, out, os, kept, temperature);
  }
  fill(out + kept * os, n - kept, os, T(0));
}

template <backward_op Op, typename Out, typename Y, typename DY, typename M, typename Axis>
void masked_backward_into(const char* function, const Eigen::DenseBase<Out>& out,
                          const Eigen::DenseBase<Y>& y, const Eigen::DenseBase<DY>& dy,
                          const M& mask, Axis axis, typename Y::Scalar temperature) {
  using T = typename Y::Scalar;
  static_check_mask<Y, M>();
  const char* y_name = check_backward_inputs<Op, Out>(function, y, dy, temperature);
  check_mask_shape(function, y, mask, y_name);
  check_output_shape(function, out, y.rows(), y.cols(), y_name);
  with_mask(mask, [&](const auto& mm) {
    with_readable(y, out, [&](const auto& yy) {
      with_readable(dy, out, [&](const auto& dd) {
        resize_to(out, y.rows(), y.cols());
        const batch<const T> yb = make_batch(yy, axis);
        const batch<const T> db = make_batch(dd, axis);
        const batch<T> ob = output_batch(out, axis);
        if (yb.count == 0 || yb.length == 0) return;  // nothing to write
        const auto keep = keep_of(mm, axis, yb.count, yb.length);
        for_each_range(yb.count, yb.length, 1, [&](Index begin, Index end) {
          for (Index d = begin; d < end; ++d) {
            masked_backward_one<Op>(yb.data + d * yb.dstride, yb.kstride, db.data + d * db.dstride,
                                    db.kstride, ob.data + d * ob.dstride, ob.kstride, yb.length,
                                    keep, d, temperature);
          }
        });
      });
    });
  });
}

template <backward_op Op, typename Y, typename DY, typename M, typename Axis>
typename Y::PlainObject masked_backward_value(const char* function, const Eigen::DenseBase<Y>& y,
                                              const Eigen::DenseBase<DY>& dy, const M& mask,
                                              Axis axis, typename Y::Scalar temperature) {
  typename Y::PlainObject result;
  masked_backward_into<Op>(function, result, y, dy, mask, axis, temperature);
  return result;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// masked_softmax

/// Softmax of the compile-time vector z over the entries `mask` keeps:
/// y_i = mask_i ? exp((z_i - max) / T) / sum_{j kept} exp((z_j - max) / T) : 0, max over the
/// kept entries.
///
/// mask: a boolean Eigen object of z's shape (true = keep). Masked entries get exactly 0
/// whatever their logit (NaN, +inf); if nothing is kept the result is all zeros. The kept
/// entries follow softmax's policy (kept entries all -inf: NaN there; T = 0: argmax among
/// the kept; T = +inf: uniform over the kept entries that are not -inf); see this header's
/// description. Gradient: masked_softmax_backward. Complexity: softmax's passes plus up to
/// three over the mask (kept maximum, select, clear), in cache. Allocates only the result
/// (and a boolean copy of an expression mask).
/// \throws smax::error if T is negative or NaN, or mask's shape differs from z's.
template <typename D, typename M>
typename D::PlainObject masked_softmax(const Eigen::DenseBase<D>& z, const M& mask,
                                       typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::masked_softmax");
  detail::static_check_vector_mask<M>();
  return detail::masked_forward_value<detail::forward_op::softmax>(
      "smax::masked_softmax", z, mask, detail::vector_axis_t<D>{}, temperature);
}

/// Masked softmax of each row (smax::rowwise) or column (smax::colwise) of z. mask is a
/// boolean Eigen object of z's shape, or smax::causal / smax::causal_mask{offset} (with
/// rowwise, entry (i, j) is kept when j <= i + offset). Same formula, policy and errors as
/// the vector form; a causal mask costs only its kept entries.
template <typename D, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject masked_softmax(const Eigen::DenseBase<D>& z, const M& mask, Axis axis,
                                       typename D::Scalar temperature = 1) {
  return detail::masked_forward_value<detail::forward_op::softmax>("smax::masked_softmax", z, mask,
                                                                   axis, temperature);
}

/// Allocation-free masked softmax of the vector z into out (resized if it is a resizable
/// plain object, else it must already have z's shape). out may be z itself (in place).
/// \throws smax::error on a bad temperature, mask shape or output shape; out is then
/// untouched.
template <typename Out, typename D, typename M>
void masked_softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z,
                         const M& mask, typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::masked_softmax_into");
  detail::static_check_vector_mask<M>();
  detail::masked_forward_into<detail::forward_op::softmax>(
      "smax::masked_softmax_into", out, z, mask, detail::vector_axis_t<D>{}, temperature);
}

/// Allocation-free masked softmax of each row or column of z into out (may be z itself);
/// mask as in the returning axis form.
template <typename Out, typename D, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void masked_softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z,
                         const M& mask, Axis axis, typename D::Scalar temperature = 1) {
  detail::masked_forward_into<detail::forward_op::softmax>("smax::masked_softmax_into", out, z,
                                                           mask, axis, temperature);
}

// ---------------------------------------------------------------------------------------
// masked_log_softmax

/// Log-softmax of the compile-time vector z over the entries `mask` keeps:
/// mask_i ? (z_i - max) / T - log sum_{j kept} exp((z_j - max) / T) : -inf, computed directly,
/// never as log(masked_softmax).
///
/// Masked entries get exactly -inf whatever their logit; if nothing is kept, all -inf. The
/// kept entries follow log_softmax's policy (T = 0: -log k on the k kept maxima; T = +inf:
/// -log k on the k kept entries that are not -inf). Gradient: masked_log_softmax_backward.
/// Allocates only the result.
/// \throws smax::error if T is negative or NaN, or mask's shape differs from z's.
template <typename D, typename M>
typename D::PlainObject masked_log_softmax(const Eigen::DenseBase<D>& z, const M& mask,
                                           typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::masked_log_softmax");
  detail::static_check_vector_mask<M>();
  return detail::masked_forward_value<detail::forward_op::log_softmax>(
      "smax::masked_log_softmax", z, mask, detail::vector_axis_t<D>{}, temperature);
}

/// Masked log-softmax of each row (smax::rowwise) or column (smax::colwise) of z; mask is a
/// boolean Eigen object of z's shape or smax::causal / smax::causal_mask{offset}.
template <typename D, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename D::PlainObject masked_log_softmax(const Eigen::DenseBase<D>& z, const M& mask, Axis axis,
                                           typename D::Scalar temperature = 1) {
  return detail::masked_forward_value<detail::forward_op::log_softmax>("smax::masked_log_softmax",
                                                                       z, mask, axis, temperature);
}

/// Allocation-free masked log-softmax of the vector z into out (may be z itself).
/// \throws smax::error on a bad temperature, mask shape or output shape; out is then
/// untouched.
template <typename Out, typename D, typename M>
void masked_log_softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z,
                             const M& mask, typename D::Scalar temperature = 1) {
  detail::static_check_vector<D>("smax::masked_log_softmax_into");
  detail::static_check_vector_mask<M>();
  detail::masked_forward_into<detail::forward_op::log_softmax>(
      "smax::masked_log_softmax_into", out, z, mask, detail::vector_axis_t<D>{}, temperature);
}

/// Allocation-free masked log-softmax of each row or column of z into out (may be z itself).
template <typename Out, typename D, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void masked_log_softmax_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z,
                             const M& mask, Axis axis, typename D::Scalar temperature = 1) {
  detail::masked_forward_into<detail::forward_op::log_softmax>("smax::masked_log_softmax_into", out,
                                                               z, mask, axis, temperature);
}

// ---------------------------------------------------------------------------------------
// masked_logsumexp

/// log(sum_{i kept} exp(z_i)) of the compile-time vector z, as max + log(sum exp(z_i - max))
/// over the entries `mask` keeps.
///
/// Gradient: masked_softmax(z, mask). Edge cases: nothing kept, or every kept entry -inf:
/// -inf; a kept +inf: +inf; a kept NaN: NaN; masked entries are ignored whatever they hold.
/// Accuracy: logsumexp's (4 ULP of max(|result|, 1)). Complexity: two passes over z, one exp
/// per kept entry; allocates nothing (except to evaluate an expression argument or mask).
/// \throws smax::error if mask's shape differs from z's.
template <typename D, typename M>
typename D::Scalar masked_logsumexp(const Eigen::DenseBase<D>& z, const M& mask) {
  using T = typename D::Scalar;
  detail::static_check_scalar<D>();
  detail::static_check_vector<D>("smax::masked_logsumexp");
  detail::static_check_vector_mask<M>();
  detail::static_check_mask<D, M>();
  detail::check_mask_shape("smax::masked_logsumexp", z, mask, "z");
  using Axis = detail::vector_axis_t<D>;
  T result(0);
  detail::with_mask(mask, [&](const auto& mm) {
    const auto m = detail::make_batch(mm, Axis{});
    if constexpr (detail::has_direct_access<D>) {
      result = detail::masked_logsumexp_at(detail::make_batch(z, Axis{}), m, 0);
    } else {
      const typename D::PlainObject copy = z;
      result = detail::masked_logsumexp_at(detail::make_batch(copy, Axis{}), m, 0);
    }
  });
  return result;
}

/// Allocation-free masked logsumexp of each row (smax::rowwise) or column (smax::colwise) of
/// z, one value per distribution, into the vector out (either orientation; resized if it is
/// a resizable plain object). mask is a boolean Eigen object of z's shape or smax::causal /
/// smax::causal_mask{offset}. Same policy as the vector form.
/// \throws smax::error if mask's shape differs from z's or out cannot hold one value per
/// distribution; out is then untouched.
template <typename Out, typename D, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
void masked_logsumexp_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& z,
                           const M& mask, Axis axis) {
  detail::masked_logsumexp_impl("smax::masked_logsumexp_into", out, z, mask, axis);
}

/// Masked logsumexp of each row (smax::rowwise: a column vector, like m.rowwise().sum()) or
/// each column (smax::colwise: a row vector) of z. Array input gives an Array, Matrix a
/// Matrix.
/// \throws smax::error if mask's shape differs from z's.
template <typename D, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename detail::reduced<D, Axis>::type masked_logsumexp(const Eigen::DenseBase<D>& z,
                                                         const M& mask, Axis axis) {
  typename detail::reduced<D, Axis>::type result;
  detail::masked_logsumexp_impl("smax::masked_logsumexp", result, z, mask, axis);
  return result;
}

// ---------------------------------------------------------------------------------------
// backward passes

/// Vector-Jacobian product of masked_softmax: given y = masked_softmax(z, mask, T) and
/// dy = dL/dy, returns dL/dz_i = mask_i ? y_i (dy_i - sum_{j kept} y_j dy_j) / T : 0, for
/// the compile-time vector y.
///
/// Masked entries get exactly 0, and neither y nor dy there enters the sum, whatever they
/// hold (NaN, inf); a fully masked distribution gets all zeros. On the kept entries this is
/// softmax_backward of the kept entries. T = +inf gives 0. The sum is accumulated in double
/// for float. Complexity: two passes. Allocates only the result.
/// \throws smax::error if dy's or mask's shape differs from y's, or T is not > 0.
template <typename Y, typename DY, typename M>
typename Y::PlainObject masked_softmax_backward(const Eigen::DenseBase<Y>& y,
                                                const Eigen::DenseBase<DY>& dy, const M& mask,
                                                typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::masked_softmax_backward");
  detail::static_check_vector_mask<M>();
  return detail::masked_backward_value<detail::backward_op::softmax>(
      "smax::masked_softmax_backward", y, dy, mask, detail::vector_axis_t<Y>{}, temperature);
}

/// masked_softmax_backward for each row (smax::rowwise) or column (smax::colwise); mask is a
/// boolean Eigen object of y's shape or smax::causal / smax::causal_mask{offset}.
template <typename Y, typename DY, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename Y::PlainObject masked_softmax_backward(const Eigen::DenseBase<Y>& y,
                                                const Eigen::DenseBase<DY>& dy, const M& mask,
                                                Axis axis, typename Y::Scalar temperature = 1) {
  return detail::masked_backward_value<detail::backward_op::softmax>(
      "smax::masked_softmax_backward", y, dy, mask, axis, temperature);
}

/// Allocation-free masked_softmax_backward of the vector y into out, which may be y or dy
/// itself. \throws smax::error as the returning form, or on a wrong output shape; out is then
/// untouched.
template <typename Out, typename Y, typename DY, typename M>
void masked_softmax_backward_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<Y>& y,
                                  const Eigen::DenseBase<DY>& dy, const M& mask,
                                  typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::masked_softmax_backward_into");
  detail::static_check_vector_mask<M>();
  detail::masked_backward_into<detail::backward_op::softmax>(
      "smax::masked_softmax_backward_into", out, y, dy, mask, detail::vector_axis_t<Y>{},
      temperature);
}

/// Allocation-free masked_softmax_backward of each row or column into out (may be y or dy).
template <typename Out, typename Y, typename DY, typename M, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
void masked_softmax_backward_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<Y>& y,
                                  const Eigen::DenseBase<DY>& dy, const M& mask, Axis axis,
                                  typename Y::Scalar temperature = 1) {
  detail::masked_backward_into<detail::backward_op::softmax>("smax::masked_softmax_backward_into",
                                                             out, y, dy, mask, axis, temperature);
}

/// Vector-Jacobian product of masked_log_softmax: given logy = masked_log_softmax(z, mask, T)
/// and dy = dL/dlogy, returns dL/dz_i = mask_i ? (dy_i - exp(logy_i) sum_{j kept} dy_j) / T
/// : 0, for the compile-time vector logy.
///
/// Masked entries get exactly 0, and dy there does not enter the sum, whatever it holds; a
/// fully masked distribution gets all zeros. Kept entries with logy_i = -inf get dy_i / T.
/// T = +inf gives 0. The sum is accumulated in double for float. Allocates only the result.
/// \throws smax::error if dy's or mask's shape differs from logy's, or T is not > 0.
template <typename Y, typename DY, typename M>
typename Y::PlainObject masked_log_softmax_backward(const Eigen::DenseBase<Y>& logy,
                                                    const Eigen::DenseBase<DY>& dy, const M& mask,
                                                    typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::masked_log_softmax_backward");
  detail::static_check_vector_mask<M>();
  return detail::masked_backward_value<detail::backward_op::log_softmax>(
      "smax::masked_log_softmax_backward", logy, dy, mask, detail::vector_axis_t<Y>{}, temperature);
}

/// masked_log_softmax_backward for each row (smax::rowwise) or column (smax::colwise); mask
/// is a boolean Eigen object of logy's shape or smax::causal / smax::causal_mask{offset}.
template <typename Y, typename DY, typename M, typename Axis, detail::enable_if_axis_t<Axis> = 0>
typename Y::PlainObject masked_log_softmax_backward(const Eigen::DenseBase<Y>& logy,
                                                    const Eigen::DenseBase<DY>& dy, const M& mask,
                                                    Axis axis, typename Y::Scalar temperature = 1) {
  return detail::masked_backward_value<detail::backward_op::log_softmax>(
      "smax::masked_log_softmax_backward", logy, dy, mask, axis, temperature);
}

/// Allocation-free masked_log_softmax_backward of the vector logy into out, which may be logy
/// or dy itself. \throws smax::error as the returning form, or on a wrong output shape; out is
/// then untouched.
template <typename Out, typename Y, typename DY, typename M>
void masked_log_softmax_backward_into(const Eigen::DenseBase<Out>& out,
                                      const Eigen::DenseBase<Y>& logy,
                                      const Eigen::DenseBase<DY>& dy, const M& mask,
                                      typename Y::Scalar temperature = 1) {
  detail::static_check_vector<Y>("smax::masked_log_softmax_backward_into");
  detail::static_check_vector_mask<M>();
  detail::masked_backward_into<detail::backward_op::log_softmax>(
      "smax::masked_log_softmax_backward_into", out, logy, dy, mask, detail::vector_axis_t<Y>{},
      temperature);
}

/// Allocation-free masked_log_softmax_backward of each row or column into out (may be logy or
/// dy).
template <typename Out, typename Y, typename DY, typename M, typename Axis,
          detail::enable_if_axis_t<Axis> = 0>
void masked_log_softmax_backward_into(const Eigen::DenseBase<Out>& out,
                                      const Eigen::DenseBase<Y>& logy,
                                      const Eigen::DenseBase<DY>& dy, const M& mask, Axis axis,
                                      typename Y::Scalar temperature = 1) {
  detail::masked_backward_into<detail::backward_op::log_softmax>(
      "smax::masked_log_softmax_backward_into", out, logy, dy, mask, axis, temperature);
}

}  // namespace smax

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
