/* child.c: child processes with a channel port, and their output pipes.
 *
 * A child is a uv_process_t, up to three pipes, and a process channel
 * (ipc.c) on a socketpair whose child end becomes fd 3. The handle lives
 * until these are done: the process exited and its handle closed, the
 * transport finished, port A closed (every message the child sent was
 * delivered first), and every output pipe closed. Then on_exit, then free.
 *
 * In the child process, runtime.c calls weft__child_bootstrap to turn the
 * inherited fd into the runtime's parent port.
 *
 * Threads: the spawning context's only. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc.h"
#include "metrics_remote.h"
#include "nodejson.h"

extern char **environ;

#define CHANNEL_FD 3

struct weft_child_s {
  weft__closer_t closer;
  weft_ctx_t *ctx;
  uv_process_t proc;
  uv_pipe_t pipes[3];
  bool pipe_open[3];
  weft__linebuf_t lines[3];
  weft__ipc_t *ipc;
  weft_port_t *port;
  weft_child_options_t opts;
  void *user;
  int pending;          /* handles and channel not yet closed */
  bool exited;
  bool live_until_exit_cb; /* the loop is kept alive from the exit to on_exit */
  int64_t status;
  int term_signal;
  bool aborted;         /* the context is ending: no on_exit */
  char *readbuf;        /* output read buffer */
  weft_metrics_source_t *metrics; /* the parent's view of it (child_metrics below) */
  /* Its own snapshot, asked for over a weft channel (child_stats below). */
  char name[32];                  /* its label: the entry name, or the file's base name */
  uint64_t stats_replies, stats_rejected, stats_last_ns;
  int stats_error;                /* why the last rejected answer was */
  bool stats_truncated;
};

/* ---- metrics: the child as its parent sees it ------------------------------ */

/* A weft child answers the request that each collection sends (one at a
 * time; one unanswered for a second is made again: weft__ipc_stats_request)
 * with its own snapshot; the last good one stays in the source, with its age.
 * An answer that does not decode, or that nobody asked for, is counted and
 * named (stats_rejected, stats_error) and changes nothing else. */
static void child_stats(weft__ipc_t *ipc, const uint8_t *p, size_t n, int err, void *data) {
  (void)ipc;
  weft_child_t *c = data;
  if (c->metrics == NULL)
    return;
  uint64_t now = uv_hrtime();
  bool truncated = false;
  if (err == 0)
    err = weft__metrics_source_remote(c->metrics, p, n, c->proc.pid, c->name, now, &truncated);
  if (err) {
    c->stats_rejected++;
    c->stats_error = err;
    return;
  }
  c->stats_replies++;
  c->stats_last_ns = now;
  c->stats_truncated = truncated;
}

static void child_stats_values(weft_metrics_source_t *src, weft_child_t *c) {
  weft_metrics_put(src, "stats_replies", NULL, NULL, WEFT_METRIC_COUNTER,
                   (double)c->stats_replies);
  weft_metrics_put(src, "stats_rejected", NULL, NULL, WEFT_METRIC_COUNTER,
                   (double)c->stats_rejected);
  if (c->stats_replies)
    weft_metrics_put(src, "stats_age_seconds", NULL, NULL, WEFT_METRIC_GAUGE,
                     (double)(uv_hrtime() - c->stats_last_ns) / 1e9);
  weft_metrics_put(src, "stats_truncated", NULL, NULL, WEFT_METRIC_GAUGE,
                   c->stats_truncated ? 1 : 0);
  if (c->stats_error)
    weft_metrics_put(src, "stats_error", "error", weft_err_name(c->stats_error),
                     WEFT_METRIC_GAUGE, 1);
}

/* Published per child (source "child-<pid>"): its pid, whether it exited,
 * and on its channel the messages sent to it and credited back (weft) or
 * written (Node), and (weft channel) the messages it sent that were handed
 * to the parent's port, and how its own snapshot fares (child_stats). A
 * Node.js child is seen only from here. */
