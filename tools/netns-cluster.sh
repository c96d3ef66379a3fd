#!/usr/bin/env bash
# netns-cluster.sh: examples/dist_gateway across 3 Linux network namespaces,
# as if on 3 machines (separate network stacks, latency, loss), on one host.
#
#   sudo tools/netns-cluster.sh [BUILD_DIR] [-- extra dist_gateway --demo flags]
#
# Namespaces (names prefixed with wgw$$- so parallel runs do not collide):
#   front  192.0.2.1/24 --veth-- 192.0.2.2/24     b1
#   front  198.51.100.1/24 --veth-- 198.51.100.2/24 b2
#   b1     203.0.113.1/24 --veth-- 203.0.113.2/24  b2   (unused by the demo: a
#                                                      third link for a full mesh)
# Addresses come from the documentation ranges only (RFC 5737); no default
# route, nothing leaves the namespaces. Each link gets `tc netem delay 2ms
# 1ms loss 0.5%` on both ends when the kernel has sch_netem; without it the
# script says so and runs the links plain (`NETEM=require` makes that an
# error, exit 1).
#
# The demo runs inside the front namespace: it starts the front there and
# one back end in each other namespace (`ip netns exec`), over tcp:// on
# those addresses, drives load, SIGKILLs b1, restarts it and prints the
# figures (requests, failures, retries, shares, recovery time). Exit status:
# the demo's (0: no failed request and b1 took traffic again); 77: not root
# or no network namespaces here (a skip for ctest). Bounded: the demo gives
# up after 50 s, the whole script after 90 s. The namespaces and links are
# deleted on exit, on failure too (trap).
set -euo pipefail

BUILD="${1:-build}"
shift $(($# > 0 ? 1 : 0)) || true
[[ "${1:-}" == "--" ]] && shift
EXTRA=("$@")
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
EXE="$BUILD/examples/dist_gateway"

skip() { echo "netns-cluster: skipped: $*" >&2; exit 77; }
[[ "$(id -u)" == 0 ]] || skip "needs root"
if ! command -v ip > /dev/null || ! command -v tc > /dev/null; then
  echo "installing iproute2 ..." >&2
  (apt-get install -y -q iproute2 > /dev/null 2>&1 ||
    { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q iproute2 > /dev/null 2>&1; }) ||
    { echo "netns-cluster: cannot install iproute2" >&2; exit 1; }
fi
[[ -x "$EXE" ]] || { echo "netns-cluster: $EXE not built (needs libhttp-parser-dev)" >&2; exit 1; }
EXE="$(readlink -f "$EXE")"

P="wgw$$"
NS_F="$P-front" NS_1="$P-b1" NS_2="$P-b2"
cleanup() {
  local ns
  for ns in "$NS_F" "$NS_1" "$NS_2"; do
    if ip netns pids "$ns" > /dev/null 2>&1; then
      ip netns pids "$ns" 2> /dev/null | xargs -r kill -9 2> /dev/null || true
      ip netns del "$ns" 2> /dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS_F" 2> /dev/null || skip "ip netns add failed (no network namespaces here)"
ip netns add "$NS_1"
ip netns add "$NS_2"
for ns in "$NS_F" "$NS_1" "$NS_2"; do
  ip -n "$ns" link set lo up
done

# link NS_A IF_A ADDR_A NS_B IF_B ADDR_B: a veth pair, one end in each.
link() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$4" addr add "$6" dev "$5"
  ip -n "$1" link set "$2" up
  ip -n "$4" link set "$5" up
}
link "$NS_F" f-b1 192.0.2.1/24 "$NS_1" b1-f 192.0.2.2/24
link "$NS_F" f-b2 198.51.100.1/24 "$NS_2" b2-f 198.51.100.2/24
link "$NS_1" b1-b2 203.0.113.1/24 "$NS_2" b2-b1 203.0.113.2/24

NETEM_ARGS=(delay 2ms 1ms loss 0.5%)
netem="on: ${NETEM_ARGS[*]} on each end of each link"
for pair in "$NS_F f-b1" "$NS_1 b1-f" "$NS_F f-b2" "$NS_2 b2-f" "$NS_1 b1-b2" "$NS_2 b2-b1"; do
  if ! ip netns exec ${pair% *} tc qdisc add dev "${pair#* }" root netem "${NETEM_ARGS[@]}" \
      2> /dev/null; then
    netem="OFF: this kernel has no sch_netem (tc: 'Specified qdisc kind is unknown'); links are plain"
    [[ "${NETEM:-}" == require ]] && { echo "netns-cluster: netem $netem" >&2; exit 1; }
    break
  fi
done
echo "netns-cluster: namespaces $NS_F (192.0.2.1, 198.51.100.1), $NS_1 (192.0.2.2)," \
     "$NS_2 (198.51.100.2); netem $netem"
if command -v ping > /dev/null; then
  for addr in 192.0.2.2 198.51.100.2; do
    ip netns exec "$NS_F" ping -c 5 -i 0.2 -q "$addr" | tail -1 | sed "s/^/netns-cluster: front->$addr /" || true
  done
fi

rc=0
timeout -k 5 90 ip netns exec "$NS_F" "$EXE" --demo --deadline-s 50 \
  --backend-host "192.0.2.2@$NS_1" --backend-host "198.51.100.2@$NS_2" ${EXTRA[@]+"${EXTRA[@]}"} || rc=$?
echo "netns-cluster: dist_gateway --demo exit status $rc"
exit "$rc"
