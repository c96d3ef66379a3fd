'use strict';
// pool_piscina.js: Node.js peer of `weft-bench pool`: the same three cases
// with piscina (npm; `npm install` in this directory):
//   tiny     N tasks ({a, b}) => a + b through a pool of T threads, at most
//            WINDOW outstanding (weft's max_queue); tasks/s
//   scaling  M CPU-bound tasks (count the primes below P) on 1 thread, then
//            on 2, three rounds interleaved; the best tasks/s of each and the
//            ratio
//   latency  one task at a time; the task returns process.hrtime.bigint() at
//            its start (CLOCK_MONOTONIC, the clock uv_hrtime reads);
//            submit-to-start p50/p99 back to back (gap_us 0) and with a 1 ms
//            pause before each submission (gap_us 1000: the thread has gone
//            to sleep)
// One JSON line per result: {"shape":"pool","impl":"node","case":...}.
// Usage: node pool_piscina.js [--n N] [--repeat R]   (N: tiny tasks, default 200k)
const { isMainThread } = require('worker_threads');
const os = require('os');

function countPrimes(n) {
  let k = 0;
  for (let i = 2; i < n; i++) {
    let prime = true;
    if (i % 2 === 0) prime = i === 2;
    else for (let d = 3; d * d <= i; d += 2) if (i % d === 0) { prime = false; break; }
    if (prime) k++;
  }
  return k;
}

if (!isMainThread) {
  // The worker side: piscina calls this with each task.
  module.exports = (t) => {
    if (t.op === 'add') return t.a + t.b;
    if (t.op === 'primes') return countPrimes(t.p);
    return process.hrtime.bigint(); // 'start'
  };
  return;
}

const { Piscina } = require('piscina');
const { parseArgs, emit, percentile, repeat } = require('./common');

const WINDOW = 4096;
const PRIMES_BELOW = 150000;
const SCALING_TASKS = 200;
const SCALING_ROUNDS = 3;

function threads() {
  return os.availableParallelism ? os.availableParallelism() : os.cpus().length;
}

function newPool(n) {
  return new Piscina({ filename: __filename, minThreads: n, maxThreads: n, idleTimeout: 60000 });
}

async function warm(pool, n) {
  const all = [];
  for (let i = 0; i < n; i++) all.push(pool.run({ op: 'add', a: i, b: 1 }));
  await Promise.all(all);
}

// Runs n tasks made by make(i), at most `window` outstanding; resolves with seconds.
function runWindowed(pool, n, window, make, check) {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let done = 0;
    const t0 = process.hrtime.bigint();
    const next = () => {
      while (sent < n && sent - done < window) {
        const i = sent++;
        pool.run(make(i)).then((v) => {
          check(i, v);
          if (++done === n) resolve(Number(process.hrtime.bigint() - t0) / 1e9);
          else next();
        }, reject);
      }
    };
    next();
  });
}

async function tiny(rep, n) {
  const t = threads();
  const pool = newPool(t);
  await warm(pool, 10000);
  let bad = 0;
  const secs = await runWindowed(pool, n, WINDOW, (i) => ({ op: 'add', a: i, b: 1 }),
    (i, v) => { if (v !== i + 1) bad++; });
  if (bad) throw new Error(`tiny: ${bad} wrong sums`);
  emit('pool', rep, { case: 'tiny', threads: t, tasks_per_s: Math.round(n / secs), n });
  await pool.destroy();
}

async function scalingOnce(nthreads) {
  const pool = newPool(nthreads);
  await warm(pool, 100);
  const want = countPrimes(PRIMES_BELOW);
  const secs = await runWindowed(pool, SCALING_TASKS, 64, () => ({ op: 'primes', p: PRIMES_BELOW }),
    (i, v) => { if (v !== want) throw new Error('scaling: wrong count'); });
  await pool.destroy();
  return SCALING_TASKS / secs;
}

// 1 thread, 2 threads, SCALING_ROUNDS times interleaved; the best of each.
async function scaling(rep) {
  let one = 0;
  let two = 0;
  for (let round = 0; round < SCALING_ROUNDS; round++) {
    one = Math.max(one, await scalingOnce(1));
    two = Math.max(two, await scalingOnce(2));
  }
  emit('pool', rep, {
    case: 'scaling', primes_below: PRIMES_BELOW, tasks: SCALING_TASKS, rounds: SCALING_ROUNDS,
    tasks_per_s_1: +one.toFixed(1), tasks_per_s_2: +two.toFixed(1), ratio: +(two / one).toFixed(3),
  });
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

async function latency(rep, n, gapUs) {
  const pool = newPool(threads());
  await warm(pool, 1000);
  const lat = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (gapUs) await pause(gapUs / 1000);
    const t0 = process.hrtime.bigint();
    const start = await pool.run({ op: 'start' });
    lat[i] = Number(start - t0) / 1e3;
  }
  emit('pool', rep, {
    case: 'latency', gap_us: gapUs, p50_us: +percentile(lat, 50).toFixed(2),
    p99_us: +percentile(lat, 99).toFixed(2), n,
  });
  await pool.destroy();
}

const args = parseArgs();
repeat(args, async (rep) => {
  await tiny(rep, args.n || 200000);
  await scaling(rep);
  await latency(rep, 20000, 0);
  await latency(rep, 1000, 1000);
});
