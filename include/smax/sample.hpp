// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include <smax/axis.hpp>
#include <smax/detail/dispatch.hpp>
#include <smax/detail/fpclass.hpp>
#include <smax/detail/kernels.hpp>
#include <smax/error.hpp>
#include <smax/softmax.hpp>

/// \file
/// smax::sample: draw a class index from logits, as language models generate a token, with
/// temperature, top-k and nucleus (top-p) filtering.
///
/// `sample(z, rng, {T, k, p})` returns index i with probability q_i, where
/// - q = softmax(z / T) over all entries (top_k = 0, top_p = 1: the defaults);
/// - top_k = k > 0 keeps the k largest logits (ties: the lower index ranks first, so exactly
///   min(k, n) entries are kept) and renormalises;
/// - top_p = p < 1 then keeps the smallest set of most probable entries whose probabilities
///   (after temperature and top-k) sum to at least p, and renormalises (Holtzman et al.'s
///   nucleus; the order of Hugging Face transformers and vLLM: temperature, top-k, top-p).
///
/// Limits and edge cases (the numerical policy of softmax.hpp, turned into a draw):
/// - T = 0 is greedy decoding: the argmax, the lowest index among equal maxima (a documented
///   choice: softmax's T -> 0+ limit would split ties; any T > 0, however small, does).
/// - T = +inf draws uniformly among the entries that are not -inf (after top-k / top-p,
///   which then rank by logit).
/// - -inf logits are never drawn: they have probability exactly 0.
/// - Exactly one +inf logit is drawn with certainty (softmax is one-hot on it), at any T and
///   with any filter.
/// - Errors (smax::error, thrown before the generator is called): a NaN logit (the message
///   names the first one's index), two or more +inf logits (softmax has no limit there: NaN),
///   every logit -inf, no logits at all, T negative or NaN, top_k negative, top_p NaN or
///   outside (0, 1]. With -ffast-math a NaN logit may go unnoticed (README, "-ffast-math").
/// - Finite logits of any magnitude (1e30, spreads beyond FLT_MAX) and any T > 0 never give
///   NaN or inf: weights are exp((z_i - max) / T), computed as softmax does it, so that
///   (z_i - max) / T cannot overflow while its true value is finite.
///
/// Randomness, portably: smax never uses std::uniform_real_distribution or
/// std::generate_canonical (their results differ between standard libraries). A draw takes
/// one uniform u in [0, 1) with 53 random bits (double and float logits; 64 for long double),
/// built from the generator's raw output, most significant bits first: with w random bits per
/// call (w = log2(max() - min() + 1)), ceil(53 / w) calls, each contributing its top bits;
/// u = bits * 2^-53. A 32-bit generator (std::mt19937) makes 2 calls, a 64-bit one
/// (std::mt19937_64) 1. A generator whose range is not a power of two (std::minstd_rand)
/// contributes floor(log2(range)) bits per call and rejects values beyond them, so it makes a
/// variable, seed-determined number of calls. Then:
/// - T = 0 calls the generator never;
/// - every other draw calls it for exactly one uniform, whatever the logits and filters
///   (even when the outcome is certain), so the generator's position depends only on the
///   calls made, not on the data;
/// - the batch forms draw the rows (columns) in order, one uniform each: the same as calling
///   sample on each in turn.
/// The uniform is bit-identical on every platform. The index is too wherever smax's exp
/// returns the same weights (the same instruction set); elsewhere (its 1-ULP results may
/// differ in the last bit) an index can differ only when u falls within rounding error of a
/// boundary of the cumulative distribution: a chance below n * eps per draw (eps = 6e-8 for
/// float, 1.1e-16 for double), far below in practice. The path matters in the same way: a
/// filter that keeps everything sums in another order than no filter.
///
/// Method (inverse CDF in one pass): the logits are read once, in chunks of 512 that stay in
/// L1 while they are read twice: the chunk's maximum, then its exponentials (smax's
/// vectorised exp) summed in double (float input; long double for long double) relative to
/// the running maximum, into at most 256 block sums (a block is ceil(n / 131072) chunks); a
/// block sum is rescaled by exp((old - new) / T) only when the running maximum grows. Then
/// u * total picks a block by the cumulative block sums, and one rescan of that block (512
/// entries for n <= 131072) picks the entry, in index order. Gumbel-max (the argmax of
/// z_i / T - log(-log u_i)) is also one pass, but needs n uniforms and 2n logarithms: on a
/// 128k vocabulary it measured 9 (double) to 15 (float) times slower, with std::mt19937_64
/// (benchmarks/sample_benchmark.cpp).
///
/// Complexity and memory (n logits):
/// - no filter: one pass with one exp per entry, plus one block; never allocates;
/// - T = 0: one pass of comparisons; never allocates;
/// - top-k: one pass of comparisons (groups of 16 that cannot enter are skipped), then
///   O(k log k) on the kept entries; allocates nothing for k <= 128, else k entries;
/// - top-p: the unfiltered pass (for the total), then a pass that gathers the candidates
///   (the entries of probability >= (1 - p) / (2 n): together they hold more than p, so
///   they contain the nucleus), a linear-time weighted selection of the nucleus among them
///   and a draw in index order; allocates nothing while at most 128 entries qualify (a few
///   dominant tokens), else room for up to 2n;
/// - with a sampling_workspace, the filters borrow its buffers: once it is reserved for the
///   vocabulary size, no draw allocates;
/// - an expression argument (`z / 2`) is first evaluated into a temporary;
/// - stack: up to about 12 KB (float) or 18 KB (double) for the buffers above.
/// Everything runs on the calling thread: the generator is sequential.

namespace smax {

/// Options of smax::sample, named after Hugging Face's generation parameters. T is the
/// logits' scalar type. The defaults draw from softmax(z) itself.
///
/// \code
/// smax::sampling_options<float> opt;
/// opt.temperature = 0.7f;
/// opt.top_k = 50;
/// opt.top_p = 0.9f;
/// Eigen::Index token = smax::sample(logits, rng, opt);
/// \endcode
template <typename T>
struct sampling_options {
  /// T >= 0: draws from softmax(z / T). 0 is greedy (argmax, lowest index on ties), +inf
  /// uniform over the entries that are not -inf.
  T temperature = T(1);
  /// k >= 0: keep only the k largest logits (ties broken towards the lower index); 0 (or
  /// k >= n) keeps all.
  Eigen::Index top_k = 0;
  /// p in (0, 1]: keep the smallest set of most probable entries whose probabilities sum to
  /// at least p (after temperature and top-k); 1 keeps all. A tiny p keeps only the
  /// most probable entry.
  T top_p = T(1);
};

namespace detail::sampling {

/// One entry that survived a filter: its logit, its weight exp((z - max) / T) and index.
template <typename T>
struct candidate {
  T z;
  T w;
  Index i;
};

/// Storage for candidates that is never zeroed: growing it costs an allocation and a copy
/// of what it holds, not a write to every new entry.
template <typename T>
struct candidate_buffer {
  std::unique_ptr<candidate<T>[]> data;
  Index capacity = 0;

