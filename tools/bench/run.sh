#!/usr/bin/env bash
# run.sh: weft-bench beside its peers and the machine's own floors, all in the
# same run, with ratios.
#
#   tools/bench/run.sh [--quick] [--repeat R] [--out FILE] [--only a,b,...]
#   tools/bench/run.sh --report FILE
#
# Installs what a fresh machine lacks (the Node.js peers' packages with npm
# ci; erlang-base and libcaf-dev with apt-get), builds weft-bench and
# weft-floor (Release, in $BUILD_DIR, default build-bench) and the CAF peer
# ($BUILD_DIR/caf-actors) if needed, then for each repetition runs every shape
# for weft and for each of its peers one after the other (the order reverses
# on every other repetition so that none always runs on a warmer or a noisier
# machine): Node.js (worker_threads, child processes, piscina) for the
# kernel's shapes, CAF and Erlang for the actor shapes, and weft-floor
# (uv_async and eventfd ping-pong, an SPSC ring, memcpy) as the denominators
# of the wake-up, busy-exchange, one-way and transfer rows. Finally prints the
# floors and a markdown table of medians: shape | weft | peer | ratio | goal
# | met?. Every peer figure comes from this run.
#
#   --quick       1 repetition, small N (about a minute); figures are rougher
#   --repeat R    repetitions (default 3)
#   --out FILE    JSON lines go there (default $BUILD_DIR/bench-<time>.jsonl);
#                 stderr of every run goes to FILE.log
#   --only LIST   comma-separated shapes (default: all)
#   --report FILE no runs: the tables and the chart from FILE's JSON lines
#
# Beside the JSON lines goes an SVG chart of the ratios (FILE without
# .jsonl, .svg; tools/bench/chart.js).
#
# Exit status: 0 if every run succeeded, 1 if one failed or a peer could not
# be installed or built (the table still prints, with "failed/not run"
# cells), 2 for a bad command line.
set -uo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
ROOT="$PWD"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
NODE_DIR="$ROOT/tools/bench/node"
BIN="$BUILD_DIR/tools/weft-bench"
FLOOR_BIN="$BUILD_DIR/tools/weft-floor"
CAF_BIN="$BUILD_DIR/caf-actors"
ERL_ACTORS="$ROOT/tools/bench/erlang/actors.sh"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"

QUICK=0
REPEAT=3
OUT=""
ONLY=""
REPORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPEAT=1 ;;
    --repeat) REPEAT="${2:?--repeat needs a value}"; shift ;;
    --out) OUT="${2:?--out needs a file}"; shift ;;
    --only) ONLY="${2:?--only needs a list}"; shift ;;
    --report) REPORT="${2:?--report needs a file}"; shift ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# The floors run first in every repetition: the rows that divide by them
# should see the machine as they did.
SHAPES=(floor_uv_async floor_eventfd floor_spsc floor_memcpy
        oneway pingpong transfer spawn idle_rss idle_cpu
        actor_spawn actor_pingpong actor_ring actor_oneway
        child_oneway child_pingpong child_transfer pool)
NODE_SHAPES=" oneway pingpong transfer spawn idle_rss child_oneway child_pingpong child_transfer pool "

# The implementations that run a shape, in this repetition's order.
impls_for() {
  local shape="$1" rep="$2" list
  case "$shape" in
    floor_*) echo floor; return ;;
    actor_*) list="weft caf erlang" ;;
    *) list="weft"; [[ "$NODE_SHAPES" == *" $shape "* ]] && list="weft node" ;;
  esac
  ((rep % 2)) && list="$(echo "$list" | tr ' ' '\n' | tac | tr '\n' ' ')"
  echo "$list"
}

# N per shape: "weft_n peer_n" (peer: Node.js, CAF, Erlang or weft-floor;
# empty: the default). The actor peers run the same N as weft.
n_for() {
  local shape="$1" impl="$2" full quick
  case "$shape" in
    floor_uv_async|floor_eventfd) full="- 20000"; quick="- 5000" ;;
    floor_spsc)     full="- 200000";        quick="- 50000" ;;
    oneway)         full="2000000 1000000"; quick="200000 100000" ;;
    pingpong)       full="200000 30000";    quick="20000 5000" ;;
    transfer)       full="20000 1000";      quick="2000 100" ;;
    spawn)          full="200 100";         quick="50 20" ;;
    actor_spawn)    full="1000000 1000000"; quick="100000 100000" ;;
    actor_pingpong) full="2000000 2000000"; quick="200000 200000" ;;
    actor_ring)     full="10000000 10000000"; quick="1000000 1000000" ;;
    actor_oneway)   full="2000000 2000000"; quick="200000 200000" ;;
    idle_cpu)       full="20000 -";         quick="5000 -" ;;
    child_oneway)   full="2000000 300000";  quick="200000 50000" ;;
    child_pingpong) full="100000 20000";    quick="10000 3000" ;;
    child_transfer) full="2000 100";        quick="200 20" ;;
    pool)           full="2000000 200000";  quick="200000 50000" ;;
    *)              full="- -";             quick="- -" ;;
  esac
  local pair="$full"
  [ "$QUICK" = 1 ] && pair="$quick"
  local n
  if [ "$impl" = weft ]; then n="${pair% *}"; else n="${pair#* }"; fi
  [ "$n" != - ] && echo "$n"
}

FAILED=0

say() { printf '==> %s\n' "$*" >&2; }

