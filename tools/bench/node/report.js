'use strict';
// report.js: reads the JSON lines written by tools/bench/run.sh (weft-bench,
// its Node.js peers, the CAF and Erlang actor peers and weft-floor) and
// prints two markdown tables: the floors of the machine measured in the run,
// then per row the median over repetitions for weft and for one peer of the
// same run (Node.js, CAF, Erlang or a floor), the ratio, the goal and whether
// weft meets it. No figure comes from another machine: a peer that did not
// run leaves its cell "failed/not run".
//
// ratio is always "times better for weft": weft/peer for rates, peer/weft for
// times and sizes. usage: node report.js results.jsonl
const fs = require('fs');

// Peers: impl (and, for floors, the floor's own shape, metric and filter).
const NODE = { impl: 'node', label: 'Node' };
const PISCINA = { impl: 'node', label: 'piscina' };
const CAF = { impl: 'caf', label: 'CAF' };
const ERLANG = { impl: 'erlang', label: 'Erlang' };
const floor = (shape, metric, where, label) => ({ impl: 'floor', shape, metric, where, label });
const UV_ASYNC_GAP = floor('floor_uv_async', 'p50_us', { gap_us: 10000 }, 'uv_async, 10 ms apart');
const UV_ASYNC = floor('floor_uv_async', 'p50_us', { gap_us: 0 }, 'uv_async, back to back');
const SPSC_RT = floor('floor_spsc', 'p50_us', { mode: 'pingpong' }, 'SPSC ring round trip');
const SPSC_ONEWAY = floor('floor_spsc', 'items_per_s', { mode: 'oneway', publish: 1 },
  'SPSC ring, a release per item');
const MEMCPY = (mib) => floor('floor_memcpy', 'us_per_copy', { size_mib: mib }, `memcpy of ${mib} MiB`);

// The floors themselves (first table): label, shape, metric, filter.
const FLOORS = [
  ['uv_async ping-pong p50 us, back to back', 'floor_uv_async', 'p50_us', { gap_us: 0 }],
  ['uv_async ping-pong p50 us, 10 ms apart', 'floor_uv_async', 'p50_us', { gap_us: 10000 }],
  ['eventfd ping-pong p50 us, back to back', 'floor_eventfd', 'p50_us', { gap_us: 0 }],
  ['eventfd ping-pong p50 us, 10 ms apart', 'floor_eventfd', 'p50_us', { gap_us: 10000 }],
  ['SPSC ring round trip p50 us (spinning threads)', 'floor_spsc', 'p50_us', { mode: 'pingpong' }],
  ['SPSC ring one-way items/s, a release per item', 'floor_spsc', 'items_per_s', { mode: 'oneway', publish: 1 }],
  ['SPSC ring one-way items/s, a release per 64', 'floor_spsc', 'items_per_s', { mode: 'oneway', publish: 64 }],
  ...[1, 16, 64].map((mib) => [`memcpy ${mib} MiB us`, 'floor_memcpy', 'us_per_copy', { size_mib: mib }]),
  ['memcpy 64 MiB GiB/s', 'floor_memcpy', 'gib_per_s', { size_mib: 64 }],
];

// shape, metric, filter, label, higher-is-better, peer, goal text, goal test
// (on the medians: w weft's, p the peer's). A goal with "(absolute)" is a
// budget of its own, not a ratio: no peer figure it could be a ratio of.
// A ratio goal carries its ratio (goalRatio) for the chart (chart.js).
const ratioAtLeast = (x) => Object.assign(
  (w, p, hib) => p !== undefined && (hib ? w / p : p / w) >= x, { goalRatio: x });
