// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Reproducer (found by tests/fuzz/fuzz_cross_entropy): with a valid but tiny temperature
// (finite and > 0, here a float subnormal), the cross-entropy gradient has NaN where the
// true value (A p_c - a_c) / T is beyond FLT_MAX: the policy says finite inputs never
// produce NaN, so the expected entries are the infinities the true values round to.
//   g++ -std=c++17 -O2 -Iinclude -isystem /usr/include/eigen3 \
//       tools/repro/ce_tiny_temperature_nan.cpp && ./a.out
// In ce_sample (detail/loss_kernels.hpp) k1 = A / (T s) rounds to +inf, and the finish pass
// computes k1 * exp(s_c) - k2 * a_c: 0 * inf or inf - inf.

#include <smax/smax.hpp>

#include <cstdio>

int main() {
  Eigen::Vector2f z(0.6875f, 0.0f);
  smax::cross_entropy_options<float> opt;
  opt.temperature = 1e-43f;  // subnormal, valid
  const auto r = smax::cross_entropy_with_grad(z, 1, opt);
  // p = (1, 0) to float precision; (p - onehot(1)) / T = (+1e43, -1e43): +inf, -inf in float.
  std::printf("loss %g, grad (%g, %g); expected (inf, -inf)\n", r.loss, r.grad(0), r.grad(1));
}
