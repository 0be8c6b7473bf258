// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include <Eigen/Core>

#include <smax/axis.hpp>
#include <smax/causal.hpp>
#include <smax/detail/dispatch.hpp>
#include <smax/detail/exp.hpp>
#include <smax/detail/fpclass.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/error.hpp>
#include <smax/softmax.hpp>

/// \file
/// smax::attention: scaled dot-product attention, softmax(Q K^T * scale) V, with rows as
/// queries, an optional boolean or causal mask, and two algorithms behind one function: a
/// direct one (the n x m score matrix, smax::softmax_into, two GEMMs) for small sizes and a
/// streaming one (a CPU flash-attention: blocks of queries against blocks of keys with the
/// online normaliser) that needs O((n + m) d) memory instead of O(n m).
///
/// Numerical policy, on top of smax::softmax's (README, "Numerical policy"):
/// - The weights of query i are softmax(s_i / T) over the keys it keeps, where
///   s_ij = q_i . k_j and T = 1 / scale (sqrt(d) by default), computed as smax::softmax
///   does: the exponent is (s_ij - max_j s_ij) / T, so no score magnitude overflows.
/// - Scores never overflow: when |q_i| |k_j| d could exceed the largest finite value, Q's
///   rows and K are first scaled by powers of two (exactly) and the exponent is scaled back
///   in factors that cannot overflow. Q, K entries of 1e18 or FLT_MAX give the one-hot or
///   near-one-hot weights they mean, never NaN.
/// - A query that keeps no key (its mask row is all false, a causal offset that hides
///   every key, or m = 0) gets an output row of exact zeros, whatever V holds, instead of
///   the formula's 0/0 = NaN. This is PyTorch's policy (scaled_dot_product_attention applies
///   _safe_softmax, pytorch/pytorch#133882) and the ONNX Attention operator's. JAX differs:
///   jax.nn.dot_product_attention masks with a large finite negative, so such a row gets the
///   mean of V's rows (only rows beyond q_seqlen are zeroed).
/// - Masked scores are ignored whatever their value (NaN, inf). A kept score that is NaN
///   makes its query's row NaN; kept scores of +-inf (only possible when Q or K hold
///   infinities) follow smax::softmax: -inf gets weight 0, a single +inf takes all the
///   weight, two or more +inf give NaN; every kept score -inf gives NaN.
/// - A NaN or inf in row j of V reaches every query with a nonzero weight on key j. For
///   queries whose weight on key j is 0 (masked or underflowed) it may or may not appear
///   (the direct path multiplies the zero weight by it; the streaming path skips key blocks
///   that a causal mask hides), except in the zero rows above, which are always 0.
/// - scale = 0 gives equal weights to the kept keys (T = +inf).
///
/// Accuracy (tests/attention_test.cpp): for query i, |out_ij - exact_ij| <= eps max|V|
/// (8 + 2 c_i), where c_i = sum_j p_ij (scale sum_k |q_ik k_jk| + |z_ij|) is the weighted
/// condition number of the scores and exponents z_ij (the rounding of a score changes its
/// weight by that relative amount; no algorithm that rounds the scores to T avoids it).
/// Measured with N(0, 1) inputs and d <= 64 (c_i about 5): at most 1.3 (float) and 1.9
/// (double) eps max|V| on either path.
///
/// Memory: the direct path holds the n x m scores; the streaming one query_block x key_block
/// scores and query_block x dv accumulators (~200 KiB with the defaults), plus copies of Q
/// and K only when their magnitudes could overflow a score. An attention_workspace keeps
/// those buffers from call to call.

namespace smax {

namespace detail::attn {

using Index = Eigen::Index;

/// Storage for n values that reallocates only to grow (freeing first, so that the old and
/// the new block never coexist).
template <typename T>
class storage {
 public:
  T* get(Index n) {
    if (data_.size() < n) {
      data_.resize(0);
      data_.resize(n);
    }
    return data_.data();
  }
  std::size_t bytes() const { return static_cast<std::size_t>(data_.size()) * sizeof(T); }

 private:
  Eigen::Matrix<T, Eigen::Dynamic, 1> data_;
};

/// Every buffer a call needs.
template <typename T>
struct buffers {
  storage<T> scores;       // direct: nq x m, row-major
  storage<T> tile;         // streaming: query_block x key_block scores, column-major
  storage<T> queries;      // a block of prescaled queries (rare)
  storage<T> acc;          // streaming: the nq x dv unnormalised output rows
  storage<T> rows;         // streaming: four per-query arrays of query_block values
  storage<acc_t<T>> sums;  // streaming: the per-query sums of weights
  storage<char> kept;      // direct: whether each query keeps a key (boolean masks)

