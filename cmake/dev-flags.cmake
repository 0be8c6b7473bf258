# smax_dev_flags: warnings and sanitizers for smax's own tests, examples and benchmarks.
# Linked PRIVATE by those targets only and never exported, so nothing here reaches the
# users of smax::smax. Eigen comes in through an imported target, so its headers are
# SYSTEM includes and its own warnings cannot trip SMAX_WERROR.
add_library(smax_dev_flags INTERFACE)

if(MSVC)
  target_compile_options(smax_dev_flags INTERFACE /W4 /permissive- $<$<BOOL:${SMAX_WERROR}>:/WX>)
else()
  target_compile_options(smax_dev_flags INTERFACE
    -Wall -Wextra -Wpedantic $<$<BOOL:${SMAX_WERROR}>:-Werror>)
endif()

# These must come after -Wpedantic, hence after the block above.
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # GoogleTest's TYPED_TEST_SUITE(Suite, Types) leaves the macro's "..." empty, which
  # clang's -Wpedantic rejects before C++20 (googletest#2271).
  target_compile_options(smax_dev_flags INTERFACE -Wno-gnu-zero-variadic-macro-arguments)
elseif(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC's flow-based warnings misfire on Eigen and libstdc++ code inlined at -O2/-O3
  # (a packet load from a Vector3f, a vector assigned from a braced list), and -isystem
  # does not silence them because they are reported after inlining. Keep them visible
  # but not fatal; the sanitizer build checks the real memory accesses. (GCC 12 with
  # AVX-512 also flags _mm512_undefined_* in Eigen's intrinsics: GCC bug 105593. And GCC 12
  # in C++20 flags libstdc++'s own std::string operator+ (a literal plus a temporary string)
  # with -Wrestrict, inlined at -O3 into tests/test_utils.hpp.)
  target_compile_options(smax_dev_flags INTERFACE
    -Wno-error=array-bounds -Wno-error=stringop-overflow -Wno-error=nonnull
    -Wno-error=maybe-uninitialized -Wno-error=uninitialized -Wno-error=restrict)
endif()

if(SMAX_SANITIZE)
  # Every finding is fatal, so a UBSan report fails its test instead of scrolling by.
  set(smax_sanitize_flags -fsanitize=${SMAX_SANITIZE} -fno-sanitize-recover=all)
  target_compile_options(smax_dev_flags INTERFACE ${smax_sanitize_flags} -fno-omit-frame-pointer)
  target_link_options(smax_dev_flags INTERFACE ${smax_sanitize_flags})
endif()
