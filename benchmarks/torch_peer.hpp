// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once
// What the libtorch peer shares across the benchmark programs (included only when
// SMAX_BENCH_HAVE_TORCH, after torch/torch.h).

#include <string>

#include <torch/torch.h>

namespace smax_bench {

/// The ISA ATen dispatches its CPU kernels to, as at::show_config() reports it.
inline std::string torch_cpu_capability() {
  const std::string config = at::show_config();
  const std::string key = "CPU capability usage: ";
  const auto pos = config.find(key);
  if (pos == std::string::npos) return "unknown";
  const auto begin = pos + key.size();
  return config.substr(begin, config.find('\n', begin) - begin);
}

}  // namespace smax_bench
