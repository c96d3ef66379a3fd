/* ipc_node.c: the codec towards Node.js's 'json' IPC serialization: one JSON
 * value per line, handles passed with {"cmd":"NODE_HANDLE",...} and answered
 * with NODE_HANDLE_ACK / NACK (the wire is described in nodejson.h).
 *
 * Sending: a payload becomes one compact JSON line (never blank, never
 * invalid: a blank line crashes a Node parent). A message carrying a socket
 * becomes a NODE_HANDLE line sent with the fd; until Node acknowledges it
 * nothing else is sent (port B is held), so no later message overtakes the
 * handle; a NACK resends it, three NACKs drop it (counted undeliverable).
 * Payloads that Node would take for its own internal messages (a map whose
 * "cmd" starts with NODE_) are refused and counted. Node speaks no credits:
 * B is held while more than 128 KiB wait to be written.
 *
 * Receiving: lines are reassembled (any split), decoded strictly, and user
 * values posted on B. A line that cannot become a message is dropped alone
 * and reported on A (see on_dropped); the channel carries on. When A is full the reader stops (Node has no credits;
 * its own writes wait in its socket buffer), except while a handle we sent
 * awaits its ACK: that ACK may come behind messages A has no room for, and
 * a program that takes no input until its output moves would wait forever.
 * Then reading goes on and decoded messages wait in order in the transport
 * (at most WEFT__IPC_PENDING_MAX bytes: past that, the reader stops again
 * until the program takes input), and the reader stops once the ACK is in. A NODE_HANDLE takes the oldest received fd (ACK) or
 * finds none (NACK). NODE_SOCKET_NOTIFY_CLOSE and NODE_SOCKET_GET_COUNT are
 * answered at once (weft hands sockets to the program and does not track
 * them: "all closed", count 0), so Node never waits on us.
 *
 * Threads: the owner context's only. */
#include <string.h>
#include <unistd.h>

#include "ipc.h"
#include "nodejson.h"

#define OUT_HIGH (128u * 1024u)
#define MAX_NACKS 3

typedef struct {
  weft__linebuf_t lines;
  weft_msg_t *awaiting;  /* sent with a handle, not yet acknowledged */
  char *line;            /* its line, for a resend */
  size_t line_len;
  int nacks;
  bool held_for_output;
  uint64_t fed_end;      /* stream offset just past the bytes fed to lines */
} node_t;

static node_t *state(weft__ipc_t *ipc) { return ipc->n.state; }

static void start(weft__ipc_t *ipc) {
  node_t *n = weft__calloc(1, sizeof(*n));
  if (n == NULL) {
    weft__ipc_fail(ipc, WEFT_ENOMEM);
    return;
  }
  weft__linebuf_init(&n->lines, ipc->opts.max_frame);
  ipc->n.state = n;
  weft__ipc_hold_b(ipc, false);
}

static void fini(weft__ipc_t *ipc) {
  node_t *n = state(ipc);
  if (n == NULL)
    return;
  weft__linebuf_fini(&n->lines);
  weft_msg_free(n->awaiting);
  weft__free(n->line);
  weft__free(n);
  ipc->n.state = NULL;
}

static void reply(weft__ipc_t *ipc, const char *cmd, const char *key, int64_t count) {
  char *line;
  size_t len;
  if (weft__nodejson_control(cmd, key, count, &line, &len) == 0) {
    weft__ipc_write(ipc, line, len);
    weft__free(line);
  }
}

static int socket_fd(const weft_msg_t *msg) {
  for (uint16_t i = 0; i < msg->nxfer; i++)
    if (msg->xfer[i].kind == WEFT_XFER_SOCKET)
      return msg->xfer[i].u.fd;
  return -1;
}

static void send_handle(weft__ipc_t *ipc) {
  node_t *n = state(ipc);
  int fd = socket_fd(n->awaiting);
  if (weft__ipc_write_frame_fds(ipc, n->line, n->line_len, &fd, 1, NULL) != 0)
    weft__ipc_fail(ipc, WEFT_ENOMEM);
}

