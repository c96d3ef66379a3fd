#!/usr/bin/env bash
# quickstart.sh: set up a fresh Debian 12 machine for weft, then build and run.
#
#   tools/quickstart.sh deps    install the missing Debian packages (as root, or
#                               through sudo); apt-get update only if needed
#   tools/quickstart.sh demo    deps, Release build in build/, run the flagship
#                               demo (build/examples/flagship --demo, or
#                               worker_hello --demo until flagship exists)
#   tools/quickstart.sh test [test|asan|tsan|fuzz ...]
#                               deps, then build and run ctest in build-test
#                               (RelWithDebInfo), build-asan (address,undefined),
#                               build-tsan (thread), all with -Werror, and
#                               build-fuzz (clang, each fuzz target 60 s); print
#                               one summary line per build and a last line
#                               "N passed, N failed"; exit 1 if anything failed
#
# Works from any directory (it cd's to the repository). Compiler: $CC, default
# gcc. Sanitizer suppressions, if present: tests/tsan.supp, tests/lsan.supp.
# ThreadSanitizer runs under `setarch -R` when the kernel's mmap layout breaks
# it ("FATAL: ThreadSanitizer: unexpected memory mapping").
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
export CC="${CC:-gcc}"
JOBS="$(nproc 2>/dev/null || echo 2)"
PACKAGES=(build-essential cmake pkg-config libuv1-dev libnng-dev libmbedtls-dev libmsgpack-dev
          openssl libhttp-parser-dev
          libcmocka-dev clang libclang-rt-14-dev)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---- dependencies ---------------------------------------------------------------
installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_deps() {
  local missing=() pkg sudo=()
  command -v dpkg-query >/dev/null || {
    say "not a Debian system: install ${PACKAGES[*]} and node yourself"
    return 0
  }
  for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
  command -v node >/dev/null || missing+=(nodejs)
  if ((${#missing[@]} == 0)); then
    say "dependencies: all present"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "missing ${missing[*]}; run as root"
    sudo=(sudo)
  fi
  say "installing: ${missing[*]}"
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}

# ---- build helpers ----------------------------------------------------------------
# The compiler comes from $CC, which CMake reads on a build dir's first
# configure only (passing -DCMAKE_C_COMPILER to an existing dir would wipe its
# cache, options included): to switch compilers, remove the build dir.
configure_and_build() { # dir, cmake args...
  local dir="$1"
  shift
  cmake -S . -B "$dir" "$@" &&
    cmake --build "$dir" -j "$JOBS"
}

# Prints "setarch <arch> -R" if TSan binaries need ASLR off here, else nothing.
tsan_launcher() {
  local tmp out
  tmp="$(mktemp -d)"
  printf 'int main(void) { return 0; }\n' >"$tmp/t.c"
  if ! "$CC" -fsanitize=thread "$tmp/t.c" -o "$tmp/t" 2>/dev/null; then
    rm -rf "$tmp"
    return 0 # the build will report the real problem
  fi
  out="$("$tmp/t" 2>&1)" || true
  if [[ "$out" == *"unexpected memory mapping"* ]] ||
     ! "$tmp/t" >/dev/null 2>&1; then
    if setarch "$(uname -m)" -R "$tmp/t" >/dev/null 2>&1; then
      echo "setarch $(uname -m) -R"
    fi
  fi
  rm -rf "$tmp"
}

# ---- demo -------------------------------------------------------------------------
cmd_demo() {
  install_deps
  configure_and_build build -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF ||
    die "build failed"
  local demo=build/examples/flagship
  [[ -x "$demo" ]] || demo=build/examples/worker_hello
  [[ -x "$demo" ]] || die "no demo program built (examples/flagship.c or worker_hello.c)"
  say "running $demo --demo"
  exec "$demo" --demo
}

# ---- test -------------------------------------------------------------------------
SUMMARY=()
TOTAL_PASSED=0
TOTAL_FAILED=0

# run_build name build_type sanitizer [cmake args...]: configure, build,
# ctest; record counts.
run_build() {
  local name="$1" type="$2" san="$3"
  shift 3
  local dir="build-$name"
  local log="$dir/quickstart-ctest.log" launcher=() registered line passed failed total
  say "$dir: configure + build ($type, sanitizer $san, -Werror)"
  mkdir -p "$dir"
  if ! configure_and_build "$dir" -DCMAKE_BUILD_TYPE="$type" -DWEFT_WERROR=ON \
       -DWEFT_SANITIZER="$san" "$@"; then
    registered="$(ctest --test-dir "$dir" -N 2>/dev/null |
                  sed -n 's/^Total Tests: \([0-9]*\).*/\1/p')"
    failed="${registered:-0}"
    ((failed > 0)) || failed=1
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    SUMMARY+=("$dir: BUILD FAILED (${failed} tests counted as failed)")
    return 1
  fi
  case "$san" in
    thread)
      export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
      [[ ! -f tests/tsan.supp ]] ||
        TSAN_OPTIONS+=" suppressions=$PWD/tests/tsan.supp"
      read -r -a launcher <<<"$(tsan_launcher)"
      ((${#launcher[@]} == 0)) || say "$dir: TSan needs ASLR off: ${launcher[*]}"
      ;;
    none) ;;
    *)
      export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
      [[ ! -f tests/lsan.supp ]] ||
        export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
      export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
      ;;
  esac
  say "$dir: ctest"
  set +e
  "${launcher[@]}" ctest --test-dir "$dir" --output-on-failure -j2 2>&1 | tee "$log"
  set -e
  unset TSAN_OPTIONS ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
  line="$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)"
  if [[ -n "$line" ]]; then
    failed="$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")"
    total="$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")"
    passed=$((total - failed))
  elif grep -q 'No tests were found' "$log"; then
    passed=0 failed=0 line="no tests"
  else
    passed=0 failed=1 line="ctest did not finish"
  fi
  TOTAL_PASSED=$((TOTAL_PASSED + passed))
  TOTAL_FAILED=$((TOTAL_FAILED + failed))
  SUMMARY+=("$dir: $passed passed, $failed failed ($line)")
  ((failed == 0))
}

cmd_test() {
  local builds=("$@") b ok=0
  ((${#builds[@]})) || builds=(test asan tsan fuzz)
  install_deps
  for b in "${builds[@]}"; do
    case "$b" in
      test) run_build test RelWithDebInfo none || ok=1 ;;
      asan) run_build asan Debug address,undefined || ok=1 ;;
      tsan) run_build tsan Debug thread || ok=1 ;;
      # Every decoder of outside input, fuzzed for WEFT_FUZZ_SECONDS (60) each.
      fuzz) CC=clang run_build fuzz RelWithDebInfo none -DWEFT_BUILD_FUZZ=ON \
              -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_EXAMPLES=OFF -DWEFT_BUILD_TOOLS=OFF || ok=1 ;;
      *) die "unknown build '$b' (test, asan, tsan, fuzz)" ;;
    esac
  done
  echo
  printf '%s\n' "${SUMMARY[@]}"
  echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
  return "$ok"
}

case "${1:-}" in
  deps) install_deps ;;
  demo) cmd_demo ;;
  test) shift; cmd_test "$@" ;;
  *) usage ;;
esac
