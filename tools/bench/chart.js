'use strict';
// chart.js: an SVG chart of weft against its peers, one row per shape, from
// the JSON lines that tools/bench/run.sh and tools/bench/http.sh write.
//
//   node tools/bench/chart.js run  RESULTS.jsonl OUT.svg   (run.sh's rows, as report.js)
//   node tools/bench/chart.js http RESULTS.jsonl OUT.svg   (http.sh: vs nginx)
//
// Each row is a ratio, "times better for weft" as in the tables (>1: weft
// ahead), drawn as a bar from 1 on a log axis, with a dashed reference line
// at 1 and a mark at the row's goal where the goal is a ratio. Rows with no
// ratio (a side did not run) are left out and counted under the chart.
// Plain SVG 1.1 (presentation attributes, text labels, no script, no CSS),
// readable in any viewer. Exit status 0, 1 if the results file cannot be
// read, 2 for a bad command line.
const fs = require('fs');
const path = require('path');
const report = require(path.join(__dirname, 'node', 'report.js'));

const { fmt, median } = report;

// ---- rows ------------------------------------------------------------------

// run.sh: the rows of report.js that have a peer, as {label, ratio, goalRatio,
// met, note}.
function runPanels(lines) {
  const rows = report.computeRows(lines).filter((r) => r.peerLabel !== null).map((r) => ({
    label: `${r.label} (vs ${r.peerLabel})`,
    ratio: r.ratio,
    goalRatio: r.goalRatio,
    note: r.goal !== '-' ? `goal ${r.goal}: ${r.met}` : '',
    met: r.met,
  }));
  return [{ title: 'weft vs its peers and the machine\'s floors, same run (median ratio)', rows }];
}

// http.sh: per server (not nginx), workers and mode, req/s and CPU per
// request against nginx with the same workers and mode.
function httpPanels(lines) {
  const runs = lines.filter((l) => l.bench === 'http');
  const groups = new Map();
  for (const l of runs) {
    const key = `${l.server}\t${l.workers}\t${l.mode}`;
    if (!groups.has(key)) groups.set(key, { server: l.server, workers: l.workers, mode: l.mode, rps: [], cpu: [] });
    const g = groups.get(key);
    if (typeof l.rps === 'number') g.rps.push(l.rps);
    if (typeof l.cpu_us_per_req === 'number') g.cpu.push(l.cpu_us_per_req);
  }
  const med = (v) => (v.length ? median(v) : undefined);
  const nginx = (g) => groups.get(`nginx\t${g.workers}\t${g.mode}`);
  const rpsRows = [];
  const cpuRows = [];
  for (const g of groups.values()) {
    if (g.server === 'nginx') continue;
    const n = nginx(g);
    const label = `${g.server}, ${g.workers} worker${g.workers === 1 ? '' : 's'}, ${g.mode}`;
    const r = med(g.rps), nr = n && med(n.rps);
    rpsRows.push({ label, ratio: r > 0 && nr > 0 ? r / nr : undefined, note: r ? `${fmt(r)} req/s` : '' });
    const c = med(g.cpu), nc = n && med(n.cpu);
    const goal = g.server.startsWith('weft') && g.mode === 'close' ? 1 : undefined;
    const ratio = c > 0 && nc > 0 ? nc / c : undefined;
    cpuRows.push({
      label, ratio, goalRatio: goal,
      note: c ? `${fmt(c)} us/req` + (goal && ratio !== undefined ? (ratio >= 1 ? ': goal met' : ': goal NOT met') : '') : '',
      met: goal && ratio !== undefined ? (ratio >= 1 ? 'yes' : 'NO') : '-',
    });
  }
  return [
    { title: 'requests/s vs nginx, same workers and mode (median ratio)', rows: rpsRows },
    { title: 'server CPU per request: nginx\'s / this server\'s (>1: cheaper than nginx)', rows: cpuRows },
  ];
}

// ---- drawing ---------------------------------------------------------------

const W = 1180;
const LABEL_X = 10;       // row labels start here (left aligned)
const PLOT_X0 = 470;      // the plot's left edge
const PLOT_X1 = 850;      // and right edge; notes to the right of it
const ROW_H = 20;
const FONT = 'font-family="DejaVu Sans, Arial, Helvetica, sans-serif"';

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

function num(x) {
  return Number(x.toFixed(1));
}

// The axis: from a 1-2-5 step at or below every ratio and goal (and 1) to
// one at or above them; ticks at every step when it spans two decades or
// less, else at each decade.
const STEPS = [];
for (let k = -6; k <= 8; k++) for (const m of [1, 2, 5]) STEPS.push(m * 10 ** k);

function axis(panels) {
  let lo = 1, hi = 1;
  for (const p of panels)
    for (const r of p.rows)
      for (const v of [r.ratio, r.goalRatio])
        if (v !== undefined && v > 0) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
  const a = [...STEPS].reverse().find((s) => s <= lo / 1.15) || STEPS[0];
  const b = STEPS.find((s) => s >= hi * 1.15) || STEPS[STEPS.length - 1];
  const decadesOnly = Math.log10(b / a) > 2.01;
  const ticks = STEPS.filter((s) => s >= a * 0.999 && s <= b * 1.001 &&
    (!decadesOnly || Math.abs(Math.log10(s) - Math.round(Math.log10(s))) < 1e-9));
  return { lo: Math.log10(a), hi: Math.log10(b), ticks };
}

