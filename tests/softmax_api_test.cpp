// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// The API surface of softmax.hpp: every Eigen type variant (return types included), the
// allocation-free _into forms (in place, Map/Block outputs, resizing, partial overlap,
// bit-for-bit agreement with the returning forms), and every argument error (message and
// untouched output).

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/softmax.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace {

using namespace smax_test;

template <typename T>
class SoftmaxTypes : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxTypes, FloatingTypes, TypeNames);

template <typename T>
class SoftmaxInto : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxInto, FloatingTypes, TypeNames);

template <typename T>
class SoftmaxErrors : public ::testing::Test {};
TYPED_TEST_SUITE(SoftmaxErrors, FloatingTypes, TypeNames);

template <typename T>
Mat<T> random_matrix(Index rows, Index cols, std::uint32_t seed) {
  Mat<T> m(rows, cols);
  for (Index c = 0; c < cols; ++c)
    m.col(c) = random_logits<T>(rows, logits::normal_1, seed + std::uint32_t(c));
  return m;
}

// ---------------------------------------------------------------------------------------
// Type variants

TYPED_TEST(SoftmaxTypes, FixedSizesStayFixed) {
  using T = TypeParam;
  using V3 = Eigen::Matrix<T, 3, 1>;
  using A5 = Eigen::Array<T, 5, 1>;
  using M34 = Eigen::Matrix<T, 3, 4>;
  using A34 = Eigen::Array<T, 3, 4>;
  const V3 v = vec<T>({2, 1, 0.1});
  const A5 a = vec<T>({1, -2, 3, 0.5, 0}).array();
  const M34 m = random_matrix<T>(3, 4, 1);
  const A34 am = m.array();
  static_assert(std::is_same_v<decltype(smax::softmax(v)), V3>);
  static_assert(std::is_same_v<decltype(smax::log_softmax(v, T(2))), V3>);
  static_assert(std::is_same_v<decltype(smax::softmax(a)), A5>);
  static_assert(std::is_same_v<decltype(smax::log_softmax(a)), A5>);
  static_assert(std::is_same_v<decltype(smax::softmax(m, smax::rowwise)), M34>);
  static_assert(std::is_same_v<decltype(smax::log_softmax(m, smax::colwise)), M34>);
  static_assert(std::is_same_v<decltype(smax::softmax(am, smax::colwise)), A34>);
  static_assert(std::is_same_v<decltype(smax::softmax_backward(v, v)), V3>);
  static_assert(std::is_same_v<decltype(smax::log_softmax_backward(m, m, smax::rowwise)), M34>);
  // logsumexp: a scalar for vectors; one value per row (a column) or per column (a row),
  // fixed sizes kept, Array kept.
  static_assert(std::is_same_v<decltype(smax::logsumexp(v)), T>);
  static_assert(
      std::is_same_v<decltype(smax::logsumexp(m, smax::rowwise)), Eigen::Matrix<T, 3, 1>>);
  static_assert(std::is_same_v<decltype(smax::logsumexp(m, smax::colwise)),
                               Eigen::Matrix<T, 1, 4, Eigen::RowMajor>>);
  static_assert(
      std::is_same_v<decltype(smax::logsumexp(am, smax::rowwise)), Eigen::Array<T, 3, 1>>);
  static_assert(std::is_same_v<decltype(smax::logsumexp(am, smax::colwise)),
                               Eigen::Array<T, 1, 4, Eigen::RowMajor>>);
  // Same values as the dynamic forms.
  EXPECT_TRUE(bit_equal(smax::softmax(Vec<T>(v)), smax::softmax(v)));
  EXPECT_TRUE(bit_equal(smax::log_softmax(Arr<T>(a)), smax::log_softmax(a)));
  EXPECT_TRUE(bit_equal(smax::softmax(Mat<T>(m), smax::rowwise), smax::softmax(m, smax::rowwise)));
  EXPECT_TRUE(bit_equal(smax::softmax(Mat<T>(m), smax::colwise), smax::softmax(m, smax::colwise)));
  EXPECT_TRUE(
      bit_equal(smax::logsumexp(Mat<T>(m), smax::rowwise), smax::logsumexp(m, smax::rowwise)));
  EXPECT_EQ(smax::logsumexp(Vec<T>(v)), smax::logsumexp(v));
  EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(v)), smax::softmax(v)));
}

TYPED_TEST(SoftmaxTypes, DynamicTypesKeepArrayMatrixAndStorageOrder) {
  using T = TypeParam;
  using AXX = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic>;
  using AXXR = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Mat<T> m = random_matrix<T>(4, 9, 2);
  const MatR<T> mr = m;
  const AXX a = m.array();
  const AXXR ar = m.array();
  static_assert(std::is_same_v<decltype(smax::softmax(m, smax::rowwise)), Mat<T>>);
  static_assert(std::is_same_v<decltype(smax::softmax(mr, smax::rowwise)), MatR<T>>);
  static_assert(std::is_same_v<decltype(smax::log_softmax(ar, smax::colwise)), AXXR>);
  static_assert(std::is_same_v<decltype(smax::softmax(a, smax::colwise)), AXX>);
  static_assert(std::is_same_v<decltype(smax::softmax(mr.row(1))), RowVec<T>>);
  static_assert(std::is_same_v<decltype(smax::softmax(Arr<T>(3))), Arr<T>>);
  static_assert(std::is_same_v<decltype(smax::logsumexp(mr, smax::rowwise)), Vec<T>>);
  static_assert(std::is_same_v<decltype(smax::logsumexp(mr, smax::colwise)), RowVec<T>>);
  static_assert(std::is_same_v<decltype(smax::logsumexp(a, smax::rowwise)), Arr<T>>);
  static_assert(std::is_same_v<decltype(smax::logsumexp(a, smax::colwise)),
                               Eigen::Array<T, 1, Eigen::Dynamic>>);
  // Array and Matrix, either storage order, give the same values.
  for (auto axis_is_row : {true, false}) {
    const Mat<T> expected =
        axis_is_row ? smax::softmax(m, smax::rowwise) : smax::softmax(m, smax::colwise);
    const Mat<T> from_array = axis_is_row ? Mat<T>(smax::softmax(a, smax::rowwise).matrix())
                                          : Mat<T>(smax::softmax(a, smax::colwise).matrix());
    const Mat<T> from_row_major = axis_is_row ? Mat<T>(smax::softmax(mr, smax::rowwise))
                                              : Mat<T>(smax::softmax(mr, smax::colwise));
    EXPECT_TRUE(bit_equal(expected, from_array)) << "rowwise: " << axis_is_row;
    EXPECT_TRUE(within_ulps(expected, from_row_major, 4)) << "rowwise: " << axis_is_row;
  }
}

