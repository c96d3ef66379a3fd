/* weft/error.h: the error vocabulary.
 *
 * Every weft function that can fail returns int: 0 on success or a negative
 * code. libuv's UV_E* codes pass through unchanged, and weft uses them where the
 * meaning is the same (WEFT_EAGAIN is UV_EAGAIN, and so on). weft's own codes
 * come from one table, WEFT_ERRNO_MAP, and lie below -5000, away from every
 * errno and every UV_E* code. */
#ifndef WEFT_ERROR_H
#define WEFT_ERROR_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, message) */
#define WEFT_ERRNO_MAP(XX)                                                        \
  XX(DETACHED, -5001, "buffer is detached: its contents were transferred")      \
  XX(CLOSED, -5002, "port or channel is closed")                                \
  XX(SELF, -5003, "a port cannot be sent through its own channel")             \
  XX(TRANSFER, -5004, "object cannot be transferred this way")                 \
  XX(NOENTRY, -5005, "no entry registered under that name")                    \
  XX(TERMINATED, -5006, "worker was terminated")                               \
  XX(BUSY, -5007, "object is still in use")                                    \
  XX(WRONGTHREAD, -5008, "called from a thread that does not own the object")  \
  XX(TYPE, -5009, "message field is missing or of another type")              \
  XX(PROTO, -5010, "malformed frame or message from a peer")                   \
  XX(VERSION, -5011, "peer speaks another protocol version")                   \
  XX(FRAMESIZE, -5012, "frame is larger than the configured maximum")          \
  XX(PEERDIED, -5013, "peer process or node died")                             \
  XX(WINDOW, -5014, "peer sent past the window it was granted")                \
  XX(CREDIT, -5015, "peer returned more credit than it was given")             \
  XX(UNREPRESENTABLE, -5016, "message cannot be represented on this channel")  \
  XX(TAKEN, -5017, "message was already posted or freed")                      \
  XX(GAVEUP, -5018, "supervisor gave up: restart limit reached")               \
  XX(NOKEY, -5019, "message has no field with that key")                        \
  XX(COUNT, -5020, "map or array holds another number of items than declared") \
  XX(AUTH, -5021, "peer failed authentication")

enum {
#define WEFT_ERR_ENUM_(name, value, msg) WEFT_E##name = (value),
  WEFT_ERRNO_MAP(WEFT_ERR_ENUM_)
#undef WEFT_ERR_ENUM_
};

/* Codes shared with libuv: same value, same meaning. */
#define WEFT_EAGAIN UV_EAGAIN       /* queue full: retry after the drain callback */
#define WEFT_ENOMEM UV_ENOMEM       /* allocation failed; nothing changed */
#define WEFT_EINVAL UV_EINVAL       /* bad argument (NULL, out of range) */
#define WEFT_ECANCELED UV_ECANCELED /* operation cancelled */
#define WEFT_ENOENT UV_ENOENT       /* no such item (e.g. no message waiting) */
#define WEFT_EMSGSIZE UV_EMSGSIZE   /* message larger than the port allows */

/* weft_strerror: a static English message for any weft or libuv code. Any thread. */
WEFT_EXTERN const char *weft_strerror(int err);

/* weft_err_name: the symbolic name ("WEFT_EDETACHED", "EAGAIN", ...) of any
 * weft or libuv code. Any thread. */
WEFT_EXTERN const char *weft_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_ERROR_H */
