/* weft.h: the public API of weft, a microkernel-style actor runtime on libuv.
 * Include this one header. See README.md for a tour and for the guarantees
 * under hostile and dying peers; each header in weft/ states its own.
 *
 * The default contract, which every declaration follows unless it says
 * otherwise: a function does not block; it is called on the thread of the
 * context that owns the object (an action returns WEFT_EWRONGTHREAD when
 * called from another); it returns 0 or a negative error code (error.h),
 * and a question returns bool; it takes ownership of nothing unless it says
 * "takes" (a post takes the message on success only). Callbacks run on the
 * owner's thread, from its loop. The exceptions are stated where they are:
 * weft_port_post and weft_worker_terminate may be called from any thread;
 * weft_runtime_run and weft_runtime_child_entry run a loop (block until it
 * ends); weft_runtime_free waits for the runtime's workers to exit. */
#ifndef WEFT_H
#define WEFT_H

#include "weft/common.h"
#include "weft/error.h"
#include "weft/list.h"
#include "weft/buf.h"
#include "weft/msg.h"
#include "weft/port.h"
#include "weft/request.h"
#include "weft/runtime.h"
#include "weft/worker.h"
#include "weft/actor.h"
#include "weft/child.h"
#include "weft/supervisor.h"
#include "weft/balancer.h"
#include "weft/pool.h"
#include "weft/node.h"
#include "weft/service.h"
#include "weft/metrics.h"

#endif /* WEFT_H */
