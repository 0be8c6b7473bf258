// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// smax::sample: empirical frequencies against softmax (chi-square at fixed seeds), the
// filters against an independent long double reference, every edge of the policy, the
// generator contract (bits, calls, reproducibility), errors, batches, API forms and
// allocations. This file replaces the global operator new with a counting one; it is built
// on its own (tests/CMakeLists.txt makes one executable per file).

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/sample.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

// ---------------------------------------------------------------------------------------
// Counting allocations: every replaceable global operator new counts (all forms are
// replaced, so that each delete matches its new, as sanitizers check).

namespace {
std::atomic<long> g_news{0};

void* counted(std::size_t n) {
  ++g_news;
  return std::malloc(n == 0 ? 1 : n);
}

void* counted_aligned(std::size_t n, std::align_val_t al) {
  ++g_news;
  const std::size_t a = std::max(static_cast<std::size_t>(al), sizeof(void*));
  return std::aligned_alloc(a, (std::max<std::size_t>(n, 1) + a - 1) / a * a);
}
}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// GCC pairs the inlined malloc/free of these replacements with new/delete and complains.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
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
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

using namespace smax_test;

template <typename T>
class SampleDistribution : public ::testing::Test {};
TYPED_TEST_SUITE(SampleDistribution, FloatingTypes, TypeNames);

template <typename T>
class SampleEdges : public ::testing::Test {};
TYPED_TEST_SUITE(SampleEdges, FloatingTypes, TypeNames);

template <typename T>
class SampleFilters : public ::testing::Test {};
TYPED_TEST_SUITE(SampleFilters, FloatingTypes, TypeNames);

template <typename T>
class SampleGenerators : public ::testing::Test {};
TYPED_TEST_SUITE(SampleGenerators, FloatingTypes, TypeNames);

template <typename T>
class SampleErrors : public ::testing::Test {};
TYPED_TEST_SUITE(SampleErrors, FloatingTypes, TypeNames);

template <typename T>
class SampleBatch : public ::testing::Test {};
TYPED_TEST_SUITE(SampleBatch, FloatingTypes, TypeNames);

template <typename T>
class SampleApi : public ::testing::Test {};
TYPED_TEST_SUITE(SampleApi, FloatingTypes, TypeNames);

using LD = long double;
using Probs = std::vector<LD>;

// ---------------------------------------------------------------------------------------
// Chi-square

/// Regularised upper incomplete gamma Q(a, x) (Numerical Recipes' gammq): the p-value of a
/// chi-square statistic x2 with k degrees of freedom is Q(k / 2, x2 / 2).
LD gamma_q(LD a, LD x) {
  if (x <= 0) return 1;
  const LD log_front = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1) {  // series for P
    LD term = 1 / a, sum = term;
    for (int n = 1; n < 10000; ++n) {
      term *= x / (a + n);
      sum += term;
      if (std::fabs(term) < std::fabs(sum) * 1e-18L) break;
    }
    return 1 - sum * std::exp(log_front);
  }
  // Continued fraction for Q (modified Lentz).
  const LD tiny = 1e-300L;
  LD b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (int i = 1; i < 10000; ++i) {
    const LD an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const LD delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < 1e-18L) break;
  }
  return std::exp(log_front) * h;
}

struct chi2 {
  LD stat = 0;
  int df = 0;
  LD p = 1;
};

/// Pearson's statistic of counts against probabilities: bins expected below 5 draws are
/// pooled (and the pool joins the smallest bin if it is still below 5).
chi2 chi_square(const std::vector<long>& counts, const Probs& probs) {
  const long n = std::accumulate(counts.begin(), counts.end(), 0L);
  std::vector<std::pair<LD, long>> bins;  // expected, observed
  std::pair<LD, long> pool{0, 0};
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const LD e = probs[i] * n;
    if (e >= 5) {
      bins.emplace_back(e, counts[i]);
    } else {
      pool.first += e;
      pool.second += counts[i];
    }
  }
  if (pool.first >= 5) {
    bins.push_back(pool);
  } else if (!bins.empty() && pool.first > 0) {
    auto smallest = std::min_element(bins.begin(), bins.end());
    smallest->first += pool.first;
    smallest->second += pool.second;
  }
  chi2 r;
  for (const auto& [e, o] : bins) r.stat += (o - e) * (o - e) / e;
  r.df = static_cast<int>(bins.size()) - 1;
  r.p = r.df > 0 ? gamma_q(r.df / 2.0L, r.stat / 2) : 1;
  return r;
}

/// Passes when the counts fit the probabilities (p-value > 1e-3) and no draw fell on an
/// entry of probability 0. Prints the statistic: these are quoted in the report.
::testing::AssertionResult fits(const std::vector<long>& counts, const Probs& probs,
                                const std::string& label) {
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0 && counts[i] != 0) {
      return ::testing::AssertionFailure() << label << ": index " << i << " has probability 0 "
                                           << "but was drawn " << counts[i] << " times";
    }
  }
  const chi2 r = chi_square(counts, probs);
  std::printf("[chi-square] %-58s chi2 = %8.3f  df = %3d  p = %.4f\n", label.c_str(),
              static_cast<double>(r.stat), r.df, static_cast<double>(r.p));
  if (r.p > 1e-3L) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << label << ": chi2 = " << show(r.stat) << " with " << r.df
                                       << " degrees of freedom, p = " << show(r.p);
}

