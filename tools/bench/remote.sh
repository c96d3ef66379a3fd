#!/usr/bin/env bash
# remote.sh: weft's distribution benchmarks (weft-bench remote_oneway,
# remote_pingpong, remote_transfer) beside their peers, Erlang distribution
# (tools/bench/erlang/dist.sh) and nng's own pair1 over tcp (weft-nng-floor),
# all between two processes on 127.0.0.1, with ratios and the goals of issue 11.
# weft runs twice: on its default transport (the node's loop reads and writes
# the sockets) and as weft-nng (WEFT_BENCH_TRANSPORT=nng: nng's byte streams),
# so the table compares the two transports within one run.
#
#   tools/bench/remote.sh [--quick] [--repeat R] [--out FILE]
#   tools/bench/remote.sh --report FILE     # the table again, from a results file
#
# Installs what a fresh Debian 12 lacks (erlang-base, libnng-dev) with
# apt-get, builds weft-bench and weft-nng-floor (Release, in $BUILD_DIR,
# default build-bench), then for each repetition runs every shape for weft,
# Erlang and nng, in an order that reverses on every repetition, and prints a
# markdown table of medians with their spread (min-max). A weft-bench without
# a remote_* shape gives "not built yet" cells; a failed run gives "failed".
#
#   --quick       1 repetition, small N (about 20 s); figures are rougher
#   --repeat R    repetitions (default 3)
#   --out FILE    JSON lines go there (default $BUILD_DIR/remote-<time>.jsonl);
#                 stderr of every run goes to FILE.log
#
# Exit status: 0 if every run that exists succeeded, 1 if one failed (the
# table still prints), 2 for a bad command line.
set -uo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
ROOT="$PWD"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
BIN="$BUILD_DIR/tools/weft-bench"
FLOOR="$BUILD_DIR/tools/weft-nng-floor"
DIST="$ROOT/tools/bench/erlang/dist.sh"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"

QUICK=0
REPEAT=3
OUT=""
REPORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPEAT=1 ;;
    --repeat) REPEAT="${2:?--repeat needs a value}"; shift ;;
    --out) OUT="${2:?--out needs a file}"; shift ;;
    --report) REPORT="${2:?--report needs a file}"; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "remote.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$REPEAT" in ''|*[!0-9]*|0) echo "remote.sh: --repeat takes a count > 0" >&2; exit 2 ;; esac

SHAPES=(remote_oneway remote_pingpong remote_transfer)

# N per shape and implementation, full and --quick. oneway: records;
# pingpong: round trips; transfer: 16 MiB messages.
n_for() {
  local key="$1:$2" full quick
  case "$key" in
    remote_oneway:weft)        full=2000000;  quick=200000 ;;
    remote_oneway:erlang)      full=500000;   quick=100000 ;;
    remote_oneway:nng)         full=200000;   quick=30000 ;;
    remote_oneway_batch:nng)   full=20000000; quick=2000000 ;;
    remote_pingpong:*)         full=20000;    quick=3000 ;;
    remote_transfer:*)         full=20;       quick=5 ;;
  esac
  if [ "$QUICK" = 1 ]; then echo "$quick"; else echo "$full"; fi
}

say() { printf '==> %s\n' "$*" >&2; }

# need_cmd <command> <debian package> / need_file <path> <debian package>:
# apt-get install the package when missing (apt-get update once if needed).
install_pkg() {
  echo "installing $1 ..." >&2
  (apt-get install -y -q "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 &&
    apt-get install -y -q "$1" >/dev/null 2>&1; }) || { echo "cannot install $1" >&2; exit 1; }
}
need_cmd() { command -v "$1" >/dev/null 2>&1 || install_pkg "$2"; }
need_file() { [ -e "$1" ] || install_pkg "$2"; }

build() {
  # Configure every time: finds nng once libnng-dev has just been installed.
  say "configuring $BUILD_DIR"
  if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" >&2 || return 1
  else
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >&2 || return 1
  fi
  say "building weft-bench and weft-nng-floor"
  cmake --build "$BUILD_DIR" -j2 --target weft-bench weft-nng-floor >&2 || return 1
  [ -x "$BIN" ] && [ -x "$FLOOR" ]
}

FAILED=0