  /// Room for n candidates, keeping the first `keep`.
  void grow(Index n, Index keep) {
    if (n <= capacity) return;
    std::unique_ptr<candidate<T>[]> bigger(new candidate<T>[static_cast<std::size_t>(n)]);
    std::copy(data.get(), data.get() + keep, bigger.get());
    data = std::move(bigger);
    capacity = n;
  }
};

/// Grants the samplers access to a workspace's buffers.
struct workspace_access;

}  // namespace detail::sampling

/// Reusable scratch for the top-k and top-p filters of smax::sample, so that repeated
/// draws (a generation loop) allocate nothing.
///
/// Without a workspace a filtered draw keeps up to 128 candidates on the stack and
/// allocates beyond that; with one, it uses the workspace's buffers and grows them when
/// they are too small (they keep their size across calls). `reserve(n)` with n the
/// vocabulary size guarantees no allocation at all: top-k needs min(k, n) entries and top-p
/// up to 2n (16 bytes per entry for float, 24 for double). Movable, not copyable; not
/// thread-safe: one workspace per thread.
///
/// \code
/// smax::sampling_workspace<float> ws(vocabulary_size);  // allocates once, here
/// for (;;) token = smax::sample(logits, rng, opt, ws);  // never allocates
/// \endcode
template <typename T>
class sampling_workspace {
 public:
  /// An empty workspace: it grows on first use.
  sampling_workspace() = default;

  /// A workspace for vocabularies of up to `vocabulary` entries: no draw from them allocates.
  /// \param vocabulary the largest number of logits it will be used with.
  explicit sampling_workspace(Eigen::Index vocabulary) { reserve(vocabulary); }

  /// Makes room for vocabularies of up to `vocabulary` entries (never shrinks).
  /// \param vocabulary the largest number of logits it will be used with.
  void reserve(Eigen::Index vocabulary) {
    first_.grow(vocabulary, 0);
    second_.grow(vocabulary, 0);
  }

  /// The largest vocabulary every filter can handle without allocating.
  /// \return the number of logits reserve() last made room for (0 when new).
  Eigen::Index capacity() const { return std::min(first_.capacity, second_.capacity); }

 private:
  friend struct detail::sampling::workspace_access;
  detail::sampling::candidate_buffer<T> first_;
  detail::sampling::candidate_buffer<T> second_;
};

namespace detail::sampling {

#if defined(__GNUC__)
#pragma GCC diagnostic push
// Packet types as template arguments drop their alignment attributes (see kernels.hpp).
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

template <typename T>
using acc = acc_t<T>;

struct workspace_access {
  template <typename T>
  static candidate_buffer<T>* first(sampling_workspace<T>& ws) {
    return &ws.first_;
  }
  template <typename T>
  static candidate_buffer<T>* second(sampling_workspace<T>& ws) {
    return &ws.second_;
  }
};

// ---------------------------------------------------------------------------------------
// Uniform random numbers from raw generator bits

/// Satisfies the UniformRandomBitGenerator requirements (as far as C++17 can tell).
template <typename G, typename = void>
struct is_generator : std::false_type {};
template <typename G>
struct is_generator<G, std::void_t<typename G::result_type, decltype(G::min()), decltype(G::max()),
                                   decltype(std::declval<G&>()())>>
    : std::bool_constant<
          std::is_integral_v<typename G::result_type> &&
          std::is_unsigned_v<typename G::result_type> &&
          std::is_convertible_v<decltype(std::declval<G&>()()), typename G::result_type>> {};

/// The generator argument of a public function: any type but an axis tag (those select the
/// batch overloads); whether it is a generator is checked by static_check_generator, with
/// a message.
template <typename G>
using enable_if_not_axis_t = std::enable_if_t<!is_axis_v<G>, int>;

template <typename G>
constexpr void static_check_generator() {
  static_assert(is_generator<G>::value,
                "smax::sample: 'rng' must be a non-const uniform random bit generator "
                "(std::mt19937, std::mt19937_64, or a type with an unsigned result_type, static "
                "constexpr min() and max() and operator()); for one draw per row or column of a "
                "matrix, pass smax::rowwise or smax::colwise before the generator");
  if constexpr (is_generator<G>::value) {
    static_assert(sizeof(typename G::result_type) <= sizeof(std::uint64_t),
                  "smax::sample: generators wider than 64 bits are not supported");
    static_assert(G::min() < G::max(), "smax::sample: the generator's max() must exceed min()");
  }
}

constexpr int floor_log2(std::uint64_t v) {
  int r = -1;
  for (; v != 0; v >>= 1) ++r;
  return r;
}

/// How many random bits one call of G yields: w with 2^w values in [min, min + 2^w);
/// `exact` when that is the whole range (else values beyond it are rejected).
template <typename G>
struct generator_bits {
  static constexpr std::uint64_t low = static_cast<std::uint64_t>(G::min());
  static constexpr std::uint64_t range = static_cast<std::uint64_t>(G::max()) - low;
  static constexpr int width =
      range == std::numeric_limits<std::uint64_t>::max() ? 64 : floor_log2(range + 1);
  static constexpr std::uint64_t mask =
      width == 64 ? std::numeric_limits<std::uint64_t>::max() : (std::uint64_t(1) << width) - 1;
  static constexpr bool exact = range == mask;
};

/// Bits random bits (<= 64) from g, most significant first: each call contributes its top
/// bits; the last call only as many as are still needed.
template <int Bits, typename G>
std::uint64_t draw_bits(G& g) {
  using gb = generator_bits<G>;
  std::uint64_t bits = 0;
  int have = 0;
  while (have < Bits) {
    std::uint64_t v = static_cast<std::uint64_t>(g()) - gb::low;
    if constexpr (!gb::exact) {
      while (v > gb::mask) v = static_cast<std::uint64_t>(g()) - gb::low;
    }
    const int take = std::min(gb::width, Bits - have);
    const std::uint64_t top = v >> (gb::width - take);
    bits = take == 64 ? top : (bits << take) | top;
    have += take;
  }
  return bits;
}

/// A uniform number in [0, 1) with min(64, digits of A) random bits: exact in A.
template <typename A, typename G>
A uniform01(G& g) {
  constexpr int bits = std::min(64, std::numeric_limits<A>::digits);
  return static_cast<A>(draw_bits<bits>(g)) * std::ldexp(A(1), -bits);
}

// ---------------------------------------------------------------------------------------
// Reading the logits and reporting bad ones

/// Logits in memory: entry i at data[i * stride].
template <typename T>
struct source {
  const T* data;
  Index stride;
  Index size;

  /// Entries [begin, begin + len) as a contiguous range: in place, or gathered into buf.
  const T* chunk(Index begin, Index len, T* buf) const {
    if (stride == 1) return data + begin;
    for (Index i = 0; i < len; ++i) buf[i] = data[(begin + i) * stride];
    return buf;
  }
};

/// The unit of every pass: small enough to stay in L1 while it is read two or three times.
/// (512 measured about 30% faster than 256 on a 128k vocabulary: fewer per-chunk
/// reductions.)
inline constexpr Index chunk_len = 512;
/// At most this many block sums are kept (on the stack) by the unfiltered sampler.
inline constexpr Index max_blocks = 256;

/// Which function and which distribution a message is about.
struct where {
  const char* function;
  const char* unit = nullptr;  // "row" or "column" in a batch
  Index distribution = 0;

