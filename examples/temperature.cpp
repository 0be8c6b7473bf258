// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Temperature: softmax(z, T) = softmax(z / T). The same logits at several T, with the
// entropy of each distribution, from 0 (certain) to log(3) = 1.099 nats (uniform).
#include <cmath>
#include <cstdio>
#include <limits>

#include <Eigen/Core>

#include <smax/smax.hpp>

namespace {

// Entropy in nats, -sum p log p. log_softmax gives log p without the round trip through
// log(softmax); the select makes 0 log 0 count as 0 (it is the limit), not NaN.
float entropy(const Eigen::Vector3f& z, float t) {
  const Eigen::Array3f p = smax::softmax(z, t);
  const Eigen::Array3f log_p = smax::log_softmax(z, t);
  const float h = -(p > 0).select(p * log_p, 0.0f).sum();
  return h + 0.0f;  // -0 (at T = 0) + 0 is +0
}

}  // namespace

int main() {
  const Eigen::Vector3f z(2.0f, 1.0f, 0.1f);
  std::printf("logits z = [2, 1, 0.1]\n\n");
  std::printf("  %-18s %7s %7s %7s   %s\n", "temperature", "p0", "p1", "p2", "entropy (nats)");

  const float inf = std::numeric_limits<float>::infinity();
  const float temperatures[] = {0.0f, 0.5f, 1.0f, 2.0f, 10.0f, inf};
  const char* notes[] = {"  greedy: one-hot on the argmax",
                         "  sharper",
                         "  plain softmax",
                         "  softer",
                         "  nearly uniform",
                         "  uniform (the limit)"};
  for (int i = 0; i < 6; ++i) {
    const float t = temperatures[i];
    const Eigen::Vector3f p = smax::softmax(z, t);
    std::printf("  T = %-14g %7.3f %7.3f %7.3f   %.3f%s\n", static_cast<double>(t),
                static_cast<double>(p(0)), static_cast<double>(p(1)), static_cast<double>(p(2)),
                static_cast<double>(entropy(z, t)), notes[i]);
  }

  // What T is for:
  // - Sampling (sampling.cpp): a language model draws the next token from softmax(z, T).
  //   T < 1 favours the likely tokens (safe, repetitive text), T > 1 gives the unlikely ones a
  //   chance (varied, riskier text), and T = 0 always takes the argmax (greedy decoding).
  // - Distillation (distillation.cpp): at T = 1 a confident teacher's probabilities are
  //   nearly one-hot; at T = 2..10 the small ones grow, and the student learns which wrong
  //   answers the teacher finds plausible ("dark knowledge").
  // - The order never changes: for T > 0 the largest logit keeps the largest probability.
  std::printf("\nT = 0 and T = inf are limits, computed exactly; T = 1e-30 and 1e30 agree:\n");
  const Eigen::Vector3f cold = smax::softmax(z, 1e-30f);
  const Eigen::Vector3f hot = smax::softmax(z, 1e30f);
  std::printf("  T = 1e-30: [%.3f, %.3f, %.3f]   T = 1e30: [%.3f, %.3f, %.3f]\n",
              static_cast<double>(cold(0)), static_cast<double>(cold(1)),
              static_cast<double>(cold(2)), static_cast<double>(hot(0)),
              static_cast<double>(hot(1)), static_cast<double>(hot(2)));
  return 0;
}

// Output:
// logits z = [2, 1, 0.1]
//
//   temperature             p0      p1      p2   entropy (nats)
//   T = 0                1.000   0.000   0.000   0.000  greedy: one-hot on the argmax
//   T = 0.5              0.864   0.117   0.019   0.454  sharper
//   T = 1                0.659   0.242   0.099   0.847  plain softmax
//   T = 2                0.502   0.304   0.194   1.026  softer
//   T = 10               0.366   0.331   0.303   1.096  nearly uniform
//   T = inf              0.333   0.333   0.333   1.099  uniform (the limit)
//
// T = 0 and T = inf are limits, computed exactly; T = 1e-30 and 1e30 agree:
//   T = 1e-30: [1.000, 0.000, 0.000]   T = 1e30: [0.333, 0.333, 0.333]
