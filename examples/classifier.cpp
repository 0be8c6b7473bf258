// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Softmax regression (multinomial logistic regression) on the UCI handwritten digits:
// 1797 images of 8x8 pixels, 10 classes. The model is linear, logits = x W + b, trained by
// mini-batch gradient descent on smax::cross_entropy_with_grad, which returns the loss and
// its gradient with respect to the logits in one pass.
//
//   classifier [path/to/digits.csv]     (default: the copy in examples/data/)
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <smax/smax.hpp>

#ifndef SMAX_DIGITS_CSV  // CMake passes the absolute path; this default suits the repo root
#define SMAX_DIGITS_CSV "examples/data/digits.csv"
#endif

namespace {

constexpr int kPixels = 64;
constexpr int kClasses = 10;

struct Dataset {
  Eigen::MatrixXf x;  // one image per row, pixels scaled from 0..16 to 0..1
  Eigen::VectorXi y;  // its digit
};

// Each line of digits.csv: 64 pixel values, then the label.
Dataset load(const char* path) {
  std::ifstream file(path);
  std::vector<float> pixels;
  std::vector<int> labels;
  for (std::string line; std::getline(file, line);) {
    std::istringstream fields(line);
    std::string field;
    for (int i = 0; i < kPixels && std::getline(fields, field, ','); ++i) {
      pixels.push_back(std::stof(field) / 16.0f);
    }
    std::getline(fields, field);
    labels.push_back(std::stoi(field));
  }
  const auto n = static_cast<Eigen::Index>(labels.size());
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, kPixels, Eigen::RowMajor>;
  return {Eigen::Map<RowMajor>(pixels.data(), n, kPixels),
          Eigen::Map<Eigen::VectorXi>(labels.data(), n)};
}

// A fixed-seed shuffle, then the first 80% for training and the rest held out. (Written out
// because std::shuffle's sequence differs between standard libraries.)
std::pair<Dataset, Dataset> split(const Dataset& all, std::uint32_t seed) {
  std::vector<Eigen::Index> order(static_cast<std::size_t>(all.y.size()));
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<Eigen::Index>(i);
  std::mt19937 rng(seed);
  for (std::size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng() % (i + 1)]);
  const std::vector<Eigen::Index> train(order.begin(), order.begin() + order.size() * 4 / 5);
  const std::vector<Eigen::Index> test(order.begin() + order.size() * 4 / 5, order.end());
  return {{all.x(train, Eigen::all), all.y(train)}, {all.x(test, Eigen::all), all.y(test)}};
}

struct Model {
  Eigen::MatrixXf w = Eigen::MatrixXf::Zero(kPixels, kClasses);
  Eigen::RowVectorXf b = Eigen::RowVectorXf::Zero(kClasses);

  Eigen::MatrixXf logits(const Eigen::MatrixXf& x) const { return (x * w).rowwise() + b; }

  double accuracy(const Dataset& d) const {
    const Eigen::MatrixXf z = logits(d.x);  // argmax of the logits = argmax of softmax
    int correct = 0;
    for (Eigen::Index i = 0; i < z.rows(); ++i) {
      Eigen::Index predicted = 0;
      z.row(i).maxCoeff(&predicted);
      correct += predicted == d.y(i);
    }
    return 100.0 * correct / static_cast<double>(z.rows());
  }
};

// Mini-batch gradient descent; prints the mean training loss of every epoch if asked, five
// epochs to a line.
Model train(const Dataset& d, const smax::cross_entropy_options<float>& options, bool verbose) {
  constexpr int kEpochs = 30;
  constexpr Eigen::Index kBatch = 32;
  constexpr float kLearningRate = 0.5f;
  Model m;
  for (int epoch = 1; epoch <= kEpochs; ++epoch) {
    double loss_sum = 0;
    int batches = 0;
    for (Eigen::Index first = 0; first < d.x.rows(); first += kBatch, ++batches) {
      const Eigen::Index n = std::min(kBatch, d.x.rows() - first);
      const auto x = d.x.middleRows(first, n);
      // Each row of the logits is one sample: smax::rowwise. The loss is the batch mean,
      // so r.grad (d loss / d logits, softmax minus target) is already divided by n.
      const auto r =
          smax::cross_entropy_with_grad(m.logits(x), d.y.segment(first, n), smax::rowwise, options);
      m.w -= kLearningRate * (x.transpose() * r.grad);  // chain rule through logits = x W + b
      m.b -= kLearningRate * r.grad.colwise().sum();
      loss_sum += r.loss;
    }
    if (verbose && epoch % 5 == 1)
      std::printf("  epochs %2d-%2d, training loss:", epoch, epoch + 4);
    if (verbose) std::printf(" %.4f%s", loss_sum / batches, epoch % 5 == 0 ? "\n" : "");
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : SMAX_DIGITS_CSV;
  const Dataset all = load(path);
  if (all.y.size() == 0) {
    std::fprintf(stderr, "cannot read %s (pass the path of digits.csv as the argument)\n", path);
    return 1;
  }
  const auto [train_set, test_set] = split(all, 4);
  std::printf("UCI digits: %d images, %d for training, %d held out\n",
              static_cast<int>(all.y.size()), static_cast<int>(train_set.y.size()),
              static_cast<int>(test_set.y.size()));

  smax::cross_entropy_options<float> plain;  // PyTorch's CrossEntropyLoss defaults
  const Model m = train(train_set, plain, true);
  std::printf("cross-entropy:          test accuracy %.1f%%\n", m.accuracy(test_set));

  // Variation 1: label smoothing, the target becomes 0.9 one-hot + 0.1 uniform.
  smax::cross_entropy_options<float> smoothed;
  smoothed.label_smoothing = 0.1f;
  std::printf("label smoothing 0.1:    test accuracy %.1f%%\n",
              train(train_set, smoothed, false).accuracy(test_set));

  // Variation 2: class weights, here "balanced" ones, n / (classes * count of the class), so
  // each digit counts the same however often it occurs. (The view must outlive the calls.)
  Eigen::VectorXf count = Eigen::VectorXf::Zero(kClasses);
  for (Eigen::Index i = 0; i < train_set.y.size(); ++i) count(train_set.y(i)) += 1;
  const Eigen::VectorXf balanced =
      static_cast<float>(train_set.y.size()) / (kClasses * count.array());
  smax::cross_entropy_options<float> weighted;
  weighted.weight = balanced;
  std::printf("balanced class weights: test accuracy %.1f%%  (weights %.2f..%.2f)\n",
              train(train_set, weighted, false).accuracy(test_set),
              static_cast<double>(balanced.minCoeff()), static_cast<double>(balanced.maxCoeff()));
  return 0;
}

// Output (g++ 12 and clang++ 14, x86-64):
// UCI digits: 1797 images, 1437 for training, 360 held out
//   epochs  1- 5, training loss: 1.2583 0.5587 0.4008 0.3290 0.2864
//   epochs  6-10, training loss: 0.2575 0.2364 0.2200 0.2069 0.1961
//   epochs 11-15, training loss: 0.1869 0.1790 0.1721 0.1659 0.1605
//   epochs 16-20, training loss: 0.1555 0.1510 0.1469 0.1432 0.1397
//   epochs 21-25, training loss: 0.1364 0.1334 0.1305 0.1279 0.1254
//   epochs 26-30, training loss: 0.1230 0.1207 0.1186 0.1165 0.1146
// cross-entropy:          test accuracy 96.4%
// label smoothing 0.1:    test accuracy 96.1%
// balanced class weights: test accuracy 96.7%  (weights 0.94..1.09)
