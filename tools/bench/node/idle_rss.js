'use strict';
// idle_rss.js: Node.js peer of `weft-bench idle_rss`: RSS growth of the
// process (process.memoryUsage().rss) per idle worker with 8 alive. Each
// worker listens on its parentPort (which keeps it alive) and says 'ready';
// the reading is taken when the 8th 'ready' arrives, then all are terminated.
const { Worker } = require('worker_threads');
const { parseArgs, emit, repeat, nextMessage } = require('./common');

const WORKERS = 8;
const CODE = `
const { parentPort } = require('worker_threads');
parentPort.on('message', () => {});
parentPort.postMessage('ready');
`;

async function once(rep) {
  const rss0 = process.memoryUsage().rss;
  const workers = [];
  for (let i = 0; i < WORKERS; i++) workers.push(new Worker(CODE, { eval: true }));
  await Promise.all(workers.map(nextMessage));
  const rss1 = process.memoryUsage().rss;
  emit('idle_rss', rep, {
    kib_per_worker: +((rss1 - rss0) / 1024 / WORKERS).toFixed(1),
    workers: WORKERS,
    rss_kib: Math.round(rss1 / 1024),
  });
  await Promise.all(workers.map((w) => w.terminate()));
}

const args = parseArgs();
repeat(args, once);