  std::size_t bytes() const {
    return scores.bytes() + tile.bytes() + queries.bytes() + acc.bytes() + rows.bytes() +
           sums.bytes() + kept.bytes();
  }
};

struct workspace_access;

}  // namespace detail::attn

/// Which algorithm smax::attention uses. Both give the same result to rounding.
enum class attention_path {
  /// Direct while the n x m score matrix has at most attention_direct_max_scores entries
  /// (attention_direct_max_scores_causal with a causal mask), streaming beyond.
  automatic,
  /// Materialise the n x m scores: one GEMM, smax::softmax_into rowwise, one GEMM. Memory
  /// O(n m); fastest for small sizes.
  direct,
  /// Walk K and V in blocks with the online normaliser (running maximum and sum per query,
  /// rescaling the accumulator when the maximum grows). Memory O((n + m) d): blocks of
  /// query_block x key_block scores only.
  streaming
};

/// The largest score matrix (n * m entries) for which attention_path::automatic picks the
/// direct path, without a mask or with a boolean one: 2^20 (4 MiB of float scores).
/// Measured (benchmarks/attention_benchmark.cpp; AVX-512 EPYC, fp32, one thread, CPU time):
/// at n = m = 1024 the direct path takes 0.84x (d = 64) and 0.86x (d = 128) the streaming
/// path's time, at 2048 1.20x and 1.01x, and beyond the caches it falls far behind (6x at
/// 32768) while the streaming path needs O((n + m) d) memory instead of O(n m).
inline constexpr Eigen::Index attention_direct_max_scores = Eigen::Index(1) << 20;

/// attention_direct_max_scores for a causal mask: 2^17. The streaming path skips the key
/// blocks the mask hides (about half the work); measured, the direct path takes 0.8-1.0x
/// the streaming path's time at n = m = 256, 1.3-1.7x at 384 and 1.2-1.4x at 1024.
inline constexpr Eigen::Index attention_direct_max_scores_causal = Eigen::Index(1) << 17;

/// Work buffers that smax::attention may reuse from call to call (attention_options::
/// workspace). Without one, every call allocates its buffers (the n x m scores of the direct
/// path, or a few blocks for the streaming one) and frees them on return; with one, a call
/// allocates only when it needs more than the calls before it did, so a loop over same-sized
/// inputs allocates nothing after its first iteration (Eigen's GEMM may still allocate its
/// own packing buffers for products too large for its stack limit). One workspace serves
/// one thread at a time; it holds its memory until release() or destruction.
template <typename T>
class attention_workspace {
 public:
  /// Bytes held now.
  std::size_t bytes() const { return buffers_.bytes(); }
  /// Frees every buffer; the next call allocates again.
  void release() { buffers_ = detail::attn::buffers<T>(); }

 private:
  friend struct detail::attn::workspace_access;
  detail::attn::buffers<T> buffers_;
};

/// Options of smax::attention.
template <typename T>
struct attention_options {
  /// The factor of the scores, finite and >= 0; unset means 1 / sqrt(d). Applied as the
  /// temperature T = 1 / scale of smax::softmax (one rounding more than scale itself unless
  /// scale is a power of two). 0 gives equal weights to every kept key.
  std::optional<T> scale{};
  /// The algorithm; automatic picks by the size of the score matrix.
  attention_path path = attention_path::automatic;
  /// Queries per block of the streaming path (>= 1): the GEMMs work on query_block rows.
  Eigen::Index query_block = 128;
  /// Keys per block of the streaming path (>= 1).
  Eigen::Index key_block = 256;
  /// Buffers to reuse across calls (see attention_workspace); none: allocate per call.
  attention_workspace<T>* workspace = nullptr;
};

namespace detail::attn {

struct workspace_access {
  template <typename T>
  static buffers<T>& of(attention_workspace<T>& w) {
    return w.buffers_;
  }
};

template <typename T>
using mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using rmat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using arr = Eigen::Array<T, Eigen::Dynamic, 1>;

/// The read-only view the kernels take of an input: the input itself when its storage fits
/// (unit inner stride, its own storage order), else a copy that the Ref owns (expressions,
/// strided maps).
template <typename D>
using view_t =
    Eigen::Ref<const Eigen::Matrix<typename D::Scalar, Eigen::Dynamic, Eigen::Dynamic,
                                   (int(D::Flags) & Eigen::RowMajorBit) != 0 ? Eigen::RowMajor
                                                                             : Eigen::ColMajor>,
               0, Eigen::OuterStride<>>;

template <typename D>
decltype(auto) as_matrix(const Eigen::DenseBase<D>& x) {
  if constexpr (is_array<D>) {
    return x.derived().matrix();
  } else {
    return x.derived();
  }
}

template <typename A, typename B>
bool overlaps(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  const auto [alo, ahi] = address_range(a);
  const auto [blo, bhi] = address_range(b);
  return alo < bhi && blo < ahi;
}

/// Calls f with the view of x; an x that shares memory with out is copied first, since every
/// input is read again after out has been partly written.
template <typename D, typename Out, typename F>
void with_operand(const Eigen::DenseBase<D>& x, const Eigen::DenseBase<Out>& out, F&& f) {
  using View = view_t<D>;
  if constexpr (has_direct_access<D>) {
    if (overlaps(x, out)) {
      const Eigen::Matrix<typename D::Scalar, Eigen::Dynamic, Eigen::Dynamic,
                          (int(D::Flags) & Eigen::RowMajorBit) != 0 ? Eigen::RowMajor
                                                                    : Eigen::ColMajor>
          copy = as_matrix(x);
      f(View(copy));
      return;
    }
  }
  f(View(as_matrix(x)));
}

// ---------------------------------------------------------------------------------------
// Masks: every kind answers the same questions about a tile of queries [i0, i0 + nq) x keys
// [j0, j0 + nk).

/// No mask: every key is kept.
struct no_mask {};

/// A boolean mask (true = keep), read through Eigen's evaluator so that an expression such
/// as `scores.array() > 0` is neither copied nor evaluated more than once per entry.
template <typename M>
class bool_mask {
 public:
  /// Loops over the mask run along its storage order.
  static constexpr bool row_major = (int(M::Flags) & Eigen::RowMajorBit) != 0;
  explicit bool_mask(const M& m) : ev_(m) {}
  bool keeps(Index i, Index j) const { return static_cast<bool>(ev_.coeff(i, j)); }

