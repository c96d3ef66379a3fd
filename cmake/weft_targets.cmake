# weft_targets.cmake: per-target build settings shared by every weft target
# (library, tests, examples, tools). Nothing here touches CMAKE_C_FLAGS.
#
#   weft_target_defaults(<target>)  C11, warnings (+ -Werror if WEFT_WERROR),
#                                   and the WEFT_SANITIZER flags.
#   weft_apply_sanitizer(<target>)  only the sanitizer flags (compile + link).
include_guard(GLOBAL)

set(_weft_sanitizers none address undefined "address,undefined" "undefined,address" thread)
if(NOT WEFT_SANITIZER IN_LIST _weft_sanitizers)
  message(FATAL_ERROR "WEFT_SANITIZER must be one of: none address undefined "
                      "address,undefined thread (got '${WEFT_SANITIZER}')")
endif()

function(weft_apply_sanitizer tgt)
  if(WEFT_SANITIZER STREQUAL "none")
    return()
  endif()
  set(_flags -fsanitize=${WEFT_SANITIZER} -fno-omit-frame-pointer)
  if(WEFT_SANITIZER MATCHES "undefined")
    list(APPEND _flags -fno-sanitize-recover=undefined)
  endif()
  get_target_property(_type ${tgt} TYPE)
  target_compile_options(${tgt} PRIVATE ${_flags})
  if(NOT _type STREQUAL "OBJECT_LIBRARY" AND NOT _type STREQUAL "STATIC_LIBRARY")
    target_link_options(${tgt} PRIVATE ${_flags})
  endif()
endfunction()

function(weft_target_defaults tgt)
  set_target_properties(${tgt} PROPERTIES
    C_STANDARD 11
    C_STANDARD_REQUIRED ON
    C_EXTENSIONS OFF)
  target_compile_options(${tgt} PRIVATE
    -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    $<$<BOOL:${WEFT_WERROR}>:-Werror>)
  weft_apply_sanitizer(${tgt})
endfunction()
