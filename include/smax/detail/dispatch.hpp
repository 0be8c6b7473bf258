// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include <Eigen/Core>
#if defined(_OPENMP) && !defined(EIGEN_DONT_PARALLELIZE)
#include <omp.h>
#endif

#include <smax/axis.hpp>
#include <smax/error.hpp>

/// \file
/// From Eigen objects and axes to the (pointer, length, stride) ranges the kernels take:
/// compile-time checks, shape checks, output sizing and aliasing.

namespace smax::detail {

using Index = Eigen::Index;

template <typename D>
inline constexpr bool has_direct_access = (Eigen::internal::traits<D>::Flags &
                                           Eigen::DirectAccessBit) != 0;

template <typename D>
inline constexpr bool is_writable_storage = has_direct_access<D> &&
                                            (Eigen::internal::traits<D>::Flags &
                                             Eigen::LvalueBit) != 0;

template <typename D>
inline constexpr bool is_array = std::is_base_of_v<Eigen::ArrayBase<D>, D>;

template <typename D>
inline constexpr bool is_plain = std::is_base_of_v<Eigen::PlainObjectBase<D>, D>;

/// The axis a compile-time vector is read along: a row vector is one row, a column vector
/// one column.
template <typename D>
using vector_axis_t = std::conditional_t<D::RowsAtCompileTime == 1, rowwise_t, colwise_t>;

/// A batch of distributions in memory: element k of distribution d is at
/// data[d * dstride + k * kstride].
template <typename P>
struct batch {
  P* data;
  Index count;
  Index length;
  Index dstride;
  Index kstride;
};

/// A batch with no elements keeps its (possibly null) data pointer and strides 0, so every
/// data + d * dstride of the kernels and loss sweeps stays a valid (null + 0) expression.
template <typename P>
batch<P> batch_of(P* data, Index count, Index length, Index dstride, Index kstride) {
  if (count == 0 || length == 0) return batch<P>{data, count, length, 0, 0};
  return batch<P>{data, count, length, dstride, kstride};
}

template <typename D>
auto make_batch(const Eigen::DenseBase<D>& x, rowwise_t) {
  const D& d = x.derived();
  return batch_of(d.data(), d.rows(), d.cols(), d.rowStride(), d.colStride());
}

template <typename D>
auto make_batch(const Eigen::DenseBase<D>& x, colwise_t) {
  const D& d = x.derived();
  return batch_of(d.data(), d.cols(), d.rows(), d.colStride(), d.rowStride());
}

/// The distributions [begin, end) of a batch.
template <typename P>
batch<P> sub_batch(const batch<P>& b, Index begin, Index end) {
  return batch<P>{b.data + begin * b.dstride, end - begin, b.length, b.dstride, b.kstride};
}

/// Fewest elements a batch must have before it is split across threads: below this the
/// fork and join (a few microseconds) cost more than they save.
inline constexpr Index parallel_min_elements = Index(1) << 17;

/// Calls f(begin, end) on ranges covering the count distributions of a batch: one range
/// per thread when smax is compiled with OpenMP (-fopenmp), Eigen::nbThreads() > 1, the
/// batch has at least parallel_min_elements elements and we are not already inside a
/// parallel region; else f(0, count) on the calling thread. Range boundaries are multiples
/// of `align` (the kernels' lane blocks stay whole). Without OpenMP nothing changes.
template <typename F>
void for_each_range(Index count, Index length, Index align, F&& f) {
#if defined(_OPENMP) && !defined(EIGEN_DONT_PARALLELIZE)
  const Index threads = std::min<Index>(Eigen::nbThreads(), (count + align - 1) / align);
  if (threads > 1 && count * length >= parallel_min_elements && omp_in_parallel() == 0) {
    const auto bound = [&](Index t) {
      return t == threads ? count : (count * t / threads) / align * align;
    };
#pragma omp parallel for num_threads(static_cast <int>(threads)) schedule(static)
    for (Index t = 0; t < threads; ++t) {
      if (bound(t) < bound(t + 1)) f(bound(t), bound(t + 1));
    }
    return;
  }
#else
  static_cast<void>(length);
  static_cast<void>(align);
#endif
  f(Index(0), count);
}

/// Lowest and one-past-highest address an Eigen object with direct access touches.
template <typename D>
std::pair<std::uintptr_t, std::uintptr_t> address_range(const Eigen::DenseBase<D>& x) {
  const D& d = x.derived();
  if (d.size() == 0) return {0, 0};
  const auto* p = d.data();
  const Index r = d.rows() - 1, c = d.cols() - 1;
  const Index lo = std::min<Index>(0, r * d.rowStride()) + std::min<Index>(0, c * d.colStride());
  const Index hi = std::max<Index>(0, r * d.rowStride()) + std::max<Index>(0, c * d.colStride());
  return {reinterpret_cast<std::uintptr_t>(p + lo), reinterpret_cast<std::uintptr_t>(p + hi + 1)};
}

/// True when the output can be written while the input is read element by element:
/// disjoint memory, or exactly the same elements in the same places.
template <typename A, typename B>
bool safe_to_stream(const Eigen::DenseBase<A>& in, const Eigen::DenseBase<B>& out) {
  const auto [ilo, ihi] = address_range(in);
  const auto [olo, ohi] = address_range(out);
  if (ihi <= olo || ohi <= ilo) return true;
  return static_cast<const void*>(in.derived().data()) ==
             static_cast<const void*>(out.derived().data()) &&
         in.rows() == out.rows() && in.cols() == out.cols() &&
         (in.rows() <= 1 || in.derived().rowStride() == out.derived().rowStride()) &&
         (in.cols() <= 1 || in.derived().colStride() == out.derived().colStride());
}

inline std::string shape_text(Index rows, Index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

/// True when out already has, or may be resized to, rows x cols.
template <typename Out>
bool can_take_shape(const Eigen::DenseBase<Out>& out, Index rows, Index cols) {
  if (out.rows() == rows && out.cols() == cols) return true;
  if constexpr (is_plain<Out>) {
    const auto fits = [](int fixed, int max, Index n) {
      return (fixed == Eigen::Dynamic || fixed == n) && (max == Eigen::Dynamic || n <= max);
    };
    return fits(Out::RowsAtCompileTime, Out::MaxRowsAtCompileTime, rows) &&
           fits(Out::ColsAtCompileTime, Out::MaxColsAtCompileTime, cols);
  } else {
    return false;
  }
}

/// Checks (before anything is written) that out can hold rows x cols.
template <typename Out>
void check_output_shape(const char* function, const Eigen::DenseBase<Out>& out, Index rows,
                        Index cols, const char* of) {
  if (!can_take_shape(out, rows, cols)) {
    fail(function, "out", "of shape " + shape_text(out.rows(), out.cols()),
         "storage of shape " + shape_text(rows, cols) + " (the shape of '" + of +
             "'), or a resizable matrix/array");
  }
}

/// Checks that a vector output can hold n values (either orientation).
template <typename Out>
void check_output_length(const char* function, const Eigen::DenseBase<Out>& out, Index n,
                         const char* what) {
  const bool ok = out.size() == n || can_take_shape(out, Out::RowsAtCompileTime == 1 ? 1 : n,
                                                    Out::RowsAtCompileTime == 1 ? n : 1);
  if (!ok) {
    fail(function, "out", "of length " + std::to_string(out.size()),
         "a vector of length " + std::to_string(n) + " (" + what + ")");
  }
}

template <typename Out>
Out& writable(const Eigen::DenseBase<Out>& out) {
  // Eigen's idiom for output parameters: taking by const& lets temporaries such as
  // m.row(i) or a Map bind; the object itself refers to writable storage.
  return const_cast<Out&>(out.derived());
}

template <typename Out>
void resize_to(const Eigen::DenseBase<Out>& out, Index rows, Index cols) {
  if (out.rows() == rows && out.cols() == cols) return;
  if constexpr (is_plain<Out>) writable(out).resize(rows, cols);
}

template <typename Out>
void resize_to_length(const Eigen::DenseBase<Out>& out, Index n) {
  if (out.size() == n) return;
  if constexpr (is_plain<Out>) writable(out).resize(n);
}

/// Compile-time requirements shared by every public function.
template <typename D>
constexpr void static_check_scalar() {
  static_assert(std::is_floating_point_v<typename D::Scalar>,
                "smax: the input's scalar type must be float, double or long double "
                "(for integer logits, cast first: z.template cast<float>())");
}

template <typename Out, typename D>
constexpr void static_check_output() {
  static_assert(is_writable_storage<Out>,
                "smax: 'out' must be writable storage with direct access (a Matrix, Array, "
                "Map, Block or Ref), not an expression");
  static_assert(std::is_same_v<typename Out::Scalar, typename D::Scalar>,
                "smax: 'out' must have the same scalar type as the input");
}

template <typename A, typename B>
constexpr void static_check_same_shape() {
  static_assert(int(A::RowsAtCompileTime) == Eigen::Dynamic ||
                    int(B::RowsAtCompileTime) == Eigen::Dynamic ||
                    int(A::RowsAtCompileTime) == int(B::RowsAtCompileTime),
                "smax: the two arguments have different fixed numbers of rows");
  static_assert(int(A::ColsAtCompileTime) == Eigen::Dynamic ||
                    int(B::ColsAtCompileTime) == Eigen::Dynamic ||
                    int(A::ColsAtCompileTime) == int(B::ColsAtCompileTime),
                "smax: the two arguments have different fixed numbers of columns");
}

/// The plain type holding one value per distribution: a column for rowwise (as Eigen's
/// m.rowwise().sum()), a row for colwise; Array stays Array, Matrix stays Matrix.
template <typename D, typename Axis>
struct reduced {
  using Scalar = typename D::Scalar;
  static constexpr bool by_row = std::is_same_v<Axis, rowwise_t>;
  static constexpr int rows = by_row ? int(D::RowsAtCompileTime) : 1;
  static constexpr int cols = by_row ? 1 : int(D::ColsAtCompileTime);
  static constexpr int max_rows = by_row ? int(D::MaxRowsAtCompileTime) : 1;
  static constexpr int max_cols = by_row ? 1 : int(D::MaxColsAtCompileTime);
  static constexpr int options = by_row ? Eigen::ColMajor : Eigen::RowMajor;
  using type =
      std::conditional_t<is_array<D>, Eigen::Array<Scalar, rows, cols, options, max_rows, max_cols>,
                         Eigen::Matrix<Scalar, rows, cols, options, max_rows, max_cols>>;
};

}  // namespace smax::detail
