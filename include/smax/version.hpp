// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

/// \file
/// The version of smax. The single source of the version: CMake's project() parses the
/// three lines below.

/// Major version: incompatible API changes.
#define SMAX_VERSION_MAJOR 0
/// Minor version: new features, compatible.
#define SMAX_VERSION_MINOR 1
/// Patch version: fixes.
#define SMAX_VERSION_PATCH 0

/// The version as one number, major * 10000 + minor * 100 + patch (0.1.0 is 100).
#define SMAX_VERSION (SMAX_VERSION_MAJOR * 10000 + SMAX_VERSION_MINOR * 100 + SMAX_VERSION_PATCH)
