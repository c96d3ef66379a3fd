/* test_list.c: weft/list.h, the intrusive list the runtime and the actors
 * share: order both ways, removal at either end and in the middle, a
 * repeated remove, membership, and a zeroed list and node being valid. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "weft.h"

typedef struct {
  int v;
  weft_list_node_t link; /* not first: WEFT_LIST_ENTRY must subtract the offset */
} item_t;

static item_t *item_of(weft_list_node_t *n) { return WEFT_LIST_ENTRY(n, item_t, link); }

/* The values of l front to back into out; checks the walk back agrees. */
static size_t values(const weft_list_t *l, int *out, size_t cap) {
  size_t k = 0;
  for (weft_list_node_t *n = weft_list_first(l); n != NULL; n = weft_list_next(n)) {
    assert_true(k < cap);
    out[k++] = item_of(n)->v;
  }
  size_t back = k;
  for (weft_list_node_t *n = weft_list_last(l); n != NULL; n = weft_list_prev(n)) {
    assert_true(back > 0);
    assert_int_equal(item_of(n)->v, out[--back]);
  }
  assert_int_equal(back, 0);
  return k;
}

static void expect(const weft_list_t *l, const int *want, size_t n) {
  int got[16];
  assert_int_equal(values(l, got, 16), n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(got[i], want[i]);
}

static void zeroed_list_is_empty(void **state) {
  (void)state;
  weft_list_t l;
  memset(&l, 0, sizeof(l));
  assert_true(weft_list_empty(&l));
  assert_null(weft_list_first(&l));
  assert_null(weft_list_last(&l));
  assert_null(weft_list_pop_front(&l));
  item_t a = {.v = 1};
  assert_false(weft_list_contains(&l, &a.link));
  weft_list_remove(&l, &a.link); /* not linked: nothing happens */
  assert_true(weft_list_empty(&l));
}

static void push_front_and_back_keep_order(void **state) {
  (void)state;
  weft_list_t l = {0};
  item_t it[4] = {{.v = 0}, {.v = 1}, {.v = 2}, {.v = 3}};
  weft_list_push_back(&l, &it[1].link);
  weft_list_push_back(&l, &it[2].link);
  weft_list_push_front(&l, &it[0].link);
  weft_list_push_back(&l, &it[3].link);
  expect(&l, (const int[]){0, 1, 2, 3}, 4);
  assert_false(weft_list_empty(&l));
  for (int i = 0; i < 4; i++)
    assert_true(weft_list_contains(&l, &it[i].link));
}

static void remove_middle_ends_and_again(void **state) {
  (void)state;
  weft_list_t l = {0};
  item_t it[5];
  for (int i = 0; i < 5; i++) {
    it[i] = (item_t){.v = i};
    weft_list_push_back(&l, &it[i].link);
  }
  weft_list_remove(&l, &it[2].link);
  expect(&l, (const int[]){0, 1, 3, 4}, 4);
  assert_false(weft_list_contains(&l, &it[2].link));
  assert_null(it[2].link.prev);
  assert_null(it[2].link.next);
  weft_list_remove(&l, &it[2].link); /* a second remove changes nothing */
  expect(&l, (const int[]){0, 1, 3, 4}, 4);
  weft_list_remove(&l, &it[0].link);
  weft_list_remove(&l, &it[4].link);
  expect(&l, (const int[]){1, 3}, 2);
  weft_list_remove(&l, &it[0].link); /* the old first, removed: no harm */
  expect(&l, (const int[]){1, 3}, 2);
  assert_ptr_equal(item_of(weft_list_pop_front(&l)), &it[1]);
  assert_ptr_equal(item_of(weft_list_pop_front(&l)), &it[3]);
  assert_true(weft_list_empty(&l));
  assert_null(weft_list_last(&l));
  /* Removed nodes go back in, anywhere. */
  weft_list_push_front(&l, &it[2].link);
  weft_list_push_front(&l, &it[4].link);
  expect(&l, (const int[]){4, 2}, 2);
}

static void removing_while_walking(void **state) {
  (void)state;
  weft_list_t l = {0};
  item_t it[6];
  for (int i = 0; i < 6; i++) {
    it[i] = (item_t){.v = i};
    weft_list_push_back(&l, &it[i].link);
  }
  for (weft_list_node_t *n = weft_list_first(&l), *next; n != NULL; n = next) {
    next = weft_list_next(n);
    if (item_of(n)->v % 2 == 0)
      weft_list_remove(&l, n);
  }
  expect(&l, (const int[]){1, 3, 5}, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(zeroed_list_is_empty),
      cmocka_unit_test(push_front_and_back_keep_order),
      cmocka_unit_test(remove_middle_ends_and_again),
      cmocka_unit_test(removing_while_walking),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
