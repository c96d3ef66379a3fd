#!/usr/bin/env bash
# http.sh: HTTP hello world, side by side: examples/cluster_http (each
# balancing policy, 1 and 2 workers), Node's cluster (SCHED_RR and
# SCHED_NONE) and nginx (`return 200 "hello world\n";`, 1 and 2 worker
# processes), each with keep-alive and with `Connection: close`, measured with
# `wrk -t1 -c64 -d10s` on 127.0.0.1 (wrk itself takes about one core).
#
#   tools/bench/http.sh [--duration S] [--quick] [--only weft,node,nginx] [--processes]
#                       [--repeat R] [--workers LIST] [--modes LIST]
#
# For every run: requests/s, server CPU per request (utime+stime of the server
# and all its processes, from /proc/<pid>/stat, before and after wrk, divided
# by the requests wrk counted) and busiest/quietest worker by connections and
# by requests (from the counts each server prints when it stops; nginx prints
# none). Connections are what a balancing policy decides; requests also
# measure how the scheduler shared the CPUs among the workers (with
# keep-alive, a worker that gets less CPU serves fewer requests on the same
# connections). A table with ratios to nginx and to Node (same workers, same
# mode) ends the output.
#
#   --duration S  wrk duration (default 10)
#   --quick       --duration 3
#   --only LIST   servers to run (default weft,node,nginx)
#   --processes   weft workers as processes too (adds rows)
#   --plain       weft with --plain-accept too (adds rows: every connection
#                 through its libuv handle, no defer_accept, no on_first_data)
#   --repeat R    R rounds of every run (default 1), interleaved so that the
#                 machine's noise falls on every server alike; the table
#                 gives medians (req/s min-max too)
#   --workers L   worker counts to run (default 1,2)
#   --modes L     keepalive,close (default both)
#   --out FILE    JSON lines, one per run, go there (default
#                 $BUILD_DIR/http-<time>.jsonl); the chart goes beside it
#                 (FILE without .jsonl, .svg: tools/bench/chart.js)
#   --report FILE no runs: the table and the chart from FILE's JSON lines
# cluster_http defers the accept until the request came and answers it from
# the first read (defer_accept, on_first_data); nginx's equivalent is
# `listen ... deferred`, off by default: with Connection: close an "nginx
# deferred" row is added, nginx with it on, so that both are seen.
# Installs wrk and nginx with apt-get when missing. Builds cluster_http
# (Release) in $BUILD_DIR (default build-bench-http).
set -uo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
ROOT="$PWD"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench-http}"
DUR=10
ONLY="weft,node,nginx"
PROCS=0
PLAIN=0
REPEAT=1
WORKERS="1,2"
MODES="keepalive,close"
OUT=""
REPORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DUR="${2:?--duration needs seconds}"; shift ;;
    --quick) DUR=3 ;;
    --only) ONLY="${2:?--only needs a list}"; shift ;;
    --processes) PROCS=1 ;;
    --plain) PLAIN=1 ;;
    --repeat) REPEAT="${2:?--repeat needs a count}"; shift ;;
    --workers) WORKERS="${2:?--workers needs a list}"; shift ;;
    --modes) MODES="${2:?--modes needs a list}"; shift ;;
    --out) OUT="${2:?--out needs a file}"; shift ;;
    --report) REPORT="${2:?--report needs a file}"; shift ;;
    *) echo "usage: $0 [--duration S] [--quick] [--only weft,node,nginx] [--processes]" \
         "[--plain] [--repeat R] [--workers LIST] [--modes LIST]" >&2; exit 2 ;;
  esac
  shift
done

need() {  # need <command> <debian package>
  command -v "$1" > /dev/null 2>&1 && return 0
  echo "installing $2 ..." >&2
  (apt-get install -y -q "$2" > /dev/null 2>&1 || { apt-get update -q > /dev/null 2>&1 &&
    apt-get install -y -q "$2" > /dev/null 2>&1; }) || { echo "cannot install $2" >&2; exit 1; }
}
[ -n "$REPORT" ] || need wrk wrk
[ -n "$REPORT" ] || case ",$ONLY," in *,nginx,*) need nginx nginx-light ;; esac
case ",$ONLY," in *,node,*) need node nodejs ;; esac

