// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Rowwise softmax and friends over a batch: smax against a naive Eigen baseline, a
// hand-written Eigen loop, oneDNN, XNNPACK and libtorch (when found), and two roofline
// references (copy bandwidth, vectorised exp throughput) measured in the same run.
//
// Names read as <op>/<contender>/<rows>/<cols>: divide two items_per_second of the same
// op and shape to get a ratio. Every benchmark counts items in elements of the input, so
// items_per_second is elements per second. The rel_err counter is the largest error
// against a long double reference on a sample of rows (see check_error).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <benchmark/benchmark.h>
#include <Eigen/Core>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <smax/detail/kernels.hpp>  // exp_op only, for the roof/exp_smax diagnostic
#include <smax/softmax.hpp>

#ifdef SMAX_BENCH_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif
#ifdef SMAX_BENCH_HAVE_XNNPACK
#include <xnnpack.h>
#endif
#ifndef SMAX_BENCH_HAVE_TORCH
#define SMAX_BENCH_HAVE_TORCH 0
#endif
#if SMAX_BENCH_HAVE_TORCH
#include <ATen/Version.h>
#include <torch/torch.h>

#include "torch_peer.hpp"
#endif

namespace {

using Eigen::Index;
template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <typename T>
using ArrV = Eigen::Array<T, Eigen::Dynamic, 1>;

constexpr double kTemperature = 0.7;

// ---------------------------------------------------------------------------------------
// Inputs, cached per shape so that repetitions do not regenerate 16M-element tensors.

std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

template <typename T>
void fill_uniform(T* p, Index n, double lo, double hi, std::uint64_t seed) {
  for (Index i = 0; i < n; ++i) {
    const double u = static_cast<double>(splitmix64(seed) >> 11) * 0x1.0p-53;
    p[i] = static_cast<T>(lo + (hi - lo) * u);
  }
}

enum class Data { logits, dy, softmax_y, log_softmax_y, masked_logits, plus_inf_logits };

/// Row-major tensors shared by every contender: logits uniform in [-10, 10] (sane: the
/// unsafe formula does not overflow on them), upstream gradients in [-1, 1], and smax's
/// softmax / log_softmax of the logits as inputs to the backward passes.
template <typename T>
const RowMat<T>& data(Data kind, Index rows, Index cols) {
  static std::map<std::tuple<int, Index, Index>, std::unique_ptr<RowMat<T>>> cache;
  auto& slot = cache[{static_cast<int>(kind), rows, cols}];
  if (!slot) {
    auto m = std::make_unique<RowMat<T>>(rows, cols);
    switch (kind) {
      case Data::logits:
        fill_uniform(m->data(), m->size(), -10.0, 10.0, 1);
        break;
      case Data::dy:
        fill_uniform(m->data(), m->size(), -1.0, 1.0, 2);
        break;
      case Data::softmax_y:
        smax::softmax_into(*m, data<T>(Data::logits, rows, cols), smax::rowwise);
        break;
      case Data::log_softmax_y:
        smax::log_softmax_into(*m, data<T>(Data::logits, rows, cols), smax::rowwise);
        break;
      case Data::masked_logits: {
        // The logits with -inf masks: every 8th row (from row 5) entirely -inf (a padded
        // sample: NaN out), and elsewhere 1 entry in 4, chosen at random, -inf (padding
        // or attention masks), so that lane blocks always mix finite and -inf rows.
        *m = data<T>(Data::logits, rows, cols);
        std::uint64_t seed = 4;
        for (Index r = 0; r < rows; ++r) {
          for (Index c = 0; c < cols; ++c) {
            if (r % 8 == 5 || (c > 0 && splitmix64(seed) % 4 == 0)) {
              (*m)(r, c) = -std::numeric_limits<T>::infinity();
            }
          }
        }
        break;
      }
      case Data::plus_inf_logits: {
        // The logits with one +inf entry in every 16th row (from row 3): each 16-row group of
        // the short-row kernels holds a lane they must rewrite (a one-hot result).
        *m = data<T>(Data::logits, rows, cols);
        for (Index r = 3; r < rows; r += 16)
          (*m)(r, (r / 16) % cols) = std::numeric_limits<T>::infinity();
        break;
      }
    }
    slot = std::move(m);
  }
  return *slot;
}

/// The logits in Eigen's default column-major storage: each row is strided.
template <typename T>
const ColMat<T>& logits_colmajor(Index rows, Index cols, Data src = Data::logits) {
  static std::map<std::tuple<int, Index, Index>, std::unique_ptr<ColMat<T>>> cache;
  auto& slot = cache[{static_cast<int>(src), rows, cols}];
  if (!slot) slot = std::make_unique<ColMat<T>>(data<T>(src, rows, cols));
  return *slot;
}

/// The transposed logits, column-major: each column is one contiguous distribution.
template <typename T>
const ColMat<T>& logits_transposed(Index rows, Index cols) {
  static std::map<std::pair<Index, Index>, std::unique_ptr<ColMat<T>>> cache;
  auto& slot = cache[{rows, cols}];
  if (!slot) {
    slot = std::make_unique<ColMat<T>>(data<T>(Data::logits, rows, cols).transpose());
  }
  return *slot;
}

// ---------------------------------------------------------------------------------------
// Accuracy check against a long double reference on a sample of rows.

enum class Op { softmax, log_softmax, logsumexp, softmax_backward, log_softmax_backward };

using Wide = long double;

/// Per-row quantities of the reference, computed once per op, shape, temperature and type:
/// forward ops: the max and the sum of exponentials; backward: <y, dy> or sum(dy), and the
/// row's largest |gradient|. long double keeps the reference well below fp64 rounding even
/// for rows of 10^6 entries, where a double sum would itself be off by ~1e-13.
struct RowStats {
  Wide a = 0, b = 0, scale = 1;
};

std::vector<Index> sample_rows(Index rows) {
  std::vector<Index> sample;
  for (Index r = 0; r < std::min<Index>(rows, 8); ++r) sample.push_back(r);
  if (rows > 8) sample.push_back(rows - 1);
  return sample;
}

template <typename T>
Wide reference(Op op, Index r, Index c, Index rows, Index cols, Wide temperature,
               const RowStats& st, Data src = Data::logits) {
  switch (op) {
    case Op::softmax:
    case Op::log_softmax:
    case Op::logsumexp: {
      if (std::isinf(st.a) && st.a < 0) {  // a fully masked row: NaN, and logsumexp -inf
        return op == Op::logsumexp ? st.a : std::numeric_limits<Wide>::quiet_NaN();
      }
      if (std::isinf(st.a)) {  // one +inf entry: one-hot, and logsumexp +inf
        const bool hot = std::isinf(static_cast<Wide>(data<T>(src, rows, cols)(r, c)));
        if (op == Op::softmax) return hot ? 1 : 0;
        if (op == Op::log_softmax) return hot ? 0 : -st.a;
        return st.a;
      }
      const Wide d = (static_cast<Wide>(data<T>(src, rows, cols)(r, c)) - st.a) / temperature;
      if (op == Op::softmax) return std::exp(d) / st.b;
      if (op == Op::log_softmax) return d - std::log(st.b);
      return st.a + std::log(st.b);
    }
    case Op::softmax_backward: {
      const Wide y = data<T>(Data::softmax_y, rows, cols)(r, c);
      return y * (static_cast<Wide>(data<T>(Data::dy, rows, cols)(r, c)) - st.a) / temperature;
    }
    case Op::log_softmax_backward: {
      const Wide logy = data<T>(Data::log_softmax_y, rows, cols)(r, c);
      return (static_cast<Wide>(data<T>(Data::dy, rows, cols)(r, c)) - std::exp(logy) * st.a) /
             temperature;
    }
  }
  return 0;
}

template <typename T>
const std::vector<RowStats>& row_stats(Op op, Index rows, Index cols, Wide temperature,
                                       Data src = Data::logits) {
  static std::map<std::tuple<int, int, Index, Index, Wide>, std::vector<RowStats>> cache;
  auto& stats = cache[{static_cast<int>(op), static_cast<int>(src), rows, cols, temperature}];
  if (!stats.empty()) return stats;
  for (const Index r : sample_rows(rows)) {
    RowStats st;
    if (op == Op::softmax || op == Op::log_softmax || op == Op::logsumexp) {
      const RowMat<T>& z = data<T>(src, rows, cols);
      st.a = -INFINITY;
      for (Index c = 0; c < cols; ++c) st.a = std::max(st.a, static_cast<Wide>(z(r, c)));
      for (Index c = 0; c < cols && std::isfinite(st.a); ++c)
        st.b += std::exp((static_cast<Wide>(z(r, c)) - st.a) / temperature);
    } else {
      const RowMat<T>& dy = data<T>(Data::dy, rows, cols);
      const RowMat<T>& y = data<T>(Data::softmax_y, rows, cols);
      for (Index c = 0; c < cols; ++c) {
        st.a += op == Op::softmax_backward ? static_cast<Wide>(y(r, c)) * dy(r, c)
                                           : static_cast<Wide>(dy(r, c));
      }
      st.scale = 0;
      for (Index c = 0; c < cols; ++c) {
        st.scale =
            std::max(st.scale, std::abs(reference<T>(op, r, c, rows, cols, temperature, st)));
      }
      if (st.scale == 0) st.scale = 1;
    }
    stats.push_back(st);
  }
  return stats;
}

/// Largest error of a contender's output, read through get(r, c) (get(r, 0) for
/// logsumexp), on the first 8 rows and the last one (at most 2^16 evenly spaced entries
/// of each). softmax: relative error; log_softmax and logsumexp: error relative to
/// max(|ref|, 1) (smax's documented measure); backward: error relative to the row's
/// largest |gradient|.
template <typename T, typename Get>
double check_error(Op op, Index rows, Index cols, double temperature, Get get,
                   Data src = Data::logits) {
  const Wide t = temperature;
  const std::vector<RowStats>& stats = row_stats<T>(op, rows, cols, t, src);
  // Where the reference is 0, infinite or NaN (masked entries, fully masked rows) the
  // output must be exactly that: any other value counts as an infinite error.
  const auto exact_miss = [](Wide ref, Wide out) {
    if (std::isnan(ref)) return !std::isnan(out);
    return (ref == 0 || std::isinf(ref)) && out != ref;
  };
  const std::vector<Index> sample = sample_rows(rows);
  const Index step = std::max<Index>(1, cols >> 16);
  Wide worst = 0;
  for (std::size_t i = 0; i < sample.size(); ++i) {
    const Index r = sample[i];
    if (op == Op::logsumexp) {
      const Wide lse = reference<T>(op, r, 0, rows, cols, t, stats[i], src);
      if (exact_miss(lse, get(r, 0))) return INFINITY;
      if (std::isfinite(lse)) {
        worst = std::max(worst, std::abs(get(r, 0) - lse) / std::max(std::abs(lse), Wide(1)));
      }
      continue;
    }
    for (Index c = 0; c < cols; c += step) {
      const Wide ref = reference<T>(op, r, c, rows, cols, t, stats[i], src);
      if (exact_miss(ref, get(r, c))) return INFINITY;
      if (!std::isfinite(ref)) continue;
      const Wide err = std::abs(static_cast<Wide>(get(r, c)) - ref);
      Wide den = stats[i].scale;
      if (op == Op::softmax) den = std::abs(ref);
      if (op == Op::log_softmax) den = std::max(std::abs(ref), Wide(1));
      if (den > 0) worst = std::max(worst, err / den);
    }
  }
  return static_cast<double>(worst);
}

/// items = elements of the input; bytes = the minimum traffic (streams x elements).
template <typename T>
void finish(benchmark::State& st, Index rows, Index cols, int streams, double err) {
  const auto n = static_cast<std::int64_t>(st.iterations()) * rows * cols;
  st.SetItemsProcessed(n);
  st.SetBytesProcessed(n * streams * static_cast<std::int64_t>(sizeof(T)));
  st.counters["rel_err"] = err;
}

// ---------------------------------------------------------------------------------------
// softmax (and the temperature form when Temp is true)

template <typename T, bool Temp>
T temp_value() {
  return Temp ? static_cast<T>(kTemperature) : T(1);
}

template <typename T, bool Temp, Data Src = Data::logits>
void softmax_smax_rowmajor(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& z = data<T>(Src, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  const T t = temp_value<T, Temp>();
  for (auto _ : st) {
    smax::softmax_into(out, z, smax::rowwise, t);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2,
            check_error<T>(
                Op::softmax, rows, cols, t, [&](Index r, Index c) { return out(r, c); }, Src));
}

template <typename T, Data Src = Data::logits>
void softmax_smax_colmajor_strided(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const ColMat<T>& z = logits_colmajor<T>(rows, cols, Src);
  ColMat<T> out = ColMat<T>::Zero(rows, cols);
  for (auto _ : st) {
    smax::softmax_into(out, z, smax::rowwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2,
            check_error<T>(
                Op::softmax, rows, cols, 1, [&](Index r, Index c) { return out(r, c); }, Src));
}

/// colwise on a row-major matrix (the transpose of the logits): every column is strided,
/// the mirror image of smax_colmajor_strided.
template <typename T>
void softmax_smax_colwise_rowmajor(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T> z = logits_colmajor<T>(rows, cols).transpose();
  RowMat<T> out = RowMat<T>::Zero(cols, rows);
  for (auto _ : st) {
    smax::softmax_into(out, z, smax::colwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2, check_error<T>(Op::softmax, rows, cols, 1, [&](Index r, Index c) {
              return out(c, r);
            }));
}

template <typename T>
void softmax_smax_colwise(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const ColMat<T>& z = logits_transposed<T>(rows, cols);
  ColMat<T> out = ColMat<T>::Zero(cols, rows);
  for (auto _ : st) {
    smax::softmax_into(out, z, smax::colwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2, check_error<T>(Op::softmax, rows, cols, 1, [&](Index r, Index c) {
              return out(c, r);
            }));
}

/// The safe one-liner users write (max-shifted), on row-major or column-major storage.
/// The per-row max is kept in a preallocated vector so the loop does not allocate.
template <typename T, typename M, bool Temp>
void softmax_naive_safe_impl(benchmark::State& st, const M& zm) {
  const Index rows = st.range(0), cols = st.range(1);
  M out = M::Zero(rows, cols);
  ArrV<T> mx(rows), sum(rows);
  const auto z = zm.array();
  auto o = out.array();
  const T t = temp_value<T, Temp>();
  for (auto _ : st) {
    mx = z.rowwise().maxCoeff();
    if constexpr (Temp) {
      o = ((z.colwise() - mx) / t).exp();
    } else {
      o = (z.colwise() - mx).exp();
    }
    sum = o.rowwise().sum();
    o.colwise() /= sum;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2, check_error<T>(Op::softmax, rows, cols, t, [&](Index r, Index c) {
              return out(r, c);
            }));
}

template <typename T, bool Temp>
void softmax_naive_safe_rowmajor(benchmark::State& st) {
  softmax_naive_safe_impl<T, RowMat<T>, Temp>(st, data<T>(Data::logits, st.range(0), st.range(1)));
}

template <typename T>
void softmax_naive_safe_colmajor(benchmark::State& st) {
  softmax_naive_safe_impl<T, ColMat<T>, false>(st, logits_colmajor<T>(st.range(0), st.range(1)));
}

/// The unsafe formula exp(z) / sum(exp(z)): overflows for logits above ~88 (float).
template <typename T>
void softmax_naive_unsafe(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const auto z = data<T>(Data::logits, rows, cols).array();
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  ArrV<T> sum(rows);
  auto o = out.array();
  for (auto _ : st) {
    o = z.exp();
    sum = o.rowwise().sum();
    o.colwise() /= sum;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2, check_error<T>(Op::softmax, rows, cols, 1, [&](Index r, Index c) {
              return out(r, c);
            }));
}

/// A competent hand-written Eigen loop: one Map per row, max, shifted exp, normalise.
template <typename T, bool Temp>
void softmax_eigen_loop(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& z = data<T>(Data::logits, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  const T t = temp_value<T, Temp>();
  for (auto _ : st) {
    for (Index r = 0; r < rows; ++r) {
      const Eigen::Map<const ArrV<T>> zr(z.data() + r * cols, cols);
      Eigen::Map<ArrV<T>> o(out.data() + r * cols, cols);
      const T m = zr.maxCoeff();
      if constexpr (Temp) {
        o = ((zr - m) / t).exp();
      } else {
        o = (zr - m).exp();
      }
      o /= o.sum();
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2, check_error<T>(Op::softmax, rows, cols, t, [&](Index r, Index c) {
              return out(r, c);
            }));
}

/// The vector API on a fixed-size Vector3 (no heap, no batch).
template <typename T>
void softmax_smax_fixed3(benchmark::State& st) {
  const RowMat<T>& z = data<T>(Data::logits, 1, 3);
  const Eigen::Matrix<T, 3, 1> v = z.row(0).transpose();
  Eigen::Matrix<T, 3, 1> out = Eigen::Matrix<T, 3, 1>::Zero();
  for (auto _ : st) {
    benchmark::DoNotOptimize(v.data());
    smax::softmax_into(out, v);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, 1, 3, 2,
            check_error<T>(Op::softmax, 1, 3, 1, [&](Index, Index c) { return out(c); }));
}

// ---------------------------------------------------------------------------------------
// log_softmax and logsumexp

template <typename T, Data Src = Data::logits>
void log_softmax_smax_rowmajor(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& z = data<T>(Src, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  for (auto _ : st) {
    smax::log_softmax_into(out, z, smax::rowwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2,
            check_error<T>(
                Op::log_softmax, rows, cols, 1, [&](Index r, Index c) { return out(r, c); }, Src));
}

template <typename T, Data Src = Data::logits>
void log_softmax_smax_colmajor_strided(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const ColMat<T>& z = logits_colmajor<T>(rows, cols, Src);
  ColMat<T> out = ColMat<T>::Zero(rows, cols);
  for (auto _ : st) {
    smax::log_softmax_into(out, z, smax::rowwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2,
            check_error<T>(
                Op::log_softmax, rows, cols, 1, [&](Index r, Index c) { return out(r, c); }, Src));
}

/// Safe one-liner: z - (max + log(sum(exp(z - max)))).
template <typename T>
void log_softmax_naive_safe(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const auto z = data<T>(Data::logits, rows, cols).array();
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  ArrV<T> mx(rows), lse(rows);
  auto o = out.array();
  for (auto _ : st) {
    mx = z.rowwise().maxCoeff();
    lse = mx + (z.colwise() - mx).exp().rowwise().sum().log();
    o = z.colwise() - lse;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(
      st, rows, cols, 2,
      check_error<T>(Op::log_softmax, rows, cols, 1, [&](Index r, Index c) { return out(r, c); }));
}

template <typename T>
void log_softmax_eigen_loop(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& z = data<T>(Data::logits, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  for (auto _ : st) {
    for (Index r = 0; r < rows; ++r) {
      const Eigen::Map<const ArrV<T>> zr(z.data() + r * cols, cols);
      Eigen::Map<ArrV<T>> o(out.data() + r * cols, cols);
      const T m = zr.maxCoeff();
      const T lse = m + std::log((zr - m).exp().sum());
      o = zr - lse;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(
      st, rows, cols, 2,
      check_error<T>(Op::log_softmax, rows, cols, 1, [&](Index r, Index c) { return out(r, c); }));
}

template <typename T, Data Src = Data::logits>
void logsumexp_smax_rowmajor(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& z = data<T>(Src, rows, cols);
  Vec<T> out = Vec<T>::Zero(rows);
  for (auto _ : st) {
    smax::logsumexp_into(out, z, smax::rowwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 1,
            check_error<T>(
                Op::logsumexp, rows, cols, 1, [&](Index r, Index) { return out(r); }, Src));
}

template <typename T, Data Src = Data::logits>
void logsumexp_smax_colmajor_strided(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const ColMat<T>& z = logits_colmajor<T>(rows, cols, Src);
  Vec<T> out = Vec<T>::Zero(rows);
  for (auto _ : st) {
    smax::logsumexp_into(out, z, smax::rowwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 1,
            check_error<T>(
                Op::logsumexp, rows, cols, 1, [&](Index r, Index) { return out(r); }, Src));
}

template <typename T>
void logsumexp_naive_safe(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const auto z = data<T>(Data::logits, rows, cols).array();
  ArrV<T> mx(rows), out = ArrV<T>::Zero(rows);
  for (auto _ : st) {
    mx = z.rowwise().maxCoeff();
    out = mx + (z.colwise() - mx).exp().rowwise().sum().log();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 1,
            check_error<T>(Op::logsumexp, rows, cols, 1, [&](Index r, Index) { return out(r); }));
}

template <typename T>
void logsumexp_eigen_loop(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& z = data<T>(Data::logits, rows, cols);
  ArrV<T> out = ArrV<T>::Zero(rows);
  for (auto _ : st) {
    for (Index r = 0; r < rows; ++r) {
      const Eigen::Map<const ArrV<T>> zr(z.data() + r * cols, cols);
      const T m = zr.maxCoeff();
      out(r) = m + std::log((zr - m).exp().sum());
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 1,
            check_error<T>(Op::logsumexp, rows, cols, 1, [&](Index r, Index) { return out(r); }));
}

// ---------------------------------------------------------------------------------------
// backward passes

template <typename T>
void softmax_backward_smax_rowmajor(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& y = data<T>(Data::softmax_y, rows, cols);
  const RowMat<T>& dy = data<T>(Data::dy, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  for (auto _ : st) {
    smax::softmax_backward_into(out, y, dy, smax::rowwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 3,
            check_error<T>(Op::softmax_backward, rows, cols, 1,
                           [&](Index r, Index c) { return out(r, c); }));
}

/// Rowwise on Eigen's default column-major storage: each distribution is strided.
template <typename T, bool Log>
void backward_smax_colmajor_strided(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const ColMat<T>& y = logits_colmajor<T>(rows, cols, Log ? Data::log_softmax_y : Data::softmax_y);
  const ColMat<T>& dy = logits_colmajor<T>(rows, cols, Data::dy);
  ColMat<T> out = ColMat<T>::Zero(rows, cols);
  for (auto _ : st) {
    if constexpr (Log) {
      smax::log_softmax_backward_into(out, y, dy, smax::rowwise);
    } else {
      smax::softmax_backward_into(out, y, dy, smax::rowwise);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 3,
            check_error<T>(Log ? Op::log_softmax_backward : Op::softmax_backward, rows, cols, 1,
                           [&](Index r, Index c) { return out(r, c); }));
}

template <typename T>
void softmax_backward_naive(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const auto y = data<T>(Data::softmax_y, rows, cols).array();
  const auto dy = data<T>(Data::dy, rows, cols).array();
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  ArrV<T> g(rows);
  auto o = out.array();
  for (auto _ : st) {
    g = (y * dy).rowwise().sum();
    o = y * (dy.colwise() - g);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 3,
            check_error<T>(Op::softmax_backward, rows, cols, 1,
                           [&](Index r, Index c) { return out(r, c); }));
}

template <typename T>
void log_softmax_backward_smax_rowmajor(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& logy = data<T>(Data::log_softmax_y, rows, cols);
  const RowMat<T>& dy = data<T>(Data::dy, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  for (auto _ : st) {
    smax::log_softmax_backward_into(out, logy, dy, smax::rowwise);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 3,
            check_error<T>(Op::log_softmax_backward, rows, cols, 1,
                           [&](Index r, Index c) { return out(r, c); }));
}

template <typename T>
void log_softmax_backward_naive(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const auto logy = data<T>(Data::log_softmax_y, rows, cols).array();
  const auto dy = data<T>(Data::dy, rows, cols).array();
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  ArrV<T> s(rows);
  auto o = out.array();
  for (auto _ : st) {
    s = dy.rowwise().sum();
    o = dy - logy.exp().colwise() * s;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 3,
            check_error<T>(Op::log_softmax_backward, rows, cols, 1,
                           [&](Index r, Index c) { return out(r, c); }));
}

// ---------------------------------------------------------------------------------------
// Roofline references

/// Copy bandwidth: memcpy of the bytes a forward pass must move at least (read z, write
/// out), counted in elements so it reads as the ceiling of a memory-bound softmax.
template <typename T>
void roof_memcpy(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& z = data<T>(Data::logits, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  const std::size_t bytes = static_cast<std::size_t>(z.size()) * sizeof(T);
  for (auto _ : st) {
    std::memcpy(out.data(), z.data(), bytes);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 2, 0);
}

/// Two reads and a write (out = a + b): the ceiling of a memory-bound backward pass.
template <typename T>
void roof_add3(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const auto a = data<T>(Data::softmax_y, rows, cols).array();
  const auto b = data<T>(Data::dy, rows, cols).array();
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  auto o = out.array();
  for (auto _ : st) {
    o = a + b;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, 3, 0);
}

#if defined(__SSE2__)
/// The copy roofs with non-temporal stores, which skip reading each output line first (smax
/// streams outputs of 16 MiB and more): the roof of a shape is the faster of the two.
EIGEN_ALWAYS_INLINE void stream4(float* to, __m128 v) { _mm_stream_ps(to, v); }
EIGEN_ALWAYS_INLINE void stream4(double* to, __m128d v) { _mm_stream_pd(to, v); }
EIGEN_ALWAYS_INLINE __m128 load4(const float* p) { return _mm_loadu_ps(p); }
EIGEN_ALWAYS_INLINE __m128d load4(const double* p) { return _mm_loadu_pd(p); }

template <typename T, bool Add>
void roof_stream(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<T>& a = data<T>(Add ? Data::softmax_y : Data::logits, rows, cols);
  const RowMat<T>& b = data<T>(Data::dy, rows, cols);
  RowMat<T> out = RowMat<T>::Zero(rows, cols);
  constexpr Index w = 16 / sizeof(T);
  const Index n = out.size() / w * w;  // Eigen's storage is 16-byte aligned
  for (auto _ : st) {
    for (Index i = 0; i < n; i += w) {
      const auto v = load4(a.data() + i);
      if constexpr (Add) {
        if constexpr (std::is_same_v<T, float>) {
          stream4(out.data() + i, _mm_add_ps(v, load4(b.data() + i)));
        } else {
          stream4(out.data() + i, _mm_add_pd(v, load4(b.data() + i)));
        }
      } else {
        stream4(out.data() + i, v);
      }
    }
    for (Index i = n; i < out.size(); ++i) out.data()[i] = a.data()[i] + (Add ? b.data()[i] : T(0));
    _mm_sfence();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<T>(st, rows, cols, Add ? 3 : 2, 0);
}
#endif

/// Vectorised exp throughput on cache-resident data: 4 KiB of float (or 8 KiB of double),
/// arguments in [-20, 0] like the shifted logits of a softmax.
template <typename T, bool SmaxExp>
void roof_exp(benchmark::State& st) {
  const Index n = st.range(0);
  ArrV<T> a(n), out = ArrV<T>::Zero(n);
  fill_uniform(a.data(), n, -20.0, 0.0, 3);
  for (auto _ : st) {
    if constexpr (SmaxExp) {
      out = a.unaryExpr(smax::detail::exp_op<T>());
    } else {
      out = a.exp();
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations()) * n);
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations()) * n * 2 *
                       static_cast<std::int64_t>(sizeof(T)));
}

// ---------------------------------------------------------------------------------------
// oneDNN (fp32 only; plain row-major "ab" layout, or "ba" for strided rows)

#ifdef SMAX_BENCH_HAVE_DNNL
dnnl::engine& dnnl_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::memory::desc dnnl_desc(Index rows, Index cols, bool colmajor) {
  using md = dnnl::memory;
  return md::desc({rows, cols}, md::data_type::f32,
                  colmajor ? md::format_tag::ba : md::format_tag::ab);
}

template <bool Log, bool Colmajor>
void dnnl_forward(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const float* zp = Colmajor ? logits_colmajor<float>(rows, cols).data()
                             : data<float>(Data::logits, rows, cols).data();
  RowMat<float> out = RowMat<float>::Zero(rows, cols);  // same storage as ColMat for ba
  dnnl::engine& eng = dnnl_engine();
  dnnl::stream strm(eng);
  const auto md = dnnl_desc(rows, cols, Colmajor);
  const dnnl::softmax_v2_forward::desc d(
      dnnl::prop_kind::forward_inference,
      Log ? dnnl::algorithm::softmax_log : dnnl::algorithm::softmax_accurate, md, md, 1);
  const dnnl::softmax_v2_forward::primitive_desc pd(d, eng);
  const dnnl::softmax_v2_forward prim(pd);
  dnnl::memory src(md, eng, const_cast<float*>(zp));
  dnnl::memory dst(md, eng, out.data());
  const std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
  st.SetLabel(pd.impl_info_str());
  for (auto _ : st) {
    prim.execute(strm, args);
    strm.wait();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const auto get = [&](Index r, Index c) {
    return Colmajor ? out.data()[c * rows + r] : out(r, c);
  };
  finish<float>(st, rows, cols, 2,
                check_error<float>(Log ? Op::log_softmax : Op::softmax, rows, cols, 1, get));
}

template <bool Log>
void dnnl_backward(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<float>& y = data<float>(Log ? Data::log_softmax_y : Data::softmax_y, rows, cols);
  const RowMat<float>& dy = data<float>(Data::dy, rows, cols);
  RowMat<float> out = RowMat<float>::Zero(rows, cols);
  dnnl::engine& eng = dnnl_engine();
  dnnl::stream strm(eng);
  const auto md = dnnl_desc(rows, cols, false);
  const auto alg = Log ? dnnl::algorithm::softmax_log : dnnl::algorithm::softmax_accurate;
  const dnnl::softmax_v2_forward::primitive_desc hint(
      dnnl::softmax_v2_forward::desc(dnnl::prop_kind::forward_training, alg, md, md, 1), eng);
  const dnnl::softmax_v2_backward::primitive_desc pd(
      dnnl::softmax_v2_backward::desc(alg, md, md, md, 1), eng, hint);
  const dnnl::softmax_v2_backward prim(pd);
  dnnl::memory ym(md, eng, const_cast<float*>(y.data()));
  dnnl::memory dym(md, eng, const_cast<float*>(dy.data()));
  dnnl::memory om(md, eng, out.data());
  const std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_DST, ym}, {DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_DIFF_SRC, om}};
  st.SetLabel(pd.impl_info_str());
  for (auto _ : st) {
    prim.execute(strm, args);
    strm.wait();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<float>(st, rows, cols, 3,
                check_error<float>(Log ? Op::log_softmax_backward : Op::softmax_backward, rows,
                                   cols, 1, [&](Index r, Index c) { return out(r, c); }));
}
#endif

// ---------------------------------------------------------------------------------------
// XNNPACK (fp32 softmax only; its 2022 operator set has no log-softmax)

#ifdef SMAX_BENCH_HAVE_XNNPACK
void xnnpack_softmax(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<float>& z = data<float>(Data::logits, rows, cols);
  RowMat<float> out = RowMat<float>::Zero(rows, cols);
  xnn_operator_t op = nullptr;
  const auto c = static_cast<std::size_t>(cols);
  if (xnn_initialize(nullptr) != xnn_status_success ||
      xnn_create_softmax_nc_f32(c, c, c, 0, &op) != xnn_status_success ||
      xnn_setup_softmax_nc_f32(op, static_cast<std::size_t>(rows), z.data(), out.data(), nullptr) !=
          xnn_status_success) {
    st.SkipWithError("XNNPACK softmax setup failed");
    if (op != nullptr) xnn_delete_operator(op);
    return;
  }
  for (auto _ : st) {
    xnn_run_operator(op, nullptr);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  xnn_delete_operator(op);
  finish<float>(
      st, rows, cols, 2,
      check_error<float>(Op::softmax, rows, cols, 1, [&](Index r, Index k) { return out(r, k); }));
}
#endif

// ---------------------------------------------------------------------------------------
// libtorch (fp32 softmax and log_softmax over dim 1 of a row-major (rows, cols) tensor that
// wraps the same logits; the output is preallocated and written by the _out kernels; one
// intra-op thread)

#if SMAX_BENCH_HAVE_TORCH
template <bool Log>
void torch_forward(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const RowMat<float>& z = data<float>(Data::logits, rows, cols);
  RowMat<float> out = RowMat<float>::Zero(rows, cols);
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  const torch::Tensor x =
      torch::from_blob(const_cast<float*>(z.data()), {rows, cols}, torch::kFloat32);
  torch::Tensor y = torch::from_blob(out.data(), {rows, cols}, torch::kFloat32);
  for (auto _ : st) {
    if constexpr (Log) {
      at::_log_softmax_out(y, x, 1, false);
    } else {
      at::_softmax_out(y, x, 1, false);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  finish<float>(st, rows, cols, 2,
                check_error<float>(Log ? Op::log_softmax : Op::softmax, rows, cols, 1,
                                   [&](Index r, Index c) { return out(r, c); }));
}

#endif

// ---------------------------------------------------------------------------------------
// Registration

struct Shape {
  Index rows, cols;
};

/// Rows x cols: classifier heads, a 1000-class layer, a 32k vocabulary, one huge row set.
const std::vector<Shape> kShapes = {{4096, 10}, {1024, 1000}, {256, 32000}, {16, 1048576}};
const std::vector<Shape> kTiny = {{1, 3}};
/// Short rows (a vector register or two wide): the lane kernels' territory.
const std::vector<Shape> kShort = {{4096, 3}, {4096, 10}, {4096, 17}, {4096, 32}};
/// Inputs with -inf masks (Data::masked_logits): short rows, a 1000-class layer, and a
/// square matrix of attention scores.
const std::vector<Shape> kMasked = {{4096, 10}, {4096, 32}, {1024, 1000}, {2048, 2048}};

void add(const std::string& name, void (*fn)(benchmark::State&), const std::vector<Shape>& shapes) {
  for (const Shape& s : shapes) {
    benchmark::RegisterBenchmark(name.c_str(), fn)
        ->Args({s.rows, s.cols})
        ->Unit(benchmark::kMicrosecond);
  }
}

#ifdef _OPENMP
/// Each shape at every thread count t from 1 to omp_get_num_procs(), named <name>_t<t>.
void add_mt(const std::string& name, void (*fn)(benchmark::State&),
            const std::vector<Shape>& shapes) {
  for (const Shape& s : shapes) {
    for (int t = 1; t <= omp_get_num_procs(); ++t) {
      benchmark::RegisterBenchmark((name + "_t" + std::to_string(t)).c_str(),
                                   [fn, t](benchmark::State& st) {
                                     const int before = Eigen::nbThreads();
                                     Eigen::setNbThreads(t);
                                     fn(st);
                                     Eigen::setNbThreads(before);
                                   })
          ->Args({s.rows, s.cols})
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}
#endif

std::vector<Shape> join(std::vector<Shape> a, const std::vector<Shape>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void register_all() {
  const auto all = join(kShapes, kTiny);

  // fp32 softmax: every contender.
  add("softmax/smax_rowmajor", softmax_smax_rowmajor<float, false>, all);
  add("softmax/smax_colmajor_strided", softmax_smax_colmajor_strided<float>, all);
  add("softmax/smax_colwise", softmax_smax_colwise<float>, kShapes);
  add("softmax/smax_fixed3", softmax_smax_fixed3<float>, kTiny);
  add("softmax/naive_eigen_safe", softmax_naive_safe_rowmajor<float, false>, all);
  add("softmax/naive_eigen_safe_colmajor", softmax_naive_safe_colmajor<float>, kShapes);
  add("softmax/naive_eigen_unsafe", softmax_naive_unsafe<float>, kShapes);
  add("softmax/eigen_loop", softmax_eigen_loop<float, false>, all);
#ifdef SMAX_BENCH_HAVE_DNNL
  add("softmax/onednn", dnnl_forward<false, false>, all);
  // oneDNN 2.x has no JIT kernel for a non-dense softmax axis; its reference path runs at
  // ~20 M elements/s, so the two large shapes would add a minute for no information.
  add("softmax/onednn_colmajor_strided", dnnl_forward<false, true>, {{4096, 10}, {1024, 1000}});
#endif
#ifdef SMAX_BENCH_HAVE_XNNPACK
  add("softmax/xnnpack", xnnpack_softmax, all);
#endif
#if SMAX_BENCH_HAVE_TORCH
  add("softmax/torch", torch_forward<false>, all);
#endif

  add("softmax_t0.7/smax_rowmajor", softmax_smax_rowmajor<float, true>, kShapes);
  add("softmax_t0.7/naive_eigen_safe", softmax_naive_safe_rowmajor<float, true>, kShapes);
  add("softmax_t0.7/eigen_loop", softmax_eigen_loop<float, true>, kShapes);

  add("log_softmax/smax_rowmajor", log_softmax_smax_rowmajor<float>, kShapes);
  add("log_softmax/smax_colmajor_strided", log_softmax_smax_colmajor_strided<float>, kShapes);
  add("log_softmax/naive_eigen_safe", log_softmax_naive_safe<float>, kShapes);
  add("log_softmax/eigen_loop", log_softmax_eigen_loop<float>, kShapes);
#ifdef SMAX_BENCH_HAVE_DNNL
  add("log_softmax/onednn", dnnl_forward<true, false>, kShapes);
#endif
#if SMAX_BENCH_HAVE_TORCH
  add("log_softmax/torch", torch_forward<true>, kShapes);
#endif

  add("logsumexp/smax_rowmajor", logsumexp_smax_rowmajor<float>, kShapes);
  add("logsumexp/smax_colmajor_strided", logsumexp_smax_colmajor_strided<float>, kShapes);
  add("logsumexp/naive_eigen_safe", logsumexp_naive_safe<float>, kShapes);
  add("logsumexp/eigen_loop", logsumexp_eigen_loop<float>, kShapes);

  add("softmax_backward/smax_rowmajor", softmax_backward_smax_rowmajor<float>, kShapes);
  add("softmax_backward/naive_eigen", softmax_backward_naive<float>, kShapes);
  add("softmax_backward/smax_colmajor_strided", backward_smax_colmajor_strided<float, false>,
      kShapes);
  add("log_softmax_backward/smax_colmajor_strided", backward_smax_colmajor_strided<float, true>,
      kShapes);
  add("log_softmax_backward/smax_rowmajor", log_softmax_backward_smax_rowmajor<float>, kShapes);
  add("log_softmax_backward/naive_eigen", log_softmax_backward_naive<float>, kShapes);
#ifdef SMAX_BENCH_HAVE_DNNL
  add("softmax_backward/onednn", dnnl_backward<false>, kShapes);
  add("log_softmax_backward/onednn", dnnl_backward<true>, kShapes);
#endif

  // fp64 subset (oneDNN and XNNPACK have no f64 softmax).
  add("softmax_f64/smax_rowmajor", softmax_smax_rowmajor<double, false>, kShapes);
  add("softmax_f64/smax_colmajor_strided", softmax_smax_colmajor_strided<double>, kShapes);
  add("softmax_f64/naive_eigen_safe", softmax_naive_safe_rowmajor<double, false>, kShapes);
  add("softmax_f64/eigen_loop", softmax_eigen_loop<double, false>, kShapes);
  add("log_softmax_f64/smax_rowmajor", log_softmax_smax_rowmajor<double>, kShapes);
  add("log_softmax_f64/naive_eigen_safe", log_softmax_naive_safe<double>, kShapes);
  add("log_softmax_f64/eigen_loop", log_softmax_eigen_loop<double>, kShapes);
  add("logsumexp_f64/smax_rowmajor", logsumexp_smax_rowmajor<double>, kShapes);
  add("logsumexp_f64/smax_colmajor_strided", logsumexp_smax_colmajor_strided<double>, kShapes);
  add("logsumexp_f64/eigen_loop", logsumexp_eigen_loop<double>, kShapes);
  add("softmax_backward_f64/smax_rowmajor", softmax_backward_smax_rowmajor<double>, kShapes);
  add("softmax_backward_f64/naive_eigen", softmax_backward_naive<double>, kShapes);
  add("softmax_backward_f64/smax_colmajor_strided", backward_smax_colmajor_strided<double, false>,
      kShapes);
  add("log_softmax_backward_f64/smax_colmajor_strided",
      backward_smax_colmajor_strided<double, true>, kShapes);
  add("log_softmax_backward_f64/smax_rowmajor", log_softmax_backward_smax_rowmajor<double>,
      kShapes);
  add("log_softmax_backward_f64/naive_eigen", log_softmax_backward_naive<double>, kShapes);

  // Short rows in both layouts, every forward op (kShort adds 3, 17 and 32 columns to
  // kShapes' 10), fp32 and fp64.
  add("short/softmax/smax_rowmajor", softmax_smax_rowmajor<float, false>, kShort);
  add("short/softmax/smax_colmajor_strided", softmax_smax_colmajor_strided<float>, kShort);
  add("short/softmax_t0.7/smax_rowmajor", softmax_smax_rowmajor<float, true>, kShort);
  add("short/log_softmax/smax_rowmajor", log_softmax_smax_rowmajor<float>, kShort);
  add("short/log_softmax/smax_colmajor_strided", log_softmax_smax_colmajor_strided<float>, kShort);
  add("short/logsumexp/smax_rowmajor", logsumexp_smax_rowmajor<float>, kShort);
  add("short/logsumexp/smax_colmajor_strided", logsumexp_smax_colmajor_strided<float>, kShort);
  add("short/softmax/eigen_loop", softmax_eigen_loop<float, false>, kShort);
#ifdef SMAX_BENCH_HAVE_DNNL
  add("short/softmax/onednn", dnnl_forward<false, false>, kShort);
  add("short/log_softmax/onednn", dnnl_forward<true, false>, kShort);
#endif
#if SMAX_BENCH_HAVE_TORCH
  add("short/softmax/torch", torch_forward<false>, kShort);
  add("short/log_softmax/torch", torch_forward<true>, kShort);
#endif
  add("short/softmax_f64/smax_rowmajor", softmax_smax_rowmajor<double, false>, kShort);
  add("short/softmax_f64/smax_colmajor_strided", softmax_smax_colmajor_strided<double>, kShort);
  add("short/log_softmax_f64/smax_rowmajor", log_softmax_smax_rowmajor<double>, kShort);
  add("short/logsumexp_f64/smax_rowmajor", logsumexp_smax_rowmajor<double>, kShort);
  // Backward passes of short rows (the lane tiles of backward_short_rows; float softmax
  // stays one row at a time).
  add("short/softmax_backward/smax_rowmajor", softmax_backward_smax_rowmajor<float>, kShort);
  add("short/log_softmax_backward/smax_rowmajor", log_softmax_backward_smax_rowmajor<float>,
      kShort);
  add("short/softmax_backward_f64/smax_rowmajor", softmax_backward_smax_rowmajor<double>, kShort);
  add("short/log_softmax_backward_f64/smax_rowmajor", log_softmax_backward_smax_rowmajor<double>,
      kShort);
#ifdef SMAX_BENCH_HAVE_DNNL
  add("short/softmax_backward/onednn", dnnl_backward<false>, kShort);
  add("short/log_softmax_backward/onednn", dnnl_backward<true>, kShort);
#endif

  // -inf masks (Data::masked_logits: fully masked rows and 1 entry in 4 masked) against
  // the same calls on the unmasked logits, both layouts.
  const auto masked = Data::masked_logits;
  add("masked/softmax/smax_rowmajor", softmax_smax_rowmajor<float, false, masked>, kMasked);
  add("masked/softmax/smax_colmajor_strided", softmax_smax_colmajor_strided<float, masked>,
      kMasked);
  add("masked/log_softmax/smax_rowmajor", log_softmax_smax_rowmajor<float, masked>, kMasked);
  add("masked/log_softmax/smax_colmajor_strided", log_softmax_smax_colmajor_strided<float, masked>,
      kMasked);
  add("masked/logsumexp/smax_rowmajor", logsumexp_smax_rowmajor<float, masked>, kMasked);
  add("masked/logsumexp/smax_colmajor_strided", logsumexp_smax_colmajor_strided<float, masked>,
      kMasked);
  add("masked/softmax_f64/smax_colmajor_strided", softmax_smax_colmajor_strided<double, masked>,
      kMasked);
  // A +inf entry in every 16th row (Data::plus_inf_logits): short rows keep their register
  // kernels, which rewrite such lanes as the lane tile does.
  const auto plus_inf = Data::plus_inf_logits;
  add("plus_inf/softmax/smax_rowmajor", softmax_smax_rowmajor<float, false, plus_inf>, kMasked);
  add("plus_inf/softmax/smax_colmajor_strided", softmax_smax_colmajor_strided<float, plus_inf>,
      kMasked);
  add("plus_inf/logsumexp/smax_rowmajor", logsumexp_smax_rowmajor<float, plus_inf>, kMasked);
  add("plus_inf/softmax_f64/smax_colmajor_strided", softmax_smax_colmajor_strided<double, plus_inf>,
      kMasked);
  add("unmasked/softmax/smax_rowmajor", softmax_smax_rowmajor<float, false>, kMasked);
  add("unmasked/softmax/smax_colmajor_strided", softmax_smax_colmajor_strided<float>, kMasked);
  add("unmasked/softmax_f64/smax_colmajor_strided", softmax_smax_colmajor_strided<double>, kMasked);

  // Strided distributions with long rows: rowwise on column-major (above: *_colmajor_strided
  // on kShapes) and colwise on row-major.
  add("softmax/smax_colwise_rowmajor", softmax_smax_colwise_rowmajor<float>, kShapes);
  add("softmax_f64/smax_colwise_rowmajor", softmax_smax_colwise_rowmajor<double>, kShapes);
  add("log_softmax_f64/smax_colmajor_strided", log_softmax_smax_colmajor_strided<double>, kShapes);

#ifdef _OPENMP
  // Threads (built with SMAX_BENCH_OPENMP): the same calls with Eigen::setNbThreads(n),
  // wall-clock time. Only meaningful on otherwise idle cores.
  // 4096x10: small enough that smax stays on one thread (no slowdown); 64x1048576: the
  // issue's 2-core target (>= 1.7x).
  const std::vector<Shape> big = {
      {4096, 10}, {1024, 1000}, {256, 32000}, {16, 1048576}, {64, 1048576}};
  add_mt("softmax_mt/smax_rowmajor", softmax_smax_rowmajor<float, false>, big);
  add_mt("log_softmax_mt/smax_rowmajor", log_softmax_smax_rowmajor<float>, big);
  add_mt("softmax_backward_mt/smax_rowmajor", softmax_backward_smax_rowmajor<float>, big);
#endif

  // Roofs.
  add("roof/memcpy", roof_memcpy<float>, kShapes);
  add("roof/add3", roof_add3<float>, kShapes);
  add("roof_f64/memcpy", roof_memcpy<double>, kShapes);
  add("roof_f64/add3", roof_add3<double>, kShapes);
#if defined(__SSE2__)
  add("roof/memcpy_nt", roof_stream<float, false>, kShapes);
  add("roof/add3_nt", roof_stream<float, true>, kShapes);
  add("roof_f64/memcpy_nt", roof_stream<double, false>, kShapes);
  add("roof_f64/add3_nt", roof_stream<double, true>, kShapes);
#endif
  const std::pair<const char*, void (*)(benchmark::State&)> exps[] = {
      {"roof/exp_eigen", roof_exp<float, false>},
      {"roof/exp_smax", roof_exp<float, true>},
      {"roof_f64/exp_eigen", roof_exp<double, false>},
      {"roof_f64/exp_smax", roof_exp<double, true>}};
  for (const auto& [name, fn] : exps) {
    benchmark::RegisterBenchmark(name, fn)->Arg(1024);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#ifdef SMAX_BENCH_HAVE_DNNL
  const dnnl_version_t* v = dnnl_version();
  benchmark::AddCustomContext("onednn", std::to_string(v->major) + "." + std::to_string(v->minor) +
                                            "." + std::to_string(v->patch));
  // Times are CPU times of the calling thread, so oneDNN must not fan out to OpenMP threads.
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (omp == nullptr || std::string(omp) != "1") {
    std::cerr << "warning: set OMP_NUM_THREADS=1 (and pin with taskset) so oneDNN runs on the "
                 "benchmark thread alone\n";
  }
#endif
#if SMAX_BENCH_HAVE_TORCH
  at::set_num_threads(1);
  benchmark::AddCustomContext("torch", TORCH_VERSION);
  benchmark::AddCustomContext("torch_cpu_capability", smax_bench::torch_cpu_capability());
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
