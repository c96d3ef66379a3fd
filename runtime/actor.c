/* actor.c: actors are a behaviour bound to one port of a fresh channel.
 *
 * The actor's own port is started with the behaviour and carries the state as
 * its user data; the other port is the address. Both are unref'd, so actors
 * never keep a loop alive by themselves. Owner thread only. */
#include "weft_impl.h"

int weft_actor_spawn(weft_ctx_t *ctx, weft_actor_behaviour_cb behaviour, void *state,
                     weft_port_t **address) {
  if (ctx == NULL || behaviour == NULL || address == NULL)
    return WEFT_EINVAL;
  weft_port_t *ports[2];
  int err = weft_channel_new(ctx, ports);
  if (err)
    return err;
  weft_port_unref(ports[0]);
  weft_port_unref(ports[1]);
  weft_port_set_data(ports[0], state);
  weft_port_start(ports[0], behaviour);
  *address = ports[1];
  return 0;
}

int weft_actor_stop(weft_port_t *self) { return weft_port_close(self); }
