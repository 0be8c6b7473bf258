// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

#include "test_utils.hpp"  // first: silences a GCC 12 false positive before Eigen

#include <smax/linear_cross_entropy.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

#include <smax/cross_entropy.hpp>

namespace {

using namespace smax_test::loss;  // close, all_close, tol, error_of, MatL, ...
using smax_test::Mat;
using smax_test::Vec;
using Index = Eigen::Index;
using VecL = Eigen::Matrix<long double, Eigen::Dynamic, 1>;

template <typename T>
class LinearCrossEntropy : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LinearCrossEntropy, Scalars, smax_test::TypeNames);

// ---------------------------------------------------------------------------------------
// Tolerances
//
// Against the reference (the logits H W^T + b of the same inputs in long double, then
// smax::cross_entropy_with_grad in long double): the loss within loss_ulps ULP of
// max(|loss|, 1), each gradient within grad_ulps ULP of its largest entry. For float the
// logits themselves are rounded sums of d products, so the float bound covers that rounding
// too. Measured over random layers (N <= 40, V <= 300, d <= 64, several options and chunk
// shapes): loss 2.1 ULP (float) / 1.7 ULP (double), gradients 9 ULP of the largest entry.
template <typename T>
constexpr long double loss_ulps = std::is_same_v<T, float> ? 8 : 4;
template <typename T>
constexpr long double grad_ulps = 32;

template <typename T>
double loss_tol() {
  return static_cast<double>(loss_ulps<T> * std::numeric_limits<T>::epsilon());
}
template <typename T>
double grad_tol() {
  return static_cast<double>(grad_ulps<T> * std::numeric_limits<T>::epsilon());
}

/// Every entry within rel * (largest |expected|): errors of a gradient are relative to its
/// scale, not to each (possibly cancelling) entry.
template <typename A, typename B>
::testing::AssertionResult grad_close(const Eigen::DenseBase<A>& actual,
                                      const Eigen::DenseBase<B>& expected, double rel) {
  return all_close(actual, expected, rel, static_cast<double>(max_abs(expected)) + 1e-300);
}

// ---------------------------------------------------------------------------------------
// Option sets and layers

/// An option set, independent of the scalar type.
struct spec {
  smax::reduction red = smax::reduction::mean;
  double eps = 0;
  std::int64_t ignore = -100;
  bool weighted = false;
  double T = 1;
};

std::string describe(const spec& s) {
  return std::string("red=") + (s.red == smax::reduction::mean ? "mean" : "sum") +
         " eps=" + std::to_string(s.eps) + " weighted=" + (s.weighted ? "yes" : "no") +
         " ignore=" + std::to_string(s.ignore) + " T=" + std::to_string(s.T);
}

/// Every combination: reductions, smoothing 0 / 0.1 / 1, weights (one of them 0),
/// ignore_index default (some tokens -100) or naming a real class, temperatures.
std::vector<spec> all_specs() {
  std::vector<spec> out;
  for (auto red : {smax::reduction::mean, smax::reduction::sum}) {
    for (double eps : {0.0, 0.1, 1.0}) {
      for (bool weighted : {false, true}) {
        for (std::int64_t ignore : {std::int64_t(-100), std::int64_t(1)}) {
          for (double T : {1.0, 0.5, 3.0}) out.push_back({red, eps, ignore, weighted, T});
        }
      }
    }
  }
  return out;
}

/// smax options of scalar T for a spec and a chunk shape; owns the weights the options view
/// (class c weighs 0.5 + (c % 4) / 2, class 2 weighs 0).
template <typename T>
struct options_for {
  Vec<T> w;
  smax::linear_cross_entropy_options<T> o;
  options_for(const spec& s, Index classes, Index rows = 0, Index chunk_classes = 0) {
    o.reduction = s.red;
    o.label_smoothing = static_cast<T>(s.eps);
    o.ignore_index = s.ignore;
    o.temperature = static_cast<T>(s.T);
    o.chunk_rows = rows;
    o.chunk_classes = chunk_classes;
    if (s.weighted) {
      w.resize(classes);
      for (Index c = 0; c < classes; ++c) w(c) = c == 2 ? T(0) : T(0.5) + T(c % 4) / T(2);
      o.weight = w;
    }
  }
  options_for(const options_for&) = delete;
  options_for& operator=(const options_for&) = delete;
};

/// A linear layer: H (N x d), W (V x d), b (V) and the targets.
template <typename T>
struct layer {
  Mat<T> h, w;
  Vec<T> b;
  std::vector<std::int64_t> y;
};

/// Seeded layer: H in [-2, 2], W in [-3, 3] / sqrt(d) (logits of a few units), b in
/// [-1, 1]; every fifth token (from the second) is ignored: -100, or class 1 when the spec
/// ignores class 1 (other tokens of class 1 are then ignored too).
template <typename T>
layer<T> random_layer(Index n, Index v, Index d, unsigned seed, std::int64_t ignore = -100) {
  layer<T> l;
  l.h = random_matrix<T>(n, d, seed, -2, 2);
  const double s = 3.0 / std::sqrt(static_cast<double>(std::max<Index>(d, 1)));
  l.w = random_matrix<T>(v, d, seed + 1, -s, s);
  l.b = random_matrix<T>(v, 1, seed + 2, -1, 1);
  std::mt19937 gen(seed + 3);
  std::uniform_int_distribution<std::int64_t> cls(0, std::max<Index>(v, 1) - 1);
  for (Index i = 0; i < n; ++i) {
    const std::int64_t c = cls(gen);
    l.y.push_back(i % 5 == 1 ? (ignore == -100 ? -100 : 1) : c);
  }
  return l;
}

/// The reference: logits in long double, then cross_entropy_with_grad in long double;
/// dH = G W, dW = G^T H, db = sum over tokens of G.
struct reference {
  long double loss = 0;
  MatL grad, dh, dw;
  VecL db;
};

