/* weft/msg.h: messages.
 *
 * A message is one flat msgpack byte buffer that the message owns, plus a
 * transfer list (owned buffers, shared buffers, ports, socket fds). Building a
 * message writes msgpack straight into that buffer; posting it moves the
 * pointer, never the bytes; reading it decodes only what is asked for. No
 * pointer inside a payload is ever shared between sender and receiver.
 *
 * Ownership (the one rule, repeated at each call): weft_msg_new gives the
 * caller a message; a successful post takes it; on a failed post the caller
 * still owns it, with its transfer list, and may retry or free it. A message
 * delivered to a callback belongs to the callee, who frees it (or keeps it).
 * weft_msg_free releases everything still in the transfer list: buffers are
 * freed, ports closed (their peers see the close), sockets closed.
 *
 * Threads: a message is used by one thread at a time, the one that owns it. */
#ifndef WEFT_MSG_H
#define WEFT_MSG_H

#include <msgpack.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* weft_msg_new: an empty message (no payload, no transfer list).
 * Returns 0 and sets *out, or WEFT_ENOMEM. */
WEFT_EXTERN int weft_msg_new(weft_msg_t **out);

/* weft_msg_free: frees msg and whatever its transfer list still holds. NULL ok.
 * Checked mode (WEFT_CHECK=1 in the environment when weft_runtime_new runs;
 * on by default in sanitizer builds, WEFT_CHECK=0 turns it off): a second
 * free of msg aborts here with a message naming weft_msg_free and the double
 * free; a freed message is poisoned, and posting it (or posting a message
 * twice) returns WEFT_ETAKEN. */
WEFT_EXTERN void weft_msg_free(weft_msg_t *msg);

/* weft_msg_packer: a msgpack-c packer that appends to msg's own buffer. Pack
 * exactly one top-level object. A failed allocation while packing is kept in
 * the message: weft_msg_error() returns it and posting the message fails with
 * it. The packer is valid until msg is freed or posted. */
WEFT_EXTERN msgpack_packer *weft_msg_packer(weft_msg_t *msg);

/* weft_msg_error: 0, or the first error met while building msg (WEFT_ENOMEM,
 * WEFT_EMSGSIZE past 4 GiB of payload or 65535 transfer items, or WEFT_ECOUNT
 * from weft_msg_end_map). */
WEFT_EXTERN int weft_msg_error(const weft_msg_t *msg);

/* weft_msg_set_payload: replaces the payload with a copy of len bytes of
 * msgpack. The bytes are not checked here; readers check them. */
WEFT_EXTERN int weft_msg_set_payload(weft_msg_t *msg, const void *bytes, size_t len);

/* weft_msg_payload: the raw msgpack bytes; *len set. Valid until msg changes. */
WEFT_EXTERN const void *weft_msg_payload(const weft_msg_t *msg, size_t *len);

/* Small-record builders: append one value, preceded by the key when key is not
 * NULL (for the entries of a map started with weft_msg_put_map). Each returns
 * 0 or the error kept in the message. A record {seq, tag} is:
 *   weft_msg_put_map(m, 2); weft_msg_put_u64(m, "seq", 7); weft_msg_put_str(m, "tag", "hi");
 */
WEFT_EXTERN int weft_msg_put_map(weft_msg_t *msg, uint32_t n);
WEFT_EXTERN int weft_msg_put_array(weft_msg_t *msg, const char *key, uint32_t n);
WEFT_EXTERN int weft_msg_put_u64(weft_msg_t *msg, const char *key, uint64_t v);
WEFT_EXTERN int weft_msg_put_i64(weft_msg_t *msg, const char *key, int64_t v);
WEFT_EXTERN int weft_msg_put_f64(weft_msg_t *msg, const char *key, double v);
WEFT_EXTERN int weft_msg_put_bool(weft_msg_t *msg, const char *key, bool v);
WEFT_EXTERN int weft_msg_put_nil(weft_msg_t *msg, const char *key);
WEFT_EXTERN int weft_msg_put_str(weft_msg_t *msg, const char *key, const char *s);
WEFT_EXTERN int weft_msg_put_strn(weft_msg_t *msg, const char *key, const char *s, size_t n);
WEFT_EXTERN int weft_msg_put_bin(weft_msg_t *msg, const char *key, const void *p, size_t n);