/// Draw counts of `draws` draws.
template <typename T, typename G>
std::vector<long> counts_of(const Vec<T>& z, G& rng, const smax::sampling_options<T>& opt,
                            long draws) {
  std::vector<long> c(static_cast<std::size_t>(z.size()), 0);
  for (long d = 0; d < draws; ++d) ++c[static_cast<std::size_t>(smax::sample(z, rng, opt))];
  return c;
}

// ---------------------------------------------------------------------------------------
// An independent reference of the sampling distribution, in long double: sort by logit,
// keep the top k, weigh, keep the nucleus, renormalise.

template <typename T>
Probs reference(const Vec<T>& z, const smax::sampling_options<T>& opt) {
  const Index n = z.size();
  Probs q(static_cast<std::size_t>(n), 0);
  const auto at = [&](Index i) -> LD& { return q[static_cast<std::size_t>(i)]; };
  for (Index i = 0; i < n; ++i) {
    if (std::isinf(z(i)) && z(i) > 0) {
      at(i) = 1;
      return q;
    }
  }
  std::vector<Index> order;
  for (Index i = 0; i < n; ++i) {
    if (!(std::isinf(z(i)) && z(i) < 0)) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return z(a) > z(b); });
  if (opt.temperature == 0) {
    at(order.front()) = 1;
    return q;
  }
  if (opt.top_k > 0 && static_cast<std::size_t>(opt.top_k) < order.size()) {
    order.resize(static_cast<std::size_t>(opt.top_k));
  }
  const LD m = z(order.front());
  const LD t = opt.temperature;
  std::vector<LD> w;
  LD sum = 0;
  for (Index i : order) {
    const LD d = std::isinf(t) ? 0 : (static_cast<LD>(z(i)) - m) / t;
    w.push_back(std::exp(d));
    sum += w.back();
  }
  std::size_t kept = order.size();
  if (opt.top_p < 1) {
    LD cum = 0;
    for (kept = 0; kept < order.size();) {
      cum += w[kept++] / sum;
      if (cum >= opt.top_p) break;
    }
    sum = std::accumulate(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(kept), LD(0));
  }
  for (std::size_t j = 0; j < kept; ++j) at(order[j]) = w[j] / sum;
  return q;
}

template <typename T>
smax::sampling_options<T> options(T temperature, Index top_k = 0, T top_p = T(1)) {
  return smax::sampling_options<T>{temperature, top_k, top_p};
}

template <typename T>
std::string tag(const std::string& what) {
  return what + (std::is_same_v<T, float> ? " (float)" : " (double)");
}

/// Twelve logits with ties, negatives and a spread of 9.
template <typename T>
Vec<T> twelve() {
  return vec<T>({1.5, -0.5, 3.0, 0.25, 2.0, 2.0, -3.0, 0.75, 2.5, -1.25, 1.0, -6.0});
}

// ---------------------------------------------------------------------------------------
// Frequencies against softmax

TYPED_TEST(SampleDistribution, FrequenciesMatchSoftmax) {
  using T = TypeParam;
  const Vec<T> z = twelve<T>();
  for (const T t : {T(1), T(0.5), T(2.5)}) {
    std::mt19937_64 rng(20261125);
    const auto c = counts_of(z, rng, options(t), 40000);
    const HiArray p = ref_softmax(z, static_cast<LD>(t));
    EXPECT_TRUE(fits(c, Probs(p.data(), p.data() + p.size()),
                     tag<T>("softmax, 12 logits, T = " + std::to_string(static_cast<double>(t)))));
  }
}

TYPED_TEST(SampleDistribution, TheChiSquareTestHasPower) {
  // The same draws against a slightly wrong distribution (T 15% off) must be rejected: the
  // check above can fail.
  using T = TypeParam;
  const Vec<T> z = twelve<T>();
  std::mt19937_64 rng(20261125);
  const auto c = counts_of(z, rng, options(T(1)), 40000);
  const HiArray wrong = ref_softmax(z, 1.15L);
  const chi2 r = chi_square(c, Probs(wrong.data(), wrong.data() + wrong.size()));
  std::printf("[chi-square] %-58s chi2 = %8.3f  df = %3d  p = %.2g (must be rejected)\n",
              tag<T>("the same draws against softmax(z / 1.15)").c_str(), double(r.stat), r.df,
              double(r.p));
  EXPECT_LT(r.p, 1e-6L) << "chi2 = " << show(r.stat);
}

TYPED_TEST(SampleDistribution, ManyBlocksAndARisingMaximum) {
  // 132000 logits: 258 chunks in 129 blocks of two, a maximum that keeps rising (so block
  // sums are rescaled), and 12 strong entries spread over the vector. Bins: the strong
  // entries one by one and the rest in ten ranges of indices.
  using T = TypeParam;
  const Index n = 132000;
  Vec<T> z(n);
  std::mt19937 gen(7);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (Index i = 0; i < n; ++i) z(i) = static_cast<T>(normal(gen) + 6.0 * double(i) / double(n));
  const Index strong[] = {3,     700,   13000,  40000,  40001,  65535,
                          65536, 90000, 120000, 131071, 131072, 131999};
  for (Index j = 0; j < 12; ++j) z(strong[j]) = static_cast<T>(13.0 + 0.25 * double(j));
  const Probs p = reference(z, options(T(1)));
  std::vector<long> counts(22, 0);
  Probs probs(22, 0);
  const auto bin = [&](Index i) -> std::size_t {
    const Index* s = std::find(std::begin(strong), std::end(strong), i);
    if (s != std::end(strong)) return static_cast<std::size_t>(s - std::begin(strong));
    return static_cast<std::size_t>(12 + i * 10 / n);
  };
  for (Index i = 0; i < n; ++i) probs[bin(i)] += p[std::size_t(i)];
  std::mt19937_64 rng(99);
  for (int d = 0; d < 800; ++d) ++counts[bin(smax::sample(z, rng))];
  EXPECT_TRUE(fits(counts, probs, tag<T>("softmax, 132000 logits, 22 bins")));
}

