#!/usr/bin/env bash
# dist.sh: the benchmarks of services across machines, side by side, with
# ratios and the goals of issue 12, all on 127.0.0.1:
#
#  1. steady: examples/dist_gateway's front (2 worker threads) + 2 back ends
#     vs nginx (2 worker processes) as a reverse proxy to an `upstream` of 2
#     weft-http-backend processes (tools/bench/http_backend.c: the same
#     SHA-256 work per request as a dist_gateway back end, over plain HTTP),
#     `proxy_next_upstream error timeout`, keep-alive to the upstreams. The
#     same wrk keep-alive load on both: req/s (goal >= nginx's) and p99
#     (goal <= nginx's).
#  2. kill: the same load while one back end is SIGKILLed every 2 s for 20 s
#     (b1, b2, b1, ... each restarted at once on its port): failed requests
#     (wrk's non-2xx + socket errors; goal for weft 0, GETs are idempotent)
#     beside nginx's.
#  3. service: weft-bench service_pingpong (weft_service_call to a provider
#     on another node, one at a time) vs Erlang gen_server:call to a
#     gen_server on another node (tools/bench/erlang/dist.sh
#     service_pingpong): p50 (goal weft <= Erlang), beside weft-bench
#     remote_pingpong (a bare message round trip across nodes, the
#     transport the service rides on): the service's own cost is their
#     ratio (goal <= 1.10). Both weft shapes run again as weft-nng
#     (WEFT_BENCH_TRANSPORT=nng: nng's transport instead of the node's loop).
#
#   tools/bench/dist.sh [--quick] [--service-only] [--repeat R] [--duration S]
#                       [--connections C] [--work N] [--n N] [--out FILE]
#   tools/bench/dist.sh --report FILE   # the table again, from a results file
#
#   --quick          1 repetition, 3 s steady runs, 10 s of kills (5 kills)
#   --service-only   only the service shapes (3.): no HTTP, no nginx or wrk
#   --n N            service shapes: round trips per run (default 20000)
#   --repeat R       repetitions (default 3), the order of weft and its peer
#                    reversed on every other one; medians with (min-max)
#   --duration S     steady wrk duration (default 10)
#   --connections C  wrk connections (default 32; wrk -t1)
#   --work N         SHA-256 rounds per request in every back end (default
#                    1000, dist_gateway's default)
#   --out FILE       JSON lines (default $BUILD_DIR/dist-<time>.jsonl); the
#                    servers' and runs' output goes to FILE.log
#
# Installs what a fresh Debian 12 lacks (wrk, nginx-light, erlang-base,
# libhttp-parser-dev) with apt-get and builds dist_gateway, weft-bench and
# weft-http-backend (Release) in $BUILD_DIR (default build-bench). Every
# process it starts is stopped by its pid (trap on exit); back ends die with
# this script (dist_gateway --die-with-parent). Every run is bounded (wrk's
# duration; waits for readiness give up after 15 s; the service runs after
# $RUN_TIMEOUT s, default 300). Exit status: 0 if every run succeeded, 1 if
# one failed (the table still prints), 2 for a bad command line.
set -uo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
ROOT="$PWD"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
QUICK=0
REPEAT=3
DUR=10
KILL_S=20
KILL_EVERY=2
CONNS=32
WORK=1000
SVC_N=20000
SVC_ONLY=0
OUT=""
REPORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPEAT=1; DUR=3; KILL_S=10; SVC_N=3000 ;;
    --service-only) SVC_ONLY=1 ;;
    --n) SVC_N="${2:?--n needs a count}"; shift ;;
    --repeat) REPEAT="${2:?--repeat needs a count}"; shift ;;
    --duration) DUR="${2:?--duration needs seconds}"; shift ;;
    --connections) CONNS="${2:?--connections needs a count}"; shift ;;
    --work) WORK="${2:?--work needs a count}"; shift ;;
    --out) OUT="${2:?--out needs a file}"; shift ;;
    --report) REPORT="${2:?--report needs a file}"; shift ;;
    -h|--help) sed -n '2,49p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dist.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$REPEAT" "$DUR" "$CONNS" "$WORK" "$SVC_N"; do
  case "$v" in ''|*[!0-9]*|0) echo "dist.sh: counts and durations are integers > 0" >&2; exit 2 ;; esac