TYPED_TEST(SoftmaxTypes, RowAndColumnVectors) {
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(19, logits::normal_30, 3);
  const RowVec<T> zr = z.transpose();
  EXPECT_TRUE(bit_equal(smax::softmax(z).transpose(), smax::softmax(zr)));
  EXPECT_TRUE(bit_equal(smax::log_softmax(z, T(3)).transpose(), smax::log_softmax(zr, T(3))));
  EXPECT_EQ(smax::logsumexp(z), smax::logsumexp(zr));
  EXPECT_TRUE(bit_equal(smax::softmax(z).transpose(), smax::softmax(z.transpose())));
  const reference ref = reference_for<T>(hi(z));
  EXPECT_TRUE(softmax_within_bound(ref, smax::softmax(zr)));
  EXPECT_TRUE(within_log_ulps_of_reference(ref.log_softmax, smax::log_softmax(zr)));
}

TYPED_TEST(SoftmaxTypes, RowMajorMatricesBothAxes) {
  using T = TypeParam;
  // 100 columns is beyond the short-row tile, 9 within it.
  for (Index cols : {9, 100}) {
    const MatR<T> m = random_matrix<T>(5, cols, 4);
    const MatR<T> by_row = smax::softmax(m, smax::rowwise, T(0.7));
    const MatR<T> by_col = smax::log_softmax(m, smax::colwise, T(0.7));
    for (Index r = 0; r < m.rows(); ++r) {
      const reference ref = reference_for<T>(hi(m.row(r)), T(0.7));
      EXPECT_TRUE(softmax_within_bound(ref, by_row.row(r))) << "row " << r;
    }
    for (Index c = 0; c < m.cols(); ++c) {
      const reference ref = reference_for<T>(hi(m.col(c)), T(0.7));
      EXPECT_TRUE(within_log_ulps_of_reference(ref.log_softmax, by_col.col(c))) << "col " << c;
    }
  }
}

TYPED_TEST(SoftmaxTypes, RowwiseIsColwiseOfTranspose) {
  using T = TypeParam;
  for (Index rows : {1, 3, 40}) {
    const Mat<T> a = random_matrix<T>(rows, 23, 5);
    // The transpose view reads the same memory the same way: identical results.
    EXPECT_TRUE(bit_equal(smax::softmax(a, smax::rowwise),
                          smax::softmax(a.transpose(), smax::colwise).transpose()));
    EXPECT_TRUE(bit_equal(smax::log_softmax(a, smax::colwise),
                          smax::log_softmax(a.transpose(), smax::rowwise).transpose()));
    EXPECT_TRUE(bit_equal(smax::logsumexp(a, smax::rowwise),
                          smax::logsumexp(a.transpose(), smax::colwise).transpose()));
    // An evaluated transpose is another layout: equal up to rounding.
    const Mat<T> at = a.transpose();
    EXPECT_TRUE(within_ulps(smax::softmax(a, smax::rowwise),
                            Mat<T>(smax::softmax(at, smax::colwise).transpose()), 4));
    EXPECT_TRUE(all_close(smax::log_softmax(a, smax::rowwise),
                          Mat<T>(smax::log_softmax(at, smax::colwise).transpose()), 8 * eps<T>,
                          8 * eps<T>));
  }
}

TYPED_TEST(SoftmaxTypes, MapsWithStrides) {
  using T = TypeParam;
  const Index n = 21;
  Vec<T> buffer = random_logits<T>(4 * n * 3, logits::normal_1, 6);
  // A strided vector.
  const Eigen::Map<const Vec<T>, 0, Eigen::InnerStride<3>> strided(buffer.data() + 1, n);
  const Vec<T> plain = strided;
  static_assert(std::is_same_v<decltype(smax::softmax(strided)), Vec<T>>);
  EXPECT_TRUE(within_ulps(smax::softmax(plain), smax::softmax(strided), 4));
  EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(plain)), smax::softmax(strided)));
  EXPECT_EQ(smax::logsumexp(plain), smax::logsumexp(strided));
  // A dynamic inner stride.
  const Eigen::Map<const Vec<T>, 0, Eigen::InnerStride<>> dyn(buffer.data(), n,
                                                              Eigen::InnerStride<>(5));
  EXPECT_TRUE(within_ulps(smax::log_softmax(Vec<T>(dyn)), smax::log_softmax(dyn), 4));
  // A matrix with padding between columns (outer stride), and one with both strides.
  const Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>> padded(buffer.data(), 7, 9,
                                                                 Eigen::OuterStride<>(10));
  const Mat<T> padded_plain = padded;
  for (bool by_row : {true, false}) {
    const Mat<T> expected = by_row ? smax::softmax(padded_plain, smax::rowwise)
                                   : smax::softmax(padded_plain, smax::colwise);
    const Mat<T> actual =
        by_row ? smax::softmax(padded, smax::rowwise) : smax::softmax(padded, smax::colwise);
    EXPECT_TRUE(within_ulps(expected, actual, 4)) << "rowwise: " << by_row;
  }
  using Both = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Map<const Mat<T>, 0, Both> both(buffer.data(), 6, 8, Both(20, 2));
  const Mat<T> both_plain = both;
  EXPECT_TRUE(
      within_ulps(smax::softmax(both_plain, smax::rowwise), smax::softmax(both, smax::rowwise), 4));
  EXPECT_TRUE(within_ulps(smax::log_softmax(both_plain, smax::colwise),
                          smax::log_softmax(both, smax::colwise), 4));
  EXPECT_TRUE(all_close(smax::logsumexp(both_plain, smax::rowwise),
                        smax::logsumexp(both, smax::rowwise), 4 * eps<T>));
}

