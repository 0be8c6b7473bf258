// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
//
// Accuracy of smax's vectorised exp (smax::detail::pexp_accurate) in ULP of the correctly
// rounded result: every float (all 2^32 bit patterns, or a stride through them with
// --stride N) against double exp, and a dense sweep of doubles against long double expl.
// Also checks the special values (NaN, +-inf, exact 0 below the underflow threshold).
// Prints one line per range; exits 1 if any error exceeds --max-ulp (default 2, the documented
// bound).
//
//   exp_accuracy [--stride N] [--double-samples N] [--max-ulp U]

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>

#include <Eigen/Core>

#include <smax/detail/exp.hpp>

#if defined(__GNUC__)
// Packet types (__m128 ...) as template arguments drop their alignment attributes.
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace {

namespace ei = Eigen::internal;

struct stats {
  double max_ulp = 0;
  double arg = 0;
  std::uint64_t count = 0;
  std::uint64_t over_half = 0;  // results not correctly rounded
  void add(double ulp, double x) {
    ++count;
    if (ulp > 0.5) ++over_half;
    if (ulp > max_ulp) {
      max_ulp = ulp;
      arg = x;
    }
  }
  void print(const char* name) const {
    std::printf("%-34s %12llu values  max %.3f ULP at x = %.9g  (%.2e%% not correctly rounded)\n",
                name, static_cast<unsigned long long>(count), max_ulp, arg,
                count ? 100.0 * static_cast<double>(over_half) / static_cast<double>(count) : 0.0);
  }
};

// ULP of the target type T at the magnitude of the exact value ref (subnormal grid below).
template <typename T, typename R>
R ulp_at(R ref) {
  const int digits = std::numeric_limits<T>::digits;
  const int min_exp = std::numeric_limits<T>::min_exponent;  // 2^(min_exp-1) = smallest normal
  int e = 0;
  std::frexp(ref, &e);  // ref = m 2^e, 0.5 <= m < 1
  if (e < min_exp) e = min_exp;
  return std::ldexp(R(1), e - digits);
}

template <typename T, typename R>
double ulp_error(T got, R ref) {
  if (std::isnan(ref)) return std::isnan(got) ? 0.0 : 1e30;
  if (std::isinf(ref) || ref > R(std::numeric_limits<T>::max())) {
    // Rounds to +inf when ref >= max + ulp/2; accept either near the boundary.
    return std::isinf(got) ? 0.0 : double((ref - R(got)) / ulp_at<T>(R(got)));
  }
  if (std::isinf(got)) return 1e30;
  return double(std::fabs(R(got) - ref) / ulp_at<T>(ref));
}

using PacketF = ei::packet_traits<float>::type;
using PacketD = ei::packet_traits<double>::type;
constexpr int psf = ei::unpacket_traits<PacketF>::size;
constexpr int psd = ei::unpacket_traits<PacketD>::size;

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t stride = 1;
  std::uint64_t dsamples = 200000000;
  double max_allowed = 2.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--stride")) stride = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--double-samples"))
      dsamples = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--max-ulp")) max_allowed = std::strtod(argv[i + 1], nullptr);
  }
  std::printf("packet: %d floats, %d doubles (%s)\n", psf, psd, Eigen::SimdInstructionSetsInUse());
  bool ok = true;

  // float: every bit pattern (or every stride-th), normal results, subnormal results, zeros.
  {
    stats normal, subnormal, zero_or_inf;
    std::uint64_t bad_special = 0;
    alignas(64) float in[1024], out[1024];
    for (std::uint64_t b0 = 0; b0 < (std::uint64_t(1) << 32); b0 += 1024 * stride) {
      for (int i = 0; i < 1024; ++i) {
        const auto bits = static_cast<std::uint32_t>(b0 + std::uint64_t(i) * stride);
        std::memcpy(&in[i], &bits, 4);
      }
      for (int i = 0; i < 1024; i += psf) {
        ei::pstore(out + i, smax::detail::pexp_accurate(ei::pload<PacketF>(in + i)));
      }
      for (int i = 0; i < 1024; ++i) {
        const float x = in[i];
        const double ref = std::exp(static_cast<double>(x));
        if (std::isnan(x) || std::isinf(x)) {
          const bool good =
              std::isnan(x) ? std::isnan(out[i]) : (x > 0 ? out[i] == INFINITY : out[i] == 0.0f);
          bad_special += good ? 0 : 1;
          continue;
        }
        const double u = ulp_error<float>(out[i], ref);
        if (ref < double(std::numeric_limits<float>::denorm_min()) / 2 ||
            ref > double(std::numeric_limits<float>::max())) {
          zero_or_inf.add(u, x);
        } else if (ref < double(std::numeric_limits<float>::min())) {
          subnormal.add(u, x);
        } else {
          normal.add(u, x);
        }
      }
    }
    normal.print("float, normal results");
    subnormal.print("float, subnormal results");
    zero_or_inf.print("float, results 0 or inf");
    std::printf("float, NaN/inf inputs wrong: %llu\n",
                static_cast<unsigned long long>(bad_special));
    ok = ok && normal.max_ulp <= max_allowed && subnormal.max_ulp <= max_allowed &&
         zero_or_inf.max_ulp <= 0.5 && bad_special == 0;
  }

  // double: uniform over the whole range, dense near 0 and near the underflow threshold.
  {
    stats normal, subnormal, zero_or_inf;
    std::mt19937_64 rng(42);
    const double ranges[][2] = {{-746.0, 710.0}, {-1.0, 1.0}, {-745.2, -707.0}, {700.0, 709.8}};
    alignas(64) double in[1024], out[1024];
    for (const auto& rg : ranges) {
      std::uniform_real_distribution<double> dist(rg[0], rg[1]);
      for (std::uint64_t n = 0; n < dsamples / 4; n += 1024) {
        for (double& v : in) v = dist(rng);
        for (int i = 0; i < 1024; i += psd) {
          ei::pstore(out + i, smax::detail::pexp_accurate(ei::pload<PacketD>(in + i)));
        }
        for (int i = 0; i < 1024; ++i) {
          const long double ref = std::exp(static_cast<long double>(in[i]));
          const double u = ulp_error<double>(out[i], ref);
          if (ref < static_cast<long double>(std::numeric_limits<double>::denorm_min()) / 2 ||
              ref > static_cast<long double>(std::numeric_limits<double>::max())) {
            zero_or_inf.add(u, in[i]);
          } else if (ref < static_cast<long double>(std::numeric_limits<double>::min())) {
            subnormal.add(u, in[i]);
          } else {
            normal.add(u, in[i]);
          }
        }
      }
    }
    normal.print("double, normal results");
    subnormal.print("double, subnormal results");
    zero_or_inf.print("double, results 0 or inf");
    alignas(64) double sp[psd > 4 ? psd : 4] = {};
    const double specials[4] = {std::numeric_limits<double>::quiet_NaN(), -INFINITY, INFINITY,
                                -800.0};
    int bad = 0;
    for (int s = 0; s < 4; ++s) {
      for (int i = 0; i < psd; ++i) sp[i] = specials[s];
      ei::pstore(sp, smax::detail::pexp_accurate(ei::pload<PacketD>(sp)));
      const bool good = s == 0 ? std::isnan(sp[0]) : s == 2 ? sp[0] == INFINITY : sp[0] == 0.0;
      bad += good ? 0 : 1;
    }
    std::printf("double, NaN/inf/-800 inputs wrong: %d\n", bad);
    ok = ok && normal.max_ulp <= max_allowed && subnormal.max_ulp <= max_allowed &&
         zero_or_inf.max_ulp <= 0.5 && bad == 0;
  }
  std::printf("%s (limit %.2f ULP)\n", ok ? "PASS" : "FAIL", max_allowed);
  return ok ? 0 : 1;
}