TYPED_TEST(SampleDistribution, InfiniteTemperatureIsUniformOverTheEntriesAboveMinusInf) {
  using T = TypeParam;
  Vec<T> z = twelve<T>();
  z(1) = z(6) = z(11) = -inf<T>;
  std::mt19937_64 rng(5);
  const auto c = counts_of(z, rng, options(inf<T>), 27000);
  Probs uniform(12, 1.0L / 9);
  uniform[1] = uniform[6] = uniform[11] = 0;
  EXPECT_TRUE(fits(c, uniform, tag<T>("T = +inf, 9 of 12 logits finite")));
}

// ---------------------------------------------------------------------------------------
// Edges of the numerical policy

TYPED_TEST(SampleEdges, TemperatureZeroIsGreedyWithTheLowestIndexOnTies) {
  using T = TypeParam;
  Vec<T> z = Vec<T>::Constant(1500, T(-2));
  z(100) = z(900) = z(1400) = T(7);  // equal maxima in different chunks
  z(5) = -inf<T>;
  std::mt19937 rng(1);
  const std::mt19937 before = rng;
  for (const auto& opt : {options(T(0)), options(T(0), 2), options(T(0), 0, T(0.3))}) {
    EXPECT_EQ(smax::sample(z, rng, opt), 100);
  }
  EXPECT_EQ(smax::sample(vec<T>({3, 5, 5, 1}), rng, T(0)), 1);  // ties in one chunk
  EXPECT_EQ(smax::sample(vec<T>({-inf<T>, -1}), rng, T(0)), 1);
  EXPECT_EQ(smax::sample(vec<T>({4}), rng, T(0)), 0);
  EXPECT_TRUE(rng == before) << "greedy decoding must not call the generator";
}

TYPED_TEST(SampleEdges, TinyPositiveTemperatureSplitsTiesEvenly) {
  // Any T > 0 draws from softmax(z / T), whose T -> 0+ limit splits equal maxima evenly:
  // only T = 0 itself is greedy.
  using T = TypeParam;
  const Vec<T> z = vec<T>({3, 5, 5, 1});
  std::mt19937_64 rng(11);
  const auto c = counts_of(z, rng, options(denorm_min<T>), 4000);
  EXPECT_TRUE(fits(c, Probs{0, 0.5L, 0.5L, 0}, tag<T>("T = denorm_min, two equal maxima")));
}

TYPED_TEST(SampleEdges, MinusInfinityIsNeverDrawn) {
  using T = TypeParam;
  // A whole chunk of -inf, then every other entry -inf.
  Vec<T> z(1300);
  for (Index i = 0; i < z.size(); ++i) {
    z(i) = i < 600 || i % 2 == 1 ? -inf<T> : static_cast<T>(std::sin(double(i)) * 3);
  }
  for (const auto& opt : {options(T(1)), options(T(0.7), 300), options(T(1.3), 0, T(0.8)),
                          options(inf<T>), options(inf<T>, 1000)}) {
    std::mt19937_64 rng(3);
    const auto c = counts_of(z, rng, opt, 3000);
    EXPECT_TRUE(fits(c, reference(z, opt),
                     tag<T>("-inf entries, T = " + std::to_string(double(opt.temperature)) +
                            ", k = " + std::to_string(opt.top_k) +
                            ", p = " + std::to_string(double(opt.top_p)))));
  }
  // The only entry above -inf is certain.
  Vec<T> one = Vec<T>::Constant(1000, -inf<T>);
  one(777) = T(-1e30);
  std::mt19937_64 rng(4);
  for (int d = 0; d < 20; ++d) ASSERT_EQ(smax::sample(one, rng), 777);
  ASSERT_EQ(smax::sample(one, rng, options(T(1), 5, T(0.1))), 777);
}

TYPED_TEST(SampleEdges, OnePlusInfinityIsCertainAndCostsOneUniform) {
  using T = TypeParam;
  Vec<T> z = Vec<T>::LinSpaced(1500, T(-5), T(5));
  z(700) = inf<T>;
  z(3) = -inf<T>;
  for (const auto& opt : {options(T(1)), options(T(1e-30)), options(inf<T>), options(T(2), 3),
                          options(T(0.5), 0, T(0.5)), options(T(1), 10, T(0.2))}) {
    std::mt19937 rng(8), ref(8);
    EXPECT_EQ(smax::sample(z, rng, opt), 700);
    ref.discard(2);  // one 53-bit uniform from a 32-bit generator: two calls, as any draw
    EXPECT_TRUE(rng == ref);
  }
  std::mt19937 rng(8);
  const std::mt19937 before = rng;
  EXPECT_EQ(smax::sample(z, rng, T(0)), 700);
  EXPECT_TRUE(rng == before);
}