done

say() { printf '==> %s\n' "$*" >&2; }

# ---- the table ------------------------------------------------------------------

report() {
  awk '
    function num(line, key,   re) {
      re = "\"" key "\":-?[0-9.]+"
      if (!match(line, re)) return ""
      return substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0
    }
    function str(line, key,   re) {
      re = "\"" key "\":\"[^\"]*\""
      if (!match(line, re)) return ""
      return substr(line, RSTART + length(key) + 4, RLENGTH - length(key) - 5)
    }
    function add(row, impl, v) { if (v != "") vals[row, impl] = vals[row, impl] " " v }
    function med(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function lo(list,   n, v, i, m) { n = split(list, v, " "); m = v[1]; for (i = 2; i <= n; i++) if (v[i] + 0 < m + 0) m = v[i]; return m }
    function hi(list,   n, v, i, m) { n = split(list, v, " "); m = v[1]; for (i = 2; i <= n; i++) if (v[i] + 0 > m + 0) m = v[i]; return m }
    function fmt(x) { if (x == int(x)) return sprintf("%d", x); return x >= 1e4 ? sprintf("%.0f", x) : x >= 100 ? sprintf("%.0f", x) : x >= 10 ? sprintf("%.1f", x) : sprintf("%.2f", x) }
    function cell(row, impl,   l) {
      l = vals[row, impl]
      if (l == "") return ((row, impl) in why) ? why[row, impl] : "-"
      if (split(l, tmp, " ") == 1) return fmt(med(l))
      return fmt(med(l)) " (" fmt(lo(l)) "-" fmt(hi(l)) ")"
    }
    {
      b = str($0, "bench"); impl = str($0, "impl"); miss = str($0, "missing")
      if (b == "" && str($0, "shape") == "service_pingpong") b = "service"
      if (b == "" && str($0, "shape") == "remote_pingpong") { add("port", impl, num($0, "p50_us")); next }
      if (b == "") next
      if (miss != "") {
        if (b == "steady") { why["rps", impl] = miss; why["p99", impl] = miss; why["p50", impl] = miss }
        if (b == "kill") { why["failed", impl] = miss; why["krps", impl] = miss }
        if (b == "service") why["svc", impl] = miss
        next
      }
      if (b == "steady") { add("rps", impl, num($0, "rps")); add("p50", impl, num($0, "p50_ms")); add("p99", impl, num($0, "p99_ms")) }
      if (b == "kill") { add("failed", impl, num($0, "failed")); add("krps", impl, num($0, "ok_rps")); kills[impl] = num($0, "kills") }
      if (b == "service") add("svc", impl, num($0, "p50_us"))
    }
    END {
      print "| benchmark | weft | peer | ratio weft/peer | goal | met? |"
      print "|---|---|---|---|---|---|"
      n = split("rps p50 p99 krps failed svc port", order, " ")
      label["rps"] = "HTTP via 2 back ends, keep-alive: req/s"
      label["p50"] = "  latency p50, ms"
      label["p99"] = "  latency p99, ms"
      label["krps"] = "  answered req/s (2xx) while a back end is SIGKILLed every 2 s"
      label["failed"] = "  failed requests in those runs (non-2xx + socket errors)"
      label["svc"] = "service call round trip across nodes, p50 us"
      label["port"] = "  context: bare message round trip across nodes, p50 us"
      goal["rps"] = ">= nginx"; goal["p99"] = "<= nginx"; goal["failed"] = "weft 0"; goal["svc"] = "<= Erlang"
      for (k = 1; k <= n; k++) {
        row = order[k]
        peer = (row == "svc" || row == "port") ? "erlang" : "nginx"
        if (vals[row, "weft"] == "" && vals[row, peer] == "" && !((row, "weft") in why)) continue
        w = vals[row, "weft"] != "" ? med(vals[row, "weft"]) : ""
        p = vals[row, peer] != "" ? med(vals[row, peer]) : ""
        ratio = (w != "" && p != "" && p > 0) ? sprintf("%.2f", w / p) : "-"
        met = "-"
        if (row == "rps" && w != "" && p != "") met = (w >= p) ? "yes" : "no"
        if (row == "p99" && w != "" && p != "") met = (w <= p) ? "yes" : "no"
        if (row == "svc" && w != "" && p != "") met = (w <= p) ? "yes" : "no"
        if (row == "failed" && w != "") met = (hi(vals[row, "weft"]) == 0) ? "yes" : "no"
        lab = label[row]
        if (row == "failed" && ("weft" in kills)) lab = lab ", " kills["weft"] " kills per run"
        printf "| %s | %s | %s %s | %s | %s | %s |\n", lab, cell(row, "weft"), peer, cell(row, peer), ratio, (row in goal) ? goal[row] : "-", met
      }
      # The same shapes on the nng transport (same run).
      if (vals["svc", "weft-nng"] != "") {
        w = vals["svc", "weft"] != "" ? med(vals["svc", "weft"]) : ""
        q = med(vals["svc", "weft-nng"])
        printf "|   service call p50 us, weft-nng (nng transport) | %s | erlang %s | %s | - | - |\n", cell("svc", "weft-nng"), cell("svc", "erlang"), (vals["svc", "erlang"] != "") ? sprintf("%.2f", q / med(vals["svc", "erlang"])) : "-"
        if (w != "") printf "|   weft / weft-nng, service call p50 | %.2f | - | - | - | - |\n", w / q
      }
      if (vals["port", "weft-nng"] != "")
        printf "|   bare round trip p50 us, weft-nng | %s | - | - | - | - |\n", cell("port", "weft-nng")
      # What the service adds to the transport it rides on (same run).
      if (vals["svc", "weft"] != "" && vals["port", "weft"] != "") {
        r = med(vals["svc", "weft"]) / med(vals["port", "weft"])
        printf "|   weft service call / bare round trip (medians) | %.2f | - | - | <= 1.10 | %s |\n", r, (r <= 1.10) ? "yes" : "no"
      }
    }' "$1"
}

if [ -n "$REPORT" ]; then
  [ -r "$REPORT" ] || { echo "dist.sh: cannot read $REPORT" >&2; exit 2; }
  report "$REPORT"
  exit 0
fi

# ---- set-up -----------------------------------------------------------------------

install_pkg() {
  echo "installing $1 ..." >&2
  (apt-get install -y -q "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 &&
    apt-get install -y -q "$1" >/dev/null 2>&1; }) || { echo "cannot install $1" >&2; exit 1; }
}
need_cmd() { command -v "$1" >/dev/null 2>&1 || install_pkg "$2"; }
need_file() { [ -e "$1" ] || install_pkg "$2"; }