TMP="$(mktemp -d /tmp/weft-http-bench.XXXXXX)"
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2> /dev/null
  [ -f "$TMP/nginx.pid" ] && kill -KILL "$(cat "$TMP/nginx.pid")" 2> /dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

if [ -z "$REPORT" ] && [[ ",$ONLY," == *,weft,* ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
    -DWEFT_BUILD_TOOLS=OFF > "$TMP/cmake.log" 2>&1 &&
    cmake --build "$BUILD_DIR" -j2 --target cluster_http > "$TMP/build.log" 2>&1 ||
    { echo "build failed: see $BUILD_DIR" >&2; cat "$TMP/cmake.log" "$TMP/build.log" >&2; exit 1; }
fi
CLUSTER_HTTP="$BUILD_DIR/examples/cluster_http"
PORT=18080
CLK_TCK="$(getconf CLK_TCK)"

# CPU ticks (utime+stime) of a process and all its descendants.
tree_ticks() {
  local root="$1" pids="$1" frontier="$1" next total=0 p
  while [ -n "$frontier" ]; do
    next=""
    for p in $frontier; do next="$next $(pgrep -P "$p" 2> /dev/null | tr '\n' ' ')"; done
    frontier="$(echo $next)"
    pids="$pids $frontier"
  done
  for p in $pids; do
    # fields after the ")" of comm: state is $3 of the whole line; utime $14, stime $15
    local stat
    stat="$(cat /proc/"$p"/stat 2> /dev/null)" || continue
    stat="${stat##*) }"
    set -- $stat
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
  : "$root"
}

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<> /dev/tcp/127.0.0.1/"$PORT") 2> /dev/null && return 0
    sleep 0.05
  done
  return 1
}

# busiest_quietest <server output> <connections|requests>: the ratio of the
# largest to the smallest per-worker count in lines "worker N: ... <count>
# <what>", or "-" (one worker, or a worker with none).
busiest_quietest() {
  grep -E '^worker [0-9]+: ' "$1" | grep -Eo "[0-9]+ $2" |
    awk '{v=$1; if (n==0||v>mx) mx=v; if (n==0||v<mn) mn=v; n++} END {if (n>1 && mn>0) printf "%.2f", mx/mn; else print "-"}'
}

# run_one <label> <workers> <mode> <start command...>: one server, one wrk run.
RESULTS="$TMP/results.tsv"
: > "$RESULTS"
if [ -n "$REPORT" ]; then # the TSV below, from the JSON lines
  OUT="$REPORT"
  node -e 'for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
    if (!l.startsWith("{")) continue; const r = JSON.parse(l); const d = (v) => (v === null ? "-" : v);
    console.log([r.server, r.workers, r.mode, r.rps, d(r.cpu_us_per_req), d(r.busiest_quietest), r.errors,
                 d(r.busiest_quietest_conns), d(r.rep)].join("\t")); }' \
    "$REPORT" > "$RESULTS" || { echo "cannot read $REPORT" >&2; exit 1; }
elif [ -z "$OUT" ]; then
  mkdir -p "$BUILD_DIR" && OUT="$BUILD_DIR/http-$(date +%Y%m%d-%H%M%S).jsonl"
