# run_package_test.cmake: the `package` ctest entry (cmake -P).
# 1. cpack -G DEB in WEFT_BUILD_DIR: libweft0 and libweft-dev;
# 2. check their names and that libweft-dev depends on libweft0 of this version;
# 3. extract both (dpkg-deb -x) into a scratch root and run the outside-program
#    test (run_install_test.cmake) against root/usr, as a user of the
#    installed packages would build: find_package and pkg-config, strict C11.
foreach(_v WEFT_BUILD_DIR WEFT_INSTALL_TEST_SRC WEFT_INSTALL_TEST_WORK WEFT_EXPECT_VERSION)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "run_package_test.cmake: ${_v} is not set")
  endif()
endforeach()
set(_out "${WEFT_INSTALL_TEST_WORK}/debs")
set(_root "${WEFT_INSTALL_TEST_WORK}/root")
file(REMOVE_RECURSE "${WEFT_INSTALL_TEST_WORK}")
file(MAKE_DIRECTORY "${_out}" "${_root}")

execute_process(COMMAND cpack -G DEB -B "${_out}" WORKING_DIRECTORY "${WEFT_BUILD_DIR}"
                RESULT_VARIABLE _rc OUTPUT_VARIABLE _log ERROR_VARIABLE _log)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "package test: cpack failed (${_rc}):\n${_log}")
endif()
foreach(_pkg libweft0 libweft-dev)
  file(GLOB _deb "${_out}/${_pkg}_${WEFT_EXPECT_VERSION}_*.deb")
  if(NOT _deb)
    message(FATAL_ERROR "package test: no ${_pkg}_${WEFT_EXPECT_VERSION}_*.deb in ${_out}")
  endif()
  execute_process(COMMAND dpkg-deb -f "${_deb}" Package Depends
                  OUTPUT_VARIABLE _fields RESULT_VARIABLE _rc)
  message(STATUS "package test: ${_deb}:\n${_fields}")
  if(_pkg STREQUAL "libweft-dev" AND NOT _fields MATCHES "libweft0 \\(= ${WEFT_EXPECT_VERSION}\\)")
    message(FATAL_ERROR "package test: libweft-dev does not depend on libweft0 (= ${WEFT_EXPECT_VERSION})")
  endif()
  execute_process(COMMAND dpkg-deb -x "${_deb}" "${_root}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "package test: dpkg-deb -x ${_deb} failed")
  endif()
endforeach()
set(WEFT_PREFIX "${_root}/usr")
include("${CMAKE_CURRENT_LIST_DIR}/run_install_test.cmake")