if [ "$SVC_ONLY" = 0 ]; then
  need_cmd wrk wrk
  need_cmd nginx nginx-light
  need_file /usr/include/http_parser.h libhttp-parser-dev
fi
need_cmd erl erlang-base

say "configuring and building $BUILD_DIR"
if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" >&2 || exit 1
else
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >&2 || exit 1
fi
if [ "$SVC_ONLY" = 1 ]; then
  cmake --build "$BUILD_DIR" -j2 --target weft-bench >&2 || exit 1
else
  cmake --build "$BUILD_DIR" -j2 --target dist_gateway weft-bench weft-http-backend >&2 || exit 1
fi
GATEWAY="$BUILD_DIR/examples/dist_gateway"
HTTPBE="$BUILD_DIR/tools/weft-http-backend"
BENCH="$BUILD_DIR/tools/weft-bench"
ERLDIST="$ROOT/tools/bench/erlang/dist.sh"
[ -n "$OUT" ] || OUT="$BUILD_DIR/dist-$(date +%Y%m%d-%H%M%S).jsonl"
: >"$OUT"
: >"$OUT.log"
TMP="$(mktemp -d /tmp/weft-dist-bench.XXXXXX)"
FAILED=0

# Every process started here, by pid; nginx by its master's pid file.
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  [ -f "$TMP/nginx.pid" ] && kill -KILL "$(cat "$TMP/nginx.pid")" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { local p="$1" i; for i in "${!PIDS[@]}"; do [ "${PIDS[$i]}" = "$p" ] && unset 'PIDS[i]'; done; }

