// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

// The single source of the version: CMake's project() parses these three lines.
#define SMAX_VERSION_MAJOR 0
#define SMAX_VERSION_MINOR 1
#define SMAX_VERSION_PATCH 0

#define SMAX_VERSION (SMAX_VERSION_MAJOR * 10000 + SMAX_VERSION_MINOR * 100 + SMAX_VERSION_PATCH)
