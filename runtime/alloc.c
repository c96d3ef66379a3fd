/* alloc.c: the allocator every weft allocation goes through.
 *
 * Four function pointers, libc's by default, replaced as a set by
 * weft_replace_allocator. Invariant: the set is replaced only before any other
 * weft call, from one thread, while no runtime exists (the public contract), so
 * the pointers are plain variables: every later reader on any thread sees them
 * through the happens-before edge that created that thread or object. libuv's
 * and msgpack-c's own allocations do not come here. */
#include <stdlib.h>
#include <string.h>

#include "weft_impl.h"

static weft_malloc_func malloc_fn = malloc;
static weft_realloc_func realloc_fn = realloc;
static weft_calloc_func calloc_fn = calloc;
static weft_free_func free_fn = free;

int weft_replace_allocator(weft_malloc_func malloc_func,
                           weft_realloc_func realloc_func,
                           weft_calloc_func calloc_func,
                           weft_free_func free_func) {
  if (malloc_func == NULL || realloc_func == NULL || calloc_func == NULL ||
      free_func == NULL)
    return UV_EINVAL;
  malloc_fn = malloc_func;
  realloc_fn = realloc_func;
  calloc_fn = calloc_func;
  free_fn = free_func;
  return 0;
}

void *weft__malloc(size_t n) {
  return malloc_fn(n);
}

void *weft__calloc(size_t count, size_t n) {
  return calloc_fn(count, n);
}

void *weft__realloc(void *p, size_t n) {
  return realloc_fn(p, n);
}

void weft__free(void *p) {
  if (p != NULL)
    free_fn(p);
}

char *weft__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *copy = weft__malloc(n);
  if (copy != NULL)
    memcpy(copy, s, n);
  return copy;
}

void *weft_malloc(size_t size) { return weft__malloc(size); }
void *weft_calloc(size_t count, size_t size) { return weft__calloc(count, size); }
void *weft_realloc(void *ptr, size_t size) { return weft__realloc(ptr, size); }
void weft_free(void *ptr) { weft__free(ptr); }
