// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// smax::sample against the other ways to draw a token from logits, on vocabularies of 32k,
// 128k and 256k entries (float and double, T = 0.7), one draw per iteration:
// - sample/smax: the single-pass inverse CDF smax ships;
// - sample/gumbel: Gumbel-max, argmax_i (z_i / T - log(-log u_i)), also one pass, with n
//   uniforms from the same generator and Eigen's vectorised log; the method smax rejected;
// - sample/two_pass: smax::softmax_into, then a linear cumulative scan (the textbook way);
// - sample/std_discrete: softmax then std::discrete_distribution, as examples/ did;
// - filters: top_k = 50, top_p = 0.9, both, and greedy (T = 0);
// - roof/logsumexp: smax::logsumexp of the same vector, one exp per entry: the floor of any
//   exact method that exponentiates every logit once; roof/max: Eigen's maxCoeff, the
//   memory floor.
// Every draw uses std::mt19937_64 (the generator is part of the cost of Gumbel-max).
// Names read as <op>/<contender>/<type>/<n>; items are logits, so ns per draw is
// real_time, and items_per_second / n draws per second.
//
//   taskset -c 1 ./sample_benchmark --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true      (one command line)

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <smax/sample.hpp>
#include <smax/softmax.hpp>

namespace {

using Eigen::Index;
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <typename T>
using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;

constexpr double kTemperature = 0.7;

/// Logits shaped like a language model's: N(0, 2.5) with a few strong candidates on top,
/// the same for every run (fixed seed).
template <typename T>
Vec<T> lm_logits(Index n) {
  std::mt19937_64 gen(2026);
  std::normal_distribution<double> normal(0.0, 2.5);
  Vec<T> z(n);
  for (Index i = 0; i < n; ++i) z(i) = static_cast<T>(normal(gen));
  for (Index i = 0; i < 8; ++i) z((i * 7919) % n) = static_cast<T>(12.0 + i);
  return z;
}

template <typename T>
const char* type_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

void finish(benchmark::State& state, Index n) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n *
                          static_cast<std::int64_t>(state.range(1)));
}

// ---------------------------------------------------------------------------------------
// Contenders

template <typename T>
void smax_sample(benchmark::State& state) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  std::mt19937_64 rng(1);
  const smax::sampling_options<T> opt{T(kTemperature), 0, T(1)};
  for (auto _ : state) benchmark::DoNotOptimize(smax::sample(z, rng, opt));
  finish(state, n);
}

/// Gumbel-max done competently: 256 uniforms at a time in (0, 1) from the generator's raw
/// bits (53 for double; two 24-bit ones per 64-bit call for float), -log(-log u) through
/// Eigen's vectorised log, then a running argmax of z / T + g.
template <typename T>
void gumbel(benchmark::State& state) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  std::mt19937_64 rng(1);
  const T inv_t = T(1) / T(kTemperature);
  constexpr Index chunk = 256;
  Arr<T> u(chunk);
  for (auto _ : state) {
    T best = -std::numeric_limits<T>::infinity();
    Index best_i = 0;
    for (Index c0 = 0; c0 < n; c0 += chunk) {
      const Index len = std::min(chunk, n - c0);
      if constexpr (sizeof(T) == 4) {
        for (Index i = 0; i < len; i += 2) {
          const std::uint64_t bits = rng();
          u(i) = (static_cast<T>(bits >> 40) + T(0.5)) * T(0x1p-24);
          if (i + 1 < len)
            u(i + 1) = (static_cast<T>((bits >> 8) & 0xffffff) + T(0.5)) * T(0x1p-24);
        }
      } else {
        for (Index i = 0; i < len; ++i) u(i) = (static_cast<T>(rng() >> 11) + T(0.5)) * T(0x1p-53);
      }
      Arr<T> key = z.segment(c0, len).array() * inv_t - (-u.head(len).log()).log();
      Index j = 0;
      const T m = key.maxCoeff(&j);
      if (m > best) {
        best = m;
        best_i = c0 + j;
      }
    }
    benchmark::DoNotOptimize(best_i);
  }
  finish(state, n);
}

