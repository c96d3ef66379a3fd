/* weft/common.h: export macro, opaque types and the allocator shared by every
 * weft header. Include <weft.h> rather than this file. */
#ifndef WEFT_COMMON_H
#define WEFT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

typedef struct weft_runtime_s weft_runtime_t;
typedef struct weft_ctx_s weft_ctx_t;
typedef struct weft_port_s weft_port_t;
typedef struct weft_msg_s weft_msg_t;
typedef struct weft_buf_s weft_buf_t;
typedef struct weft_worker_s weft_worker_t;

/* weft_version_string: "MAJOR.MINOR.PATCH". Any thread. */
WEFT_EXTERN const char *weft_version_string(void);

typedef void *(*weft_malloc_func)(size_t size);
typedef void *(*weft_realloc_func)(void *ptr, size_t size);
typedef void *(*weft_calloc_func)(size_t count, size_t size);
typedef void (*weft_free_func)(void *ptr);

/* weft_replace_allocator: every allocation weft itself makes goes through these
 * functions from now on (libuv's and msgpack-c's own allocations do not; use
 * uv_replace_allocator for libuv). Call it before any other weft call, from one
 * thread, while no runtime exists. All four are required.
 * Returns 0, or UV_EINVAL if one is NULL. */
WEFT_EXTERN int weft_replace_allocator(weft_malloc_func malloc_func,
                                       weft_realloc_func realloc_func,
                                       weft_calloc_func calloc_func,
                                       weft_free_func free_func);

/* weft_malloc / weft_calloc / weft_realloc / weft_free: allocate through the
 * functions given to weft_replace_allocator (libc's by default), so that code
 * built on weft (the built-in actors, a user's own) is counted and swept for
 * allocation failures with the kernel. Any thread. */
WEFT_EXTERN void *weft_malloc(size_t size);
WEFT_EXTERN void *weft_calloc(size_t count, size_t size);
WEFT_EXTERN void *weft_realloc(void *ptr, size_t size);
WEFT_EXTERN void weft_free(void *ptr);

/* weft_available_parallelism: the number of CPUs this process may use: the
 * size of its CPU affinity mask, lowered to the cgroup (v2 cpu.max, or v1
 * cfs_quota/period) quota rounded up. At least 1. Any thread; reads /proc and
 * /sys on each call. */
WEFT_EXTERN unsigned weft_available_parallelism(void);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_COMMON_H */
