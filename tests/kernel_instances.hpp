// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

/// \file
/// The smax kernels the tests call most, for float and double, compiled once per build
/// (kernel_instances.cpp) instead of once per test file: they are most of a test file's
/// compile time (one softmax call: 8 s of 10 at -O3). The targets that see
/// SMAX_TEST_EXTERN_KERNELS take these extern declarations, so their own code and the
/// library's dispatch stay in their file and only the kernel bodies move: the test files
/// (smax_use_test_kernels in tests/CMakeLists.txt), the examples but quickstart, the
/// accuracy sweep, the benchmarks of a compile-only build, and the fuzz targets (from their
/// own instrumented copy). The allocation tests compile everything themselves: they build
/// Eigen with EIGEN_RUNTIME_NO_MALLOC and their own eigen_assert, which the kernels must
/// see; so do threads_test (OpenMP) and the concurrency test (ThreadSanitizer).

#include <smax/smax.hpp>

// The list for one scalar type T; EXTERN is `extern` for the declarations, empty for the
// definitions in kernel_instances.cpp.
#define SMAX_TEST_KERNEL_LIST(EXTERN, T)                                                           \
  EXTERN template void smax::detail::run_forward_serial<smax::detail::forward_op::softmax, T>(     \
      const smax::detail::batch<const T>&, const smax::detail::batch<T>&, T, bool);                \
  EXTERN template void smax::detail::run_forward_serial<smax::detail::forward_op::log_softmax, T>( \
      const smax::detail::batch<const T>&, const smax::detail::batch<T>&, T, bool);                \
  EXTERN template void smax::detail::forward_one<smax::detail::forward_op::softmax, T>(            \
      const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index, T, bool, const T*);                  \
  EXTERN template void smax::detail::forward_one<smax::detail::forward_op::log_softmax, T>(        \
      const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index, T, bool, const T*);                  \
  EXTERN template void smax::detail::logsumexp_batch<T>(                                           \
      const T*, Eigen::Index, Eigen::Index, Eigen::Index, Eigen::Index, T*, Eigen::Index);         \
  EXTERN template T smax::detail::logsumexp_one<T>(const T*, Eigen::Index, Eigen::Index);          \
  EXTERN template void smax::detail::softmax_backward_one<T>(                                      \
      const T*, Eigen::Index, const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index, T, bool);    \
  EXTERN template void smax::detail::log_softmax_backward_one<T>(                                  \
      const T*, Eigen::Index, const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index, T, bool);    \
  EXTERN template Eigen::Index smax::detail::backward_short_rows<false, T>(                        \
      const T*, Eigen::Index, const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index,              \
      Eigen::Index, T);                                                                            \
  EXTERN template Eigen::Index smax::detail::backward_short_rows<true, T>(                         \
      const T*, Eigen::Index, const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index,              \
      Eigen::Index, T);                                                                            \
  EXTERN template Eigen::Index smax::detail::backward_long_rows_streamed<false, T>(                \
      const T*, Eigen::Index, const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index,              \
      Eigen::Index, T, bool);                                                                      \
  EXTERN template Eigen::Index smax::detail::backward_long_rows_streamed<true, T>(                 \
      const T*, Eigen::Index, const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index,              \
      Eigen::Index, T, bool);                                                                      \
  EXTERN template smax::detail::acc_t<T>                                                           \
  smax::detail::loss::ce_sample<T, smax::detail::loss::index_model<T>>(                            \
      const T*, Eigen::Index, Eigen::Index, T, const smax::detail::loss::index_model<T>&, T*,      \
      Eigen::Index, T, bool);                                                                      \
  EXTERN template smax::detail::acc_t<T>                                                           \
  smax::detail::loss::ce_sample<T, smax::detail::loss::probability_model<T>>(                      \
      const T*, Eigen::Index, Eigen::Index, T, const smax::detail::loss::probability_model<T>&,    \
      T*, Eigen::Index, T, bool);                                                                  \
  EXTERN template bool                                                                             \
  smax::detail::loss::ce_index_panel<smax::detail::loss::direct_panel_packets, T>(                 \
      const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index, const Eigen::Index*, const bool*,    \
      const T*, const T*, const smax::detail::loss::index_panel_params<T>&,                        \
      smax::detail::acc_t<T>*);                                                                    \
  EXTERN template bool                                                                             \
  smax::detail::loss::ce_index_panel<smax::detail::loss::tiled_panel_packets, T>(                  \
      const T*, Eigen::Index, T*, Eigen::Index, Eigen::Index, const Eigen::Index*, const bool*,    \
      const T*, const T*, const smax::detail::loss::index_panel_params<T>&,                        \
      smax::detail::acc_t<T>*);                                                                    \
  EXTERN template smax::detail::acc_t<T> smax::detail::loss::kl_sample<T>(                         \
      const T*, Eigen::Index, const T*, Eigen::Index, Eigen::Index, T, T*, Eigen::Index, T);       \
  EXTERN template smax::detail::acc_t<T> smax::detail::loss::bce_run<T>(                           \
      const T*, Eigen::Index, const T*, Eigen::Index, Eigen::Index,                                \
      const smax::detail::loss::strided_view<T>&, const smax::detail::loss::strided_view<T>&,      \
      Eigen::Index, Eigen::Index, const T*, Eigen::Index, T*, Eigen::Index, T, T*, Eigen::Index,   \
      bool);                                                                                       \
  EXTERN template void smax::detail::loss::sigmoid_run<false, T>(const T*, Eigen::Index, T*,       \
                                                                 Eigen::Index, Eigen::Index);      \
  EXTERN template void smax::detail::loss::sigmoid_run<true, T>(const T*, Eigen::Index, T*,        \
                                                                Eigen::Index, Eigen::Index);

#if defined(SMAX_TEST_EXTERN_KERNELS) && SMAX_TEST_EXTERN_KERNELS
SMAX_TEST_KERNEL_LIST(extern, float)
SMAX_TEST_KERNEL_LIST(extern, double)
#endif
