// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

/// \file
/// Umbrella header: everything smax offers.

#include <smax/attention.hpp>
#include <smax/axis.hpp>
#include <smax/causal.hpp>
#include <smax/cross_entropy.hpp>
#include <smax/distillation.hpp>
#include <smax/error.hpp>
#include <smax/linear_cross_entropy.hpp>
#include <smax/logsumexp_accumulator.hpp>
#include <smax/masked_softmax.hpp>
#include <smax/sample.hpp>
#include <smax/sigmoid.hpp>
#include <smax/softmax.hpp>
#include <smax/version.hpp>

/// \namespace smax
/// Everything smax offers: softmax, log_softmax, logsumexp and their backward passes
/// (softmax.hpp), the fused losses (cross_entropy.hpp, distillation.hpp, sigmoid.hpp), the
/// streaming logsumexp_accumulator, the axis tags smax::rowwise and smax::colwise, and
/// smax::error. Implementation details live in smax::detail and are not part of the API.
