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

if(SMAX_SANITIZE)
  # Every finding is fatal, so a UBSan report fails its test instead of scrolling by.
  set(smax_sanitize_flags -fsanitize=${SMAX_SANITIZE} -fno-sanitize-recover=all)
  target_compile_options(smax_dev_flags INTERFACE ${smax_sanitize_flags} -fno-omit-frame-pointer)
  target_link_options(smax_dev_flags INTERFACE ${smax_sanitize_flags})
endif()