TYPED_TEST(SoftmaxTypes, RefsBlocksSegmentsRowsAndColumns) {
  using T = TypeParam;
  const Mat<T> m = random_matrix<T>(12, 30, 7);
  const Eigen::Ref<const Mat<T>> ref_m = m;
  const Eigen::Ref<const Vec<T>> ref_col = m.col(3);
  EXPECT_TRUE(bit_equal(smax::softmax(m, smax::rowwise), smax::softmax(ref_m, smax::rowwise)));
  EXPECT_TRUE(bit_equal(smax::softmax(Vec<T>(m.col(3))), smax::softmax(ref_col)));
  // Blocks of every kind against evaluated copies.
  const Vec<T> col = m.col(4);
  const RowVec<T> row = m.row(5);
  const Vec<T> segment = col.segment(2, 7);
  EXPECT_TRUE(bit_equal(smax::softmax(col), smax::softmax(m.col(4))));
  EXPECT_TRUE(within_ulps(smax::softmax(row), smax::softmax(m.row(5)), 4));
  EXPECT_TRUE(bit_equal(smax::log_softmax(segment), smax::log_softmax(m.col(4).segment(2, 7))));
  EXPECT_EQ(smax::logsumexp(row), smax::logsumexp(m.row(5)));
  const Mat<T> block = m.block(2, 3, 6, 20);
  EXPECT_TRUE(within_ulps(smax::softmax(block, smax::rowwise),
                          smax::softmax(m.block(2, 3, 6, 20), smax::rowwise), 4));
  EXPECT_TRUE(within_ulps(smax::softmax(block, smax::colwise),
                          smax::softmax(m.block(2, 3, 6, 20), smax::colwise), 4));
  const Eigen::Matrix<T, 3, 5> fixed_block = m.template block<3, 5>(1, 1);
  static_assert(std::is_same_v<decltype(smax::softmax(m.template block<3, 5>(1, 1), smax::rowwise)),
                               Eigen::Matrix<T, 3, 5>>);
  EXPECT_TRUE(within_ulps(smax::softmax(fixed_block, smax::rowwise),
                          smax::softmax(m.template block<3, 5>(1, 1), smax::rowwise), 4));
}

TYPED_TEST(SoftmaxTypes, ExpressionsAreEvaluatedOnce) {
  using T = TypeParam;
  const Mat<T> a = random_matrix<T>(9, 5, 8);
  const Vec<T> x = random_logits<T>(5, logits::normal_1, 9);
  const Vec<T> b = random_logits<T>(9, logits::normal_1, 10);
  const Vec<T> z = random_logits<T>(9, logits::normal_30, 11);
  const Vec<T> axb = a * x + b;
  static_assert(std::is_same_v<decltype(smax::softmax(a * x + b)), Vec<T>>);
  EXPECT_TRUE(bit_equal(smax::softmax(axb), smax::softmax(a * x + b)));
  EXPECT_TRUE(bit_equal(smax::log_softmax(axb, T(2)), smax::log_softmax(a * x + b, T(2))));
  EXPECT_EQ(smax::logsumexp(axb), smax::logsumexp(a * x + b));
  const Vec<T> twice = T(2) * z;
  EXPECT_TRUE(bit_equal(smax::softmax(twice), smax::softmax(T(2) * z)));
  EXPECT_TRUE(bit_equal(smax::log_softmax(twice), smax::log_softmax(T(2) * z)));
  EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(twice)), smax::softmax(T(2) * z)));
  const Mat<T> shifted = a.array() + T(1);
  EXPECT_TRUE(bit_equal(smax::softmax(shifted, smax::colwise),
                        smax::softmax(a.array() + T(1), smax::colwise).matrix()));
  // Transposed expressions and the backward passes.
  EXPECT_TRUE(bit_equal(smax::softmax(Mat<T>((T(2) * a).transpose()), smax::rowwise),
                        smax::softmax((T(2) * a).transpose(), smax::rowwise)));
  const Vec<T> y = smax::softmax(z);
  EXPECT_TRUE(bit_equal(smax::softmax_backward(y, twice), smax::softmax_backward(y, T(2) * z)));
  EXPECT_TRUE(bit_equal(smax::log_softmax_backward(Vec<T>(smax::log_softmax(z)), twice),
                        smax::log_softmax_backward(smax::log_softmax(z), T(2) * z)));
}

// ---------------------------------------------------------------------------------------
// The _into forms

TYPED_TEST(SoftmaxInto, AgreeWithReturningFormsBitForBit) {
  using T = TypeParam;
  for (Index n : {1, 7, 17, 100, 1000}) {
    const Vec<T> z = random_logits<T>(n, logits::normal_30, 20 + std::uint32_t(n));
    const Vec<T> dy = random_logits<T>(n, logits::normal_1, 21 + std::uint32_t(n));
    for (T t : {T(0), T(0.5), T(1), T(3), inf<T>}) {
      SCOPED_TRACE(::testing::Message() << "n = " << n << ", T = " << t);
      Vec<T> out(n);
      smax::softmax_into(out, z, t);
      EXPECT_TRUE(bit_equal(smax::softmax(z, t), out));
      smax::log_softmax_into(out, z, t);
      EXPECT_TRUE(bit_equal(smax::log_softmax(z, t), out));
      if (t > 0) {
        const Vec<T> y = smax::softmax(z, t), logy = smax::log_softmax(z, t);
        smax::softmax_backward_into(out, y, dy, t);
        EXPECT_TRUE(bit_equal(smax::softmax_backward(y, dy, t), out));
        smax::log_softmax_backward_into(out, logy, dy, t);
        EXPECT_TRUE(bit_equal(smax::log_softmax_backward(logy, dy, t), out));
      }
    }
  }
  const Mat<T> m = random_matrix<T>(37, 13, 22);
  const Mat<T> d = random_matrix<T>(37, 13, 23);
  const auto both = [&](const auto& mm, const auto& dd, auto axis) {
    using M = std::decay_t<decltype(mm)>;
    M out(mm.rows(), mm.cols());
    smax::softmax_into(out, mm, axis, T(1.5));
    EXPECT_TRUE(bit_equal(smax::softmax(mm, axis, T(1.5)), out));
    smax::log_softmax_into(out, mm, axis);
    EXPECT_TRUE(bit_equal(smax::log_softmax(mm, axis), out));
    const M y = smax::softmax(mm, axis), logy = smax::log_softmax(mm, axis);
    smax::softmax_backward_into(out, y, dd, axis, T(2));
    EXPECT_TRUE(bit_equal(smax::softmax_backward(y, dd, axis, T(2)), out));
    smax::log_softmax_backward_into(out, logy, dd, axis);
    EXPECT_TRUE(bit_equal(smax::log_softmax_backward(logy, dd, axis), out));
    std::decay_t<decltype(smax::logsumexp(mm, axis))> lse;
    smax::logsumexp_into(lse, mm, axis);
    EXPECT_TRUE(bit_equal(smax::logsumexp(mm, axis), lse));
  };
  both(m, d, smax::rowwise);
  both(m, d, smax::colwise);
  both(MatR<T>(m), MatR<T>(d), smax::rowwise);
  both(MatR<T>(m), MatR<T>(d), smax::colwise);
}

