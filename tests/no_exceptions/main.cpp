// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Compiled with -fno-exceptions: a negative temperature cannot throw smax::error, so smax
// prints the same message to stderr and aborts before writing anything.
#include <cstdio>

#include <Eigen/Core>

#include <smax/softmax.hpp>

static_assert(SMAX_HAS_EXCEPTIONS == 0, "this test must be compiled with -fno-exceptions");

int main() {
  const Eigen::VectorXf z = Eigen::VectorXf::LinSpaced(3, 0.0f, 2.0f);
  const Eigen::VectorXf p = smax::softmax(z, -1.0f);
  std::printf("not reached: softmax returned %g\n", static_cast<double>(p(0)));
  return 0;
}
