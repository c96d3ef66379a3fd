#!/usr/bin/env bash
# run.sh: weft-bench and its Node.js peers, side by side, with ratios.
#
#   tools/bench/run.sh [--quick] [--repeat R] [--out FILE] [--only a,b,...]
#
# Builds weft-bench (Release, in $BUILD_DIR, default build-bench) if needed,
# then for each repetition runs every shape for weft and for Node.js one after
# the other (the order swaps on every repetition so that neither always runs
# on a warmer or a noisier machine), and finally prints a markdown table of
# medians: shape | weft | node (or reference) | ratio | goal | met?.
# The actor shapes, idle_cpu and the wrapped transfers have no Node.js peer;
# the actor rows compare with reference constants measured once on another
# machine of this kind (context, not this run).
#
#   --quick       1 repetition, small N (about 10 s); figures are rougher
#   --repeat R    repetitions (default 3)
#   --out FILE    JSON lines go there (default $BUILD_DIR/bench-<time>.jsonl);
#                 stderr of every run goes to FILE.log
#   --only LIST   comma-separated shapes (default: all)
#
# Exit status: 0 if every run succeeded, 1 if one failed (the table still
# prints, with "failed/not run" cells), 2 for a bad command line.
set -uo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
ROOT="$PWD"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
NODE_DIR="$ROOT/tools/bench/node"
BIN="$BUILD_DIR/tools/weft-bench"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"

QUICK=0
REPEAT=3
OUT=""
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPEAT=1 ;;
    --repeat) REPEAT="${2:?--repeat needs a value}"; shift ;;
    --out) OUT="${2:?--out needs a file}"; shift ;;
    --only) ONLY="${2:?--only needs a list}"; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

SHAPES=(oneway pingpong transfer spawn idle_rss idle_cpu actor_spawn actor_pingpong actor_ring
        child_oneway child_pingpong child_transfer pool)
NODE_SHAPES=" oneway pingpong transfer spawn idle_rss child_oneway child_pingpong child_transfer pool "

# N per shape and implementation: "weft_n node_n" (empty: the default).
n_for() {
  local shape="$1" impl="$2" full quick
  case "$shape" in
    oneway)         full="2000000 1000000"; quick="200000 100000" ;;
    pingpong)       full="200000 30000";    quick="20000 5000" ;;
    transfer)       full="1000 1000";       quick="100 100" ;;
    spawn)          full="200 100";         quick="50 20" ;;
    actor_spawn)    full="1000000 -";       quick="100000 -" ;;
    actor_pingpong) full="2000000 -";       quick="200000 -" ;;
    actor_ring)     full="10000000 -";      quick="1000000 -" ;;
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

say() { printf '==> %s\n' "$*" >&2; }

build() {
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    say "configuring $BUILD_DIR (Release)"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >&2 || return 1
  fi
  say "building weft-bench"
  cmake --build "$BUILD_DIR" -j2 --target weft-bench >&2 || return 1
  [ -x "$BIN" ]
}

FAILED=0

# run_one IMPL SHAPE REP: one run, its JSON lines appended to $OUT.
run_one() {
  local impl="$1" shape="$2" rep="$3" n args=()
  n="$(n_for "$shape" "$impl")"
  [ -n "$n" ] && args=(--n "$n")
  local cmd
  if [ "$impl" = weft ]; then
    cmd=("$BIN" "$shape" "${args[@]}")
  else
    local script="$shape.js"
    [ "$shape" = pool ] && script="pool_piscina.js" # the peer is piscina
    cmd=(node "$NODE_DIR/$script" "${args[@]}")
  fi
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
  [ -n "$OUT" ] || OUT="$BUILD_DIR/bench-$(date +%Y%m%d-%H%M%S).jsonl"
  : >"$OUT"
  : >"$OUT.log"
  LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"
  local start=$SECONDS rep shape order
  for ((rep = 0; rep < REPEAT; rep++)); do
    for shape in "${SHAPES[@]}"; do
      selected "$shape" || continue
      order="weft node"
      ((rep % 2)) && order="node weft"
      for impl in $order; do
        if [ "$impl" = node ] && [[ "$NODE_SHAPES" != *" $shape "* ]]; then
          continue
        fi
        run_one "$impl" "$shape" "$rep"
      done
    done
  done
  say "done in $((SECONDS - start)) s; JSON lines in $OUT"
  echo
  echo "weft-bench vs Node.js $(node --version), $REPEAT repetition(s)$([ "$QUICK" = 1 ] && echo ', --quick'), $(nproc) CPUs, load average at start ${LOAD0}, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  node "$NODE_DIR/report.js" "$OUT"
  exit "$FAILED"
}

main
