// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// Accuracy of softmax, log_softmax and logsumexp against a high-precision reference
// (long double for float; MPFR for double when SMAX_HAVE_MPFR, else long double when it is
// wider than double), over seeded random logits, the sizes that hit every packet width and
// tail, four distributions and five temperatures, through every memory layout that selects
// a different kernel path. The bounds are the documented ones (softmax.hpp, "Accuracy"):
//   softmax:                4 ULP + |z_i - max| / T * eps/2 relative (softmax_bound_ulps)
//   log_softmax, logsumexp: 4 ULP of max(|result|, 1)               (log_domain_error)
// The largest errors seen are printed ("[ ULP ]" lines) and recorded as test properties.

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/softmax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

namespace {

using namespace smax_test;

template <typename T>
class Accuracy : public ::testing::Test {};
TYPED_TEST_SUITE(Accuracy, FloatingTypes, TypeNames);

/// The temperatures of the sweep.
constexpr long double sweep_temperatures[] = {1e-3L, 0.5L, 1.0L, 2.0L, 1e3L};

/// The largest error seen on one path, and where.
struct worst {
  long double error = 0;         // ULP
  long double beyond_bound = 0;  // error - allowed amplification (softmax), ULP
  long double ratio = 0;         // error / bound
  std::string where;
  Index checked = 0;
};

/// Records the errors of one result vector against the reference; returns the number of
/// entries beyond the bound and describes the first few in `failures`.
template <typename T, typename D, typename Bound, typename Error>
Index record(worst& w, const Eigen::DenseBase<D>& actual, const HiArray& reference, Bound bound,
             Error error, const std::string& context, std::ostringstream& failures) {
  const Vec<T> a = actual.derived();
  Index bad = 0;
  for (Index i = 0; i < a.size(); ++i) {
    const long double err = error(a(i), reference(i));
    const long double allowed = bound(i);
    ++w.checked;
    if (err > w.error) {
      w.error = err;
      w.where = context + " at " + std::to_string(i);
    }
    w.beyond_bound = std::max(w.beyond_bound, err - (allowed - 4));
    w.ratio = std::max(w.ratio, err / allowed);
    if (!(err <= allowed)) {
      if (++bad <= 3) {
        failures << "\n  " << context << " at " << i << ": reference " << show(reference(i))
                 << ", actual " << show(a(i)) << ", error " << show(err) << " ULP > "
                 << show(allowed);
      }
    }
  }
  return bad;
}

/// The layouts that reach different kernels: a plain vector, a strided vector (Map with
/// InnerStride), the first and the last row of a 37-row column-major batch (rows side by
/// side: a full block of 32 and a partial block), and a row of a 37-row row-major batch
/// (contiguous rows; short ones are transposed into registers or a tile, 16 or 32 at a
/// time).
enum class path { vector, strided, lanes_full, lanes_partial, rows };
constexpr path all_paths[] = {path::vector, path::strided, path::lanes_full, path::lanes_partial,
                              path::rows};

const char* name_of(path p) {
  switch (p) {
    case path::vector:
      return "vector";
    case path::strided:
      return "strided";
    case path::lanes_full:
      return "rows of col-major (block of 32)";
    case path::lanes_partial:
      return "rows of col-major (partial block)";
    case path::rows:
      return "rows of row-major";
  }
  return "?";
}

/// z in every layout of `path`, built once per z: the other distributions of each batch
/// are seeded random logits.
template <typename T>
struct layouts {
  layouts(const Vec<T>& z, std::uint32_t seed) : n(z.size()) {
    buffer = Vec<T>::Constant(3 * n, T(123));
    Eigen::Map<Vec<T>, 0, Eigen::InnerStride<3>>(buffer.data() + 1, n) = z;
    lanes.resize(37, n);
    for (Index r = 0; r < 37; ++r) {
      lanes.row(r) =
          random_logits<T>(n, logits::normal_1, seed + 1000 + std::uint32_t(r)).transpose();
    }
    lanes.row(7) = z.transpose();
    lanes.row(35) = z.transpose();
    rows.resize(37, n);
    for (Index r = 0; r < 37; ++r) {
      rows.row(r) =
          random_logits<T>(n, logits::normal_1, seed + 2000 + std::uint32_t(r)).transpose();
    }
    rows.row(2) = z.transpose();
    vector = z;
  }
  Index n;
  Vec<T> vector, buffer;
  Mat<T> lanes;
  MatR<T> rows;
};

/// Runs op(input[, axis]) on z laid out as `p` and returns the entries of z's result.
template <typename T, typename Op>
Vec<T> through(path p, const layouts<T>& in, Op op) {
  switch (p) {
    case path::vector:
      return op(in.vector);
    case path::strided:
      return op(Eigen::Map<const Vec<T>, 0, Eigen::InnerStride<3>>(in.buffer.data() + 1, in.n));
    case path::lanes_full:
    case path::lanes_partial: {
      const Mat<T> result = op(in.lanes, smax::rowwise);
      return result.row(p == path::lanes_full ? 7 : 35).transpose();
    }
    case path::rows: {
      const MatR<T> result = op(in.rows, smax::rowwise);
      return result.row(2).transpose();
    }
  }
  return Vec<T>();
}

template <typename T>
void print_summary(const char* function, const std::map<std::string, worst>& table) {
  const char* type = std::is_same_v<T, float> ? "float" : "double";
  for (const auto& [where, w] : table) {
    std::printf(
        "[ ULP      ] %-6s %-11s %-34s max %7.3f ULP, max beyond amplification %6.3f "
        "ULP, max error/bound %5.3f (%ld values; worst: %s)\n",
        type, function, where.c_str(), static_cast<double>(w.error),
        static_cast<double>(w.beyond_bound), static_cast<double>(w.ratio),
        static_cast<long>(w.checked), w.where.c_str());
    std::string key = std::string(function) + " " + where;
    for (char& c : key) {
      if (c == ' ' || c == '(' || c == ')' || c == '-') c = '_';
    }
    char value[32];
    std::snprintf(value, sizeof value, "%.3f", static_cast<double>(w.error));
    ::testing::Test::RecordProperty("max_ulp_" + key, value);
  }
  std::fflush(stdout);
}

TYPED_TEST(Accuracy, SoftmaxAndLogSoftmaxWithinDocumentedBounds) {
  using T = TypeParam;
  if (!has_precise_reference<T>()) {
    GTEST_SKIP() << "no reference wider than double (build with MPFR)";
  }
  std::map<std::string, worst> softmax_table, log_table;
  Index softmax_bad = 0, log_bad = 0;
  std::ostringstream failures;
  std::uint32_t seed = 1;
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      ++seed;
      const Vec<T> z = random_logits<T>(n, kind, seed);
      const layouts<T> laid_out(z, seed);
      for (long double t_hi : sweep_temperatures) {
        const T t = static_cast<T>(t_hi);
        const reference ref = reference_for<T>(hi(z), t);
        const auto softmax_bound = [&](Index i) {
          return softmax_bound_ulps<T>(ref.exponent(i), ref.softmax(i));
        };
        const auto log_bound = [](Index) { return 4.0L; };
        std::ostringstream context;
        context << "n = " << n << ", " << name_of(kind) << ", T = " << t;
        for (path p : all_paths) {
          if (n < 2 && p != path::vector) continue;
          const std::string where = context.str() + ", " + name_of(p);
          const Vec<T> y = through<T>(p, laid_out, [&](const auto& x, auto... axis) {
            return smax::softmax(x, axis..., t);
          });
          const Vec<T> ls = through<T>(p, laid_out, [&](const auto& x, auto... axis) {
            return smax::log_softmax(x, axis..., t);
          });
          softmax_bad += record<T>(softmax_table[name_of(p)], y, ref.softmax, softmax_bound,
                                   ulp_error<T>, where, failures);
          log_bad += record<T>(log_table[name_of(p)], ls, ref.log_softmax, log_bound,
                               log_domain_error<T>, where, failures);
          // The probabilities sum to 1 within n eps.
          long double sum = 0;
          for (Index i = 0; i < n; ++i) sum += y(i);
          EXPECT_LE(std::fabs(sum - 1), n * static_cast<long double>(eps<T>)) << where;
        }
      }
    }
  }
  print_summary<T>("softmax", softmax_table);
  print_summary<T>("log_softmax", log_table);
  EXPECT_EQ(softmax_bad, 0) << "softmax entries beyond 4 ULP + |d| eps/2:" << failures.str();
  EXPECT_EQ(log_bad, 0) << "log_softmax entries beyond 4 ULP of max(|r|, 1):" << failures.str();
}

