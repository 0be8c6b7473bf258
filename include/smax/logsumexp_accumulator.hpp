// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include <smax/detail/dispatch.hpp>
#include <smax/detail/kernels.hpp>

/// \file
/// A mergeable logsumexp state for streaming and sharded data (the "online normaliser").

namespace smax {

/// Running logsumexp over values that arrive one by one, in blocks, or in shards whose
/// states are merged: the state is the running maximum m and the scaled sum
/// s = sum_i exp(x_i - m), so value() = m + log(s). Any split of the data gives the
/// one-shot logsumexp to within a few ULP of max(|result|, 1).
///
/// Policy, as smax::logsumexp: nothing pushed (or only -inf) gives -inf, any +inf gives
/// +inf, any NaN gives NaN. The scaled sum is kept in double for float and compensated
/// (Neumaier), so pushing values one by one loses no accuracy. The state is a
/// few scalars: copying, pushing and merging never allocate (a block that is an
/// expression is evaluated once).
///
/// \code
/// smax::logsumexp_accumulator<float> total;
/// for (const auto& shard : shards) {
///   smax::logsumexp_accumulator<float> part;
///   part.push(shard);       // any Eigen vector
///   total.merge(part);
/// }
/// float lse = total.value();
/// \endcode
template <typename T>
class logsumexp_accumulator {
  static_assert(std::is_floating_point_v<T>,
                "smax::logsumexp_accumulator: T must be float, double or long double");

 public:
  /// The type of the values pushed.
  using scalar_type = T;
  /// The type the scaled sum is kept in (double for float).
  using sum_type = detail::acc_t<T>;

  /// The empty state: value() is -inf.
  logsumexp_accumulator() = default;

  /// Adds one value.
  void push(T x) { absorb(x, sum_type(1)); }

  /// Adds every entry of a block (any Eigen vector or matrix; all its entries count).
  template <typename D>
  void push(const Eigen::DenseBase<D>& block) {
    static_assert(std::is_same_v<typename D::Scalar, T>,
                  "smax::logsumexp_accumulator::push: the block's scalar type must be T");
    if constexpr (detail::has_direct_access<D>) {
      const D& b = block.derived();
      if (b.innerStride() == 1 && (b.outerSize() <= 1 || b.outerStride() == b.innerSize())) {
        push_contiguous(b.data(), 1, b.size());
      } else {
        for (Eigen::Index j = 0; j < b.outerSize(); ++j) {
          const auto* first = D::IsRowMajor ? &b.coeffRef(j, 0) : &b.coeffRef(0, j);
          push_contiguous(first, b.innerStride(), b.innerSize());
        }
      }
    } else {
      const typename D::PlainObject copy = block;
      push_contiguous(copy.data(), 1, copy.size());
    }
  }

  /// Adds everything another accumulator has seen.
  void merge(const logsumexp_accumulator& other) { absorb(other.max_, other.scaled_sum()); }

  /// logsumexp of everything pushed so far.
  T value() const {
    if (!detail::is_finite(max_)) return max_;
    return static_cast<T>(static_cast<sum_type>(max_) + std::log(scaled_sum()));
  }

  /// The running maximum m (-inf when empty, NaN after a NaN).
  T max() const { return max_; }
  /// The scaled sum s = sum_i exp(x_i - m), in [1, count] once a finite value was pushed.
  sum_type scaled_sum() const { return sum_ + compensation_; }

 private:
  void push_contiguous(const T* x, Eigen::Index stride, Eigen::Index n) {
    const T m = detail::max_nan(x, n, stride);
    if (!detail::is_finite(m)) {
      if (detail::is_nan(m) || detail::is_pos_inf(m)) absorb(m, sum_type(1));
      return;  // empty or all -inf: nothing to add
    }
    detail::compensated_sum<sum_type> acc;
    detail::exp_sum<false>(x, stride, static_cast<T*>(nullptr), 1, n, detail::shift<T>(m, T(1)),
                           acc);
    absorb(m, acc.total());
  }

  // Folds in a state (m, s) meaning sum exp(x_i) = exp(m) * s.
  void absorb(T m, sum_type s) {
    if (detail::is_nan(max_) || detail::is_neg_inf(m)) return;
    if (detail::is_nan(m) || detail::is_pos_inf(m) || detail::is_pos_inf(max_)) {
      max_ = (detail::is_nan(m) || detail::is_nan(max_)) ? std::numeric_limits<T>::quiet_NaN()
                                                         : std::max(max_, m);
      return;
    }
    if (m > max_) {
      const sum_type f = std::exp(static_cast<sum_type>(max_) - static_cast<sum_type>(m));
      sum_ *= f;
      compensation_ *= f;
      max_ = m;
      add(s);
    } else {
      add(s * std::exp(static_cast<sum_type>(m) - static_cast<sum_type>(max_)));
    }
  }

  // Neumaier's compensated sum: values pushed one by one would otherwise accumulate one
  // rounding each, n * eps/2 after n pushes.
  void add(sum_type v) {
    const sum_type t = sum_ + v;
    compensation_ += std::abs(sum_) >= std::abs(v) ? (sum_ - t) + v : (v - t) + sum_;
    sum_ = t;
  }

  T max_ = -std::numeric_limits<T>::infinity();
  sum_type sum_ = sum_type(0);
  sum_type compensation_ = sum_type(0);
};

}  // namespace smax