TYPED_TEST(SoftmaxInto, UnalignedOutputsAgreeBitForBit) {
  // The result must not depend on where the output lives: segments at every offset of a
  // buffer (so every alignment relative to the SIMD width) get exactly the values of the
  // returning form, for many random inputs.
  using T = TypeParam;
  const Index n = 37;
  Index differing[4] = {0, 0, 0, 0};
  for (std::uint32_t seed = 1; seed <= 40; ++seed) {
    const Vec<T> z = random_logits<T>(n, logits::normal_1, 80 + seed);
    const Vec<T> dy = random_logits<T>(n, logits::normal_1, 180 + seed);
    const Vec<T> y = smax::softmax(z), logy = smax::log_softmax(z);
    const Vec<T> expected[4] = {y, logy, smax::softmax_backward(y, dy),
                                smax::log_softmax_backward(logy, dy)};
    Vec<T> buffer = Vec<T>::Zero(n + 16);
    for (Index offset = 0; offset < 16; ++offset) {
      auto out = buffer.segment(offset, n);
      smax::softmax_into(out, z);
      differing[0] += (out.array() != expected[0].array()).count();
      smax::log_softmax_into(out, z);
      differing[1] += (out.array() != expected[1].array()).count();
      smax::softmax_backward_into(out, y, dy);
      differing[2] += (out.array() != expected[2].array()).count();
      smax::log_softmax_backward_into(out, logy, dy);
      differing[3] += (out.array() != expected[3].array()).count();
    }
  }
  EXPECT_EQ(differing[0], 0) << "softmax_into";
  EXPECT_EQ(differing[1], 0) << "log_softmax_into";
  EXPECT_EQ(differing[2], 0) << "softmax_backward_into";
  EXPECT_EQ(differing[3], 0) << "log_softmax_backward_into";
}

TYPED_TEST(SoftmaxInto, InPlace) {
  using T = TypeParam;
  for (Index n : {1, 5, 17, 300}) {
    const Vec<T> z = random_logits<T>(n, logits::uniform_100, 30 + std::uint32_t(n));
    const Vec<T> dy = random_logits<T>(n, logits::normal_1, 31 + std::uint32_t(n));
    Vec<T> v = z;
    smax::softmax_into(v, v, T(2));
    EXPECT_TRUE(bit_equal(smax::softmax(z, T(2)), v));
    v = z;
    smax::log_softmax_into(v, v);
    EXPECT_TRUE(bit_equal(smax::log_softmax(z), v));
    // Backward: out is y, or out is dy.
    const Vec<T> y = smax::softmax(z), logy = smax::log_softmax(z);
    const Vec<T> g = smax::softmax_backward(y, dy), gl = smax::log_softmax_backward(logy, dy);
    v = y;
    smax::softmax_backward_into(v, v, dy);
    EXPECT_TRUE(bit_equal(g, v));
    v = dy;
    smax::softmax_backward_into(v, y, v);
    EXPECT_TRUE(bit_equal(g, v));
    v = logy;
    smax::log_softmax_backward_into(v, v, dy);
    EXPECT_TRUE(bit_equal(gl, v));
    v = dy;
    smax::log_softmax_backward_into(v, logy, v);
    EXPECT_TRUE(bit_equal(gl, v));
  }
  // 2-D, both axes, both storage orders; a block of a larger matrix in place.
  const Mat<T> m = random_matrix<T>(40, 9, 32);
  for (bool by_row : {true, false}) {
    Mat<T> a = m;
    MatR<T> ar = m;
    if (by_row) {
      smax::softmax_into(a, a, smax::rowwise);
      smax::log_softmax_into(ar, ar, smax::rowwise);
      EXPECT_TRUE(bit_equal(smax::softmax(m, smax::rowwise), a));
      EXPECT_TRUE(bit_equal(smax::log_softmax(MatR<T>(m), smax::rowwise), ar));
    } else {
      smax::softmax_into(a, a, smax::colwise);
      smax::log_softmax_into(ar, ar, smax::colwise);
      EXPECT_TRUE(bit_equal(smax::softmax(m, smax::colwise), a));
      EXPECT_TRUE(bit_equal(smax::log_softmax(MatR<T>(m), smax::colwise), ar));
    }
  }
  Mat<T> big_m = m;
  smax::softmax_into(big_m.block(3, 2, 30, 5), big_m.block(3, 2, 30, 5), smax::rowwise);
  EXPECT_TRUE(
      bit_equal(smax::softmax(m.block(3, 2, 30, 5), smax::rowwise), big_m.block(3, 2, 30, 5)));
  EXPECT_TRUE(bit_equal(m.leftCols(2), big_m.leftCols(2)));  // untouched around the block
}

