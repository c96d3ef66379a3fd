'use strict';
// chart_test.js: ctest bench_chart. chart.js renders run_fixture.jsonl and
// http_fixture.jsonl into OUTDIR; each SVG must be well-formed XML (xmllint,
// else python3's parser; neither: exit 77, skipped), plain SVG 1.1 (no
// script, style or foreign objects), and have exactly one row per shape of
// the fixture that has a ratio, each with its label, a bar and a ratio.
// Also: run.sh --report and http.sh --report draw it beside their file; an
// unreadable results file exits 1, a bad command line 2.
//
//   node tools/bench/chart_test.js OUTDIR
const fs = require('fs');
const path = require('path');
const { execFileSync, spawnSync } = require('child_process');
const report = require(path.join(__dirname, 'node', 'report.js'));

const CHART = path.join(__dirname, 'chart.js');
let failures = 0;

function fail(what) {
  console.error(`FAIL: ${what}`);
  failures++;
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

// Well-formed XML: 0 yes, 1 no, 77 no checker here.
function wellFormed(file) {
  const x = spawnSync('xmllint', ['--noout', file], { encoding: 'utf8' });
  if (!x.error) {
    if (x.status !== 0) console.error(x.stderr);
    return x.status === 0 ? 0 : 1;
  }
  const p = spawnSync('python3', ['-c', 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])', file],
    { encoding: 'utf8' });
  if (!p.error) {
    if (p.status !== 0) console.error(p.stderr);
    return p.status === 0 ? 0 : 1;
  }
  return 77;
}

// The rows a fixture must give: their labels, computed from the fixture.
function expectedRun(lines) {
  return report.computeRows(lines).filter((r) => r.peerLabel !== null && r.ratio !== undefined)
    .map((r) => `${r.label} (vs ${r.peerLabel})`);
}

function expectedHttp(lines) {
  const key = (l) => `${l.server}\t${l.workers}\t${l.mode}`;
  const nginx = new Set(lines.filter((l) => l.server === 'nginx').map((l) => `${l.workers}\t${l.mode}`));
  const labels = [];
  const seen = new Set();
  for (const l of lines)
    if (l.server !== 'nginx' && !seen.has(key(l)) && nginx.has(`${l.workers}\t${l.mode}`)) {
      seen.add(key(l));
      labels.push(`${l.server}, ${l.workers} worker${l.workers === 1 ? '' : 's'}, ${l.mode}`);
    }
  return [...labels, ...labels]; // two panels: req/s and CPU per request
}

function check(kind, fixture, expected, outDir) {
  const out = path.join(outDir, `chart_${kind}.svg`);
  fs.rmSync(out, { force: true });
  execFileSync(process.execPath, [CHART, kind, fixture, out], { stdio: 'inherit' });
  const wf = wellFormed(out);
  if (wf === 77) return 77;
  if (wf !== 0) fail(`${out} is not well-formed XML`);
  const svg = fs.readFileSync(out, 'utf8');
  if (!/^<\?xml version="1.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg" version="1.1" /.test(svg))
    fail(`${kind}: not an SVG 1.1 document with its namespace`);
  if (/<(script|style|foreignObject)\b/.test(svg)) fail(`${kind}: script, style or foreignObject in the SVG`);
  const rows = svg.split('<g class="row">').slice(1).map((r) => r.slice(0, r.indexOf('</g>')));
  if (expected.length === 0) fail(`${kind}: the fixture gives no row at all`);
  if (rows.length !== expected.length)
    fail(`${kind}: ${rows.length} rows in the chart, the fixture has ${expected.length} shapes with a ratio`);
  expected.forEach((label, i) => {
    const r = rows[i] || '';
    if (!r.includes(`>${esc(label)}</text>`)) fail(`${kind}: row ${i} is not labelled "${label}"`);
    if (!/<rect [^>]*width="[0-9.]+"/.test(r)) fail(`${kind}: row ${i} ("${label}") has no bar`);
    if (!/>[0-9.]+[kM]?x/.test(r)) fail(`${kind}: row ${i} ("${label}") has no ratio text`);
  });
  console.log(`${kind}: ${rows.length} rows, ${svg.length} bytes: ${out}`);
  return 0;
}

function main() {
  const outDir = process.argv[2];
  if (!outDir) {
    console.error('usage: node chart_test.js OUTDIR');
    return 2;
  }
  fs.mkdirSync(outDir, { recursive: true });
  const runFix = path.join(__dirname, 'run_fixture.jsonl');
  const httpFix = path.join(__dirname, 'http_fixture.jsonl');
  for (const [kind, fix, exp] of [['run', runFix, expectedRun], ['http', httpFix, expectedHttp]])
    if (check(kind, fix, exp(report.readLines(fix)), outDir) === 77) {
      console.error('neither xmllint nor python3: cannot check the SVG is well-formed');
      return 77;
    }
  // run.sh --report and http.sh --report draw the chart beside the file too.
  for (const [script, fix, header] of [['run.sh', runFix, '| shape | weft |'], ['http.sh', httpFix, '| server | workers |']]) {
    const copy = path.join(outDir, `report_${script.replace('.sh', '')}.jsonl`);
    const svg = copy.replace(/\.jsonl$/, '.svg');
    fs.copyFileSync(fix, copy);
    fs.rmSync(svg, { force: true });
    const r = spawnSync('bash', [path.join(__dirname, script), '--report', copy], { encoding: 'utf8' });
    if (r.status !== 0) fail(`${script} --report: exit ${r.status}: ${r.stderr}`);
    if (!r.stdout.includes(header)) fail(`${script} --report printed no table`);
    if (!fs.existsSync(svg) || !fs.readFileSync(svg, 'utf8').includes('<g class="row">'))
      fail(`${script} --report drew no chart at ${svg}`);
  }
  const missing = spawnSync(process.execPath, [CHART, 'run', path.join(outDir, 'no-such.jsonl'),
    path.join(outDir, 'x.svg')]);
  if (missing.status !== 1) fail(`a missing results file: exit ${missing.status}, want 1`);
  const bad = spawnSync(process.execPath, [CHART, 'pie', runFix, path.join(outDir, 'x.svg')]);
  if (bad.status !== 2) fail(`an unknown chart kind: exit ${bad.status}, want 2`);
  return failures ? 1 : 0;
}

process.exitCode = main();