template <typename T>
reference reference_of(const layer<T>& l, const spec& s, bool bias) {
  const MatL h = l.h.template cast<long double>();
  const MatL w = l.w.template cast<long double>();
  MatL z = h * w.transpose();
  if (bias) z.rowwise() += l.b.template cast<long double>().transpose();
  options_for<long double> of(s, w.rows());
  const auto r = smax::cross_entropy_with_grad(z, l.y, smax::rowwise, of.o);
  reference ref;
  ref.loss = r.loss;
  ref.grad = r.grad;
  ref.dh = r.grad * w;
  ref.dw = r.grad.transpose() * h;
  ref.db = r.grad.colwise().sum().transpose();
  return ref;
}

/// The materialised computation in T: logits, cross_entropy_with_grad, two GEMMs.
template <typename T>
struct materialised {
  T loss;
  Mat<T> grad, dh, dw;
  Vec<T> db;
};

template <typename T>
materialised<T> materialised_of(const layer<T>& l, const smax::cross_entropy_options<T>& o) {
  Mat<T> z = l.h * l.w.transpose();
  z.rowwise() += l.b.transpose();
  auto r = smax::cross_entropy_with_grad(z, l.y, smax::rowwise, o);
  materialised<T> m{r.loss, r.grad, r.grad * l.w, r.grad.transpose() * l.h,
                    r.grad.colwise().sum().transpose()};
  return m;
}

template <typename T>
using result = smax::linear_loss_with_grad<T, Mat<T>, Mat<T>, Vec<T>>;

/// Checks a chunked result against the reference.
template <typename T>
void expect_matches(const result<T>& r, const reference& ref) {
  EXPECT_TRUE(close(r.loss, ref.loss, loss_tol<T>()));
  EXPECT_TRUE(grad_close(r.dH, ref.dh, grad_tol<T>()));
  EXPECT_TRUE(grad_close(r.dW, ref.dw, grad_tol<T>()));
  if (r.db.size() > 0) {
    EXPECT_TRUE(grad_close(r.db, ref.db, grad_tol<T>()));
  }
}

// ---------------------------------------------------------------------------------------
// Against the materialised computation

// Every option combination, with chunks of one tile, two passes over classes that do not
// divide V (5 rows x 4 classes), and one pass over blocks of 4 whole rows.
TYPED_TEST(LinearCrossEntropy, MatchesTheReferenceForEveryOptionAndChunking) {
  using T = TypeParam;
  const Index N = 13, V = 11, d = 6;
  for (const spec& s : all_specs()) {
    const layer<T> l = random_layer<T>(N, V, d, 101, s.ignore);
    const reference ref = reference_of(l, s, true);
    const reference ref_nobias = reference_of(l, s, false);
    for (const auto& [rows, classes] : {std::pair<Index, Index>{0, 0}, {5, 4}, {4, V}}) {
      SCOPED_TRACE(describe(s) + " chunk " + std::to_string(rows) + "x" + std::to_string(classes));
      options_for<T> of(s, V, rows, classes);
      const result<T> r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, of.o);
      expect_matches(r, ref);
      EXPECT_EQ(smax::linear_cross_entropy(l.h, l.w, l.b, l.y, of.o), r.loss);
      // Ignored tokens: no gradient at all.
      for (Index n = 0; n < N; ++n) {
        if (l.y[static_cast<size_t>(n)] == s.ignore) {
          EXPECT_TRUE((r.dH.row(n).array() == T(0)).all()) << n;
        }
      }
      // Without a bias.
      const result<T> rn = smax::linear_cross_entropy_with_grad(l.h, l.w, l.y, of.o);
      EXPECT_EQ(rn.db.size(), 0);
      expect_matches(rn, ref_nobias);
      // The materialised computation in the same precision: the same loss to a few ULP.
      const materialised<T> m = materialised_of(l, of.o);
      EXPECT_TRUE(close(r.loss, m.loss, 4 * std::numeric_limits<T>::epsilon()));
    }
  }
}

// Chunk shapes 1, 7 (not a divisor), V, > V and automatic, for classes and rows alike.
TYPED_TEST(LinearCrossEntropy, ChunkShapesDoNotChangeTheResult) {
  using T = TypeParam;
  const Index N = 11, V = 23, d = 5;
  const spec s{smax::reduction::mean, 0.1, -100, true, 0.7};
  const layer<T> l = random_layer<T>(N, V, d, 202);
  const reference ref = reference_of(l, s, true);
  options_for<T> whole(s, V, N, V);
  const result<T> one_tile = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, whole.o);
  expect_matches(one_tile, ref);
  for (Index classes : {Index(1), Index(7), V, V + 5, Index(0)}) {
    for (Index rows : {Index(1), Index(3), N, N + 2, Index(0)}) {
      SCOPED_TRACE("chunk " + std::to_string(rows) + "x" + std::to_string(classes));
      options_for<T> of(s, V, rows, classes);
      const result<T> r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, of.o);
      expect_matches(r, ref);
      // The chunking only reorders roundings.
      EXPECT_TRUE(close(r.loss, one_tile.loss, 4 * std::numeric_limits<T>::epsilon()));
      EXPECT_TRUE(grad_close(r.dW, one_tile.dW, grad_tol<T>()));
    }
  }
}

// Larger and less regular: 70 tokens, 300 classes (two GEMM-sized chunks would not fit a
// test), hidden size 40, and chunks that cut it unevenly.
TYPED_TEST(LinearCrossEntropy, LargerLayerMatchesTheReference) {
  using T = TypeParam;
  const Index N = 70, V = 300, d = 40;
  const spec s{smax::reduction::mean, 0.05, -100, false, 1.0};
  const layer<T> l = random_layer<T>(N, V, d, 303);
  const reference ref = reference_of(l, s, true);
  for (const auto& [rows, classes] : {std::pair<Index, Index>{0, 0}, {16, V}, {N, 64}, {33, 97}}) {
    SCOPED_TRACE("chunk " + std::to_string(rows) + "x" + std::to_string(classes));
    options_for<T> of(s, V, rows, classes);
    expect_matches(smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, of.o), ref);
  }
}

