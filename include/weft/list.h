/* weft/list.h: an intrusive doubly-linked list, header-only. A helper, not
 * part of the runtime's contract: weft's own modules (and a program built on
 * weft, if it wants) embed a weft_list_node_t in each element and keep a
 * weft_list_t where the list lives; nothing is allocated.
 *
 * A zeroed weft_list_t is an empty list, and a zeroed node is unlinked, so
 * both may live in memory from calloc. The list ends with NULL both ways; an
 * element is found from its node with WEFT_LIST_ENTRY. A node is in at most
 * one list at a time.
 *
 * Threads: none of its own. Every function is O(1), does not block and does
 * not synchronise: a list and its nodes belong to one thread at a time (their
 * owner's, like the objects that embed them). Include <weft.h> rather than
 * this file. */
#ifndef WEFT_LIST_H
#define WEFT_LIST_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_list_node_s {
  struct weft_list_node_s *prev, *next; /* NULL at either end, and when unlinked */
} weft_list_node_t;

typedef struct {
  weft_list_node_t *first, *last; /* both NULL: empty */
} weft_list_t;

/* WEFT_LIST_ENTRY: the element of type `type` whose member `member` is the
 * node `node` (which must not be NULL). */
#define WEFT_LIST_ENTRY(node, type, member) \
  ((type *)(void *)((char *)(node) - offsetof(type, member)))

/* weft_list_empty: true if l holds no node. */
static inline bool weft_list_empty(const weft_list_t *l) { return l->first == NULL; }

/* weft_list_first / weft_list_last: l's first (last) node, NULL if empty. */
static inline weft_list_node_t *weft_list_first(const weft_list_t *l) { return l->first; }
static inline weft_list_node_t *weft_list_last(const weft_list_t *l) { return l->last; }

/* weft_list_next / weft_list_prev: the node after (before) n in its list,
 * NULL at the end. To remove n while walking, read its next first. */
static inline weft_list_node_t *weft_list_next(const weft_list_node_t *n) { return n->next; }
static inline weft_list_node_t *weft_list_prev(const weft_list_node_t *n) { return n->prev; }

/* weft_list_contains: true if n is linked in l. O(1): it looks at n's
 * neighbours and l's first node only, so it relies on n being in no other
 * list (a node is in at most one). */
static inline bool weft_list_contains(const weft_list_t *l, const weft_list_node_t *n) {
  return n->prev != NULL ? n->prev->next == n : l->first == n;
}

/* weft_list_push_front / weft_list_push_back: link n, which must be unlinked,
 * at the front (back) of l. */
static inline void weft_list_push_front(weft_list_t *l, weft_list_node_t *n) {
  n->prev = NULL;
  n->next = l->first;
  if (l->first != NULL)
    l->first->prev = n;
  else
    l->last = n;
  l->first = n;
}

static inline void weft_list_push_back(weft_list_t *l, weft_list_node_t *n) {
  n->next = NULL;
  n->prev = l->last;
  if (l->last != NULL)
    l->last->next = n;
  else
    l->first = n;
  l->last = n;
}

/* weft_list_remove: unlink n from l, leaving n unlinked (both links NULL).
 * Nothing happens if n is not in l (weft_list_contains), so a remove may be
 * repeated. */
static inline void weft_list_remove(weft_list_t *l, weft_list_node_t *n) {
  if (!weft_list_contains(l, n))
    return;
  if (n->prev != NULL)
    n->prev->next = n->next;
  else
    l->first = n->next;
  if (n->next != NULL)
    n->next->prev = n->prev;
  else
    l->last = n->prev;
  n->prev = n->next = NULL;
}

/* weft_list_pop_front: unlink and return l's first node, NULL if l is empty. */
static inline weft_list_node_t *weft_list_pop_front(weft_list_t *l) {
  weft_list_node_t *n = l->first;
  if (n != NULL)
    weft_list_remove(l, n);
  return n;
}

#ifdef __cplusplus
}
#endif
#endif /* WEFT_LIST_H */
