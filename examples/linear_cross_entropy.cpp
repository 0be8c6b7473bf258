// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// The output layer of a language model without its logits matrix: the loss of
// softmax(H W^T + b) against the next tokens, and its gradients, computed in chunks of the
// vocabulary. Checked against the materialised computation (logits, fused cross-entropy,
// two GEMMs), which holds all N x V logits at once.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include <Eigen/Core>

#include <smax/smax.hpp>

int main() {
  const Eigen::Index N = 256, d = 64, V = 5000;  // tokens, hidden size, vocabulary
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Eigen::MatrixXf H(N, d), W(V, d);
  Eigen::VectorXf b(V);
  for (Eigen::Index i = 0; i < H.size(); ++i) H.data()[i] = normal(rng);
  for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = 0.2f * normal(rng);
  for (Eigen::Index i = 0; i < V; ++i) b(i) = 0.1f * normal(rng);
  std::vector<int> next(static_cast<size_t>(N));
  for (auto& t : next) t = static_cast<int>(rng() % static_cast<unsigned>(V));
  next[3] = -100;  // padding: ignored (ignore_index)

  smax::linear_cross_entropy_options<float> opt;
  opt.label_smoothing = 0.1f;
  opt.chunk_classes = 1024;  // the logits of 1024 classes at a time (0: automatic)
  const auto chunked = smax::linear_cross_entropy_with_grad(H, W, b, next, opt);

  // The materialised way: all N x V logits, then the fused loss, then two GEMMs.
  const Eigen::MatrixXf logits = (H * W.transpose()).rowwise() + b.transpose();
  smax::cross_entropy_options<float> ce;
  ce.label_smoothing = 0.1f;
  const auto full = smax::cross_entropy_with_grad(logits, next, smax::rowwise, ce);
  const Eigen::MatrixXf dH = full.grad * W;
  const Eigen::MatrixXf dW = full.grad.transpose() * H;
  const Eigen::VectorXf db = full.grad.colwise().sum().transpose();

  const auto rel = [](const Eigen::MatrixXf& a, const Eigen::MatrixXf& e) {
    return static_cast<double>((a - e).cwiseAbs().maxCoeff() / e.cwiseAbs().maxCoeff());
  };
  std::printf("loss: chunked %.6f, materialised %.6f\n", static_cast<double>(chunked.loss),
              static_cast<double>(full.loss));
  std::printf("max relative gradient difference: dH %.1e, dW %.1e, db %.1e\n", rel(chunked.dH, dH),
              rel(chunked.dW, dW), rel(chunked.db, db));
  std::printf("logits never held: %lld floats in one chunk instead of %lld (%.0f%%)\n",
              static_cast<long long>(N * opt.chunk_classes), static_cast<long long>(N * V),
              100.0 * static_cast<double>(opt.chunk_classes) / static_cast<double>(V));
  return 0;
}
