/* error.c: names and messages for error codes.
 *
 * weft's own codes come from WEFT_ERRNO_MAP (include/weft/error.h); every
 * other code known to libuv is delegated to uv_strerror/uv_err_name. Codes
 * neither knows get a fixed string (libuv would allocate, and leak, one).
 * Stateless: any thread. */
#include "weft_impl.h"

static bool is_uv_code(int err) {
  switch (err) {
#define WEFT_UV_CASE_(name, msg) case UV_##name:
    UV_ERRNO_MAP(WEFT_UV_CASE_)
#undef WEFT_UV_CASE_
    return true;
  default:
    return false;
  }
}

const char *weft_strerror(int err) {
  switch (err) {
#define WEFT_ERR_MSG_(name, value, msg) case WEFT_E##name: return msg;
    WEFT_ERRNO_MAP(WEFT_ERR_MSG_)
#undef WEFT_ERR_MSG_
  case 0:
    return "success";
  default:
    break;
  }
  return is_uv_code(err) ? uv_strerror(err) : "unknown error";
}

const char *weft_err_name(int err) {
  switch (err) {
#define WEFT_ERR_NAME_(name, value, msg) case WEFT_E##name: return "WEFT_E" #name;
    WEFT_ERRNO_MAP(WEFT_ERR_NAME_)
#undef WEFT_ERR_NAME_
  case 0:
    return "OK";
  default:
    break;
  }
  return is_uv_code(err) ? uv_err_name(err) : "UNKNOWN";
}