TYPED_TEST(SampleEdges, HugeMagnitudesNeverOverflow) {
  using T = TypeParam;
  const T big = std::numeric_limits<T>::max();
  // Spread 2 FLT_MAX (overflows if subtracted directly) at T = FLT_MAX: weights 1 and e^-2.
  {
    std::mt19937_64 rng(21);
    const auto c = counts_of(vec<T>({-big, big}), rng, options(big), 20000);
    const LD e2 = std::exp(-2.0L);
    EXPECT_TRUE(fits(c, Probs{e2 / (1 + e2), 1 / (1 + e2)}, tag<T>("[-max, max] at T = max")));
  }
  // 1e30-scale logits at T = 1: the two equal maxima share everything.
  {
    std::mt19937_64 rng(22);
    const auto c = counts_of(vec<T>({1e30, -1e30, 1e30}), rng, options(T(1)), 8000);
    EXPECT_TRUE(fits(c, Probs{0.5L, 0, 0.5L}, tag<T>("[1e30, -1e30, 1e30] at T = 1")));
  }
  // A rising maximum across chunks with a spread of 2 max and T = max/4: the rescaling of
  // earlier chunks must not overflow either. Bins: the three values.
  {
    Vec<T> z(2000);
    z.head(700).setConstant(-big);
    z.segment(700, 1299).setConstant(T(0));
    z(1999) = big;
    const smax::sampling_options<T> opt = options(big / T(4));
    const Probs p = reference(z, opt);
    std::vector<long> counts(3, 0);
    Probs probs(3, 0);
    for (Index i = 0; i < 2000; ++i) probs[i < 700 ? 0 : i < 1999 ? 1 : 2] += p[std::size_t(i)];
    std::mt19937_64 rng(23);
    for (int d = 0; d < 8000; ++d) {
      const Index i = smax::sample(z, rng, opt);
      ASSERT_TRUE(i >= 0 && i < 2000);
      ++counts[i < 700 ? 0 : i < 1999 ? 1 : 2];
    }
    EXPECT_TRUE(fits(counts, probs, tag<T>("[-max x700, 0 x1299, max] at T = max/4")));
  }
}

// ---------------------------------------------------------------------------------------
// Filters

TYPED_TEST(SampleFilters, TopKMatchesTheRenormalisedTopK) {
  using T = TypeParam;
  const Vec<T> z = twelve<T>();  // 2.0 at 4 and 5: k = 3 keeps index 4, not 5
  for (const Index k : {Index(2), Index(3), Index(11)}) {
    std::mt19937_64 rng(31);
    const auto opt = options(T(0.8), k);
    const auto c = counts_of(z, rng, opt, 20000);
    if (k == 3) {
      EXPECT_EQ(c[5], 0) << "ties at the boundary go to the lower index";
      EXPECT_GT(c[4], 0);
    }
    EXPECT_TRUE(fits(c, reference(z, opt), tag<T>("top_k = " + std::to_string(k))));
  }
}

TYPED_TEST(SampleFilters, TopKOfOneIsTheArgmax) {
  using T = TypeParam;
  Vec<T> z = Vec<T>::Constant(1200, T(0));
  z(50) = z(1100) = T(3);
  std::mt19937_64 rng(32);
  for (int d = 0; d < 50; ++d) ASSERT_EQ(smax::sample(z, rng, T(1), 1), 50);
}

TYPED_TEST(SampleFilters, TopKAtLeastNIsNoFilter) {
  using T = TypeParam;
  const Vec<T> z = twelve<T>();
  std::mt19937_64 a(33), b(33);
  for (int d = 0; d < 200; ++d) ASSERT_EQ(smax::sample(z, a, T(1), 12), smax::sample(z, b, T(1)));
}

TYPED_TEST(SampleFilters, LargeTopKOnALargeVocabulary) {
  // k = 300 of 5000 (beyond the 128 kept on the stack): frequencies over the kept entries.
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(5000, logits::normal_1, 34);
  const auto opt = options(T(0.6), 300);
  std::mt19937_64 rng(35);
  const auto c = counts_of(z, rng, opt, 4000);
  EXPECT_TRUE(fits(c, reference(z, opt), tag<T>("top_k = 300 of 5000")));
}

TYPED_TEST(SampleFilters, TopPMatchesTheNucleus) {
  using T = TypeParam;
  const Vec<T> z = twelve<T>();
  for (const T p : {T(0.4), T(0.7), T(0.95)}) {
    std::mt19937_64 rng(41);
    const auto opt = options(T(1), 0, p);
    const auto c = counts_of(z, rng, opt, 20000);
    EXPECT_TRUE(fits(c, reference(z, opt), tag<T>("top_p = " + std::to_string(double(p)))));
  }
}

TYPED_TEST(SampleFilters, TinyTopPKeepsOnlyTheMostProbable) {
  using T = TypeParam;
  Vec<T> z = twelve<T>();
  z(9) = T(3.0);  // ties with index 2: the lower index is the most probable by rank
  std::mt19937_64 rng(42);
  for (const T p : {T(1e-30), denorm_min<T>, T(0.01)}) {
    for (int d = 0; d < 30; ++d) ASSERT_EQ(smax::sample(z, rng, T(1), 0, p), 2);
  }
}

TYPED_TEST(SampleFilters, TopPOfOneIsNoFilter) {
  using T = TypeParam;
  const Vec<T> z = twelve<T>();
  std::mt19937_64 a(43), b(43);
  for (int d = 0; d < 200; ++d) {
    ASSERT_EQ(smax::sample(z, a, T(1.7), 0, T(1)), smax::sample(z, b, T(1.7)));
  }
}