# stop PID: SIGTERM, up to 5 s, then SIGKILL; reaped.
stop() {
  local p="$1"
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  forget "$p"
}

# wait_line FILE REGEX: until a line of FILE matches (15 s at most).
wait_line() {
  for _ in $(seq 1 150); do grep -Eq "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "dist.sh: no line like '$2' in $1 within 15 s:" >&2
  cat "$1" >&2
  return 1
}

# wait_count FILE REGEX N: until N lines of FILE match (15 s at most).
wait_count() {
  for _ in $(seq 1 150); do [ "$(grep -Ec "$2" "$1" 2>/dev/null)" -ge "$3" ] && return 0; sleep 0.1; done
  echo "dist.sh: fewer than $3 lines like '$2' in $1 within 15 s" >&2
  return 1
}

# A free TCP port on 127.0.0.1 (nothing answers on it now).
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 30000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

# get PORT PATH: one GET with Connection: close; prints the body.
get() {
  local resp
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' "$2" >&3
  resp="$(timeout 5 cat <&3)"
  exec 3<&-
  printf '%s\n' "$resp" | tail -n 1
}

# ---- the two stacks -----------------------------------------------------------------
# start_backend IMPL I PORT: back end bI (PORT 0 the first time); sets BE_PID[I], BE_PORT[I].
declare -A BE_PID BE_PORT
start_backend() {
  local impl="$1" i="$2" port="$3" log="$TMP/be$2.out"
  : >"$log"
  if [ "$impl" = weft ]; then
    "$GATEWAY" --backend "tcp://127.0.0.1:$port" "b$i" --work "$WORK" --die-with-parent >"$log" 2>&1 &
  else
    "$HTTPBE" "$port" "b$i" --work "$WORK" >"$log" 2>&1 &
  fi
  BE_PID[$i]=$!
  PIDS+=("${BE_PID[$i]}")
  wait_line "$log" "listening on" || return 1
  BE_PORT[$i]="$(grep -Eo ':[0-9]+$' "$log" | head -n 1 | tr -d :)"
  cat "$log" >>"$OUT.log"
}

FRONT_PID=""
FRONT_PORT=""
start_front() {
  local impl="$1" log="$TMP/front.out"
  : >"$log"
  if [ "$impl" = weft ]; then
    "$GATEWAY" --front 0 --workers 2 --die-with-parent \
      --backends "tcp://127.0.0.1:${BE_PORT[1]}" "tcp://127.0.0.1:${BE_PORT[2]}" >"$log" 2>&1 &
    FRONT_PID=$!
    PIDS+=("$FRONT_PID")
    wait_line "$log" "^front listening on" || return 1
    FRONT_PORT="$(sed -nE 's/^front listening on http:\/\/[^:]+:([0-9]+).*/\1/p' "$log")"
    wait_count "$log" "provider .* up" 4 || return 1 # 2 workers x 2 back ends
  else
    FRONT_PORT="$(free_port)" || return 1
    cat >"$TMP/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream backends {
    server 127.0.0.1:${BE_PORT[1]} max_fails=1 fail_timeout=1s;
    server 127.0.0.1:${BE_PORT[2]} max_fails=1 fail_timeout=1s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$FRONT_PORT;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout;
    }
  }
}
EOF
    nginx -c "$TMP/nginx.conf" -p "$TMP" >"$log" 2>&1 &
    FRONT_PID=$!
    PIDS+=("$FRONT_PID")
    for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$FRONT_PORT") 2>/dev/null && break; sleep 0.1; done
  fi
  # Both fronts must answer, with the same digest as the other stack gave.
  local body
  body="$(get "$FRONT_PORT" /sha/check)"
  echo "$impl: GET /sha/check -> $body" >>"$OUT.log"
  [[ "$body" =~ ^[0-9a-f]{64}$ ]] || { echo "dist.sh: $impl front gave '$body'" >&2; return 1; }
  if [ -n "${CHECK_BODY:-}" ] && [ "$body" != "$CHECK_BODY" ]; then
    echo "dist.sh: the two stacks do different work: $body vs $CHECK_BODY" >&2
    return 1
  fi
  CHECK_BODY="$body"
}

