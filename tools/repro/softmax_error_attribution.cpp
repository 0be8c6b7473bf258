// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Splits softmax's error on contiguous rows (forward_one) into its sources, in ULPs of each
// output y_i = e_i / s, against MPFR (issue 5; docs/accuracy.md):
//   exp_i        the vectorised exp at the library's own exponent, e_i / exp(d_i) - 1
//   exps in sum  the exps' errors as they reach the sum, sum exp(d_j) / sum e_j - 1
//   summation    the library's sum of its own e_j against their exact sum
//   normalise    y_i against e_i / s computed exactly (reciprocal-multiply or division)
// The exponents d_i = z_i - max are the library's (rounded) ones, so exp's amplification of
// their rounding is not counted.
// Build from the repository root, then run with an optional number of rows per kind:
//   g++ -std=c++17 -O2 -Iinclude -isystem /usr/include/eigen3 -o attribution
//       tools/repro/softmax_error_attribution.cpp -lmpfr -lgmp   (one command; -march=native
//       for the AVX paths)

#include <smax/smax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <mpfr.h>

namespace {

using ld = long double;
using Index = Eigen::Index;

template <typename T>
ld ulp_of(ld x) {
  x = std::fabs(x);
  if (!(x >= static_cast<ld>(std::numeric_limits<T>::min()))) {
    return static_cast<ld>(std::numeric_limits<T>::denorm_min());
  }
  return std::ldexp(1.0L, std::ilogb(x) - (std::numeric_limits<T>::digits - 1));
}

struct maxima {
  ld total = 0, exp_i = 0, exps_in_sum = 0, summation = 0, normalise = 0;
  std::string worst;
};

template <typename T>
void run(const std::string& kind, int rows, maxima& mx) {
  namespace sd = smax::detail;
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0, 1);
  std::cauchy_distribution<double> cauchy(0, 1);
  std::uniform_int_distribution<int> length(1, 300);
  std::uniform_real_distribution<double> lift(10, 60);
  mpfr_t s, e;
  mpfr_init2(s, 2200);  // wide enough to add any doubles exactly
  mpfr_init2(e, 160);
  for (int r = 0; r < rows; ++r) {
    const Index n = length(rng);
    Eigen::Matrix<T, Eigen::Dynamic, 1> z(n);
    for (Index i = 0; i < n; ++i) {
      const double v = kind == "cauchy" ? cauchy(rng) : normal(rng);
      z(i) = static_cast<T>(kind == "N(0,30)" ? 30 * v : v);
    }
    if (kind == "one dominant")
      z(std::uniform_int_distribution<Index>(0, n - 1)(rng)) += T(lift(rng));
    const T m = z.maxCoeff();
    const Eigen::Matrix<T, Eigen::Dynamic, 1> y = smax::softmax(z);

    std::vector<T> el(n), scratch(n);
    for (Index i = 0; i < n; ++i) {
      el[i] = Eigen::internal::pfirst(sd::pexp_accurate(Eigen::internal::pset1<Packet>(z(i) - m)));
    }
    ld sl;  // the library's sum, as forward_one forms it
    if (n < Eigen::internal::packet_traits<T>::size) {
      sd::compensated_sum<sd::acc_t<T>> acc;
      sd::add_unit(acc, el.data(), n);
      sl = acc.total();
    } else {
      sd::compensated_sum<sd::acc_t<T>> acc;
      sd::exp_sum<true>(z.data(), 1, scratch.data(), 1, n, sd::shift<T>(m, T(1)), acc);
      sl = acc.total();
    }
    std::vector<ld> et(n);
    mpfr_set_zero(s, 1);
    for (Index i = 0; i < n; ++i) {
      mpfr_set_d(e, static_cast<double>(z(i) - m), MPFR_RNDN);
      mpfr_exp(e, e, MPFR_RNDN);
      et[i] = mpfr_get_ld(e, MPFR_RNDN);
      mpfr_add(s, s, e, MPFR_RNDN);
    }
    const ld st = mpfr_get_ld(s, MPFR_RNDN);
    mpfr_set_zero(s, 1);
    for (Index i = 0; i < n; ++i) mpfr_add_d(s, s, static_cast<double>(el[i]), MPFR_RNDN);
    const ld sle = mpfr_get_ld(s, MPFR_RNDN);
    for (Index i = 0; i < n; ++i) {
      const ld yr = et[i] / st;
      if (yr < static_cast<ld>(std::numeric_limits<T>::min())) continue;
      const ld u = ulp_of<T>(yr) / yr;
      const ld total = std::fabs(static_cast<ld>(y(i)) - yr) / ulp_of<T>(yr);
      const ld a = (static_cast<ld>(el[i]) / et[i] - 1) / u;
      const ld d = (st / sle - 1) / u;
      const ld b = (sle / sl - 1) / u;
      const ld c = (static_cast<ld>(y(i)) / (static_cast<ld>(el[i]) / sl) - 1) / u;
      mx.exp_i = std::max(mx.exp_i, std::fabs(a));
      mx.exps_in_sum = std::max(mx.exps_in_sum, std::fabs(d));
      mx.summation = std::max(mx.summation, std::fabs(b));
      mx.normalise = std::max(mx.normalise, std::fabs(c));
      if (total > mx.total) {
        mx.total = total;
        char buf[256];
        std::snprintf(buf, sizeof buf, "n = %ld, y = %.3Lg: %+.2Lf %+.2Lf %+.2Lf %+.2Lf",
                      static_cast<long>(n), yr, a, d, b, c);
        mx.worst = buf;
      }
    }
  }
  mpfr_clear(s);
  mpfr_clear(e);
}

}  // namespace

int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 3000;
  std::printf("%d rows per kind, n in 1..300, T = 1; max |error| in ULP of y\n", rows);
  std::printf(
      "%-6s %-12s %6s %6s %6s %6s %6s   worst (signed: exp_i, exps in sum, summation, "
      "normalise)\n",
      "type", "kind", "total", "exp_i", "in sum", "sum", "norm");
  for (const char* kind : {"N(0,1)", "N(0,30)", "cauchy", "one dominant"}) {
    maxima f, d;
    run<float>(kind, rows, f);
    run<double>(kind, rows, d);
    for (const auto& [name, mx] : {std::pair<const char*, maxima&>{"float", f}, {"double", d}}) {
      std::printf("%-6s %-12s %6.2Lf %6.2Lf %6.2Lf %6.2Lf %6.2Lf   %s\n", name, kind, mx.total,
                  mx.exp_i, mx.exps_in_sum, mx.summation, mx.normalise, mx.worst.c_str());
    }
  }
}