TYPED_TEST(SampleFilters, TopPOnALargeVocabulary) {
  // 3000 logits: thousands of candidates (beyond the stack), a nucleus of hundreds.
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(3000, logits::normal_1, 44) * T(2);
  const auto opt = options(T(1), 0, T(0.9));
  const Probs p = reference(z, opt);
  const auto kept = std::count_if(p.begin(), p.end(), [](LD v) { return v > 0; });
  EXPECT_GT(kept, 128);
  std::mt19937_64 rng(45);
  smax::sampling_workspace<T> ws;  // as a generation loop would
  std::vector<long> c(3000, 0);
  for (int d = 0; d < 2500; ++d) ++c[static_cast<std::size_t>(smax::sample(z, rng, opt, ws))];
  EXPECT_TRUE(fits(c, p, tag<T>("top_p = 0.9 of 3000 (" + std::to_string(kept) + " kept)")));
}

TYPED_TEST(SampleFilters, TopPAppliesAfterTopK) {
  // Probabilities 0.4, 0.3, 0.2, 0.1: top-k = 2 renormalises to 4/7, 3/7, so top-p = 0.5
  // keeps only the first (top-p on the original distribution would keep two).
  using T = TypeParam;
  const Vec<T> z = vec<T>({std::log(0.4L), std::log(0.3L), std::log(0.2L), std::log(0.1L)});
  std::mt19937_64 rng(46);
  for (int d = 0; d < 100; ++d) ASSERT_EQ(smax::sample(z, rng, T(1), 2, T(0.5)), 0);
  const auto opt = options(T(1), 3, T(0.75));  // 4/9 + 3/9 >= 0.75: two kept
  const auto c = counts_of(z, rng, opt, 10000);
  EXPECT_TRUE(fits(c, Probs{4.0L / 7, 3.0L / 7, 0, 0}, tag<T>("top_k = 3, then top_p = 0.75")));
  EXPECT_TRUE(fits(c, reference(z, opt), tag<T>("top_k = 3, then top_p = 0.75 (reference)")));
}

TYPED_TEST(SampleFilters, InfiniteTemperatureRanksTheFiltersByLogit) {
  // T = +inf: uniform, but top-k and top-p still keep the largest logits.
  using T = TypeParam;
  const Vec<T> z = twelve<T>();
  std::mt19937_64 rng(47);
  const auto c = counts_of(z, rng, options(inf<T>, 0, T(0.3)), 12000);  // 4 of 12 entries
  EXPECT_TRUE(fits(c, reference(z, options(inf<T>, 0, T(0.3))), tag<T>("T = +inf, top_p = 0.3")));
  EXPECT_EQ(c[2] + c[8] + c[4] + c[5], 12000);
}

// ---------------------------------------------------------------------------------------
// Generators: any URBG, bits used portably, calls counted, reproducible

/// A user type in the manner of PCG32 (O'Neill's XSH-RR output function).
struct pcg32 {
  using result_type = std::uint32_t;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return 0xffffffffu; }
  explicit pcg32(std::uint64_t seed) : state(seed + 0x853c49e6748fea9bULL) { (*this)(); }
  result_type operator()() {
    const std::uint64_t old = state;
    state = old * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto xorshifted = static_cast<std::uint32_t>(((old >> 18u) ^ old) >> 27u);
    const auto rot = static_cast<std::uint32_t>(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
  }
  std::uint64_t state;
};

/// Returns a fixed script of values and counts its calls.
template <typename U, U Min, U Max>
struct scripted {
  using result_type = U;
  static constexpr U min() { return Min; }
  static constexpr U max() { return Max; }
  U operator()() { return values.at(calls++); }
  std::vector<U> values;
  std::size_t calls = 0;
};

TYPED_TEST(SampleGenerators, AnyUniformRandomBitGenerator) {
  using T = TypeParam;
  const Vec<T> z = twelve<T>();
  const HiArray p = ref_softmax(z, 1.0L);
  const Probs probs(p.data(), p.data() + p.size());
  std::mt19937 mt32(51);
  EXPECT_TRUE(fits(counts_of(z, mt32, options(T(1)), 20000), probs, tag<T>("std::mt19937")));
  std::minstd_rand lcg(52);  // range [1, 2^31 - 2]: 30 bits per call, rejection
  EXPECT_TRUE(fits(counts_of(z, lcg, options(T(1)), 20000), probs, tag<T>("std::minstd_rand")));
  std::independent_bits_engine<std::mt19937, 10, std::uint16_t> narrow(53);
  EXPECT_TRUE(fits(counts_of(z, narrow, options(T(1)), 20000), probs, tag<T>("10-bit engine")));
  pcg32 pcg(54);
  EXPECT_TRUE(fits(counts_of(z, pcg, options(T(1)), 20000), probs, tag<T>("user pcg32")));
}

TYPED_TEST(SampleGenerators, UniformsComeFromTheTopBitsOfEachCall) {
  // 2^20 equal logits: the draw is floor(2^20 u), the top 20 bits of the 53-bit uniform.
  using T = TypeParam;
  const Vec<T> z = Vec<T>::Zero(Index(1) << 20);
  {
    scripted<std::uint32_t, 0, 0xffffffffu> g{{0x12345678u, 0x9abcdef0u}};
    EXPECT_EQ(smax::sample(z, g), 0x12345);  // the top 20 bits of the first call
    EXPECT_EQ(g.calls, 2u);                  // 53 bits: 32 + 21
  }
  {
    scripted<std::uint64_t, 0, ~std::uint64_t(0)> g{{0xfedcba9876543210ull}};
    EXPECT_EQ(smax::sample(z, g), 0xfedcb);
    EXPECT_EQ(g.calls, 1u);
  }
  {
    // 10 bits per call, most significant first: 0x2ab then 0x0f5 -> 0xaac3d...
    scripted<std::uint16_t, 0, 1023> g{{0x2ab, 0x0f5, 0, 0, 0, 0}};
    EXPECT_EQ(smax::sample(z, g), (0x2ab << 10) | 0x0f5);
    EXPECT_EQ(g.calls, 6u);  // ceil(53 / 10)
  }
  {
    // Range [10, 15]: 6 values, so 2 bits per call (10..13) and 14, 15 are rejected.
    std::vector<std::uint8_t> script = {15, 13, 14, 10, 12, 11, 15, 15, 13, 10, 11, 12};
    script.resize(40, 10);
    scripted<std::uint8_t, 10, 15> g{script};
    // Accepted: 3, 0, 2, 1, 3, 0, 1, 2 (15, 14, 15, 15 rejected), then zeros.
    EXPECT_EQ(smax::sample(z, g), 0b11001001110001100000);
    EXPECT_EQ(g.calls, 27u + 4u);  // 27 accepted calls of 2 bits, 4 rejected
  }
  {
    scripted<std::uint32_t, 0, 0xffffffffu> g{{}};
    EXPECT_EQ(smax::sample(z, g, T(0)), 0);  // T = 0 never calls the generator
    EXPECT_EQ(g.calls, 0u);
  }
}

