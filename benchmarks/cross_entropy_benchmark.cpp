// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Softmax cross-entropy over a batch (fp32, class-index targets, batch = rows, mean
// reduction): smax against a competent hand-written Eigen loop and, when found, libtorch
// (torch::nn::functional::cross_entropy, one intra-op thread).
//
//   cross_entropy/<contender>/<rows>/<cols>            the loss alone
//   cross_entropy_with_grad/<contender>/<rows>/<cols>  the loss and d loss / d logits
//
// Contenders: smax_rowmajor (smax::cross_entropy, and smax::cross_entropy_with_grad_into
// into a preallocated gradient), eigen_loop (per row: max, exp-sum, log; gradient =
// softmax - onehot, divided by the batch size), torch (forward under NoGradGuard; forward +
// torch::autograd::grad, which allocates the gradient as a training step does). The logits
// tensor wraps the same row-major data (torch::from_blob, no copy).
//
// Before timing, each peer's loss is checked once against smax's (relative difference
// < 1e-4, counter rel_diff) and, for the gradient, its largest difference relative to the
// largest |gradient| (counter grad_diff, also < 1e-4); a peer that fails is skipped with an
// error. items_per_second counts logits (elements); bytes_per_second the minimum traffic:
// one read of the logits for the loss, plus one write of the gradient.
//
// Run pinned, with medians: taskset -c 1 ./cross_entropy_benchmark
//   --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// libtorch: the context line torch_cpu_capability is the ISA ATen dispatches to (1.13
// picks AVX2 on an AVX-512 machine unless ATEN_CPU_CAPABILITY=avx512 is set; measure both,
// neither wins everywhere). Its backward allocates fresh tensors on every call, and glibc
// serves large ones with mmap, so every iteration pays page faults; the figures in
// README.md were taken with MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and
// MALLOC_TOP_PAD_ raised (see there), which smax and the Eigen loop do not notice (they
// allocate nothing while timed).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <smax/cross_entropy.hpp>

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
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ArrV = Eigen::Array<float, Eigen::Dynamic, 1>;

constexpr double kTolerance = 1e-4;

std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// Logits uniform in [-10, 10], targets uniform in [0, cols), and smax's loss and gradient
/// (the reference every peer is checked against), built once per shape.
struct Problem {
  RowMat logits;
  std::vector<std::int64_t> targets;
  float loss = 0;
  RowMat grad;
};

const Problem& problem(Index rows, Index cols) {
  static std::map<std::pair<Index, Index>, std::unique_ptr<Problem>> cache;
  auto& slot = cache[{rows, cols}];
  if (!slot) {
    auto p = std::make_unique<Problem>();
    p->logits.resize(rows, cols);
    std::uint64_t seed = 1;
    for (Index i = 0; i < p->logits.size(); ++i) {
      const double u = static_cast<double>(splitmix64(seed) >> 11) * 0x1.0p-53;
      p->logits.data()[i] = static_cast<float>(-10.0 + 20.0 * u);
    }
    p->targets.resize(static_cast<std::size_t>(rows));
    for (auto& t : p->targets) {
      t = static_cast<std::int64_t>(splitmix64(seed) % static_cast<std::uint64_t>(cols));
    }
    p->grad.resize(rows, cols);
    p->loss = smax::cross_entropy_with_grad_into(p->grad, p->logits, p->targets, smax::rowwise);
    slot = std::move(p);
  }
  return *slot;
}

/// Checks a peer's loss (and gradient, when given) against smax's; false after
/// SkipWithError when they differ by kTolerance or more.
bool check(benchmark::State& st, const Problem& p, double loss, const float* grad = nullptr) {
  const double rel = std::abs(loss - static_cast<double>(p.loss)) /
                     std::max(std::abs(static_cast<double>(p.loss)), 1e-30);
  st.counters["rel_diff"] = rel;
  bool ok = rel < kTolerance;
  if (grad != nullptr) {
    const Eigen::Map<const RowMat> g(grad, p.grad.rows(), p.grad.cols());
    const double scale = std::max(static_cast<double>(p.grad.cwiseAbs().maxCoeff()), 1e-30);
    const double diff = static_cast<double>((g - p.grad).cwiseAbs().maxCoeff()) / scale;
    st.counters["grad_diff"] = diff;
    ok = ok && diff < kTolerance;
  }
  if (!ok) st.SkipWithError("loss or gradient differs from smax's by 1e-4 or more");
  return ok;
}

