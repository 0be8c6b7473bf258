// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
//
// The definitions behind kernel_instances.hpp's extern declarations.
#include "test_utils.hpp"  // first: silences a GCC 12 false positive before Eigen

#include "kernel_instances.hpp"

SMAX_TEST_KERNEL_LIST(, float)
SMAX_TEST_KERNEL_LIST(, double)
