// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <Eigen/Core>

/// \file
/// smax::causal: a causal (lower-triangular) mask described by one number instead of a
/// boolean matrix.

namespace smax {

/// A causal mask over a 2-D input, never materialised. With rows as distributions
/// (smax::rowwise; query i attends to keys j), entry (i, j) is kept when
/// `j <= i + offset`; with smax::colwise, entry (i, j) is kept when `i <= j + offset`.
/// `offset = 0` is the usual causal mask (each query sees itself and the past);
/// `offset = k - q` aligns the last of q queries with the last of k keys, as when new
/// tokens attend to a key/value cache. Rows that keep nothing are fully masked.
struct causal_mask {
  /// How far past the diagonal a distribution may see (negative: not even the diagonal).
  Eigen::Index offset = 0;

  /// True when entry (query, key) is kept.
  constexpr bool keeps(Eigen::Index query, Eigen::Index key) const {
    return key - query <= offset;  // not key <= query + offset: that overflows near Index max
  }
};

/// The usual causal mask (offset 0). `smax::causal_mask{k}` gives another offset.
inline constexpr causal_mask causal{};

}  // namespace smax
