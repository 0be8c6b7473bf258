// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Reproducer (found by tools/accuracy_sweep): double softmax of a long contiguous row is
// 4.4-4.6 ULP off where the exponent z_i - max is exact (d = 0 here), beyond the documented
// 4 ULP (+ |d| eps, which is 0 for this entry). The sum of exponentials, accumulated in
// double for double input, is the whole error: p = 1 / s.
//   g++ -std=c++17 -O2 [-march=native] -Iinclude -isystem /usr/include/eigen3 \
//       tools/repro/long_row_sum_error.cpp && ./a.out

#include <smax/smax.hpp>

#include <cmath>
#include <cstdio>

int main() {
  Eigen::VectorXd z(4099);
  for (Eigen::Index i = 0; i < z.size(); ++i) z(i) = 1000 + double(i % 3);
  const Eigen::VectorXd y = smax::softmax(z);
  // Reference in long double (64-bit significand: 1/2048 ULP of double resolution).
  long double s = 0;
  for (Eigen::Index i = 0; i < z.size(); ++i) s += std::exp((long double)z(i) - 1002);
  const long double p = 1 / s;  // entry 2 has z = 1002 = max, exponent exactly 0
  const long double ulp = std::ldexp(1.0L, std::ilogb(p) - 52);
  std::printf("softmax(z)(2) = %.17g, reference %.21Lg, error %.2Lf ULP (documented: <= 4)\n", y(2),
              p, std::fabs(y(2) - p) / ulp);
}
