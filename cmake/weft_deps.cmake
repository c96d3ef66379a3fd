# weft_deps.cmake: libuv and msgpack-c, found through pkg-config as the
# imported targets PkgConfig::LIBUV and PkgConfig::MSGPACK. Used by the build
# and, installed next to weftConfig.cmake, by find_package(weft), so that a
# consumer's targets are the build's.
#
# libuv.pc lists -lpthread -ldl -lrt in Libs. Since glibc 2.34 those are
# empty static stubs (libpthread.a, libdl.a, librt.a) with no .so to find, so
# pkg_check_modules turns them into archive paths that would land on every
# consumer's link line. They are dropped: libuv.so records its own needs, and
# weft links Threads::Threads itself.
include_guard(DIRECTORY)

function(_weft_drop_libc_stubs tgt)
  get_target_property(_libs ${tgt} INTERFACE_LINK_LIBRARIES)
  if(NOT _libs)
    return()
  endif()
  list(FILTER _libs EXCLUDE REGEX "/lib(pthread|dl|rt)\\.a$")
  set_property(TARGET ${tgt} PROPERTY INTERFACE_LINK_LIBRARIES "${_libs}")
endfunction()

# weft_find_deps(<REQUIRED|QUIET>): defines the two targets unless they
# exist already (then they are left as they are: they are the caller's).
macro(weft_find_deps _weft_mode)
  foreach(_weft_dep IN ITEMS "LIBUV;libuv>=1.44" "MSGPACK;msgpack>=4.0")
    list(GET _weft_dep 0 _weft_name)
    list(GET _weft_dep 1 _weft_spec)
    if(NOT TARGET PkgConfig::${_weft_name})
      pkg_check_modules(${_weft_name} ${_weft_mode} IMPORTED_TARGET ${_weft_spec})
      if(TARGET PkgConfig::${_weft_name})
        _weft_drop_libc_stubs(PkgConfig::${_weft_name})
      endif()
    endif()
  endforeach()
endmacro()