static void child_metrics(weft_metrics_source_t *src, void *data) {
  weft_child_t *c = data;
  weft_metrics_put(src, "pid", NULL, NULL, WEFT_METRIC_GAUGE, c->proc.pid);
  weft_metrics_put(src, "exited", NULL, NULL, WEFT_METRIC_GAUGE, c->exited ? 1 : 0);
  if (c->ipc == NULL)
    return;
  weft_metrics_put(src, "messages_sent", NULL, NULL, WEFT_METRIC_COUNTER,
                   (double)c->ipc->sent_msgs);
  weft_metrics_put(src, "messages_acked", NULL, NULL, WEFT_METRIC_COUNTER,
                   (double)c->ipc->acked_msgs);
  if (c->ipc->codec != &weft__ipc_weft_codec)
    return;
  weft_metrics_put(src, "messages_received", NULL, NULL, WEFT_METRIC_COUNTER,
                   (double)c->ipc->w.posted_msgs);
  /* The window: what the child still lets the parent send, and whether
   * the parent's posts wait for its credit. */
  weft_metrics_put(src, "credit_messages", NULL, NULL, WEFT_METRIC_GAUGE,
                   (double)c->ipc->w.credit_msgs);
  weft_metrics_put(src, "credit_bytes", NULL, NULL, WEFT_METRIC_GAUGE,
                   (double)c->ipc->w.credit_bytes);
  weft_metrics_put(src, "waiting_for_credit", NULL, NULL, WEFT_METRIC_GAUGE,
                   c->ipc->b_stopped ? 1 : 0);
  child_stats_values(src, c);
  (void)weft__ipc_stats_request(c->ipc);
}

static void child_name(weft_child_t *c) {
  const char *n = c->opts.entry_name;
  if (n == NULL) {
    n = c->opts.file;
    const char *slash = strrchr(n, '/');
    n = slash ? slash + 1 : n;
  }
  snprintf(c->name, sizeof(c->name), "%s", n);
}

static void child_metrics_start(weft_child_t *c) {
  char name[32];
  snprintf(name, sizeof(name), "child-%d", c->proc.pid);
  (void)weft_metrics_source_new(c->ctx, "child", name, child_metrics, c, &c->metrics);
}

static void maybe_done(weft_child_t *c) {
  if (--c->pending > 0)
    return;
  if (c->live_until_exit_cb)
    weft__ctx_live_add(c->ctx, -1);
  weft__ctx_closer_remove(c->ctx, &c->closer);
  for (int i = 1; i < 3; i++)
    weft__linebuf_fini(&c->lines[i]);
  if (!c->aborted && c->opts.on_exit)
    c->opts.on_exit(c, c->status, c->term_signal);
  weft_metrics_source_free(c->metrics);
  weft__free(c->readbuf);
  weft__free(c);
}

static void on_handle_closed(uv_handle_t *h) {
  weft_child_t *c = h->data;
  c->ctx->handles_open--;
  maybe_done(c);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, on_handle_closed);
}

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
  weft_child_t *c = p->data;
  c->exited = true;
  /* The process handle kept the loop alive until now; on_exit still waits
   * for the channel's last message and close: keep it alive until then. */
  c->live_until_exit_cb = true;
  weft__ctx_live_add(c->ctx, 1);
  c->status = status;
  c->term_signal = sig;
  if (c->pipe_open[0])
    close_handle((uv_handle_t *)&c->pipes[0]); /* nobody reads the child's stdin any more */
  close_handle((uv_handle_t *)p);
}

/* The transport is gone (socket and B closed). A may still hold messages
 * the child sent: an A that was ever started delivers them (when it is
 * started again, if stopped now), then its close; an A never started gets
 * its close at once (port.c, close_stopped), so on_exit is not held up. */
