// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// smax::linear_cross_entropy (chunked: the N x V logits never exist) against the
// materialised computation a user would otherwise write, at language-model output-layer
// sizes: N = 4096 tokens, hidden size d = 1024, vocabulary V = 32000 and 128256, fp32.
//
//   materialised: logits = H W^T + b (a preallocated N x V matrix, reused as a training loop
//                 would), smax::cross_entropy_with_grad_into(logits, logits, ...) in place,
//                 dH = G W, dW = G^T H, db = column sums of G.
//   chunked:      smax::linear_cross_entropy_with_grad_into(dH, dW, db, H, W, b, y, opt)
//                 with the automatic chunks; chunked_rows<R> and chunked_classes<C> force
//                 one-pass chunks of R whole rows, or two-pass chunks of all rows x C classes.
//   loss/...:     the loss alone (one GEMM either way).
//   roof/gemm:    one GEMM logits = H W^T into the preallocated matrix: the unit every path
//                 is made of (materialised and one-pass chunked: 3, two-pass chunked: 4).
//
// Time: one iteration per benchmark (Iterations(1)): a single-threaded Eigen GEMM of this
// size takes seconds. Memory: this program replaces malloc, calloc, realloc, free and the
// aligned allocators (glibc's __libc_* underneath) and tracks the live heap bytes
// (malloc_usable_size) and their peak, which sees every allocation, Eigen's included (Eigen
// allocates with malloc, not operator new). peak_extra_MB is the peak of live bytes during
// the call above the bytes live before it, plus, for the materialised path, its logits
// matrix (allocated outside the timed loop). The inputs (H, W, b, targets) and outputs (dH,
// dW, db) are allocated outside and not counted: both paths need them. mem_vs_logits divides
// by the N x V x 4 bytes of the logits matrix.
//
// Build by hand (Google Benchmark required), then run one vocabulary size pinned to a core:
//   g++ -O3 -march=native -std=c++17 -DNDEBUG -Iinclude -I/usr/include/eigen3
//       benchmarks/linear_cross_entropy_benchmark.cpp -lbenchmark -lpthread -o lce_bench
//   taskset -c 1 ./lce_bench --benchmark_filter=/32000
// The allocation tracking needs glibc (Linux) and no sanitizer; otherwise the measured part
// of the memory counters reads 0.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <smax/cross_entropy.hpp>
#include <smax/linear_cross_entropy.hpp>

// Heap tracking replaces malloc: glibc only, and not under a sanitizer (which owns malloc).
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define SMAX_BENCH_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SMAX_BENCH_SANITIZED 1
#endif
#if defined(__GLIBC__) && !defined(SMAX_BENCH_SANITIZED)
#include <malloc.h>
#define SMAX_BENCH_TRACK_HEAP 1
#else
#define SMAX_BENCH_TRACK_HEAP 0
#endif

// ---------------------------------------------------------------------------------------
// Heap tracking

namespace heap {

std::atomic<long long> live{0};
std::atomic<long long> peak{0};

#if SMAX_BENCH_TRACK_HEAP
inline void on_alloc(void* p) {
  if (p == nullptr) return;
  const long long now = live.fetch_add(static_cast<long long>(malloc_usable_size(p))) +
                        static_cast<long long>(malloc_usable_size(p));
  long long seen = peak.load();
  while (now > seen && !peak.compare_exchange_weak(seen, now)) {
  }
}
inline void on_free(void* p) {
  if (p != nullptr) live.fetch_sub(static_cast<long long>(malloc_usable_size(p)));
}
#endif

/// Starts a measurement: the peak restarts from the bytes live now, which it returns.
inline long long start() {
  const long long now = live.load();
  peak.store(now);
  return now;
}

}  // namespace heap

#if SMAX_BENCH_TRACK_HEAP
extern "C" {
void* __libc_malloc(std::size_t);
void __libc_free(void*);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);

void* malloc(std::size_t n) {
  void* p = __libc_malloc(n);
  heap::on_alloc(p);
  return p;
}
void free(void* p) {
  heap::on_free(p);
  __libc_free(p);
}
void* calloc(std::size_t count, std::size_t size) {
  void* p = __libc_calloc(count, size);
  heap::on_alloc(p);
  return p;
}
void* realloc(void* old, std::size_t n) {
  const long long before = old != nullptr ? static_cast<long long>(malloc_usable_size(old)) : 0;
  void* p = __libc_realloc(old, n);
  if (p != nullptr || n == 0) {
    heap::live.fetch_sub(before);
    heap::on_alloc(p);
  }
  return p;
}
void* memalign(std::size_t alignment, std::size_t n) {
  void* p = __libc_memalign(alignment, n);
  heap::on_alloc(p);
  return p;
}
void* aligned_alloc(std::size_t alignment, std::size_t n) { return memalign(alignment, n); }
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  void* p = memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}
#endif

