// SPDX-License-Identifier: MIT
// Copyright (c) 2026 The smax authors
#pragma once

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

/// \file
/// smax::error and the way argument errors are reported.
///
/// Every invalid argument is reported before any output is written. With exceptions
/// enabled it throws smax::error. Built with -fno-exceptions, or with SMAX_NO_EXCEPTIONS
/// defined, the same message is printed to stderr and the program aborts.

/// 1 when smax reports errors by throwing smax::error, 0 when it prints and aborts.
#if defined(SMAX_NO_EXCEPTIONS) || \
    !(defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND))
#define SMAX_HAS_EXCEPTIONS 0
#else
#define SMAX_HAS_EXCEPTIONS 1
#endif

namespace smax {

/// The exception thrown for an invalid argument. Its message names the function, the
/// argument, the bad value and what was expected, for example
/// `smax::softmax: argument 'temperature' is -1; expected a number >= 0`.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

/// Formats a number so that it reads back exactly (max_digits10).
template <typename T>
std::string to_text(const T& value) {
  std::ostringstream os;
  if constexpr (std::numeric_limits<T>::is_specialized && !std::numeric_limits<T>::is_integer) {
    os.precision(std::numeric_limits<T>::max_digits10);
  }
  os << value;
  return os.str();
}

/// Reports an argument error: `<function>: argument '<argument>' is <value>; expected <what>`.
[[noreturn]] inline void fail(const char* function, const char* argument, const std::string& value,
                              const std::string& expected) {
  std::string message = std::string(function) + ": argument '" + argument + "' is " + value +
                        "; expected " + expected;
#if SMAX_HAS_EXCEPTIONS
  throw error(message);
#else
  std::fprintf(stderr, "smax::error: %s\n", message.c_str());
  std::abort();
#endif
}

}  // namespace detail
}  // namespace smax
