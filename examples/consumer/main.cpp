// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// The smallest program that uses an installed smax (see CMakeLists.txt next to it).
#include <iostream>

#include <Eigen/Core>

#include <smax/smax.hpp>

int main() {
  const Eigen::Vector3f logits(2.0f, 1.0f, 0.1f);
  std::cout << "softmax([2, 1, 0.1]) = " << smax::softmax(logits).transpose() << '\n';
  return 0;
}

// Output:
// softmax([2, 1, 0.1]) =  0.659001  0.242433 0.0985659
