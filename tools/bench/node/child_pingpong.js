'use strict';
// child_pingpong.js: Node.js peer of `weft-bench child_pingpong`: round trips
// between a parent and a child_process.fork() child over IPC ('json').
// After a warm-up: p50/p99 (us) and round trips/s.
const { fork } = require('child_process');
const { parseArgs, emit, nowNs, percentile, repeat } = require('./common');

const WARMUP = 1000;

function childMain() {
  process.on('message', (m) => process.send(m));
  process.send({ op: 1 });
}

function once(n, rep) {
  return new Promise((resolve, reject) => {
    const c = fork(__filename, ['--child'], { serialization: 'json' });
    const lat = new Float64Array(n);
    let done = 0, sent = 0n, t0 = 0n, started = false;
    const ping = () => { sent = nowNs(); c.send({ op: 3, seq: done }); };
    c.on('message', () => {
      const now = nowNs();
      if (!started) { started = true; ping(); return; }
      if (done >= WARMUP) lat[done - WARMUP] = Number(now - sent) / 1e3;
      if (++done === WARMUP) t0 = now;
      if (done === WARMUP + n) {
        emit('child_pingpong', rep, {
          p50_us: +percentile(lat, 50).toFixed(2),
          p99_us: +percentile(lat, 99).toFixed(2),
          rt_per_s: Math.round(n / (Number(now - t0) / 1e9)),
          n,
        });
        c.disconnect();
        resolve();
      } else ping();
    });
    c.on('error', reject);
  });
}

if (process.argv.includes('--child')) childMain();
else {
  const args = parseArgs();
  repeat(args, (rep) => once(args.n || 20000, rep));
}