static void drop_awaiting(weft__ipc_t *ipc) {
  node_t *n = state(ipc);
  weft_msg_free(n->awaiting);
  weft__free(n->line);
  n->awaiting = NULL;
  n->line = NULL;
  n->nacks = 0;
  weft__ipc_keep_reading(ipc, false);
  weft__ipc_hold_b(ipc, n->held_for_output);
}

static void send_msg(weft__ipc_t *ipc, weft_msg_t *msg) {
  node_t *n = state(ipc);
  char *line;
  size_t len;
  int fd = socket_fd(msg);
  if (n == NULL || weft__nodejson_is_internal(msg->data, msg->len) ||
      weft__nodejson_encode(msg->data, msg->len, fd >= 0 ? "net.Native" : NULL, &line, &len)) {
    ipc->ctx->undeliverable++;
    weft_msg_free(msg);
    return;
  }
  ipc->sent_msgs++;
  if (fd < 0) {
    if (weft__ipc_write(ipc, line, len) != 0)
      weft__ipc_fail(ipc, WEFT_ENOMEM);
    else
      weft__ipc_count_msg(ipc); /* taken once written (Node has no acks) */
    weft__free(line);
    weft_msg_free(msg);
  } else {
    n->awaiting = msg;
    n->line = line;
    n->line_len = len;
    weft__ipc_hold_b(ipc, true); /* nothing overtakes the handle */
    weft__ipc_keep_reading(ipc, true); /* its ACK may come behind what A has no room for */
    send_handle(ipc);
  }
  if (ipc->out_bytes > OUT_HIGH) {
    n->held_for_output = true;
    weft__ipc_hold_b(ipc, true);
  }
}

static void flushed(weft__ipc_t *ipc) {
  node_t *n = state(ipc);
  if (n != NULL && n->held_for_output && ipc->out_bytes <= OUT_HIGH / 2) {
    n->held_for_output = false;
    if (n->awaiting == NULL)
      weft__ipc_hold_b(ipc, false);
  }
}

static int on_handle(weft__ipc_t *ipc, weft__nodejson_in_t *in) {
  int fd = weft__ipc_take_fd(ipc, UINT64_MAX);
  if (fd < 0) {
    reply(ipc, "NODE_HANDLE_NACK", NULL, -1);
    return 0;
  }
  reply(ipc, "NODE_HANDLE_ACK", NULL, -1);
  weft_msg_t *m = in->msg;
  in->msg = NULL;
  int err = weft_msg_add_socket(m, fd);
  if (err) {
    close(fd);
    weft_msg_free(m);
    return err;
  }
  return weft__ipc_deliver(ipc, m);
}

static void on_ack(weft__ipc_t *ipc, bool ok) {
  node_t *n = state(ipc);
  if (n->awaiting == NULL)
    return;
  if (ok) {
    ipc->acked_msgs++; /* a handle is taken once Node acknowledged it */
    drop_awaiting(ipc);
    return;
  }
  if (++n->nacks < MAX_NACKS) {
    send_handle(ipc);
    return;
  }
  ipc->ctx->undeliverable++;
  ipc->acked_msgs++; /* counted as undeliverable: not again at close */
  drop_awaiting(ipc);
}

static int on_line(weft__ipc_t *ipc, weft__nodejson_in_t *in) {
  weft_msg_t *m;
  switch (in->kind) {
  case WEFT__NODEJSON_USER:
    m = in->msg;
    in->msg = NULL;
      return weft__ipc_deliver(ipc, m);
  case WEFT__NODEJSON_NODE_HANDLE:
    return on_handle(ipc, in);
  case WEFT__NODEJSON_NODE_HANDLE_ACK:
  case WEFT__NODEJSON_NODE_HANDLE_NACK:
    on_ack(ipc, in->kind == WEFT__NODEJSON_NODE_HANDLE_ACK);
    return 0;
  default:
    if (in->key && strcmp(in->cmd, "NODE_SOCKET_NOTIFY_CLOSE") == 0)
      reply(ipc, "NODE_SOCKET_ALL_CLOSED", in->key, -1);
    else if (in->key && strcmp(in->cmd, "NODE_SOCKET_GET_COUNT") == 0)
      reply(ipc, "NODE_SOCKET_COUNT", in->key, 0);
    return 0; /* other internal commands (NODE_CLUSTER, ...) are not ours */
  }
}

