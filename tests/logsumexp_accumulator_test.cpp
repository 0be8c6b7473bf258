// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// smax::logsumexp_accumulator: one value at a time, in blocks of every Eigen kind, merged
// over random splits and random merge trees, against the one-shot smax::logsumexp and the
// high-precision reference; and the edge cases of the policy.
//
// Tolerance: every way of feeding the same values gives the one-shot result within
// 4 ULP of max(|r|, 1) (the documented "few ULP"), and the reference within 4 ULP too.

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/logsumexp_accumulator.hpp>
#include <smax/softmax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace {

using namespace smax_test;

template <typename T>
class LogsumexpAccumulator : public ::testing::Test {};
TYPED_TEST_SUITE(LogsumexpAccumulator, FloatingTypes, TypeNames);

constexpr long double merge_tolerance_ulps = 4;

/// Error of an accumulated value against the one-shot logsumexp, in ULPs of max(|r|, 1).
template <typename T>
long double against_one_shot(T accumulated, T one_shot) {
  return log_domain_error<T>(accumulated, static_cast<long double>(one_shot));
}

/// Accumulates z[first, last) by a random binary merge tree: split at a random point,
/// recurse on both halves, merge in a random order; leaves of up to 8 values are pushed
/// one by one or as a block.
template <typename T>
smax::logsumexp_accumulator<T> tree(const Vec<T>& z, Index first, Index last, std::mt19937& rng) {
  smax::logsumexp_accumulator<T> acc;
  if (last - first <= 8) {
    if (rng() % 2 == 0) {
      for (Index i = first; i < last; ++i) acc.push(z(i));
    } else {
      acc.push(z.segment(first, last - first));
    }
    return acc;
  }
  const Index split =
      first + 1 + static_cast<Index>(rng() % static_cast<std::uint32_t>(last - first - 1));
  smax::logsumexp_accumulator<T> left = tree(z, first, split, rng);
  smax::logsumexp_accumulator<T> right = tree(z, split, last, rng);
  if (rng() % 2 == 0) {
    left.merge(right);
    return left;
  }
  right.merge(left);
  return right;
}

TYPED_TEST(LogsumexpAccumulator, EveryFeedingOrderGivesTheOneShotValue) {
  using T = TypeParam;
  std::mt19937 rng(2026);
  std::uint32_t seed = 900;
  long double worst = 0, worst_reference = 0;
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      const Vec<T> z = random_logits<T>(n, kind, ++seed);
      const T one_shot = smax::logsumexp(z);
      const long double reference = reference_for<T>(hi(z)).logsumexp;
      SCOPED_TRACE(::testing::Message() << "n = " << n << ", " << name_of(kind));
      std::vector<std::pair<const char*, T>> values;
      // One by one, in order and reversed.
      smax::logsumexp_accumulator<T> forward, backward;
      for (Index i = 0; i < n; ++i) forward.push(z(i));
      for (Index i = n; i-- > 0;) backward.push(z(i));
      values.push_back({"one by one", forward.value()});
      values.push_back({"one by one, reversed", backward.value()});
      // One block, and blocks split at random points.
      smax::logsumexp_accumulator<T> whole;
      whole.push(z);
      values.push_back({"one block", whole.value()});
      for (int trial = 0; trial < 3; ++trial) {
        smax::logsumexp_accumulator<T> blocks;
        for (Index i = 0; i < n;) {
          const Index len = std::min<Index>(n - i, 1 + static_cast<Index>(rng() % 300));
          blocks.push(z.segment(i, len));
          i += len;
        }
        values.push_back({"random blocks", blocks.value()});
        values.push_back({"random merge tree", tree(z, 0, n, rng).value()});
      }
      for (const auto& [how, value] : values) {
        const long double err = against_one_shot(value, one_shot);
        const long double err_ref = log_domain_error<T>(value, reference);
        worst = std::max(worst, err);
        worst_reference = std::max(worst_reference, err_ref);
        EXPECT_LE(err, merge_tolerance_ulps)
            << how << ": " << show(value) << " vs one-shot " << show(one_shot);
        EXPECT_LE(err_ref, 4.0L) << how << ": " << show(value) << " vs reference "
                                 << show(reference);
      }
    }
  }
  std::printf(
      "[ ULP      ] %-6s accumulator: max %.3f ULP from one-shot logsumexp, max %.3f ULP "
      "from the reference (of max(|r|, 1))\n",
      std::is_same_v<T, float> ? "float" : "double", static_cast<double>(worst),
      static_cast<double>(worst_reference));
  ::testing::Test::RecordProperty("max_ulp_accumulator_vs_one_shot",
                                  std::to_string(static_cast<double>(worst)));
}