TYPED_TEST(SampleGenerators, ASeedGivesTheSameDrawsOnEveryPlatform) {
  // Golden draws for std::mt19937_64(2026) on [2, 1, 0.1]: the same for float and double,
  // and (the uniforms being built from raw bits) for every standard library. They are the
  // inverse CDF at u = (rng() >> 11) * 2^-53 computed by hand: 0 below 0.659, 2 above 0.901
  // (the closest u, 0.658 and 0.654, are 1e-3 from a boundary: no rounding can flip them).
  using T = TypeParam;
  const Vec<T> z = vec<T>({2, 1, 0.1});
  std::mt19937_64 rng(2026);
  std::vector<Index> draws;
  for (int d = 0; d < 24; ++d) draws.push_back(smax::sample(z, rng));
  const std::vector<Index> golden = {0, 0, 0, 1, 0, 1, 0, 2, 1, 0, 0, 0,
                                     0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(draws, golden);
  // And the same state twice gives the same sequence.
  std::mt19937_64 a(77), b(77);
  const Vec<T> w = random_logits<T>(3000, logits::normal_30, 78);
  for (int d = 0; d < 50; ++d) ASSERT_EQ(smax::sample(w, a, T(3)), smax::sample(w, b, T(3)));
}

TYPED_TEST(SampleGenerators, OneUniformPerDrawWhateverTheData) {
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(2000, logits::uniform_100, 61);
  for (const auto& opt : {options(T(1)), options(T(0.2), 7), options(T(3), 0, T(0.5)),
                          options(inf<T>), options(T(1), 40, T(0.9))}) {
    std::mt19937_64 rng(62), ref(62);
    for (int d = 0; d < 10; ++d) smax::sample(z, rng, opt);
    ref.discard(10);
    EXPECT_TRUE(rng == ref);
  }
}

// ---------------------------------------------------------------------------------------
// Errors: the message, and nothing touched

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const smax::error& e) {
    return e.what();
  }
  return "";
}

TYPED_TEST(SampleErrors, ArgumentsAreCheckedAndTheGeneratorIsUntouched) {
  using T = TypeParam;
  Vec<T> z = twelve<T>();
  std::mt19937 rng(71);
  const std::mt19937 before = rng;
  const auto msg = [&](const smax::sampling_options<T>& opt, const Vec<T>& x) {
    return error_of([&] { smax::sample(x, rng, opt); });
  };
  EXPECT_EQ(msg(options(T(-1)), z),
            "smax::sample: argument 'temperature' is -1; expected a number >= 0 (0 is the argmax "
            "limit, +inf the uniform limit)");
  EXPECT_NE(msg(options(qnan<T>), z).find("argument 'temperature' is nan"), std::string::npos);
  EXPECT_EQ(msg(options(T(1), -1), z),
            "smax::sample: argument 'top_k' is -1; expected a count >= 0 (0 turns top-k off)");
  for (const T p : {T(0), T(-0.5), T(1.5), qnan<T>, inf<T>}) {
    EXPECT_NE(msg(options(T(1), 0, p), z).find("argument 'top_p' is "), std::string::npos) << p;
  }
  EXPECT_EQ(msg(options(T(1), 0, T(0)), z),
            "smax::sample: argument 'top_p' is 0; expected a number in (0, 1] (1 turns top-p off)");
  EXPECT_EQ(msg(options(T(1)), Vec<T>()),
            "smax::sample: argument 'logits' is of length 0; expected at least one logit");
  // Options are checked before the data.
  EXPECT_NE(msg(options(T(-1)), Vec<T>()).find("'temperature'"), std::string::npos);
  EXPECT_TRUE(rng == before);
}

