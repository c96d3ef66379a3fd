/* node_metrics.c: a node's figures as a metrics source (weft/metrics.h):
 * its weft_node_stats counters, and per connected peer (label peer="name")
 * the channels open on that connection (those the peer made, and all), the
 * messages and their bytes each way and the credit stalls, as node_chan.c
 * counts them on the connection (they start again from 0 when the peer
 * reconnects: a new connection). Collected on the node's context; the source
 * goes with the node (node_free). */
#include "node_int.h"

static void collect(weft_metrics_source_t *src, void *data) {
  weft_node_t *n = data;
  const weft_node_stats_t *st = &n->stats;
  weft_metrics_put(src, "peers_up", NULL, NULL, WEFT_METRIC_GAUGE, st->peers_up);
  weft_metrics_put(src, "channels_open", NULL, NULL, WEFT_METRIC_GAUGE, (double)st->channels_open);
  weft_metrics_put(src, "messages_sent", NULL, NULL, WEFT_METRIC_COUNTER, (double)st->msgs_out);
  weft_metrics_put(src, "messages_received", NULL, NULL, WEFT_METRIC_COUNTER, (double)st->msgs_in);
  weft_metrics_put(src, "bytes_sent", NULL, NULL, WEFT_METRIC_COUNTER, (double)st->bytes_out);
  weft_metrics_put(src, "bytes_received", NULL, NULL, WEFT_METRIC_COUNTER, (double)st->bytes_in);
  weft_metrics_put(src, "connects", NULL, NULL, WEFT_METRIC_COUNTER, (double)st->connects);
  weft_metrics_put(src, "disconnects", NULL, NULL, WEFT_METRIC_COUNTER, (double)st->disconnects);
  weft_metrics_put(src, "refused", NULL, NULL, WEFT_METRIC_COUNTER, (double)st->refused);
  weft_metrics_put(src, "protocol_errors", NULL, NULL, WEFT_METRIC_COUNTER,
                   (double)st->protocol_errors);
  for (weft_list_node_t *l = weft_list_first(&n->conns); l != NULL; l = weft_list_next(l)) {
    node_conn_t *c = WEFT_LIST_ENTRY(l, node_conn_t, link);
    if (c->state != CONN_UP)
      continue;
    weft_metrics_put(src, "peer_channels", "peer", c->peer, WEFT_METRIC_GAUGE, c->chans.count);
    weft_metrics_put(src, "peer_remote_channels", "peer", c->peer, WEFT_METRIC_GAUGE,
                     c->remote_open);
    weft_metrics_put(src, "peer_messages_sent", "peer", c->peer, WEFT_METRIC_COUNTER,
                     (double)c->m_msgs_out);
    weft_metrics_put(src, "peer_messages_received", "peer", c->peer, WEFT_METRIC_COUNTER,
                     (double)c->m_msgs_in);
    weft_metrics_put(src, "peer_bytes_sent", "peer", c->peer, WEFT_METRIC_COUNTER,
                     (double)c->m_bytes_out);
    weft_metrics_put(src, "peer_bytes_received", "peer", c->peer, WEFT_METRIC_COUNTER,
                     (double)c->m_bytes_in);
    weft_metrics_put(src, "peer_credit_stalls", "peer", c->peer, WEFT_METRIC_COUNTER,
                     (double)c->m_stalls);
  }
}

void weft__node_metrics_start(weft_node_t *n) {
  (void)weft_metrics_source_new(n->ctx, "node", n->name, collect, n, &n->metrics);
}