// ---------------------------------------------------------------------------------------
// Exactly representable logits: bit for bit
//
// With W = c I (d = V) and dyadic H and b, every logit c h + b is exact whatever the
// summation order, and dH = c G exactly (each sum has one nonzero term), so the chunked
// gradient of the logits can be compared with cross_entropy's. V = 130 > 128 keeps the
// materialised reference on cross_entropy's one-sample-at-a-time path (shorter rows go
// through its sample panels, which sum in another order) at every SIMD width.

template <typename T>
layer<T> exact_layer(Index n, Index v, T scale, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> k(-32, 32);
  layer<T> l;
  l.h.resize(n, v);
  for (Index i = 0; i < l.h.size(); ++i) l.h(i) = static_cast<T>(k(gen)) / T(8);
  l.w = Mat<T>::Identity(v, v) * scale;
  l.b.resize(v);
  for (Index c = 0; c < v; ++c) l.b(c) = static_cast<T>(k(gen)) / T(16);
  std::uniform_int_distribution<std::int64_t> cls(0, v - 1);
  for (Index i = 0; i < n; ++i) l.y.push_back(i % 4 == 3 ? -100 : cls(gen));
  return l;
}

/// The exact logits of an exact layer, row-major (contiguous rows, as the chunks hold them).
template <typename T>
smax_test::MatR<T> exact_logits(const layer<T>& l, T scale) {
  smax_test::MatR<T> z = l.h * scale;
  z.rowwise() += l.b.transpose();
  return z;
}

TYPED_TEST(LinearCrossEntropy, OnePassEqualsCrossEntropyBitForBit) {
  using T = TypeParam;
  const Index N = 9, V = 130;
  const layer<T> l = exact_layer<T>(N, V, T(1), 404);
  const auto z = exact_logits(l, T(1));
  for (const spec& s : {spec{}, spec{smax::reduction::sum, 0.2, -100, true, 2.5},
                        spec{smax::reduction::mean, 0.0, 1, true, 0.5}}) {
    SCOPED_TRACE(describe(s));
    std::vector<std::int64_t> y = l.y;
    if (s.ignore == 1) {
      for (auto& t : y) t = t == -100 ? 1 : t;
    }
    options_for<T> base(s, V);
    const auto expected = smax::cross_entropy_with_grad(z, y, smax::rowwise, base.o);
    for (Index rows : {Index(0), Index(1), Index(4)}) {
      for (Index classes : {Index(0), V, V + 1}) {
        SCOPED_TRACE("chunk " + std::to_string(rows) + "x" + std::to_string(classes));
        options_for<T> of(s, V, rows, classes);
        const auto r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, y, of.o);
        EXPECT_EQ(r.loss, expected.loss);
        EXPECT_TRUE(smax_test::same_values(expected.grad, r.dH));
      }
    }
    // Two passes over the vocabulary: the online normaliser rescales, so a few ULP.
    for (Index classes : {Index(1), Index(7), Index(64)}) {
      SCOPED_TRACE("chunk classes " + std::to_string(classes));
      options_for<T> of(s, V, 0, classes);
      const auto r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, y, of.o);
      EXPECT_TRUE(close(r.loss, expected.loss, 4 * std::numeric_limits<T>::epsilon()));
      EXPECT_TRUE(grad_close(r.dH, expected.grad, 8 * std::numeric_limits<T>::epsilon()));
    }
  }
}

// p_c = exp((z_c - max) / T) subnormal while p_c / T is normal (T = 2^-20): the second pass
// of the two-pass chunks rounded p_c on the subnormal grid before the factor 1 / T (up to
// ~1e3 ULP off); it now computes the exponentials scaled by an exact power of two, as
// cross_entropy does. W = I and b = 0, so the logits are H exactly and dH is their gradient,
// compared entry by entry with a long double reference (each entry relative to itself; at
// the target class relative to 1 / (N T), where p_y - 1 cancels).
TYPED_TEST(LinearCrossEntropy, SubnormalProbabilitiesAtSmallTemperatureKeepTheirDigits) {
  using T = TypeParam;
  const Index N = 5, V = 40;
  const T temperature = std::ldexp(T(1), -20);
  const double lo = std::is_same_v<T, float> ? -96.0 : -717.0;
  const double hi = std::is_same_v<T, float> ? -88.0 : -709.0;
  layer<T> l;
  l.h.resize(N, V);
  for (Index n = 0; n < N; ++n) {
    for (Index c = 0; c < V; ++c) {
      const double frac = std::fmod(0.618033988749895 * static_cast<double>(n * V + c + 1), 1.0);
      const double sc = std::round((lo + (hi - lo) * frac) * 1024.0) / 1024.0;
      l.h(n, c) = c == (n * 11) % V ? T(0) : static_cast<T>(sc) * temperature;
    }
    l.y.push_back((n * 7 + 3) % V);
  }
  l.w = Mat<T>::Identity(V, V);
  l.b = Vec<T>::Zero(V);
  MatL ref(N, V);
  for (Index n = 0; n < N; ++n) {
    long double s = 0;
    for (Index c = 0; c < V; ++c) s += std::exp(static_cast<long double>(l.h(n, c)) / temperature);
    for (Index c = 0; c < V; ++c) {
      const long double p = std::exp(static_cast<long double>(l.h(n, c)) / temperature) / s;
      ref(n, c) = (p - (c == l.y[static_cast<size_t>(n)] ? 1 : 0)) / temperature / N;
    }
  }
  const spec sp{smax::reduction::mean, 0.0, -100, false, static_cast<double>(temperature)};
  for (Index classes : {Index(0), Index(7), Index(16)}) {
    SCOPED_TRACE("chunk classes " + std::to_string(classes));
    options_for<T> of(sp, V, 0, classes);
    const auto r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, of.o);
    for (Index n = 0; n < N; ++n) {
      for (Index c = 0; c < V; ++c) {
        const bool target = c == l.y[static_cast<size_t>(n)];
        const double floor = target ? 1.0 / (static_cast<double>(temperature) * N) : 0.0;
        EXPECT_TRUE(close(r.dH(n, c), ref(n, c), tol<T>::rel, floor)) << n << ", " << c;
      }
    }
  }
}