TYPED_TEST(SoftmaxInto, MapAndBlockOutputs) {
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(8, logits::normal_1, 40);
  Mat<T> m = Mat<T>::Constant(8, 8, T(-7));
  smax::softmax_into(m.col(2), z);
  EXPECT_TRUE(bit_equal(smax::softmax(z), Vec<T>(m.col(2))));
  smax::log_softmax_into(m.row(5), z.transpose());  // a strided output
  EXPECT_TRUE(bit_equal(smax::log_softmax(z).transpose(), RowVec<T>(m.row(5))));
  EXPECT_EQ(m(0, 0), T(-7));
  std::vector<T> storage(24, T(-7));
  Eigen::Map<Vec<T>, 0, Eigen::InnerStride<3>> out(storage.data(), 8);
  smax::softmax_into(out, z, T(0.5));
  EXPECT_TRUE(bit_equal(smax::softmax(z, T(0.5)), Vec<T>(out)));
  EXPECT_EQ(storage[1], T(-7));
  EXPECT_EQ(storage[2], T(-7));
  // logsumexp_into: a row or a column of a matrix, either orientation.
  const Mat<T> batch = random_matrix<T>(8, 5, 41);
  smax::logsumexp_into(m.col(0), batch, smax::rowwise);
  EXPECT_TRUE(bit_equal(smax::logsumexp(batch, smax::rowwise), Vec<T>(m.col(0))));
  smax::logsumexp_into(m.row(7).head(5), batch, smax::colwise);
  EXPECT_TRUE(bit_equal(smax::logsumexp(batch, smax::colwise), RowVec<T>(m.row(7).head(5))));
  Vec<T> column_out(5);
  smax::logsumexp_into(column_out, batch, smax::colwise);
  EXPECT_TRUE(bit_equal(smax::logsumexp(batch, smax::colwise).transpose(), column_out));
  // Backward into a block.
  const Vec<T> y = smax::softmax(z);
  smax::softmax_backward_into(m.col(6), y, z);
  EXPECT_TRUE(bit_equal(smax::softmax_backward(y, z), Vec<T>(m.col(6))));
}

TYPED_TEST(SoftmaxInto, ResizableOutputsAreResized) {
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(11, logits::normal_1, 50);
  Vec<T> out;
  smax::softmax_into(out, z);
  EXPECT_TRUE(bit_equal(smax::softmax(z), out));
  Mat<T> wrong(3, 7);
  smax::log_softmax_into(wrong, z);
  EXPECT_EQ(wrong.rows(), 11);
  EXPECT_EQ(wrong.cols(), 1);
  EXPECT_TRUE(bit_equal(Mat<T>(smax::log_softmax(z)), wrong));
  const Mat<T> m = random_matrix<T>(6, 4, 51);
  Mat<T> g(1, 1);
  smax::softmax_into(g, m, smax::colwise);
  EXPECT_TRUE(bit_equal(smax::softmax(m, smax::colwise), g));
  smax::softmax_backward_into(g, Mat<T>(smax::softmax(m, smax::rowwise)), m, smax::rowwise);
  EXPECT_EQ(g.rows(), 6);
  Vec<T> lse;
  smax::logsumexp_into(lse, m, smax::colwise);  // a column output for a per-column result
  EXPECT_TRUE(bit_equal(smax::logsumexp(m, smax::colwise).transpose(), lse));
  RowVec<T> lse_row(1);
  smax::logsumexp_into(lse_row, m, smax::rowwise);
  EXPECT_TRUE(bit_equal(smax::logsumexp(m, smax::rowwise).transpose(), lse_row));
  // A fixed-capacity output resizes within its capacity.
  Eigen::Matrix<T, Eigen::Dynamic, 1, 0, 16, 1> capped;
  smax::softmax_into(capped, z);
  EXPECT_TRUE(bit_equal(smax::softmax(z), Vec<T>(capped)));
}

/// One distribution of N entries in every contiguous form (fixed and dynamic, column and
/// row vector, a row of a row-major matrix, returning and _into), which a distribution
/// shorter than a packet takes straight to its kernel, against the same values as an
/// expression, which goes through the batch dispatch: the same bits, within the bound.
template <typename T, int N>
void check_single_short(T t, std::uint32_t seed) {
  using Fixed = Eigen::Matrix<T, N, 1>;
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  SCOPED_TRACE(::testing::Message() << "N = " << N << ", T = " << t);
  const Vec<T> z = random_logits<T>(N, logits::normal_30, seed);
  const Fixed zf = z;
  RowMat zr = RowMat::Zero(3, N + 2), outr = RowMat::Constant(3, N + 2, T(7));
  zr.row(1).head(N) = z.transpose();
  const Vec<T> y = smax::softmax(z * T(1), t);  // an expression: the batch dispatch
  const Vec<T> ly = smax::log_softmax(z * T(1), t);
  if (t != T(0)) {
    EXPECT_TRUE(softmax_within_bound(reference_for<T>(hi(z), t), y));
  }
  EXPECT_TRUE(bit_equal(y, Vec<T>(smax::softmax(zf, t))));
  EXPECT_TRUE(bit_equal(ly, Vec<T>(smax::log_softmax(zf, t))));
  Fixed of;
  smax::softmax_into(of, z, t);
  EXPECT_TRUE(bit_equal(y, Vec<T>(of)));
  smax::log_softmax_into(of, zf, t);
  EXPECT_TRUE(bit_equal(ly, Vec<T>(of)));
  smax::softmax_into(outr.row(1).head(N), zr.row(1).head(N), t);
  EXPECT_TRUE(bit_equal(y, Vec<T>(outr.row(1).head(N).transpose())));
  EXPECT_EQ(outr(1, N), T(7));  // nothing written past the row
  smax::log_softmax_into(outr.row(2).head(N), zr.row(1).head(N), smax::rowwise, t);
  EXPECT_TRUE(bit_equal(ly, Vec<T>(outr.row(2).head(N).transpose())));
  Fixed in_place = zf;
  smax::softmax_into(in_place, in_place, t);
  EXPECT_TRUE(bit_equal(y, Vec<T>(in_place)));
  // Strided, the general kernels: the same bits here as well.
  Vec<T> spaced = Vec<T>::Zero(2 * N);
  for (Index i = 0; i < N; ++i) spaced(2 * i) = z(i);
  const Eigen::Map<const Vec<T>, 0, Eigen::InnerStride<2>> strided(spaced.data(), N);
  EXPECT_TRUE(bit_equal(y, Vec<T>(smax::softmax(strided, t))));
  EXPECT_TRUE(bit_equal(ly, Vec<T>(smax::log_softmax(strided, t))));
  EXPECT_EQ(smax::logsumexp(zf), smax::logsumexp(strided));
  if (t == T(0)) return;  // no gradient
  const Vec<T> dy = random_logits<T>(N, logits::normal_30, seed + 1) / T(30);
  const Fixed yf = y, lyf = ly, dyf = dy;
  const Vec<T> dz = smax::softmax_backward(y, dy * T(1), t);
  const Vec<T> ldz = smax::log_softmax_backward(ly, dy * T(1), t);
  EXPECT_TRUE(bit_equal(dz, Vec<T>(smax::softmax_backward(yf, dyf, t))));
  EXPECT_TRUE(bit_equal(ldz, Vec<T>(smax::log_softmax_backward(lyf, dyf, t))));
  smax::softmax_backward_into(of, y, dyf, t);
  EXPECT_TRUE(bit_equal(dz, Vec<T>(of)));
  zr.row(0).head(N) = y.transpose();
  zr.row(2).head(N) = dy.transpose();
  smax::softmax_backward_into(outr.row(0).head(N), zr.row(0).head(N), zr.row(2).head(N), t);
  EXPECT_TRUE(bit_equal(dz, Vec<T>(outr.row(0).head(N).transpose())));
  Fixed grad = dyf;  // the output over dy
  smax::log_softmax_backward_into(grad, lyf, grad, t);
  EXPECT_TRUE(bit_equal(ldz, Vec<T>(grad)));
}

