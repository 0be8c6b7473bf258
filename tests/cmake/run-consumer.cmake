# Configures, builds and runs (through its own ctest) one consumer project, from scratch.
# tests/cmake/CMakeLists.txt passes SOURCE_DIR, BINARY_DIR, GENERATOR, CONFIG, CXX,
# Eigen3_DIR, PREFIX (the install prefix) and SMAX_SOURCE_DIR.
file(REMOVE_RECURSE "${BINARY_DIR}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BINARY_DIR}" -G "${GENERATOR}"
    "-DCMAKE_CXX_COMPILER=${CXX}"
    "-DCMAKE_BUILD_TYPE=${CONFIG}"
    "-DCMAKE_PREFIX_PATH=${PREFIX}"
    "-DEigen3_DIR=${Eigen3_DIR}"
    "-DSMAX_SOURCE_DIR=${SMAX_SOURCE_DIR}"
    --no-warn-unused-cli
  COMMAND_ERROR_IS_FATAL ANY)
execute_process(
  COMMAND "${CMAKE_COMMAND}" --build "${BINARY_DIR}" --config "${CONFIG}"
  COMMAND_ERROR_IS_FATAL ANY)
execute_process(
  COMMAND "${CMAKE_CTEST_COMMAND}" --test-dir "${BINARY_DIR}" -C "${CONFIG}"
    --output-on-failure --no-tests=error
  COMMAND_ERROR_IS_FATAL ANY)