// The numerical policy of cross_entropy, logit by logit, through the layer: W = 2 I, so an
// entry +-max of H is a +-inf logit; a NaN entry of H makes its whole row of logits NaN
// (NaN * 0). Each special row shares a batch with an ordinary one; b has a -inf class that
// no token names. Both one pass and two passes (the special logit early, late, or alone
// in its chunk).
TYPED_TEST(LinearCrossEntropy, NonFiniteLogitsFollowThePolicy) {
  using T = TypeParam;
  const T big = std::numeric_limits<T>::max();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const T inf = std::numeric_limits<T>::infinity();
  const Index V = 130;
  struct special_row {
    const char* what;
    std::vector<std::pair<Index, T>> entries;  // (class, value of H)
    std::int64_t target;
  };
  const std::vector<special_row> cases = {
      {"one +inf, not the target", {{5, big}}, 7},
      {"one +inf, late, on the target", {{120, big}}, 120},
      {"two +inf", {{5, big}, {90, big}}, 7},
      {"-inf, not the target", {{100, -big}, {3, -big}}, 7},
      {"-inf on the target", {{7, -big}}, 7},
      {"NaN", {{60, nan}}, 7},
  };
  for (const special_row& c : cases) {
    for (double eps : {0.0, 0.1}) {
      layer<T> l = exact_layer<T>(2, V, T(2), 505);
      l.b(V - 1) = -inf;
      for (const auto& [cls, value] : c.entries) l.h(1, cls) = value;
      l.y = {4, c.target};
      const auto z = exact_logits(l, T(2));
      const spec s{smax::reduction::sum, eps, -100, false, 1.0};
      options_for<T> base(s, V);
      const auto expected = smax::cross_entropy_with_grad(z, l.y, smax::rowwise, base.o);
      const Mat<T> expected_dh = expected.grad * T(2);
      for (Index classes : {Index(0), Index(1), Index(7), Index(64)}) {
        SCOPED_TRACE(std::string(c.what) + " eps=" + std::to_string(eps) + " classes " +
                     std::to_string(classes));
        options_for<T> of(s, V, 0, classes);
        const auto r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, of.o);
        if (std::isfinite(expected.loss)) {
          EXPECT_TRUE(close(r.loss, expected.loss, 4 * std::numeric_limits<T>::epsilon()));
        } else {
          EXPECT_TRUE(smax_test::same_values(Vec<T>::Constant(1, expected.loss),
                                             Vec<T>::Constant(1, r.loss)))
              << r.loss << " vs " << expected.loss;
        }
        // NaN and infinities in the same places, finite entries close.
        EXPECT_TRUE(all_close(r.dH, expected_dh, 8 * std::numeric_limits<T>::epsilon(), 1.0));
      }
    }
  }
}