 private:
  Eigen::internal::evaluator<M> ev_;
};

enum class tile { hidden, full, partial };

/// One past the last key that any query of [i0, i0 + nq) may see.
inline Index key_end(const no_mask&, Index, Index, Index m) { return m; }
inline Index key_end(const causal_mask& c, Index i0, Index nq, Index m) {
  return std::clamp<Index>(i0 + nq + c.offset, 0, m);
}
template <typename M>
Index key_end(const bool_mask<M>&, Index, Index, Index m) {
  return m;
}

inline tile classify(const no_mask&, Index, Index, Index, Index) { return tile::full; }
inline tile classify(const causal_mask& c, Index i0, Index nq, Index j0, Index nk) {
  if (j0 > i0 + nq - 1 + c.offset) return tile::hidden;
  if (j0 + nk - 1 <= i0 + c.offset) return tile::full;
  return tile::partial;
}
/// Calls f(r, c) for r < rows, c < cols in 64 x 64 tiles, each run along rows (RowMajor) or
/// columns: an array read across its layout is then only read across one tile, in cache.
template <bool RowMajor, typename F>
void for_each_tiled(Index rows, Index cols, F&& f) {
  constexpr Index t = 64;
  for (Index r0 = 0; r0 < rows; r0 += t) {
    const Index r1 = std::min(rows, r0 + t);
    for (Index c0 = 0; c0 < cols; c0 += t) {
      const Index c1 = std::min(cols, c0 + t);
      if constexpr (RowMajor) {
        for (Index r = r0; r < r1; ++r)
          for (Index c = c0; c < c1; ++c) f(r, c);
      } else {
        for (Index c = c0; c < c1; ++c)
          for (Index r = r0; r < r1; ++r) f(r, c);
      }
    }
  }
}

template <typename M>
tile classify(const bool_mask<M>& b, Index i0, Index nq, Index j0, Index nk) {
  Index kept = 0;
  for_each_tiled<bool_mask<M>::row_major>(
      nq, nk, [&](Index r, Index c) { kept += static_cast<Index>(b.keeps(i0 + r, j0 + c)); });
  return kept == 0 ? tile::hidden : kept == nq * nk ? tile::full : tile::partial;
}

/// Sets the masked scores of tile s (row r is query i0 + r, column c key j0 + c) to -inf.
/// A boolean mask also sets kept[r] to 1 where row r keeps a key, when kept is not null.
template <typename S>
void mask_tile(S&& s, const no_mask&, Index, Index, char*) {
  static_cast<void>(s);
}
template <typename S>
void mask_tile(S&& s, const causal_mask& c, Index i0, Index j0, char*) {
  using T = typename std::decay_t<S>::Scalar;
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  // Query i sees key j when j <= i + offset. Fill contiguous runs: the row's tail in a
  // row-major tile, the column's head in a column-major one.
  if constexpr (std::decay_t<S>::IsRowMajor) {
    for (Index r = 0; r < s.rows(); ++r) {
      const Index first_hidden = std::clamp<Index>(i0 + r + c.offset + 1 - j0, 0, s.cols());
      s.row(r).tail(s.cols() - first_hidden).setConstant(neg_inf);
    }
  } else {
    for (Index col = 0; col < s.cols(); ++col) {
      const Index hidden = std::clamp<Index>(j0 + col - c.offset - i0, 0, s.rows());
      s.col(col).head(hidden).setConstant(neg_inf);
    }
  }
}
template <typename S, typename M>
void mask_tile(S&& s, const bool_mask<M>& b, Index i0, Index j0, char* kept) {
  using T = typename std::decay_t<S>::Scalar;
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  constexpr Index t = 64;
  // Branchless (a random mask would mispredict a branch per entry), along the scores'
  // storage order, in strips of 64 so that a mask stored the other way round is read across
  // its layout only within cached lines.
  if constexpr (std::decay_t<S>::IsRowMajor) {
    for (Index c0 = 0; c0 < s.cols(); c0 += t) {
      const Index c1 = std::min(s.cols(), c0 + t);
      for (Index r = 0; r < s.rows(); ++r) {
        bool any = false;
        for (Index c = c0; c < c1; ++c) {
          const bool keep = b.keeps(i0 + r, j0 + c);
          s(r, c) = keep ? s(r, c) : neg_inf;
          any = any || keep;
        }
        if (kept != nullptr && any) kept[r] = 1;
      }
    }
  } else {
    for (Index r0 = 0; r0 < s.rows(); r0 += t) {
      const Index r1 = std::min(s.rows(), r0 + t);
      for (Index c = 0; c < s.cols(); ++c) {
        for (Index r = r0; r < r1; ++r) {
          const bool keep = b.keeps(i0 + r, j0 + c);
          s(r, c) = keep ? s(r, c) : neg_inf;
          if (kept != nullptr && keep) kept[r] = 1;
        }
      }
    }
  }
}

/// True when query i keeps at least one of the m keys (kept: what mask_tile recorded).
inline bool keeps_any(const no_mask&, Index, Index m, char) { return m > 0; }
inline bool keeps_any(const causal_mask& c, Index i, Index m, char) {
  return m > 0 && i + c.offset >= 0;
}
template <typename M>
bool keeps_any(const bool_mask<M>&, Index, Index, char kept) {
  return kept != 0;
}

// ---------------------------------------------------------------------------------------
// The exponent and the overflow guard

/// The map from a score x to the exponent (x - max) / T, exactly as smax::softmax's shift
/// computes it (for T > 1 both terms are halved first, which is exact and keeps x - max
/// finite for any finite x and max).
template <typename T>
struct exponent_map {
  T temperature;
  T half;
  T ht;          // half * temperature
  bool uniform;  // T = +inf (scale 0): every kept key weighs the same