stop_stack() {
  [ -n "$FRONT_PID" ] && stop "$FRONT_PID"
  FRONT_PID=""
  rm -f "$TMP/nginx.pid"
  local i
  for i in 1 2; do [ -n "${BE_PID[$i]:-}" ] && stop "${BE_PID[$i]}"; BE_PID[$i]=""; done
  cat "$TMP/front.out" >>"$OUT.log" 2>/dev/null
}

# ---- one wrk run ----------------------------------------------------------------------

to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) print v / 1000; else if (v ~ /ms$/) print v + 0; else if (v ~ /s$/) print v * 1000; else print "" }'; }

# wrk_fields FILE: "rps p50_ms p99_ms requests non2xx sockerr" from wrk --latency output.
wrk_fields() {
  local f="$1" rps p50 p99 reqs non2xx sock
  rps="$(awk '/^Requests\/sec/ {print $2}' "$f")"
  p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")"
  reqs="$(awk '/requests in/ {print $1}' "$f")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' "$f")"
  sock="$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$f")"
  echo "${rps:-0} ${p50:-0} ${p99:-0} ${reqs:-0} ${non2xx:-0} ${sock:-0}"
}

mark() { printf '{"bench":"%s","impl":"%s","rep":%s,"missing":"%s"}\n' "$1" "$2" "$3" "$4" >>"$OUT"; }

run_http() {
  local impl="$1" rep="$2" f
  say "rep $rep: $impl: 2 back ends and the front"
  CHECK_BODY="${CHECK_BODY:-}"
  if ! { start_backend "$impl" 1 0 && start_backend "$impl" 2 0 && start_front "$impl"; }; then
    say "FAILED: $impl did not start (see $OUT.log)"
    FAILED=1
    mark steady "$impl" "$rep" failed
    mark kill "$impl" "$rep" failed
    stop_stack
    return
  fi
  local url="http://127.0.0.1:$FRONT_PORT/sha/1"
  say "rep $rep: $impl: wrk -t1 -c$CONNS -d${DUR}s --latency $url"
  wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$url" >"$TMP/wrk.out" 2>&1
  cat "$TMP/wrk.out" >>"$OUT.log"
  read -r rps p50 p99 reqs non2xx sock <<<"$(wrk_fields "$TMP/wrk.out")"
  printf '{"bench":"steady","impl":"%s","rep":%s,"rps":%s,"p50_ms":%s,"p99_ms":%s,"requests":%s,"failed":%s,"connections":%s,"duration_s":%s,"work":%s}\n' \
    "$impl" "$rep" "$rps" "$p50" "$p99" "$reqs" $((non2xx + sock)) "$CONNS" "$DUR" "$WORK" | tee -a "$OUT" >&2

  # The same load for KILL_S + 2 s; a back end SIGKILLed every KILL_EVERY s.
  say "rep $rep: $impl: the same load, SIGKILL a back end every ${KILL_EVERY}s for ${KILL_S}s"
  wrk -t1 -c"$CONNS" -d"$((KILL_S + 2))s" --latency "$url" >"$TMP/wrk.out" 2>&1 &
  local wrk_pid=$! kills=0 i t
  PIDS+=("$wrk_pid")
  for ((t = KILL_EVERY; t <= KILL_S; t += KILL_EVERY)); do
    sleep "$KILL_EVERY"
    i=$((kills % 2 + 1))
    kill -KILL "${BE_PID[$i]}" 2>/dev/null
    wait "${BE_PID[$i]}" 2>/dev/null
    forget "${BE_PID[$i]}"
    kills=$((kills + 1))
    echo "$impl: SIGKILL b$i (pid ${BE_PID[$i]}) at ${t}s; restarting on port ${BE_PORT[$i]}" >>"$OUT.log"
    start_backend "$impl" "$i" "${BE_PORT[$i]}" || { say "$impl: b$i did not restart"; FAILED=1; }
  done
  wait "$wrk_pid" 2>/dev/null
  forget "$wrk_pid"
  cat "$TMP/wrk.out" >>"$OUT.log"
  read -r rps p50 p99 reqs non2xx sock <<<"$(wrk_fields "$TMP/wrk.out")"
  # ok_rps: answers that were not failures, per second (a fast 502 is no answer).
  local ok_rps
  ok_rps="$(awk -v r="$reqs" -v f=$((non2xx + sock)) -v d=$((KILL_S + 2)) 'BEGIN { printf "%.0f", (r - f) / d }')"
  printf '{"bench":"kill","impl":"%s","rep":%s,"ok_rps":%s,"rps":%s,"p99_ms":%s,"requests":%s,"failed":%s,"non2xx":%s,"socket_errors":%s,"kills":%s,"every_s":%s}\n' \
    "$impl" "$rep" "$ok_rps" "$rps" "$p99" "$reqs" $((non2xx + sock)) "$non2xx" "$sock" "$kills" "$KILL_EVERY" | tee -a "$OUT" >&2
  stop_stack
}

