'use strict';
// spawn.js: Node.js peer of `weft-bench spawn`: new Worker(), then the time
// until its first message reaches the parent; the worker posts it at once and
// has nothing else to do, so it exits. Workers are started one after another
// (the next one after the previous 'exit'). Median and p90 us to the first
// message, median us to 'exit'.
const { Worker } = require('worker_threads');
const { parseArgs, emit, nowNs, percentile, repeat } = require('./common');

const WARMUP = 2;
const CODE = "require('worker_threads').parentPort.postMessage(1);";

function spawnOne() {
  return new Promise((resolve, reject) => {
    const t0 = nowNs();
    let first = -1;
    const w = new Worker(CODE, { eval: true });
    w.once('message', () => {
      first = Number(nowNs() - t0) / 1e3;
    });
    w.once('error', reject);
    w.once('exit', (code) => {
      if (first < 0 || code !== 0) reject(new Error(`spawn: first=${first} code=${code}`));
      else resolve({ first, exit: Number(nowNs() - t0) / 1e3 });
    });
  });
}

async function once(n, rep) {
  const first = [];
  const exit = [];
  for (let i = 0; i < WARMUP + n; i++) {
    const r = await spawnOne();
    if (i < WARMUP) continue;
    first.push(r.first);
    exit.push(r.exit);
  }
  emit('spawn', rep, {
    median_us: +percentile(first, 50).toFixed(1),
    p90_us: +percentile(first, 90).toFixed(1),
    exit_median_us: +percentile(exit, 50).toFixed(1),
    n,
  });
}

const args = parseArgs();
repeat(args, (rep) => once(args.n || 100, rep));