TYPED_TEST(Accuracy, LogsumexpWithinFourUlpOfMaxAbsResultAndOne) {
  using T = TypeParam;
  if (!has_precise_reference<T>()) {
    GTEST_SKIP() << "no reference wider than double (build with MPFR)";
  }
  std::map<std::string, worst> table;
  Index bad = 0;
  std::ostringstream failures;
  std::uint32_t seed = 5000;
  const auto four = [](Index) { return 4.0L; };
  for (Index n : sweep_sizes) {
    for (logits kind : all_logit_kinds) {
      const Vec<T> z = random_logits<T>(n, kind, ++seed);
      const HiArray expected = HiArray::Constant(1, reference_for<T>(hi(z)).logsumexp);
      std::ostringstream context;
      context << "n = " << n << ", " << name_of(kind);
      // Vector, strided vector (a row of a column-major matrix), and both axes of batches.
      Mat<T> cols(n, 3);
      cols.col(0) = random_logits<T>(n, logits::normal_1, seed + 100);
      cols.col(1) = z;
      cols.col(2) = random_logits<T>(n, logits::normal_30, seed + 200);
      const Mat<T> rows = cols.transpose();
      const std::pair<const char*, T> results[] = {
          {"vector", smax::logsumexp(z)},
          {"row of col-major (strided)", smax::logsumexp(rows.row(1))},
          {"batch rowwise (strided)", smax::logsumexp(rows, smax::rowwise)(1)},
          {"batch colwise", smax::logsumexp(cols, smax::colwise)(1)},
          {"batch colwise, row-major", smax::logsumexp(MatR<T>(cols), smax::colwise)(1)},
      };
      for (const auto& [where, value] : results) {
        bad += record<T>(table[where], Vec<T>::Constant(1, value), expected, four,
                         log_domain_error<T>, context.str() + ", " + where, failures);
      }
    }
  }
  print_summary<T>("logsumexp", table);
  EXPECT_EQ(bad, 0) << "logsumexp beyond 4 ULP of max(|r|, 1):" << failures.str();
}

TYPED_TEST(Accuracy, LongNearUniformRows) {
  // Many exponentials close to 1: the normaliser is a long sum of similar terms, so its
  // rounding error shows directly in every probability (the amplification term is ~0
  // here, the bound is 4 ULP). Seeds picked among the first 40 as the hardest for a
  // normaliser summed in double with long sequential runs per SIMD lane.
  using T = TypeParam;
  if (!has_precise_reference<T>()) {
    GTEST_SKIP() << "no reference wider than double (build with MPFR)";
  }
  struct item {
    Index n;
    std::uint32_t seed;
  };
  for (const item& c : {item{256, 6}, item{512, 31}, item{2048, 31}, item{4097, 24}}) {
    const Vec<T> z = random_logits<T>(c.n, logits::near_ties, c.seed);
    const reference ref = reference_for<T>(hi(z));
    EXPECT_TRUE(softmax_within_bound(ref, smax::softmax(z)))
        << "random_logits<T>(" << c.n << ", near_ties, " << c.seed << ")";
    EXPECT_TRUE(within_log_ulps_of_reference(ref.log_softmax, smax::log_softmax(z)))
        << "random_logits<T>(" << c.n << ", near_ties, " << c.seed << ")";
  }
}

}  // namespace
