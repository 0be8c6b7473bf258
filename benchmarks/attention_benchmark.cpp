// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// smax::attention: the direct path (n x m scores, smax::softmax_into, two GEMMs) against the
// streaming path (a CPU flash-attention: query blocks against key blocks with the online
// normaliser), one head, fp32, one thread.
//
//   attention/<path>/<n>/<d>        n = m = 512 ... 32768, d = 64 and 128: time, and the
//                                   heap the call needs (peak_bytes)
//   attention_causal/<path>/<n>/<d> the same with smax::causal up to n = 8192 (the streaming
//                                   path skips the key blocks the mask hides)
//   switch[_causal]/<path>/<n>/<d>  n = m = 32 ... 2048, without and with a causal mask: the
//                                   crossover behind smax::attention_direct_max_scores
//   switch_alloc[_causal]/...       the same without a workspace: every call allocates and
//                                   frees its buffers (what a caller gets by default)
//   decode/<path>/<m>/<d>           one query against m keys (a generation step)
//   baseline/eigen_naive/<n>/<d>    the textbook Eigen code (scores, Eigen's exp, GEMM)
//   roof/gemm_only/<n>/<d>          the two GEMMs alone, into preallocated storage: the floor
//                                   of any exact attention built on Eigen's GEMM
//
// All but switch_alloc reuse an attention_workspace across iterations (a loop's steady state;
// its first allocation still counts in peak_bytes). Times are the thread's CPU time: the
// reference machine is shared, and wall time there measures the neighbours too.
//
// Counters: flops (4 n m d per call, halved for causal; as a rate), items_per_second (scores
// per second), peak_bytes (see below). The direct path is skipped where one call would take
// more than ~10 s (n = 32768 on the reference machine: a 4 GiB score matrix); runs of
// n >= 8192 are one iteration each.
//
// Peak memory: this binary replaces the global operator new/delete and, on glibc, also
// interposes malloc/free (Eigen allocates with std::malloc, not operator new, so a counter
// on operator new alone would miss the score matrix). Every allocation updates one counter of
// live bytes; peak_bytes is its highest value during the timed calls minus its value before
// them: the working memory of one call, inputs and the preallocated output excluded.
//
// Build (Google Benchmark; libtorch is an optional peer):
//   g++ -O3 -march=native -std=c++17 -DNDEBUG -Iinclude -I/usr/include/eigen3
//       benchmarks/attention_benchmark.cpp -lbenchmark -lpthread -o attention_benchmark
//   taskset -c 1 ./attention_benchmark --benchmark_filter=attention/

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <new>
#include <string>
#include <tuple>

#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <smax/attention.hpp>
#include <smax/softmax.hpp>

#ifndef SMAX_BENCH_HAVE_TORCH
#define SMAX_BENCH_HAVE_TORCH 0
#endif
#if SMAX_BENCH_HAVE_TORCH
#include <torch/torch.h>
#endif

// ---------------------------------------------------------------------------------------
// Heap accounting

namespace heap {

std::atomic<std::int64_t> live{0};
std::atomic<std::int64_t> peak{0};

void allocated(std::size_t bytes) {
  const std::int64_t now =
      live.fetch_add(static_cast<std::int64_t>(bytes)) + static_cast<std::int64_t>(bytes);
  std::int64_t seen = peak.load();
  while (now > seen && !peak.compare_exchange_weak(seen, now)) {
  }
}

void released(std::size_t bytes) { live.fetch_sub(static_cast<std::int64_t>(bytes)); }

/// Starts a measurement: returns the live bytes now, and the peak restarts from there.
std::int64_t start() {
  const std::int64_t now = live.load();
  peak.store(now);
  return now;
}

}  // namespace heap

// Sanitizers interpose malloc themselves.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SMAX_BENCH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define SMAX_BENCH_SANITIZED 1
#endif
#endif

#if defined(__GLIBC__) && !defined(SMAX_BENCH_SANITIZED)
#define SMAX_BENCH_INTERPOSE_MALLOC 1
#else
#define SMAX_BENCH_INTERPOSE_MALLOC 0
#endif