/* weft_msg_begin_map / weft_msg_end_map: a map that counts its own entries,
 * for records whose fields are optional or added in a loop:
 *   weft_msg_begin_map(m, NULL);                 (top level; or a key, nested)
 *   weft_msg_put_u64(m, "seq", 7);
 *   if (tag) weft_msg_put_str(m, "tag", tag);
 *   weft_msg_end_map(m);                         (writes the count: 1 or 2)
 * begin writes the key (when not NULL) and a map32 header (5 bytes: the count
 * is always 4 bytes wide, readers and msgpack-c accept it) and returns 0 or
 * the error kept in msg. end counts the keys and values written since the
 * matching begin (with any builder or the packer; maps nest, each end closes
 * the innermost open one) and patches the header. Returns 0, WEFT_EINVAL (no
 * map open), the error kept in msg, or WEFT_ECOUNT (an odd number of values
 * since begin: a key without its value), which is also kept in msg.
 * Posting a message with a map still open fails with WEFT_ECOUNT (the message
 * stays the caller's). weft_msg_put_map(m, n) writes a fixed count instead; a
 * wrong n there is seen only by the reader (WEFT_EPROTO or a missing key). */
WEFT_EXTERN int weft_msg_begin_map(weft_msg_t *msg, const char *key);
WEFT_EXTERN int weft_msg_end_map(weft_msg_t *msg);

/* Small-record readers. With key NULL they read the top-level value; with a
 * key they look it up in the top-level map. They decode nothing else and never
 * allocate. Returns 0, WEFT_ENOKEY (the map has no such key), WEFT_ETYPE
 * (other type; ints convert when the value fits; with a key, also: the top
 * level is not a map), WEFT_EPROTO (payload is not valid msgpack), or
 * WEFT_EINVAL (NULL). Outputs are set only on success.
 * String and binary results point into the message and live as long as it. */
WEFT_EXTERN int weft_msg_get_u64(const weft_msg_t *msg, const char *key, uint64_t *out);
WEFT_EXTERN int weft_msg_get_i64(const weft_msg_t *msg, const char *key, int64_t *out);
WEFT_EXTERN int weft_msg_get_f64(const weft_msg_t *msg, const char *key, double *out);
WEFT_EXTERN int weft_msg_get_bool(const weft_msg_t *msg, const char *key, bool *out);
WEFT_EXTERN int weft_msg_get_str(const weft_msg_t *msg, const char *key,
                                 const char **s, size_t *len);
WEFT_EXTERN int weft_msg_get_bin(const weft_msg_t *msg, const char *key,
                                 const void **p, size_t *len);
/* weft_msg_get_strcpy: copies the string under key (NULL: the top-level value)
 * into buf, which holds cap bytes, and ends it with a NUL. Sets *len (may be
 * NULL) to the string's whole length without the NUL, even when it does not
 * fit. Returns 0; UV_ENOBUFS if it does not fit (buf holds the first cap - 1
 * bytes and a NUL: grow buf to *len + 1 and call again); or a reader error as
 * above, with buf set to "". WEFT_EINVAL if msg or buf is NULL or cap is 0.
 * A string holding a NUL byte is copied whole; C string functions stop at it. */
WEFT_EXTERN int weft_msg_get_strcpy(const weft_msg_t *msg, const char *key, char *buf,
                                    size_t cap, size_t *len);

/* weft_msg_view: the whole payload decoded by msgpack-c, once, on first call
 * (cached in msg; strings point into the payload). Returns 0 and sets *out
 * (valid while msg lives and is not changed), WEFT_EPROTO if the payload is
 * not exactly one msgpack object, or WEFT_ENOMEM. */
WEFT_EXTERN int weft_msg_view(weft_msg_t *msg, const msgpack_object **out);

/* ---- transfer list ---------------------------------------------------- */

typedef enum {
  WEFT_XFER_BUF = 1,    /* an owned or shared buffer */
  WEFT_XFER_PORT = 2,   /* a port, moving to the receiver's context */
  WEFT_XFER_SOCKET = 3  /* a socket fd, opened by the receiver on its loop */
} weft_xfer_kind_t;

/* weft_msg_add_buf: adds buf to the transfer list. An owned buffer moves into
 * the message at once and buf is detached (a second add returns
 * WEFT_EDETACHED). A shared buffer is not detached: the message gets its own
 * handle on the same memory. The caller still owns (and frees) buf itself.
 * Owner thread of msg. */
WEFT_EXTERN int weft_msg_add_buf(weft_msg_t *msg, weft_buf_t *buf);

