// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Padding masks: a batch of token sequences of different lengths, padded to one width.
// masked_softmax gives the padding probability exactly 0 whatever its logit holds (here
// garbage: NaN and 1e30), an empty sequence gets all zeros, and the backward pass gives the
// padding gradient exactly 0.
#include <cmath>
#include <cstdio>
#include <limits>

#include <Eigen/Core>

#include <smax/smax.hpp>

int main() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Three sequences of lengths 5, 3 and 0, padded to 5 columns; the padding holds garbage.
  Eigen::MatrixXf logits(3, 5);
  logits << 2.0f, 1.0f, 0.5f, -1.0f, 0.0f,  //
      1.0f, 3.0f, 0.0f, nan, 1e30f,         //
      nan, nan, nan, nan, nan;
  const int lengths[] = {5, 3, 0};
  Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> keep(3, 5);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 5; ++j) keep(i, j) = j < lengths[i];
  }

  const Eigen::MatrixXf p = smax::masked_softmax(logits, keep, smax::rowwise);
  std::printf("masked_softmax (row i keeps its first lengths[i] entries):\n");
  for (int i = 0; i < 3; ++i) {
    std::printf("  length %d:", lengths[i]);
    for (int j = 0; j < 5; ++j) std::printf(" %6.3f", static_cast<double>(p(i, j)));
    std::printf("   sum %.6f\n", static_cast<double>(p.row(i).sum()));
  }

  // The same with the padding set to -inf in plain softmax: the empty row is 0/0 = NaN.
  Eigen::MatrixXf filled = logits;
  for (int i = 0; i < 3; ++i) {
    for (int j = lengths[i]; j < 5; ++j) filled(i, j) = -std::numeric_limits<float>::infinity();
  }
  const Eigen::MatrixXf q = smax::softmax(filled, smax::rowwise);
  // (printf shows a NaN as "nan" or "-nan" depending on its sign bit, which carries no meaning.)
  std::printf("plain softmax with -inf padding, empty row: %s (NaN: nothing to distribute)\n",
              std::isnan(q(2, 0)) ? "nan" : "a number");

  // Backward: upstream gradient 1 everywhere (NaN would do as well on the padding).
  const Eigen::MatrixXf dy = Eigen::MatrixXf::Ones(3, 5);
  const Eigen::MatrixXf dz = smax::masked_softmax_backward(p, dy, keep, smax::rowwise);
  std::printf("gradient on the padding: %.1f %.1f (exactly 0)\n", static_cast<double>(dz(1, 3)),
              static_cast<double>(dz(1, 4)));

  // Causal masks need no boolean matrix: query i sees keys j <= i.
  const Eigen::MatrixXf scores = Eigen::MatrixXf::Zero(3, 3);
  const Eigen::MatrixXf c = smax::masked_softmax(scores, smax::causal, smax::rowwise);
  std::printf(
      "causal, equal scores: [%.3f %.3f %.3f] [%.3f %.3f %.3f] [%.3f %.3f %.3f]\n",
      static_cast<double>(c(0, 0)), static_cast<double>(c(0, 1)), static_cast<double>(c(0, 2)),
      static_cast<double>(c(1, 0)), static_cast<double>(c(1, 1)), static_cast<double>(c(1, 2)),
      static_cast<double>(c(2, 0)), static_cast<double>(c(2, 1)), static_cast<double>(c(2, 2)));
  return 0;
}