  std::string of() const {
    return unit == nullptr ? std::string()
                           : std::string(" of ") + unit + " " + std::to_string(distribution);
  }
  [[noreturn]] void nan_at(Index i) const {
    fail(function, "logits", "NaN at index " + std::to_string(i) + of(),
         "no NaN (a NaN logit has no probability)");
  }
  [[noreturn]] void two_pos_inf(Index a, Index b) const {
    fail(function, "logits",
         "+inf at indices " + std::to_string(a) + " and " + std::to_string(b) + of(),
         "at most one +inf (with two, softmax has no limit: NaN)");
  }
  [[noreturn]] void all_neg_inf() const {
    fail(function, "logits", "-inf at every index" + of(),
         "at least one logit above -inf (nothing has a probability > 0)");
  }
};

/// Largest entry of a contiguous chunk. CheckNaN: NaN if any entry is NaN (Eigen's
/// maxCoeff<PropagateNaN> is four times slower than this on AVX-512); otherwise a NaN may
/// or may not come out, and callers must catch NaN elsewhere (in a sum of exponentials).
template <bool CheckNaN, typename T>
T chunk_max(const T* p, Index len) {
  T m = -std::numeric_limits<T>::infinity();
  bool nan = false;
  Index i = 0;
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    if (len >= 2 * ps) {
      Packet a = ei::ploadu<Packet>(p);
      Packet b = ei::ploadu<Packet>(p + ps);
      // pcmp_lt_or_nan(x, x) is true exactly in the NaN lanes.
      Packet bad =
          CheckNaN ? ei::por(ei::pcmp_lt_or_nan(a, a), ei::pcmp_lt_or_nan(b, b)) : ei::pzero(a);
      for (i = 2 * ps; i + 2 * ps <= len; i += 2 * ps) {
        const Packet x = ei::ploadu<Packet>(p + i);
        const Packet y = ei::ploadu<Packet>(p + i + ps);
        a = ei::pmax(a, x);
        b = ei::pmax(b, y);
        if constexpr (CheckNaN) {
          bad = ei::por(bad, ei::por(ei::pcmp_lt_or_nan(x, x), ei::pcmp_lt_or_nan(y, y)));
        }
      }
      m = ei::predux_max(ei::pmax(a, b));
      if constexpr (CheckNaN) {
        alignas(64) T lanes[ps];
        ei::pstore(lanes, bad);
        for (Index j = 0; j < ps; ++j) nan = nan || bits_of(lanes[j]) != 0;
      }
    }
  }
  for (; i < len; ++i) {
    if constexpr (CheckNaN) nan = nan || is_nan(p[i]);
    m = p[i] > m ? p[i] : m;
  }
  return nan ? std::numeric_limits<T>::quiet_NaN() : m;
}

/// Whether any of the `group` entries at p exceeds (Strict) or reaches `threshold`: one
/// comparison per packet and one test per group (a reduction per group would dominate the
/// top-k scan). `group` is a multiple of the packet size.
template <Index group, bool Strict, typename T>
EIGEN_ALWAYS_INLINE bool group_reaches(const T* p, T threshold) {
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    static_assert(group % ps == 0, "group_reaches: the group must be whole packets");
    const Packet t = ei::pset1<Packet>(threshold);
    Packet m = ei::ploadu<Packet>(p);
    for (Index i = ps; i < group; i += ps) m = ei::pmax(m, ei::ploadu<Packet>(p + i));
    if constexpr (std::is_same_v<T, float>) {
      return ei::predux_any(Strict ? ei::pcmp_lt(t, m) : ei::pcmp_le(t, m));
    } else {
      const T mx = ei::predux_max(m);  // Eigen's predux_any is generic (a sum) for double
      return Strict ? mx > threshold : mx >= threshold;
    }
  } else {
    bool any = false;
    for (Index i = 0; i < group; ++i) any = any || (Strict ? p[i] > threshold : p[i] >= threshold);
    return any;
  }
}

/// Throws for the first NaN of a chunk, if there is one.
template <typename T>
void find_nan(const T* p, Index len, Index begin, const where& at) {
  for (Index i = 0; i < len; ++i) {
    if (is_nan(p[i])) at.nan_at(begin + i);
  }
}