  explicit exponent_map(T t)
      : temperature(t), half(t > T(1) ? T(0.5) : T(1)), ht(half * t), uniform(is_pos_inf(t)) {}
};

/// Powers of two that keep the score GEMM finite: row i of Q is multiplied by q_down(i) =
/// 2^-a_i and K by 2^-b, so every partial sum of q_i . k_j stays below 2^(max_exponent - 2);
/// the exponents are multiplied back by q_up(i) = 2^a_i and k_up = 2^b, one factor at a
/// time (each finite, so a product can only overflow to -inf, the right limit, never to
/// NaN). Decided lazily by the direct path (only when its scores came out non-finite) and
/// up front by the streaming one (from max |Q| and max |K|).
template <typename T>
struct prescale {
  bool active = false;     // scores come from the scaled copies
  bool k_finite = true;    // K has no NaN or inf
  bool q_finite = true;    // Q has no NaN or inf
  arr<bool> q_row_finite;  // per row, when !q_finite
  arr<T> q_down, q_up;     // when active
  T k_up = T(1);           // when active
  mat<T> k_scaled;         // K * 2^-b, when active
};

/// Largest |x| over the finite entries of row i (0 if none); sets `finite` false on a NaN or
/// inf.
template <typename X>
typename X::Scalar finite_row_max(const X& x, Index i, bool& finite) {
  using T = typename X::Scalar;
  T r = T(0);
  for (Index c = 0; c < x.cols(); ++c) {
    const T a = std::abs(x(i, c));
    if (!is_finite(a)) {
      finite = false;
    } else if (a > r) {
      r = a;
    }
  }
  return r;
}

/// e with x < 2^e for x > 0 (a very negative number for 0, which can never overflow).
template <typename T>
int binary_exponent(T x) {
  return x > T(0) ? std::ilogb(x) + 1 : std::numeric_limits<int>::min() / 4;
}

/// Headroom for the score GEMM: every |partial sum| < 2^budget keeps s - max finite too.
template <typename T>
inline constexpr int score_budget = std::numeric_limits<T>::max_exponent - 2;

/// ceil(log2(d)) for d >= 1.
inline int log2_ceil(Index d) {
  int e = 0;
  while ((Index(1) << e) < d) ++e;
  return e;
}

/// True when max|q| max|k| d might exceed the GEMM's headroom.
template <typename T>
bool might_overflow(T qmax, T kmax, Index d) {
  if (d == 0) return false;
  return binary_exponent(qmax) + binary_exponent(kmax) + log2_ceil(d) > score_budget<T>;
}

/// The full plan from Q and K (rare: non-finite inputs or scores near the range's end).
template <typename QV, typename KV>
prescale<typename QV::Scalar> make_prescale(const QV& q, const KV& k) {
  using T = typename QV::Scalar;
  prescale<T> p;
  const Index n = q.rows(), m = k.rows(), d = q.cols();
  T kmax = T(0);
  for (Index j = 0; j < m; ++j) kmax = std::max(kmax, finite_row_max(k, j, p.k_finite));
  arr<T> qmax(n);
  p.q_row_finite.setConstant(n, true);
  for (Index i = 0; i < n; ++i) {
    bool finite = true;
    qmax(i) = finite_row_max(q, i, finite);
    p.q_row_finite(i) = finite;
    p.q_finite = p.q_finite && finite;
  }
  bool needed = false;
  for (Index i = 0; i < n && !needed; ++i) needed = might_overflow(qmax(i), kmax, d);
  if (!needed) return p;
  const int ed = log2_ceil(d);
  const int ek = binary_exponent(kmax);
  const int b = std::max(0, ek - (score_budget<T> - ed) / 2);
  p.active = true;
  p.k_up = std::ldexp(T(1), b);
  p.k_scaled = (k * std::ldexp(T(1), -b)).eval();
  p.q_down.resize(n);
  p.q_up.resize(n);
  for (Index i = 0; i < n; ++i) {
    const int a = std::max(0, binary_exponent(qmax(i)) + (ek - b) + ed - score_budget<T>);
    p.q_down(i) = std::ldexp(T(1), -a);
    p.q_up(i) = std::ldexp(T(1), a);
  }
  return p;
}

/// max |x| over all entries, NaN if any entry is NaN (0 for an empty x).
template <typename X>
typename X::Scalar max_abs(const X& x) {
  if (x.size() == 0) return typename X::Scalar(0);
  return x.cwiseAbs().template maxCoeff<Eigen::PropagateNaN>();
}

// ---------------------------------------------------------------------------------------
// Direct path (also the streaming path's fallback for blocks with non-finite inputs)

/// Rows [i0, i0 + nq) of the output by the direct method: scores (nq x m), mask, softmax,
/// one GEMM. With `lazy`, a non-finite score triggers the prescale plan (which then covers
/// the whole of Q, so lazy calls need i0 = 0 and nq = n).
template <typename QV, typename KV, typename VV, typename Mask, typename Out>
void direct_rows(const QV& q, const KV& k, const VV& v, const Mask& mask, Index i0, Index nq,
                 const exponent_map<typename QV::Scalar>& em, prescale<typename QV::Scalar>& pre,
                 bool lazy, buffers<typename QV::Scalar>& b, Out&& out) {
  using T = typename QV::Scalar;
  const Index m = k.rows(), d = q.cols();
  const auto qb = q.middleRows(i0, nq);
  // Row-major, so that smax::softmax_into reads each query's scores contiguously.
  Eigen::Map<rmat<T>> s(b.scores.get(nq * m), nq, m);
  const auto scores = [&] {
    if (pre.active) {
      Eigen::Map<mat<T>> qs(b.queries.get(nq * d), nq, d);
      qs = (qb.array().colwise() * pre.q_down.segment(i0, nq)).matrix();
      s.noalias() = qs * pre.k_scaled.transpose();
    } else {
      s.noalias() = qb * k.transpose();
    }
  };
  scores();
  if (lazy && !is_finite(max_abs(s))) {
    pre = make_prescale(q, k);
    if (pre.active) scores();
  }
  char* kept = b.kept.get(nq);
  std::fill(kept, kept + nq, char(0));
  mask_tile(s, mask, i0, 0, kept);
  if (pre.active && !em.uniform) {
    // Exponents scaled back per row (the scores are 2^-(a_i + b) times the true ones), then
    // the softmax of those; rows whose maximum is +inf or NaN keep their raw scores, whose
    // weights do not depend on the scale.
    const arr<T> mx = s.rowwise().maxCoeff();
    for (Index r = 0; r < nq; ++r) {
      if (is_nan(mx(r)) || is_pos_inf(mx(r))) continue;
      const T hm = em.half * mx(r);
      const T up = pre.q_up(i0 + r);
      s.row(r) = ((((s.row(r).array() * em.half) - hm) / em.ht) * up * pre.k_up).matrix();
    }
    softmax_into(s, s, rowwise, T(1));
  } else {
    softmax_into(s, s, rowwise, em.temperature);
  }
  out.noalias() = s * v;
  for (Index r = 0; r < nq; ++r) {
    if (!keeps_any(mask, i0 + r, m, kept[r])) out.row(r).setZero();
  }
}

// ---------------------------------------------------------------------------------------
// Streaming path

/// Rows [i0, i0 + nq) of the output with the online normaliser over key blocks. Only for
/// finite scores (finite Q rows and K; the prescale keeps them from overflowing).
/// The streaming path's buffers, sized for the largest block (cap queries, kcap keys).
template <typename T>
struct stream_buffers {
  Index cap, kcap;
  T* tile;
  T* queries;
  T* acc;
  T* rows;
  acc_t<T>* sums;
};

template <bool Scaled, typename QV, typename KV, typename VV, typename Mask, typename Out>
void stream_rows(const QV& q, const KV& k, const VV& v, const Mask& mask, Index i0, Index nq,
                 Index key_block, const exponent_map<typename QV::Scalar>& em,
                 const prescale<typename QV::Scalar>& pre,
                 const stream_buffers<typename QV::Scalar>& b, Out&& out) {
  using T = typename QV::Scalar;
  using A = acc_t<T>;
  constexpr T neg_inf = -std::numeric_limits<T>::infinity();
  const Index m = k.rows(), d = q.cols();
  const auto qb = q.middleRows(i0, nq);
  Eigen::Map<mat<T>> tile_all(b.tile, b.cap, b.kcap);
  Eigen::Map<mat<T>> qs(b.queries, Scaled ? nq : 0, Scaled ? d : 0);
  if constexpr (Scaled) qs = (qb.array().colwise() * pre.q_down.segment(i0, nq)).matrix();
  Eigen::Map<mat<T>> acc(b.acc, nq, v.cols());
  Eigen::Map<arr<T>> row_max(b.rows, nq), new_max(b.rows + b.cap, nq),
      half_max(b.rows + 2 * b.cap, nq), alpha(b.rows + 3 * b.cap, nq);
  Eigen::Map<arr<A>> sum(b.sums, nq);
  acc.setZero();
  row_max.setConstant(neg_inf);
  sum.setZero();
  const Index end = key_end(mask, i0, nq, m);
  for (Index j0 = 0; j0 < end; j0 += key_block) {
    const Index nk = std::min(key_block, end - j0);
    const tile kind = classify(mask, i0, nq, j0, nk);
    if (kind == tile::hidden) continue;
    auto s = tile_all.topLeftCorner(nq, nk);
    if constexpr (Scaled) {
      s.noalias() = qs * pre.k_scaled.middleRows(j0, nk).transpose();
    } else {
      s.noalias() = qb * k.middleRows(j0, nk).transpose();
    }
    if (kind == tile::partial) mask_tile(s, mask, i0, j0, nullptr);
    // Column by column below: Eigen does not vectorise these maps over a whole block with a
    // replicated column (it fell back to one packet exp per coefficient, 14x slower).
    if (em.uniform) {
      // Finite scores: -inf marks exactly the masked entries.
      for (Index c = 0; c < nk; ++c) {
        s.col(c) = (s.col(c).array() != neg_inf).template cast<T>().matrix();
      }
    } else {
      new_max = row_max.max(s.rowwise().maxCoeff().array());
      // A row with nothing kept yet shifts by 0: its masked -inf scores stay -inf.
      half_max = (new_max == neg_inf).select(T(0), new_max) * em.half;
      if ((new_max > row_max).any()) {
        // The running maximum grew: rescale what was accumulated by exp((old - new) / T).
        for (Index r = 0; r < nq; ++r) {
          if (row_max(r) == neg_inf) {
            alpha(r) = T(0);  // nothing accumulated yet
            continue;
          }
          T e = (row_max(r) * em.half - half_max(r)) / em.ht;
          if constexpr (Scaled) e = e * pre.q_up(i0 + r) * pre.k_up;
          alpha(r) = exp_op<T>()(e);
        }
        acc.array().colwise() *= alpha;
        sum *= alpha.template cast<A>();
      }
      for (Index c = 0; c < nk; ++c) {
        auto col = s.col(c).array();
        if constexpr (Scaled) {
          col = (((col * em.half - half_max) / em.ht) * pre.q_up.segment(i0, nq) * pre.k_up)
                    .unaryExpr(exp_op<T>());
        } else {
          col = ((col * em.half - half_max) / em.ht).unaryExpr(exp_op<T>());
        }
      }
      row_max = new_max;
    }
    for (Index c = 0; c < nk; ++c) sum += s.col(c).array().template cast<A>();
    acc.noalias() += s * v.middleRows(j0, nk);
  }
  // Divide in acc_t (double for float): the result is rounded once.
  for (Index r = 0; r < nq; ++r) {
    if (sum(r) == A(0)) {
      out.row(r).setZero();  // the query keeps no key
    } else {
      out.row(r) = (acc.row(r).template cast<A>() / sum(r)).template cast<T>();
    }
  }
}

template <typename QV, typename KV, typename VV, typename Mask, typename Out>
void streaming(const QV& q, const KV& k, const VV& v, const Mask& mask,
               const exponent_map<typename QV::Scalar>& em, Index query_block, Index key_block,
               buffers<typename QV::Scalar>& b, Out& out) {
  using T = typename QV::Scalar;
  const Index n = q.rows(), d = q.cols();
  prescale<T> pre;
  const T qmax = max_abs(q), kmax = max_abs(k);
  if (!is_finite(qmax) || !is_finite(kmax) || might_overflow(qmax, kmax, d)) {
    pre = make_prescale(q, k);
  }
  const Index cap = std::min(query_block, n), kcap = std::min(key_block, k.rows());
  const stream_buffers<T> sb{cap,
                             kcap,
                             b.tile.get(cap * kcap),
                             pre.active ? b.queries.get(cap * d) : nullptr,
                             b.acc.get(cap * v.cols()),
                             b.rows.get(4 * cap),
                             b.sums.get(cap)};
  for (Index i0 = 0; i0 < n; i0 += query_block) {
    const Index nq = std::min(query_block, n - i0);
    auto rows = out.middleRows(i0, nq);
    const bool finite = pre.k_finite && (pre.q_finite || pre.q_row_finite.segment(i0, nq).all());
    if (!finite) {
      // NaN or inf among the inputs: whole score rows, so that smax::softmax's policy for
      // non-finite scores applies exactly as on the direct path (memory query_block x m).
      direct_rows(q, k, v, mask, i0, nq, em, pre, false, b, rows);
    } else if (pre.active) {
      stream_rows<true>(q, k, v, mask, i0, nq, key_block, em, pre, sb, rows);
    } else {
      stream_rows<false>(q, k, v, mask, i0, nq, key_block, em, pre, sb, rows);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Checks and dispatch

template <typename M>
inline constexpr bool is_causal_v = std::is_same_v<std::decay_t<M>, causal_mask>;

template <typename M>
inline constexpr bool is_eigen_v =
    std::is_base_of_v<Eigen::EigenBase<std::decay_t<M>>, std::decay_t<M>>;

/// A mask argument: smax::causal_mask or an Eigen object (whose scalar must be bool).
template <typename M>
using enable_if_mask_t = std::enable_if_t<is_causal_v<M> || is_eigen_v<M>, int>;

template <typename DQ, typename DK, typename DV>
constexpr void static_checks() {
  static_check_scalar<DQ>();
  static_assert(std::is_same_v<typename DK::Scalar, typename DQ::Scalar> &&
                    std::is_same_v<typename DV::Scalar, typename DQ::Scalar>,
                "smax::attention: q, k and v must have the same scalar type (cast first)");
  static_assert(int(DQ::ColsAtCompileTime) == Eigen::Dynamic ||
                    int(DK::ColsAtCompileTime) == Eigen::Dynamic ||
                    int(DQ::ColsAtCompileTime) == int(DK::ColsAtCompileTime),
                "smax::attention: q and k have different fixed numbers of columns (d)");
  static_assert(int(DK::RowsAtCompileTime) == Eigen::Dynamic ||
                    int(DV::RowsAtCompileTime) == Eigen::Dynamic ||
                    int(DK::RowsAtCompileTime) == int(DV::RowsAtCompileTime),
                "smax::attention: k and v have different fixed numbers of rows (keys)");
}

template <typename M>
constexpr void static_check_mask() {
  if constexpr (is_eigen_v<M>) {
    static_assert(std::is_same_v<typename M::Scalar, bool>,
                  "smax::attention: the mask must hold bool (true = keep the key) or be "
                  "smax::causal_mask; for a float mask use (mask.array() > 0) or similar");
  }
}

template <typename T>
T check_options(const char* function, const attention_options<T>& options, Index d) {
  if (options.query_block < 1) {
    fail(function, "options.query_block", std::to_string(options.query_block), "a number >= 1");
  }
  if (options.key_block < 1) {
    fail(function, "options.key_block", std::to_string(options.key_block), "a number >= 1");
  }
  const int path = static_cast<int>(options.path);
  if (path < 0 || path > static_cast<int>(attention_path::streaming)) {
    fail(function, "options.path", std::to_string(path),
         "attention_path::automatic, direct or streaming");
  }
  if (!options.scale) return std::sqrt(static_cast<T>(std::max<Index>(d, 1)));
  const T scale = *options.scale;
  if (!is_finite(scale) || !(scale >= T(0))) {
    fail(function, "scale", to_text(scale),
         "a finite number >= 0 (0 gives equal weights to the kept keys)");
  }
  return scale == T(0) ? std::numeric_limits<T>::infinity() : T(1) / scale;
}

template <typename Out, typename DQ, typename DK, typename DV, typename Mask>
void run(const char* function, const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<DQ>& q,
         const Eigen::DenseBase<DK>& k, const Eigen::DenseBase<DV>& v, const Mask& mask,
         const attention_options<typename DQ::Scalar>& options) {
  using T = typename DQ::Scalar;
  static_checks<DQ, DK, DV>();
  static_check_output<Out, DQ>();
  static_check_mask<Mask>();
  const Index n = q.rows(), d = q.cols(), m = k.rows(), dv = v.cols();
  const T temperature = check_options(function, options, d);
  if (k.cols() != d) {
    fail(function, "k", "of shape " + shape_text(k.rows(), k.cols()),
         std::to_string(d) + " columns (d, as 'q' has)");
  }
  if (v.rows() != m) {
    fail(function, "v", "of shape " + shape_text(v.rows(), v.cols()),
         std::to_string(m) + " rows (one per key, as 'k' has)");
  }
  if constexpr (is_eigen_v<Mask>) {
    if (mask.rows() != n || mask.cols() != m) {
      fail(function, "mask", "of shape " + shape_text(mask.rows(), mask.cols()),
           "the shape " + shape_text(n, m) + " (queries x keys)");
    }
  }
  if (!can_take_shape(out, n, dv)) {
    fail(function, "out", "of shape " + shape_text(out.rows(), out.cols()),
         "storage of shape " + shape_text(n, dv) +
             " (rows of 'q' x columns of 'v'), or a resizable matrix");
  }
  const Index limit =
      is_causal_v<Mask> ? attention_direct_max_scores_causal : attention_direct_max_scores;
  const bool direct = options.path == attention_path::direct ||
                      (options.path == attention_path::automatic && (m == 0 || n <= limit / m));
  const exponent_map<T> em(temperature);
  buffers<T> local;
  buffers<T>& b = options.workspace != nullptr ? workspace_access::of(*options.workspace) : local;
  const auto go = [&](const auto& mk) {
    with_operand(q, out, [&](const auto& qv) {
      with_operand(k, out, [&](const auto& kv) {
        with_operand(v, out, [&](const auto& vv) {
          resize_to(out, n, dv);
          Out& o = writable(out);
          if (n == 0 || dv == 0) return;
          if (m == 0) {
            o.setZero();  // no keys: every query keeps none
            return;
          }
          if (direct) {
            prescale<T> pre;
            direct_rows(qv, kv, vv, mk, 0, n, em, pre, true, b, o);
          } else {
            streaming(qv, kv, vv, mk, em, options.query_block, options.key_block, b, o);
          }
        });
      });
    });
  };
  if constexpr (is_causal_v<Mask>) {
    // Offsets beyond [-n, m] mean the same as those bounds; clamping keeps i + offset exact.
    go(causal_mask{std::clamp<Index>(mask.offset, -n, m)});
  } else if constexpr (is_eigen_v<Mask>) {
    go(bool_mask<Mask>(mask.derived()));
  } else {
    go(no_mask{});
  }
}

template <typename T>
attention_options<T> with_scale(T scale) {
  attention_options<T> options;
  options.scale = scale;
  return options;
}

template <typename DQ, typename DV>
using result_t = Eigen::Matrix<typename DQ::Scalar, DQ::RowsAtCompileTime, DV::ColsAtCompileTime>;

}  // namespace detail::attn

/// The output type of smax::attention: a plain column-major Matrix with Q's rows and V's
/// columns (fixed sizes stay fixed; one row is a row vector).
template <typename DQ, typename DV>
using attention_result_t = detail::attn::result_t<DQ, DV>;

/// Scaled dot-product attention: out = softmax(Q K^T * scale) V, row i of Q being query i.
///
/// q is n x d, k is m x d, v is m x dv: any Eigen dense objects (Matrix or Array, either
/// storage order, fixed or dynamic, Map, Ref, Block, expressions, each evaluated at most
/// once) of one floating-point type. The result is n x dv, column-major (Eigen's default,
/// so it binds to a MatrixX without a copy). Row i of the weights is smax::softmax(s_i / T)
/// with s_ij = q_i . k_j and T = 1 / scale (default scale 1 / sqrt(d)).
///
/// Gradient: not provided (the backward pass of attention is not part of smax yet).
///
/// Edge cases (this header's description has the full policy): no score overflows for any
/// finite Q and K; a NaN in a kept score makes its query's row NaN; scale 0 gives equal
/// weights; d = 0 makes every score 0 (equal weights); n = 0 or dv = 0 gives an empty result.
///
/// Accuracy: |out_ij - exact_ij| <= eps max|V| (8 + 2 c_i), c_i the weighted condition number
/// of query i's scores (see this header's description); about 1.5 eps max|V| measured for
/// ordinary inputs, on either path.
///
/// Complexity: 2 n m (d + dv) flops and n m exponentials (about half with a causal mask on
/// the streaming path). Memory: the direct path allocates the n x m scores, the streaming
/// path about (query_block (key_block + dv) + 5 query_block) values; pass an
/// attention_workspace in the options to reuse them across calls. options.path picks the
/// path; automatic chooses direct up to attention_direct_max_scores scores.
/// \throws smax::error if q and k differ in columns, k and v in rows, the scale is not a
/// finite number >= 0, a block size is below 1 or the path is not one of the enumerators.
template <typename DQ, typename DK, typename DV>
attention_result_t<DQ, DV> attention(const Eigen::DenseBase<DQ>& q, const Eigen::DenseBase<DK>& k,
                                     const Eigen::DenseBase<DV>& v,
                                     const attention_options<typename DQ::Scalar>& options = {}) {
  attention_result_t<DQ, DV> out;
  detail::attn::run("smax::attention", out, q, k, v, detail::attn::no_mask{}, options);
  return out;
}

/// attention(q, k, v) with the given scale instead of 1 / sqrt(d).
template <typename DQ, typename DK, typename DV>
attention_result_t<DQ, DV> attention(const Eigen::DenseBase<DQ>& q, const Eigen::DenseBase<DK>& k,
                                     const Eigen::DenseBase<DV>& v, typename DQ::Scalar scale) {
  return attention(q, k, v, detail::attn::with_scale(scale));
}

/// Masked attention: query i attends only to the keys j that the mask keeps.
///
/// mask is either an n x m boolean Eigen object (true = keep; any dense type or expression,
/// read once per entry) or smax::causal_mask (query i keeps key j when j <= i + offset;
/// smax::causal is offset 0). A query that keeps no key gets a row of zeros. Masked scores
/// are ignored whatever their value. The streaming path skips the key blocks a causal mask
/// hides, and the blocks a boolean mask hides entirely.
/// \throws smax::error as the unmasked form, and if a boolean mask is not n x m.
template <typename DQ, typename DK, typename DV, typename Mask,
          detail::attn::enable_if_mask_t<Mask> = 0>
attention_result_t<DQ, DV> attention(const Eigen::DenseBase<DQ>& q, const Eigen::DenseBase<DK>& k,
                                     const Eigen::DenseBase<DV>& v, const Mask& mask,
                                     const attention_options<typename DQ::Scalar>& options = {}) {
  attention_result_t<DQ, DV> out;
  detail::attn::run("smax::attention", out, q, k, v, mask, options);
  return out;
}

/// Masked attention with the given scale instead of 1 / sqrt(d).
template <typename DQ, typename DK, typename DV, typename Mask,
          detail::attn::enable_if_mask_t<Mask> = 0>
attention_result_t<DQ, DV> attention(const Eigen::DenseBase<DQ>& q, const Eigen::DenseBase<DK>& k,
                                     const Eigen::DenseBase<DV>& v, const Mask& mask,
                                     typename DQ::Scalar scale) {
  return attention(q, k, v, mask, detail::attn::with_scale(scale));
}

/// attention(q, k, v[, options]) written into out: a resizable Matrix or Array is resized
/// to n x dv, other storage (Map, Block, Ref) must have that shape already. out may share
/// memory with q, k or v: such an input is copied first (every input is read again after
/// out is partly written), so the result is always right. Allocates the path's work
/// buffers (see attention).
/// \throws smax::error as attention, and if out cannot take the shape n x dv; out is then
/// untouched.
template <typename Out, typename DQ, typename DK, typename DV>
void attention_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<DQ>& q,
                    const Eigen::DenseBase<DK>& k, const Eigen::DenseBase<DV>& v,
                    const attention_options<typename DQ::Scalar>& options = {}) {
  detail::attn::run("smax::attention_into", out, q, k, v, detail::attn::no_mask{}, options);
}

/// attention_into with the given scale instead of 1 / sqrt(d).
template <typename Out, typename DQ, typename DK, typename DV>
void attention_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<DQ>& q,
                    const Eigen::DenseBase<DK>& k, const Eigen::DenseBase<DV>& v,
                    typename DQ::Scalar scale) {
  attention_into(out, q, k, v, detail::attn::with_scale(scale));
}

/// Masked attention (see the masked attention) written into out (see attention_into).
template <typename Out, typename DQ, typename DK, typename DV, typename Mask,
          detail::attn::enable_if_mask_t<Mask> = 0>
void attention_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<DQ>& q,
                    const Eigen::DenseBase<DK>& k, const Eigen::DenseBase<DV>& v, const Mask& mask,
                    const attention_options<typename DQ::Scalar>& options = {}) {
  detail::attn::run("smax::attention_into", out, q, k, v, mask, options);
}

/// Masked attention_into with the given scale instead of 1 / sqrt(d).
template <typename Out, typename DQ, typename DK, typename DV, typename Mask,
          detail::attn::enable_if_mask_t<Mask> = 0>
void attention_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<DQ>& q,
                    const Eigen::DenseBase<DK>& k, const Eigen::DenseBase<DV>& v, const Mask& mask,
                    typename DQ::Scalar scale) {
  attention_into(out, q, k, v, mask, detail::attn::with_scale(scale));
}

}  // namespace smax