/// softmax into a buffer, then one uniform and a cumulative scan.
template <typename T>
void two_pass(benchmark::State& state) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  Vec<T> p(n);
  std::mt19937_64 rng(1);
  for (auto _ : state) {
    smax::softmax_into(p, z, T(kTemperature));
    const double target = static_cast<double>(rng() >> 11) * 0x1p-53;
    double cum = 0;
    Index i = 0;
    for (; i + 1 < n; ++i) {
      cum += static_cast<double>(p(i));
      if (cum > target) break;
    }
    benchmark::DoNotOptimize(i);
  }
  finish(state, n);
}

/// What examples/sampling.cpp did before smax::sample: softmax, then
/// std::discrete_distribution (which builds its table of n cumulative sums per call).
template <typename T>
void std_discrete(benchmark::State& state) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  std::mt19937_64 rng(1);
  for (auto _ : state) {
    const Vec<T> p = smax::softmax(z, T(kTemperature));
    std::discrete_distribution<Index> d(p.data(), p.data() + n);
    benchmark::DoNotOptimize(d(rng));
  }
  finish(state, n);
}

template <typename T>
void filtered(benchmark::State& state, Index top_k, T top_p) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  std::mt19937_64 rng(1);
  smax::sampling_workspace<T> ws(n);
  const smax::sampling_options<T> opt{T(kTemperature), top_k, top_p};
  for (auto _ : state) benchmark::DoNotOptimize(smax::sample(z, rng, opt, ws));
  finish(state, n);
}

template <typename T>
void top_k(benchmark::State& state) {
  filtered<T>(state, 50, T(1));
}
template <typename T>
void top_p(benchmark::State& state) {
  filtered<T>(state, 0, T(0.9));
}
template <typename T>
void top_k_top_p(benchmark::State& state) {
  filtered<T>(state, 50, T(0.9));
}
template <typename T>
void greedy(benchmark::State& state) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  std::mt19937_64 rng(1);
  for (auto _ : state) benchmark::DoNotOptimize(smax::sample(z, rng, T(0)));
  finish(state, n);
}

// Roofline references.
template <typename T>
void roof_logsumexp(benchmark::State& state) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  for (auto _ : state) benchmark::DoNotOptimize(smax::logsumexp(z));
  finish(state, n);
}
template <typename T>
void roof_max(benchmark::State& state) {
  const Index n = state.range(0);
  const Vec<T> z = lm_logits<T>(n);
  for (auto _ : state) benchmark::DoNotOptimize(z.maxCoeff());
  finish(state, n);
}

template <typename T>
void add(const std::string& op, void (*fn)(benchmark::State&)) {
  auto* b = benchmark::RegisterBenchmark((op + "/" + type_name<T>()).c_str(), fn);
  for (const Index n : {Index(32000), Index(131072), Index(262144)}) {
    b->Args({n, static_cast<std::int64_t>(sizeof(T))});
  }
  b->ArgNames({"n", "bytes"})->UseRealTime()->Unit(benchmark::kMicrosecond);
}

template <typename T>
void register_all() {
  add<T>("sample/smax", smax_sample<T>);
  add<T>("sample/gumbel", gumbel<T>);
  add<T>("sample/two_pass", two_pass<T>);
  add<T>("sample/std_discrete", std_discrete<T>);
  add<T>("top_k50/smax", top_k<T>);
  add<T>("top_p0.9/smax", top_p<T>);
  add<T>("top_k50_top_p0.9/smax", top_k_top_p<T>);
  add<T>("greedy/smax", greedy<T>);
  add<T>("roof/logsumexp", roof_logsumexp<T>);
  add<T>("roof/max", roof_max<T>);
}

}  // namespace

int main(int argc, char** argv) {
  register_all<float>();
  register_all<double>();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