/* A line that cannot become a message (WEFT_EUNREPRESENTABLE: valid JSON
 * weft cannot carry; WEFT_EPROTO: not JSON) is dropped alone: lines delimit
 * themselves, so the next one parses as if it had never come. A user message
 * lost this way is reported on A (weft_port_on_error). A NODE_HANDLE whose
 * msg cannot be carried still gets its ACK (Node holds every later message
 * until then) and its fd is closed; the fds that came with a malformed line's
 * bytes are closed, so no later NODE_HANDLE takes one of them. */
static void on_dropped(weft__ipc_t *ipc, weft__nodejson_in_t *in, int why, uint64_t line_end) {
  int fd;
  switch (in->kind) {
  case WEFT__NODEJSON_NODE_HANDLE_ACK:
  case WEFT__NODEJSON_NODE_HANDLE_NACK:
    on_ack(ipc, in->kind == WEFT__NODEJSON_NODE_HANDLE_ACK);
    return; /* only an extra member was too deep */
  case WEFT__NODEJSON_NODE_OTHER:
    (void)on_line(ipc, in); /* answered as usual; no user message lost */
    return;
  case WEFT__NODEJSON_NODE_HANDLE:
    fd = weft__ipc_take_fd(ipc, UINT64_MAX);
    if (fd < 0) {
      reply(ipc, "NODE_HANDLE_NACK", NULL, -1);
      return; /* Node sends it again (and gives up after 3) */
    }
    close(fd);
    reply(ipc, "NODE_HANDLE_ACK", NULL, -1);
    break;
  default:
    for (unsigned k = weft__ipc_stray_fds(ipc, line_end); k > 0; k--)
      if ((fd = weft__ipc_take_fd(ipc, UINT64_MAX)) >= 0)
        close(fd);
    break;
  }
  weft__port_report_drop(weft__port_peer(ipc->b), why);
}

static int parse(weft__ipc_t *ipc) {
  node_t *n = state(ipc);
  if (n == NULL)
    return WEFT_ENOMEM;
  if (ipc->in_len > ipc->in_off) {
    int err = weft__linebuf_feed(&n->lines, (const char *)ipc->in + ipc->in_off,
                                 ipc->in_len - ipc->in_off);
    if (err)
      return err;
    ipc->in_off = ipc->in_len;
    n->fed_end = ipc->in_pos + ipc->in_len;
  }
  while (!ipc->read_paused && !ipc->closed) {
    const char *line;
    size_t len;
    int r = weft__linebuf_next(&n->lines, &line, &len);
    if (r <= 0)
      return r;
    weft__nodejson_in_t in;
    int err = weft__nodejson_decode(line, len, &in);
    if (err == WEFT_EUNREPRESENTABLE || err == WEFT_EPROTO) {
      on_dropped(ipc, &in, err, n->fed_end - (n->lines.len - n->lines.start));
      weft__nodejson_in_fini(&in);
      continue;
    }
    if (err)
      return err;
    err = on_line(ipc, &in);
    weft__nodejson_in_fini(&in);
    if (err)
      return err;
  }
  return 0;
}

const weft__ipc_codec_t weft__ipc_node_codec = {
    .start = start,
    .send = send_msg,
    .parse = parse,
    .resume = NULL,
    .send_close = NULL,
    .flushed = flushed,
    .eof_reason = 0, /* Node's disconnect is a plain EOF */
    /* Node's JSON channel carries payloads and one handle (a socket). */
    .carry = WEFT__CARRY_NO_PORT | WEFT__CARRY_NO_BUF | WEFT__CARRY_ONE_SOCKET |
             WEFT__CARRY_FEW_ITEMS,
    .acked_when_written = true,
    .fini = fini,
};
