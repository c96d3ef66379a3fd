/* weft/child.h: child processes whose IPC channel is an ordinary port.
 *
 * weft_child_spawn runs a program (any executable, or this one with a
 * registered entry, like Node's fork(module)) with a channel: a socketpair
 * whose child end is fd 3, named in the child's environment. In the parent the
 * channel is a weft_port_t, used exactly like a worker's port: post, start,
 * close, backpressure (WEFT_EAGAIN once the child's window is full), and a
 * close event that says why and how many messages were not acknowledged when
 * the child dies. What cannot cross a process boundary (a port) is refused at
 * post time with WEFT_ETRANSFER. Buffers of 256 KiB or more made with
 * weft_buf_new travel as sealed memfds (no copy); socket fds travel with
 * SCM_RIGHTS and are opened by the receiver on its own loop.
 *
 * Windows: each side grants the other a window (window_msgs, window_bytes
 * below; a weft child grants its parent the defaults) and checks it on
 * receive: a peer that sends past it, or returns more credit than it was
 * sent, is closed with WEFT_EWINDOW / WEFT_ECREDIT, so what a channel holds
 * is bounded by the window whatever the peer does. A process that ends sends
 * what its program posted as the peer's window allows, waiting up to 2 s for
 * credit; the rest is counted undeliverable. The close event's undelivered
 * count is what the peer never consumed, after an orderly close too.
 *
 * A Node.js channel (WEFT_CHANNEL_NODE, 'json' lines) has no credits: the
 * channel stops sending while more than 128 KiB wait to be written or a
 * socket we sent awaits Node's NODE_HANDLE_ACK (posts then get WEFT_EAGAIN
 * once the port's bound is reached); reading stops while the port is full,
 * except while such a socket awaits its ACK (then up to 8 MiB of messages
 * wait, in order, in the channel), so a program that takes no input until
 * its output moves does not stall. Its close event counts as undelivered
 * what was not written whole, and a socket Node never acknowledged.
 * Values map as JSON.parse/JSON.stringify see them: strings are WTF-8 (a
 * lone surrogate, which JSON.stringify writes as "\ud800", is its 3-byte
 * form ED A0 80 and goes back to Node as the same escape, so a string makes
 * the round trip unchanged); keys may hold NUL; nesting up to 8192 arrays
 * and maps (Node 20's JSON.stringify stops near 4185); Buffers are bins. A
 * line weft cannot carry (nested deeper than that: WEFT_EUNREPRESENTABLE;
 * not JSON: WEFT_EPROTO) is dropped alone and reported through
 * weft_port_on_error and weft_port_dropped; later messages still arrive.
 *
 * Callbacks run on the spawning context's thread. on_exit comes once, last:
 * after the process has exited, its channel has closed (so every message it
 * sent was delivered first) and its output pipes reached EOF. After on_exit
 * returns the handle is freed.
 *
 * In the child: weft_runtime_new finds the channel in the environment
 * (WEFT_CHANNEL_FD, or NODE_CHANNEL_FD for a Node.js parent), removes those
 * variables so grandchildren do not inherit them, and weft_runtime_parent_port
 * returns the other end. weft_runtime_child_entry runs the registered entry a
 * fork-like parent asked for. */
#ifndef WEFT_CHILD_H
#define WEFT_CHILD_H

#include "common.h"
#include "port.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_child_s weft_child_t;

typedef enum {
  WEFT_STDIO_INHERIT = 0, /* the parent's own fd */
  WEFT_STDIO_PIPE = 1,    /* a pipe: stdout/stderr reach on_output; stdin via weft_child_write */
  WEFT_STDIO_IGNORE = 2   /* /dev/null */
} weft_stdio_t;

typedef enum {
  WEFT_CHANNEL_WEFT = 0,  /* msgpack frames (default) */
  WEFT_CHANNEL_NONE = 1,  /* no channel: weft_child_port returns NULL */
  WEFT_CHANNEL_NODE = 2   /* Node.js 'json' serialization: the child is a Node script */
} weft_channel_t;

/* exit_status: the exit code, or 0 when killed by term_signal (> 0). */
typedef void (*weft_child_exit_cb)(weft_child_t *child, int64_t exit_status, int term_signal);
/* fd is 1 or 2. Chunks as read (or whole lines without '\n', with
 * output_lines). bytes NULL and len 0: that stream reached EOF. */
typedef void (*weft_child_output_cb)(weft_child_t *child, int fd, const char *bytes, size_t len);

