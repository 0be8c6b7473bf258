// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// The allocation-free forms allocate nothing. Two independent counters watch every call:
// - every replaceable global operator new (plain, array, nothrow, aligned) counts, which
//   catches std::vector, std::string and friends;
// - Eigen allocates with malloc, not operator new, so EIGEN_RUNTIME_NO_MALLOC is defined
//   and eigen_assert is redirected to a counter (it must work in NDEBUG builds too):
//   Eigen's check_that_malloc_is_allowed() then counts every heap allocation Eigen makes
//   while allocations are forbidden.
// This file replaces operator new for its whole executable; it is built on its own.

#define EIGEN_RUNTIME_NO_MALLOC

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>

namespace allocation_counters {
std::atomic<long> news{0};
std::atomic<long> eigen_failures{0};
inline void eigen_assert_failed(const char* condition, const char* file, int line) {
  ++eigen_failures;
  std::fprintf(stderr, "eigen_assert failed: %s (%s:%d)\n", condition, file, line);
}
}  // namespace allocation_counters

#define eigen_assert(x)                                                                            \
  do {                                                                                             \
    if (!static_cast<bool>(x)) ::allocation_counters::eigen_assert_failed(#x, __FILE__, __LINE__); \
  } while (false)

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/logsumexp_accumulator.hpp>
#include <smax/softmax.hpp>

#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

// ---------------------------------------------------------------------------------------
// Counting replacements of the global allocation functions

namespace {

void* counted_malloc(std::size_t n) {
  ++allocation_counters::news;
  return std::malloc(n == 0 ? 1 : n);
}

// Over-aligned blocks: allocate extra room, keep the malloc'd pointer just before the block.
void* counted_aligned(std::size_t n, std::align_val_t al) {
  ++allocation_counters::news;
  // aligned_alloc wants a size that is a multiple of the alignment; its memory goes to free().
  const std::size_t a = std::max(static_cast<std::size_t>(al), sizeof(void*));
  const std::size_t size = (std::max<std::size_t>(n, 1) + a - 1) / a * a;
  return std::aligned_alloc(a, size);
}

void aligned_free(void* p) { std::free(p); }

}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC inlines these replacements into their callers and then reports the free() of our own
// malloc() as a mismatched new/delete pair; the pairing is right by construction.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted_aligned(n, a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = counted_aligned(n, a)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_aligned(n, a);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { aligned_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { aligned_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { aligned_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { aligned_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { aligned_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  aligned_free(p);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

using namespace smax_test;

/// Runs f with heap allocation forbidden and reports any allocation it made.
template <typename F>
::testing::AssertionResult allocates_nothing(F&& f) {
  const long news = allocation_counters::news.load();
  const long eigen = allocation_counters::eigen_failures.load();
  Eigen::internal::set_is_malloc_allowed(false);
  f();
  Eigen::internal::set_is_malloc_allowed(true);
  const long new_calls = allocation_counters::news.load() - news;
  const long eigen_calls = allocation_counters::eigen_failures.load() - eigen;
  if (new_calls == 0 && eigen_calls == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << new_calls << " operator new call(s) and " << eigen_calls << " Eigen heap allocation(s)";
}

template <typename T>
class Allocation : public ::testing::Test {};
TYPED_TEST_SUITE(Allocation, FloatingTypes, TypeNames);

TEST(AllocationCounters, SeeBothKindsOfAllocation) {
  // The counters can fail: an Eigen temporary and a std::vector are both seen.
  EXPECT_FALSE(allocates_nothing([] {
    Eigen::VectorXd v(100);
    v.setZero();
    EXPECT_EQ(v.sum(), 0.0);
  }));
  EXPECT_FALSE(allocates_nothing([] {
    std::vector<int> v(10);
    EXPECT_EQ(v.size(), 10u);
  }));
  EXPECT_FALSE(allocates_nothing([] {
    // A direct call: unlike a new-expression, the compiler may not elide it.
    void* p = ::operator new[](3 * sizeof(double), std::align_val_t(64));
    ::operator delete[](p, std::align_val_t(64));
  }));
  EXPECT_TRUE(allocates_nothing([] {}));
}

TYPED_TEST(Allocation, VectorIntoForms) {
  using T = TypeParam;
  for (Index n : {1, 3, 17, 64, 257, 1000, 4097}) {
    SCOPED_TRACE(::testing::Message() << "n = " << n);
    const Vec<T> z = random_logits<T>(n, logits::normal_30, 1);
    const Vec<T> dy = random_logits<T>(n, logits::normal_1, 2);
    const Vec<T> y = smax::softmax(z), logy = smax::log_softmax(z);
    Vec<T> out(n), work = z;
    Vec<T> big(3 * n + 2);
    big.setZero();
    Mat<T> columns(n, 3);
    columns.setZero();
    for (T t : {T(0), T(0.5), T(1), T(3), inf<T>}) {
      // Plain vectors.
      EXPECT_TRUE(allocates_nothing([&] { smax::softmax_into(out, z, t); }));
      EXPECT_TRUE(allocates_nothing([&] { smax::log_softmax_into(out, z, t); }));
      if (t > 0) {
        EXPECT_TRUE(allocates_nothing([&] { smax::softmax_backward_into(out, y, dy, t); }));
        EXPECT_TRUE(allocates_nothing([&] { smax::log_softmax_backward_into(out, logy, dy, t); }));
      }
      // Maps (strided and contiguous) and blocks, as inputs and as outputs.
      EXPECT_TRUE(allocates_nothing([&] {
        Eigen::Map<Vec<T>, 0, Eigen::InnerStride<3>> strided(big.data(), n);
        Eigen::Map<const Vec<T>> in(z.data(), n);
        smax::softmax_into(strided, in, t);
        smax::log_softmax_into(columns.col(1), strided, t);
        smax::softmax_into(big.segment(1, n), columns.col(1), t);
      }));
      if (t > 0) {
        EXPECT_TRUE(allocates_nothing([&] {
          smax::softmax_backward_into(columns.col(0), y, columns.col(2), t);
          smax::log_softmax_backward_into(big.segment(2, n), logy, columns.col(2), t);
        }));
      }
      // In place.
      work = z;
      EXPECT_TRUE(allocates_nothing([&] { smax::softmax_into(work, work, t); }));
      work = z;
      EXPECT_TRUE(allocates_nothing([&] { smax::log_softmax_into(work, work, t); }));
    }
    work = dy;
    EXPECT_TRUE(allocates_nothing([&] { smax::softmax_backward_into(work, y, work); }));
    work = y;
    EXPECT_TRUE(allocates_nothing([&] { smax::softmax_backward_into(work, work, dy); }));
    work = logy;
    EXPECT_TRUE(allocates_nothing([&] { smax::log_softmax_backward_into(work, work, dy); }));
    // The policy's limit cases take other branches.
    Vec<T> special = z;
    special(0) = inf<T>;
    EXPECT_TRUE(allocates_nothing([&] { smax::softmax_into(out, special); }));
    special(n - 1) = qnan<T>;
    EXPECT_TRUE(allocates_nothing([&] { smax::log_softmax_into(out, special); }));
    // logsumexp of a stored vector, row or column.
    T sink = 0;
    EXPECT_TRUE(allocates_nothing([&] {
      sink += smax::logsumexp(z);
      sink += smax::logsumexp(columns.col(1));
      sink += smax::logsumexp(columns.col(1).transpose());
    }));
    EXPECT_FALSE(std::isnan(sink));
  }
}

TYPED_TEST(Allocation, BatchIntoFormsBothAxesAndStorageOrders) {
  using T = TypeParam;
  struct shape {
    Index rows, cols;
  };
  for (const shape& s :
       {shape{3, 17}, shape{40, 9}, shape{33, 100}, shape{5, 300}, shape{2, 4097}}) {
    SCOPED_TRACE(::testing::Message() << s.rows << " x " << s.cols);
    Mat<T> z(s.rows, s.cols), dy(s.rows, s.cols);
    for (Index c = 0; c < s.cols; ++c) {
      z.col(c) = random_logits<T>(s.rows, logits::normal_1, 10 + std::uint32_t(c));
      dy.col(c) = random_logits<T>(s.rows, logits::normal_1, 20000 + std::uint32_t(c));
    }
    const MatR<T> zr = z, dyr = dy;
    const auto run = [&](const auto& in, const auto& d, auto axis) {
      using M = std::decay_t<decltype(in)>;
      M out(in.rows(), in.cols()), work = in;
      const M y = smax::softmax(in, axis), logy = smax::log_softmax(in, axis);
      auto lse = smax::logsumexp(in, axis);
      // A larger matrix whose block is the output (outer stride != rows).
      M padded = M::Zero(in.rows() + 3, in.cols() + 2);
      for (T t : {T(0), T(1), T(2.5), inf<T>}) {
        EXPECT_TRUE(allocates_nothing([&] { smax::softmax_into(out, in, axis, t); }));
        EXPECT_TRUE(allocates_nothing([&] { smax::log_softmax_into(out, in, axis, t); }));
        EXPECT_TRUE(allocates_nothing(
            [&] { smax::softmax_into(padded.block(1, 1, in.rows(), in.cols()), in, axis, t); }));
        EXPECT_TRUE(allocates_nothing([&] {
          smax::log_softmax_into(out, padded.block(1, 1, in.rows(), in.cols()), axis, t);
        }));
        work = in;
        EXPECT_TRUE(allocates_nothing([&] { smax::softmax_into(work, work, axis, t); }));
        if (t > 0) {
          EXPECT_TRUE(allocates_nothing([&] { smax::softmax_backward_into(out, y, d, axis, t); }));
          EXPECT_TRUE(
              allocates_nothing([&] { smax::log_softmax_backward_into(out, logy, d, axis, t); }));
          EXPECT_TRUE(allocates_nothing([&] {
            smax::softmax_backward_into(padded.block(2, 0, in.rows(), in.cols()), y, d, axis, t);
          }));
        }
      }
      EXPECT_TRUE(allocates_nothing([&] { smax::logsumexp_into(lse, in, axis); }));
      EXPECT_TRUE(allocates_nothing(
          [&] { smax::logsumexp_into(lse, padded.block(1, 1, in.rows(), in.cols()), axis); }));
      // A Map with an outer stride as input.
      EXPECT_TRUE(allocates_nothing([&] {
        Eigen::Map<const M, 0, Eigen::OuterStride<>> view(
            padded.data(), in.rows(), in.cols(),
            Eigen::OuterStride<>(M::IsRowMajor ? padded.cols() : padded.rows()));
        smax::softmax_into(out, view, axis);
        smax::logsumexp_into(lse, view, axis);
      }));
    };
    run(z, dy, smax::rowwise);
    run(z, dy, smax::colwise);
    run(zr, dyr, smax::rowwise);
    run(zr, dyr, smax::colwise);
  }
}

TYPED_TEST(Allocation, FixedSizeReturningForms) {
  using T = TypeParam;
  const Eigen::Matrix<T, 3, 1> v = vec<T>({2, 1, 0.1});
  const Eigen::Array<T, 5, 1> a = vec<T>({1, 2, 3, 4, 5}).array();
  const Eigen::Matrix<T, 3, 4> m = Eigen::Matrix<T, 3, 4>::Constant(T(0.5));
  Eigen::Matrix<T, 3, 1> y;
  Eigen::Array<T, 5, 1> ya;
  Eigen::Matrix<T, 3, 4> ym;
  Eigen::Matrix<T, 3, 1> lse_rows;
  Eigen::Matrix<T, 1, 4> lse_cols;
  EXPECT_TRUE(allocates_nothing([&] { y = smax::softmax(v); }));
  EXPECT_TRUE(allocates_nothing([&] { y = smax::log_softmax(v, T(2)); }));
  EXPECT_TRUE(allocates_nothing([&] { y = smax::softmax_backward(smax::softmax(v), v); }));
  EXPECT_TRUE(allocates_nothing([&] { y = smax::log_softmax_backward(smax::log_softmax(v), v); }));
  EXPECT_TRUE(allocates_nothing([&] { ya = smax::softmax(a); }));
  EXPECT_TRUE(allocates_nothing([&] { ym = smax::softmax(m, smax::rowwise); }));
  EXPECT_TRUE(allocates_nothing([&] { ym = smax::log_softmax(m, smax::colwise); }));
  EXPECT_TRUE(allocates_nothing([&] { lse_rows = smax::logsumexp(m, smax::rowwise); }));
  EXPECT_TRUE(allocates_nothing([&] { lse_cols = smax::logsumexp(m, smax::colwise); }));
  EXPECT_NEAR(static_cast<double>(ym.col(0).array().exp().sum()), 1.0, 1e-5);
  EXPECT_NEAR(static_cast<double>(y.sum()), 0.0, 1e-5);
}

TYPED_TEST(Allocation, AccumulatorPushAndMerge) {
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(4097, logits::normal_30, 40);
  Mat<T> m(33, 70);
  for (Index c = 0; c < m.cols(); ++c)
    m.col(c) = random_logits<T>(33, logits::normal_1, 50 + std::uint32_t(c));
  smax::logsumexp_accumulator<T> a, b, c;
  EXPECT_TRUE(allocates_nothing([&] {
    for (Index i = 0; i < 100; ++i) a.push(z(i));
    a.push(z);
    a.push(z.segment(3, 1000));
    b.push(Eigen::Map<const Vec<T>, 0, Eigen::InnerStride<2>>(z.data(), 2000));
    b.push(m);
    b.push(m.block(1, 2, 20, 30));
    b.push(m.row(4));
    c = a;
    c.merge(b);
    c.merge(smax::logsumexp_accumulator<T>());
  }));
  EXPECT_TRUE(std::isfinite(c.value()));
}

}  // namespace
