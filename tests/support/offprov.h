/* offprov.h: the task functions and the provider process shared by the
 * remote-offload and cross-node supervision tests.
 *
 * The same task code runs on a local pool and on provider processes (the
 * test binary started again with `--offprov NAME URL`): each provider is a
 * node named NAME that dials URL, runs a pool of 2 threads with the tasks
 * registered (offprov_register) and serves it as the service "offload"
 * (weft_pool_serve). It exits 0, having freed everything, when the test's
 * node goes down.
 *
 * Tasks: "mix" {n, seed} -> {v, node}: a deterministic sum over n steps
 * (about n ns of CPU) and the name of the node that ran it ("local" on a
 * local pool); "fnv" (a buffer) -> {h}: the FNV-1a hash of its bytes. */
#ifndef WEFT_TEST_OFFPROV_H
#define WEFT_TEST_OFFPROV_H

#include "weft.h"

#define OFFPROV_SERVICE "offload"

/* offprov_register: registers "mix" and "fnv" on pool (aborts on failure). */
void offprov_register(weft_pool_t *pool);
int offprov_mix(weft_pool_task_t *task, weft_msg_t *args, weft_msg_t **result);

/* offprov_expected: what "mix" returns for n and seed. */
uint64_t offprov_expected(uint64_t n, uint64_t seed);

/* offprov_wait: runs loop until *flag is true (flag given) or *count reaches
 * want, for at most ms; false (said on stderr, naming what) on timeout. */
bool offprov_wait(uv_loop_t *loop, const bool *flag, const uint32_t *count, uint32_t want,
                  uint64_t ms, const char *what);

/* offprov_main: the provider process's main. */
int offprov_main(const char *name, const char *url);

#endif