typedef struct {
  const char *file;               /* program (PATH searched); NULL with entry_name: this executable */
  const char *const *args;        /* argv, NULL-terminated; NULL: { file, NULL } */
  const char *const *env;         /* NULL-terminated "K=V"; NULL: this process's environment */
  const char *cwd;                /* NULL: inherit */
  const char *entry_name;         /* run this registered entry in the child (fork-like) */
  weft_msg_t *msg;                /* posted on the channel as the first message; taken on success */
  weft_stdio_t stdio[3];
  weft_channel_t channel;
  bool detached;                  /* own session; survives the parent */
  bool set_uid, set_gid;
  uv_uid_t uid;
  uv_gid_t gid;
  uint32_t max_frame;             /* largest frame or line accepted from the child; 0: 64 MiB */
  uint32_t window_msgs;           /* what the child may send ahead; 0: 4096; past it:
                                     the channel closes with WEFT_EWINDOW */
  uint64_t window_bytes;          /* 0: 256 MiB (one message may overshoot it) */
  bool output_lines;              /* on_output per line instead of per chunk */
  weft_port_message_cb on_message;  /* messages from the child (starts the port) */
  weft_child_exit_cb on_exit;
  weft_child_output_cb on_output;
  void *data;                     /* the handle's user data (weft_child_data) */
} weft_child_options_t;

/* weft_child_spawn: start a child process. Thread of ctx. All or nothing: on
 * failure nothing runs, no callback is called and opts->msg is still the
 * caller's. Returns 0 and sets *out (valid until on_exit returns), or
 * WEFT_EINVAL, WEFT_ENOMEM, a libuv code (UV_ENOENT: no such program). */
WEFT_EXTERN int weft_child_spawn(weft_ctx_t *ctx, const weft_child_options_t *opts,
                                 weft_child_t **out);

/* weft_child_port: the parent's end of the channel (NULL without one). */
WEFT_EXTERN weft_port_t *weft_child_port(weft_child_t *child);
/* weft_child_pid: the child's process id (until on_exit returns). */
WEFT_EXTERN int weft_child_pid(const weft_child_t *child);
/* weft_child_kill, _close_stdin, _write: thread of the spawning context (else
 * WEFT_EWRONGTHREAD); the handle is valid until on_exit returns.
 * weft_child_kill: send signum. Non-blocking. Returns 0, WEFT_EINVAL (NULL),
 * WEFT_EWRONGTHREAD, UV_ESRCH (already exited), or a libuv code. */
WEFT_EXTERN int weft_child_kill(weft_child_t *child, int signum);
/* weft_child_close_stdin: close the child's stdin pipe (EOF for the child). */
WEFT_EXTERN int weft_child_close_stdin(weft_child_t *child);
/* weft_child_write: write to the child's stdin pipe (copied). */
WEFT_EXTERN int weft_child_write(weft_child_t *child, const void *bytes, size_t len);
WEFT_EXTERN void *weft_child_data(const weft_child_t *child);
WEFT_EXTERN void weft_child_set_data(weft_child_t *child, void *data);

/* ---- exec: run a command, get its whole output ------------------------ */

typedef struct {
  int err;               /* 0, UV_ENOBUFS (output over max_output: the child was
                            killed), or the spawn error */
  int64_t exit_status;
  int term_signal;
  const char *out;       /* stdout bytes (not NUL-terminated); valid during the callback */
  size_t out_len;
  const char *err_out;   /* stderr bytes */
  size_t err_len;
} weft_exec_result_t;

typedef void (*weft_exec_cb)(const weft_exec_result_t *result, void *data);

typedef struct {
  const char *file;              /* program (PATH searched) */
  const char *const *args;       /* argv, NULL-terminated; NULL: { file, NULL } */
  const char *const *env;        /* NULL-terminated "K=V"; NULL: this process's environment */
  const char *cwd;               /* NULL: inherit */
  size_t max_output;     /* per stream; 0: 1 MiB. Past it: UV_ENOBUFS, never growth */
  weft_exec_cb cb;       /* called exactly once, on ctx's thread */
  void *data;
} weft_exec_options_t;

/* weft_exec: run a command with its stdout/stderr collected (like Node's
 * child_process.execFile). Returns 0 (cb will be called) or an error (cb will
 * not be called). Thread of ctx. */
WEFT_EXTERN int weft_exec(weft_ctx_t *ctx, const weft_exec_options_t *opts);

/* ---- the child side ---------------------------------------------------- */

/* weft_runtime_parent_port: in a process started with a channel, the port to
 * the parent (owned by the main context, not started); else NULL. */
WEFT_EXTERN weft_port_t *weft_runtime_parent_port(weft_runtime_t *rt);

/* weft_runtime_child_entry: if this process was started by weft_child_spawn
 * with an entry_name, run that registered entry on the main context (msg
 * NULL; the parent's opts.msg arrives as the first message), then the loop
 * until nothing keeps it alive, also when the runtime is attached to the
 * caller's loop (opts.loop: that loop is run here, so call this outside
 * uv_run); *exit_code is the entry's return value (1 if negative). In the
 * entry, weft_ctx_parent_port(ctx) is the parent's channel (as in a worker). Returns 0, WEFT_ENOENT (not started with an entry: carry on as
 * the main program), or WEFT_ENOENTRY (the name is not registered). */
WEFT_EXTERN int weft_runtime_child_entry(weft_runtime_t *rt, int *exit_code);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_CHILD_H */
