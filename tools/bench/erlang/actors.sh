#!/usr/bin/env bash
# actors.sh: the Erlang peer of weft-bench's actor shapes: one measurement in
# one Erlang VM (no distribution, no epmd).
#
#   tools/bench/erlang/actors.sh <actor_spawn|actor_pingpong|actor_ring|actor_oneway> [--n N] [--rep I]
#
# Compiles weft_actor_bench.erl into a temporary directory (removed at the
# end), runs it with erl -noshell (+P large enough for actor_spawn's N
# processes, the default schedulers: one per core), prints its JSON line on
# stdout. Needs erl and erlc (apt-get install erlang-base). Bounded: the VM
# halts itself after 120 s, and this script kills it after $ERL_TIMEOUT s
# (default 150). Exit status: the VM's (0 on success), 2 for a bad command line.
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
    *) echo "actors.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
case "$SHAPE" in
  actor_spawn) : "${N:=1000000}" ;;
  actor_pingpong) : "${N:=2000000}" ;;
  actor_ring) : "${N:=10000000}" ;;
  actor_oneway) : "${N:=2000000}" ;;
  *) echo "usage: actors.sh <actor_spawn|actor_pingpong|actor_ring|actor_oneway> [--n N] [--rep I]" >&2
     exit 2 ;;
esac
case "$N$REP" in *[!0-9]*) echo "actors.sh: --n and --rep take integers" >&2; exit 2 ;; esac
for tool in erl erlc; do
  command -v "$tool" >/dev/null || { echo "actors.sh: $tool not found (apt-get install erlang-base)" >&2; exit 1; }
done

TMP="$(mktemp -d /tmp/weft-erl-actors.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
erlc -o "$TMP" "$HERE/weft_actor_bench.erl" >&2 || exit 1
# +P: the process limit (default 262144) must hold N idle processes and the rest.
timeout -k 5 "${ERL_TIMEOUT:-150}" \
  erl -noshell -noinput +P $((N + 100000)) -pa "$TMP" \
  -run weft_actor_bench main "$SHAPE" "$N" "$REP"