fi
[ -n "$REPORT" ] || : > "$OUT"
run_one() {
  local label="$1" workers="$2" mode="$3"
  shift 3
  PORT=$((PORT + 1))
  local out="$TMP/server.out"
  "$@" > "$out" 2>&1 &
  SERVER_PID=$!
  if ! wait_port; then
    echo "$label: server did not start" >&2
    cat "$out" >&2
    kill -KILL "$SERVER_PID" 2> /dev/null
    SERVER_PID=""
    return
  fi
  sleep 0.3
  local hdr=()
  [ "$mode" = close ] && hdr=(-H "Connection: close")
  local t0 t1
  t0="$(tree_ticks "$SERVER_PID")"
  wrk -t1 -c64 -d"${DUR}s" "${hdr[@]}" "http://127.0.0.1:$PORT/" > "$TMP/wrk.out" 2>&1
  t1="$(tree_ticks "$SERVER_PID")"
  if [ -f "$TMP/nginx.pid" ]; then
    kill -QUIT "$(cat "$TMP/nginx.pid")" 2> /dev/null
  else
    kill -INT "$SERVER_PID" 2> /dev/null
  fi
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2> /dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2> /dev/null
  wait "$SERVER_PID" 2> /dev/null
  SERVER_PID=""
  rm -f "$TMP/nginx.pid"
  local rps reqs errs fair fairc cpu
  rps="$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk.out")"
  reqs="$(awk '/requests in/ {print $1}' "$TMP/wrk.out")"
  errs="$(awk '/Socket errors/ {gsub(",", ""); print $4+$6+$8+$10}' "$TMP/wrk.out")"
  errs="${errs:-0}"
  fair="$(busiest_quietest "$out" requests)"
  fairc="$(busiest_quietest "$out" connections)"
  if [ -n "$reqs" ] && [ "$reqs" -gt 0 ]; then
    cpu="$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$reqs" 'BEGIN {printf "%.2f", t / hz / r * 1e6}')"
  else
    cpu="-"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$workers" "$mode" "${rps:-0}" "$cpu" "$fair" "$errs" \
    "$fairc" "$((rep - 1))" >> "$RESULTS"
  printf '{"bench":"http","server":"%s","workers":%s,"mode":"%s","rep":%s,"rps":%s,"cpu_us_per_req":%s,"busiest_quietest":%s,"busiest_quietest_conns":%s,"errors":%s}\n' \
    "$label" "$workers" "$mode" "$((rep - 1))" "${rps:-0}" "${cpu/#-/null}" "${fair/#-/null}" "${fairc/#-/null}" "$errs" >> "$OUT"
  printf '%-28s workers=%s %-10s %10s req/s  cpu %6s us/req  busiest/quietest conns %5s reqs %5s  errors %s\n' \
    "$label" "$workers" "$mode" "${rps:-0}" "$cpu" "$fairc" "$fair" "$errs" >&2
}

nginx_conf() {  # nginx_conf <workers> [deferred]
  cat > "$TMP/nginx.conf" << EOF
worker_processes $1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$PORT${2:+ $2};
    location / { return 200 "hello world\n"; }
  }
}
EOF
}

