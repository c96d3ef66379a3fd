'use strict';
// report.js: reads the JSON lines written by tools/bench/run.sh (weft-bench
// and the Node.js peers) and prints the markdown comparison table: per row,
// the median over repetitions for weft and for its peer (Node.js, or a
// reference constant measured once on another machine of this kind for the
// actor shapes, which have no Node.js peer), the ratio, the goal and whether weft
// meets it.
//
// ratio is always "times better for weft": weft/peer for rates, peer/weft for
// times and sizes. usage: node report.js results.jsonl
const fs = require('fs');

// Reference figures (another machine of this kind, 2 scheduler threads): the
// best of CAF and Erlang.
const REF = {
  actor_spawn_rate: { v: 0.44e6, label: 'CAF' },
  actor_bytes: { v: 1225, label: 'CAF' },
  actor_pingpong: { v: 2.0e6, label: 'Erlang' },
  actor_ring: { v: 3.7e6, label: 'Erlang' },
  uv_async_rt: { v: 66, label: 'uv_async ping-pong' },
};

// shape, metric, filter, label, unit, higher-is-better, goal text, goal test,
// peer: 'node' or a REF key or null.
const ROWS = [
  { shape: 'oneway', metric: 'msgs_per_s', label: 'oneway msgs/s', hib: true, peer: 'node',
    goal: '>= 20x Node', met: (w, p) => p && w / p >= 20 },
  { shape: 'pingpong', metric: 'p50_us', label: 'pingpong p50 us', hib: false, peer: 'node',
    goal: 'p50 <= Node/4', met: (w, p) => p && p / w >= 4 },
  { shape: 'pingpong', metric: 'p99_us', label: 'pingpong p99 us', hib: false, peer: 'node' },
  { shape: 'pingpong', metric: 'rt_per_s', label: 'pingpong round trips/s', hib: true, peer: 'node' },
  ...[1, 16, 64].map((mib) => ({
    shape: 'transfer', metric: 'us_per_msg', where: { size_mib: mib, alloc: 'new' },
    label: `transfer ${mib} MiB us/msg`, hib: false, peer: 'node',
    goal: '<= 2 us', met: (w) => w <= 2 })),
  ...[1, 16, 64].map((mib) => ({
    shape: 'transfer', metric: 'us_per_msg', where: { size_mib: mib, alloc: 'wrap' },
    label: `transfer ${mib} MiB us/msg, wrapped (no allocator)`, hib: false, peer: null,
    goal: '<= 2 us', met: (w) => w <= 2 })),
  { shape: 'spawn', metric: 'median_us', label: 'spawn -> first message, median us', hib: false,
    peer: 'node', goal: '<= 150 us', met: (w) => w <= 150 },
  { shape: 'idle_rss', metric: 'kib_per_worker', label: 'idle worker RSS KiB (8 alive)', hib: false,
    peer: 'node', goal: '<= 64 KiB', met: (w) => w <= 64 },
  { shape: 'idle_cpu', metric: 'cpu_pct', label: 'idle CPU, % of a core over 2 s', hib: false,
    peer: null, goal: '< 1 %', met: (w) => w < 1 },
  { shape: 'idle_cpu', metric: 'wake_p50_us', label: 'wake a sleeping worker, round trip p50 us',
    hib: false, peer: 'uv_async_rt' },
  { shape: 'actor_spawn', metric: 'spawns_per_s', label: 'actor spawns/s', hib: true,
    peer: 'actor_spawn_rate', goal: '>= 2M/s', met: (w) => w >= 2e6 },
  { shape: 'actor_spawn', metric: 'bytes_per_actor', label: 'bytes per idle actor', hib: false,
    peer: 'actor_bytes', goal: '<= 256 B', met: (w) => w <= 256 },
  { shape: 'actor_pingpong', metric: 'rt_per_s', label: 'actor ping-pong round trips/s', hib: true,
    peer: 'actor_pingpong', goal: '>= 5M/s', met: (w) => w >= 5e6 },
  { shape: 'actor_ring', metric: 'hops_per_s', label: 'actor ring (1000) hops/s', hib: true,
    peer: 'actor_ring', goal: '>= 10M/s', met: (w) => w >= 10e6 },
  { shape: 'child_oneway', metric: 'msgs_per_s', label: 'child process one-way msgs/s (Node fork json)',
    hib: true, peer: 'node', peerWhere: { serialization: 'json' },
    goal: '>= 10x Node', met: (w, p) => p && w / p >= 10 },
  { shape: 'child_oneway', metric: 'msgs_per_s', label: 'child process one-way msgs/s (Node fork advanced)',
    hib: true, peer: 'node', peerWhere: { serialization: 'advanced' } },
  { shape: 'child_pingpong', metric: 'p50_us', label: 'child process round trip p50 us', hib: false,
    peer: 'node', goal: 'p50 <= Node/2', met: (w, p) => p && p / w >= 2 },
  { shape: 'child_pingpong', metric: 'p99_us', label: 'child process round trip p99 us', hib: false,
    peer: 'node' },
  { shape: 'child_transfer', metric: 'us_per_msg', label: '16 MiB buffer to a child process, us/msg',
    hib: false, peer: 'node', goal: '<= 50 us', met: (w) => w <= 50 },
  { shape: 'pool', metric: 'tasks_per_s', where: { case: 'tiny' }, label: 'pool tiny tasks/s (vs piscina)',
    hib: true, peer: 'node', goal: '>= 20x piscina', met: (w, p) => p && w / p >= 20 },
  { shape: 'pool', metric: 'ratio', where: { case: 'scaling' }, label: 'pool CPU-bound scaling, 2 threads / 1',
    hib: true, peer: 'node', goal: '>= 1.8', met: (w) => w >= 1.8 },
  ...[0, 1000].flatMap((gap) => ['p50_us', 'p99_us'].map((m) => ({
    shape: 'pool', metric: m, where: { case: 'latency', gap_us: gap },
    label: `pool submit-to-start ${m.slice(0, 3)} us, ${gap ? '1 ms apart' : 'back to back'}`,
    hib: false, peer: 'node' }))),
];

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(x) {
  if (x === undefined || x === null || Number.isNaN(x)) return '-';
  const a = Math.abs(x);
  if (a >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function pick(lines, impl, row) {
  const where = (impl === 'node' && row.peerWhere) || row.where || {};
  return lines
    .filter((l) => l.shape === row.shape && l.impl === impl)
    .filter((l) => Object.entries(where).every(([k, v]) => l[k] === v))
    .map((l) => l[row.metric])
    .filter((x) => typeof x === 'number');
}

function cell(values) {
  if (values.length === 0) return { text: 'failed/not run', med: undefined };
  const med = median(values);
  const spread = values.length > 1
    ? ` (${fmt(Math.min(...values))}-${fmt(Math.max(...values))})` : '';
  return { text: fmt(med) + spread, med };
}

function peerCell(lines, row) {
  if (row.peer === null) return { text: '-', med: undefined };
  if (row.peer === 'node') return cell(pick(lines, 'node', row));
  const ref = REF[row.peer];
  return { text: `${fmt(ref.v)} (${ref.label}, a figure from another machine of this kind, not this run)`, med: ref.v };
}

function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node report.js results.jsonl');
    process.exit(2);
  }
  const lines = fs.readFileSync(file, 'utf8').split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  const out = [
    '| shape | weft | node (or reference) | ratio | goal | met? |',
    '|---|---|---|---|---|---|',
  ];
  for (const row of ROWS) {
    const w = cell(pick(lines, 'weft', row));
    const p = peerCell(lines, row);
    let ratio = '-';
    if (w.med !== undefined && p.med !== undefined && w.med > 0 && p.med > 0)
      ratio = `${fmt(row.hib ? w.med / p.med : p.med / w.med)}x`;
    let met = '-';
    if (row.met) met = w.med === undefined ? 'no (no result)' : row.met(w.med, p.med) ? 'yes' : 'NO';
    out.push(`| ${row.label} | ${w.text} | ${p.text} | ${ratio} | ${row.goal || '-'} | ${met} |`);
  }
  console.log(out.join('\n'));
  console.log('\nratio: how many times better weft is (weft/peer for rates, peer/weft for times and sizes).');
  console.log('Cells: median over repetitions (min-max).');
}

main();
