// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// A matrix holds many distributions; softmax needs an axis to know which.
#include <Eigen/Core>

#include <smax/softmax.hpp>

int main() {
  const Eigen::MatrixXf z = Eigen::MatrixXf::Zero(2, 3);
#ifdef SMAX_COMPILE_FAIL
  const Eigen::MatrixXf p = smax::softmax(z);
#else
  const Eigen::MatrixXf p = smax::softmax(z, smax::rowwise);
#endif
  return p.rows() == 2 ? 0 : 1;
}
