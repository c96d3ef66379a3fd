/* weft/actor.h: actors.
 *
 * An actor is a behaviour (a message callback) and its state, bound to a port
 * on some context. It costs one channel (two ports) and its state: a program
 * can hold a million of them. The address is the other port of the channel:
 * whoever holds it posts to the actor; it can be moved in a message like any
 * port. Many actors share one context, so actors are cheap and workers few. */
#ifndef WEFT_ACTOR_H
#define WEFT_ACTOR_H

#include "common.h"
#include "port.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called for each message on the actor's context. self is the actor's own
 * port (weft_port_data(self) is the state). The callee owns msg. */
typedef weft_port_message_cb weft_actor_behaviour_cb;

/* weft_actor_spawn: binds behaviour + state to a new port on ctx and returns
 * the address port in *address, owned by the calling thread's context (which
 * must be ctx's thread). Both ends are unref'd: actors do not keep a loop
 * alive by themselves. Returns 0, WEFT_ENOMEM, WEFT_EINVAL, WEFT_EWRONGTHREAD. */
WEFT_EXTERN int weft_actor_spawn(weft_ctx_t *ctx, weft_actor_behaviour_cb behaviour,
                                 void *state, weft_port_t **address);

/* weft_actor_stop: stops the actor whose own port is self (from its behaviour
 * or its context's thread): closes self; the address holder sees the close. */
WEFT_EXTERN int weft_actor_stop(weft_port_t *self);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_ACTOR_H */
