// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Data for stability.svg: the first probability of softmax([2, 1, 0.1] + c) in float, for
// c from 0 to 200 in steps of 0.25, by the textbook formula exp(z) / sum(exp(z)) and by
// smax::softmax. Block 0 (gnuplot "index 0"): one row per c, "c naive smax"; a naive value
// that is NaN or inf is printed as "nan" or "inf", which gnuplot leaves out. Block 1: two
// numbers, the first c where the naive result is wrong (its sum overflows to inf, so the
// probability collapses to 0) and the first c where it is NaN (exp(z_0) itself overflows).
// Build and run: see docs/pictures/README.md.

#include <cmath>
#include <cstdio>

#include <Eigen/Core>

#include <smax/softmax.hpp>

int main() {
  const Eigen::Array3f seed(2.0f, 1.0f, 0.1f);
  std::printf("# softmax([2, 1, 0.1] + c)[0] in float\n# c naive smax\n");
  float first_wrong = -1, first_nan = -1;
  for (int i = 0; i <= 800; ++i) {
    const float c = 0.25f * static_cast<float>(i);
    const Eigen::Array3f z = seed + c;
    const Eigen::Array3f naive = z.exp() / z.exp().sum();  // the textbook one-liner
    const Eigen::Array3f stable = smax::softmax(z);
    const float p = naive(0);
    if (first_wrong < 0 && !(std::abs(p - stable(0)) < 1e-3f)) first_wrong = c;
    if (first_nan < 0 && !std::isfinite(p)) first_nan = c;
    if (std::isfinite(p)) {
      std::printf("%g %.7f %.7f\n", c, p, stable(0));
    } else {
      std::printf("%g %s %.7f\n", c, std::isnan(p) ? "nan" : "inf", stable(0));
    }
  }
  std::printf("\n\n# first c where naive is wrong, first c where naive is not finite\n");
  std::printf("%g %g\n", first_wrong, first_nan);
}