/* weft_msg_add_port: port moves with the message. From now on the message owns
 * it: the caller must not use port again (unless it takes it back with
 * weft_msg_take_port after a failed post). Messages that reach port while it
 * travels are kept and delivered in order on the new owner. Owner thread of
 * port. Errors: WEFT_ECLOSED, WEFT_EWRONGTHREAD, WEFT_EINVAL (already in a
 * message), WEFT_ENOMEM. Posting the message on port itself or on its peer
 * fails with WEFT_ESELF. */
WEFT_EXTERN int weft_msg_add_port(weft_msg_t *msg, weft_port_t *port);

/* weft_msg_add_socket: the message takes fd (a connected or listening socket)
 * and closes it if nobody takes it. In-process the fd itself travels; to a
 * child process it travels with SCM_RIGHTS. */
WEFT_EXTERN int weft_msg_add_socket(weft_msg_t *msg, uv_os_sock_t fd);

/* weft_msg_xfer_count: how many items the transfer list holds (taken or not). */
WEFT_EXTERN size_t weft_msg_xfer_count(const weft_msg_t *msg);
/* weft_msg_xfer_kind: the kind of item i, or 0 if there is none / it was taken. */
WEFT_EXTERN int weft_msg_xfer_kind(const weft_msg_t *msg, size_t i);
/* weft_msg_find_xfer: the position of the nth (from 0) item of kind still in
 * msg, so that items are taken by kind rather than by position:
 *   size_t i;
 *   if (weft_msg_find_xfer(m, WEFT_XFER_BUF, 0, &i) == 0) weft_msg_take_buf(m, i, &buf);
 * Taken items are not counted (nth 0 is always the first one left), nor is
 * the reply port of a request (weft_msg_reply answers through it). Returns 0
 * and sets *index, WEFT_ENOENT (fewer than nth + 1 such items), WEFT_EINVAL. */
WEFT_EXTERN int weft_msg_find_xfer(const weft_msg_t *msg, int kind, size_t nth, size_t *index);

/* weft_msg_put_xfer / weft_msg_get_xfer: a key that names a transfer item,
 * so that a record says which item is which. The writer notes the position
 * the next item takes, adds it, then puts that position under a key, in a
 * map like any other value:
 *   size_t i = weft_msg_xfer_count(m);
 *   weft_msg_add_buf(m, image);
 *   weft_msg_put_xfer(m, "image", i);
 * and the reader takes the item the key names:
 *   if (weft_msg_get_xfer(m, "image", &i) == 0) weft_msg_take_buf(m, i, &buf);
 * The value is the item's position in the transfer list, a msgpack unsigned
 * integer; the list keeps its order from thread to thread and from weft
 * process to weft process. Owner thread of msg, like the other builders and
 * readers.
 * weft_msg_put_xfer returns 0, the error kept in msg, or WEFT_EINVAL: msg is
 * NULL, or index names no item still in msg (an add that failed): kept in msg
 * (the post fails with it) and nothing is written.
 * weft_msg_get_xfer returns 0 and sets *index to an item still in msg (its
 * kind is checked by the take: WEFT_ETYPE), WEFT_ENOENT (the value names no
 * item, or one already taken), or a reader error as above (WEFT_ENOKEY,
 * WEFT_ETYPE if the value is not an unsigned integer, WEFT_EPROTO,
 * WEFT_EINVAL). */
WEFT_EXTERN int weft_msg_put_xfer(weft_msg_t *msg, const char *key, size_t index);
WEFT_EXTERN int weft_msg_get_xfer(const weft_msg_t *msg, const char *key, size_t *index);

/* weft_msg_take_buf / _port / _socket: take item i out of the message; the
 * caller owns it from then on. A taken port is bound to the calling thread's
 * context and delivers nothing until weft_port_start (or weft_port_receive);
 * on a thread without a context it stays unbound and only weft_port_receive
 * works on it. Errors: WEFT_ENOENT (no item i, or already taken), WEFT_ETYPE
 * (other kind). */
WEFT_EXTERN int weft_msg_take_buf(weft_msg_t *msg, size_t i, weft_buf_t **out);
WEFT_EXTERN int weft_msg_take_port(weft_msg_t *msg, size_t i, weft_port_t **out);
WEFT_EXTERN int weft_msg_take_socket(weft_msg_t *msg, size_t i, uv_os_sock_t *out);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_MSG_H */
