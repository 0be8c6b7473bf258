// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

/// \file
/// Shared pieces of the libFuzzer targets: turning bytes into shapes, options and
/// floating-point values (NaN, infinities, subnormals and extremes included), laying a
/// matrix out in memory in several ways, a long double reference for one distribution that
/// follows the README's numerical policy, and a check that aborts with a message (libFuzzer
/// then saves the input as a reproducer).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <smax/error.hpp>

#include <Eigen/Core>

#if defined(SMAX_TEST_EXTERN_KERNELS) && SMAX_TEST_EXTERN_KERNELS
#include "../kernel_instances.hpp"  // the kernels come compiled (tests/fuzz/CMakeLists.txt)
#endif

namespace smax_fuzz {

/// The message of the last smax::error a target caught, printed when an invariant fails.
inline std::string& last_error() {
  static std::string message = "(none)";
  return message;
}

/// Records a caught error's message for the failure report.
inline void note_error(const std::exception& e) { last_error() = e.what(); }

using Index = Eigen::Index;
using ld = long double;

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using MatR = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Reports a broken invariant and aborts, so libFuzzer keeps the input.
#define SMAX_FUZZ_CHECK(cond, ...)                                                          \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "\n%s:%d: invariant failed: %s\n  ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                    \
      std::fprintf(stderr, "\n  last smax::error: %s\n", smax_fuzz::last_error().c_str());  \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

/// Reads the fuzzer's bytes front to back; past the end every read gives 0.

class bytes {
 public:
  bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool flag() { return (byte() & 1) != 0; }
  /// An integer in [lo, hi].
  Index in(Index lo, Index hi) {
    const std::uint32_t r = std::uint32_t(byte()) | (std::uint32_t(byte()) << 8);
    return lo + static_cast<Index>(r % static_cast<std::uint32_t>(hi - lo + 1));
  }
  std::size_t left() const { return size_ - std::min(pos_, size_); }

  /// A value of T: mostly ordinary magnitudes, often a special one (NaN, +-inf, +-0,
  /// subnormals, the smallest normal, +-max, values near exp's overflow and underflow
  /// thresholds), sometimes raw bits (any float at all).
  template <typename T>
  T value() {
    using L = std::numeric_limits<T>;
    const std::uint8_t kind = byte();
    const std::uint8_t b = byte();
    const T small = static_cast<T>(static_cast<int>(b) - 128) / T(8);  // [-16, 16)
    switch (kind % 32) {
      case 0:
        return L::quiet_NaN();
      case 1:
        return L::infinity();
      case 2:
      case 3:
        return -L::infinity();
      case 4:
        return b & 1 ? T(-0.0) : T(0);
      case 5:
        return L::denorm_min() * static_cast<T>(1 + b) * (b & 1 ? T(-1) : T(1));
      case 6:
        return L::min() * (b & 1 ? T(-1) : T(1));
      case 7:
        return L::max() * (b & 1 ? T(-1) : T(1)) / static_cast<T>(1 + (b >> 1));
      case 8:  // near log(max): exp overflows just above
        return std::log(L::max()) + small / T(16);
      case 9:  // near log(min) and log(denorm_min): exp turns subnormal / zero
        return (b & 1 ? std::log(L::min()) : std::log(L::denorm_min())) + small / T(16);
      case 10:
        return small * T(1e30);
      case 11: {
        T v;
        if constexpr (std::is_same_v<T, float>) {
          std::uint32_t u = 0;
          for (int i = 0; i < 4; ++i) u = (u << 8) | byte();
          std::memcpy(&v, &u, sizeof v);
        } else {
          std::uint64_t u = 0;
          for (int i = 0; i < 8; ++i) u = (u << 8) | byte();
          std::memcpy(&v, &u, sizeof v);
        }
        return v;
      }
      case 12:
      case 13:
        return small * T(100);
      default:
        return small;
    }
  }

  /// A finite value of ordinary size (for probabilities, weights, upstream gradients).
  template <typename T>
  T plain() {
    return static_cast<T>(static_cast<int>(byte()) - 128) / T(16);
  }

