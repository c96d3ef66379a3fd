/* service_map.c: a small map from a non-zero uint64 key to a pointer, for
 * the services' long-lived channels: a client finds the call an answer is
 * for by its id, a provider finds a request's client by the message.
 * Open addressing with linear probes and backward-shift deletion (no
 * tombstones); it grows at 3/4 full and never shrinks. Thread: its owner's
 * only. */
#include "service_int.h"

static uint32_t slot_of(uint64_t key, uint32_t cap) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return (uint32_t)key & (cap - 1);
}

static int grow(weft__svc_map_t *m) {
  uint32_t cap = m->cap ? m->cap * 2 : 64;
  weft__svc_slot_t *s = weft_calloc(cap, sizeof(*s));
  if (s == NULL)
    return WEFT_ENOMEM;
  for (uint32_t i = 0; i < m->cap; i++) {
    if (m->slots[i].key == 0)
      continue;
    uint32_t j = slot_of(m->slots[i].key, cap);
    while (s[j].key != 0)
      j = (j + 1) & (cap - 1);
    s[j] = m->slots[i];
  }
  weft_free(m->slots);
  m->slots = s;
  m->cap = cap;
  return 0;
}

int weft__svc_map_put(weft__svc_map_t *m, uint64_t key, void *value) {
  if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0)
    return WEFT_ENOMEM;
  uint32_t j = slot_of(key, m->cap);
  while (m->slots[j].key != 0)
    j = (j + 1) & (m->cap - 1);
  m->slots[j].key = key;
  m->slots[j].value = value;
  m->count++;
  return 0;
}

static weft__svc_slot_t *find(const weft__svc_map_t *m, uint64_t key) {
  if (m->cap == 0 || key == 0)
    return NULL;
  for (uint32_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->slots[i].key == 0)
      return NULL;
    if (m->slots[i].key == key)
      return &m->slots[i];
  }
}

void *weft__svc_map_get(const weft__svc_map_t *m, uint64_t key) {
  weft__svc_slot_t *s = find(m, key);
  return s ? s->value : NULL;
}

void *weft__svc_map_del(weft__svc_map_t *m, uint64_t key) {
  weft__svc_slot_t *at = find(m, key);
  if (at == NULL)
    return NULL;
  void *value = at->value;
  uint32_t i = (uint32_t)(at - m->slots), mask = m->cap - 1;
  m->slots[i].key = 0;
  m->count--;
  for (uint32_t j = (i + 1) & mask; m->slots[j].key != 0; j = (j + 1) & mask) {
    uint32_t home = slot_of(m->slots[j].key, m->cap);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      m->slots[i] = m->slots[j];
      m->slots[j].key = 0;
      i = j;
    }
  }
  return value;
}

void weft__svc_map_free(weft__svc_map_t *m) {
  weft_free(m->slots);
  m->slots = NULL;
  m->cap = m->count = 0;
}

/* ---- the trailer ------------------------------------------------------------- */

int weft__svc_trailer_add(weft_msg_t *msg, int op, uint64_t a, uint64_t b) {
  msgpack_packer *pk = weft_msg_packer(msg);
  if (pk == NULL)
    return WEFT_EINVAL;
  msgpack_pack_fix_uint64(pk, a);
  msgpack_pack_fix_uint64(pk, b);
  msgpack_pack_fix_uint64(pk, WEFT__SVC_MAGIC | (uint64_t)op);
  return weft_msg_error(msg);
}

static uint64_t be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

int weft__svc_trailer_get(const weft_msg_t *msg, uint64_t *a, uint64_t *b) {
  size_t len = 0;
  const uint8_t *p = weft_msg_payload(msg, &len);
  if (p == NULL || len < WEFT__SVC_TRAILER)
    return 0;
  p += len - WEFT__SVC_TRAILER;
  if (p[0] != 0xcf || p[9] != 0xcf || p[18] != 0xcf)
    return 0;
  uint64_t tag = be64(p + 19);
  if ((tag & ~(uint64_t)0xff) != WEFT__SVC_MAGIC)
    return 0;
  *a = be64(p + 1);
  *b = be64(p + 10);
  return (int)(tag & 0xff);
}

void weft__svc_trailer_strip(weft_msg_t *msg) {
  size_t len = 0;
  const void *p = weft_msg_payload(msg, &len);
  if (len >= WEFT__SVC_TRAILER)
    weft_msg_set_payload(msg, p, len - WEFT__SVC_TRAILER); /* in place: no allocation */
}