static void on_channel_done(weft__ipc_t *ipc, void *data) {
  (void)ipc;
  weft_child_t *c = data;
  c->ipc = NULL;
  maybe_done(c);
}

/* A finished closing: every message the child sent has been delivered. */
static void on_port_closed(weft_port_t *port, const weft_port_close_info_t *info) {
  (void)info;
  weft_child_t *c = port->ext->internal_data;
  c->port = NULL;
  maybe_done(c);
}

/* ---- output ------------------------------------------------------------- */

#define READ_CHUNK (64 * 1024)

/* One read buffer per child, made on its first output. */
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  weft_child_t *c = h->data;
  if (c->readbuf == NULL)
    c->readbuf = weft__malloc(READ_CHUNK);
  buf->base = c->readbuf;
  buf->len = c->readbuf ? READ_CHUNK : 0;
}

static void emit(weft_child_t *c, int fd, const char *p, size_t n) {
  if (c->opts.on_output == NULL)
    return;
  if (!c->opts.output_lines || p == NULL) {
    if (c->opts.output_lines && p == NULL) {
      const char *rest;
      size_t len;
      if (weft__linebuf_rest(&c->lines[fd], &rest, &len) && len)
        c->opts.on_output(c, fd, rest, len);
    }
    c->opts.on_output(c, fd, p, n);
    return;
  }
  if (weft__linebuf_feed(&c->lines[fd], p, n) != 0)
    return;
  const char *line;
  size_t len;
  while (weft__linebuf_next(&c->lines[fd], &line, &len) == 1)
    c->opts.on_output(c, fd, line, len);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  weft_child_t *c = s->data;
  int fd = (uv_pipe_t *)s == &c->pipes[1] ? 1 : 2;
  if (n > 0) {
    emit(c, fd, buf->base, (size_t)n);
    return;
  }
  if (n < 0) {
    emit(c, fd, NULL, 0);
    close_handle((uv_handle_t *)s);
  }
}

/* ---- spawning ----------------------------------------------------------- */

static bool reserved_var(const char *kv) {
  static const char *const names[] = {"WEFT_CHANNEL_FD=", "WEFT_ENTRY=", "NODE_CHANNEL_FD=",
                                      "NODE_CHANNEL_SERIALIZATION_MODE=", "NODE_UNIQUE_ID="};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strncmp(kv, names[i], strlen(names[i])) == 0)
      return true;
  return false;
}

/* The child's environment: the given (or ours) less the channel variables,
 * plus the ones for this channel. One allocation; strings point into it. */
static char **build_env(const weft_child_options_t *o) {
  const char *const *base = o->env ? o->env : (const char *const *)environ;
  char extra[3][96];
  int nextra = 0;
  if (o->channel == WEFT_CHANNEL_WEFT) {
    snprintf(extra[nextra++], sizeof(extra[0]), "WEFT_CHANNEL_FD=%d", CHANNEL_FD);
    if (o->entry_name)
      snprintf(extra[nextra++], sizeof(extra[0]), "WEFT_ENTRY=%.80s", o->entry_name);
  } else if (o->channel == WEFT_CHANNEL_NODE) {
    snprintf(extra[nextra++], sizeof(extra[0]), "NODE_CHANNEL_FD=%d", CHANNEL_FD);
    snprintf(extra[nextra++], sizeof(extra[0]), "NODE_CHANNEL_SERIALIZATION_MODE=json");
  }
  size_t n = 0, bytes = 0;
  for (const char *const *e = base; *e; e++, n++)
    bytes += strlen(*e) + 1;
  for (int i = 0; i < nextra; i++)
    bytes += strlen(extra[i]) + 1;
  char **env = weft__malloc((n + (size_t)nextra + 1) * sizeof(char *) + bytes);
  if (env == NULL)
    return NULL;
  char *p = (char *)(env + n + (size_t)nextra + 1);
  size_t k = 0;
  for (const char *const *e = base; *e; e++) {
    if (reserved_var(*e))
      continue;
    env[k++] = strcpy(p, *e);
    p += strlen(*e) + 1;
  }
  for (int i = 0; i < nextra; i++) {
    env[k++] = strcpy(p, extra[i]);
    p += strlen(extra[i]) + 1;
  }
  env[k] = NULL;
  return env;
}

