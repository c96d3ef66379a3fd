#!/usr/bin/env bash
# check_peer.sh: the ctest check of one benchmark peer run (tools/CMakeLists.txt):
#
#   check_peer.sh "<shape> <impl> <field>..." <command...>
#
# Runs the command (bounded by $CHECK_TIMEOUT s, default 120) and passes only
# if it exits 0, prints at least one JSON line, every line is an object of the
# given shape and impl, and each listed field is present with a number > 0.
# With CHECK_EPMD=1 (the Erlang peer's tests), also passes only if the run
# leaves epmd as it found it (running or not): the peer cleans up after
# itself. Other tests may run beside an Erlang one, so they do not look.
# Prints what it saw.
set -uo pipefail
read -r -a WANT <<<"${1:?usage: check_peer.sh \"shape impl field...\" command...}"
shift
epmd_up() {
  [ "${CHECK_EPMD:-0}" = 1 ] || { echo unchecked; return; }
  command -v epmd >/dev/null && epmd -names >/dev/null 2>&1 && echo up || echo down
}
before="$(epmd_up)"
out="$(timeout -k 5 "${CHECK_TIMEOUT:-120}" "$@")"
rc=$?
printf '%s\n' "$out"
after="$(epmd_up)"
fail() { echo "check_peer: FAIL: $*" >&2; exit 1; }
[ "$rc" = 0 ] || fail "'$*' exited with $rc"
[ -n "$out" ] || fail "no output"
[ "$before" = "$after" ] || fail "epmd was $before before the run and is $after after it"
while IFS= read -r line; do
  case "$line" in
    "{\"shape\":\"${WANT[0]}\",\"impl\":\"${WANT[1]}\","*"}") ;;
    *) fail "not a ${WANT[0]}/${WANT[1]} JSON line: $line" ;;
  esac
  for f in "${WANT[@]:2}"; do
    [[ "$line" =~ \"$f\":([0-9.]+) ]] || fail "no numeric \"$f\" in: $line"
    awk -v v="${BASH_REMATCH[1]}" 'BEGIN { exit !(v > 0) }' || fail "\"$f\" is not > 0 in: $line"
  done
done <<<"$out"
echo "check_peer: ok (${WANT[*]})"