TYPED_TEST(LogsumexpAccumulator, BlocksOfEveryEigenKind) {
  using T = TypeParam;
  const Index rows = 7, cols = 33;
  Mat<T> m(rows, cols);
  for (Index c = 0; c < cols; ++c)
    m.col(c) = random_logits<T>(rows, logits::normal_30, 950 + std::uint32_t(c));
  const Vec<T> flat = Eigen::Map<const Vec<T>>(m.data(), m.size());
  const T expected = smax::logsumexp(flat);
  const auto check = [&](const auto& block, const char* what) {
    smax::logsumexp_accumulator<T> acc;
    acc.push(block);
    EXPECT_LE(against_one_shot(acc.value(), expected), merge_tolerance_ulps) << what;
  };
  check(m, "column-major matrix");
  check(MatR<T>(m), "row-major matrix");
  check(m.array(), "array");
  check(m.transpose(), "transpose");
  check(T(1) * m, "expression");
  const Eigen::Ref<const Mat<T>> ref = m;
  check(ref, "Ref");
  // A block with an outer stride, and a strided map, fed part by part.
  Mat<T> padded = Mat<T>::Constant(rows + 3, cols, T(1e4));  // the padding must not count
  padded.topRows(rows) = m;
  smax::logsumexp_accumulator<T> parts;
  parts.push(padded.topRows(rows).leftCols(10));
  parts.push(padded.topRows(rows).middleCols(10, 23).transpose());
  EXPECT_LE(against_one_shot(parts.value(), expected), merge_tolerance_ulps) << "blocks";
  Vec<T> interleaved = Vec<T>::Constant(2 * m.size(), T(1e4));
  for (Index i = 0; i < m.size(); ++i) interleaved(2 * i) = flat(i);
  smax::logsumexp_accumulator<T> strided;
  strided.push(Eigen::Map<const Vec<T>, 0, Eigen::InnerStride<2>>(interleaved.data(), m.size()));
  EXPECT_LE(against_one_shot(strided.value(), expected), merge_tolerance_ulps) << "InnerStride map";
  smax::logsumexp_accumulator<T> rows_one_by_one;
  for (Index r = 0; r < rows; ++r) rows_one_by_one.push(m.row(r));
  EXPECT_LE(against_one_shot(rows_one_by_one.value(), expected), merge_tolerance_ulps) << "rows";
}

TYPED_TEST(LogsumexpAccumulator, StateAccessors) {
  using T = TypeParam;
  smax::logsumexp_accumulator<T> acc;
  static_assert(std::is_same_v<typename smax::logsumexp_accumulator<T>::scalar_type, T>);
  EXPECT_EQ(acc.max(), -inf<T>);
  EXPECT_EQ(acc.scaled_sum(), 0);
  const Vec<T> z = vec<T>({1, 3, -2, 3, 0.5});
  for (Index i = 0; i < z.size(); ++i) {
    acc.push(z(i));
    EXPECT_EQ(acc.max(), z.head(i + 1).maxCoeff());
    // s = sum exp(x - m) lies in [1, count].
    EXPECT_GE(acc.scaled_sum(), 1);
    EXPECT_LE(acc.scaled_sum(), i + 1);
  }
  // value() = m + log(s).
  EXPECT_LE(
      log_domain_error<T>(acc.value(), static_cast<long double>(acc.max()) +
                                           std::log(static_cast<long double>(acc.scaled_sum()))),
      1.0L);
  // Copies are independent.
  smax::logsumexp_accumulator<T> copy = acc;
  copy.push(T(100));
  EXPECT_EQ(acc.max(), T(3));
  EXPECT_EQ(copy.max(), T(100));
}