template <typename T, int... N>
void check_single_shorts(std::integer_sequence<int, N...>) {
  std::uint32_t seed = 70;
  for (T t : {T(1), T(0.5), T(3), T(0)}) (check_single_short<T, N + 1>(t, seed += 2), ...);
}

TYPED_TEST(SoftmaxInto, SingleShortDistributionsAgreeAcrossForms) {
  check_single_shorts<TypeParam>(std::make_integer_sequence<int, 17>());
}

TYPED_TEST(SoftmaxInto, PartialOverlapGivesTheRightAnswer) {
  using T = TypeParam;
  const Vec<T> original = random_logits<T>(40, logits::normal_30, 60);
  // Shifted by one element, both directions, several lengths.
  for (Index n : {5, 17, 33}) {
    for (int shift : {1, -1, 3}) {
      SCOPED_TRACE(::testing::Message() << "n = " << n << ", shift = " << shift);
      const Index in_at = shift > 0 ? 0 : 1, out_at = in_at + shift;
      Vec<T> v = original;
      smax::softmax_into(v.segment(out_at, n), v.segment(in_at, n));
      EXPECT_TRUE(
          bit_equal(smax::softmax(original.segment(in_at, n)), Vec<T>(v.segment(out_at, n))));
      v = original;
      smax::log_softmax_into(v.segment(out_at, n), v.segment(in_at, n), T(2));
      EXPECT_TRUE(bit_equal(smax::log_softmax(original.segment(in_at, n), T(2)),
                            Vec<T>(v.segment(out_at, n))));
      // Backward, the output overlapping y or dy.
      const Vec<T> y = smax::softmax(original.segment(in_at, n));
      const Vec<T> dy = original.tail(n) / T(30);
      v = original;
      v.segment(in_at, n) = y;
      smax::softmax_backward_into(v.segment(out_at, n), v.segment(in_at, n), dy);
      EXPECT_TRUE(bit_equal(smax::softmax_backward(y, dy), Vec<T>(v.segment(out_at, n))));
      v = original;
      v.segment(in_at, n) = dy;
      smax::log_softmax_backward_into(v.segment(out_at, n), Vec<T>(smax::log_softmax(y)),
                                      v.segment(in_at, n));
      EXPECT_TRUE(bit_equal(smax::log_softmax_backward(Vec<T>(smax::log_softmax(y)), dy),
                            Vec<T>(v.segment(out_at, n))));
    }
  }
  // 2-D: a block shifted by one column; logsumexp into a column of its own input.
  const Mat<T> m = random_matrix<T>(9, 12, 61);
  Mat<T> a = m;
  smax::softmax_into(a.block(0, 1, 9, 10), a.block(0, 0, 9, 10), smax::rowwise);
  EXPECT_TRUE(
      bit_equal(smax::softmax(m.block(0, 0, 9, 10), smax::rowwise), Mat<T>(a.block(0, 1, 9, 10))));
  a = m;
  smax::logsumexp_into(a.col(3), a, smax::rowwise);
  EXPECT_TRUE(bit_equal(smax::logsumexp(m, smax::rowwise), Vec<T>(a.col(3))));
  // Same first element and shape, different layout: the transpose view of a square matrix.
  const Mat<T> sq = random_matrix<T>(6, 6, 62);
  Mat<T> s = sq;
  smax::softmax_into(s.transpose(), s, smax::rowwise);
  EXPECT_TRUE(bit_equal(Mat<T>(smax::softmax(sq, smax::rowwise).transpose()), s));
  // Interleaved: disjoint elements inside the same address range.
  Vec<T> w = original;
  Eigen::Map<Vec<T>, 0, Eigen::InnerStride<2>> evens(w.data(), 20), odds(w.data() + 1, 20);
  smax::softmax_into(odds, evens);
  Vec<T> expected_evens(20);
  for (Index i = 0; i < 20; ++i) expected_evens(i) = original(2 * i);
  EXPECT_TRUE(bit_equal(smax::softmax(expected_evens), Vec<T>(odds)));
  EXPECT_TRUE(bit_equal(expected_evens, Vec<T>(evens)));
}

// ---------------------------------------------------------------------------------------
// Errors: smax::error (a std::invalid_argument) with "<function>: argument '<name>' is
// <value>; expected <what>", thrown before anything is written.

