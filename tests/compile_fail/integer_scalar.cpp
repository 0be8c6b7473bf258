// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Integer logits are rejected at compile time instead of being truncated.
#include <Eigen/Core>

#include <smax/softmax.hpp>

int main() {
  const Eigen::VectorXi z = Eigen::VectorXi::Zero(3);
#ifdef SMAX_COMPILE_FAIL
  const auto p = smax::softmax(z);
#else
  const auto p = smax::softmax(z.cast<float>());
#endif
  return p.size() == 3 ? 0 : 1;
}