#if SMAX_BENCH_INTERPOSE_MALLOC
// glibc supports replacing malloc by symbol interposition; the replacements forward to its
// own implementation (the __libc_* entry points) and count the usable size of each block.
// Every allocation function a program may pair with free() is replaced, so that every free()
// subtracts what was added.
extern "C" {
void* __libc_malloc(std::size_t);
void __libc_free(void*);
void* __libc_realloc(void*, std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t n) noexcept {
  void* p = __libc_malloc(n);
  if (p != nullptr) heap::allocated(malloc_usable_size(p));
  return p;
}
void free(void* p) noexcept {
  if (p == nullptr) return;
  heap::released(malloc_usable_size(p));
  __libc_free(p);
}
void* calloc(std::size_t count, std::size_t n) noexcept {
  void* p = __libc_calloc(count, n);
  if (p != nullptr) heap::allocated(malloc_usable_size(p));
  return p;
}
void* realloc(void* old, std::size_t n) noexcept {
  const std::size_t before = old != nullptr ? malloc_usable_size(old) : 0;
  void* p = __libc_realloc(old, n);
  if (p != nullptr) {
    heap::released(before);
    heap::allocated(malloc_usable_size(p));
  } else if (n == 0) {
    heap::released(before);  // realloc(p, 0) freed p
  }
  return p;
}
void* memalign(std::size_t alignment, std::size_t n) noexcept {
  void* p = __libc_memalign(alignment, n);
  if (p != nullptr) heap::allocated(malloc_usable_size(p));
  return p;
}
void* aligned_alloc(std::size_t alignment, std::size_t n) noexcept {
  return memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) noexcept {
  void* p = memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}  // extern "C"
#endif

namespace heap {

// operator new: through the counting malloc above, or, without it, with a header that
// remembers the size (then only operator new allocations are counted, not Eigen's).
#if !SMAX_BENCH_INTERPOSE_MALLOC
constexpr std::size_t header = 64;  // keeps every alignment up to 64 bytes
#endif

void* allocate(std::size_t n, std::size_t alignment) {
#if SMAX_BENCH_INTERPOSE_MALLOC
  void* p = alignment <= alignof(std::max_align_t) ? std::malloc(n == 0 ? 1 : n)
                                                   : memalign(alignment, n == 0 ? 1 : n);
  return p;
#else
  if (alignment > header) return nullptr;
  auto* base = static_cast<unsigned char*>(std::malloc(n + header));
  if (base == nullptr) return nullptr;
  *reinterpret_cast<std::size_t*>(base) = n;
  allocated(n);
  return base + header;
#endif
}

void deallocate(void* p) noexcept {
  if (p == nullptr) return;
#if SMAX_BENCH_INTERPOSE_MALLOC
  std::free(p);
#else
  auto* base = static_cast<unsigned char*>(p) - header;
  released(*reinterpret_cast<std::size_t*>(base));
  std::free(base);
#endif
}

void* allocate_or_throw(std::size_t n, std::size_t alignment) {
  if (void* p = allocate(n, alignment)) return p;
  throw std::bad_alloc();
}

}  // namespace heap

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC sees the free() inside these replacements and reports a mismatched new/delete pair;
// the pairing is right by construction.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) { return heap::allocate_or_throw(n, alignof(std::max_align_t)); }
void* operator new[](std::size_t n) {
  return heap::allocate_or_throw(n, alignof(std::max_align_t));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return heap::allocate(n, alignof(std::max_align_t));
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return heap::allocate(n, alignof(std::max_align_t));
}
void* operator new(std::size_t n, std::align_val_t a) {
  return heap::allocate_or_throw(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return heap::allocate_or_throw(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return heap::allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return heap::allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { heap::deallocate(p); }
void operator delete[](void* p) noexcept { heap::deallocate(p); }
void operator delete(void* p, std::size_t) noexcept { heap::deallocate(p); }
void operator delete[](void* p, std::size_t) noexcept { heap::deallocate(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { heap::deallocate(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { heap::deallocate(p); }
void operator delete(void* p, std::align_val_t) noexcept { heap::deallocate(p); }
void operator delete[](void* p, std::align_val_t) noexcept { heap::deallocate(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { heap::deallocate(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { heap::deallocate(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  heap::deallocate(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  heap::deallocate(p);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

using Eigen::Index;
using Mat = Eigen::MatrixXf;

// ---------------------------------------------------------------------------------------
// Inputs: Q, K, V uniform in [-1, 1) from a fixed seed, cached per shape.

struct inputs {
  Mat q, k, v;
};

float uniform(std::uint64_t& state) {
  state = state * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<float>(static_cast<double>(state >> 11) * 0x1.0p-52 - 1.0);
}

const inputs& inputs_for(Index n, Index m, Index d) {
  static std::map<std::tuple<Index, Index, Index>, inputs> cache;
  auto it = cache.find({n, m, d});
  if (it == cache.end()) {
    std::uint64_t state = 0x5eed ^ static_cast<std::uint64_t>(n * 1000003 + m * 1009 + d);
    const auto fill = [&](Index rows, Index cols) {
      Mat x(rows, cols);
      for (Index i = 0; i < x.size(); ++i) x(i) = uniform(state);
      return x;
    };
    inputs in;
    in.q = fill(n, d);
    in.k = fill(m, d);
    in.v = fill(m, d);
    it = cache.emplace(std::make_tuple(n, m, d), std::move(in)).first;
  }
  return it->second;
}

enum class path { direct, streaming };

/// Whether one direct call would take more than ~10 s. Beyond the caches the direct path is
/// bound by its passes over the n x m scores (and the page faults of allocating them), not
/// by its flops: measured on the reference machine, n = m = 8192 took 1.5 s CPU, 16384 took
/// 6.0 s (d = 64) and 6.6 s (d = 128), and 32768, d = 64 took 24.8 s CPU (32.8 s wall). The
/// estimate n m (25 + 0.07 d) ns matches those within 20%; it skips n = 32768 for both d.
bool direct_too_slow(Index n, Index m, Index d) {
  const double scores = static_cast<double>(n) * static_cast<double>(m);
  return scores * (25e-9 + 0.07e-9 * static_cast<double>(d)) > 10.0;
}

void set_counters(benchmark::State& state, Index n, Index m, Index d, bool causal,
                  std::int64_t peak_bytes) {
  const double scores = static_cast<double>(n) * static_cast<double>(m) * (causal ? 0.5 : 1.0);
  state.counters["flops"] = benchmark::Counter(4.0 * scores * static_cast<double>(d),
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_bytes"] =
      benchmark::Counter(static_cast<double>(peak_bytes), benchmark::Counter::kDefaults,
                         benchmark::Counter::OneK::kIs1024);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(scores));
}

void run_attention(benchmark::State& state, Index n, Index m, Index d, path p, bool causal,
                   bool reuse) {
  if (p == path::direct && direct_too_slow(n, m, d)) {
    state.SkipWithError("direct path skipped: one call would take more than ~10 s");
    for (auto _ : state) {
    }
    return;
  }
  const inputs& in = inputs_for(n, m, d);
  Mat out(n, d);
  const std::int64_t before = heap::start();
  smax::attention_workspace<float> workspace;
  smax::attention_options<float> options;
  options.path = p == path::direct ? smax::attention_path::direct : smax::attention_path::streaming;
  if (reuse) options.workspace = &workspace;
  for (auto _ : state) {
    if (causal) {
      smax::attention_into(out, in.q, in.k, in.v, smax::causal, options);
    } else {
      smax::attention_into(out, in.q, in.k, in.v, options);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, m, d, causal, heap::peak.load() - before);
}

void BM_attention(benchmark::State& state, path p, bool causal, bool reuse) {
  run_attention(state, state.range(0), state.range(0), state.range(1), p, causal, reuse);
}

void BM_decode(benchmark::State& state, path p) {
  run_attention(state, 1, state.range(0), state.range(1), p, false, true);
}

// The textbook Eigen code: scores, row maxima, Eigen's exp, row sums, GEMM.
void BM_eigen_naive(benchmark::State& state) {
  const Index n = state.range(0), d = state.range(1);
  const inputs& in = inputs_for(n, n, d);
  Mat out(n, d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const std::int64_t before = heap::start();
  for (auto _ : state) {
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> s =
        (in.q * in.k.transpose()) * scale;
    const Eigen::VectorXf mx = s.rowwise().maxCoeff();
    s = (s.colwise() - mx).array().exp().matrix();
    const Eigen::VectorXf sum = s.rowwise().sum();
    s = sum.cwiseInverse().asDiagonal() * s;
    out.noalias() = s * in.v;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, n, d, false, heap::peak.load() - before);
}

// The two GEMMs alone into preallocated storage.
void BM_gemm_only(benchmark::State& state) {
  const Index n = state.range(0), d = state.range(1);
  const inputs& in = inputs_for(n, n, d);
  Mat out(n, d);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> s(n, n);
  const std::int64_t before = heap::start();
  for (auto _ : state) {
    s.noalias() = in.q * in.k.transpose();
    out.noalias() = s * in.v;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, n, d, false, heap::peak.load() - before);
}

#if SMAX_BENCH_HAVE_TORCH
// libtorch's scaled_dot_product_attention on the same data (copied once to row-major
// (1, 1, n, d) tensors), one intra-op thread.
void BM_torch_sdpa(benchmark::State& state, bool causal) {
  const Index n = state.range(0), d = state.range(1);
  const inputs& in = inputs_for(n, n, d);
  at::set_num_threads(1);
  const auto tensor = [&](const Mat& x) {
    const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = x;
    return torch::from_blob(const_cast<float*>(r.data()), {1, 1, n, d}, torch::kFloat32).clone();
  };
  const torch::Tensor q = tensor(in.q), k = tensor(in.k), v = tensor(in.v);
  torch::NoGradGuard no_grad;
  const std::int64_t before = heap::start();
  for (auto _ : state) {
    torch::Tensor out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  set_counters(state, n, n, d, causal, heap::peak.load() - before);
}
#endif

constexpr Index kLengths[] = {512, 1024, 2048, 4096, 8192, 16384, 32768};
constexpr Index kDims[] = {64, 128};
constexpr Index kSwitchLengths[] = {32, 64, 128, 192, 256, 384, 512, 768, 1024, 2048};

void register_all() {
  const std::pair<const char*, path> paths[] = {{"direct", path::direct},
                                                {"streaming", path::streaming}};
  for (bool causal : {false, true}) {
    for (const auto& [name, p] : paths) {
      for (Index d : kDims) {
        for (Index n : kLengths) {
          if (causal && n > 8192) continue;
          auto* b = benchmark::RegisterBenchmark(
              (std::string(causal ? "attention_causal/" : "attention/") + name).c_str(),
              [p = p, causal](benchmark::State& s) { BM_attention(s, p, causal, true); });
          b->Args({n, d})->Unit(benchmark::kMillisecond);
          if (n >= 8192) b->Iterations(1);
        }
      }
    }
  }
  for (bool reuse : {true, false}) {
    for (bool causal : {false, true}) {
      for (const auto& [name, p] : paths) {
        for (Index d : kDims) {
          for (Index n : kSwitchLengths) {
            const std::string group =
                std::string(reuse ? "switch" : "switch_alloc") + (causal ? "_causal/" : "/") + name;
            benchmark::RegisterBenchmark(
                group.c_str(),
                [p = p, causal, reuse](benchmark::State& s) { BM_attention(s, p, causal, reuse); })
                ->Args({n, d})
                ->Unit(benchmark::kMicrosecond);
          }
        }
      }
    }
  }
  for (const auto& [name, p] : paths) {
    for (Index m : {4096, 32768}) {
      benchmark::RegisterBenchmark((std::string("decode/") + name).c_str(),
                                   [p = p](benchmark::State& s) { BM_decode(s, p); })
          ->Args({m, 128})
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (Index d : kDims) {
    for (Index n : {512, 1024, 2048, 4096}) {
      benchmark::RegisterBenchmark("baseline/eigen_naive", BM_eigen_naive)
          ->Args({n, d})
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark("roof/gemm_only", BM_gemm_only)
          ->Args({n, d})
          ->Unit(benchmark::kMillisecond);
#if SMAX_BENCH_HAVE_TORCH
      for (bool causal : {false, true}) {
        benchmark::RegisterBenchmark(
            causal ? "attention_causal/torch_sdpa" : "attention/torch_sdpa",
            [causal](benchmark::State& s) { BM_torch_sdpa(s, causal); })
            ->Args({n, d})
            ->Unit(benchmark::kMillisecond);
      }
#endif
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::setNbThreads(1);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
