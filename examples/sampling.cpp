// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Drawing the next token from a language model's logits, with temperature. The sampler
// draws token i with probability softmax(z, T)_i; T = 0 is greedy decoding (always the
// argmax). 200000 draws per temperature show the empirical frequencies converging to the
// probabilities.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <Eigen/Core>

#include <smax/smax.hpp>

int main() {
  // "The cat sat on the ..." and five candidate next tokens with their logits.
  const char* tokens[] = {"mat", "sofa", "floor", "roof", "moon"};
  Eigen::VectorXf logits(5);
  logits << 3.0f, 2.2f, 1.8f, 0.5f, -1.0f;

  const float temperatures[] = {0.0f, 0.5f, 1.0f, 1.5f};
  constexpr int kDraws = 200000;
  std::mt19937 rng(42);  // fixed seed: the same frequencies on every run

  Eigen::MatrixXd prob(5, 4), freq(5, 4);
  for (int t = 0; t < 4; ++t) {
    const Eigen::VectorXf p = smax::softmax(logits, temperatures[t]);
    prob.col(t) = p.cast<double>();
    // discrete_distribution draws index i with probability p_i / sum(p). At T = 0, p is
    // one-hot on the argmax, so every draw is the greedy choice.
    std::discrete_distribution<int> next_token(p.data(), p.data() + p.size());
    std::vector<int> count(5, 0);
    for (int i = 0; i < kDraws; ++i) ++count[static_cast<std::size_t>(next_token(rng))];
    for (int k = 0; k < 5; ++k) freq(k, t) = count[static_cast<std::size_t>(k)] / double{kDraws};
  }

  std::printf("%-6s", "");
  for (int t = 0; t < 4; ++t) {  // "   T = 0.5      ", no trailing blanks after the last
    std::printf(t < 3 ? "   T = %-7g" : "   T = %g", static_cast<double>(temperatures[t]));
  }
  std::printf("\n%-6s", "token");
  for (int t = 0; t < 4; ++t) std::printf("   %5s %5s", "prob", "freq");
  std::printf("\n");
  for (int k = 0; k < 5; ++k) {
    std::printf("%-6s", tokens[k]);
    for (int t = 0; t < 4; ++t) std::printf("   %.3f %.3f", prob(k, t), freq(k, t));
    std::printf("\n");
  }

  // Greedy decoding needs no random numbers: the argmax of the logits is the argmax of the
  // probabilities at any T > 0, and the only token with probability > 0 at T = 0.
  Eigen::Index greedy = 0;
  logits.maxCoeff(&greedy);
  std::printf("\ngreedy (T = 0) picks \"%s\" every time: frequency %.3f\n", tokens[greedy],
              freq(greedy, 0));

  // With 200000 draws the frequencies are within a few 0.001 of the probabilities (the
  // standard error sqrt(p (1 - p) / n) is at most 0.0011).
  const double gap = (freq - prob).cwiseAbs().maxCoeff();
  std::printf("max |frequency - probability| = %.4f over all tokens and temperatures\n", gap);
  return gap < 0.01 ? 0 : 1;
}

// Output:
//          T = 0         T = 0.5       T = 1         T = 1.5
// token     prob  freq    prob  freq    prob  freq    prob  freq
// mat      1.000 1.000   0.769 0.770   0.540 0.540   0.436 0.436
// sofa     0.000 0.000   0.155 0.155   0.243 0.243   0.256 0.256
// floor    0.000 0.000   0.070 0.070   0.163 0.163   0.196 0.195
// roof     0.000 0.000   0.005 0.005   0.044 0.044   0.082 0.083
// moon     0.000 0.000   0.000 0.000   0.010 0.010   0.030 0.030
//
// greedy (T = 0) picks "mat" every time: frequency 1.000
// max |frequency - probability| = 0.0012 over all tokens and temperatures
