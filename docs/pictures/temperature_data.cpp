// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Data for temperature.svg: smax::softmax of the logits [2, 1, 0.1] at temperatures T from
// 0.05 to 20 (log-spaced), one row per T: "T p0 p1 p2". A second block (after two blank
// lines, gnuplot's "index 1") holds the four temperatures of the bar charts.
// Build and run: see docs/pictures/README.md.

#include <cmath>
#include <cstdio>

#include <Eigen/Core>

#include <smax/softmax.hpp>

int main() {
  const Eigen::Vector3d logits(2.0, 1.0, 0.1);
  std::printf(
      "# smax::softmax([2, 1, 0.1], T)\n# T p(class 0: z=2) p(class 1: z=1) p(class 2: z=0.1)\n");
  const int steps = 200;
  const double lo = std::log(0.05), hi = std::log(20.0);
  for (int i = 0; i <= steps; ++i) {
    const double t = std::exp(lo + (hi - lo) * i / steps);
    const Eigen::Vector3d p = smax::softmax(logits, t);
    std::printf("%.6g %.6f %.6f %.6f\n", t, p(0), p(1), p(2));
  }
  std::printf("\n\n# bars: T p0 p1 p2\n");
  for (const double t : {0.5, 1.0, 2.0, 10.0}) {
    const Eigen::Vector3d p = smax::softmax(logits, t);
    std::printf("%g %.6f %.6f %.6f\n", t, p(0), p(1), p(2));
  }
}
