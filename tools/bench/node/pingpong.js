'use strict';
// pingpong.js: Node.js peer of `weft-bench pingpong`: the main thread posts
// {op, seq} to a worker, which posts it back on its parentPort; the next ping
// leaves when the pong arrives. After a warm-up: p50/p99 round trip (us) and
// round trips/s.
const { Worker, isMainThread, parentPort } = require('worker_threads');
const { parseArgs, emit, nowNs, percentile, repeat, nextMessage } = require('./common');

const WARMUP = 2000;

function workerMain() {
  parentPort.on('message', (m) => parentPort.postMessage(m));
  parentPort.postMessage({ op: 1 });
}

function pingAll(w, n) {
  return new Promise((resolve) => {
    const lat = new Float64Array(n);
    let done = 0;
    let sent = 0n;
    let t0 = 0n;
    const ping = () => {
      sent = nowNs();
      w.postMessage({ op: 3, seq: done });
    };
    w.on('message', () => {
      const now = nowNs();
      if (done >= WARMUP) lat[done - WARMUP] = Number(now - sent) / 1e3;
      if (++done === WARMUP) t0 = now;
      if (done === WARMUP + n) resolve({ lat, secs: Number(now - t0) / 1e9 });
      else ping();
    });
    ping();
  });
}

async function once(n, rep) {
  const w = new Worker(__filename);
  await nextMessage(w);
  const { lat, secs } = await pingAll(w, n);
  emit('pingpong', rep, {
    p50_us: +percentile(lat, 50).toFixed(2),
    p99_us: +percentile(lat, 99).toFixed(2),
    rt_per_s: Math.round(n / secs),
    n,
  });
  await w.terminate();
}

if (isMainThread) {
  const args = parseArgs();
  repeat(args, (rep) => once(args.n || 30000, rep));
} else {
  workerMain();
}
