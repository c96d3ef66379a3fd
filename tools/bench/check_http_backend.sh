#!/usr/bin/env bash
# check_http_backend.sh: the ctest check that weft-http-backend (what nginx
# proxies to in tools/bench/dist.sh) does the same work as a dist_gateway back
# end, so that the benchmark compares equal workers:
#
#   check_http_backend.sh <weft-http-backend> <dist_gateway>
#
# Starts weft-http-backend on a free port, and a dist_gateway back end and
# front (1 worker); GETs /sha/check and /sha/other through each; passes only
# if every answer is a 200 with a 64-hex-digit body, the two stacks give the
# same body for the same path and different bodies for different paths, and
# weft-http-backend exits 0 on SIGTERM. Every process is stopped by its pid;
# every wait is bounded (15 s).
set -uo pipefail
HB="${1:?usage: check_http_backend.sh <weft-http-backend> <dist_gateway>}"
GW="${2:?usage: check_http_backend.sh <weft-http-backend> <dist_gateway>}"
TMP="$(mktemp -d /tmp/weft-check-hb.XXXXXX)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "check_http_backend: FAIL: $*" >&2; for f in "$TMP"/*.out; do echo "--- $f" >&2; cat "$f" >&2; done; exit 1; }
wait_line() {
  for _ in $(seq 1 150); do grep -Eq "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "no line like '$2' in $1 within 15 s"
}
# get PORT PATH: the status line and the body of one GET.
get() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: check\r\nConnection: close\r\n\r\n' "$2" >&3
  local resp
  resp="$(timeout 5 cat <&3)"
  exec 3<&-
  printf '%s\n' "$resp" | head -n 1 | tr -d '\r'
  printf '%s\n' "$resp" | tail -n 1
}

"$HB" 0 h1 >"$TMP/hb.out" 2>&1 &
HB_PID=$!
PIDS+=("$HB_PID")
"$GW" --backend tcp://127.0.0.1:0 b1 --die-with-parent >"$TMP/be.out" 2>&1 &
PIDS+=($!)
wait_line "$TMP/hb.out" "^http_backend h1 pid $HB_PID listening on 127\.0\.0\.1:[0-9]+$"
wait_line "$TMP/be.out" "listening on tcp://"
HB_PORT="$(grep -Eo ':[0-9]+$' "$TMP/hb.out" | tr -d :)"
BE_URL="$(grep -Eo 'tcp://[0-9.]+:[0-9]+' "$TMP/be.out")"
"$GW" --front 0 --workers 1 --die-with-parent --backends "$BE_URL" >"$TMP/front.out" 2>&1 &
PIDS+=($!)
wait_line "$TMP/front.out" "provider .* up"
FRONT_PORT="$(sed -nE 's/^front listening on http:\/\/[^:]+:([0-9]+).*/\1/p' "$TMP/front.out")"

declare -A body
for who in hb gw; do
  port="$HB_PORT"
  [ "$who" = gw ] && port="$FRONT_PORT"
  for path in /sha/check /sha/other; do
    mapfile -t r < <(get "$port" "$path")
    [ "${r[0]:-}" = "HTTP/1.1 200 OK" ] || fail "$who GET $path: status '${r[0]:-}'"
    [[ "${r[1]:-}" =~ ^[0-9a-f]{64}$ ]] || fail "$who GET $path: body '${r[1]:-}'"
    body[$who$path]="${r[1]}"
    echo "$who GET $path -> ${r[1]}"
  done
done
[ "${body[hb/sha/check]}" = "${body[gw/sha/check]}" ] || fail "different work for /sha/check"
[ "${body[hb/sha/other]}" = "${body[gw/sha/other]}" ] || fail "different work for /sha/other"
[ "${body[hb/sha/check]}" != "${body[hb/sha/other]}" ] || fail "the digest ignores the path"
kill -TERM "$HB_PID"
for _ in $(seq 1 150); do kill -0 "$HB_PID" 2>/dev/null || break; sleep 0.1; done
wait "$HB_PID"
rc=$?
[ "$rc" = 0 ] || fail "weft-http-backend exited with $rc on SIGTERM"
echo "check_http_backend: ok (same digests through both stacks; clean exit on SIGTERM)"
