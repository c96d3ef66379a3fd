# run_install_test.cmake: the `install` ctest entry (cmake -P).
# 1. cmake --install WEFT_BUILD_DIR into a scratch prefix (or, with
#    WEFT_PREFIX set, use that prefix as it is: the `package` entry extracts
#    the Debian packages there);
# 2. configure, build and run tests/install/ with find_package(weft), linking
#    the shared and the static library;
# 3. compile tests/install/main.c with `pkg-config --cflags --libs weft` from
#    the scratch prefix and run it.
# Each program must print the expected version.
foreach(_v WEFT_BUILD_DIR WEFT_INSTALL_TEST_SRC WEFT_INSTALL_TEST_WORK
           WEFT_C_COMPILER WEFT_EXPECT_VERSION)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "run_install_test.cmake: ${_v} is not set")
  endif()
endforeach()

set(_prefix "${WEFT_INSTALL_TEST_WORK}/prefix")
if(WEFT_PREFIX)
  set(_prefix "${WEFT_PREFIX}")
endif()
set(_build "${WEFT_INSTALL_TEST_WORK}/build")
if(NOT WEFT_PREFIX)
  file(REMOVE_RECURSE "${WEFT_INSTALL_TEST_WORK}")
endif()
file(REMOVE_RECURSE "${_build}")
file(MAKE_DIRECTORY "${WEFT_INSTALL_TEST_WORK}")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc
                  OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "install test: ${what} failed (${_rc}):\n${ARGN}\n${_out}")
  endif()
  message(STATUS "install test: ${what}: ok")
  set(_step_out "${_out}" PARENT_SCOPE)
endfunction()

function(check_program what)
  run_step("${what}" ${ARGN})
  message("${_step_out}")
  if(NOT _step_out MATCHES "weft version: ${WEFT_EXPECT_VERSION}")
    message(FATAL_ERROR "install test: ${what} did not print version ${WEFT_EXPECT_VERSION}")
  endif()
endfunction()

set(_config_args)
if(WEFT_CONFIG)
  set(_config_args --config "${WEFT_CONFIG}")
endif()

# 1. install
if(NOT WEFT_PREFIX)
  run_step("cmake --install" "${CMAKE_COMMAND}" --install "${WEFT_BUILD_DIR}"
           --prefix "${_prefix}" ${_config_args})
endif()

# 2. find_package(weft)
set(_gen_args)
if(WEFT_GENERATOR)
  set(_gen_args -G "${WEFT_GENERATOR}")
endif()
run_step("configure consumer" "${CMAKE_COMMAND}" -S "${WEFT_INSTALL_TEST_SRC}"
         -B "${_build}" ${_gen_args} "-DCMAKE_C_COMPILER=${WEFT_C_COMPILER}"
         "-DCMAKE_PREFIX_PATH=${_prefix}" "-DCMAKE_BUILD_TYPE=${WEFT_CONFIG}"
         -DCMAKE_FIND_PACKAGE_NO_SYSTEM_PACKAGE_REGISTRY=ON)
run_step("build consumer" "${CMAKE_COMMAND}" --build "${_build}" ${_config_args})
file(GLOB_RECURSE _shared "${_build}/consumer_shared")
file(GLOB_RECURSE _static "${_build}/consumer_static")
if(NOT _shared OR NOT _static)
  message(FATAL_ERROR "install test: consumer executables not found in ${_build}")
endif()
list(GET _shared 0 _shared)
list(GET _static 0 _static)
check_program("find_package consumer (shared)" "${_shared}")
check_program("find_package consumer (static)" "${_static}")
file(GLOB_RECURSE _metrics "${_build}/consumer_metrics")
if(_metrics)  # built when the installed weft has the metrics endpoint
  list(GET _metrics 0 _metrics)
  check_program("find_package consumer (metrics endpoint)" "${_metrics}")
elseif(WEFT_EXPECT_METRICS_HTTP)
  message(FATAL_ERROR "install test: weft::weft_metrics_http was not installed")
endif()

# 3. pkg-config
file(GLOB_RECURSE _pc "${_prefix}/weft.pc")
if(NOT _pc)
  message(FATAL_ERROR "install test: no weft.pc under ${_prefix}")
endif()
list(GET _pc 0 _pc)
get_filename_component(_pcdir "${_pc}" DIRECTORY)
find_program(_pkg_config NAMES pkg-config pkgconf REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${_pcdir}:$ENV{PKG_CONFIG_PATH}")
execute_process(COMMAND "${_pkg_config}" --cflags --libs weft
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _flags ERROR_VARIABLE _err
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "install test: pkg-config --cflags --libs weft failed:\n${_err}")
endif()
message(STATUS "install test: pkg-config --cflags --libs weft: ${_flags}")
separate_arguments(_flags UNIX_COMMAND "${_flags}")
set(_pc_exe "${WEFT_INSTALL_TEST_WORK}/consumer_pkgconfig")
# Strict C11 and nothing else: weft.pc's Cflags carry what <uv.h> needs.
run_step("compile with pkg-config flags" "${WEFT_C_COMPILER}" -std=c11
         -Wall -Wextra -Wpedantic -Werror
         "${WEFT_INSTALL_TEST_SRC}/main.c" -o "${_pc_exe}" ${_flags})
get_filename_component(_libdir "${_pcdir}" DIRECTORY)
set(ENV{LD_LIBRARY_PATH} "${_libdir}:$ENV{LD_LIBRARY_PATH}")
check_program("pkg-config consumer" "${_pc_exe}")
message(STATUS "install test: all passed")
