// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Concurrent calls share nothing mutable: several threads run the public functions on the
// same read-only inputs into their own outputs, and every result must equal, bit for bit,
// the one computed before the threads started. Built with -fsanitize=thread when the
// compiler supports it (see CMakeLists.txt), where any data race fails the test too.

#include <smax/smax.hpp>

#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct results {
  Eigen::MatrixXf probs, log_probs, grad, dz;
  Eigen::VectorXf lse;
  float loss = 0, kl = 0, bce = 0;
  double streamed = 0;
};

struct inputs {
  Eigen::MatrixXf logits, teacher, dy, bce_targets;
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> logits_rm;
  std::vector<int> labels;
  Eigen::VectorXf weight;
};

results run(const inputs& in) {
  results r;
  smax::softmax_into(r.probs, in.logits, smax::rowwise, 0.7f);
  r.log_probs = smax::log_softmax(in.logits_rm, smax::colwise);
  r.lse = smax::logsumexp(in.logits, smax::rowwise);
  r.dz = smax::softmax_backward(r.probs, in.dy, smax::rowwise, 0.7f);
  smax::cross_entropy_options<float> opt;
  opt.label_smoothing = 0.1f;
  opt.weight = in.weight;
  r.loss = smax::cross_entropy_with_grad_into(r.grad, in.logits, in.labels, smax::rowwise, opt);
  smax::distillation_options<float> dopt;
  dopt.temperature = 2.0f;
  r.kl = smax::distillation_loss(in.logits, in.teacher, smax::rowwise, dopt);
  r.bce = smax::binary_cross_entropy_with_logits(in.logits, in.bce_targets, smax::rowwise);
  smax::logsumexp_accumulator<double> acc;
  for (Eigen::Index i = 0; i < in.logits.rows(); ++i) {
    acc.push(in.logits.row(i).cast<double>());
  }
  r.streamed = acc.value();
  return r;
}

template <typename A>
bool same_bits(const A& a, const A& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), sizeof(typename A::Scalar) * a.size()) == 0;
}

bool same(const results& a, const results& b) {
  return same_bits(a.probs, b.probs) && same_bits(a.log_probs, b.log_probs) &&
         same_bits(a.lse, b.lse) && same_bits(a.dz, b.dz) && same_bits(a.grad, b.grad) &&
         std::memcmp(&a.loss, &b.loss, sizeof a.loss) == 0 &&
         std::memcmp(&a.kl, &b.kl, sizeof a.kl) == 0 &&
         std::memcmp(&a.bce, &b.bce, sizeof a.bce) == 0 &&
         std::memcmp(&a.streamed, &b.streamed, sizeof a.streamed) == 0;
}

}  // namespace

int main() {
  constexpr int n = 96, k = 37, threads = 4, rounds = 20;
  inputs in;
  std::srand(7);
  in.logits = 10 * Eigen::MatrixXf::Random(n, k);
  in.logits(3, 5) = -std::numeric_limits<float>::infinity();
  in.teacher = 5 * Eigen::MatrixXf::Random(n, k);
  in.dy = Eigen::MatrixXf::Random(n, k);
  in.bce_targets = (Eigen::MatrixXf::Random(n, k).array() > 0).cast<float>().matrix();
  in.logits_rm = in.logits;
  in.weight = Eigen::VectorXf::LinSpaced(k, 0.5f, 2.0f);
  for (int i = 0; i < n; ++i) in.labels.push_back(i % k == 5 ? 6 : i % k);

  const results expected = run(in);
  std::vector<int> mismatches(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int round = 0; round < rounds; ++round) {
        if (!same(run(in), expected)) ++mismatches[static_cast<std::size_t>(t)];
      }
    });
  }
  for (auto& th : pool) th.join();
  int total = 0;
  for (int m : mismatches) total += m;
  std::printf("%d threads x %d rounds: %d results differ from the single-threaded ones\n", threads,
              rounds, total);
  return total == 0 ? 0 : 1;
}
