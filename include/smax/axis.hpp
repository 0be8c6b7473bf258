// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <type_traits>

/// \file
/// The axis tags that say which direction of a 2-D input holds each distribution.

namespace smax {

/// Tag type of smax::rowwise.
struct rowwise_t {
  explicit constexpr rowwise_t() = default;
};
/// Tag type of smax::colwise.
struct colwise_t {
  explicit constexpr colwise_t() = default;
};

/// Each row is one distribution (Eigen's meaning: like `m.rowwise().sum()`, one value per row).
inline constexpr rowwise_t rowwise{};
/// Each column is one distribution (like `m.colwise().sum()`, one value per column).
inline constexpr colwise_t colwise{};

/// True for smax::rowwise_t and smax::colwise_t.
template <typename T>
inline constexpr bool is_axis_v =
    std::is_same_v<std::decay_t<T>, rowwise_t> || std::is_same_v<std::decay_t<T>, colwise_t>;

}  // namespace smax