static void setup_stdio(weft_child_t *c, uv_stdio_container_t *st, int channel_fd) {
  for (int i = 0; i < 3; i++) {
    switch (c->opts.stdio[i]) {
    case WEFT_STDIO_PIPE:
      uv_pipe_init(c->ctx->loop, &c->pipes[i], 0);
      c->pipes[i].data = c;
      st[i].flags = UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
      st[i].data.stream = (uv_stream_t *)&c->pipes[i];
      c->pipe_open[i] = true;
      break;
    case WEFT_STDIO_IGNORE:
      st[i].flags = UV_IGNORE;
      break;
    default:
      st[i].flags = UV_INHERIT_FD;
      st[i].data.fd = i;
      break;
    }
  }
  st[3].flags = channel_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
  st[3].data.fd = channel_fd;
}

static int start_process(weft_child_t *c, int channel_fd) {
  const weft_child_options_t *o = &c->opts;
  char exe[4096];
  const char *file = o->file;
  if (file == NULL) {
    size_t sz = sizeof(exe);
    int err = uv_exepath(exe, &sz);
    if (err)
      return err;
    file = exe;
  }
  const char *default_args[2] = {file, NULL};
  char **env = build_env(o);
  if (env == NULL)
    return WEFT_ENOMEM;
  uv_stdio_container_t st[4];
  setup_stdio(c, st, channel_fd);
  uv_process_options_t po = {
      .exit_cb = on_proc_exit,
      .file = file,
      .args = (char **)(o->args ? o->args : default_args),
      .env = env,
      .cwd = o->cwd,
      .stdio_count = channel_fd >= 0 ? 4 : 3,
      .stdio = st,
      .uid = o->uid,
      .gid = o->gid,
  };
  if (o->detached)
    po.flags |= UV_PROCESS_DETACHED;
  if (o->set_uid)
    po.flags |= UV_PROCESS_SETUID;
  if (o->set_gid)
    po.flags |= UV_PROCESS_SETGID;
  c->proc.data = c;
  int err = uv_spawn(c->ctx->loop, &c->proc, &po);
  weft__free(env);
  return err;
}

static void on_ctx_close(weft__closer_t *closer) {
  weft_child_t *c = (weft_child_t *)(void *)closer;
  c->aborted = true;
  for (int i = 0; i < 3; i++)
    if (c->pipe_open[i])
      close_handle((uv_handle_t *)&c->pipes[i]);
  close_handle((uv_handle_t *)&c->proc);
  if (c->port)
    weft_port_close(c->port); /* the context closes its ports after its closers */
  if (c->ipc)
    weft__ipc_abort(c->ipc, WEFT_ECLOSED);
}

static void start_pipes(weft_child_t *c) {
  for (int i = 0; i < 3; i++) {
    if (!c->pipe_open[i])
      continue;
    c->pending++;
    c->ctx->handles_open++;
    if (i > 0)
      uv_read_start((uv_stream_t *)&c->pipes[i], on_alloc, on_read);
    if (c->opts.output_lines)
      weft__linebuf_init(&c->lines[i], c->opts.max_frame ? c->opts.max_frame : 1u << 20);
  }
}

/* uv_spawn failed: close the pipes and the process handle it initialised;
 * c is freed from the last close callback (aborted: no on_exit). */