TYPED_TEST(SampleErrors, BadLogitsOnEveryPath) {
  using T = TypeParam;
  std::mt19937 rng(72);
  const std::mt19937 before = rng;
  for (const auto& opt : {options(T(1)), options(T(0)), options(inf<T>), options(T(1), 5),
                          options(T(1), 0, T(0.5))}) {
    Vec<T> z = Vec<T>::LinSpaced(2000, T(-3), T(3));
    z(1234) = qnan<T>;
    z(1500) = qnan<T>;
    EXPECT_EQ(error_of([&] { smax::sample(z, rng, opt); }),
              "smax::sample: argument 'logits' is NaN at index 1234; expected no NaN (a NaN "
              "logit has no probability)");
    z(1234) = z(1500) = T(0);
    z(17) = z(1999) = inf<T>;
    EXPECT_EQ(error_of([&] { smax::sample(z, rng, opt); }),
              "smax::sample: argument 'logits' is +inf at indices 17 and 1999; expected at most "
              "one +inf (with two, softmax has no limit: NaN)");
    z(1999) = T(0);
    z(5) = qnan<T>;  // NaN in the chunk of the +inf, and before it
    EXPECT_NE(error_of([&] { smax::sample(z, rng, opt); }).find("NaN at index 5;"),
              std::string::npos);
    z.setConstant(-inf<T>);
    EXPECT_EQ(error_of([&] { smax::sample(z, rng, opt); }),
              "smax::sample: argument 'logits' is -inf at every index; expected at least one logit "
              "above -inf (nothing has a probability > 0)");
    z(1999) = qnan<T>;  // NaN behind a maximum of -inf
    EXPECT_NE(error_of([&] { smax::sample(z, rng, opt); }).find("NaN at index 1999;"),
              std::string::npos);
  }
  EXPECT_TRUE(rng == before);
}

TYPED_TEST(SampleErrors, BatchErrorsNameTheRowAndTouchNothing) {
  using T = TypeParam;
  Mat<T> m = Mat<T>::Random(4, 700);
  m(2, 650) = qnan<T>;
  std::mt19937 rng(73);
  const std::mt19937 before = rng;
  Eigen::VectorXi out = Eigen::VectorXi::Constant(4, -7);
  EXPECT_EQ(error_of([&] { smax::sample_into(out, m, smax::rowwise, rng); }),
            "smax::sample_into: argument 'logits' is NaN at index 650 of row 2; expected no NaN "
            "(a NaN logit has no probability)");
  EXPECT_TRUE((out.array() == -7).all());
  EXPECT_TRUE(rng == before);
  m(2, 650) = T(0);
  m.col(3).setConstant(-inf<T>);
  EXPECT_NE(error_of([&] {
              smax::sample(m, smax::colwise, rng, T(0));
            }).find("is -inf at every index of column 3;"),
            std::string::npos);
  Eigen::Matrix<int, 3, 1> fixed = Eigen::Matrix<int, 3, 1>::Constant(-7);
  EXPECT_EQ(error_of([&] { smax::sample_into(fixed, m, smax::rowwise, rng); }),
            "smax::sample_into: argument 'out' is of length 3; expected a vector of length 4 (one "
            "index per row of 'logits')");
  EXPECT_TRUE((fixed.array() == -7).all());
  Eigen::Matrix<std::int8_t, Eigen::Dynamic, 1> narrow;
  EXPECT_EQ(error_of([&] { smax::sample_into(narrow, m, smax::rowwise, rng); }),
            "smax::sample_into: argument 'out' is of an integer type whose largest value is 127; "
            "expected a type that holds every index below 700");
  EXPECT_EQ(error_of([&] { smax::sample(Mat<T>(3, 0), smax::rowwise, rng); }),
            "smax::sample: argument 'logits' is of shape 3x0; expected at least one logit in "
            "every row");
  EXPECT_EQ(error_of([&] { smax::sample(m, smax::rowwise, rng, T(1), -2); }),
            "smax::sample: argument 'top_k' is -2; expected a count >= 0 (0 turns top-k off)");
  EXPECT_TRUE(rng == before);
}

// ---------------------------------------------------------------------------------------
// Batches

TYPED_TEST(SampleBatch, EachRowAsSampleWouldDrawIt) {
  using T = TypeParam;
  const Mat<T> m = Mat<T>::Random(5, 900) * T(4);
  const MatR<T> mr = m;
  for (const auto& opt : {options(T(1)), options(T(0)), options(T(0.6), 20, T(0.8))}) {
    std::mt19937_64 a(81), b(81), c(81), d(81);
    const auto rows = smax::sample(m, smax::rowwise, a, opt);  // column-major: strided rows
    static_assert(std::is_same_v<std::decay_t<decltype(rows)>, Eigen::Matrix<Index, -1, 1>>);
    Eigen::VectorXi rows_r;
    smax::sample_into(rows_r, mr, smax::rowwise, b, opt);
    ASSERT_EQ(rows.size(), 5);
    ASSERT_EQ(rows_r.size(), 5);
    for (Index r = 0; r < 5; ++r) {
      const Vec<T> row = m.row(r).transpose();
      const Index expected = smax::sample(row, c, opt);
      EXPECT_EQ(rows(r), expected);
      EXPECT_EQ(rows_r(r), expected);
    }
    const auto cols = smax::sample(m.transpose(), smax::colwise, d, opt);  // an expression
    static_assert(std::is_same_v<std::decay_t<decltype(cols)>, Eigen::Matrix<Index, 1, -1>>);
    EXPECT_EQ(cols.transpose(), rows);
    EXPECT_TRUE(a == c);  // one uniform per row, none at T = 0
  }
}

TYPED_TEST(SampleBatch, OutputsAndEmptyBatches) {
  using T = TypeParam;
  const Eigen::Array<T, 3, 40> a = Eigen::Array<T, 3, 40>::Random();
  std::mt19937 rng(82), ref(82);
  const auto picks = smax::sample(a, smax::rowwise, rng, T(2));
  static_assert(std::is_same_v<std::decay_t<decltype(picks)>, Eigen::Array<Index, 3, 1>>);
  std::vector<long> storage(3, -1);
  Eigen::Map<Eigen::Matrix<long, 1, 3>> map(storage.data());
  smax::sample_into(map, a, smax::rowwise, ref, smax::sampling_options<T>{T(2)});
  for (Index r = 0; r < 3; ++r) EXPECT_EQ(storage[std::size_t(r)], picks(r));
  std::mt19937 untouched(83);
  const std::mt19937 before = untouched;
  EXPECT_EQ(smax::sample(Mat<T>(0, 7), smax::rowwise, untouched).size(), 0);
  Eigen::VectorXi none = Eigen::VectorXi::Constant(2, 5);
  smax::sample_into(none, Mat<T>(4, 0), smax::colwise, untouched);
  EXPECT_EQ(none.size(), 0);
  EXPECT_TRUE(untouched == before);
}