/// Runs f, which must throw smax::error, and checks the message's parts.
template <typename F>
::testing::AssertionResult throws_error(F&& f, const std::string& function,
                                        const std::string& argument, const std::string& value,
                                        const std::string& expected_part) {
  try {
    f();
  } catch (const smax::error& e) {
    const std::string message = e.what();
    const std::string head = function + ": argument '" + argument + "' is " + value + "; expected ";
    if (message.rfind(head, 0) != 0) {
      return ::testing::AssertionFailure()
             << "message \"" << message << "\" does not start with \"" << head << "\"";
    }
    if (message.find(expected_part, head.size()) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "message \"" << message << "\" does not state \"" << expected_part << "\"";
    }
    const std::invalid_argument& base = e;  // catchable as the standard type too
    if (std::string(base.what()) != message)
      return ::testing::AssertionFailure() << "what() differs";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

/// The text smax prints for a value (NaN prints as the platform prints it).
template <typename T>
std::string text_of(T value) {
  std::ostringstream os;
  os.precision(std::numeric_limits<T>::max_digits10);
  os << value;
  return os.str();
}

TYPED_TEST(SoftmaxErrors, BadForwardTemperature) {
  using T = TypeParam;
  const Vec<T> z = vec<T>({1, 2, 3});
  const Mat<T> m = random_matrix<T>(3, 4, 70);
  const Vec<T> sentinel = Vec<T>::Constant(3, T(42));
  const Mat<T> sentinel_m = Mat<T>::Constant(3, 4, T(42));
  for (T bad : {T(-1), qnan<T>, -inf<T>, -denorm_min<T>}) {
    SCOPED_TRACE(::testing::Message() << "T = " << bad);
    const std::string value = text_of(bad);
    const std::string what = "a number >= 0";
    Vec<T> out = sentinel;
    Mat<T> out_m = sentinel_m;
    EXPECT_TRUE(throws_error([&] { (void)smax::softmax(z, bad); }, "smax::softmax", "temperature",
                             value, what));
    EXPECT_TRUE(throws_error([&] { (void)smax::softmax(m, smax::rowwise, bad); }, "smax::softmax",
                             "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { (void)smax::log_softmax(z, bad); }, "smax::log_softmax",
                             "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { (void)smax::log_softmax(m, smax::colwise, bad); },
                             "smax::log_softmax", "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { smax::softmax_into(out, z, bad); }, "smax::softmax_into",
                             "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { smax::softmax_into(out_m, m, smax::colwise, bad); },
                             "smax::softmax_into", "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { smax::log_softmax_into(out, z, bad); }, "smax::log_softmax_into",
                             "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { smax::log_softmax_into(out_m, m, smax::rowwise, bad); },
                             "smax::log_softmax_into", "temperature", value, what));
    EXPECT_TRUE(bit_equal(sentinel, out));
    EXPECT_TRUE(bit_equal(sentinel_m, out_m));
    // In place: the input is untouched.
    Vec<T> in_place = z;
    EXPECT_TRUE(throws_error([&] { smax::softmax_into(in_place, in_place, bad); },
                             "smax::softmax_into", "temperature", value, what));
    EXPECT_TRUE(bit_equal(z, in_place));
  }
}

TYPED_TEST(SoftmaxErrors, BadBackwardTemperature) {
  using T = TypeParam;
  const Vec<T> y = vec<T>({0.25, 0.75}), dy = vec<T>({1, -1});
  const Mat<T> ym = Mat<T>::Constant(2, 3, T(0.5)), dym = Mat<T>::Ones(2, 3);
  const Vec<T> sentinel = Vec<T>::Constant(2, T(42));
  const Mat<T> sentinel_m = Mat<T>::Constant(2, 3, T(42));
  for (T bad : {T(0), T(-1), qnan<T>, -inf<T>}) {
    SCOPED_TRACE(::testing::Message() << "T = " << bad);
    const std::string value = text_of(bad);
    const std::string what = "a number > 0";
    Vec<T> out = sentinel;
    Mat<T> out_m = sentinel_m;
    EXPECT_TRUE(throws_error([&] { (void)smax::softmax_backward(y, dy, bad); },
                             "smax::softmax_backward", "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { (void)smax::softmax_backward(ym, dym, smax::rowwise, bad); },
                             "smax::softmax_backward", "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { (void)smax::log_softmax_backward(y, dy, bad); },
                             "smax::log_softmax_backward", "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { (void)smax::log_softmax_backward(ym, dym, smax::colwise, bad); },
                             "smax::log_softmax_backward", "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { smax::softmax_backward_into(out, y, dy, bad); },
                             "smax::softmax_backward_into", "temperature", value, what));
    EXPECT_TRUE(
        throws_error([&] { smax::softmax_backward_into(out_m, ym, dym, smax::colwise, bad); },
                     "smax::softmax_backward_into", "temperature", value, what));
    EXPECT_TRUE(throws_error([&] { smax::log_softmax_backward_into(out, y, dy, bad); },
                             "smax::log_softmax_backward_into", "temperature", value, what));
    EXPECT_TRUE(
        throws_error([&] { smax::log_softmax_backward_into(out_m, ym, dym, smax::rowwise, bad); },
                     "smax::log_softmax_backward_into", "temperature", value, what));
    EXPECT_TRUE(bit_equal(sentinel, out));
    EXPECT_TRUE(bit_equal(sentinel_m, out_m));
  }
}

TYPED_TEST(SoftmaxErrors, MismatchedBackwardShapes) {
  using T = TypeParam;
  const Vec<T> y = Vec<T>::Constant(3, T(1) / 3);
  const Vec<T> dy4 = Vec<T>::Ones(4);
  const RowVec<T> dy_row = RowVec<T>::Ones(3);
  const Mat<T> ym = Mat<T>::Constant(2, 3, T(0.5)), dym = Mat<T>::Ones(3, 2);
  Vec<T> out = Vec<T>::Constant(3, T(42));
  Mat<T> out_m = Mat<T>::Constant(2, 3, T(42));
  EXPECT_TRUE(throws_error([&] { (void)smax::softmax_backward(y, dy4); }, "smax::softmax_backward",
                           "dy", "of shape 4x1", "the shape of 'y' (3x1)"));
  EXPECT_TRUE(throws_error([&] { (void)smax::softmax_backward(y, dy_row); },
                           "smax::softmax_backward", "dy", "of shape 1x3",
                           "the shape of 'y' (3x1)"));
  EXPECT_TRUE(throws_error([&] { (void)smax::log_softmax_backward(y, dy4); },
                           "smax::log_softmax_backward", "dy", "of shape 4x1",
                           "the shape of 'logy' (3x1)"));
  EXPECT_TRUE(throws_error([&] { (void)smax::softmax_backward(ym, dym, smax::rowwise); },
                           "smax::softmax_backward", "dy", "of shape 3x2",
                           "the shape of 'y' (2x3)"));
  EXPECT_TRUE(throws_error([&] { (void)smax::log_softmax_backward(ym, dym, smax::colwise); },
                           "smax::log_softmax_backward", "dy", "of shape 3x2",
                           "the shape of 'logy' (2x3)"));
  EXPECT_TRUE(throws_error([&] { smax::softmax_backward_into(out, y, dy4); },
                           "smax::softmax_backward_into", "dy", "of shape 4x1",
                           "the shape of 'y' (3x1)"));
  EXPECT_TRUE(throws_error([&] { smax::log_softmax_backward_into(out, y, dy4); },
                           "smax::log_softmax_backward_into", "dy", "of shape 4x1",
                           "the shape of 'logy' (3x1)"));
  EXPECT_TRUE(throws_error([&] { smax::softmax_backward_into(out_m, ym, dym, smax::rowwise); },
                           "smax::softmax_backward_into", "dy", "of shape 3x2",
                           "the shape of 'y' (2x3)"));
  EXPECT_TRUE(throws_error([&] { smax::log_softmax_backward_into(out_m, ym, dym, smax::colwise); },
                           "smax::log_softmax_backward_into", "dy", "of shape 3x2",
                           "the shape of 'logy' (2x3)"));
  EXPECT_TRUE(bit_equal(Vec<T>::Constant(3, T(42)), out));
  EXPECT_TRUE(bit_equal(Mat<T>::Constant(2, 3, T(42)), out_m));
}

TYPED_TEST(SoftmaxErrors, WrongShapeOutputsThatCannotResize) {
  using T = TypeParam;
  const Vec<T> z = vec<T>({1, 2, 3});
  const Mat<T> m = random_matrix<T>(3, 4, 71);
  std::vector<T> storage(16, T(42));
  Eigen::Map<Vec<T>> short_map(storage.data(), 2);
  Mat<T> big = Mat<T>::Constant(5, 5, T(42));
  const std::string of_z = "storage of shape 3x1 (the shape of 'z')";
  EXPECT_TRUE(throws_error([&] { smax::softmax_into(short_map, z); }, "smax::softmax_into", "out",
                           "of shape 2x1", of_z));
  EXPECT_TRUE(throws_error([&] { smax::log_softmax_into(short_map, z); }, "smax::log_softmax_into",
                           "out", "of shape 2x1", of_z));
  EXPECT_TRUE(throws_error([&] { smax::softmax_into(big.col(0), z); }, "smax::softmax_into", "out",
                           "of shape 5x1", of_z));
  // A row of the right length is not a column of that length.
  EXPECT_TRUE(throws_error([&] { smax::softmax_into(big.row(0).head(3), z); }, "smax::softmax_into",
                           "out", "of shape 1x3", of_z));
  EXPECT_TRUE(throws_error([&] { smax::softmax_into(big.block(0, 0, 4, 3), m, smax::rowwise); },
                           "smax::softmax_into", "out", "of shape 4x3",
                           "storage of shape 3x4 (the shape of 'z')"));
  EXPECT_TRUE(throws_error([&] { smax::log_softmax_into(big.block(0, 0, 3, 3), m, smax::colwise); },
                           "smax::log_softmax_into", "out", "of shape 3x3",
                           "storage of shape 3x4"));
  // A fixed-capacity output too small to resize (capacity 16: a full vector register, so
  // GCC's -Warray-bounds does not trip over the unreachable packet code).
  using Capped = Eigen::Matrix<T, Eigen::Dynamic, 1, 0, 16, 1>;
  Capped capped = Capped::Constant(16, T(42));
  const Vec<T> z20 = random_logits<T>(20, logits::normal_1, 72);
  Mat<T> wide(3, 20);
  for (Index r = 0; r < 3; ++r)
    wide.row(r) = random_logits<T>(20, logits::normal_1, 73 + std::uint32_t(r)).transpose();
  EXPECT_TRUE(throws_error([&] { smax::softmax_into(capped, z20); }, "smax::softmax_into", "out",
                           "of shape 16x1", "storage of shape 20x1 (the shape of 'z')"));
  // Backward outputs.
  const Vec<T> y = smax::softmax(z);
  EXPECT_TRUE(throws_error([&] { smax::softmax_backward_into(short_map, y, z); },
                           "smax::softmax_backward_into", "out", "of shape 2x1",
                           "storage of shape 3x1 (the shape of 'y')"));
  EXPECT_TRUE(throws_error([&] { smax::log_softmax_backward_into(big.col(1), y, z); },
                           "smax::log_softmax_backward_into", "out", "of shape 5x1",
                           "storage of shape 3x1 (the shape of 'logy')"));
  EXPECT_TRUE(
      throws_error([&] { smax::softmax_backward_into(big.block(0, 0, 3, 3), m, m, smax::rowwise); },
                   "smax::softmax_backward_into", "out", "of shape 3x3",
                   "storage of shape 3x4 (the shape of 'y')"));
  // logsumexp_into: one value per distribution.
  EXPECT_TRUE(throws_error([&] { smax::logsumexp_into(short_map, m, smax::rowwise); },
                           "smax::logsumexp_into", "out", "of length 2", "a vector of length 3"));
  EXPECT_TRUE(throws_error([&] { smax::logsumexp_into(big.col(2), m, smax::colwise); },
                           "smax::logsumexp_into", "out", "of length 5", "a vector of length 4"));
  EXPECT_TRUE(throws_error([&] { smax::logsumexp_into(capped, wide, smax::colwise); },
                           "smax::logsumexp_into", "out", "of length 16", "a vector of length 20"));
  // Nothing was written.
  for (T v : storage) EXPECT_EQ(v, T(42));
  EXPECT_TRUE(bit_equal(Mat<T>::Constant(5, 5, T(42)), big));
  EXPECT_TRUE(bit_equal(Vec<T>::Constant(16, T(42)), Vec<T>(capped)));
}

TYPED_TEST(SoftmaxErrors, TemperatureIsCheckedBeforeShapes) {
  // With several problems the call still throws before writing, whatever it reports first.
  using T = TypeParam;
  std::vector<T> storage(4, T(42));
  Eigen::Map<Vec<T>> short_map(storage.data(), 2);
  EXPECT_THROW(smax::softmax_into(short_map, vec<T>({1, 2, 3}), T(-1)), smax::error);
  EXPECT_THROW(smax::softmax_backward_into(short_map, vec<T>({1, 0}), vec<T>({1, 2, 3}), T(0)),
               smax::error);
  for (T v : storage) EXPECT_EQ(v, T(42));
}

}  // namespace