for rep in $([ -n "$REPORT" ] || seq 1 "$REPEAT"); do
for mode in ${MODES//,/ }; do
  for w in ${WORKERS//,/ }; do
    if [[ ",$ONLY," == *,weft,* ]]; then
      for pol in round_robin least_connections reuseport shared; do
        run_one "weft $pol" "$w" "$mode" "$CLUSTER_HTTP" --workers "$w" --policy "$pol" --port $((PORT + 1))
        if [ "$PROCS" = 1 ]; then
          run_one "weft $pol processes" "$w" "$mode" "$CLUSTER_HTTP" --workers "$w" --policy "$pol" \
            --processes --port $((PORT + 1))
        fi
        if [ "$PLAIN" = 1 ]; then
          run_one "weft $pol plain-accept" "$w" "$mode" "$CLUSTER_HTTP" --workers "$w" \
            --policy "$pol" --plain-accept --port $((PORT + 1))
        fi
      done
    fi
    if [[ ",$ONLY," == *,node,* ]]; then
      for sched in rr none; do
        run_one "node cluster $sched" "$w" "$mode" env NODE_CLUSTER_SCHED_POLICY="$sched" \
          WORKERS="$w" PORT=$((PORT + 1)) node "$ROOT/tools/bench/node/cluster_http.js"
      done
    fi
    if [[ ",$ONLY," == *,nginx,* ]]; then
      PORT=$((PORT + 1))
      nginx_conf "$w"
      PORT=$((PORT - 1))
      run_one "nginx" "$w" "$mode" nginx -c "$TMP/nginx.conf" -p "$TMP"
      if [ "$mode" = close ]; then
        PORT=$((PORT + 1))
        nginx_conf "$w" deferred
        PORT=$((PORT - 1))
        run_one "nginx deferred" "$w" "$mode" nginx -c "$TMP/nginx.conf" -p "$TMP"
      fi
    fi
  done
done
done

echo
echo "## HTTP hello world: wrk -t1 -c64 -d${DUR}s, 127.0.0.1 ($(nproc) CPUs), median of $REPEAT round(s)"
echo
echo "| server | workers | mode | req/s (min-max) | vs nginx | vs node rr | CPU us/req (min-max) | CPU vs nginx | busiest/quietest conns | busiest/quietest reqs | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' '
  function med(list,   n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    if (n == 0) return "-"
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  function lo(list,   n, v, i, m) { n = split(list, v, " "); m = v[1]; for (i = 2; i <= n; i++) if (v[i] + 0 < m + 0) m = v[i]; return m }
  function hi(list,   n, v, i, m) { n = split(list, v, " "); m = v[1]; for (i = 2; i <= n; i++) if (v[i] + 0 > m + 0) m = v[i]; return m }
  {
    k = $1 "\t" $2 "\t" $3
    if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
    rps[k] = rps[k] " " $4
    if ($5 != "-") cpu[k] = cpu[k] " " $5
    if ($6 != "-") fair[k] = fair[k] " " $6
    if ($8 != "" && $8 != "-") fairc[k] = fairc[k] " " $8
    if ($5 != "-" && $9 != "" && $9 != "-") { rc[$1 "\t" $2 "\t" $3 "\t" $9] = $5; reps[$9] = 1 }
    err[k] += $7
  }
  END {
    for (i = 1; i <= nk; i++) {
      k = order[i]; split(k, f, "\t"); m[k] = med(rps[k])
      if (f[1] == "nginx") ng[f[2] "," f[3]] = m[k]
      if (f[1] == "node cluster rr") nd[f[2] "," f[3]] = m[k]
    }
    for (i = 1; i <= nk; i++) {
      k = order[i]; split(k, f, "\t"); w = f[2] "," f[3]
      a = (w in ng && ng[w] > 0) ? sprintf("%.2f", m[k] / ng[w]) : "-"
      b = (w in nd && nd[w] > 0) ? sprintf("%.2f", m[k] / nd[w]) : "-"
      c = (k in cpu) ? sprintf("%.2f (%.2f-%.2f)", med(cpu[k]), lo(cpu[k]), hi(cpu[k])) : "-"
      # CPU vs nginx: per round, the CPU of this server over that of nginx in the same
      # round (same workers and mode); the median (min-max) of those ratios
      rl = ""
      for (r in reps) {
        kr = k "\t" r; nr = "nginx\t" f[2] "\t" f[3] "\t" r
        if ((kr in rc) && (nr in rc) && rc[nr] > 0) rl = rl " " sprintf("%.3f", rc[kr] / rc[nr])
      }
      cr = rl != "" ? sprintf("%.2f (%.2f-%.2f)", med(rl), lo(rl), hi(rl)) : "-"
      fr = (k in fair) ? sprintf("%.2f", med(fair[k])) : "-"
      fc = (k in fairc) ? sprintf("%.2f", med(fairc[k])) : "-"
      printf "| %s | %s | %s | %.0f (%.0f-%.0f) | %s | %s | %s | %s | %s | %s | %d |\n", f[1], f[2], f[3], m[k], lo(rps[k]), hi(rps[k]), a, b, c, cr, fc, fr, err[k]
    }
  }' "$RESULTS"
# The chart: ratios to nginx per server, workers and mode (tools/bench/chart.js).
if command -v node > /dev/null && node "$ROOT/tools/bench/chart.js" http "$OUT" "${OUT%.jsonl}.svg"; then
  echo; echo "JSON lines: $OUT; chart: ${OUT%.jsonl}.svg"
fi
