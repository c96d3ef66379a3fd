#!/usr/bin/env bash
# weft-top-check.sh CLUSTER_HTTP WEFT_TOP: weft-top --once against a live
# cluster_http --metrics: after N requests, its screen shows a row for main
# and each worker context and the balancer's per-worker requests adding up
# to N; the example then exits 0 on SIGTERM. Every wait is bounded.
set -euo pipefail
ch="$1"; top="$2"; n=12
command -v node >/dev/null || { echo "node not found: skipped"; exit 77; }
out=$(mktemp); trap 'kill $pid 2>/dev/null || true; rm -f "$out"' EXIT
"$ch" --workers 2 --port 0 --metrics 127.0.0.1:0 >"$out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q '^metrics on ' "$out" && break; sleep 0.1; done
mport=$(sed -n 's|^metrics on http://127.0.0.1:\([0-9]*\)/metrics$|\1|p' "$out")
hport=$(sed -n 's|^cluster_http: .* on 127.0.0.1:\([0-9]*\)$|\1|p' "$out")
[ -n "$mport" ] && [ -n "$hport" ] || { echo "no ports in: $(cat "$out")"; exit 1; }
for _ in $(seq $n); do
  exec 3<>"/dev/tcp/127.0.0.1/$hport"
  printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
  timeout 10 cat <&3 >/dev/null
  exec 3<&-
done
# Workers report requests every 100 ms: wait (bounded) for the sum to show.
for _ in $(seq 50); do
  screen=$(timeout 20 "$top" --once --interval 200 --no-color "127.0.0.1:$mport")
  sum=$(printf '%s\n' "$screen" | sed -n 's/^    worker [0-9]* .* requests \([0-9]*\) .*/\1/p' |
        awk '{s+=$1} END {print s+0}')
  [ "$sum" = "$n" ] && break
done
printf '%s\n' "$screen"
fail() { echo "FAIL: $*"; exit 1; }
for row in main worker-1 worker-2; do
  printf '%s\n' "$screen" | grep -Eq "^$row +\[" || fail "no row for context $row"
done
printf '%s\n' "$screen" | grep -q '^BALANCERS' || fail "no balancer section"
[ "$sum" = "$n" ] || fail "balancer requests add up to $sum, want $n"
kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null && fail "cluster_http still running 10 s after SIGTERM"
wait $pid || fail "cluster_http exited $?"
echo "weft-top --once: ${n} requests seen, 3 context rows, example exited 0"
