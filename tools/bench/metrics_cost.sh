#!/usr/bin/env bash
# metrics_cost.sh BUILD_DIR [REPEATS]: the cost of the metrics sampling on
# weft-bench's oneway (msgs/s) and pingpong (round trips/s) shapes: each
# repeat runs the shape with metrics on (default) and off (WEFT_METRICS=0),
# in alternating order, and the medians and the on/off ratio are printed.
# Goal: ratio >= 0.98 (at most 2% slower). Noisy machines: raise REPEATS.
# Then idle_cpu (% of a core an idle program uses over 2 s) on and off: goal
# under 1% (absolute), as in the README's table.
set -euo pipefail
bench="${1:?usage: metrics_cost.sh BUILD_DIR [REPEATS]}/tools/weft-bench"
reps="${2:-7}"

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
spread() { sort -n | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s..%s", lo, hi}'; }

run() { # shape field n on|off
  local n=(--n "$3")
  [ "$3" != 0 ] || n=()
  if [ "$4" = off ]; then
    WEFT_METRICS=0 "$bench" "$1" "${n[@]}" --repeat 1 | field "$2"
  else
    "$bench" "$1" "${n[@]}" --repeat 1 | field "$2"
  fi
}

for spec in "oneway msgs_per_s 2000000" "pingpong rt_per_s 50000" "idle_cpu cpu_pct 0"; do
  set -- $spec
  on=(); off=()
  for ((i = 0; i < reps; i++)); do
    if ((i % 2)); then
      off+=("$(run "$1" "$2" "$3" off)"); on+=("$(run "$1" "$2" "$3" on)")
    else
      on+=("$(run "$1" "$2" "$3" on)"); off+=("$(run "$1" "$2" "$3" off)")
    fi
  done
  mon=$(printf '%s\n' "${on[@]}" | median); moff=$(printf '%s\n' "${off[@]}" | median)
  printf '%-9s %s: metrics on median %s (%s), off median %s (%s), on/off %.3f, %d repeats\n' \
    "$1" "$2" "$mon" "$(printf '%s\n' "${on[@]}" | spread)" "$moff" \
    "$(printf '%s\n' "${off[@]}" | spread)" "$(echo "$mon $moff" | awk '{print $1/$2}')" "$reps"
done