const ROWS = [
  { shape: 'oneway', metric: 'msgs_per_s', label: 'oneway msgs/s', hib: true, peer: NODE,
    goal: '>= 20x Node', met: ratioAtLeast(20) },
  { shape: 'oneway', metric: 'msgs_per_s', label: 'oneway msgs/s vs the floor', hib: true, peer: SPSC_ONEWAY },
  { shape: 'pingpong', metric: 'p50_us', label: 'pingpong p50 us', hib: false, peer: NODE,
    goal: 'p50 <= Node/4', met: ratioAtLeast(4) },
  { shape: 'pingpong', metric: 'p50_us', label: 'pingpong p50 us vs the floor', hib: false, peer: SPSC_RT },
  { shape: 'pingpong', metric: 'p99_us', label: 'pingpong p99 us', hib: false, peer: NODE },
  { shape: 'pingpong', metric: 'rt_per_s', label: 'pingpong round trips/s', hib: true, peer: NODE },
  ...[1, 16, 64].flatMap((mib) => [
    { shape: 'transfer', metric: 'us_per_msg', where: { size_mib: mib, alloc: 'new' },
      label: `transfer ${mib} MiB us/msg`, hib: false, peer: NODE,
      goal: '<= 2 us (absolute)', met: (w) => w <= 2 },
    { shape: 'transfer', metric: 'us_per_msg', where: { size_mib: mib, alloc: 'new' },
      label: `transfer ${mib} MiB us/msg vs a copy`, hib: false, peer: MEMCPY(mib) }]),
  ...[1, 16, 64].map((mib) => ({
    shape: 'transfer', metric: 'us_per_msg', where: { size_mib: mib, alloc: 'wrap' },
    label: `transfer ${mib} MiB us/msg, wrapped (no allocator)`, hib: false, peer: MEMCPY(mib),
    goal: '<= 2 us (absolute)', met: (w) => w <= 2 })),
  { shape: 'spawn', metric: 'median_us', label: 'spawn -> first message, median us', hib: false,
    peer: NODE, goal: '<= 150 us (absolute)', met: (w) => w <= 150 },
  { shape: 'idle_rss', metric: 'kib_per_worker', label: 'idle worker RSS KiB (8 alive)', hib: false,
    peer: NODE, goal: '<= 64 KiB (absolute)', met: (w) => w <= 64 },
  { shape: 'idle_cpu', metric: 'cpu_pct', label: 'idle CPU, % of a core over 2 s', hib: false,
    peer: null, goal: '< 1 % (absolute)', met: (w) => w < 1 },
  { shape: 'idle_cpu', metric: 'wake_p50_us', label: 'wake a sleeping worker (10 ms apart), round trip p50 us',
    hib: false, peer: UV_ASYNC_GAP, goal: '<= 1.2x uv_async',
    met: Object.assign((w, p) => p !== undefined && w <= 1.2 * p, { goalRatio: 1 / 1.2 }) },
  { shape: 'idle_cpu', metric: 'wake_p50_us', label: 'wake a sleeping worker vs back-to-back uv_async',
    hib: false, peer: UV_ASYNC },
  { shape: 'actor_spawn', metric: 'spawns_per_s', label: 'actor spawns/s', hib: true, peer: CAF,
    goal: '>= 5x CAF', met: ratioAtLeast(5) },
  { shape: 'actor_spawn', metric: 'spawns_per_s', label: 'actor spawns/s', hib: true, peer: ERLANG },
  { shape: 'actor_spawn', metric: 'bytes_per_actor', label: 'bytes per idle actor', hib: false, peer: CAF,
    goal: '<= 256 B (absolute)', met: (w) => w <= 256 },
  { shape: 'actor_spawn', metric: 'bytes_per_actor', label: 'bytes per idle actor', hib: false, peer: ERLANG },
  { shape: 'actor_pingpong', metric: 'rt_per_s', label: 'actor ping-pong round trips/s', hib: true,
    peer: ERLANG, goal: '>= 2.5x Erlang', met: ratioAtLeast(2.5) },
  { shape: 'actor_pingpong', metric: 'rt_per_s', label: 'actor ping-pong round trips/s', hib: true, peer: CAF },
  { shape: 'actor_ring', metric: 'hops_per_s', label: 'actor ring (1000) hops/s', hib: true,
    peer: ERLANG, goal: '>= 3x Erlang', met: ratioAtLeast(3) },
  { shape: 'actor_ring', metric: 'hops_per_s', label: 'actor ring (1000) hops/s', hib: true, peer: CAF },
  { shape: 'actor_oneway', metric: 'msgs_per_s', label: 'actor 1->1 one-way msgs/s', hib: true, peer: ERLANG },
  { shape: 'actor_oneway', metric: 'msgs_per_s', label: 'actor 1->1 one-way msgs/s', hib: true, peer: CAF },
  { shape: 'child_oneway', metric: 'msgs_per_s', label: 'child process one-way msgs/s (Node fork json)',
    hib: true, peer: NODE, peerWhere: { serialization: 'json' },
    goal: '>= 10x Node', met: ratioAtLeast(10) },
  { shape: 'child_oneway', metric: 'msgs_per_s', label: 'child process one-way msgs/s (Node fork advanced)',
    hib: true, peer: NODE, peerWhere: { serialization: 'advanced' } },
  { shape: 'child_pingpong', metric: 'p50_us', label: 'child process round trip p50 us', hib: false,
    peer: NODE, goal: 'p50 <= Node/2', met: ratioAtLeast(2) },
  { shape: 'child_pingpong', metric: 'p99_us', label: 'child process round trip p99 us', hib: false,
    peer: NODE },
  { shape: 'child_transfer', metric: 'us_per_msg', label: '16 MiB buffer to a child process, us/msg',
    hib: false, peer: NODE, goal: '<= 50 us (absolute)', met: (w) => w <= 50 },
  { shape: 'child_transfer', metric: 'us_per_msg', label: '16 MiB buffer to a child process vs a copy',
    hib: false, peer: MEMCPY(16) },
  { shape: 'pool', metric: 'tasks_per_s', where: { case: 'tiny' }, label: 'pool tiny tasks/s',
    hib: true, peer: PISCINA, goal: '>= 20x piscina', met: ratioAtLeast(20) },
  { shape: 'pool', metric: 'ratio', where: { case: 'scaling' }, label: 'pool CPU-bound scaling, 2 threads / 1',
    hib: true, peer: PISCINA, goal: '>= 1.8 (absolute)', met: (w) => w >= 1.8 },
  ...[0, 1000].flatMap((gap) => ['p50_us', 'p99_us'].map((m) => ({
    shape: 'pool', metric: m, where: { case: 'latency', gap_us: gap },
    label: `pool submit-to-start ${m.slice(0, 3)} us, ${gap ? '1 ms apart' : 'back to back'}`,
    hib: false, peer: PISCINA,
    ...(gap && m === 'p50_us' ? { goal: '<= piscina', met: ratioAtLeast(1) } : {}) }))),
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
  if (a > 0 && a < 0.01) return x.toPrecision(2);
  return x.toFixed(2);
}

