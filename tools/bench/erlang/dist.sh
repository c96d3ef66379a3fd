#!/usr/bin/env bash
# dist.sh: the Erlang distribution peer of weft-bench's remote_* shapes: one
# measurement between two Erlang nodes (two OS processes) on 127.0.0.1.
#
#   tools/bench/erlang/dist.sh <remote_oneway|remote_pingpong|remote_transfer|service_pingpong>
#                              [--n N] [--rep I]
#
# Compiles weft_dist_bench.erl into a temporary directory, starts node A
# (erl -name weft_a_<pid>@127.0.0.1, a fresh random cookie), which starts node
# B with OTP's peer module, measures, prints one JSON line on stdout and
# halts; B stops with it. --n is records (oneway), round trips (pingpong),
# 16 MiB transfers (transfer) or gen_server:calls (service_pingpong). Needs erl and erlc (apt-get install
# erlang-base). -name with an IP address: no DNS lookup.
#
# Nothing stays behind: the temporary directory is removed; node B halts when
# A does (or when its connection to A drops); if epmd was not running, this
# script starts it (-relaxed_command_check, so that `epmd -kill` works even if
# a node is still registered) and stops it at the end. Bounded: node A halts itself after 120 s, and this script
# kills it after $ERL_TIMEOUT s (default 150). Exit status: A's (0 on
# success), 2 for a bad command line.
set -uo pipefail

HERE="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
SHAPE="${1:-}"
shift || true
N=""
REP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --n) N="${2:?--n needs a value}"; shift ;;
    --rep) REP="${2:?--rep needs a value}"; shift ;;
    *) echo "dist.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
case "$SHAPE" in
  remote_oneway) : "${N:=200000}" ;;
  remote_pingpong) : "${N:=20000}" ;;
  remote_transfer) : "${N:=20}" ;;
  service_pingpong) : "${N:=20000}" ;;
  *) echo "usage: dist.sh <remote_oneway|remote_pingpong|remote_transfer|service_pingpong> [--n N] [--rep I]" >&2
     exit 2 ;;
esac
case "$N$REP" in *[!0-9]*) echo "dist.sh: --n and --rep take integers" >&2; exit 2 ;; esac
for tool in erl erlc epmd; do
  command -v "$tool" >/dev/null || { echo "dist.sh: $tool not found (apt-get install erlang-base)" >&2; exit 1; }
done

TMP="$(mktemp -d /tmp/weft-erl-bench.XXXXXX)"
EPMD_OURS=0
cleanup() {
  rm -rf "$TMP"
  # epmd outlives the nodes that started it: stop it if it is ours.
  [ "$EPMD_OURS" = 1 ] && epmd -kill >/dev/null 2>&1
  return 0
}
trap cleanup EXIT
if ! epmd -names >/dev/null 2>&1; then
  epmd -daemon -relaxed_command_check || { echo "dist.sh: cannot start epmd" >&2; exit 1; }
  EPMD_OURS=1
fi

erlc -o "$TMP" "$HERE/weft_dist_bench.erl" >&2 || exit 1
COOKIE="weft_bench_$$_${RANDOM}${RANDOM}"
timeout -k 5 "${ERL_TIMEOUT:-150}" \
  erl -noshell -noinput -name "weft_a_$$@127.0.0.1" -setcookie "$COOKIE" -pa "$TMP" \
  -run weft_dist_bench main "$SHAPE" "$N" "$REP" "$TMP"