function tickText(v) {
  return `${v >= 1 ? v : Number(v.toPrecision(1))}x`;
}

function ratioText(x) {
  if (x >= 1) return `${fmt(x)}x`;
  return `${fmt(x)}x`;
}

function render(panels, title, source) {
  const ax = axis(panels);
  const xOf = (v) => PLOT_X0 + (Math.log10(v) - ax.lo) / (ax.hi - ax.lo) * (PLOT_X1 - PLOT_X0);
  const out = [];
  let y = 30;
  out.push(`<text x="${LABEL_X}" y="${y}" font-size="16" font-weight="bold" ${FONT}>${esc(title)}</text>`);
  y += 18;
  out.push(`<text x="${LABEL_X}" y="${y}" font-size="11" fill="#444444" ${FONT}>${esc(source)}</text>`);
  y += 16;
  out.push(`<text x="${LABEL_X}" y="${y}" font-size="11" fill="#444444" ${FONT}>` +
    'ratio = how many times better weft is (log axis, dashed line at 1x); green: ahead (and its goal met); ' +
    'red: behind, or a ratio goal (black mark) not met; orange: ahead, but an absolute goal not met</text>');
  y += 14;
  for (const panel of panels) {
    y += 24;
    out.push(`<text x="${LABEL_X}" y="${y}" font-size="13" font-weight="bold" ${FONT}>${esc(panel.title)}</text>`);
    y += 10;
    const shown = panel.rows.filter((r) => r.ratio !== undefined);
    const top = y;
    const bottom = top + shown.length * ROW_H;
    // axis: ticks, gridlines, the reference line at 1
    for (const v of ax.ticks) {
      const x = num(xOf(v));
      const one = v === 1;
      out.push(`<line x1="${x}" y1="${top}" x2="${x}" y2="${bottom}" stroke="${one ? '#000000' : '#cccccc'}" ` +
        `stroke-width="1"${one ? ' stroke-dasharray="4,3"' : ''}/>`);
      out.push(`<text x="${x}" y="${bottom + 14}" font-size="10" text-anchor="middle" ${FONT}>${tickText(v)}</text>`);
    }
    shown.forEach((r, i) => {
      const ry = top + i * ROW_H;
      // green: ahead (and any ratio goal met); red: behind, or a ratio goal
      // not met; orange: ahead of the peer but an absolute goal not met.
      const behind = r.ratio < 1 || (r.goalRatio !== undefined && r.ratio < r.goalRatio);
      const colour = behind ? '#c0392b' : r.met === 'NO' ? '#e67e22' : '#2e8b57';
      const x1 = xOf(1), xr = xOf(r.ratio);
      const bx = num(Math.min(x1, xr)), bw = num(Math.max(Math.abs(xr - x1), 1));
      const row = [`<g class="row">`,
        `<title>${esc(`${r.label}: ${ratioText(r.ratio)}${r.note ? `; ${r.note}` : ''}`)}</title>`,
        `<text x="${LABEL_X}" y="${ry + 14}" font-size="11" ${FONT}>${esc(r.label)}</text>`,
        `<rect x="${bx}" y="${ry + 4}" width="${bw}" height="${ROW_H - 8}" fill="${colour}"/>`];
      if (r.goalRatio !== undefined) {
        const gx = num(xOf(r.goalRatio));
        row.push(`<line x1="${gx}" y1="${ry + 1}" x2="${gx}" y2="${ry + ROW_H - 1}" stroke="#000000" stroke-width="2"/>`);
      }
      row.push(`<text x="${PLOT_X1 + 6}" y="${ry + 14}" font-size="11" ${FONT}>${esc(ratioText(r.ratio))}` +
        `${r.note ? `  ${esc(r.note)}` : ''}</text>`);
      row.push('</g>');
      out.push(row.join(''));
    });
    y = bottom + 18;
    const missing = panel.rows.length - shown.length;
    if (missing > 0) {
      y += 14;
      out.push(`<text x="${LABEL_X}" y="${y}" font-size="11" fill="#444444" ${FONT}>` +
        `${missing} row(s) left out: one side has no figure in this file (failed or not run)</text>`);
    }
  }
  y += 20;
  return '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}">\n` +
    `<rect x="0" y="0" width="${W}" height="${y}" fill="#ffffff"/>\n` +
    out.join('\n') + '\n</svg>\n';
}

function main(argv) {
  const [kind, file, outFile] = argv;
  if (!['run', 'http'].includes(kind) || !file || !outFile) {
    console.error('usage: node chart.js run|http RESULTS.jsonl OUT.svg');
    return 2;
  }
  let lines;
  try {
    lines = report.readLines(file);
  } catch (e) {
    console.error(`chart.js: cannot read ${file}: ${e.message}`);
    return 1;
  }
  const panels = kind === 'run' ? runPanels(lines) : httpPanels(lines);
  const title = kind === 'run' ? 'weft-bench vs Node.js, CAF, Erlang and weft-floor (tools/bench/run.sh)'
    : 'HTTP hello world: weft and Node cluster vs nginx (tools/bench/http.sh)';
  const reps = new Set(lines.map((l) => l.rep)).size;
  fs.writeFileSync(outFile, render(panels, title,
    `from ${path.basename(file)}: ${lines.length} results, ${reps} repetition(s); every ratio from figures of that file`));
  return 0;
}

module.exports = { runPanels, httpPanels, render };
if (require.main === module) process.exitCode = main(process.argv.slice(2));
