// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// softmax_into writes through its first argument, so it must be storage, not an expression.
#include <Eigen/Core>

#include <smax/softmax.hpp>

int main() {
  const Eigen::VectorXf z = Eigen::VectorXf::Zero(3);
  Eigen::VectorXf out(3);
#ifdef SMAX_COMPILE_FAIL
  smax::softmax_into(out * 2.0f, z);
#else
  smax::softmax_into(out, z);
#endif
  return out.size() == 3 ? 0 : 1;
}