function pick(lines, impl, shape, metric, where = {}) {
  return lines
    .filter((l) => l.shape === shape && l.impl === impl)
    .filter((l) => Object.entries(where).every(([k, v]) => l[k] === v))
    .map((l) => l[metric])
    .filter((x) => typeof x === 'number');
}

function cell(values) {
  if (values.length === 0) return { text: 'failed/not run', med: undefined };
  const med = median(values);
  const spread = values.length > 1
    ? ` (${fmt(Math.min(...values))}-${fmt(Math.max(...values))})` : '';
  return { text: fmt(med) + spread, med };
}

function weftCell(lines, row) {
  return cell(pick(lines, 'weft', row.shape, row.metric, row.where));
}

function peerCell(lines, row) {
  const p = row.peer;
  if (p === null) return { text: '-', med: undefined };
  const c = p.impl === 'floor'
    ? cell(pick(lines, 'floor', p.shape, p.metric, p.where))
    : cell(pick(lines, p.impl, row.shape, row.metric, row.peerWhere || row.where));
  return { text: `${c.text} (${p.label})`, med: c.med };
}

function floorTable(lines) {
  const out = ['| floor (weft-floor) | median (min-max) |', '|---|---|'];
  for (const [label, shape, metric, where] of FLOORS)
    out.push(`| ${label} | ${cell(pick(lines, 'floor', shape, metric, where)).text} |`);
  return out.join('\n');
}

function readLines(file) {
  return fs.readFileSync(file, 'utf8').split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

// Every row of the table, computed: label, cells, ratio (a number or
// undefined), goal text, goalRatio (ratio goals only) and met text.
function computeRows(lines) {
  return ROWS.map((row) => {
    const w = weftCell(lines, row);
    const p = peerCell(lines, row);
    let ratio;
    if (w.med !== undefined && p.med !== undefined && w.med > 0 && p.med > 0)
      ratio = row.hib ? w.med / p.med : p.med / w.med;
    let met = '-';
    const absolute = (row.goal || '').includes('(absolute)');
    if (row.met && w.med === undefined) met = 'no (no result)';
    else if (row.met && !absolute && p.med === undefined) met = 'no (no peer figure)';
    else if (row.met) met = row.met(w.med, p.med, row.hib) ? 'yes' : 'NO';
    return { label: row.label, weft: w.text, peer: p.text, peerLabel: row.peer ? row.peer.label : null,
      ratio, goal: row.goal || '-', goalRatio: row.met ? row.met.goalRatio : undefined, met };
  });
}

function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node report.js results.jsonl');
    process.exit(2);
  }
  const lines = readLines(file);
  console.log(floorTable(lines));
  console.log('');
  const out = [
    '| shape | weft | peer (same run) | ratio | goal | met? |',
    '|---|---|---|---|---|---|',
  ];
  for (const r of computeRows(lines)) {
    const ratio = r.ratio === undefined ? '-' : `${fmt(r.ratio)}x`;
    out.push(`| ${r.label} | ${r.weft} | ${r.peer} | ${ratio} | ${r.goal} | ${r.met} |`);
  }
  console.log(out.join('\n'));
  console.log('\nratio: how many times better weft is (weft/peer for rates, peer/weft for times and sizes).');
  console.log('Cells: median over repetitions (min-max); every figure is from this results file, none from another run.');
  console.log('Goals marked (absolute) are budgets of their own; the others are ratios to a figure of this run.');
}

module.exports = { readLines, computeRows, fmt, median };
if (require.main === module) main();
