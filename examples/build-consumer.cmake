# The test cmake.example_consumer: installs smax from this build tree into a fresh prefix,
# then configures, builds and runs examples/consumer against it, as a user would.
#   cmake -D SMAX_BINARY_DIR=... -D SOURCE_DIR=... -D WORK_DIR=... -D GENERATOR=...
#         -D CXX=... -D Eigen3_DIR=... -D CONFIG=... -P build-consumer.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${SMAX_BINARY_DIR}" --prefix "${WORK_DIR}/prefix"
    --config "${CONFIG}"
  OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX}" "-DCMAKE_BUILD_TYPE=${CONFIG}"
    "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" "-DEigen3_DIR=${Eigen3_DIR}"
  COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --config "${CONFIG}"
  COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${WORK_DIR}/build/consumer" OUTPUT_VARIABLE output
  COMMAND_ERROR_IS_FATAL ANY)
message("${output}")
if(NOT output MATCHES "softmax\\(\\[2, 1, 0\\.1\\]\\) = +0\\.659[0-9]* +0\\.242[0-9]* +0\\.0985[0-9]*")
  message(FATAL_ERROR "examples/consumer printed an unexpected result")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