static void undo_spawn(weft_child_t *c) {
  c->aborted = true;
  c->pending = 1;
  for (int i = 0; i < 3; i++) {
    if (c->pipe_open[i]) {
      c->pending++;
      c->ctx->handles_open++;
      uv_close((uv_handle_t *)&c->pipes[i], on_handle_closed);
    }
  }
  if (c->proc.type == UV_PROCESS) {
    c->pending++;
    c->ctx->handles_open++;
    uv_close((uv_handle_t *)&c->proc, on_handle_closed);
  }
  maybe_done(c);
}

static int open_channel(weft_child_t *c, int fd) {
  weft__ipc_options_t io = {
      .kind = c->opts.channel == WEFT_CHANNEL_NODE ? WEFT__IPC_NODE : WEFT__IPC_WEFT,
      .max_frame = c->opts.max_frame,
      .window_msgs = c->opts.window_msgs,
      .window_bytes = c->opts.window_bytes,
      .on_done = on_channel_done,
      .data = c,
      .on_stats = child_stats,
  };
  int err = weft__ipc_open(c->ctx, fd, &io, &c->ipc, &c->port);
  if (err)
    return err;
  weft__port_ext_t *ext = weft__port_ext(c->port);
  if (ext == NULL) {
    weft__ipc_abort(c->ipc, WEFT_ENOMEM); /* A then closes without our hook */
    return WEFT_ENOMEM;
  }
  ext->on_close_internal = on_port_closed;
  ext->internal_data = c;
  return 0;
}