# run_service IMPL SHAPE REP: service_pingpong, or remote_pingpong (a bare
# port round trip across nodes: the part of the service call that is transport).
run_service() {
  local impl="$1" shape="$2" rep="$3" cmd tmp
  case "$impl" in
    weft) cmd=("$BENCH" "$shape" --n "$SVC_N") ;;
    weft-nng) cmd=(env WEFT_BENCH_TRANSPORT=nng "$BENCH" "$shape" --n "$SVC_N") ;;
    *) cmd=("$ERLDIST" "$shape" --n "$SVC_N" --rep "$rep") ;;
  esac
  say "rep $rep: ${cmd[*]}"
  tmp="$TMP/svc.out"
  if ! timeout -k 10 "$RUN_TIMEOUT" "${cmd[@]}" >"$tmp" 2>>"$OUT.log"; then
    say "FAILED: ${cmd[*]} (see $OUT.log)"
    FAILED=1
    [ "$shape" = service_pingpong ] && mark service "$impl" "$rep" failed
  fi
  sed "s/\"rep\":[0-9]*/\"rep\":$rep/" "$tmp" | tee -a "$OUT" >&2
}

load0="$(cut -d' ' -f1-3 /proc/loadavg)"
start=$SECONDS
for ((rep = 0; rep < REPEAT; rep++)); do
  if [ "$SVC_ONLY" = 0 ]; then
    order="weft nginx"
    ((rep % 2)) && order="nginx weft"
    for impl in $order; do run_http "$impl" "$rep"; done
  fi
  order="weft weft-nng erlang"
  ((rep % 2)) && order="erlang weft-nng weft"
  for impl in $order; do
    run_service "$impl" service_pingpong "$rep"
    run_service "$impl" remote_pingpong "$rep"
  done
done
say "done in $((SECONDS - start)) s; JSON lines in $OUT"
echo
if [ "$SVC_ONLY" = 1 ]; then
  echo "weft-bench service_pingpong and remote_pingpong (weft: the node loop's transport; weft-nng: nng's) vs Erlang/OTP $(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().') gen_server:call, 127.0.0.1, --n $SVC_N, $REPEAT repetition(s), $(nproc) CPUs, load average at start ${load0}, at end $(cut -d' ' -f1-3 /proc/loadavg)"
else
echo "weft (examples/dist_gateway, weft-bench service_pingpong) vs nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') and Erlang/OTP $(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().'), 127.0.0.1, wrk -t1 -c$CONNS keep-alive ${DUR}s, $WORK SHA-256 rounds per request, $REPEAT repetition(s)$([ "$QUICK" = 1 ] && echo ', --quick'), $(nproc) CPUs, load average at start ${load0}, at end $(cut -d' ' -f1-3 /proc/loadavg)"
fi
echo
report "$OUT"
exit "$FAILED"
