// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student learns from a
// teacher's probabilities at a temperature T, not only from the hard labels.
//   loss = T^2 KL(softmax(teacher / T) || softmax(student / T)),
//   d loss / d student = T (softmax(student / T) - softmax(teacher / T))   (per sample)
#include <cstdio>
#include <vector>

#include <Eigen/Core>

#include <smax/smax.hpp>

namespace {

void print_row(const char* label, const Eigen::RowVectorXf& p) {
  std::printf("  %-24s", label);
  for (Eigen::Index c = 0; c < p.size(); ++c) std::printf(" %6.3f", static_cast<double>(p(c)));
  std::printf("\n");
}

}  // namespace

int main() {
  // Two images, classes cat, dog, fox, car, bus; each row is one sample (smax::rowwise).
  Eigen::MatrixXf teacher(2, 5), student(2, 5);
  teacher << 9.0f, 6.0f, 5.0f, 0.0f, 0.0f,  // a cat that looks a little like a dog and a fox
      0.0f, 0.0f, 0.0f, 9.0f, 7.0f;         // a car that looks a little like a bus
  student << 2.0f, 0.0f, 0.0f, 0.0f, 0.0f,  //
      0.0f, 0.0f, 0.0f, 2.0f, 0.0f;
  const std::vector<int> labels = {0, 3};  // the hard labels: cat, car

  std::printf("Soft targets: the teacher's probabilities for the cat (cat dog fox car bus)\n");
  for (const float t : {1.0f, 4.0f}) {
    const Eigen::MatrixXf q = smax::softmax(teacher, smax::rowwise, t);
    print_row(t == 1.0f ? "T = 1 (nearly one-hot)" : "T = 4 (dog > fox > car)", q.row(0));
  }

  // The loss and its gradient at T = 4, in one call. reduction::mean is PyTorch's
  // "batchmean": the sum over classes, averaged over samples.
  smax::distillation_options<float> options;
  options.temperature = 4.0f;
  const auto r = smax::distillation_loss_with_grad(student, teacher, smax::rowwise, options);
  const float t = options.temperature;
  const Eigen::MatrixXf p = smax::softmax(student, smax::rowwise, t);
  const Eigen::MatrixXf q = smax::softmax(teacher, smax::rowwise, t);
  const Eigen::MatrixXf expected = t * (p - q) / 2.0f;  // the mean divides by N = 2 samples
  std::printf("\nAt T = 4: loss %.4f, gradient w.r.t. the student's logits:\n",
              static_cast<double>(r.loss));
  print_row("sample 0", r.grad.row(0));
  print_row("sample 1", r.grad.row(1));
  std::printf("  = T (p - q) / N: max difference %.1e\n",
              static_cast<double>((r.grad - expected).cwiseAbs().maxCoeff()));

  // Why T^2: the KL gradient alone is (p - q) / T, and p - q itself shrinks like 1 / T, so
  // without the factor the soft-target term fades like 1 / T^2 as T grows. With it, the
  // gradient settles to a constant size (about the centred logit difference over the number
  // of classes), so one mixing weight alpha works across temperatures.
  std::printf("\n  %-6s %16s %18s\n", "T", "|grad| (T^2 KL)", "|grad| (KL alone)");
  for (const float temp : {1.0f, 2.0f, 4.0f, 8.0f, 16.0f}) {
    options.temperature = temp;
    const float norm =
        smax::distillation_loss_with_grad(student, teacher, smax::rowwise, options).grad.norm();
    std::printf("  %-6g %16.4f %18.4f\n", static_cast<double>(temp), static_cast<double>(norm),
                static_cast<double>(norm / (temp * temp)));
  }

  // Training, the usual recipe: alpha * distillation at T + (1 - alpha) * cross-entropy on the
  // hard labels. Here the student's logits themselves are the parameters.
  options.temperature = 4.0f;
  const float alpha = 0.9f, learning_rate = 1.0f;
  for (int step = 0; step <= 200; ++step) {
    const auto soft = smax::distillation_loss_with_grad(student, teacher, smax::rowwise, options);
    const auto hard = smax::cross_entropy_with_grad(student, labels, smax::rowwise);
    if (step % 50 == 0) {
      std::printf("%sstep %3d: distillation %.4f, cross-entropy %.4f\n",
                  step == 0 ? "\nTraining the student (alpha = 0.9, T = 4):\n  " : "  ", step,
                  static_cast<double>(soft.loss), static_cast<double>(hard.loss));
    }
    student -= learning_rate * (alpha * soft.grad + (1 - alpha) * hard.grad);
  }
  print_row("student at T = 4, cat", smax::softmax(student, smax::rowwise, 4.0f).row(0));
  print_row("teacher at T = 4, cat", smax::softmax(teacher, smax::rowwise, 4.0f).row(0));
  return 0;
}

// Output:
// Soft targets: the teacher's probabilities for the cat (cat dog fox car bus)
//   T = 1 (nearly one-hot)    0.936  0.047  0.017  0.000  0.000
//   T = 4 (dog > fox > car)   0.488  0.230  0.179  0.051  0.051
//
// At T = 4: loss 3.8069, gradient w.r.t. the student's logits:
//   sample 0                 -0.391 -0.107 -0.005  0.251  0.251
//   sample 1                  0.244  0.244  0.244 -0.456 -0.277
//   = T (p - q) / N: max difference 6.0e-08
//
//   T       |grad| (T^2 KL)  |grad| (KL alone)
//   1                0.2135             0.2135
//   2                0.5591             0.1398
//   4                0.8689             0.0543
//   8                1.0005             0.0156
//   16               1.0273             0.0040
//
// Training the student (alpha = 0.9, T = 4):
//   step   0: distillation 3.8069, cross-entropy 0.4327
//   step  50: distillation 0.0153, cross-entropy 0.0875
//   step 100: distillation 0.0006, cross-entropy 0.0915
//   step 150: distillation 0.0003, cross-entropy 0.0919
//   step 200: distillation 0.0003, cross-entropy 0.0919
//   student at T = 4, cat     0.489  0.229  0.179  0.051  0.051
//   teacher at T = 4, cat     0.488  0.230  0.179  0.051  0.051
