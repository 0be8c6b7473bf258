// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include <smax/cross_entropy.hpp>
#include <smax/detail/dispatch.hpp>
#include <smax/detail/fpclass.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/detail/loss_kernels.hpp>
#include <smax/error.hpp>

/// \file
/// Cross-entropy of a linear layer's output, fused with the layer: the loss of
/// softmax(H W^T + b) against class indices and its gradients with respect to H, W and b,
/// computed in chunks so that the N x V logits matrix is never held in memory (the output
/// layer of a language model: N tokens, hidden size d, vocabulary V).
///
/// The logits are z = H W^T + b: H is N x d (one row per token), W is V x d (one row per
/// class, like torch.nn.Linear's weight), b has V entries. The loss, its options and its
/// numerical policy are exactly those of smax::cross_entropy on z with smax::rowwise (see
/// cross_entropy.hpp): reduction mean or sum, label_smoothing, ignore_index, class weights
/// and temperature, PyTorch's rules. With G = d loss / d z (N x V, never formed whole):
///   dH = G W,   dW = G^T H,   db = sum over tokens of G.
///
/// How: the logits are computed a chunk at a time, a chunk being a block of rows (tokens) by
/// a block of columns (classes), one GEMM each (Eigen, noalias).
/// - When a chunk holds whole rows (chunk_classes >= V), each row is finished in its chunk
///   with the kernel of cross_entropy (ce_sample): the loss, the gradient written over the
///   logits in place, then dH_rows = G W and dW += G^T H_rows. Three GEMMs in all, as many
///   as the materialised computation; a chunk of R rows costs R x V logits of memory.
/// - Otherwise a block of rows takes two passes over the vocabulary. The first keeps, per
///   row, the running maximum, the scaled sum of exponentials (rescaled when the maximum
///   grows: the online normaliser), the target's logit and the label-smoothing term; that
///   gives the loss. dW needs each row's final normaliser, so the second pass computes
///   every chunk of logits again (one more GEMM: four in all), turns it into its gradient
///   and adds G W_chunk to dH and G^T H to dW_chunk. A chunk of R x C logits.
/// The loss-only functions need the first pass only (one GEMM).

namespace smax {

/// Options of linear_cross_entropy: every option of cross_entropy_options (reduction,
/// label_smoothing, ignore_index, weight, temperature, with the same meaning and defaults)
/// plus the chunk shape. A cross_entropy_options converts to it implicitly (chunks
/// automatic).
///
/// \code
/// smax::linear_cross_entropy_options<float> opt;
/// opt.label_smoothing = 0.1f;
/// opt.chunk_rows = 256;          // tokens per chunk
/// opt.chunk_classes = 8192;      // classes per chunk (< V: two passes over the vocabulary)
/// float loss = smax::linear_cross_entropy(H, W, b, labels, opt);
/// \endcode
///
/// A chunk holds chunk_rows x chunk_classes logits (of the scalar type): that, plus a few
/// numbers per row and per class and Eigen's GEMM buffers, is the memory the functions add.
/// A zero is chosen automatically from a budget of max(N d, 2^18) logits, about the size of
/// H (so the chunk is about d / V of the logits matrix):
/// - both zero, with gradients: whole rows (one pass over the vocabulary, three GEMMs) when
///   at least min(N, 128) rows fit the budget, as many rows as fit; else 128 whole rows when
///   N >= 4096 (they are then at most 1/32 of the logits: one pass is worth the memory);
///   otherwise all N rows and budget / N classes, at least 256 (two passes, four GEMMs);
/// - both zero, the loss alone: all N rows and budget / N classes, at least 256 (one pass
///   either way; GEMMs over all rows run fastest);
/// - chunk_rows given: as many classes as fit the budget (at least 256);
/// - chunk_classes given: as many rows as fit the budget (at least 1).
/// Values above N (rows) or V (classes) mean all of them. The loss alone and the loss with
/// gradients may thus get different chunks, whose logits round differently in the GEMM:
/// their losses then agree to a few ULP; the same explicit chunk shape makes them equal.
template <typename T>
struct linear_cross_entropy_options : cross_entropy_options<T> {
  /// Default options: PyTorch's CrossEntropyLoss defaults, automatic chunks.
  linear_cross_entropy_options() = default;
  /// The cross-entropy options `base`, automatic chunks.
  linear_cross_entropy_options(
      const cross_entropy_options<T>& base)  // NOLINT(google-explicit-constructor)
      : cross_entropy_options<T>(base) {}