namespace {

using Eigen::Index;
using Mat = Eigen::MatrixXf;
using Vec = Eigen::VectorXf;

constexpr Index kTokens = 4096;
constexpr Index kHidden = 1024;

// ---------------------------------------------------------------------------------------
// Inputs, one set per vocabulary size (W alone is 525 MB at V = 128256).

std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void fill_uniform(float* p, Index n, double lo, double hi, std::uint64_t seed) {
  for (Index i = 0; i < n; ++i) {
    const double u = static_cast<double>(splitmix64(seed) >> 11) * 0x1.0p-53;
    p[i] = static_cast<float>(lo + (hi - lo) * u);
  }
}

/// H uniform in [-1, 1], W in [-3, 3] / sqrt(d) (logits of a few units, as a trained layer
/// gives), b in [-0.5, 0.5], targets uniform over the classes with every 16th token
/// ignored (-100, padding).
struct problem {
  Mat h, w;
  Vec b;
  std::vector<int> y;
  Mat dh, dw;
  Vec db;
};

problem& inputs(Index v) {
  static std::map<Index, problem> cache;
  auto it = cache.find(v);
  if (it != cache.end()) return it->second;
  problem& p = cache[v];
  p.h.resize(kTokens, kHidden);
  p.w.resize(v, kHidden);
  p.b.resize(v);
  fill_uniform(p.h.data(), p.h.size(), -1.0, 1.0, 1);
  const double s = 3.0 / std::sqrt(static_cast<double>(kHidden));
  fill_uniform(p.w.data(), p.w.size(), -s, s, 2);
  fill_uniform(p.b.data(), p.b.size(), -0.5, 0.5, 3);
  std::uint64_t seed = 4;
  p.y.resize(static_cast<std::size_t>(kTokens));
  for (Index n = 0; n < kTokens; ++n) {
    p.y[static_cast<std::size_t>(n)] =
        n % 16 == 15 ? -100 : static_cast<int>(splitmix64(seed) % static_cast<std::uint64_t>(v));
  }
  p.dh = Mat::Zero(kTokens, kHidden);
  p.dw = Mat::Zero(v, kHidden);
  p.db = Vec::Zero(v);
  return p;
}

/// The materialised path's logits (and, in place, gradient) matrix: allocated and touched
/// once, outside the timed loops; freed before the other paths run, so peaks do not mix.
Mat& logits_buffer(Index v) {
  static Mat z;
  if (z.rows() != kTokens || z.cols() != v) {
    z.resize(0, 0);
    z = Mat::Zero(kTokens, v);
  }
  return z;
}
void release_logits() { logits_buffer(0).resize(0, 0); }

double logits_bytes(Index v) { return static_cast<double>(kTokens) * v * sizeof(float); }
double gemm_flops(Index v) { return 2.0 * kTokens * v * kHidden; }

void set_counters(benchmark::State& state, Index v, double extra_bytes, double loss, int gemms) {
  state.counters["peak_extra_MB"] = extra_bytes / 1e6;
  state.counters["mem_vs_logits"] = extra_bytes / logits_bytes(v);
  state.counters["loss"] = loss;
  // The materialised path's GEMM flops, whatever the path does: a rate of "useful" work,
  // so rates compare as speeds.
  state.counters["GFLOPs"] =
      benchmark::Counter(gemms * gemm_flops(v) * 1e-9 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
  state.SetItemsProcessed(state.iterations() * kTokens * v);  // logits per second
}

// ---------------------------------------------------------------------------------------
// The contenders

void materialised_grad(benchmark::State& state, Index v) {
  problem& p = inputs(v);
  Mat& z = logits_buffer(v);
  double loss = 0;
  long long extra = 0;
  for (auto _ : state) {
    const long long base = heap::start();
    z.noalias() = p.h * p.w.transpose();
    z.rowwise() += p.b.transpose();
    loss = smax::cross_entropy_with_grad_into(z, z, p.y, smax::rowwise);
    p.dh.noalias() = z * p.w;
    p.dw.noalias() = z.transpose() * p.h;
    p.db.noalias() = z.colwise().sum().transpose();
    benchmark::DoNotOptimize(p.dh.data());
    benchmark::DoNotOptimize(p.dw.data());
    benchmark::DoNotOptimize(p.db.data());
    benchmark::ClobberMemory();
    extra = std::max(extra, heap::peak.load() - base);
  }
  set_counters(state, v, static_cast<double>(extra) + logits_bytes(v), loss, 3);
}

void materialised_loss(benchmark::State& state, Index v) {
  problem& p = inputs(v);
  Mat& z = logits_buffer(v);
  double loss = 0;
  long long extra = 0;
  for (auto _ : state) {
    const long long base = heap::start();
    z.noalias() = p.h * p.w.transpose();
    z.rowwise() += p.b.transpose();
    loss = smax::cross_entropy(z, p.y, smax::rowwise);
    benchmark::DoNotOptimize(loss);
    extra = std::max(extra, heap::peak.load() - base);
  }
  set_counters(state, v, static_cast<double>(extra) + logits_bytes(v), loss, 1);
}

void chunked_grad(benchmark::State& state, Index v, Index rows, Index classes) {
  release_logits();
  problem& p = inputs(v);
  smax::linear_cross_entropy_options<float> opt;
  opt.chunk_rows = rows;
  opt.chunk_classes = classes;
  double loss = 0;
  long long extra = 0;
  for (auto _ : state) {
    const long long base = heap::start();
    loss = smax::linear_cross_entropy_with_grad_into(p.dh, p.dw, p.db, p.h, p.w, p.b, p.y, opt);
    benchmark::DoNotOptimize(p.dh.data());
    benchmark::DoNotOptimize(p.dw.data());
    benchmark::DoNotOptimize(p.db.data());
    benchmark::ClobberMemory();
    extra = std::max(extra, heap::peak.load() - base);
  }
  set_counters(state, v, static_cast<double>(extra), loss, 3);
}

void chunked_loss(benchmark::State& state, Index v, Index rows, Index classes) {
  release_logits();
  problem& p = inputs(v);
  smax::linear_cross_entropy_options<float> opt;
  opt.chunk_rows = rows;
  opt.chunk_classes = classes;
  double loss = 0;
  long long extra = 0;
  for (auto _ : state) {
    const long long base = heap::start();
    loss = smax::linear_cross_entropy(p.h, p.w, p.b, p.y, opt);
    benchmark::DoNotOptimize(loss);
    extra = std::max(extra, heap::peak.load() - base);
  }
  set_counters(state, v, static_cast<double>(extra), loss, 1);
}

void roof_gemm(benchmark::State& state, Index v) {
  problem& p = inputs(v);
  Mat& z = logits_buffer(v);
  for (auto _ : state) {
    z.noalias() = p.h * p.w.transpose();
    benchmark::DoNotOptimize(z.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, v, logits_bytes(v), 0.0, 1);
}

void register_all() {
  for (const Index v : {Index(32000), Index(128256)}) {
    const std::string tail = "/" + std::to_string(v);
    const auto add = [&](const std::string& name, auto fn) {
      benchmark::RegisterBenchmark(name.c_str(), fn)->Iterations(1)->Unit(benchmark::kSecond);
    };
    add("roof/gemm" + tail, [v](benchmark::State& s) { roof_gemm(s, v); });
    add("grad/materialised" + tail, [v](benchmark::State& s) { materialised_grad(s, v); });
    add("loss/materialised" + tail, [v](benchmark::State& s) { materialised_loss(s, v); });
    add("grad/chunked" + tail, [v](benchmark::State& s) { chunked_grad(s, v, 0, 0); });
    add("grad/chunked_rows128" + tail, [v](benchmark::State& s) { chunked_grad(s, v, 128, v); });
    add("grad/chunked_classes1024" + tail,
        [v](benchmark::State& s) { chunked_grad(s, v, kTokens, 1024); });
    add("loss/chunked" + tail, [v](benchmark::State& s) { chunked_loss(s, v, 0, 0); });
    add("loss/chunked_rows128" + tail, [v](benchmark::State& s) { chunked_loss(s, v, 128, v); });
    add("loss/chunked_classes1024" + tail,
        [v](benchmark::State& s) { chunked_loss(s, v, kTokens, 1024); });
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