int weft_child_spawn(weft_ctx_t *ctx, const weft_child_options_t *opts, weft_child_t **out) {
  int err, sv[2] = {-1, -1};
  if (ctx == NULL || opts == NULL || out == NULL || (opts->file == NULL && opts->entry_name == NULL))
    return WEFT_EINVAL;
  if (ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  weft_child_t *c = weft__calloc(1, sizeof(*c));
  if (c == NULL)
    return WEFT_ENOMEM;
  c->ctx = ctx;
  c->opts = *opts;
  c->user = opts->data;
  c->closer.close = on_ctx_close;
  child_name(c);
  if (opts->channel != WEFT_CHANNEL_NONE &&
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    err = -errno;
    goto fail_free;
  }
  err = start_process(c, sv[1]);
  if (err)
    goto fail_pipes;
  if (sv[1] >= 0)
    close(sv[1]);
  c->pending = 1; /* the process handle */
  ctx->handles_open++;
  start_pipes(c);
  weft__ctx_closer_add(ctx, &c->closer);
  if (sv[0] >= 0) {
    err = open_channel(c, sv[0]);
    if (err == WEFT_ENOMEM && c->ipc != NULL) {
      c->pending++; /* the transport still goes through on_channel_done */
      c->port = NULL;
    } else if (err) {
      /* The process runs already: it sees EOF on its channel. */
      close(sv[0]);
    } else {
      c->pending += 2; /* the transport, and port A */
      if (opts->on_message)
        weft_port_start(c->port, opts->on_message);
      if (opts->msg && weft_port_post(c->port, opts->msg) != 0)
        weft_msg_free(opts->msg);
    }
  }
  child_metrics_start(c);
  *out = c;
  return 0;

fail_pipes:
  if (sv[0] >= 0) {
    close(sv[0]);
    close(sv[1]);
  }
  undo_spawn(c);
  return err;
fail_free:
  weft__free(c);
  return err;
}

weft_port_t *weft_child_port(weft_child_t *c) { return c ? c->port : NULL; }
int weft_child_pid(const weft_child_t *c) { return c ? c->proc.pid : 0; }
void *weft_child_data(const weft_child_t *c) { return c ? c->user : NULL; }

void weft_child_set_data(weft_child_t *c, void *data) {
  if (c)
    c->user = data;
}

int weft_child_kill(weft_child_t *c, int signum) {
  if (c == NULL)
    return WEFT_EINVAL;
  if (c->ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  if (c->exited)
    return UV_ESRCH;
  return uv_process_kill(&c->proc, signum);
}

int weft_child_close_stdin(weft_child_t *c) {
  if (c == NULL)
    return WEFT_EINVAL;
  if (c->ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  if (!c->pipe_open[0])
    return WEFT_EINVAL;
  close_handle((uv_handle_t *)&c->pipes[0]);
  return 0;
}

static void on_stdin_written(uv_write_t *req, int status) {
  (void)status;
  weft__free(req);
}

int weft_child_write(weft_child_t *c, const void *data, size_t len) {
  if (c == NULL)
    return WEFT_EINVAL;
  if (c->ctx != weft__ctx_tls())
    return WEFT_EWRONGTHREAD;
  if (!c->pipe_open[0] || uv_is_closing((uv_handle_t *)&c->pipes[0]))
    return WEFT_EINVAL;
  uv_write_t *req = weft__malloc(sizeof(*req) + len);
  if (req == NULL)
    return WEFT_ENOMEM;
  memcpy(req + 1, data, len);
  uv_buf_t b = uv_buf_init((char *)(req + 1), (unsigned)len);
  int err = uv_write(req, (uv_stream_t *)&c->pipes[0], &b, 1, on_stdin_written);
  if (err)
    weft__free(req);
  return err;
}

/* ---- the child side ------------------------------------------------------ */

/* Called by weft_runtime_new in every process: adopt an inherited channel. */
int weft__child_bootstrap(weft_runtime_t *rt) {
  const char *wfd = getenv("WEFT_CHANNEL_FD");
  const char *nfd = getenv("NODE_CHANNEL_FD");
  const char *mode = getenv("NODE_CHANNEL_SERIALIZATION_MODE");
  const char *entry = getenv("WEFT_ENTRY");
  weft__ipc_kind_t kind = wfd ? WEFT__IPC_WEFT : WEFT__IPC_NODE;
  const char *fds = wfd ? wfd : nfd;
  int err = 0;
  if (entry != NULL) {
    rt->child_entry = weft__strdup(entry);
    if (rt->child_entry == NULL)
      return WEFT_ENOMEM;
  }
  if (fds != NULL && !(kind == WEFT__IPC_NODE && mode && strcmp(mode, "json") != 0)) {
    char *end;
    long fd = strtol(fds, &end, 10);
    if (*end == '\0' && fd >= 0 && fd < 65536 && fcntl((int)fd, F_GETFD) >= 0) {
      fcntl((int)fd, F_SETFD, FD_CLOEXEC);
      weft__ipc_options_t io = {.kind = kind};
      weft__ipc_t *ipc;
      err = weft__ipc_open(rt->main, (int)fd, &io, &ipc, &rt->parent_port);
    }
  }
  unsetenv("WEFT_CHANNEL_FD");
  unsetenv("WEFT_ENTRY");
  unsetenv("NODE_CHANNEL_FD");
  unsetenv("NODE_CHANNEL_SERIALIZATION_MODE");
  return err;
}

weft_port_t *weft_runtime_parent_port(weft_runtime_t *rt) {
  if (rt == NULL || rt->parent_port == NULL || weft_port_is_closed(rt->parent_port))
    return NULL;
  return rt->parent_port;
}

int weft_runtime_child_entry(weft_runtime_t *rt, int *exit_code) {
  if (rt == NULL || exit_code == NULL)
    return WEFT_EINVAL;
  if (rt->child_entry == NULL)
    return WEFT_ENOENT;
  weft_worker_entry_cb fn = weft_runtime_lookup(rt, rt->child_entry);
  if (fn == NULL)
    return WEFT_ENOENTRY;
  int rc = fn(rt->main, NULL);
  /* Attached or not, the child's work is the loop's: an attached runtime's
   * loop is run here too, else the child would return before serving. */
  uv_run(rt->main->loop, UV_RUN_DEFAULT);
  *exit_code = rt->exit_req ? rt->exit_code : rc < 0 ? 1 : rc;
  return 0;
}
