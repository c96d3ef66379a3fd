#!/usr/bin/env bash
# build.sh: builds the CAF peer of weft-bench's actor shapes (actors.cpp)
#
#   tools/bench/caf/build.sh OUT
#
# into the executable OUT (tools/bench/run.sh uses $BUILD_DIR/caf-actors),
# with the system's C++ compiler against Debian's libcaf-dev (CAF 0.17),
# -O2 as a CAF user would build. Rebuilds only when actors.cpp is newer than
# OUT. Exit status 0, or 1 (libcaf-dev or a C++ compiler missing, or the
# build failed; said on stderr).
set -euo pipefail
HERE="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
OUT="${1:?usage: build.sh OUT}"
SRC="$HERE/actors.cpp"
[ -x "$OUT" ] && [ "$OUT" -nt "$SRC" ] && exit 0
CXX="${CXX:-c++}"
command -v "$CXX" >/dev/null || { echo "caf/build.sh: no C++ compiler ($CXX)" >&2; exit 1; }
[ -f /usr/include/caf/all.hpp ] || { echo "caf/build.sh: CAF not found (apt-get install libcaf-dev)" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
"$CXX" -std=c++17 -O2 -Wall -Wextra -o "$OUT.tmp" "$SRC" -lcaf_core -pthread
mv "$OUT.tmp" "$OUT"
