#!/usr/bin/env bash
# The Makefile's platform probes on machines we do not have (make test runs this; ~2 s). There is no Mac here, so
# this script puts stubs first on PATH: `uname` says Darwin arm64, `brew` answers for a fake Homebrew prefix, and
# fake compilers behave as Apple clang (no -fopenmp without -Xpreprocessor, no -march=native, no GCC-only warning
# flags, omp.h only from libomp's own prefix) and as Homebrew's LLVM clang (its own OpenMP). `make flags` then
# shows what the Makefile would use; each scenario checks those flags.
#   usage: tests/makefile_platforms.sh
# What this cannot show: that a real Apple toolchain takes the flags. That is reasoned from Apple's and Homebrew's
# documentation (README, "Notes for newcomers").
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
FAKE=$(mktemp -d "${TMPDIR:-/tmp}/fbi_platforms.XXXXXX")
trap 'rm -rf "$FAKE"' EXIT
passed=0
failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1"; [ -n "${2:-}" ] && printf '    %s\n' "$2"; failed=$((failed + 1)); }

BREW=$FAKE/homebrew
mkdir -p "$FAKE/bin" "$BREW/include/eigen3" "$BREW/include/doctest" "$BREW/opt/llvm/bin" "$BREW/opt/llvm/include"
touch "$BREW/opt/llvm/include/omp.h"
cat > "$FAKE/bin/uname" << 'EOF'
#!/bin/sh
case "$1" in -s) echo Darwin ;; -m) echo arm64 ;; *) echo Darwin ;; esac
EOF
cat > "$FAKE/bin/brew" << EOF
#!/bin/sh
[ "\$1" = --prefix ] || exit 1
case "\${2:-}" in "") echo "$BREW" ;; *) echo "$BREW/opt/\$2" ;; esac
EOF
# A fake compiler: FAKE_KIND=apple or llvm. It accepts what that compiler accepts and fails otherwise.
cat > "$FAKE/bin/fakecxx" << 'EOF'
#!/bin/bash
src=$(cat 2> /dev/null)
prev="" ; omp=0 ; inc_ok=0 ; need_omp_h=0 ; libomp=0
[[ $src == *"omp.h"* ]] && need_omp_h=1
for a in "$@"; do
  case $a in
    -march=native) exit 1 ;;                                   # arm64 clang: -mcpu=native instead
    -Wno-maybe-uninitialized) [[ " $* " == *" -Werror "* ]] && exit 1 ;;  # clang: an unknown warning option
    -fopenmp) if [ "$FAKE_KIND" = apple ] && [ "$prev" != -Xpreprocessor ]; then exit 1; fi; omp=1 ;;
    -I*) [ -f "${a#-I}/omp.h" ] && inc_ok=1 ;;
    -lomp) libomp=1 ;;
  esac
  prev=$a
done
if [ $need_omp_h = 1 ]; then
  [ $omp = 1 ] || exit 1
  if [ "$FAKE_KIND" = apple ]; then [ $inc_ok = 1 ] && [ $libomp = 1 ] || exit 1; fi
fi
exit 0
EOF
chmod +x "$FAKE/bin/uname" "$FAKE/bin/brew" "$FAKE/bin/fakecxx"
ln -s "$FAKE/bin/fakecxx" "$BREW/opt/llvm/bin/clang++"

flags() {  # flags KIND CXX [make args...]: the Makefile's `make flags` on the fake Mac
  local kind=$1 cxx=$2
  shift 2
  (cd "$ROOT" && PATH="$FAKE/bin:$PATH" FAKE_KIND=$kind make -s --no-print-directory CXX="$cxx" "$@" flags 2>&1)
}
has() { grep -qF -- "$2" <<< "$1"; }

# 1. Apple clang with Homebrew's libomp installed
mkdir -p "$BREW/opt/libomp/include" "$BREW/opt/libomp/lib"
touch "$BREW/opt/libomp/include/omp.h"
out=$(flags apple "$FAKE/bin/fakecxx")
if has "$out" "platform: Darwin arm64 (Homebrew $BREW libomp $BREW/opt/libomp)" &&
   has "$out" "-Xpreprocessor -fopenmp -I$BREW/opt/libomp/include" && has "$out" "LDLIBS:   -L$BREW/opt/libomp/lib -lomp" &&
   has "$out" "-isystem $BREW/include/eigen3" && has "$out" "-isystem $BREW/include" && has "$out" "-mcpu=native" &&
   ! has "$out" "-Wno-maybe-uninitialized" && ! has "$out" "-march=native"; then
  ok "Apple clang + libomp: -Xpreprocessor -fopenmp with libomp's prefix, -lomp, Homebrew's include path, -mcpu=native"
else fail "Apple clang + libomp" "$out"; fi

# 2. Apple clang without libomp: one thread, and the hint that helps
rm -rf "$BREW/opt/libomp"
out=$(flags apple "$FAKE/bin/fakecxx")
if has "$out" "OpenMP:   ✗ OpenMP (one thread: brew install libomp" && ! has "$out" "fopenmp" && has "$out" "LDLIBS:   " &&
   has "$out" "-isystem $BREW/include" && has "$out" "-mcpu=native"; then
  ok "Apple clang without libomp: no OpenMP flags, the message says 'brew install libomp'; Homebrew's headers still found"
else fail "Apple clang without libomp" "$out"; fi

# 3. Homebrew's LLVM clang: its own OpenMP through plain -fopenmp
out=$(flags llvm "$BREW/opt/llvm/bin/clang++")
if has "$out" "OpenMP:   ✓ OpenMP (-fopenmp)" && has "$out" " -fopenmp" && ! has "$out" "-Xpreprocessor" &&
   has "$out" "-mcpu=native"; then
  ok "Homebrew LLVM clang: plain -fopenmp, -mcpu=native"
else fail "Homebrew LLVM clang" "$out"; fi

# 4. NO_OMP=1 says so, instead of suggesting to set it
out=$(flags llvm "$BREW/opt/llvm/bin/clang++" NO_OMP=1)
has "$out" "OpenMP:   ✗ OpenMP (NO_OMP=1: one thread)" && ! has "$out" "fopenmp" &&
  ok "NO_OMP=1: no OpenMP flags, and the status says NO_OMP=1" || fail "NO_OMP=1" "$out"

# 5. and this machine itself, for contrast (not faked)
out=$(cd "$ROOT" && make -s --no-print-directory flags)
has "$out" "platform: $(uname -s) $(uname -m)" && ok "this machine: $(grep -E '^(OpenMP|target):' <<< "$out" | tr -s ' ' | paste -sd ';' -)" ||
  fail "make flags on this machine" "$out"

echo "# $passed ok, $failed failed"
[ $failed -eq 0 ]