// ---------------------------------------------------------------------------------------
// API forms: Eigen types, strides, expressions, overloads, workspace, allocation

TYPED_TEST(SampleApi, EveryEigenFormDrawsTheSame) {
  using T = TypeParam;
  const Mat<T> m = Mat<T>::Random(3, 1500) * T(5);  // rows: stride 3, three chunks
  const Vec<T> row = m.row(1).transpose();
  const Eigen::Array<T, 1, Eigen::Dynamic> arr = m.row(1).array();
  std::vector<T> raw(row.data(), row.data() + row.size());
  const Eigen::Map<const Vec<T>> map(raw.data(), Index(raw.size()));
  const auto opt = options(T(0.9), 0, T(0.95));
  std::mt19937_64 g0(91), g1(91), g2(91), g3(91), g4(91), g5(91);
  for (int d = 0; d < 30; ++d) {
    const Index expected = smax::sample(row, g0, opt);
    ASSERT_EQ(smax::sample(m.row(1), g1, opt), expected);  // strided Block
    ASSERT_EQ(smax::sample(arr, g2, opt), expected);
    ASSERT_EQ(smax::sample(map, g3, opt), expected);
    ASSERT_EQ(smax::sample(row * T(2), g4, opt.temperature * T(2), 0, opt.top_p), expected);
    ASSERT_EQ(smax::sample(row, g5, opt.temperature, opt.top_k, opt.top_p), expected);
  }
  const Eigen::Matrix<T, 4, 1> fixed(T(1), T(3), T(2), T(-1));
  std::mt19937 rng(92);
  EXPECT_EQ(smax::sample(fixed, rng, T(0)), 1);
  EXPECT_GE(smax::sample(fixed, std::mt19937(5)), 0);  // a temporary generator
  // long double logits work too (scalar code, 64-bit uniforms).
  const Eigen::Matrix<long double, 3, 1> ld(1, 5, 2);
  EXPECT_EQ(smax::sample(ld, rng, 0.0L), 1);
  EXPECT_LT(smax::sample(ld, rng, 1.0L, 2), 3);
}

TYPED_TEST(SampleApi, WorkspaceGivesTheSameDraws) {
  using T = TypeParam;
  const Vec<T> z = random_logits<T>(4000, logits::normal_30, 93) / T(10);
  smax::sampling_workspace<T> ws;
  EXPECT_EQ(ws.capacity(), 0);
  for (const auto& opt :
       {options(T(1), 200), options(T(1), 0, T(0.9)), options(T(2), 500, T(0.5))}) {
    std::mt19937_64 a(94), b(94);
    for (int d = 0; d < 40; ++d) ASSERT_EQ(smax::sample(z, a, opt, ws), smax::sample(z, b, opt));
  }
  EXPECT_GT(ws.capacity(), 0);
  ws.reserve(10);  // never shrinks
  EXPECT_GE(ws.capacity(), 128);
}

TYPED_TEST(SampleApi, AllocatesOnlyWhereDocumented) {
  using T = TypeParam;
  const Vec<T> big = random_logits<T>(100000, logits::normal_1, 95) * T(3);
  const Vec<T> mid = random_logits<T>(5000, logits::normal_1, 96) * T(2);
  const Mat<T> batch = Mat<T>::Random(4, 5000);
  std::mt19937_64 rng(97);
  Eigen::VectorXi out(4);
  smax::sampling_workspace<T> ws(5000);
  const auto count = [&](auto&& f) {
    const long before = g_news.load();
    for (int d = 0; d < 5; ++d) f();
    return g_news.load() - before;
  };
  EXPECT_EQ(count([&] { smax::sample(big, rng); }), 0) << "no filter";
  EXPECT_EQ(count([&] { smax::sample(big, rng, T(0)); }), 0) << "greedy";
  EXPECT_EQ(count([&] { smax::sample(big, rng, T(1), 128); }), 0) << "top_k <= 128";
  // top-p gathers the entries of probability >= (1 - p) / (2 n): few when a few dominate.
  Vec<T> peaked = mid;
  peaked.head(10).setConstant(T(15));
  EXPECT_EQ(count([&] { smax::sample(peaked, rng, T(1), 0, T(0.5)); }), 0) << "few candidates";
  EXPECT_GT(count([&] { smax::sample(mid, rng, T(1), 129); }), 0) << "top_k > 128 allocates";
  EXPECT_GT(count([&] { smax::sample(mid, rng, T(1), 0, T(0.9)); }), 0) << "many candidates";
  EXPECT_EQ(count([&] { smax::sample(mid, rng, options(T(1), 129), ws); }), 0) << "workspace";
  EXPECT_EQ(count([&] { smax::sample(mid, rng, options(T(1), 0, T(0.9)), ws); }), 0)
      << "workspace, top-p";
  EXPECT_EQ(count([&] {
              smax::sample_into(out, batch, smax::rowwise, rng, options(T(1), 1000, T(0.9)), ws);
            }),
            0)
      << "batch with a workspace";
}

}  // namespace