# mark IMPL SHAPE REP WHAT: a line that says a cell has no figure, and why.
mark() {
  printf '{"shape":"%s","impl":"%s","rep":%s,"missing":"%s"}\n' "$2" "$1" "$3" "$4" >>"$OUT"
}

# run_one IMPL SHAPE REP: one run, its JSON lines appended to $OUT.
run_one() {
  local impl="$1" shape="$2" rep="$3" cmd
  case "$impl" in
    weft)
      if ! "$BIN" --help 2>/dev/null | grep -q "^  $shape "; then
        say "rep $rep: weft-bench has no $shape: not built yet"
        mark weft "$shape" "$rep" "not built yet"
        return
      fi
      cmd=("$BIN" "$shape" --n "$(n_for "$shape" weft)")
      [ "$shape" = remote_transfer ] && cmd+=(--size 16m) ;;
    weft-nng)
      "$BIN" --help 2>/dev/null | grep -q "^  $shape " || { mark weft-nng "$shape" "$rep" "not built yet"; return; }
      cmd=(env WEFT_BENCH_TRANSPORT=nng "$BIN" "$shape" --n "$(n_for "$shape" weft)")
      [ "$shape" = remote_transfer ] && cmd+=(--size 16m) ;;
    erlang) cmd=("$DIST" "$shape" --n "$(n_for "$shape" erlang)" --rep "$rep") ;;
    nng) cmd=("$FLOOR" "$shape" --n "$(n_for "$shape" nng)" --rep "$rep") ;;
  esac
  say "rep $rep: ${cmd[*]}"
  echo "# rep $rep: ${cmd[*]}" >>"$OUT.log"
  local tmp
  tmp="$(mktemp)"
  if ! timeout -k 10 "$RUN_TIMEOUT" "${cmd[@]}" >"$tmp" 2>>"$OUT.log"; then
    say "FAILED: ${cmd[*]} (see $OUT.log)"
    FAILED=1
    mark "$impl" "$shape" "$rep" "failed"
  fi
  # Rewrite "rep" so that every repetition of remote.sh is distinct.
  sed "s/\"rep\":[0-9]*/\"rep\":$rep/" "$tmp" | tee -a "$OUT" >&2
  rm -f "$tmp"
}