build() {
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    say "configuring $BUILD_DIR (Release)"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >&2 || return 1
  fi
  say "building weft-bench and weft-floor"
  cmake --build "$BUILD_DIR" -j2 --target weft-bench weft-floor >&2 || return 1
  [ -x "$BIN" ] && [ -x "$FLOOR_BIN" ]
}

# apt-get install PKG when missing (apt-get update once if needed).
install_pkg() {
  say "installing $1 (apt-get)"
  apt-get install -y -q "$1" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$1" >/dev/null 2>&1; }
}

# The actor peers: Erlang (erl, erlc) and CAF (libcaf-dev, then caf-actors
# built from tools/bench/caf/actors.cpp). One that cannot be had is said and
# counted as a failure; its cells say "failed/not run".
PEERS_OK=" weft node floor "
actor_peers() {
  if command -v erl >/dev/null && command -v erlc >/dev/null || install_pkg erlang-base; then
    PEERS_OK+="erlang "
  else
    echo "run.sh: cannot install erlang-base: no Erlang peer" >&2; FAILED=1
  fi
  if { [ -f /usr/include/caf/all.hpp ] || install_pkg libcaf-dev; } &&
     "$ROOT/tools/bench/caf/build.sh" "$CAF_BIN" >&2; then
    PEERS_OK+="caf "
  else
    echo "run.sh: no CAF peer (libcaf-dev or its build failed)" >&2; FAILED=1
  fi
}

# run_one IMPL SHAPE REP: one run, its JSON lines appended to $OUT.
run_one() {
  local impl="$1" shape="$2" rep="$3" n args=()
  n="$(n_for "$shape" "$impl")"
  [ -n "$n" ] && args=(--n "$n")
  local cmd
  case "$impl" in
    weft) cmd=("$BIN" "$shape" "${args[@]}") ;;
    floor) cmd=("$FLOOR_BIN" "$shape" "${args[@]}" --rep "$rep") ;;
    caf) cmd=("$CAF_BIN" "$shape" "${args[@]}" --rep "$rep") ;;
    erlang) cmd=("$ERL_ACTORS" "$shape" "${args[@]}" --rep "$rep") ;;
    node)
      local script="$shape.js"
      [ "$shape" = pool ] && script="pool_piscina.js" # the peer is piscina
      cmd=(node "$NODE_DIR/$script" "${args[@]}") ;;
  esac
  say "rep $rep: ${cmd[*]}"
  echo "# rep $rep: ${cmd[*]}" >>"$OUT.log"
  local tmp
  tmp="$(mktemp)"
  if ! timeout "$RUN_TIMEOUT" "${cmd[@]}" >"$tmp" 2>>"$OUT.log"; then
    say "FAILED: ${cmd[*]} (see $OUT.log)"
    FAILED=1
  fi
  # Rewrite "rep" so that every repetition of run.sh is distinct.
  sed "s/\"rep\":[0-9]*/\"rep\":$rep/" "$tmp" | tee -a "$OUT" >&2
  rm -f "$tmp"
}

selected() {
  [ -z "$ONLY" ] && return 0
  case ",$ONLY," in *",$1,"*) return 0 ;; esac
  return 1
}

# The Node.js peers' packages (piscina), as locked in package-lock.json: a
# fresh machine has none (the npm registry is the one place they come from).
node_peers() {
  [ -d "$NODE_DIR/node_modules/piscina" ] && return 0
  command -v npm >/dev/null || { echo "run.sh: npm not found (apt-get install npm)" >&2; return 1; }
  echo "installing the Node.js peers' packages (npm ci in tools/bench/node)" >&2
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund >&2)
}

main() {
  command -v node >/dev/null || { echo "run.sh: node not found" >&2; exit 2; }
  node_peers || { echo "run.sh: cannot install the Node.js peers' packages" >&2; exit 1; }
  build || { echo "run.sh: build failed" >&2; exit 1; }
  actor_peers
  [ -n "$OUT" ] || OUT="$BUILD_DIR/bench-$(date +%Y%m%d-%H%M%S).jsonl"
  : >"$OUT"
  : >"$OUT.log"
  LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
  local start=$SECONDS rep shape impl
  for ((rep = 0; rep < REPEAT; rep++)); do
    for shape in "${SHAPES[@]}"; do
      selected "$shape" || continue
      for impl in $(impls_for "$shape" "$rep"); do
        [[ "$PEERS_OK" == *" $impl "* ]] || continue
        run_one "$impl" "$shape" "$rep"
      done
    done
  done
  say "done in $((SECONDS - start)) s; JSON lines in $OUT"
  echo
  echo "weft-bench vs Node.js $(node --version), $(erl -noshell -eval 'io:format("Erlang/OTP ~s", [erlang:system_info(otp_release)]), halt().' 2>/dev/null || echo 'no Erlang'), CAF $(dpkg-query -W -f '${Version}' libcaf-dev 2>/dev/null || echo '(none)') and weft-floor, $REPEAT repetition(s)$([ "$QUICK" = 1 ] && echo ', --quick'), $(nproc) CPUs, load average at start ${LOAD0}, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  node "$NODE_DIR/report.js" "$OUT"
  chart "$OUT"
  exit "$FAILED"
}

# chart FILE: the SVG beside FILE.
chart() {
  node "$ROOT/tools/bench/chart.js" run "$1" "${1%.jsonl}.svg" && echo && echo "chart: ${1%.jsonl}.svg"
}

if [ -n "$REPORT" ]; then
  node "$NODE_DIR/report.js" "$REPORT" && chart "$REPORT"
  exit
fi
main