TYPED_TEST(LogsumexpAccumulator, EdgeCases) {
  using T = TypeParam;
  using acc_t = smax::logsumexp_accumulator<T>;
  // Nothing, and only -inf: -inf.
  EXPECT_EQ(acc_t().value(), -inf<T>);
  acc_t minus;
  minus.push(-inf<T>);
  minus.push(Vec<T>::Constant(20, -inf<T>));
  minus.push(Vec<T>(0));
  EXPECT_EQ(minus.value(), -inf<T>);
  // -inf values change nothing.
  acc_t some, some_with_minus;
  some.push(vec<T>({1, 2}));
  some_with_minus.push(vec<T>({-inf<T>, 1}));
  some_with_minus.push(-inf<T>);
  some_with_minus.push(T(2));
  EXPECT_EQ(some.value(), some_with_minus.value());
  // +inf: +inf, whatever comes after (except NaN).
  acc_t plus;
  plus.push(T(1));
  plus.push(inf<T>);
  EXPECT_EQ(plus.value(), inf<T>);
  plus.push(T(5));
  plus.push(vec<T>({big<T>, -inf<T>}));
  plus.push(inf<T>);
  EXPECT_EQ(plus.value(), inf<T>);
  acc_t plus_block;
  plus_block.push(vec<T>({1, inf<T>, 2}));
  EXPECT_EQ(plus_block.value(), inf<T>);
  // NaN is sticky: after it, +inf, finite values and merges keep NaN; before it too.
  for (int order = 0; order < 3; ++order) {
    acc_t nan;
    if (order == 1) nan.push(inf<T>);
    if (order == 2) nan.push(T(3));
    nan.push(order == 0 ? qnan<T> : T(0));
    nan.push(vec<T>({1, qnan<T>, 2}));
    nan.push(inf<T>);
    nan.push(T(7));
    EXPECT_TRUE(std::isnan(nan.value())) << "order " << order;
    acc_t other;
    other.push(T(1));
    other.merge(nan);
    EXPECT_TRUE(std::isnan(other.value())) << "order " << order;
    nan.merge(plus);
    EXPECT_TRUE(std::isnan(nan.value())) << "order " << order;
  }
  // Merging empty states, both ways.
  acc_t empty, full;
  full.push(vec<T>({0.5, -1, 4}));
  const T before = full.value();
  full.merge(empty);
  EXPECT_EQ(full.value(), before);
  empty.merge(full);
  EXPECT_EQ(empty.value(), before);
  acc_t a, b;
  a.merge(b);
  EXPECT_EQ(a.value(), -inf<T>);
  // Merging +inf states: +inf (logsumexp of two +inf entries is +inf).
  acc_t p1, p2;
  p1.push(inf<T>);
  p2.push(inf<T>);
  p1.merge(p2);
  EXPECT_EQ(p1.value(), inf<T>);
  // Magnitudes near the largest finite value do not overflow.
  acc_t huge;
  huge.push(big<T>);
  huge.push(big<T>);
  EXPECT_EQ(huge.value(), big<T>);
  acc_t spread;
  spread.push(-big<T>);
  spread.push(big<T>);
  spread.push(-big<T>);
  EXPECT_EQ(spread.value(), big<T>);
  acc_t large;
  large.push(vec<T>({1000, 1001}));
  acc_t large2;
  large2.push(T(1002));
  large.merge(large2);
  EXPECT_LE(log_domain_error<T>(large.value(), ref_logsumexp(vec<T>({1000, 1001, 1002}))), 4.0L);
}

}  // namespace
