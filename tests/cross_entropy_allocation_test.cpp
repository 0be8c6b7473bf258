// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// GCC 12 reports the _mm512_undefined_* inside AVX-512 intrinsics as (maybe-)uninitialized
// (GCC bug 105593). In a test file this large GCC stops inlining Eigen's pldexp into
// smax's exp (inline-unit-growth limit), and the out-of-line copy is beyond the pragmas in
// smax's headers; silencing it here, before Eigen's headers are read, covers that copy.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// The allocation-free forms of the losses never touch the heap. Two counters watch:
// a replacement global operator new (std::vector, std::string, ...) and Eigen's own
// EIGEN_RUNTIME_NO_MALLOC guard, since Eigen allocates with malloc, not operator new.

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

namespace alloc_count {
std::atomic<long> news{0};
std::atomic<long> eigen{0};
std::atomic<bool> watching{false};
inline void eigen_assert_failed() {
  if (watching.load()) ++eigen;
}
}  // namespace alloc_count

// Eigen checks its malloc guard with eigen_assert: count instead of aborting.
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) ((x) ? static_cast<void>(0) : alloc_count::eigen_assert_failed())

#include <gtest/gtest.h>
#include <Eigen/Core>

#include <smax/smax.hpp>

namespace {
void* counted(std::size_t n) {
  if (alloc_count::watching.load()) ++alloc_count::news;
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* counted_aligned(std::size_t n, std::align_val_t a) {
  if (alloc_count::watching.load()) ++alloc_count::news;
  const std::size_t al = static_cast<std::size_t>(a);
  void* p = std::aligned_alloc(al, (n + al - 1) / al * al);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted(n); }
void* operator new[](std::size_t n) { return counted(n); }
void* operator new(std::size_t n, std::align_val_t a) { return counted_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_aligned(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

/// Runs f with both counters watching; returns the number of heap allocations it made.
template <typename F>
long allocations(F&& f) {
  alloc_count::news = 0;
  alloc_count::eigen = 0;
  Eigen::internal::set_is_malloc_allowed(false);
  alloc_count::watching = true;
  f();
  alloc_count::watching = false;
  Eigen::internal::set_is_malloc_allowed(true);
  return alloc_count::news.load() + alloc_count::eigen.load();
}

template <typename T>
class Allocation : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
struct type_names {  // the third argument keeps clang's -Wpedantic quiet
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "float" : "double";
  }
};
TYPED_TEST_SUITE(Allocation, Scalars, type_names);

TYPED_TEST(Allocation, CountersWork) {
  using T = TypeParam;
  EXPECT_GT(allocations([] {
              std::vector<int> v(10);
              (void)v;
            }),
            0);
  EXPECT_GT(allocations([] {
              Eigen::Matrix<T, Eigen::Dynamic, 1> v(10);
              (void)v;
            }),
            0);
}

TYPED_TEST(Allocation, LossesIntoCallerStorageNeverAllocate) {
  using T = TypeParam;
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  using RM = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using V = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  const Eigen::Index N = 37, C = 600;  // long rows: several exp blocks and gather chunks
  const M z = M::Random(N, C) * T(5);
  const RM zr = z;
  const M zt = z.transpose();
  M q = (M::Random(N, C).array() + T(1)).matrix();
  for (Eigen::Index n = 0; n < N; ++n) {
    T s = 0;
    for (Eigen::Index c = 0; c < C; ++c) s += q(n, c);
    q.row(n) /= s;
  }
  const M qt = q.transpose();
  Eigen::VectorXi y(N);
  std::vector<long> yv(static_cast<size_t>(N));
  for (Eigen::Index n = 0; n < N; ++n) {
    y(n) = static_cast<int>((n * 7) % C);
    yv[static_cast<size_t>(n)] = n % 5 == 0 ? -100 : y(n);
  }
  V w = (V::Random(C).array() + T(1.5)).matrix();
  M g(N, C), gt(C, N), work = z;
  RM gr(N, C);
  V per(N), up = V::Constant(N, T(0.5));

  smax::cross_entropy_options<T> o;
  o.label_smoothing = T(0.1);
  o.weight = w;
  o.temperature = T(1.5);
  smax::cross_entropy_options<T> plain;
  smax::nll_loss_options<T> no;
  no.weight = w;
  smax::distillation_options<T> dopt;
  dopt.temperature = T(3);
  smax::binary_cross_entropy_options<T> bopt;
  bopt.pos_weight = w;

  volatile T sink = 0;
  EXPECT_EQ(allocations([&] {
              sink = sink + smax::cross_entropy_with_grad_into(g, z, y, smax::rowwise, plain);
              sink = sink + smax::cross_entropy_with_grad_into(g, z, yv, smax::rowwise, o);
              sink = sink + smax::cross_entropy_with_grad_into(gr, zr, y, smax::rowwise, o);
              sink = sink + smax::cross_entropy_with_grad_into(gt, zt, y, smax::colwise, o);
              sink = sink + smax::cross_entropy_with_grad_into(g, z, q, smax::rowwise, o);
              sink = sink + smax::cross_entropy_with_grad_into(gt, zt, qt, smax::colwise, o);
              sink = sink + smax::cross_entropy_with_grad_into(work, work, y, smax::rowwise, o);
              sink = sink + smax::cross_entropy(z, y, smax::rowwise, o);
              sink = sink + smax::cross_entropy(z, q, smax::rowwise, o);
              smax::cross_entropy_per_sample_into(per, z, yv, smax::rowwise, o);
              smax::cross_entropy_per_sample_backward_into(g, z, yv, up, smax::rowwise, o);
              sink = sink + smax::cross_entropy_with_grad_into(g.row(0).transpose(),
                                                               z.row(0).transpose(), 3, o);
              sink = sink + smax::nll_loss(z, y, smax::rowwise, no);
              sink = sink + smax::nll_loss_with_grad_into(g, z, y, smax::rowwise, no);
            }),
            0);
  EXPECT_EQ(allocations([&] {
              sink = sink + smax::distillation_loss_with_grad_into(g, z, q, smax::rowwise, dopt);
              sink = sink + smax::distillation_loss_with_grad_into(gt, zt, qt, smax::colwise, dopt);
              sink = sink + smax::distillation_loss(z, q, smax::rowwise, dopt);
            }),
            0);
  EXPECT_EQ(allocations([&] {
              sink = sink + smax::binary_cross_entropy_with_logits_with_grad_into(
                                g, z, q, smax::rowwise, bopt);
              sink = sink + smax::binary_cross_entropy_with_logits_with_grad_into(
                                gt, zt, qt, smax::colwise, bopt);
              smax::binary_cross_entropy_with_logits_per_element_into(g, z, q, smax::rowwise, bopt);
              smax::sigmoid_into(g, z);
              smax::log_sigmoid_into(work, work);
            }),
            0);
  (void)sink;
}

}  // namespace
