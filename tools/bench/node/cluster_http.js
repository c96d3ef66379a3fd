// cluster_http.js: Node's cluster peer of examples/cluster_http.c for
// tools/bench/http.sh. HTTP/1.1 "hello world" (Content-Length: 12) on
// 127.0.0.1:PORT across WORKERS workers; the scheduling policy comes from
// NODE_CLUSTER_SCHED_POLICY (rr or none). On SIGINT/SIGTERM the primary asks
// every worker for its request count, prints "worker i: N requests" lines and
// exits.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const workers = Number(process.env.WORKERS || 2);
const port = Number(process.env.PORT || 8081);

if (cluster.isPrimary) {
  const counts = new Map();
  for (let i = 0; i < workers; i++) {
    const w = cluster.fork();
    w.on('message', (m) => {
      if (m && typeof m.count === 'number') counts.set(w.id, m.count);
      if (counts.size === workers) finish();
    });
  }
  let finishing = false;
  const stop = () => {
    if (finishing) return;
    finishing = true;
    for (const w of Object.values(cluster.workers)) w.send('report');
    setTimeout(finish, 3000).unref();
  };
  let done = false;
  function finish() {
    if (done) return;
    done = true;
    let i = 0;
    for (const n of counts.values()) console.log(`worker ${i++}: ${n} requests`);
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  }
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  console.log(`node cluster: ${workers} workers, policy ${cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none'}, port ${port}`);
} else {
  let n = 0;
  http.createServer((req, res) => {
    n++;
    res.writeHead(200, { 'Content-Length': 12 });
    res.end('hello world\n');
  }).listen(port, '127.0.0.1');
  process.on('message', (m) => { if (m === 'report') process.send({ count: n }); });
  process.on('SIGINT', () => {});  // the primary decides
}