  /// Rows (tokens) per chunk, >= 0; 0 chooses automatically.
  Eigen::Index chunk_rows = 0;
  /// Classes (vocabulary entries) per chunk, >= 0; 0 chooses automatically. At least V:
  /// whole rows, one pass over the vocabulary; fewer: two passes (one more GEMM).
  Eigen::Index chunk_classes = 0;
};

/// The result of linear_cross_entropy_with_grad: the loss and its gradients.
template <typename T, typename GH, typename GW, typename GB>
struct linear_loss_with_grad {
  /// The loss (reduced as the options say).
  T loss;
  /// d loss / d H, shaped like H (N x d).
  GH dH;
  /// d loss / d W, shaped like W (V x d).
  GW dW;
  /// d loss / d b, shaped like b (V entries); empty when the call had no bias.
  GB db;
};

namespace detail::linear {

using loss::index_model;
using loss::strided_view;

/// The smallest budget, in logits, of an automatic chunk.
inline constexpr Index min_budget = Index(1) << 18;
/// Automatic chunks hold whole rows when at least this many rows (or all N) fit the budget,
/// or when this many rows are at most 1/32 of the logits.
inline constexpr Index min_whole_rows = 128;
/// Automatic chunks of part of the vocabulary have at least this many classes.
inline constexpr Index min_classes = 256;
/// Classes per GEMM call. Eigen 3.4's blocking heuristics handle a long vocabulary
/// dimension badly: measured single-threaded in fp32 with V = 128256, dW += G^T H_rows ran
/// at about half the speed of the same work issued a few thousand classes at a time, and
/// Eigen's packing buffer grows with the slice (about 2 MB per 1000 classes there). So the
/// products of a chunk are issued in slices of this many classes.
inline constexpr Index gemm_classes = 2048;

/// The chunk shape: rows x classes logits.
struct plan {
  Index rows;
  Index classes;
};

/// Chooses the chunk shape from the options (see linear_cross_entropy_options); `grads`:
/// the gradients are wanted (the loss alone needs one pass whatever the shape).
inline plan make_plan(Index n, Index v, Index d, Index rows, Index classes, bool grads) {
  if (n == 0 || v == 0) return {std::max<Index>(n, 1), std::max<Index>(v, 1)};
  const Index budget = std::max(n * d, min_budget);
  const auto classes_for = [&](Index r) { return std::min(v, std::max(min_classes, budget / r)); };
  if (rows == 0 && classes == 0) {
    if (grads && v * std::min(n, min_whole_rows) <= budget) return {std::min(n, budget / v), v};
    // Three GEMMs beat four: min_whole_rows whole rows, when they are at most 1/32 of the
    // logits, even above the budget.
    if (grads && n >= 32 * min_whole_rows) return {min_whole_rows, v};
    return {n, classes_for(n)};
  }
  if (classes == 0) classes = classes_for(std::min(rows, n));
  if (rows == 0) rows = std::max<Index>(1, budget / std::min(classes, v));
  return {std::min(rows, n), std::min(classes, v)};
}

// ---------------------------------------------------------------------------------------
// Views: every matrix argument is seen as a Map with unit inner stride (column- or
// row-major), so that Eigen's GEMM reads it in place; anything else is copied once.

template <typename T>
using col_map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>,
                           0, Eigen::OuterStride<>>;
template <typename T>
using row_map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                           0, Eigen::OuterStride<>>;
template <typename T>
using col_map_mut = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>, 0,
                               Eigen::OuterStride<>>;
template <typename T>
using row_map_mut = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                               Eigen::OuterStride<>>;

/// Where a matrix argument keeps its entries: column-major or row-major with unit inner
/// stride (known at compile time: the usual case, one instantiation of the GEMM code), or
/// either, decided at run time (a Map with dynamic strides).
enum class layout { col, row, any };

template <typename X>
constexpr layout layout_of() {
  if constexpr (!has_direct_access<X>) {
    return layout::col;  // an expression: evaluated into a column-major copy
  } else if constexpr (Eigen::internal::inner_stride_at_compile_time<X>::ret == 1) {
    return X::IsRowMajor ? layout::row : layout::col;
  } else {
    return layout::any;
  }
}

template <typename T, typename P>
auto col_view(P* data, Index r, Index c, Index col_stride) {
  using M = std::conditional_t<std::is_const_v<P>, col_map<T>, col_map_mut<T>>;
  return M(data, r, c, Eigen::OuterStride<>(c <= 1 ? std::max<Index>(r, 1) : col_stride));
}

template <typename T, typename P>
auto row_view(P* data, Index r, Index c, Index row_stride) {
  using M = std::conditional_t<std::is_const_v<P>, row_map<T>, row_map_mut<T>>;
  return M(data, r, c, Eigen::OuterStride<>(r <= 1 ? std::max<Index>(c, 1) : row_stride));
}

/// Calls f with a unit-inner-stride map of x: x itself when it has direct access, such a
/// layout and (unless `copy`) no overlap with an output; else a plain copy (an expression is
/// evaluated once) in the same storage order, so that f sees one map type per argument type.
template <typename X, typename F>
void with_matrix(const Eigen::DenseBase<X>& x, bool copy, F&& f) {
  using T = typename X::Scalar;
  constexpr layout L = layout_of<X>();
  const Index r = x.rows(), c = x.cols();
  if constexpr (L == layout::row) {
    if (!copy) {
      f(row_view<T>(x.derived().data(), r, c, Index(x.derived().rowStride())));
      return;
    }
    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> plain = x;
    f(row_view<T>(plain.data(), r, c, c));
  } else {
    if constexpr (L == layout::col && has_direct_access<X>) {
      if (!copy) {
        f(col_view<T>(x.derived().data(), r, c, Index(x.derived().colStride())));
        return;
      }
    } else if constexpr (L == layout::any) {
      const X& m = x.derived();
      if (!copy && (r <= 1 || m.rowStride() == 1)) {
        f(col_view<T>(m.data(), r, c, Index(m.colStride())));
        return;
      }
      if (!copy && (c <= 1 || m.colStride() == 1)) {
        f(row_view<T>(m.data(), r, c, Index(m.rowStride())));
        return;
      }
    }
    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> plain = x;
    f(col_view<T>(plain.data(), r, c, r));
  }
}

/// Calls f with a writable unit-inner-stride map of out (already of its final shape): out
/// itself when its layout allows one, else a temporary that is copied into out afterwards.
template <typename Out, typename F>
void with_output_matrix(const Eigen::DenseBase<Out>& out, F&& f) {
  using T = typename Out::Scalar;
  constexpr layout L = layout_of<Out>();
  Out& o = writable(out);
  const Index r = o.rows(), c = o.cols();
  if constexpr (L == layout::row) {
    f(row_view<T>(o.data(), r, c, Index(o.rowStride())));
  } else if constexpr (L == layout::col) {
    f(col_view<T>(o.data(), r, c, Index(o.colStride())));
  } else {
    if (r <= 1 || o.rowStride() == 1) {
      f(col_view<T>(o.data(), r, c, Index(o.colStride())));
    } else if (c <= 1 || o.colStride() == 1) {
      f(row_view<T>(o.data(), r, c, Index(o.rowStride())));
    } else {
      Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> tmp(r, c);
      f(col_view<T>(tmp.data(), r, c, r));
      o = tmp;
    }
  }
}

/// True when the memory of x overlaps that of any of the outputs.
template <typename X, typename... Outs>
bool overlaps_any(const Eigen::DenseBase<X>& x, const Outs*... outs) {
  if constexpr (!has_direct_access<X>) {
    return false;
  } else {
    const auto one = [&](const auto* out) {
      using O = std::remove_cv_t<std::remove_pointer_t<decltype(out)>>;
      if constexpr (std::is_same_v<O, loss::no_output>) {
        return false;
      } else {
        return out != nullptr && loss::overlaps(x, *out);
      }
    };
    return (one(outs) || ...);
  }
}

// ---------------------------------------------------------------------------------------
// Checks (all before any output is written)

template <typename Out>
void check_grad_shape(const char* fn, const char* arg, const Eigen::DenseBase<Out>& out, Index rows,
                      Index cols, const char* of) {
  if (!can_take_shape(out, rows, cols)) {
    fail(fn, arg, "of shape " + shape_text(out.rows(), out.cols()),
         "storage of shape " + shape_text(rows, cols) + " (the shape of '" + of +
             "'), or a resizable matrix");
  }
}

inline void check_chunk(const char* fn, const char* arg, Index value, const char* what) {
  if (value < 0) {
    fail(fn, arg, std::to_string(value),
         std::string("a number of ") + what + " >= 0 (0 chooses automatically)");
  }
}

// ---------------------------------------------------------------------------------------
// The online pass over a row's chunks (two-pass plans)

/// What a row's values make of its softmax.
enum class row_kind : unsigned char { finite, one_hot, undefined };

/// The state of one row over the chunks of the first pass, then its gradient constants.
template <typename T>
struct row_state {
  using A = acc_t<T>;
  /// The running maximum (-inf: nothing finite seen yet).
  T m = -std::numeric_limits<T>::infinity();
  /// sum of exp((x_c - m) / T) over the classes seen.
  A s = A(0);
  /// Label smoothing's term: eps/C sum_c w_c (m - x_c) / T over the classes seen.
  A lin = A(0);
  /// The target class's logit.
  T zy = T(0);
  /// +inf logits seen, and the class of the last one.
  Index pos_inf = 0;
  Index hot = -1;
  /// A NaN seen.
  bool nan = false;
  // From finish_row: the kind of softmax, A = sum_c a_c, the gradient's scales, and whether
  // they overflow T (then A p - a is formed first, as ce_sample does).
  row_kind kind = row_kind::undefined;
  A a_sum = A(0);
  A k1 = A(0), k2 = A(0);
  bool careful = false;
};

/// The first pass over len logits x[0..len) of classes [c0, c0 + len) of a row with target
/// class y: folds them into st. w_before is sum_{c < c0} w_c (the weights of the classes
/// already seen), needed to move the smoothing term to a larger maximum.
template <typename T>
void absorb(row_state<T>& st, const T* x, Index len, Index c0, Index y, T temperature, T smooth,
            const strided_view<T>& w, acc_t<T> w_before) {
  using A = acc_t<T>;
  if (y >= c0 && y < c0 + len) st.zy = x[y - c0];
  if (st.nan) return;
  const T tm = max_fast(x, len, 1);
  if (!is_finite(tm) || st.pos_inf > 0) {
    // The rare cases, with a second look at the values: NaN, +inf, only -inf. Once a +inf
    // is seen the sums no longer matter: the row is one-hot or undefined.
    if (has_nan(x, len, 1)) {
      st.nan = true;
      return;
    }
    for (Index c = 0; c < len; ++c) {
      if (is_pos_inf(x[c])) {
        ++st.pos_inf;
        st.hot = c0 + c;
      }
    }
    if (st.pos_inf > 0) return;
  }
  const T mn = st.m < tm ? tm : st.m;
  // Nothing finite yet: these -inf logits add 0 to the sum, and their share of the
  // smoothing term (+inf where w_c > 0) arrives with the first finite maximum, through
  // w_before.
  if (is_neg_inf(mn)) return;
  if (mn > st.m) {
    // The online normaliser: move what was summed against the old maximum to the new one.
    // drop = (m_old - m_new) / T <= 0, in acc_t and halved for T > 1 (no overflow), -inf
    // when m_old = -inf.
    const A drop = shift<A>(static_cast<A>(mn), static_cast<A>(temperature))(static_cast<A>(st.m));
    if (st.s != A(0)) st.s *= std::exp(drop);
    if (smooth != T(0) && w_before != A(0)) st.lin += static_cast<A>(smooth) * w_before * -drop;
    st.m = mn;
  }
  const shift<T> sh(st.m, temperature);
  compensated_sum<A> acc;
  exp_sum<false>(x, 1, static_cast<T*>(nullptr), 1, len, sh, acc);
  const A chunk_sum = acc.total();
  if (is_nan(chunk_sum)) {  // a NaN the cheap maximum missed
    st.nan = true;
    return;
  }
  st.s += chunk_sum;
  if (smooth != T(0)) {
    const strided_view<T> wc =
        w.empty() ? w : strided_view<T>{w.data + c0 * w.stride, len, w.stride};
    st.lin += index_model<T>{0, T(0), smooth, wc, A(0)}.totals(x, 1, len, sh).linear;
  }
}

/// After the first pass: the row's loss sum_c a_c (-log p_c) (as ce_sample computes it) and
/// its gradient constants. model is the row's index model over all n classes.
template <typename T>
acc_t<T> finish_row(row_state<T>& st, const index_model<T>& model, Index n, T temperature,
                    T gscale) {
  using A = acc_t<T>;
  const A nan = std::numeric_limits<A>::quiet_NaN();
  if (st.nan || st.pos_inf > 1 || (st.pos_inf == 0 && is_neg_inf(st.m))) {
    st.kind = row_kind::undefined;
    return nan;
  }
  if (st.pos_inf == 1) {
    // p is one-hot on the +inf class: log p = 0 there, -inf elsewhere.
    st.kind = row_kind::one_hot;
    A a_sum(0);
    bool off_hot = false;
    for (Index c = 0; c < n; ++c) {
      const T a = model.coef(c);
      a_sum += static_cast<A>(a);
      off_hot = off_hot || (c != st.hot && a != T(0));
    }
    st.a_sum = a_sum;
    return off_hot ? std::numeric_limits<A>::infinity() : A(0);
  }
  st.kind = row_kind::finite;
  const shift<T> sh(st.m, temperature);
  A linear(0);
  if (model.hot != T(0)) linear += static_cast<A>(model.hot) * -static_cast<A>(sh(st.zy));
  linear += st.lin;
  st.a_sum = static_cast<A>(model.hot) + static_cast<A>(model.smooth) * model.w_sum;
  st.k2 = static_cast<A>(gscale) / static_cast<A>(temperature);
  st.k1 = st.k2 * st.a_sum / st.s;
  st.careful = !(is_finite(static_cast<T>(st.k1)) && is_finite(static_cast<T>(st.k2)));
  return st.a_sum * std::log(st.s) + linear;
}

/// The second pass over one chunk of a row: turns its logits x[0..len) (classes
/// [c0, c0 + len)) into the gradient, in place, with the constants of finish_row.
/// tile_model is the row's index model restricted to the chunk.
template <typename T>
void gradient_chunk(const row_state<T>& st, const index_model<T>& tile_model, T* x, Index len,
                    Index c0, T temperature, T gscale) {
  using A = acc_t<T>;
  if (st.kind == row_kind::undefined) {
    fill(x, len, 1, std::numeric_limits<T>::quiet_NaN());
    return;
  }
  if (st.kind == row_kind::one_hot) {
    const T k2 = gscale / temperature;
    for (Index c = 0; c < len; ++c) {
      x[c] = k2 * ((c0 + c == st.hot ? static_cast<T>(st.a_sum) : T(0)) - tile_model.coef(c));
    }
    return;
  }
  const shift<T> sh(st.m, temperature);
  pairwise_sum<A> unused;
  // exp(s_c) 2^K, exactly, as ce_sample stores it: no rounding on the subnormal grid before
  // the factor 1 / T (K = 0 from T = 1 up); the scale cancels against s 2^K.
  const exp_scale<T> sc(loss::gradient_exp_scale<T>(st.a_sum, temperature, len));
  exp_sum<true>(x, 1, x, 1, len, sh, unused, sc);
  const A s_scaled = sc.k == 0 ? st.s : std::ldexp(st.s, sc.k);
  if (!st.careful) {
    const A k1 = sc.k == 0 ? st.k1 : std::ldexp(st.k1, -sc.k);
    tile_model.finish(x, 1, len, static_cast<T>(k1), static_cast<T>(st.k2));
  } else {
    const A t = static_cast<A>(temperature);
    const A st_scaled = s_scaled * t;
    for (Index c = 0; c < len; ++c) {
      const A e = static_cast<A>(x[c]);
      const A a = static_cast<A>(tile_model.coef(c));
      const A q = st.a_sum * e / st_scaled - a / t;  // (A p - a) / T, p never rounded alone
      if (is_finite(q)) {
        x[c] = q == A(0) ? T(0) : static_cast<T>(q * static_cast<A>(gscale));
      } else {
        const A dd = st.a_sum * e / s_scaled - a;
        x[c] = dd == A(0) ? T(0) : static_cast<T>(dd * st.k2);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// The driver

/// Where the gradients go (null pointers in the loss-only mode).
template <typename GH, typename GW, typename GB>
struct grad_outputs {
  const GH* dH;
  const GW* dW;
  const GB* db;
};

/// The rows of a chunk and the GEMMs around it.
template <typename T, typename HM, typename WM>
struct gemm_context {
  const HM& h;
  const WM& w;
  const T* bias;  // null: no bias
  Index bias_stride;
};

/// tile(0..cb, 0..rb) = W[c0 .. c0 + cb) H[r0 .. r0 + rb)^T + b[c0 ..]: the chunk's logits,
/// one column per row (token), in slices of gemm_classes classes.
template <typename T, typename HM, typename WM, typename Tile>
void chunk_logits(const gemm_context<T, HM, WM>& g, Tile& tile, Index r0, Index rb, Index c0,
                  Index cb) {
  // Hidden size 0: the logits are the bias; H and W have no entries (and maybe no storage,
  // which no block may offset).
  const bool empty = g.h.cols() == 0;
  for (Index s0 = 0; s0 < cb; s0 += gemm_classes) {
    const Index sb = std::min(gemm_classes, cb - s0);
    auto z = tile.block(s0, 0, sb, rb);
    if (g.bias != nullptr) {
      using S = Eigen::InnerStride<>;
      const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>, 0, S> b(
          g.bias + (c0 + s0) * g.bias_stride, sb, S(g.bias_stride));
      z.colwise() = b;
      if (!empty) z.noalias() += g.w.middleRows(c0 + s0, sb) * g.h.middleRows(r0, rb).transpose();
    } else if (!empty) {
      z.noalias() = g.w.middleRows(c0 + s0, sb) * g.h.middleRows(r0, rb).transpose();
    } else {
      z.setZero();
    }
  }
}

/// dH[r0 ..) += G^T W[c0 ..) and dW[c0 ..) += G hr for the chunk's gradient G (in tile,
/// classes x rows) and the chunk's rows hr of H, in slices of gemm_classes classes.
template <typename WM, typename Tile, typename HR, typename DH, typename DW>
void chunk_backward(const WM& w, const Tile& tile, const HR& hr, DH& dh, DW& dw, Index r0, Index rb,
                    Index c0, Index cb) {
  auto dhr = dh.middleRows(r0, rb);
  for (Index s0 = 0; s0 < cb; s0 += gemm_classes) {
    const Index sb = std::min(gemm_classes, cb - s0);
    const auto gz = tile.block(s0, 0, sb, rb);
    dhr.noalias() += gz.transpose() * w.middleRows(c0 + s0, sb);
    dw.middleRows(c0 + s0, sb).noalias() += gz * hr;
  }
}

/// True when a token that is ignored has a NaN or infinite entry in its row of H: its zero
/// gradient would still reach dW through 0 * inf = NaN.
template <typename HM, typename IV>
bool ignored_rows_not_finite(const HM& h, const IV& tv, std::int64_t ignore_index, Index r0,
                             Index rb) {
  for (Index j = 0; j < rb; ++j) {
    if (tv[r0 + j] != ignore_index) continue;
    for (Index k = 0; k < h.cols(); ++k) {
      if (!is_finite(h(r0 + j, k))) return true;
    }
  }
  return false;
}

/// The computation proper, on views: h (N x d), w (V x d), optional bias; tv the checked
/// targets. dh, dw (null in the loss-only mode) are zeroed maps of the outputs' final
/// shapes, db_acc the per-class sum of the gradient (acc_t) when a bias gradient is wanted.
template <bool Grads, typename T, typename HM, typename WM, typename IV, typename DH, typename DW>
T run_views(const gemm_context<T, HM, WM>& g, const IV& tv, const cross_entropy_options<T>& o,
            const plan& p, acc_t<T> denom, DH* dh, DW* dw, acc_t<T>* db_acc) {
  using A = acc_t<T>;
  const Index n = g.h.rows(), v = g.w.rows();
  constexpr bool grads = Grads;
  const strided_view<T> w = loss::view_of(o.weight);
  const T temperature = o.temperature;
  const T eps = o.label_smoothing;
  const T smooth = v == 0 ? T(0) : eps / static_cast<T>(v);
  const A w_sum = w.empty()
                      ? static_cast<A>(v)
                      : loss::blocked_sum<A>(v, [&](Index c) { return static_cast<A>(w[c]); });
  const bool mean = o.reduction == ::smax::reduction::mean;
  const T gscale = (grads && mean) ? static_cast<T>(A(1) / denom) : T(1);
  const auto model_of = [&](Index y) {
    return index_model<T>{y, (T(1) - eps) * w.or_one(y), smooth, w, w_sum};
  };
  // db += the gradient column g[0..len) of classes [c0, c0 + len).
  const auto add_db = [&](const T* gcol, Index c0, Index len) {
    if (db_acc == nullptr) return;
    A* acc = db_acc + c0;
    for (Index c = 0; c < len; ++c) acc[c] += static_cast<A>(gcol[c]);
  };

  loss::reduction_total<T> total;
  if (n == 0 || v == 0) {
    // No logits: every sample is ignored (the targets were checked), each adds 0.
    return static_cast<T>(mean ? total.mean(denom) : total.sum());
  }
  const bool one_pass = p.classes >= v;
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> tile(p.classes, p.rows);
  std::vector<row_state<T>> states(one_pass ? 0 : static_cast<std::size_t>(p.rows));
  // The products of a chunk's gradient. An ignored token adds nothing to dW even when its
  // row of H is not finite (as cross_entropy's ignored rows add nothing even when their
  // logits are NaN): the rows of such a block are then read from a copy with those rows
  // zeroed.
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> masked;
  const auto backward = [&](Index r0, Index rb, Index c0, Index cb) {
    if constexpr (grads) {
      if (c0 == 0) {
        masked.resize(0, 0);
        if (ignored_rows_not_finite(g.h, tv, o.ignore_index, r0, rb)) {
          masked = g.h.middleRows(r0, rb);
          for (Index j = 0; j < rb; ++j) {
            if (tv[r0 + j] == o.ignore_index) masked.row(j).setZero();
          }
        }
      }
      if (g.h.cols() == 0) return;  // hidden size 0: dH and dW have no entries
      if (masked.size() == 0) {
        chunk_backward(g.w, tile, g.h.middleRows(r0, rb), *dh, *dw, r0, rb, c0, cb);
      } else {
        chunk_backward(g.w, tile, masked, *dh, *dw, r0, rb, c0, cb);
      }
    }
  };

  for (Index r0 = 0; r0 < n; r0 += p.rows) {
    const Index rb = std::min(p.rows, n - r0);
    if (one_pass) {
      chunk_logits(g, tile, r0, rb, 0, v);
      for (Index j = 0; j < rb; ++j) {
        T* x = tile.data() + j * tile.outerStride();
        const std::int64_t y = tv[r0 + j];
        if (y == o.ignore_index) {
          if (grads) fill(x, v, 1, T(0));
          total.add(A(0));
          continue;
        }
        total.add(loss::ce_sample(x, 1, v, temperature, model_of(static_cast<Index>(y)),
                                  grads ? x : nullptr, 1, gscale));
        if (grads) add_db(x, 0, v);
      }
      if constexpr (grads) backward(r0, rb, 0, v);
      continue;
    }

    // Two passes over the vocabulary. Pass 1: the online normaliser of every row.
    for (Index j = 0; j < rb; ++j) states[static_cast<std::size_t>(j)] = row_state<T>{};
    A w_before(0);
    for (Index c0 = 0; c0 < v; c0 += p.classes) {
      const Index cb = std::min(p.classes, v - c0);
      chunk_logits(g, tile, r0, rb, c0, cb);
      for (Index j = 0; j < rb; ++j) {
        const std::int64_t y = tv[r0 + j];
        if (y == o.ignore_index) continue;
        absorb(states[static_cast<std::size_t>(j)], tile.data() + j * tile.outerStride(), cb, c0,
               static_cast<Index>(y), temperature, smooth, w, w_before);
      }
      if (smooth != T(0)) {
        w_before += w.empty() ? static_cast<A>(cb) : loss::blocked_sum<A>(cb, [&](Index c) {
          return static_cast<A>(w[c0 + c]);
        });
      }
    }
    for (Index j = 0; j < rb; ++j) {
      const std::int64_t y = tv[r0 + j];
      if (y == o.ignore_index) {
        total.add(A(0));
        continue;
      }
      total.add(finish_row(states[static_cast<std::size_t>(j)], model_of(static_cast<Index>(y)), v,
                           temperature, gscale));
    }
    if constexpr (!grads) continue;

    // Pass 2: the logits again, their gradient, and its products.
    for (Index c0 = 0; c0 < v; c0 += p.classes) {
      const Index cb = std::min(p.classes, v - c0);
      chunk_logits(g, tile, r0, rb, c0, cb);
      const strided_view<T> wc =
          w.empty() ? w : strided_view<T>{w.data + c0 * w.stride, cb, w.stride};
      for (Index j = 0; j < rb; ++j) {
        T* x = tile.data() + j * tile.outerStride();
        const std::int64_t y = tv[r0 + j];
        if (y == o.ignore_index) {
          fill(x, cb, 1, T(0));
          continue;
        }
        const Index yc = static_cast<Index>(y);
        const bool here = yc >= c0 && yc < c0 + cb;
        const index_model<T> tile_model{
            here ? yc - c0 : 0, here ? (T(1) - eps) * w.or_one(yc) : T(0), smooth, wc, w_sum};
        gradient_chunk(states[static_cast<std::size_t>(j)], tile_model, x, cb, c0, temperature,
                       gscale);
        add_db(x, c0, cb);
      }
      if constexpr (grads) backward(r0, rb, c0, cb);
    }
  }
  return static_cast<T>(mean ? total.mean(denom) : total.sum());
}

/// Checks every argument, then sizes the outputs and runs. Returns the reduced loss.
/// bias is a loss::no_output placeholder without a bias; the outputs are null pointers when
/// not wanted.
template <typename DH, typename DW, typename B, typename Targets, typename GH, typename GW,
          typename GB>
typename DH::Scalar run(const char* fn, const Eigen::DenseBase<DH>& h,
                        const Eigen::DenseBase<DW>& wm, const B* bias, const Targets& targets,
                        const linear_cross_entropy_options<typename DH::Scalar>& o,
                        const grad_outputs<GH, GW, GB>& out) {
  using T = typename DH::Scalar;
  using A = acc_t<T>;
  static_check_scalar<DH>();
  static_assert(std::is_same_v<typename DW::Scalar, T>,
                "smax::linear_cross_entropy: 'W' must have the scalar type of 'H'");
  static_assert(loss::is_index_targets_v<Targets>,
                "smax::linear_cross_entropy: 'targets' must be class indices (an integer, an "
                "Eigen integer vector, or a contiguous range of integers such as "
                "std::vector<int>)");
  constexpr bool has_bias = !std::is_same_v<B, loss::no_output>;
  if constexpr (has_bias) {
    static_assert(B::IsVectorAtCompileTime,
                  "smax::linear_cross_entropy: the bias 'b' must be a compile-time vector (one "
                  "entry per class)");
    static_assert(std::is_same_v<typename B::Scalar, T>,
                  "smax::linear_cross_entropy: 'b' must have the scalar type of 'H'");
  }
  constexpr bool grads = !std::is_same_v<GH, loss::no_output>;
  if constexpr (grads) {
    static_check_output<GH, DH>();
    static_check_output<GW, DH>();
    if constexpr (has_bias) {
      static_check_output<GB, DH>();
      static_assert(GB::IsVectorAtCompileTime,
                    "smax::linear_cross_entropy: 'db' must be a compile-time vector");
    }
  }

  const Index n = h.rows(), d = h.cols(), v = wm.rows();
  if (wm.cols() != d) {
    fail(fn, "W", "of shape " + shape_text(wm.rows(), wm.cols()),
         std::to_string(d) + " columns (the hidden size: the columns of 'H', " + shape_text(n, d) +
             ")");
  }
  if constexpr (has_bias) {
    if (bias->size() != v) {
      fail(fn, "b", "of length " + std::to_string(bias->size()),
           "one entry per class (" + std::to_string(v) + ", the rows of 'W')");
    }
  }
  loss::check_loss_temperature(fn, o.temperature);
  loss::check_label_smoothing(fn, o.label_smoothing);
  loss::check_class_weights(fn, "options.weight", loss::view_of(o.weight), v);
  if (o.reduction == ::smax::reduction::none) {
    fail(fn, "options.reduction", "reduction::none",
         "reduction::mean or reduction::sum (there is no per-token form)");
  }
  check_chunk(fn, "options.chunk_rows", o.chunk_rows, "rows");
  check_chunk(fn, "options.chunk_classes", o.chunk_classes, "classes");
  if constexpr (grads) {
    check_grad_shape(fn, "dH", *out.dH, n, d, "H");
    check_grad_shape(fn, "dW", *out.dW, v, d, "W");
    if (loss::overlaps(*out.dH, *out.dW)) {
      fail(fn, "dW", "storage that overlaps 'dH'", "separate storage for each gradient");
    }
    if constexpr (has_bias) {
      if (!(out.db->size() == v || can_take_shape(*out.db, GB::RowsAtCompileTime == 1 ? 1 : v,
                                                  GB::RowsAtCompileTime == 1 ? v : 1))) {
        fail(fn, "db", "of length " + std::to_string(out.db->size()),
             "a vector of length " + std::to_string(v) + " (the length of 'b')");
      }
      if (loss::overlaps(*out.db, *out.dH) || loss::overlaps(*out.db, *out.dW)) {
        fail(fn, "db", "storage that overlaps 'dH' or 'dW'", "separate storage for each gradient");
      }
    }
  }

  T result(0);
  loss::with_index_view(targets, [&](const auto& tv) {
    loss::check_index_count(fn, tv, n);
    const strided_view<T> wv = loss::view_of(o.weight);
    const A denom = loss::check_indices<T>(fn, tv, v, o.ignore_index, wv);
    const plan p = make_plan(n, v, d, o.chunk_rows, o.chunk_classes, grads);

    // Inputs that share memory with an output are copied before anything is written.
    const bool copy_h = overlaps_any(h, out.dH, out.dW, out.db);
    const bool copy_w = overlaps_any(wm, out.dH, out.dW, out.db);
    with_matrix(h, copy_h, [&](const auto& hv) {
      with_matrix(wm, copy_w, [&](const auto& wv2) {
        const auto go = [&](const T* bdata, Index bstride) {
          const gemm_context<T, std::decay_t<decltype(hv)>, std::decay_t<decltype(wv2)>> g{
              hv, wv2, bdata, bstride};
          if constexpr (!grads) {
            using Dummy = col_map_mut<T>;
            result = run_views<false, T>(g, tv, o, p, denom, static_cast<Dummy*>(nullptr),
                                         static_cast<Dummy*>(nullptr), nullptr);
          } else {
            resize_to(*out.dH, n, d);
            resize_to(*out.dW, v, d);
            std::vector<A> db_acc(has_bias ? static_cast<std::size_t>(v) : 0, A(0));
            with_output_matrix(*out.dH, [&](auto&& dh) {
              with_output_matrix(*out.dW, [&](auto&& dw) {
                dh.setZero();
                dw.setZero();
                result = run_views<true, T>(g, tv, o, p, denom, &dh, &dw,
                                            has_bias ? db_acc.data() : nullptr);
              });
            });
            if constexpr (has_bias) {
              resize_to_length(*out.db, v);
              GB& db = writable(*out.db);
              for (Index c = 0; c < v; ++c) {
                db.coeffRef(c) = static_cast<T>(db_acc[static_cast<std::size_t>(c)]);
              }
            }
          }
        };
        if constexpr (has_bias) {
          const bool copy_b = overlaps_any(*bias, out.dH, out.dW, out.db);
          if (copy_b || !has_direct_access<B>) {
            const Eigen::Matrix<T, Eigen::Dynamic, 1> plain = *bias;
            go(plain.data(), 1);
          } else if constexpr (has_direct_access<B>) {
            go(bias->derived().data(), loss::vector_stride(*bias));
          }
        } else {
          go(nullptr, 1);
        }
      });
    });
  });
  return result;
}

template <typename X>
inline constexpr bool is_floating_vector_v = [] {
  if constexpr (loss::is_eigen_v<X>) {
    return std::is_floating_point_v<typename X::Scalar>;
  } else {
    return false;
  }
}();

template <typename Targets>
using enable_if_index_targets_t = std::enable_if_t<loss::is_index_targets_v<Targets>, int>;

template <typename B, typename Targets>
using enable_if_bias_t =
    std::enable_if_t<is_floating_vector_v<B> && loss::is_index_targets_v<Targets>, int>;

}  // namespace detail::linear

// ---------------------------------------------------------------------------------------
// The public functions

/// Softmax cross-entropy of the linear layer z = H W^T against class indices, computed in
/// chunks: the N x V logits are never held in memory. Equal to
/// `cross_entropy(H * W.transpose(), targets, smax::rowwise, options)` up to the rounding
/// of the logits.
///
/// H is N x d (one row per token), W is V x d (one row per class, like torch.nn.Linear's
/// weight), targets has one class index per token (an Eigen integer vector, a
/// std::vector<int> ...). Loss, options and edge cases: those of cross_entropy (index
/// targets; see cross_entropy.hpp): l_n = (1 - eps) w_{y_n} (-log p_{n,y_n}) + (eps / V)
/// sum_c w_c (-log p_{n,c}) with p_n = softmax(z_n / T), 0 for a token whose target is
/// ignore_index; mean divides by the sum of w_{y_n} over the tokens not ignored (0/0 = NaN
/// when there are none), sum does not.
///
/// Edge cases: the logits follow cross_entropy's numerical policy (a +-inf or NaN logit, from
/// a non-finite or overflowing H, W or b, gives what it gives there). No tokens: mean NaN,
/// sum 0, dW and db zero. Hidden size 0: the logits are b. An ignored token adds nothing, not
/// even when its row of H is NaN or infinite: that row never meets dW (the materialised
/// G^T H would give 0 * NaN = NaN there).
///
/// Accuracy: with whole rows per chunk the loss and the logits' gradient are those of
/// cross_entropy on the same logits, bit for bit; with two passes they differ by a few ULP
/// (the online normaliser rescales its sum when the maximum grows). The logits themselves
/// are Eigen's GEMM, whose rounding depends on the chunk shape.
///
/// Complexity: one GEMM (2 N V d flops) in chunks, and per logit the work of cross_entropy.
/// Allocates one chunk of logits (options.chunk_rows x options.chunk_classes, automatic by
/// default: about the size of H), a few numbers per row of a chunk, and Eigen's GEMM
/// buffers; copies H or W only if it is an expression or has no unit stride.
/// \throws smax::error if W does not have d columns, options.reduction is none, the
/// temperature, label smoothing, weights or chunk sizes are invalid, or a target is
/// neither ignore_index nor in [0, V) (naming the token and the value).
template <typename DH, typename DW, typename Targets,
          detail::linear::enable_if_index_targets_t<Targets> = 0>
typename DH::Scalar linear_cross_entropy(
    const Eigen::DenseBase<DH>& H, const Eigen::DenseBase<DW>& W, const Targets& targets,
    const linear_cross_entropy_options<typename DH::Scalar>& options = {}) {
  using N = detail::loss::no_output;
  return detail::linear::run("smax::linear_cross_entropy", H, W, static_cast<const N*>(nullptr),
                             targets, options, detail::linear::grad_outputs<N, N, N>{});
}

/// Softmax cross-entropy of the linear layer z = H W^T + b (b: one entry per class, either
/// orientation) against class indices, in chunks. See the form without a bias.
/// \throws smax::error as the form without a bias, or if b does not have V entries.
template <typename DH, typename DW, typename B, typename Targets,
          detail::linear::enable_if_bias_t<B, Targets> = 0>
typename DH::Scalar linear_cross_entropy(
    const Eigen::DenseBase<DH>& H, const Eigen::DenseBase<DW>& W, const Eigen::DenseBase<B>& b,
    const Targets& targets, const linear_cross_entropy_options<typename DH::Scalar>& options = {}) {
  using N = detail::loss::no_output;
  return detail::linear::run("smax::linear_cross_entropy", H, W, &b.derived(), targets, options,
                             detail::linear::grad_outputs<N, N, N>{});
}

/// Linear cross-entropy (z = H W^T) and its gradients, written into caller storage (the
/// LBFGSpp convention: returns the loss, fills the gradients):
///   dH = G W (N x d),   dW = G^T H (V x d),
/// where G = d loss / d z = (A_n p_n - a_n) / T per token, over the mean's denominator (as
/// cross_entropy_with_grad; 0 for ignored tokens), is formed a chunk at a time and never
/// whole. dH and dW are resized if they are resizable plain objects, else must have the
/// shapes of H and W.
///
/// Complexity: three GEMMs when a chunk holds whole rows (options.chunk_classes >= V; the
/// automatic choice when 128 rows fit the budget or are at most 1/32 of the logits), four
/// otherwise (the logits of every chunk are computed twice): 6 N V d or 8 N V d flops.
/// Allocates what linear_cross_entropy does; nothing proportional to N x V. An input that
/// shares memory with a gradient (dH = H for an in-place update, say) is copied first.
/// \throws smax::error as linear_cross_entropy, or if dH or dW cannot take their shape or
/// overlap each other; the gradients are then untouched.
template <typename GH, typename GW, typename DH, typename DW, typename Targets,
          detail::linear::enable_if_index_targets_t<Targets> = 0>
typename DH::Scalar linear_cross_entropy_with_grad_into(
    const Eigen::DenseBase<GH>& dH, const Eigen::DenseBase<GW>& dW, const Eigen::DenseBase<DH>& H,
    const Eigen::DenseBase<DW>& W, const Targets& targets,
    const linear_cross_entropy_options<typename DH::Scalar>& options = {}) {
  using N = detail::loss::no_output;
  return detail::linear::run(
      "smax::linear_cross_entropy_with_grad_into", H, W, static_cast<const N*>(nullptr), targets,
      options, detail::linear::grad_outputs<GH, GW, N>{&dH.derived(), &dW.derived(), nullptr});
}

/// Linear cross-entropy with a bias (z = H W^T + b) and its gradients into caller storage:
/// dH = G W, dW = G^T H, db = sum over tokens of G (V entries, summed in acc_t: double for
/// float). Returns the loss. See the form without a bias.
/// \throws smax::error as the form without a bias, if b does not have V entries, or if db
/// cannot hold V entries or overlaps dH or dW.
template <typename GH, typename GW, typename GB, typename DH, typename DW, typename B,
          typename Targets, detail::linear::enable_if_bias_t<B, Targets> = 0>
typename DH::Scalar linear_cross_entropy_with_grad_into(
    const Eigen::DenseBase<GH>& dH, const Eigen::DenseBase<GW>& dW, const Eigen::DenseBase<GB>& db,
    const Eigen::DenseBase<DH>& H, const Eigen::DenseBase<DW>& W, const Eigen::DenseBase<B>& b,
    const Targets& targets, const linear_cross_entropy_options<typename DH::Scalar>& options = {}) {
  return detail::linear::run(
      "smax::linear_cross_entropy_with_grad_into", H, W, &b.derived(), targets, options,
      detail::linear::grad_outputs<GH, GW, GB>{&dH.derived(), &dW.derived(), &db.derived()});
}

/// Linear cross-entropy (z = H W^T) and its gradients: `.loss`, `.dH` (H's plain type),
/// `.dW` (W's plain type); `.db` is empty. Calls linear_cross_entropy_with_grad_into;
/// allocates the gradients and what that function does.
template <typename DH, typename DW, typename Targets,
          detail::linear::enable_if_index_targets_t<Targets> = 0>
linear_loss_with_grad<typename DH::Scalar, typename DH::PlainObject, typename DW::PlainObject,
                      Eigen::Matrix<typename DH::Scalar, Eigen::Dynamic, 1>>
linear_cross_entropy_with_grad(
    const Eigen::DenseBase<DH>& H, const Eigen::DenseBase<DW>& W, const Targets& targets,
    const linear_cross_entropy_options<typename DH::Scalar>& options = {}) {
  using N = detail::loss::no_output;
  linear_loss_with_grad<typename DH::Scalar, typename DH::PlainObject, typename DW::PlainObject,
                        Eigen::Matrix<typename DH::Scalar, Eigen::Dynamic, 1>>
      r{};
  r.loss = detail::linear::run(
      "smax::linear_cross_entropy_with_grad", H, W, static_cast<const N*>(nullptr), targets,
      options,
      detail::linear::grad_outputs<typename DH::PlainObject, typename DW::PlainObject, N>{
          &r.dH, &r.dW, nullptr});
  return r;
}

/// Linear cross-entropy with a bias (z = H W^T + b) and its gradients: `.loss`, `.dH`,
/// `.dW`, `.db` (each the plain type of H, W, b). Calls linear_cross_entropy_with_grad_into;
/// allocates the gradients and what that function does.
template <typename DH, typename DW, typename B, typename Targets,
          detail::linear::enable_if_bias_t<B, Targets> = 0>
linear_loss_with_grad<typename DH::Scalar, typename DH::PlainObject, typename DW::PlainObject,
                      typename B::PlainObject>
linear_cross_entropy_with_grad(
    const Eigen::DenseBase<DH>& H, const Eigen::DenseBase<DW>& W, const Eigen::DenseBase<B>& b,
    const Targets& targets, const linear_cross_entropy_options<typename DH::Scalar>& options = {}) {
  linear_loss_with_grad<typename DH::Scalar, typename DH::PlainObject, typename DW::PlainObject,
                        typename B::PlainObject>
      r{};
  r.loss = detail::linear::run(
      "smax::linear_cross_entropy_with_grad", H, W, &b.derived(), targets, options,
      detail::linear::grad_outputs<typename DH::PlainObject, typename DW::PlainObject,
                                   typename B::PlainObject>{&r.dH, &r.dW, &r.db});
  return r;
}

}  // namespace smax
