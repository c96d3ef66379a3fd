/* queue.c: the intrusive multi-producer single-consumer queue under every
 * mailbox and every context's ready list (Dmitry Vyukov's design, as in Pony's
 * messageq.c).
 *
 * Invariants: any thread pushes (one atomic exchange, then one release store
 * linking the previous tail), one node or a chain of nodes it linked itself
 * (the same two operations publish the whole chain); only the owner pops. The stub node is re-pushed
 * when the queue runs dry so the consumer never returns the node a producer
 * may still link to. A pop may return NULL while a push is half done (tail
 * exchanged, next not yet stored); callers that track a count retry later. */
#include "weft_impl.h"

void weft__mpsc_init(weft__mpsc_t *q) {
  atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
  q->head = &q->stub;
  atomic_store_explicit(&q->tail, &q->stub, memory_order_release);
}

void weft__mpsc_push(weft__mpsc_t *q, weft__qnode_t *n) {
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  /* seq_cst: a context that is about to sleep publishes `parked` and then
   * reads the tail; the pusher publishes the tail and then reads `parked`.
   * Sequential consistency makes at least one of them see the other. */
  weft__qnode_t *prev = atomic_exchange_explicit(&q->tail, n, memory_order_seq_cst);
  /* release: the consumer's acquire load of prev->next sees n's contents. */
  atomic_store_explicit(&prev->next, n, memory_order_release);
}

void weft__mpsc_push_chain(weft__mpsc_t *q, weft__qnode_t *first, weft__qnode_t *last) {
  atomic_store_explicit(&last->next, NULL, memory_order_relaxed);
  /* seq_cst: as in weft__mpsc_push (the parked context's Dekker pair). */
  weft__qnode_t *prev = atomic_exchange_explicit(&q->tail, last, memory_order_seq_cst);
  /* release: the consumer's acquire load of prev->next sees first, and
   * through it the links first..last the producer stored before (relaxed:
   * nobody could see them until now). */
  atomic_store_explicit(&prev->next, first, memory_order_release);
}

weft__qnode_t *weft__mpsc_pop(weft__mpsc_t *q) {
  weft__qnode_t *head = q->head;
  weft__qnode_t *next = atomic_load_explicit(&head->next, memory_order_acquire);
  if (head == &q->stub) {
    if (next == NULL)
      return NULL;
    q->head = next;
    head = next;
    next = atomic_load_explicit(&next->next, memory_order_acquire);
  }
  if (next != NULL) {
    q->head = next;
    return head;
  }
  if (atomic_load_explicit(&q->tail, memory_order_acquire) != head)
    return NULL; /* a push is half done */
  weft__mpsc_push(q, &q->stub);
  next = atomic_load_explicit(&head->next, memory_order_acquire);
  if (next != NULL) {
    q->head = next;
    return head;
  }
  return NULL;
}

weft__qnode_t *weft__mpsc_peek(weft__mpsc_t *q) {
  weft__qnode_t *head = q->head;
  if (head != &q->stub)
    return head; /* published: it was read from a next with acquire */
  weft__qnode_t *next = atomic_load_explicit(&head->next, memory_order_acquire);
  if (next != NULL)
    q->head = next; /* past the stub, as pop would go */
  return next;
}

bool weft__mpsc_empty(weft__mpsc_t *q) {
  return q->head == &q->stub &&
         atomic_load_explicit(&q->tail, memory_order_seq_cst) == &q->stub;
}
