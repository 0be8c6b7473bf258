// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors

// The partial loads behind every short distribution and every row's last packet
// (smax/detail/kernels.hpp: load_first, store_first). load_first must give from[0..n) and
// the pad value elsewhere, reading nothing past from[n - 1]: a load that reaches into the
// caller's next object stalls on the stores to it (Vector3f softmax 37 ns against 17 on
// Zen 4). Checked for every packet type this build has and every n, with the last entry
// just before a page the process may not read, so an over-wide load faults.

// First, before Eigen: see the note on GCC warnings at its top.
#include "test_utils.hpp"

#include <smax/smax.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>
#include <Eigen/Core>

#if defined(__unix__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace {

namespace sd = smax::detail;
namespace ei = Eigen::internal;
using Index = Eigen::Index;

/// Two pages, the second unreadable where the platform allows it: memory whose end is a
/// fault boundary.
class GuardedBuffer {
 public:
  GuardedBuffer() {
#if defined(__unix__)
    page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      base_ = static_cast<unsigned char*>(p);
      guarded_ = mprotect(base_ + page_, page_, PROT_NONE) == 0;
    }
#endif
    if (base_ == nullptr) {
      fallback_.resize(2 * page_);
      base_ = fallback_.data();
    }
  }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  ~GuardedBuffer() {
#if defined(__unix__)
    if (fallback_.empty()) munmap(base_, 2 * page_);
#endif
  }
  /// The first byte past the readable memory.
  unsigned char* end() const { return base_ + page_; }
  bool guarded() const { return guarded_; }

 private:
  std::size_t page_ = 4096;
  unsigned char* base_ = nullptr;
  bool guarded_ = false;
  std::vector<unsigned char> fallback_;
};

template <typename Packet>
void check_load_first(const char* name) {
  using T = typename ei::unpacket_traits<Packet>::type;
  constexpr Index ps = ei::unpacket_traits<Packet>::size;
  GuardedBuffer buffer;
  T* end = reinterpret_cast<T*>(buffer.end());
  const T pad = T(-7.25);
  for (Index n = 0; n < ps; ++n) {
    // The n entries end exactly at the unreadable page.
    T* from = end - n;
    for (Index j = 0; j < n; ++j) from[j] = T(j + 1) * T(0.5);
    alignas(64) T lanes[ps];
    ei::pstore(lanes, sd::load_first<Packet>(from, n, pad));
    for (Index j = 0; j < ps; ++j) {
      EXPECT_EQ(lanes[j], j < n ? from[j] : pad) << name << ", n = " << n << ", lane " << j;
    }
  }
}

template <typename Packet>
void check_store_first(const char* name) {
  using T = typename ei::unpacket_traits<Packet>::type;
  constexpr Index ps = ei::unpacket_traits<Packet>::size;
  alignas(64) T values[ps];
  for (Index j = 0; j < ps; ++j) values[j] = T(j + 1);
  const Packet p = ei::pload<Packet>(values);
  for (Index n = 0; n < ps; ++n) {
    std::vector<T> to(ps + 1, T(-1));
    sd::store_first(to.data(), p, n);
    for (Index j = 0; j <= ps; ++j) {
      EXPECT_EQ(to[j], j < n ? values[j] : T(-1)) << name << ", n = " << n << ", entry " << j;
    }
  }
}

template <typename Packet>
void check_packet(const char* name) {
  check_load_first<Packet>(name);
  check_store_first<Packet>(name);
}

TEST(PartialLoads, TheBuffersEndIsAFaultBoundary) {
#if defined(__unix__)
  // Otherwise the tests below could not catch a load past the end.
  EXPECT_TRUE(GuardedBuffer().guarded());
#else
  GTEST_SKIP() << "no mprotect on this platform";
#endif
}

TEST(PartialLoads, EveryPacketTypeOfThisBuild) {
  // The kernels' own packets, whatever the build.
  check_packet<ei::packet_traits<float>::type>("float");
  check_packet<ei::packet_traits<double>::type>("double");
  // The narrower ones the composed loads are built from (an AVX-512 build has them all).
#if defined(EIGEN_VECTORIZE_SSE2)
  check_packet<ei::Packet4f>("Packet4f");
  check_packet<ei::Packet2d>("Packet2d");
#endif
#if defined(EIGEN_VECTORIZE_AVX)
  check_packet<ei::Packet8f>("Packet8f");
  check_packet<ei::Packet4d>("Packet4d");
#endif
}

}  // namespace
