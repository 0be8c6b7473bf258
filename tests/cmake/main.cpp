// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// The program every consumer project builds: it fails unless smax computes
// softmax([2, 1, 0.1]) = [0.659, 0.242, 0.099].
#include <cstdio>

#include <Eigen/Core>

#include <smax/smax.hpp>

int main() {
  const Eigen::Vector3f z(2.0f, 1.0f, 0.1f);
  const Eigen::Vector3f p = smax::softmax(z);
  const Eigen::Vector3f expected(0.6590011f, 0.2424330f, 0.0985659f);
  std::printf("smax %d.%d.%d: softmax([2, 1, 0.1]) = [%.7f, %.7f, %.7f]\n", SMAX_VERSION_MAJOR,
              SMAX_VERSION_MINOR, SMAX_VERSION_PATCH, static_cast<double>(p(0)),
              static_cast<double>(p(1)), static_cast<double>(p(2)));
  return p.isApprox(expected, 1e-5f) ? 0 : 1;
}