# The table: per row the median over repetitions (min-max) of weft, Erlang
# and nng pair1, weft/Erlang, the goal of issue 11 and whether weft meets it.
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
    function add(row, impl, v) { vals[row, impl] = vals[row, impl] " " v }
    function med(list,   n, v, i, j, t) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function lo(list,   n, v, i, m) { n = split(list, v, " "); m = v[1]; for (i = 2; i <= n; i++) if (v[i] + 0 < m + 0) m = v[i]; return m }
    function hi(list,   n, v, i, m) { n = split(list, v, " "); m = v[1]; for (i = 2; i <= n; i++) if (v[i] + 0 > m + 0) m = v[i]; return m }
    function fmt(x) { return x >= 1e6 ? sprintf("%.2fM", x / 1e6) : x >= 1e4 ? sprintf("%.0fk", x / 1e3) : x >= 100 ? sprintf("%.0f", x) : sprintf("%.1f", x) }
    function cell(row, impl,   l) {
      l = vals[row, impl]
      if (l == "") return ((row, impl) in why) ? why[row, impl] : "-"
      if (split(l, tmp, " ") == 1) return fmt(med(l))
      return fmt(med(l)) " (" fmt(lo(l)) "-" fmt(hi(l)) ")"
    }
    {
      shape = str($0, "shape"); impl = str($0, "impl"); miss = str($0, "missing")
      if (impl == "nng_pair1") impl = "nng"
      if (shape == "remote_oneway") {
        rows = (impl == "nng" && num($0, "records_per_msg") > 1) ? "batch" : "oneway"
      } else if (shape == "remote_pingpong") {
        rows = "p50 p99"
      } else if (shape == "remote_transfer") {
        if (miss == "" && (num($0, "size_mib") != 16 || str($0, "alloc") == "wrap")) next
        rows = "xfer"
      } else next
      n = split(rows, r, " ")
      for (i = 1; i <= n; i++) {
        if (miss != "") { why[r[i], impl] = miss; continue }
        if (r[i] == "oneway" || r[i] == "batch") add(r[i], impl, num($0, "msgs_per_s"))
        if (r[i] == "batch") add("batch_mb", impl, num($0, "mb_per_s"))
        if (r[i] == "p50") add("p50", impl, num($0, "p50_us"))
        if (r[i] == "p99") add("p99", impl, num($0, "p99_us"))
        if (r[i] == "xfer") add("xfer", impl, num($0, "us_per_msg") / 1000)
      }
    }
    END {
      print "| shape | weft | weft-nng | erlang | nng pair1 | weft/weft-nng | weft/erlang | goal | met? |"
      print "|---|---|---|---|---|---|---|---|---|"
      split("oneway batch p50 p99 xfer", order, " ")
      label["oneway"] = "one-way {seq, tag}, msgs/s"
      label["batch"] = "one-way, records/s in 64 KiB nng messages"
      label["p50"] = "round trip p50, us"
      label["p99"] = "round trip p99, us"
      label["xfer"] = "16 MiB to the other node, ms"
      goal["oneway"] = ">= 4x Erlang"; goal["p50"] = "<= 1.1x nng pair1"; goal["xfer"] = "<= Erlang"
      for (k = 1; k <= 5; k++) {
        row = order[k]
        w = vals[row, "weft"] != "" ? med(vals[row, "weft"]) : ""
        e = vals[row, "erlang"] != "" ? med(vals[row, "erlang"]) : ""
        p = vals[row, "nng"] != "" ? med(vals[row, "nng"]) : ""
        wn = vals[row, "weft-nng"] != "" ? med(vals[row, "weft-nng"]) : ""
        ratio = (w != "" && e != "" && e > 0) ? sprintf("%.2f", w / e) : "-"
        rn = (w != "" && wn != "" && wn > 0) ? sprintf("%.2f", w / wn) : "-"
        met = "-"
        if (row == "oneway" && w != "" && e != "") met = (w >= 4 * e) ? "yes" : "no"
        if (row == "p50" && w != "" && p != "") met = (w <= 1.1 * p) ? "yes" : "no"
        if (row == "xfer" && w != "" && e != "") met = (w <= e) ? "yes" : "no"
        nn = cell(row, "nng")
        if (row == "batch" && vals["batch_mb", "nng"] != "") nn = nn ", " fmt(med(vals["batch_mb", "nng"])) " MB/s"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label[row], cell(row, "weft"), cell(row, "weft-nng"), cell(row, "erlang"), nn, rn, ratio, (row in goal) ? goal[row] : "-", met
      }
    }' "$1"
}

main() {
  need_cmd erl erlang-base
  need_cmd erlc erlang-base
  need_file /usr/include/nng/nng.h libnng-dev
  build || { echo "remote.sh: build failed" >&2; exit 1; }
  [ -n "$OUT" ] || OUT="$BUILD_DIR/remote-$(date +%Y%m%d-%H%M%S).jsonl"
  : >"$OUT"
  : >"$OUT.log"
  local load0 start=$SECONDS rep shape impl order
  load0="$(cut -d' ' -f1-3 /proc/loadavg)"
  for ((rep = 0; rep < REPEAT; rep++)); do
    order="weft weft-nng erlang nng"
    ((rep % 2)) && order="nng erlang weft-nng weft"
    for shape in "${SHAPES[@]}"; do
      for impl in $order; do
        run_one "$impl" "$shape" "$rep"
        # nng's batched row: right after its one-record-per-message run.
        if [ "$impl" = nng ] && [ "$shape" = remote_oneway ]; then
          run_one nng remote_oneway_batch "$rep"
        fi
      done
    done
  done
  say "done in $((SECONDS - start)) s; JSON lines in $OUT"
  echo
  echo "weft remote shapes vs Erlang/OTP $(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().') distribution and nng $(dpkg-query -W -f='${Version}' libnng-dev 2>/dev/null) pair1 (tcp, 127.0.0.1), $REPEAT repetition(s)$([ "$QUICK" = 1 ] && echo ', --quick'), $(nproc) CPUs, load average at start ${load0}, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  report "$OUT"
  exit "$FAILED"
}

if [ -n "$REPORT" ]; then
  [ -r "$REPORT" ] || { echo "remote.sh: cannot read $REPORT" >&2; exit 2; }
  report "$REPORT"
  exit 0
fi
main
