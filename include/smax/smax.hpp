// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

/// \file
/// Umbrella header: everything smax offers.

#include <smax/axis.hpp>
#include <smax/cross_entropy.hpp>
#include <smax/distillation.hpp>
#include <smax/error.hpp>
#include <smax/logsumexp_accumulator.hpp>
#include <smax/sigmoid.hpp>
#include <smax/softmax.hpp>
#include <smax/version.hpp>
