# Runs a program and checks both how it ends and what it prints:
#
#   cmake -D PROGRAM=<exe> [-D EXIT=0|abort] -D "EXPECT=<regex>;<regex>..." -P check-output.cmake
#
# EXIT=0 (the default) wants exit code 0; EXIT=abort wants death by abort(). Every regex in
# EXPECT must match the combined stdout and stderr. (ctest's PASS_REGULAR_EXPRESSION is
# satisfied by any one of its regexes and ignores the exit code, so it cannot say this.)
if(NOT DEFINED EXIT)
  set(EXIT 0)
endif()

execute_process(COMMAND "${PROGRAM}" OUTPUT_VARIABLE output ERROR_VARIABLE output
                RESULT_VARIABLE result)
message("${output}")

if(EXIT STREQUAL "abort")
  if(NOT result MATCHES "[Aa]bort")
    message(FATAL_ERROR "${PROGRAM} should have aborted, but ended with: ${result}")
  endif()
elseif(NOT result STREQUAL EXIT)
  message(FATAL_ERROR "${PROGRAM} should have exited with ${EXIT}, but ended with: ${result}")
endif()

foreach(regex IN LISTS EXPECT)
  if(NOT output MATCHES "${regex}")
    message(FATAL_ERROR "The output of ${PROGRAM} does not match: ${regex}")
  endif()
endforeach()