/// A chunk whose maximum m is not finite: throws for a NaN, records a +inf (throws for a
/// second one); nothing to do for a chunk of -inf.
template <typename T>
void inspect_chunk(const T* p, Index len, Index begin, T m, Index& pos_inf, const where& at) {
  if (is_nan(m)) find_nan(p, len, begin, at);
  if (!is_pos_inf(m)) return;
  find_nan(p, len, begin, at);  // a NaN outranks the +inf it shares a chunk with
  for (Index i = 0; i < len; ++i) {
    if (is_pos_inf(p[i])) {
      if (pos_inf >= 0) at.two_pos_inf(pos_inf, begin + i);
      pos_inf = begin + i;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Weights

/// The map from a logit x to its exponent d = (x - ref) / T, as smax's shift (halving both
/// terms for T > 1, so a finite spread cannot overflow) but multiplying by 1/T where that
/// reciprocal is a normal number: sampling needs no correctly rounded division, and a
/// vector division costs as much as half the exp. One more rounding (|d| eps relative in
/// the weight) is far below what any number of draws can detect.
enum class exponent_kind { plain, multiply, divide };

template <typename T>
struct exponent_map {
  using kind = exponent_kind;
  T half;
  T hmax;
  T scale;  // 1 / (half T) or half T
  kind how;

  exponent_map(T ref, T temperature)
      : half(temperature > T(1) ? T(0.5) : T(1)), hmax(half * ref), scale(half * temperature) {
    const T inv = T(1) / scale;
    if (temperature == T(1)) {
      how = kind::plain;
    } else if (is_finite(inv) && inv >= std::numeric_limits<T>::min()) {
      how = kind::multiply;
      scale = inv;
    } else {
      how = kind::divide;
    }
  }

  T operator()(T x) const {
    switch (how) {
      case kind::plain:
        return x - hmax;
      case kind::multiply:
        return (half * x - hmax) * scale;
      default:
        return (half * x - hmax) / scale;
    }
  }

  template <kind How, typename Packet>
  EIGEN_ALWAYS_INLINE Packet apply(const Packet& x) const {
    namespace ei = Eigen::internal;
    if constexpr (How == kind::plain) {
      return ei::psub(x, ei::pset1<Packet>(hmax));
    } else {
      const Packet d = ei::psub(ei::pmul(ei::pset1<Packet>(half), x), ei::pset1<Packet>(hmax));
      if constexpr (How == kind::multiply) return ei::pmul(d, ei::pset1<Packet>(scale));
      return ei::pdiv(d, ei::pset1<Packet>(scale));
    }
  }
};

/// exp(map(p[i])) for a contiguous chunk: stored to w when Store; returns the sum, each lane
/// adding at most 4 values in T before the total (in acc) takes them, as softmax does.
template <bool Store, exponent_kind How, typename T>
acc<T> exp_chunk(const T* p, T* w, Index len, const exponent_map<T>& map) {
  acc<T> total(0);
  Index i = 0;
  if constexpr (has_packet_exp<T>) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<T>::type;
    constexpr Index ps = ei::unpacket_traits<Packet>::size;
    for (; i + 8 * ps <= len; i += 8 * ps) {
      Packet a0 = ei::pset1<Packet>(T(0));
      Packet a1 = a0;
      for (Index j = i; j < i + 8 * ps; j += 2 * ps) {
        const Packet e0 = pexp_accurate(map.template apply<How>(ei::ploadu<Packet>(p + j)));
        const Packet e1 = pexp_accurate(map.template apply<How>(ei::ploadu<Packet>(p + j + ps)));
        if constexpr (Store) {
          ei::pstoreu(w + j, e0);
          ei::pstoreu(w + j + ps, e1);
        }
        a0 = ei::padd(a0, e0);
        a1 = ei::padd(a1, e1);
      }
      total += static_cast<acc<T>>(ei::predux(ei::padd(a0, a1)));
    }
    for (; i < len; i += ps) {
      // The last packets; lanes past the end hold ref (exponent 0) and are not summed.
      const Index rest = std::min(ps, len - i);
      alignas(64) T buf[ps];
      ei::pstore(buf, pexp_accurate(map.template apply<How>(
                          load_first<Packet>(p + i, rest, map.hmax / map.half))));
      for (Index j = 0; j < rest; ++j) {
        if constexpr (Store) w[i + j] = buf[j];
        total += buf[j];
      }
    }
  }
  for (; i < len; ++i) {
    const T e = std::exp(map(p[i]));
    if constexpr (Store) w[i] = e;
    total += e;
  }
  return total;
}

/// The weights of a chunk relative to `ref`: exp((z - ref) / T), or 1 for every entry that is
/// not -inf when T = +inf. Stores them to w when Store; returns their sum.
template <bool Store, typename T>
acc<T> chunk_weights(const T* p, T* w, Index len, T ref, T temperature) {
  if (is_pos_inf(temperature)) {
    acc<T> s(0);
    for (Index i = 0; i < len; ++i) {
      const T v = is_neg_inf(p[i]) ? T(0) : T(1);
      if constexpr (Store) w[i] = v;
      s += v;
    }
    return s;
  }
  const exponent_map<T> m(ref, temperature);
  switch (m.how) {
    case exponent_kind::plain:
      return exp_chunk<Store, exponent_kind::plain>(p, w, len, m);
    case exponent_kind::multiply:
      return exp_chunk<Store, exponent_kind::multiply>(p, w, len, m);
    default:
      return exp_chunk<Store, exponent_kind::divide>(p, w, len, m);
  }
}

/// exp((from - to) / T) in the accumulator type: rescales sums relative to `from` to `to`.
template <typename T>
acc<T> rescale(T from, T to, T temperature) {
  if (from == to || is_pos_inf(temperature)) return acc<T>(1);
  return std::exp(static_cast<acc<T>>(shift<T>(to, temperature)(from)));
}

// ---------------------------------------------------------------------------------------
// T = 0: greedy

/// Index of the largest logit (the lowest one among equal maxima), after checking every
/// entry. Calls no generator. Also serves to validate a distribution.
template <typename T>
Index greedy(const source<T>& x, const where& at) {
  alignas(64) T buf[chunk_len];
  T best = -std::numeric_limits<T>::infinity();
  Index best_chunk = -1;
  Index pos_inf = -1;
  for (Index c0 = 0; c0 < x.size; c0 += chunk_len) {
    const Index len = std::min(chunk_len, x.size - c0);
    const T* p = x.chunk(c0, len, buf);
    const T m = chunk_max<true>(p, len);
    if (!is_finite(m)) {
      inspect_chunk(p, len, c0, m, pos_inf, at);
      continue;
    }
    if (m > best) {  // strictly: an equal maximum in a later chunk has a higher index
      best = m;
      best_chunk = c0;
    }
  }
  if (pos_inf >= 0) return pos_inf;
  if (best_chunk < 0) at.all_neg_inf();
  const Index len = std::min(chunk_len, x.size - best_chunk);
  const T* p = x.chunk(best_chunk, len, buf);
  Index i = 0;
  while (i + 1 < len && !(p[i] == best)) ++i;
  return best_chunk + i;
}

// ---------------------------------------------------------------------------------------
// No filter: block sums in one pass, then one block rescanned

/// Chunks are grouped into at most max_blocks blocks of whole chunks.
struct block_layout {
  Index n;
  Index block_len;
  Index blocks;

  explicit block_layout(Index size) : n(size) {
    const Index chunks = (n + chunk_len - 1) / chunk_len;
    block_len = (chunks + max_blocks - 1) / max_blocks * chunk_len;
    blocks = (n + block_len - 1) / block_len;
  }
  Index begin(Index b) const { return b * block_len; }
  Index end(Index b) const { return std::min(n, (b + 1) * block_len); }
};

/// A block's sum of weights relative to `ref`, the running maximum when the block ended.
template <typename T>
struct block_sum {
  acc<T> sum;
  T ref;
};

/// The pass over all logits: the checks, the maximum, the single +inf and the block sums.
template <typename T>
struct totals {
  T max;          // largest logit (finite unless pos_inf >= 0)
  Index pos_inf;  // the +inf entry, or -1
  acc<T> total;   // sum of all weights relative to max (when pos_inf < 0)
};

/// One pass: checks every entry (throws before anything is drawn), then the block sums are
/// brought to the final maximum: rec[b].sum becomes the block's weight relative to it.
template <typename T>
totals<T> weigh_blocks(const source<T>& x, T temperature, const block_layout& lay,
                       block_sum<T>* rec, T* buf, const where& at) {
  using A = acc<T>;
  const bool uniform = is_pos_inf(temperature);
  T m_run = -std::numeric_limits<T>::infinity();
  Index pos_inf = -1;
  for (Index b = 0; b < lay.blocks; ++b) {
    A s(0);
    for (Index c0 = lay.begin(b); c0 < lay.end(b); c0 += chunk_len) {
      const Index len = std::min(chunk_len, lay.end(b) - c0);
      const T* p = x.chunk(c0, len, buf);
      // Without the NaN check the maximum is twice as fast; a NaN then shows in the sum of
      // exponentials, or behind a maximum of -inf. T = +inf counts instead of summing: check.
      T m = uniform ? chunk_max<true>(p, len) : chunk_max<false>(p, len);
      if (is_neg_inf(m) && !uniform) m = chunk_max<true>(p, len);
      if (!is_finite(m)) {
        inspect_chunk(p, len, c0, m, pos_inf, at);
        continue;
      }
      if (pos_inf >= 0) continue;  // the outcome is certain; only the checks remain
      if (m > m_run) {
        if (s != A(0)) s *= rescale(m_run, m, temperature);
        m_run = m;
      }
      const A cs = chunk_weights<false>(p, static_cast<T*>(nullptr), len, m_run, temperature);
      if (!is_finite(cs)) find_nan(p, len, c0, at);  // a NaN the maximum let through
      s += cs;
    }
    rec[b] = block_sum<T>{s, m_run};
  }
  if (pos_inf >= 0) return totals<T>{m_run, pos_inf, A(0)};
  if (is_neg_inf(m_run)) at.all_neg_inf();
  A total(0);
  T ref = m_run;
  A factor(1);
  for (Index b = 0; b < lay.blocks; ++b) {
    if (rec[b].sum == A(0)) continue;
    if (!(rec[b].ref == ref)) {  // blocks before the last increase of the maximum
      ref = rec[b].ref;
      factor = rescale(ref, m_run, temperature);
    }
    rec[b].sum *= factor;
    total += rec[b].sum;
  }
  return totals<T>{m_run, -1, total};
}

/// The entry of block [begin, end) where the cumulative weight relative to ref first exceeds
/// t (in index order); the last entry of positive weight if rounding leaves t unreached.
template <typename T>
Index pick_in_range(const source<T>& x, Index begin, Index end, T ref, T temperature, acc<T> t,
                    T* buf, T* w) {
  using A = acc<T>;
  A cum(0);
  Index last_chunk = -1;
  for (Index c0 = begin; c0 < end; c0 += chunk_len) {
    const Index len = std::min(chunk_len, end - c0);
    const T* p = x.chunk(c0, len, buf);
    const A s = chunk_weights<true>(p, w, len, ref, temperature);
    if (s > A(0)) last_chunk = c0;
    if (!(cum + s > t)) {
      cum += s;
      continue;
    }
    for (Index i = 0; i < len; ++i) {
      if (!(w[i] > T(0))) continue;
      cum += w[i];
      if (cum > t) return c0 + i;
    }
  }
  if (last_chunk < 0) return begin;  // unreachable: the block was chosen for its weight
  const Index len = std::min(chunk_len, end - last_chunk);
  chunk_weights<true>(x.chunk(last_chunk, len, buf), w, len, ref, temperature);
  Index i = len - 1;
  while (i > 0 && !(w[i] > T(0))) --i;
  return last_chunk + i;
}

template <typename T, typename G>
Index sample_full(const source<T>& x, G& g, T temperature, const where& at) {
  using A = acc<T>;
  const block_layout lay(x.size);
  block_sum<T> rec[max_blocks];
  alignas(64) T buf[chunk_len];
  alignas(64) T w[chunk_len];
  const totals<T> r = weigh_blocks(x, temperature, lay, rec, buf, at);
  const A u = uniform01<A>(g);  // after every check: an error leaves the generator untouched
  if (r.pos_inf >= 0) return r.pos_inf;
  const A target = u * r.total;
  A before(0);
  Index chosen = -1;
  for (Index b = 0; b < lay.blocks; ++b) {
    if (!(rec[b].sum > A(0))) continue;
    chosen = b;
    if (before + rec[b].sum > target) break;
    before += rec[b].sum;
  }
  // Within the block, weights relative to the block's own reference: undo its factor.
  const A factor = rescale(rec[chosen].ref, r.max, temperature);
  const A t = before + rec[chosen].sum > target ? (target - before) / factor
                                                : std::numeric_limits<A>::infinity();
  return pick_in_range(x, lay.begin(chosen), lay.end(chosen), rec[chosen].ref, temperature, t, buf,
                       w);
}

// ---------------------------------------------------------------------------------------
// Filters: candidates, top-k, nucleus

/// A growable array of candidates: inline storage first, then the caller's workspace buffer
/// (if any) or a buffer of its own.
template <typename T>
class candidate_list {
 public:
  /// `limit`: the most candidates this list can ever hold; the first growth beyond the
  /// inline storage goes straight there (one allocation, no copies; pages are only touched
  /// as entries are written).
  candidate_list(candidate_buffer<T>* external, Index limit) : external_(external), limit_(limit) {
    if (external_ != nullptr && external_->capacity > inline_capacity) {
      data_ = external_->data.get();
      capacity_ = external_->capacity;
    }
  }
  candidate_list(const candidate_list&) = delete;
  candidate_list& operator=(const candidate_list&) = delete;

  Index size() const { return size_; }
  candidate<T>* data() { return data_; }
  candidate<T>& operator[](Index i) { return data_[i]; }
  /// After writing entries [size(), n) through data().
  void resize(Index n) { size_ = n; }

  void push_back(const candidate<T>& c) {
    if (size_ == capacity_) reserve(capacity_ + 1);
    data_[size_++] = c;
  }

  /// Room for n candidates (keeps the contents): grows to the limit at once.
  void reserve(Index n) {
    if (n <= capacity_) return;
    candidate_buffer<T>& b = external_ != nullptr ? *external_ : own_;
    const Index grown = std::max(n, limit_);
    if (data_ == inline_) {
      b.grow(grown, 0);
      std::copy(inline_, inline_ + size_, b.data.get());
    } else {
      b.grow(grown, size_);
    }
    data_ = b.data.get();
    capacity_ = b.capacity;
  }

  /// Becomes a copy of other.
  void assign(candidate_list& other) {
    size_ = 0;
    reserve(other.size());
    std::copy(other.data(), other.data() + other.size(), data_);
    size_ = other.size();
  }

 private:
  static constexpr Index inline_capacity = 128;
  candidate<T> inline_[inline_capacity];
  candidate_buffer<T> own_;
  candidate_buffer<T>* external_;
  Index limit_;
  candidate<T>* data_ = inline_;
  Index size_ = 0;
  Index capacity_ = inline_capacity;
};

/// The scratch a filtered draw may use: the caller's buffers, or null for its own.
template <typename T>
struct scratch {
  candidate_buffer<T>* first = nullptr;
  candidate_buffer<T>* second = nullptr;
};

/// The ranking of the filters: larger logit first, then lower index (a strict total order).
template <typename T>
bool better(const candidate<T>& a, const candidate<T>& b) {
  return a.z > b.z || (a.z == b.z && a.i < b.i);
}

/// Restores the heap order (the worst candidate at the root) below position i.
template <typename T>
void sift_down(candidate<T>* h, Index n, Index i) {
  for (;;) {
    const Index l = 2 * i + 1;
    if (l >= n) return;
    Index worst = l;
    if (l + 1 < n && better(h[l], h[l + 1])) worst = l + 1;
    if (!better(h[i], h[worst])) return;
    std::swap(h[i], h[worst]);
    i = worst;
  }
}

template <typename T>
void sift_up(candidate<T>* h, Index i) {
  while (i > 0) {
    const Index parent = (i - 1) / 2;
    if (!better(h[parent], h[i])) return;
    std::swap(h[parent], h[i]);
    i = parent;
  }
}

/// Weights of the candidates relative to m, vectorised through a buffer.
template <typename T>
void weigh(candidate<T>* c, Index count, T m, T temperature) {
  alignas(64) T buf[chunk_len];
  for (Index i0 = 0; i0 < count; i0 += chunk_len) {
    const Index len = std::min(chunk_len, count - i0);
    for (Index j = 0; j < len; ++j) buf[j] = c[i0 + j].z;
    chunk_weights<true>(buf, buf, len, m, temperature);
    for (Index j = 0; j < len; ++j) c[i0 + j].w = buf[j];
  }
}

/// Reorders c[0, count) so that its first K entries are the K best (by `better`), K the
/// smallest count whose weights sum to at least `target` (count if none does), and returns
/// K >= 1. A quickselect that carries the weight of what is known to rank higher;
/// median-of-three pivots, and a sort when a range is small or the pivots keep being poor.
template <typename T>
Index select_nucleus(candidate<T>* c, Index count, acc<T> target) {
  using A = acc<T>;
  Index lo = 0, hi = count;
  A before(0);  // weight of c[0, lo), all better than c[lo, hi)
  int budget = 2 * floor_log2(static_cast<std::uint64_t>(count) + 1) + 8;
  while (hi - lo > 16 && budget-- > 0) {
    const Index mid = lo + (hi - lo) / 2;
    // Median of c[lo], c[mid], c[hi - 1] into c[hi - 1].
    if (better(c[mid], c[lo])) std::swap(c[mid], c[lo]);
    if (better(c[hi - 1], c[lo])) std::swap(c[hi - 1], c[lo]);
    if (better(c[mid], c[hi - 1])) std::swap(c[mid], c[hi - 1]);
    const candidate<T> pivot = c[hi - 1];
    Index store = lo;
    A s(0);
    for (Index i = lo; i < hi - 1; ++i) {
      // Branch-free Lomuto: the comparison is a coin flip the predictor cannot learn.
      const candidate<T> ci = c[i];
      const bool in = better(ci, pivot);
      c[i] = c[store];
      c[store] = ci;
      s += in ? static_cast<A>(ci.w) : A(0);
      store += in ? 1 : 0;
    }
    std::swap(c[store], c[hi - 1]);
    if (store > lo && before + s >= target) {
      hi = store;  // the boundary lies among the entries better than the pivot
    } else if (before + s + pivot.w >= target) {
      return store + 1;
    } else {
      before += s + pivot.w;
      lo = store + 1;
    }
  }
  std::sort(c + lo, c + hi,
            [](const candidate<T>& a, const candidate<T>& b) { return better(a, b); });
  for (Index i = lo; i < hi; ++i) {
    before += c[i].w;
    if (before >= target) return i + 1;
  }
  return std::max<Index>(hi, 1);
}

/// Draws among c[0, count) (in that order) those that `keep` accepts, with probability
/// proportional to their weights: the first whose cumulative weight exceeds u * total.
template <typename T, typename Keep>
Index draw_among(const candidate<T>* c, Index count, acc<T> u, Keep keep) {
  using A = acc<T>;
  // Branch-free sums: whether an entry is kept follows no pattern in index order.
  A total(0);
  for (Index j = 0; j < count; ++j) total += keep(c[j]) ? static_cast<A>(c[j].w) : A(0);
  const A t = u * total;
  A cum(0);
  Index last = 0;
  for (Index j = 0; j < count; ++j) {
    const bool positive = keep(c[j]) && c[j].w > T(0);
    cum += positive ? static_cast<A>(c[j].w) : A(0);
    last = positive ? j : last;
    if (cum > t) return c[j].i;  // reached first on a kept entry of positive weight
  }
  return c[last].i;
}

template <typename T, typename G>
Index sample_top_k(const source<T>& x, G& g, const sampling_options<T>& opt, const scratch<T>& s,
                   const where& at) {
  using A = acc<T>;
  const Index k = opt.top_k;
  constexpr Index group = 16;
  candidate_list<T> heap(s.first, k);
  heap.reserve(k);
  alignas(64) T buf[chunk_len];
  Index pos_inf = -1;
  for (Index c0 = 0; c0 < x.size; c0 += chunk_len) {
    const Index len = std::min(chunk_len, x.size - c0);
    const T* p = x.chunk(c0, len, buf);
    const T m = chunk_max<true>(p, len);
    if (!is_finite(m)) {
      inspect_chunk(p, len, c0, m, pos_inf, at);
      continue;
    }
    if (pos_inf >= 0) continue;
    // Entries equal to the root's logit come later, so they rank lower: strictly greater.
    if (heap.size() == k && !(m > heap[0].z)) continue;
    for (Index i = 0; i < len; ++i) {
      if (heap.size() == k && i % group == 0 && i + group <= len &&
          !group_reaches<group, true>(p + i, heap[0].z)) {
        i += group - 1;  // nothing in this group can enter
        continue;
      }
      const T z = p[i];
      if (heap.size() < k) {
        if (is_neg_inf(z)) continue;
        heap.push_back(candidate<T>{z, T(0), c0 + i});
        sift_up(heap.data(), heap.size() - 1);
      } else if (z > heap[0].z) {
        heap[0] = candidate<T>{z, T(0), c0 + i};
        sift_down(heap.data(), heap.size(), Index(0));
      }
    }
  }
  if (pos_inf < 0 && heap.size() == 0) at.all_neg_inf();
  const A u = uniform01<A>(g);
  if (pos_inf >= 0) return pos_inf;
  const Index count = heap.size();
  T m = heap[0].z;
  for (Index j = 1; j < count; ++j) m = std::max(m, heap[j].z);
  weigh(heap.data(), count, m, opt.temperature);
  Index kept = count;
  if (opt.top_p < T(1)) {
    A sum(0);
    for (Index j = 0; j < count; ++j) sum += heap[j].w;
    kept = select_nucleus(heap.data(), count, static_cast<A>(opt.top_p) * sum);
  }
  std::sort(heap.data(), heap.data() + kept,
            [](const candidate<T>& a, const candidate<T>& b) { return a.i < b.i; });
  return draw_among(heap.data(), kept, u, [](const candidate<T>&) { return true; });
}

template <typename T, typename G>
Index sample_top_p(const source<T>& x, G& g, const sampling_options<T>& opt, const scratch<T>& s,
                   const where& at) {
  using A = acc<T>;
  const T temperature = opt.temperature;
  alignas(64) T buf[chunk_len];
  alignas(64) T w[chunk_len];
  Index pos_inf = -1;
  T m(0);
  A total(0);
  {
    const block_layout lay(x.size);
    block_sum<T> rec[max_blocks];
    const totals<T> r = weigh_blocks(x, temperature, lay, rec, buf, at);
    pos_inf = r.pos_inf;
    m = r.max;
    total = r.total;
  }
  const A u = uniform01<A>(g);
  if (pos_inf >= 0) return pos_inf;

  // Entries of weight below theta together weigh less than n theta = (1 - p) total / 2, so
  // the rest weigh more than p total and contain the nucleus: gather only them.
  const A theta = (A(1) - static_cast<A>(opt.top_p)) * total / (A(2) * static_cast<A>(x.size));
  const A skip_below = std::log(theta) - A(1);  // a chunk whose maximum's exponent is below
  // theta in T, rounded down: a group none of whose weights reaches it holds no candidate.
  const T theta_t = std::nextafter(static_cast<T>(theta), T(0));
  const bool uniform = is_pos_inf(temperature);
  const exponent_map<T> sh(m, uniform ? T(1) : temperature);
  constexpr Index group = 16;
  candidate_list<T> found(s.first, x.size);
  for (Index c0 = 0; c0 < x.size; c0 += chunk_len) {
    const Index len = std::min(chunk_len, x.size - c0);
    const T* p = x.chunk(c0, len, buf);
    const T cm = chunk_max<false>(p, len);  // every entry was checked by the first pass
    if (is_neg_inf(cm)) continue;
    if (!uniform && static_cast<A>(sh(cm)) < skip_below) continue;
    chunk_weights<true>(p, w, len, m, temperature);
    for (Index g0 = 0; g0 < len; g0 += group) {
      const Index end = std::min(len, g0 + group);
      if (end - g0 == group && !group_reaches<group, false>(w + g0, theta_t)) {
        continue;
      }
      Index k = found.size();
      found.reserve(k + group);
      candidate<T>* out = found.data();
      for (Index i = g0; i < end; ++i) {  // write always, keep if heavy enough: no branch
        out[k] = candidate<T>{p[i], w[i], c0 + i};
        k += static_cast<A>(w[i]) >= theta ? 1 : 0;
      }
      found.resize(k);
    }
  }
  candidate_list<T> work(s.second, found.size());
  work.assign(found);
  const Index kept = select_nucleus(work.data(), work.size(), static_cast<A>(opt.top_p) * total);
  candidate<T> last = work[0];
  for (Index j = 1; j < kept; ++j) {
    if (better(last, work[j])) last = work[j];
  }
  return draw_among(found.data(), found.size(), u,
                    [last](const candidate<T>& c) { return !better(last, c); });
}

// ---------------------------------------------------------------------------------------
// Dispatch

template <typename T>
void check_options(const char* function, const sampling_options<T>& opt) {
  check_forward_temperature(function, opt.temperature);
  if (opt.top_k < 0) {
    fail(function, "top_k", to_text(opt.top_k), "a count >= 0 (0 turns top-k off)");
  }
  if (is_nan(opt.top_p) || !(opt.top_p > T(0)) || !(opt.top_p <= T(1))) {
    fail(function, "top_p", to_text(opt.top_p), "a number in (0, 1] (1 turns top-p off)");
  }
}

/// One draw from one non-empty distribution with checked options.
template <typename T, typename G>
Index sample_one(const source<T>& x, G& g, const sampling_options<T>& opt, const scratch<T>& s,
                 const where& at) {
  if (opt.temperature == T(0)) return greedy(x, at);
  if (opt.top_k > 0 && opt.top_k < x.size) return sample_top_k(x, g, opt, s, at);
  if (opt.top_p < T(1)) return sample_top_p(x, g, opt, s, at);
  return sample_full(x, g, opt.temperature, at);
}

template <typename D, typename G>
Index sample_vector(const char* function, const Eigen::DenseBase<D>& logits, G& g,
                    const sampling_options<typename D::Scalar>& opt,
                    const scratch<typename D::Scalar>& s) {
  using T = typename D::Scalar;
  static_check_scalar<D>();
  static_check_vector<D>(function);
  static_check_generator<G>();
  check_options(function, opt);
  if (logits.size() == 0) fail(function, "logits", "of length 0", "at least one logit");
  if constexpr (has_direct_access<D>) {
    const auto b = make_batch(logits, vector_axis_t<D>{});
    return sample_one(source<T>{b.data, b.kstride, b.length}, g, opt, s, where{function});
  } else {
    const typename D::PlainObject copy = logits;
    return sample_one(source<T>{copy.data(), Index(1), copy.size()}, g, opt, s, where{function});
  }
}

/// The plain integer vector holding one index per distribution: a column for rowwise, a row
/// for colwise (as reduced<D, Axis>); Array stays Array.
template <typename D, typename Axis>
struct index_vector {
  using shape = reduced<D, Axis>;
  using type = std::conditional_t<is_array<D>,
                                  Eigen::Array<Index, shape::rows, shape::cols, shape::options,
                                               shape::max_rows, shape::max_cols>,
                                  Eigen::Matrix<Index, shape::rows, shape::cols, shape::options,
                                                shape::max_rows, shape::max_cols>>;
};

template <typename Out, typename D, typename Axis, typename G>
void sample_batch(const char* function, const Eigen::DenseBase<Out>& out,
                  const Eigen::DenseBase<D>& logits, Axis axis, G& g,
                  const sampling_options<typename D::Scalar>& opt,
                  const scratch<typename D::Scalar>& s) {
  using T = typename D::Scalar;
  using I = typename Out::Scalar;
  static_check_scalar<D>();
  static_check_generator<G>();
  static_assert(is_writable_storage<Out>,
                "smax::sample_into: 'out' must be writable storage with direct access (a "
                "Matrix, Array, Map, Block or Ref), not an expression");
  static_assert(std::is_integral_v<I> && !std::is_same_v<I, bool>,
                "smax::sample_into: 'out' must hold integers (Eigen::VectorXi, a vector of "
                "Eigen::Index, ...): one class index per distribution");
  static_assert(Out::IsVectorAtCompileTime,
                "smax::sample_into: 'out' must be a compile-time vector (one index per "
                "distribution)");
  constexpr bool by_row = std::is_same_v<Axis, rowwise_t>;
  const Index count = by_row ? logits.rows() : logits.cols();
  const Index length = by_row ? logits.cols() : logits.rows();
  check_options(function, opt);
  check_output_length(
      function, out, count,
      by_row ? "one index per row of 'logits'" : "one index per column of 'logits'");
  if (count > 0 && length == 0) {
    fail(function, "logits", "of shape " + shape_text(logits.rows(), logits.cols()),
         by_row ? "at least one logit in every row" : "at least one logit in every column");
  }
  if (count > 0 && static_cast<std::uint64_t>(length - 1) >
                       static_cast<std::uint64_t>(std::numeric_limits<I>::max())) {
    fail(function, "out",
         "of an integer type whose largest value is " + to_text(+std::numeric_limits<I>::max()),
         "a type that holds every index below " + std::to_string(length));
  }
  const auto run = [&](const auto& z) {
    const auto b = make_batch(z, axis);
    where at{function, by_row ? "row" : "column", 0};
    const auto dist = [&](Index d) { return source<T>{b.data + d * b.dstride, b.kstride, length}; };
    if (count > 1) {
      // Every distribution is checked before the first draw or write: an error leaves the
      // generator and out untouched.
      for (Index d = 0; d < count; ++d) {
        at.distribution = d;
        greedy(dist(d), at);
      }
    }
    // Without a workspace, one set of vectors serves every distribution: a few allocations
    // per call at most.
    candidate_buffer<T> first, second;
    const scratch<T> rows{s.first != nullptr ? s.first : &first,
                          s.second != nullptr ? s.second : &second};
    resize_to_length(out, count);
    for (Index d = 0; d < count; ++d) {
      at.distribution = d;
      writable(out).coeffRef(d) = static_cast<I>(sample_one(dist(d), g, opt, rows, at));
    }
  };
  if constexpr (has_direct_access<D>) {
    run(logits.derived());
  } else {
    const typename D::PlainObject copy = logits;
    run(copy);
  }
}

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

}  // namespace detail::sampling

// ---------------------------------------------------------------------------------------
// Public API

/// Draws a class index from the logits of one distribution (a compile-time vector): index i
/// with probability softmax(z / T)_i, restricted by top-k and top-p (see sampling_options
/// and this header's description).
///
/// \param logits any Eigen vector of float, double or long double (Matrix, Array, Map,
///   Block, or an expression, which is evaluated once).
/// \param rng a uniform random bit generator (std::mt19937, std::mt19937_64, or your own):
///   called for exactly one 53-bit uniform (2 calls of a 32-bit generator, 1 of a 64-bit
///   one), or never at T = 0; never before every check has passed.
/// \param options temperature, top_k, top_p.
/// \return the index drawn, in [0, size).
///
/// Edge cases: T = 0 is the argmax (lowest index on ties); T = +inf is uniform over the
/// entries that are not -inf; -inf entries are never drawn; one +inf entry is drawn with
/// certainty. Complexity: one pass over the logits with one exp per entry (top-k: one pass
/// of comparisons); no allocation without filters, nor for top_k <= 128.
/// \throws smax::error for no logits, a NaN logit (naming its index), two +inf logits,
///   every logit -inf, T < 0 or NaN, top_k < 0, top_p outside (0, 1]. The generator is then
///   untouched.
template <typename D, typename URBG, detail::sampling::enable_if_not_axis_t<URBG> = 0>
Eigen::Index sample(const Eigen::DenseBase<D>& logits, URBG&& rng,
                    const sampling_options<typename D::Scalar>& options = {}) {
  return detail::sampling::sample_vector("smax::sample", logits, rng, options,
                                         detail::sampling::scratch<typename D::Scalar>{});
}

/// smax::sample with caller scratch for the top-k / top-p filters: no allocation once the
/// workspace has grown to (or was reserved for) the vocabulary size.
///
/// \param logits the logits of one distribution (a compile-time vector).
/// \param rng a uniform random bit generator, called as by the form without a workspace.
/// \param options temperature, top_k, top_p.
/// \param workspace reusable scratch (not thread-safe: one per thread).
/// \return the index drawn: the same as the form without a workspace gives.
/// \throws smax::error as the form without a workspace.
template <typename D, typename URBG, detail::sampling::enable_if_not_axis_t<URBG> = 0>
Eigen::Index sample(const Eigen::DenseBase<D>& logits, URBG&& rng,
                    const sampling_options<typename D::Scalar>& options,
                    sampling_workspace<typename D::Scalar>& workspace) {
  using access = detail::sampling::workspace_access;
  return detail::sampling::sample_vector("smax::sample", logits, rng, options,
                                         detail::sampling::scratch<typename D::Scalar>{
                                             access::first(workspace), access::second(workspace)});
}

/// smax::sample with the options spelled out: `sample(z, rng, 0.7f, 50, 0.9f)` is
/// `sample(z, rng, {0.7f, 50, 0.9f})`.
///
/// \param logits the logits of one distribution (a compile-time vector).
/// \param rng a uniform random bit generator.
/// \param temperature T >= 0 (0: greedy, +inf: uniform).
/// \param top_k keep the k largest logits; 0 (the default) keeps all.
/// \param top_p keep the nucleus of probability mass p in (0, 1]; 1 (the default) keeps all.
/// \return the index drawn.
/// \throws smax::error as the options form.
template <typename D, typename URBG, detail::sampling::enable_if_not_axis_t<URBG> = 0>
Eigen::Index sample(const Eigen::DenseBase<D>& logits, URBG&& rng, typename D::Scalar temperature,
                    Eigen::Index top_k = 0, typename D::Scalar top_p = 1) {
  return sample(logits, rng, sampling_options<typename D::Scalar>{temperature, top_k, top_p});
}

/// One draw per row (smax::rowwise) or per column (smax::colwise) of logits, written into
/// the integer vector out (any integer scalar type, either orientation; resized if it is a
/// resizable plain object, else it must have one entry per distribution).
///
/// The distributions are drawn in order, each as sample(row, rng, options) would draw it,
/// from the same generator. Every distribution is checked before the first draw, so an
/// error leaves out and the generator untouched. Fastest when each distribution is
/// contiguous (rowwise on a RowMajor matrix, colwise on a ColMajor one); a strided one is
/// gathered chunk by chunk.
///
/// \param out integer vector receiving one index per distribution.
/// \param logits 2-D logits.
/// \param axis smax::rowwise or smax::colwise.
/// \param rng a uniform random bit generator: one uniform per distribution (none at T = 0).
/// \param options temperature, top_k, top_p, the same for every distribution.
/// \throws smax::error as sample, naming the row or column, if out cannot hold one index
///   per distribution or its type cannot hold the largest index, or if the distributions
///   are empty (a batch of no distributions is fine: nothing is drawn).
template <typename Out, typename D, typename Axis, typename URBG,
          detail::enable_if_axis_t<Axis> = 0>
void sample_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& logits, Axis axis,
                 URBG&& rng, const sampling_options<typename D::Scalar>& options = {}) {
  detail::sampling::sample_batch("smax::sample_into", out, logits, axis, rng, options,
                                 detail::sampling::scratch<typename D::Scalar>{});
}