// Huge logits, no overflow into NaN, one pass or two (where the running maximum jumps by
// up to max), two tokens (their summed losses stay below max): |z| <= max / 8 at T = 1,
// |z| <= 3 max / 4 at T = 4 (a spread beyond max: the exponents are halved first), both
// without smoothing (whose sum over the classes of (max - z_c) / T would itself exceed
// max); and |z| <= max / 2048 with smoothing.
TYPED_TEST(LinearCrossEntropy, HugeLogitsDoNotOverflow) {
  using T = TypeParam;
  const Index V = 130;
  const T scale = std::numeric_limits<T>::max() / T(4);  // W = (max / 4) I
  struct huge_case {
    double t;
    T h_scale;
    double eps;
  };
  for (const huge_case& c : {huge_case{1.0, T(0.125), 0.0}, huge_case{4.0, T(0.75), 0.0},
                             huge_case{1.0, T(1) / T(2048), 0.1}}) {
    layer<T> l = exact_layer<T>(2, V, scale, 606);  // H in [-4, 4], dyadic
    l.h *= c.h_scale;
    l.b.setZero();
    const auto z = exact_logits(l, scale);
    const spec s{smax::reduction::mean, c.eps, -100, false, c.t};
    options_for<T> base(s, V);
    const auto expected = smax::cross_entropy_with_grad(z, l.y, smax::rowwise, base.o);
    ASSERT_TRUE(std::isfinite(expected.loss));
    ASSERT_GT(expected.loss, std::numeric_limits<T>::max() / T(1e5));
    for (Index classes : {Index(0), Index(1), Index(7)}) {
      SCOPED_TRACE("T=" + std::to_string(c.t) + " eps=" + std::to_string(c.eps) + " classes " +
                   std::to_string(classes));
      options_for<T> of(s, V, 0, classes);
      const auto r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, of.o);
      EXPECT_TRUE(close(r.loss, expected.loss, 4 * std::numeric_limits<T>::epsilon()));
      EXPECT_TRUE(r.dH.allFinite());
      // dH = scale G; compare G.
      EXPECT_TRUE(
          grad_close((r.dH / scale).eval(), expected.grad, 8 * std::numeric_limits<T>::epsilon()));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Gradients against finite differences (double)

TYPED_TEST(LinearCrossEntropy, GradientsMatchFiniteDifferences) {
  using T = TypeParam;
  const layer<double> l = random_layer<double>(5, 6, 3, 707);
  const layer<T> lt{l.h.cast<T>(), l.w.cast<T>(), l.b.cast<T>(), l.y};
  for (const spec& s :
       {spec{smax::reduction::mean, 0.1, -100, true, 1.5}, spec{smax::reduction::sum}}) {
    for (Index classes : {Index(0), Index(2)}) {
      SCOPED_TRACE(describe(s) + " classes " + std::to_string(classes));
      options_for<double> od(s, 6, 0, classes);
      const auto fh = [&](const Eigen::MatrixXd& x) {
        return smax::linear_cross_entropy(x, l.w, l.b, l.y, od.o);
      };
      const auto fw = [&](const Eigen::MatrixXd& x) {
        return smax::linear_cross_entropy(l.h, x, l.b, l.y, od.o);
      };
      const auto fb = [&](const Eigen::MatrixXd& x) {
        return smax::linear_cross_entropy(l.h, l.w, x.col(0), l.y, od.o);
      };
      options_for<T> of(s, 6, 0, classes);
      const auto r = smax::linear_cross_entropy_with_grad(lt.h, lt.w, lt.b, lt.y, of.o);
      EXPECT_TRUE(all_close(r.dH, numeric_grad(fh, l.h), tol<T>::fd, 1e-2));
      EXPECT_TRUE(all_close(r.dW, numeric_grad(fw, l.w), tol<T>::fd, 1e-2));
      EXPECT_TRUE(all_close(r.db, numeric_grad(fb, Eigen::MatrixXd(l.b)), tol<T>::fd, 1e-2));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Edge cases

TYPED_TEST(LinearCrossEntropy, EmptyAndDegenerateLayers) {
  using T = TypeParam;
  const layer<T> l = random_layer<T>(6, 4, 3, 808);
  smax::linear_cross_entropy_options<T> sum;
  sum.reduction = smax::reduction::sum;
  for (Index classes : {Index(0), Index(1)}) {
    SCOPED_TRACE("classes " + std::to_string(classes));
    smax::linear_cross_entropy_options<T> mean;
    mean.chunk_classes = classes;
    sum.chunk_classes = classes;

    // No tokens: the mean of nothing is 0/0 = NaN, the sum 0; dW and db are 0.
    const Mat<T> h0(0, 3);
    const std::vector<int> none;
    const auto r0 = smax::linear_cross_entropy_with_grad(h0, l.w, l.b, none, mean);
    EXPECT_TRUE(std::isnan(r0.loss));
    EXPECT_EQ(r0.dH.rows(), 0);
    EXPECT_EQ(r0.dH.cols(), 3);
    EXPECT_TRUE(smax_test::same_values(Mat<T>::Zero(4, 3), r0.dW));
    EXPECT_TRUE(smax_test::same_values(Vec<T>::Zero(4), r0.db));
    EXPECT_EQ(smax::linear_cross_entropy(h0, l.w, l.b, none, sum), T(0));

    // Every token ignored: the same, with dH = 0.
    const std::vector<int> ignored(6, -100);
    const auto ri = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, ignored, mean);
    EXPECT_TRUE(std::isnan(ri.loss));
    EXPECT_TRUE(smax_test::same_values(Mat<T>::Zero(6, 3), ri.dH));
    EXPECT_TRUE(smax_test::same_values(Mat<T>::Zero(4, 3), ri.dW));
    EXPECT_EQ(smax::linear_cross_entropy(l.h, l.w, l.b, ignored, sum), T(0));

    // One class: p = 1, loss 0 and gradients exactly 0.
    const std::vector<int> zeros(6, 0);
    const auto r1 =
        smax::linear_cross_entropy_with_grad(l.h, l.w.topRows(1), l.b.head(1), zeros, mean);
    EXPECT_EQ(r1.loss, T(0));
    EXPECT_TRUE(smax_test::same_values(Mat<T>::Zero(6, 3), r1.dH));
    EXPECT_TRUE(smax_test::same_values(Mat<T>::Zero(1, 3), r1.dW));
    EXPECT_TRUE(smax_test::same_values(Vec<T>::Zero(1), r1.db));

    // No classes (every token must then be ignored).
    const auto rv0 =
        smax::linear_cross_entropy_with_grad(l.h, Mat<T>(0, 3), Vec<T>(0), ignored, sum);
    EXPECT_EQ(rv0.loss, T(0));
    EXPECT_EQ(rv0.dW.rows(), 0);
    EXPECT_EQ(rv0.db.size(), 0);

    // Hidden size 0: the logits are the bias, the same for every token (H and W hold no
    // storage at all; chunks of 2 rows step past it).
    const Mat<T> hd0(6, 0), wd0(4, 0);
    const Mat<T> zb = l.b.transpose().replicate(6, 1);
    const auto expected = smax::cross_entropy_with_grad(zb, l.y, smax::rowwise);
    for (Index rows : {Index(0), Index(2)}) {
      mean.chunk_rows = rows;
      const auto rd = smax::linear_cross_entropy_with_grad(hd0, wd0, l.b, l.y, mean);
      EXPECT_TRUE(close(rd.loss, expected.loss, 4 * std::numeric_limits<T>::epsilon()));
      EXPECT_EQ(rd.dH.rows(), 6);
      EXPECT_EQ(rd.dH.cols(), 0);
      EXPECT_EQ(rd.dW.rows(), 4);
      EXPECT_EQ(rd.dW.cols(), 0);
      EXPECT_TRUE(
          grad_close(rd.db, Vec<T>(expected.grad.colwise().sum().transpose()), grad_tol<T>()));
    }
  }
}

// An ignored token (padding) adds nothing, even when its row of H is not finite: 0 * NaN
// must not reach dW.
TYPED_TEST(LinearCrossEntropy, IgnoredTokensWithNonFiniteHiddenStatesAddNothing) {
  using T = TypeParam;
  const layer<T> l = random_layer<T>(7, 9, 4, 909);  // token 1 (and 6) ignored
  layer<T> bad = l;
  bad.h(1, 2) = std::numeric_limits<T>::quiet_NaN();
  bad.h(6, 0) = std::numeric_limits<T>::infinity();
  layer<T> zeroed = l;
  zeroed.h.row(1).setZero();
  zeroed.h.row(6).setZero();
  for (Index classes : {Index(0), Index(4)}) {
    SCOPED_TRACE("classes " + std::to_string(classes));
    smax::linear_cross_entropy_options<T> o;
    o.chunk_classes = classes;
    const auto expected = smax::linear_cross_entropy_with_grad(zeroed.h, l.w, l.b, l.y, o);
    const auto r = smax::linear_cross_entropy_with_grad(bad.h, l.w, l.b, l.y, o);
    EXPECT_EQ(r.loss, expected.loss);
    EXPECT_TRUE(smax_test::same_values(expected.dH, r.dH));
    EXPECT_TRUE(smax_test::same_values(expected.dW, r.dW));
    EXPECT_TRUE(smax_test::same_values(expected.db, r.db));
  }
}

// ---------------------------------------------------------------------------------------
// Forms, argument types, aliasing

TYPED_TEST(LinearCrossEntropy, AllFormsAgree) {
  using T = TypeParam;
  const layer<T> l = random_layer<T>(8, 10, 5, 1001);
  smax::cross_entropy_options<T> ce;  // converts to linear_cross_entropy_options
  ce.label_smoothing = T(0.1);
  ce.temperature = T(1.3);
  const auto r = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, ce);
  EXPECT_EQ(smax::linear_cross_entropy(l.h, l.w, l.b, l.y, ce), r.loss);
  Mat<T> dh, dw;  // resized
  Vec<T> db;
  EXPECT_EQ(smax::linear_cross_entropy_with_grad_into(dh, dw, db, l.h, l.w, l.b, l.y, ce), r.loss);
  EXPECT_TRUE(smax_test::bit_equal(r.dH, dh));
  EXPECT_TRUE(smax_test::bit_equal(r.dW, dw));
  EXPECT_TRUE(smax_test::bit_equal(r.db, db));
  // Without a bias: the same as a zero bias.
  const Vec<T> zero = Vec<T>::Zero(10);
  const auto rz = smax::linear_cross_entropy_with_grad(l.h, l.w, zero, l.y, ce);
  const auto rn = smax::linear_cross_entropy_with_grad(l.h, l.w, l.y, ce);
  EXPECT_EQ(smax::linear_cross_entropy(l.h, l.w, l.y, ce), rn.loss);
  EXPECT_EQ(rn.loss, rz.loss);
  EXPECT_TRUE(smax_test::bit_equal(rz.dH, rn.dH));
  EXPECT_TRUE(smax_test::bit_equal(rz.dW, rn.dW));
  Mat<T> dh2 = Mat<T>::Constant(8, 5, T(3)), dw2 = Mat<T>::Constant(10, 5, T(3));
  EXPECT_EQ(smax::linear_cross_entropy_with_grad_into(dh2, dw2, l.h, l.w, l.y, ce), rn.loss);
  EXPECT_TRUE(smax_test::bit_equal(rn.dH, dh2));
  EXPECT_TRUE(smax_test::bit_equal(rn.dW, dw2));

  // Large enough for the automatic chunks of the two forms to differ (whole rows with
  // gradients, all rows x part of the classes for the loss alone): a few ULP apart, and
  // equal with the same explicit chunks.
  const layer<T> big = random_layer<T>(300, 2000, 2, 1002);
  const auto rb = smax::linear_cross_entropy_with_grad(big.h, big.w, big.b, big.y, ce);
  EXPECT_TRUE(close(smax::linear_cross_entropy(big.h, big.w, big.b, big.y, ce), rb.loss,
                    4 * std::numeric_limits<T>::epsilon()));
  smax::linear_cross_entropy_options<T> same = ce;
  same.chunk_rows = 300;
  same.chunk_classes = 300;
  EXPECT_EQ(smax::linear_cross_entropy(big.h, big.w, big.b, big.y, same),
            smax::linear_cross_entropy_with_grad(big.h, big.w, big.b, big.y, same).loss);
}

TYPED_TEST(LinearCrossEntropy, AcceptsEveryArgumentType) {
  using T = TypeParam;
  const layer<T> l = random_layer<T>(6, 7, 4, 1101);
  smax::linear_cross_entropy_options<T> o;
  o.label_smoothing = T(0.05);
  const auto ref = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, o);
  const double r = 4 * std::numeric_limits<T>::epsilon();
  const auto same = [&](const auto& res) {
    EXPECT_TRUE(close(res.loss, ref.loss, r));
    EXPECT_TRUE(grad_close(res.dH, ref.dH, r));
    EXPECT_TRUE(grad_close(res.dW, ref.dW, r));
    // db in the bias's orientation.
    EXPECT_TRUE(grad_close(Eigen::Map<const Vec<T>>(res.db.data(), res.db.size()), ref.db, r));
  };

  // Row-major matrices, arrays, a row-vector bias, targets of other integer types.
  const smax_test::MatR<T> hr = l.h, wr = l.w;
  same(smax::linear_cross_entropy_with_grad(hr, wr, l.b, l.y, o));
  const Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic> ha = l.h.array(), wa = l.w.array();
  const Eigen::Array<T, 1, Eigen::Dynamic> ba = l.b.transpose().array();
  Eigen::VectorXi yi(6);
  Eigen::Array<long, Eigen::Dynamic, 1> yl(6);
  for (Index n = 0; n < 6; ++n) yi(n) = static_cast<int>(yl(n) = l.y[static_cast<size_t>(n)]);
  const auto rarr = smax::linear_cross_entropy_with_grad(ha, wa, ba, yi, o);
  static_assert(std::is_same_v<typename decltype(rarr.dH)::PlainObject,
                               Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic>>);
  static_assert(std::is_same_v<decltype(rarr.db), Eigen::Array<T, 1, Eigen::Dynamic>>);
  same(rarr);
  EXPECT_EQ(smax::linear_cross_entropy(l.h, l.w, l.b, yl, o), ref.loss);

  // Fixed sizes stay fixed.
  const Eigen::Matrix<T, 6, 4> hf = l.h;
  const auto rf = smax::linear_cross_entropy_with_grad(hf, l.w, l.b, l.y, o);
  static_assert(std::is_same_v<decltype(rf.dH), Eigen::Matrix<T, 6, 4>>);
  same(rf);

  // Blocks, Maps (one with a non-unit stride: copied), Ref and an expression.
  Mat<T> big = Mat<T>::Zero(9, 9);
  big.block(1, 2, 6, 4) = l.h;
  same(smax::linear_cross_entropy_with_grad(big.block(1, 2, 6, 4), l.w, l.b, l.y, o));
  std::vector<T> strided(static_cast<size_t>(2 * 7 * 4));
  Eigen::Map<Mat<T>, 0, Eigen::Stride<Eigen::Dynamic, 2>> ws(
      strided.data(), 7, 4, Eigen::Stride<Eigen::Dynamic, 2>(14, 2));
  ws = l.w;
  same(smax::linear_cross_entropy_with_grad(l.h, ws, l.b, l.y, o));
  const Eigen::Ref<const Mat<T>> href(l.h);
  same(smax::linear_cross_entropy_with_grad(href, l.w, l.b, l.y, o));
  same(smax::linear_cross_entropy_with_grad(l.h * T(2) / T(2), l.w, l.b.array() + T(0), l.y, o));

  // Outputs: blocks of larger matrices (fixed shape), row-major, and strided storage.
  Mat<T> dh_big = Mat<T>::Constant(8, 8, T(42));
  smax_test::MatR<T> dw_rm(7, 4);
  std::vector<T> db_storage(14, T(42));
  Eigen::Map<Vec<T>, 0, Eigen::InnerStride<2>> db_strided(db_storage.data(), 7);
  std::vector<T> dh_storage(static_cast<size_t>(2 * 6 * 4));
  Eigen::Map<Mat<T>, 0, Eigen::Stride<Eigen::Dynamic, 2>> dh_strided(
      dh_storage.data(), 6, 4, Eigen::Stride<Eigen::Dynamic, 2>(12, 2));
  EXPECT_TRUE(close(smax::linear_cross_entropy_with_grad_into(dh_big.block(1, 1, 6, 4), dw_rm,
                                                              db_strided, l.h, l.w, l.b, l.y, o),
                    ref.loss, r));
  EXPECT_TRUE(grad_close(dh_big.block(1, 1, 6, 4), ref.dH, r));
  EXPECT_EQ(dh_big(0, 0), T(42));
  EXPECT_EQ(dh_big(7, 5), T(42));
  EXPECT_TRUE(grad_close(dw_rm, ref.dW, r));
  EXPECT_TRUE(grad_close(db_strided, ref.db, r));
  EXPECT_EQ(db_storage[1], T(42));
  Mat<T> dw_plain;
  smax::linear_cross_entropy_with_grad_into(dh_strided, dw_plain, l.h, l.w, l.y, o);
  const auto rn = smax::linear_cross_entropy_with_grad(l.h, l.w, l.y, o);
  EXPECT_TRUE(grad_close(dh_strided, rn.dH, r));
}

// A gradient written over its own input (the update H -= lr dH reuses the storage): the
// input is copied first, so the result is the same.
TYPED_TEST(LinearCrossEntropy, GradientsMayOverwriteTheirInputs) {
  using T = TypeParam;
  const layer<T> l = random_layer<T>(6, 7, 4, 1201);
  for (Index classes : {Index(0), Index(3)}) {
    SCOPED_TRACE("classes " + std::to_string(classes));
    smax::linear_cross_entropy_options<T> o;
    o.chunk_classes = classes;
    const auto ref = smax::linear_cross_entropy_with_grad(l.h, l.w, l.b, l.y, o);
    Mat<T> h = l.h, w = l.w;
    Vec<T> b = l.b;
    EXPECT_EQ(smax::linear_cross_entropy_with_grad_into(h, w, b, h, w, b, l.y, o), ref.loss);
    EXPECT_TRUE(smax_test::bit_equal(ref.dH, h));
    EXPECT_TRUE(smax_test::bit_equal(ref.dW, w));
    EXPECT_TRUE(smax_test::bit_equal(ref.db, b));
  }
}

// The automatic chunk shape follows the documented rule.
TEST(LinearCrossEntropyPlan, AutomaticChunksFollowTheDocumentedRule) {
  const auto shape = [](Index n, Index v, Index d, Index rows, Index classes, bool grads) {
    const auto p = smax::detail::linear::make_plan(n, v, d, rows, classes, grads);
    return std::to_string(p.rows) + "x" + std::to_string(p.classes);
  };
  // Budget N d = 4M logits: 131 whole rows of 32000 classes. Of 128256 classes fewer than
  // 128 whole rows fit, but 128 rows are 1/32 of the logits: one pass all the same. With
  // fewer tokens, all rows x 1024 classes, two passes.
  EXPECT_EQ(shape(4096, 32000, 1024, 0, 0, true), "131x32000");
  EXPECT_EQ(shape(4096, 128256, 1024, 0, 0, true), "128x128256");
  EXPECT_EQ(shape(4095, 128256, 1024, 0, 0, true), "4095x1024");
  // The loss alone: all rows, as many classes as fit.
  EXPECT_EQ(shape(4096, 32000, 1024, 0, 0, false), "4096x1024");
  // Small problems: one chunk (the budget is at least 2^18 logits).
  EXPECT_EQ(shape(10, 20, 5, 0, 0, true), "10x20");
  EXPECT_EQ(shape(10, 20, 5, 0, 0, false), "10x20");
  // Few tokens: all of them fit as whole rows when min(N, 128) rows do.
  EXPECT_EQ(shape(16, 16000, 64, 0, 0, true), "16x16000");
  // Given rows: classes fill the budget (at least 256); given classes: rows do (at least 1).
  EXPECT_EQ(shape(4096, 128256, 1024, 512, 0, true), "512x8192");
  EXPECT_EQ(shape(4096, 128256, 1024, 16, 0, true), "16x128256");
  EXPECT_EQ(shape(4096, 128256, 1024, 0, 2048, true), "2048x2048");
  EXPECT_EQ(shape(4096, 128256, 1024, 0, 1 << 30, false), "32x128256");
  EXPECT_EQ(shape(100, 50, 8, 1000, 1000, true), "100x50");
}

// ---------------------------------------------------------------------------------------
// Errors: message names function, argument and value; outputs untouched

TYPED_TEST(LinearCrossEntropy, BadArgumentsThrowAndLeaveOutputsUntouched) {
  using T = TypeParam;
  const layer<T> l = random_layer<T>(3, 4, 2, 1301);
  const std::vector<int> y = {0, 3, 1};
  Mat<T> dh = Mat<T>::Constant(3, 2, T(7)), dw = Mat<T>::Constant(4, 2, T(7));
  Vec<T> db = Vec<T>::Constant(4, T(7));
  const auto untouched = [&] {
    return (dh.array() == T(7)).all() && (dw.array() == T(7)).all() && (db.array() == T(7)).all();
  };
  const smax::linear_cross_entropy_options<T> plain;
  const auto msg = [&](const auto& w, const auto& b, const auto& targets,
                       const smax::linear_cross_entropy_options<T>& o) {
    return error_of(
        [&] { smax::linear_cross_entropy_with_grad_into(dh, dw, db, l.h, w, b, targets, o); });
  };
  const auto has = [](const std::string& m, const std::string& part) {
    return m.find(part) != std::string::npos;
  };
  const char* fn = "smax::linear_cross_entropy_with_grad_into: ";

  std::string m = msg(l.w, l.b, y, plain);
  EXPECT_EQ(m, "");
  dh.setConstant(T(7));
  dw.setConstant(T(7));
  db.setConstant(T(7));

  m = msg(Mat<T>(4, 3), l.b, y, plain);
  EXPECT_TRUE(has(m, fn)) << m;
  EXPECT_TRUE(has(m, "argument 'W' is of shape 4x3; expected 2 columns")) << m;
  m = msg(l.w, Vec<T>(5), y, plain);
  EXPECT_TRUE(has(m, "argument 'b' is of length 5; expected one entry per class (4")) << m;
  m = msg(l.w, l.b, std::vector<int>{0, 4, 1}, plain);
  EXPECT_TRUE(has(m, "argument 'targets' is 4 at sample 1; expected a class index in [0, 4)")) << m;
  m = msg(l.w, l.b, std::vector<int>{0, -1, 1}, plain);
  EXPECT_TRUE(has(m, "'targets' is -1 at sample 1")) << m;
  m = msg(l.w, l.b, std::vector<int>{0, 1}, plain);
  EXPECT_TRUE(has(m, "'targets' is of length 2; expected one class index per sample (3)")) << m;

  smax::linear_cross_entropy_options<T> o = plain;
  for (T t :
       {T(0), T(-1), std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN()}) {
    o.temperature = t;
    EXPECT_TRUE(has(msg(l.w, l.b, y, o), "argument 'options.temperature' is"));
  }
  o = plain;
  for (T eps : {T(-0.1), T(1.5), std::numeric_limits<T>::quiet_NaN()}) {
    o.label_smoothing = eps;
    EXPECT_TRUE(has(msg(l.w, l.b, y, o), "argument 'options.label_smoothing' is"));
  }
  o = plain;
  o.reduction = smax::reduction::none;
  m = msg(l.w, l.b, y, o);
  EXPECT_TRUE(has(m, "argument 'options.reduction' is reduction::none")) << m;
  o = plain;
  Vec<T> w3(3), wneg(4);
  w3 << 1, 1, 1;
  wneg << 1, -2, 1, 1;
  o.weight = w3;
  EXPECT_TRUE(has(msg(l.w, l.b, y, o), "argument 'options.weight' is of length 3"));
  o.weight = wneg;
  EXPECT_TRUE(has(msg(l.w, l.b, y, o), "argument 'options.weight' is -2 at class 1"));
  o = plain;
  o.chunk_rows = -1;
  m = msg(l.w, l.b, y, o);
  EXPECT_TRUE(has(m, "argument 'options.chunk_rows' is -1; expected a number of rows >= 0")) << m;
  o = plain;
  o.chunk_classes = -5;
  m = msg(l.w, l.b, y, o);
  EXPECT_TRUE(has(m, "argument 'options.chunk_classes' is -5")) << m;
  EXPECT_TRUE(untouched());

  // Outputs that cannot take their shapes, or that overlap each other.
  Mat<T> store = Mat<T>::Constant(6, 6, T(7));
  m = error_of([&] {
    smax::linear_cross_entropy_with_grad_into(store.block(0, 0, 2, 2), dw, db, l.h, l.w, l.b, y);
  });
  EXPECT_TRUE(has(m, "argument 'dH' is of shape 2x2; expected storage of shape 3x2")) << m;
  m = error_of([&] {
    smax::linear_cross_entropy_with_grad_into(dh, store.block(0, 0, 3, 2), db, l.h, l.w, l.b, y);
  });
  EXPECT_TRUE(has(m, "argument 'dW' is of shape 3x2; expected storage of shape 4x2")) << m;
  m = error_of([&] {
    smax::linear_cross_entropy_with_grad_into(dh, dw, store.col(0).head(3), l.h, l.w, l.b, y);
  });
  EXPECT_TRUE(has(m, "argument 'db' is of length 3; expected a vector of length 4")) << m;
  m = error_of([&] {
    smax::linear_cross_entropy_with_grad_into(store.block(0, 0, 3, 2), store.block(2, 0, 4, 2), db,
                                              l.h, l.w, l.b, y);
  });
  EXPECT_TRUE(has(m, "argument 'dW' is storage that overlaps 'dH'")) << m;
  m = error_of([&] {
    smax::linear_cross_entropy_with_grad_into(dh, store.block(0, 0, 4, 2), store.col(1).head(4),
                                              l.h, l.w, l.b, y);
  });
  EXPECT_TRUE(has(m, "argument 'db' is storage that overlaps 'dH' or 'dW'")) << m;
  EXPECT_TRUE((store.array() == T(7)).all());
  EXPECT_TRUE(untouched());

  // The loss-only and struct forms name themselves.
  m = error_of([&] { smax::linear_cross_entropy(l.h, l.w, std::vector<int>{0, 9, 1}); });
  EXPECT_TRUE(has(m, "smax::linear_cross_entropy: argument 'targets' is 9 at sample 1")) << m;
  m = error_of([&] { smax::linear_cross_entropy_with_grad(l.h, l.w, Vec<T>(2), y); });
  EXPECT_TRUE(has(m, "smax::linear_cross_entropy_with_grad: argument 'b' is of length 2")) << m;
}

}  // namespace