  /// A temperature: often 1, valid values from tiny to huge, 0 and +inf (forward limits),
  /// and invalid ones (negative, NaN, -inf).
  template <typename T>
  T temperature() {
    const std::uint8_t k = byte();
    const std::uint8_t b = byte();
    switch (k % 16) {
      case 0:
      case 1:
      case 2:
        return T(1);
      case 3:
        return T(0);
      case 4:
        return std::numeric_limits<T>::infinity();
      case 5:
        return -static_cast<T>(1 + b) / T(16);
      case 6:
        return std::numeric_limits<T>::quiet_NaN();
      case 7:
        return -std::numeric_limits<T>::infinity();
      case 8:
        return std::numeric_limits<T>::denorm_min() * static_cast<T>(1 + b);
      case 9:
        return std::numeric_limits<T>::max() / static_cast<T>(1 + b);
      case 10:
        return T(-0.0);
      default:
        return std::pow(T(10), static_cast<T>(static_cast<int>(b) - 128) / T(40));  // 1e-3.2..1e3.2
    }
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

/// Storage for a rows x cols matrix with arbitrary inner and outer strides, so the same
/// values can be presented as an Eigen::Map with strides (both storage orders).
template <typename T>
struct strided_storage {
  std::vector<T> buffer;
  Index rows = 0, cols = 0, inner = 1, outer = 1;
  bool row_major = false;

  strided_storage(Index r, Index c, Index inner_stride, Index outer_pad, bool rm, T fill)
      : rows(r), cols(c), inner(inner_stride), row_major(rm) {
    const Index inner_len = rm ? c : r;
    const Index outer_len = rm ? r : c;
    outer = std::max<Index>(1, inner_len * inner + outer_pad);
    buffer.assign(static_cast<std::size_t>(std::max<Index>(1, outer_len * outer + inner)), fill);
  }
  T& at(Index i, Index j) {
    return row_major ? buffer[static_cast<std::size_t>(i * outer + j * inner)]
                     : buffer[static_cast<std::size_t>(j * outer + i * inner)];
  }
};

using DynStride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
template <typename T>
using MapC = Eigen::Map<Mat<T>, 0, DynStride>;
template <typename T>
using MapR = Eigen::Map<MatR<T>, 0, DynStride>;

template <typename T>
constexpr ld eps = static_cast<ld>(std::numeric_limits<T>::epsilon());
template <typename T>
constexpr ld tiny = static_cast<ld>(std::numeric_limits<T>::denorm_min());

/// ULP-free closeness: |a - e| <= tol, NaN only against NaN, infinities exact.
template <typename T>
bool close(T actual, ld expected, ld tol) {
  if (std::isnan(expected) || std::isnan(actual)) return std::isnan(expected) && std::isnan(actual);
  const T rounded = static_cast<T>(expected);
  if (std::isinf(rounded) || std::isinf(actual)) {
    // A finite reference within a few ULPs of the overflow threshold may round either way.
    const ld edge = static_cast<ld>(std::numeric_limits<T>::max()) * (1 - 64 * eps<T>);
    return rounded == actual ||
           (std::isinf(actual) && std::fabs(expected) >= edge && (actual > 0) == (expected > 0));
  }
  return std::fabs(static_cast<ld>(actual) - expected) <= tol;
}

template <typename T>
bool bit_equal(T a, T b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

template <typename A, typename B>
bool all_bit_equal(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index j = 0; j < a.cols(); ++j) {
    for (Index i = 0; i < a.rows(); ++i) {
      if (!bit_equal(a.derived().coeff(i, j), b.derived().coeff(i, j))) return false;
    }
  }
  return true;
}

/// Two vectors (either orientation) with the same entries, bit for bit.
template <typename A, typename B>
bool vector_bit_equal(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  if (a.size() != b.size()) return false;
  for (Index i = 0; i < a.size(); ++i) {
    if (!bit_equal(a.derived().coeff(i), b.derived().coeff(i))) return false;
  }
  return true;
}

/// The policy's answer for one distribution z at temperature t (>= 0, possibly +inf):
/// softmax and log_softmax in long double, and logsumexp (temperature-free). Also the
/// exponents d_i = (z_i - max) / t, for tolerances.
struct reference {
  std::vector<ld> p, logp, d;
  ld lse = 0;
  bool nan = false;  // the whole distribution is NaN
};

template <typename T>
reference reference_of(const std::vector<T>& z, T t) {
  const ld inf = std::numeric_limits<ld>::infinity();
  const ld nan = std::numeric_limits<ld>::quiet_NaN();
  const std::size_t n = z.size();
  reference r;
  r.p.assign(n, 0);
  r.logp.assign(n, -inf);
  r.d.assign(n, -inf);
  bool any_nan = false;
  std::size_t pos_inf = 0;
  ld m = -inf;
  for (T v : z) {
    any_nan = any_nan || std::isnan(v);
    pos_inf += (v == std::numeric_limits<T>::infinity()) ? 1 : 0;
    if (!std::isnan(v)) m = std::max(m, static_cast<ld>(v));
  }
  // logsumexp
  if (any_nan) {
    r.lse = nan;
  } else if (pos_inf > 0) {
    r.lse = inf;
  } else if (m == -inf) {
    r.lse = -inf;
  } else {
    ld s = 0;
    for (T v : z) s += std::exp(static_cast<ld>(v) - m);
    r.lse = m + std::log(s);
  }
  if (n == 0) return r;
  const auto fill_nan = [&] {
    r.nan = true;
    std::fill(r.p.begin(), r.p.end(), nan);
    std::fill(r.logp.begin(), r.logp.end(), nan);
  };
  if (any_nan || m == -inf || pos_inf > 1) {
    fill_nan();
    return r;
  }
  const auto select = [&](auto pred) {
    std::size_t k = 0;
    for (T v : z) k += pred(v) ? 1 : 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (pred(z[i])) {
        r.p[i] = 1.0L / static_cast<ld>(k);
        r.logp[i] = -std::log(static_cast<ld>(k));
        r.d[i] = 0;
      }
    }
  };
  if (pos_inf == 1) {
    select([](T v) { return v == std::numeric_limits<T>::infinity(); });
    return r;
  }
  if (t == T(0)) {
    select([&](T v) { return static_cast<ld>(v) == m; });
    return r;
  }
  if (std::isinf(t)) {
    select([](T v) { return v != -std::numeric_limits<T>::infinity(); });
    return r;
  }
  ld s = 0;
  for (std::size_t i = 0; i < n; ++i) {
    r.d[i] = (static_cast<ld>(z[i]) - m) / static_cast<ld>(t);
    s += std::exp(r.d[i]);
  }
  const ld log_s = std::log(s);
  for (std::size_t i = 0; i < n; ++i) {
    r.p[i] = std::exp(r.d[i]) / s;
    r.logp[i] = r.d[i] - log_s;
  }
  return r;
}

/// Tolerance of a softmax entry against the reference: generous ULPs, the documented
/// amplification |d| eps, and a few subnormal steps.
template <typename T>
ld softmax_tol(ld p, ld d) {
  const ld amp = std::isfinite(d) ? std::fabs(d) : 0;
  return (32 + 2 * amp) * eps<T> * p + 4 * tiny<T>;
}

/// Tolerance of a log-domain value: ULPs of max(|r|, 1) plus the exponent's rounding.
template <typename T>
ld log_tol(ld r, ld d) {
  const ld amp = std::isfinite(d) ? std::fabs(d) : 0;
  return 32 * eps<T> * std::max(std::fabs(r), 1.0L) + 4 * eps<T> * amp;
}

/// The three forms of a loss agree: loss_fn() (the loss), into_fn(map) (the loss, with the
/// gradient written into a rows x cols map) and with_grad_fn() (.loss and .grad). They throw
/// exactly when valid is false, and a throwing into_fn leaves the map untouched. Returns
/// loss_fn()'s loss (0 when it threw).
template <typename Plain, typename Loss, typename Into, typename WithGrad>
typename Plain::Scalar check_loss_forms(const char* name, Index rows, Index cols, bool valid,
                                        Loss&& loss_fn, Into&& into_fn, WithGrad&& with_grad_fn) {
  using T = typename Plain::Scalar;
  const T sentinel = T(-555);
  bool threw = false;
  T loss = 0;
  try {
    loss = loss_fn();
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "%s threw %d", name, int(threw));
  Plain g = Plain::Constant(rows, cols, sentinel);
  Eigen::Map<Plain> gm(g.data(), rows, cols);
  threw = false;
  T loss2 = 0;
  try {
    loss2 = into_fn(gm);
  } catch (const smax::error& e) {
    smax_fuzz::note_error(e);
    threw = true;
  }
  SMAX_FUZZ_CHECK(threw == !valid, "%s with_grad_into threw %d", name, int(threw));
  if (threw) {
    SMAX_FUZZ_CHECK((g.array() == sentinel).all(), "%s: gradient written before throwing", name);
  } else {
    SMAX_FUZZ_CHECK(bit_equal(loss, loss2), "%s loss %g vs with_grad_into %g", name, double(loss),
                    double(loss2));
    const auto r = with_grad_fn();
    SMAX_FUZZ_CHECK(bit_equal(r.loss, loss) && all_bit_equal(r.grad, g), "%s: with_grad differs",
                    name);
  }
  return loss;
}

/// The libFuzzer entry point of a target whose checks are run<float> and run<double>: the
/// first byte picks the type.
#define SMAX_FUZZ_FLOAT_AND_DOUBLE_TARGET                                             \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { \
    smax_fuzz::bytes in(data, size);                                                  \
    if (in.flag()) {                                                                  \
      run<float>(in);                                                                 \
    } else {                                                                          \
      run<double>(in);                                                                \
    }                                                                                 \
    return 0;                                                                         \
  }

/// Picks a loss reduction from one byte: mean (the options' default), sum or none. Returns
/// false for none, which the scalar-valued forms reject.
template <typename Reduction>
bool pick_reduction(bytes& in, Reduction& reduction) {
  switch (in.byte() % 3) {
    case 0:
      return true;
    case 1:
      reduction = Reduction::sum;
      return true;
    default:
      reduction = Reduction::none;
      return false;
  }
}

}  // namespace smax_fuzz
