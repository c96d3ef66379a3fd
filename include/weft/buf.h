/* weft/buf.h: buffers that move between contexts without copying.
 *
 * A weft_buf_t is a handle on bytes. Two kinds:
 *  - owned (weft_buf_new, weft_buf_wrap): one owner at a time. Adding it to a
 *    message's transfer list moves the bytes into the message and detaches this
 *    handle: length 0, bytes NULL, and every later use returns WEFT_EDETACHED.
 *    The handle itself stays valid and must still be freed.
 *  - shared (weft_buf_new_shared): one memory, an atomic reference count, any
 *    number of handles on any threads. Each handle is freed on its own; the
 *    memory goes when the last handle goes, exactly once.
 *
 * Threads: a handle is used by one thread at a time (the one holding it). The
 * bytes of a shared buffer may be touched by every holder; synchronising those
 * accesses (e.g. with C11 atomics) is the caller's job. */
#ifndef WEFT_BUF_H
#define WEFT_BUF_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called exactly once, on whichever thread frees the last handle on the bytes,
 * when wrapped bytes are no longer needed; data is weft_buf_wrap's. */
typedef void (*weft_buf_free_cb)(void *bytes, size_t len, void *data);

/* weft_buf_new: a new owned buffer of len bytes (uninitialised: from 256 KiB
 * up, possibly the bytes of an earlier buffer of this process, reused).
 * Any thread. Moving it to another thread is a pointer move at any size; it
 * opens no fd until it is first sent to another process, where it travels as
 * a sealed memfd (see docs/buf.md for the one case that costs a copy).
 * Returns 0 and sets *out, or WEFT_ENOMEM / WEFT_EINVAL. The caller owns *out. */
WEFT_EXTERN int weft_buf_new(weft_buf_t **out, size_t len);

/* weft_buf_wrap: an owned buffer over the caller's len bytes; free_cb (may
 * be NULL) is called once, with data, when the bytes are released, wherever
 * they moved to. On failure free_cb is not called and the caller still owns
 * bytes. */
WEFT_EXTERN int weft_buf_wrap(weft_buf_t **out, void *bytes, size_t len,
                              weft_buf_free_cb free_cb, void *data);

/* weft_buf_new_shared: a new shared buffer of len bytes, zero-filled. */
WEFT_EXTERN int weft_buf_new_shared(weft_buf_t **out, size_t len);

/* weft_buf_share: a second handle on the same shared memory (refcount + 1).
 * Returns 0, WEFT_EINVAL if buf is not shared, WEFT_EDETACHED, WEFT_ENOMEM. */
WEFT_EXTERN int weft_buf_share(weft_buf_t *buf, weft_buf_t **out);

/* weft_buf_free: releases the handle (and the bytes, if it held the last
 * reference to them). NULL and detached handles are accepted. */
WEFT_EXTERN void weft_buf_free(weft_buf_t *buf);

/* weft_buf_bytes: the bytes and their length. Returns 0, or WEFT_EDETACHED
 * (then *bytes is NULL and *len 0), or WEFT_EINVAL for NULL. */
WEFT_EXTERN int weft_buf_bytes(const weft_buf_t *buf, void **bytes, size_t *len);

/* Questions: the pointer (NULL when detached), the length (0 when detached). */
WEFT_EXTERN void *weft_buf_ptr(const weft_buf_t *buf);
WEFT_EXTERN size_t weft_buf_len(const weft_buf_t *buf);
WEFT_EXTERN bool weft_buf_is_detached(const weft_buf_t *buf);
WEFT_EXTERN bool weft_buf_is_shared(const weft_buf_t *buf);
/* The number of handles on a shared buffer's memory (1 for owned buffers, 0
 * when detached). For tests and diagnostics: it may change at once. */
WEFT_EXTERN unsigned weft_buf_refcount(const weft_buf_t *buf);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_BUF_H */
