// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// A first tour of smax: softmax, why the textbook formula is not enough, temperature,
// log_softmax and batches.
#include <cmath>
#include <cstdio>

#include <Eigen/Core>

#include <smax/smax.hpp>

namespace {

// Prints "  label  = [ x,  y,  z]" with aligned columns and three decimals.
void print(const char* label, const Eigen::VectorXf& v) {
  std::printf("  %-22s = [", label);
  for (Eigen::Index i = 0; i < v.size(); ++i) {
    const char* sep = i == 0 ? "" : ",";
    if (std::isnan(v(i))) {
      std::printf("%s%9s", sep, "nan");  // the sign of a NaN means nothing: print it unsigned
    } else {
      std::printf("%s%9.3f", sep, static_cast<double>(v(i)));
    }
  }
  std::printf("]\n");
}

Eigen::Index argmax(const Eigen::VectorXf& v) {
  Eigen::Index i = 0;
  v.maxCoeff(&i);
  return i;
}

void heading(const char* title) { std::printf("\n%s\n", title); }

}  // namespace

int main() {
  std::printf("smax %d.%d.%d quickstart\n", SMAX_VERSION_MAJOR, SMAX_VERSION_MINOR,
              SMAX_VERSION_PATCH);

  heading("1. softmax turns scores (logits) into probabilities that sum to 1");
  Eigen::VectorXf z(3);
  z << 2.0f, 1.0f, 0.1f;
  const Eigen::VectorXf p = smax::softmax(z);
  print("z", z);
  print("softmax(z)", p);
  std::printf("  %-22s = %.3f\n", "sum", static_cast<double>(p.sum()));

  heading("2. Large logits: the textbook formula overflows, smax does not");
  Eigen::VectorXf big(3);
  big << 1000.0f, 1001.0f, 1002.0f;
  // exp(1000) does not fit in a float: every term is inf, and inf / inf is NaN.
  const Eigen::VectorXf naive = big.array().exp() / big.array().exp().sum();
  const Eigen::VectorXf stable = smax::softmax(big);
  print("z", big);
  print("exp(z) / sum(exp(z))", naive);
  print("smax::softmax(z)", stable);
  std::printf("  %-22s = %.3f  (log(sum(exp(z))) = %.3f)\n", "smax::logsumexp(z)",
              static_cast<double>(smax::logsumexp(big)),
              static_cast<double>(std::log(big.array().exp().sum())));

  heading("3. softmax keeps the order of the scores: the argmax does not change");
  std::printf("  %-22s   %9s %9s\n", "", "logits", "probs");
  std::printf("  %-22s = %9d %9d\n", "argmax of [2, 1, 0.1]", static_cast<int>(argmax(z)),
              static_cast<int>(argmax(p)));
  std::printf("  %-22s = %9d %9d\n", "argmax of [1000, ...]", static_cast<int>(argmax(big)),
              static_cast<int>(argmax(stable)));

  heading("4. Temperature T: softmax(z / T); T < 1 sharpens, T > 1 flattens");
  print("T = 0 (argmax limit)", smax::softmax(z, 0.0f));
  print("T = 0.5", smax::softmax(z, 0.5f));
  print("T = 1", smax::softmax(z, 1.0f));
  print("T = 2", smax::softmax(z, 2.0f));

  heading("5. log_softmax: log-probabilities computed directly, not as log(softmax)");
  Eigen::VectorXf far(2);
  far << 0.0f, -200.0f;
  // exp(-200) is below the smallest float, so softmax rounds it to 0 and its log is -inf.
  const Eigen::VectorXf log_of_softmax = smax::softmax(far).array().log();
  print("z", far);
  print("log(softmax(z))", log_of_softmax);
  print("log_softmax(z)", smax::log_softmax(far));

  heading("6. A batch: with smax::rowwise each row of a matrix is one distribution");
  Eigen::MatrixXf batch(2, 3);
  batch << 2.0f, 1.0f, 0.1f,  //
      0.0f, 0.0f, 0.0f;
  const Eigen::MatrixXf rows = smax::softmax(batch, smax::rowwise);
  print("row 0", rows.row(0).transpose());
  print("row 1", rows.row(1).transpose());

  std::printf("\nMore in examples/: temperature, sampling, attention, classifier, distillation.\n");
  return 0;
}

// Output:
// smax 0.1.0 quickstart
//
// 1. softmax turns scores (logits) into probabilities that sum to 1
//   z                      = [    2.000,    1.000,    0.100]
//   softmax(z)             = [    0.659,    0.242,    0.099]
//   sum                    = 1.000
//
// 2. Large logits: the textbook formula overflows, smax does not
//   z                      = [ 1000.000, 1001.000, 1002.000]
//   exp(z) / sum(exp(z))   = [      nan,      nan,      nan]
//   smax::softmax(z)       = [    0.090,    0.245,    0.665]
//   smax::logsumexp(z)     = 1002.408  (log(sum(exp(z))) = inf)
//
// 3. softmax keeps the order of the scores: the argmax does not change
//                               logits     probs
//   argmax of [2, 1, 0.1]  =         0         0
//   argmax of [1000, ...]  =         2         2
//
// 4. Temperature T: softmax(z / T); T < 1 sharpens, T > 1 flattens
//   T = 0 (argmax limit)   = [    1.000,    0.000,    0.000]
//   T = 0.5                = [    0.864,    0.117,    0.019]
//   T = 1                  = [    0.659,    0.242,    0.099]
//   T = 2                  = [    0.502,    0.304,    0.194]
//
// 5. log_softmax: log-probabilities computed directly, not as log(softmax)
//   z                      = [    0.000, -200.000]
//   log(softmax(z))        = [    0.000,     -inf]
//   log_softmax(z)         = [    0.000, -200.000]
//
// 6. A batch: with smax::rowwise each row of a matrix is one distribution
//   row 0                  = [    0.659,    0.242,    0.099]
//   row 1                  = [    0.333,    0.333,    0.333]
//
// More in examples/: temperature, sampling, attention, classifier, distillation.