/// sample_into with caller scratch for the filters (see sampling_workspace).
///
/// \param out integer vector receiving one index per distribution.
/// \param logits 2-D logits.
/// \param axis smax::rowwise or smax::colwise.
/// \param rng a uniform random bit generator.
/// \param options temperature, top_k, top_p.
/// \param workspace reusable scratch.
/// \throws smax::error as sample_into.
template <typename Out, typename D, typename Axis, typename URBG,
          detail::enable_if_axis_t<Axis> = 0>
void sample_into(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<D>& logits, Axis axis,
                 URBG&& rng, const sampling_options<typename D::Scalar>& options,
                 sampling_workspace<typename D::Scalar>& workspace) {
  using access = detail::sampling::workspace_access;
  detail::sampling::sample_batch("smax::sample_into", out, logits, axis, rng, options,
                                 detail::sampling::scratch<typename D::Scalar>{
                                     access::first(workspace), access::second(workspace)});
}

/// One draw per row (smax::rowwise: a column vector of Eigen::Index, like
/// m.rowwise().sum()) or per column (smax::colwise: a row vector); Array input gives an
/// Array. See sample_into.
///
/// \param logits 2-D logits.
/// \param axis smax::rowwise or smax::colwise.
/// \param rng a uniform random bit generator.
/// \param options temperature, top_k, top_p.
/// \return one index per distribution.
/// \throws smax::error as sample_into.
template <typename D, typename Axis, typename URBG, detail::enable_if_axis_t<Axis> = 0>
typename detail::sampling::index_vector<D, Axis>::type sample(
    const Eigen::DenseBase<D>& logits, Axis axis, URBG&& rng,
    const sampling_options<typename D::Scalar>& options = {}) {
  typename detail::sampling::index_vector<D, Axis>::type result;
  detail::sampling::sample_batch("smax::sample", result, logits, axis, rng, options,
                                 detail::sampling::scratch<typename D::Scalar>{});
  return result;
}

/// The batch sample with the options spelled out: `sample(m, smax::rowwise, rng, 0.7f, 50)`.
///
/// \param logits 2-D logits.
/// \param axis smax::rowwise or smax::colwise.
/// \param rng a uniform random bit generator.
/// \param temperature T >= 0.
/// \param top_k keep the k largest logits; 0 keeps all.
/// \param top_p nucleus mass in (0, 1]; 1 keeps all.
/// \return one index per distribution.
/// \throws smax::error as sample_into.
template <typename D, typename Axis, typename URBG, detail::enable_if_axis_t<Axis> = 0>
typename detail::sampling::index_vector<D, Axis>::type sample(const Eigen::DenseBase<D>& logits,
                                                              Axis axis, URBG&& rng,
                                                              typename D::Scalar temperature,
                                                              Eigen::Index top_k = 0,
                                                              typename D::Scalar top_p = 1) {
  return sample(logits, axis, rng, sampling_options<typename D::Scalar>{temperature, top_k, top_p});
}

}  // namespace smax