/// items = logits; bytes = one read of the logits, plus one write of the gradient.
void finish(benchmark::State& st, Index rows, Index cols, bool grad) {
  const auto n = static_cast<std::int64_t>(st.iterations()) * rows * cols;
  st.SetItemsProcessed(n);
  st.SetBytesProcessed(n * (grad ? 2 : 1) * static_cast<std::int64_t>(sizeof(float)));
}

// ---------------------------------------------------------------------------------------
// smax

void ce_smax(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const Problem& p = problem(rows, cols);
  for (auto _ : st) {
    float loss = smax::cross_entropy(p.logits, p.targets, smax::rowwise);
    benchmark::DoNotOptimize(loss);
  }
  finish(st, rows, cols, false);
}

void ce_grad_smax(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const Problem& p = problem(rows, cols);
  RowMat grad = RowMat::Zero(rows, cols);
  for (auto _ : st) {
    float loss = smax::cross_entropy_with_grad_into(grad, p.logits, p.targets, smax::rowwise);
    benchmark::DoNotOptimize(loss);
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  finish(st, rows, cols, true);
}

/// The same samples in Eigen's default column-major storage (each sample strided), checked
/// against the row-major results.
void ce_smax_colmajor(benchmark::State& st, bool grad) {
  const Index rows = st.range(0), cols = st.range(1);
  const Problem& p = problem(rows, cols);
  const Eigen::MatrixXf logits = p.logits;
  Eigen::MatrixXf g = Eigen::MatrixXf::Zero(rows, cols);
  float loss = 0;
  for (auto _ : st) {
    loss = grad ? smax::cross_entropy_with_grad_into(g, logits, p.targets, smax::rowwise)
                : smax::cross_entropy(logits, p.targets, smax::rowwise);
    benchmark::DoNotOptimize(loss);
    benchmark::DoNotOptimize(g.data());
    benchmark::ClobberMemory();
  }
  const RowMat g_rowmajor = g;
  if (!check(st, p, loss, grad ? g_rowmajor.data() : nullptr)) return;
  finish(st, rows, cols, grad);
}

void ce_smax_colmajor_loss(benchmark::State& st) { ce_smax_colmajor(st, false); }
void ce_grad_smax_colmajor(benchmark::State& st) { ce_smax_colmajor(st, true); }

// ---------------------------------------------------------------------------------------
// A competent Eigen loop: one Map per row; the loss is summed in double.

double eigen_loss(const Problem& p) {
  const Index rows = p.logits.rows(), cols = p.logits.cols();
  double total = 0;
  for (Index r = 0; r < rows; ++r) {
    const Eigen::Map<const ArrV> z(p.logits.data() + r * cols, cols);
    const float m = z.maxCoeff();
    const float s = (z - m).exp().sum();
    total += static_cast<double>(std::log(s) + m - z(p.targets[static_cast<std::size_t>(r)]));
  }
  return total / static_cast<double>(rows);
}

double eigen_loss_grad(const Problem& p, RowMat& grad) {
  const Index rows = p.logits.rows(), cols = p.logits.cols();
  const float inv_n = 1.0f / static_cast<float>(rows);
  double total = 0;
  for (Index r = 0; r < rows; ++r) {
    const Eigen::Map<const ArrV> z(p.logits.data() + r * cols, cols);
    Eigen::Map<ArrV> g(grad.data() + r * cols, cols);
    const Index y = p.targets[static_cast<std::size_t>(r)];
    const float m = z.maxCoeff();
    g = (z - m).exp();
    const float s = g.sum();
    total += static_cast<double>(std::log(s) + m - z(y));
    g *= inv_n / s;
    g(y) -= inv_n;
  }
  return total / static_cast<double>(rows);
}

void ce_eigen(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const Problem& p = problem(rows, cols);
  if (!check(st, p, eigen_loss(p))) return;
  for (auto _ : st) {
    double loss = eigen_loss(p);
    benchmark::DoNotOptimize(loss);
  }
  finish(st, rows, cols, false);
}

void ce_grad_eigen(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const Problem& p = problem(rows, cols);
  RowMat grad = RowMat::Zero(rows, cols);
  const double first = eigen_loss_grad(p, grad);
  if (!check(st, p, first, grad.data())) return;
  for (auto _ : st) {
    double loss = eigen_loss_grad(p, grad);
    benchmark::DoNotOptimize(loss);
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  finish(st, rows, cols, true);
}

// ---------------------------------------------------------------------------------------
// libtorch

#if SMAX_BENCH_HAVE_TORCH
namespace F = torch::nn::functional;

torch::Tensor torch_logits(const Problem& p) {
  return torch::from_blob(const_cast<float*>(p.logits.data()), {p.logits.rows(), p.logits.cols()},
                          torch::kFloat32);
}

torch::Tensor torch_targets(const Problem& p) {
  return torch::from_blob(const_cast<std::int64_t*>(p.targets.data()),
                          {static_cast<std::int64_t>(p.targets.size())}, torch::kInt64);
}

void ce_torch(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const Problem& p = problem(rows, cols);
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch_logits(p), t = torch_targets(p);
  if (!check(st, p, static_cast<double>(F::cross_entropy(x, t).item<float>()))) return;
  for (auto _ : st) {
    torch::Tensor loss = F::cross_entropy(x, t);
    benchmark::DoNotOptimize(loss.data_ptr());
  }
  finish(st, rows, cols, false);
}

void ce_grad_torch(benchmark::State& st) {
  const Index rows = st.range(0), cols = st.range(1);
  const Problem& p = problem(rows, cols);
  at::set_num_threads(1);
  const torch::Tensor x = torch_logits(p).set_requires_grad(true), t = torch_targets(p);
  {
    const torch::Tensor loss = F::cross_entropy(x, t);
    const torch::Tensor g = torch::autograd::grad({loss}, {x})[0].contiguous();
    if (!check(st, p, static_cast<double>(loss.item<float>()), g.data_ptr<float>())) return;
  }
  for (auto _ : st) {
    torch::Tensor loss = F::cross_entropy(x, t);
    torch::Tensor g = torch::autograd::grad({loss}, {x})[0];
    benchmark::DoNotOptimize(loss.data_ptr());
    benchmark::DoNotOptimize(g.data_ptr());
  }
  finish(st, rows, cols, true);
}

#endif

// ---------------------------------------------------------------------------------------
// Registration

struct Shape {
  Index rows, cols;
};

/// A 10-class head over a large batch, a 1000-class layer, a 1M-entry vocabulary.
const std::vector<Shape> kShapes = {{4096, 10}, {1024, 1000}, {64, 1048576}};

void add(const char* name, void (*fn)(benchmark::State&)) {
  for (const Shape& s : kShapes) {
    benchmark::RegisterBenchmark(name, fn)->Args({s.rows, s.cols})->Unit(benchmark::kMicrosecond);
  }
}

void register_all() {
  add("cross_entropy/smax_rowmajor", ce_smax);
  add("cross_entropy/eigen_loop", ce_eigen);
  add("cross_entropy_with_grad/smax_rowmajor", ce_grad_smax);
  add("cross_entropy/smax_colmajor_strided", ce_smax_colmajor_loss);
  add("cross_entropy_with_grad/smax_colmajor_strided", ce_grad_smax_colmajor);
  add("cross_entropy_with_grad/eigen_loop", ce_grad_eigen);
#if SMAX_BENCH_HAVE_TORCH
  add("cross_entropy/torch", ce_torch);
  add("cross_entropy_with_grad/torch", ce_grad_torch);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#if SMAX_BENCH_HAVE_TORCH
  at::set_num_threads(1);
  benchmark::AddCustomContext("torch", TORCH_VERSION);
  benchmark::AddCustomContext("torch_cpu_capability", smax_bench::torch_cpu_capability());
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
