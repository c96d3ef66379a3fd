# weft_fuzz.cmake (WEFT_BUILD_FUZZ=ON, clang only): every tests/fuzz/*.c is a
# libFuzzer target fuzz_<name>, built with ASan+UBSan against its own copy of
# the library compiled with -fsanitize=fuzzer-no-link. Each target also gets a
# short ctest smoke run (label "fuzz"): its corpus tests/fuzz/corpus/<name>/ if
# present, then 20 seconds of fuzzing.
#
#   cmake -B build-fuzz -DCMAKE_C_COMPILER=clang -DWEFT_BUILD_FUZZ=ON
#   build-fuzz/tests/fuzz/fuzz_<name> tests/fuzz/corpus/<name>
include_guard(GLOBAL)

if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "WEFT_BUILD_FUZZ needs clang (-DCMAKE_C_COMPILER=clang)")
endif()
file(GLOB _fuzz_srcs CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/tests/fuzz/*.c")
if(NOT _fuzz_srcs)
  message(STATUS "WEFT_BUILD_FUZZ: no tests/fuzz/*.c yet")
  return()
endif()

set(_fuzz_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer -g)
add_library(weft_fuzzlib STATIC ${WEFT_RUNTIME_SOURCES} ${WEFT_ACTOR_SOURCES})
target_include_directories(weft_fuzzlib PUBLIC "${PROJECT_SOURCE_DIR}/include")
target_compile_definitions(weft_fuzzlib PRIVATE _GNU_SOURCE WEFT_BUILDING=1)
target_link_libraries(weft_fuzzlib PUBLIC PkgConfig::LIBUV PkgConfig::MSGPACK
                      Threads::Threads)
if(WEFT_USES_NNG)
  target_link_libraries(weft_fuzzlib PUBLIC nng::nng ${WEFT_MBEDCRYPTO})
  target_include_directories(weft_fuzzlib PRIVATE ${WEFT_MBEDTLS_INCLUDE})
endif()
target_compile_options(weft_fuzzlib PRIVATE ${_fuzz_flags} -fsanitize=fuzzer-no-link)
set_target_properties(weft_fuzzlib PROPERTIES C_STANDARD 11 C_EXTENSIONS OFF
  ARCHIVE_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests/fuzz")

foreach(_src IN LISTS _fuzz_srcs)
  get_filename_component(_name "${_src}" NAME_WE)
  set(_t fuzz_${_name})
  add_executable(${_t} "${_src}")
  set_target_properties(${_t} PROPERTIES C_STANDARD 11 C_EXTENSIONS OFF
    RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests/fuzz")
  target_include_directories(${_t} PRIVATE "${PROJECT_SOURCE_DIR}/runtime")
  target_compile_definitions(${_t} PRIVATE _GNU_SOURCE)
  target_compile_options(${_t} PRIVATE ${_fuzz_flags} -fsanitize=fuzzer
    -Wall -Wextra $<$<BOOL:${WEFT_WERROR}>:-Werror>)
  target_link_options(${_t} PRIVATE ${_fuzz_flags} -fsanitize=fuzzer)
  target_link_libraries(${_t} PRIVATE weft_fuzzlib)
  set(_corpus "${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${_name}")
  set(_out "${PROJECT_BINARY_DIR}/tests/fuzz")
  set(_args -max_total_time=${WEFT_FUZZ_SECONDS} -rss_limit_mb=2048
      "-artifact_prefix=${_out}/${_name}-")
  if(IS_DIRECTORY "${_corpus}")
    # libFuzzer writes new inputs to the first directory: give it a scratch one.
    add_test(NAME ${_t} COMMAND ${_t} ${_args} "${_out}/${_name}.corpus" "${_corpus}")
    file(MAKE_DIRECTORY "${_out}/${_name}.corpus")
  else()
    add_test(NAME ${_t} COMMAND ${_t} ${_args})
  endif()
  math(EXPR _timeout "${WEFT_FUZZ_SECONDS} * 2 + 60")
  set_tests_properties(${_t} PROPERTIES TIMEOUT ${_timeout} LABELS fuzz WORKING_DIRECTORY "${_out}")
endforeach()
