#!/usr/bin/env bash
# make test with every compiler and target our users have that this machine can run (.ci/run calls this):
#   clang 14 (Debian 12's default clang), clang 16 with OpenMP, clang 19 without OpenMP (Debian 12's libomp-16-dev
#   and libomp-19-dev cannot be installed together), and g++ 12 cross-built for arm64, run under qemu-user.
# Each one builds in its own directory (build/<name>), so the default build is not touched.
#   usage: tests/compilers.sh [NAME ...]     (NAME: clang14 clang16 clang19 arm64; default: all)
# Installs what is missing with apt-get when run as root on Debian/Ubuntu. Prints one line per compiler.
set -u
cd "$(dirname "$0")/.."
names=${*:-clang14 clang16 clang19 arm64}
need=()
for n in $names; do
  case $n in
    clang14) command -v clang++-14 > /dev/null || need+=(clang-14) ;;
    clang16) command -v clang++-16 > /dev/null && [ -e /usr/lib/llvm-16/lib/libomp.so ] || need+=(clang-16 libomp-16-dev) ;;
    clang19) command -v clang++-19 > /dev/null || need+=(clang-19) ;;
    arm64) command -v aarch64-linux-gnu-g++ > /dev/null && command -v qemu-aarch64 > /dev/null || need+=(g++-aarch64-linux-gnu qemu-user) ;;
    *) echo "compilers: unknown name '$n' (clang14 clang16 clang19 arm64)"; exit 2 ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "compilers: installing ${need[*]} with apt-get ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") > /dev/null || exit 1
  else
    echo "compilers: ✗ missing ${need[*]} (Debian/Ubuntu: sudo apt-get install -y ${need[*]})"; exit 1
  fi
fi
failed=0
for n in $names; do
  case $n in
    clang14) args=(CXX=clang++-14) ;;
    clang16) args=(CXX=clang++-16) ;;
    clang19) args=(CXX=clang++-19 NO_OMP=1) ;;
    arm64) args=(CXX=aarch64-linux-gnu-g++ "RUN=qemu-aarch64 -L /usr/aarch64-linux-gnu") ;;
  esac
  t0=$(date +%s)
  log=build/compilers_$n.log
  mkdir -p build
  # INTEROP_TESTS=0: the PyTorch comparisons (tests/interop.sh) run once, with the default compiler; doctest's X1-X6
  # cover the same readers here
  if make --no-print-directory -j2 BUILD=build/$n "${args[@]}" INTEROP_TESTS=0 test > "$log" 2>&1; then
    warnings=$(grep -cE '^[^ /][^ ]*:[0-9]+:[0-9]+: warning:' "$log")  # paths under /usr (Eigen, the system) excluded
    echo "compilers: ✓ $n: $(grep -m1 '^build:' "$log" | cut -d' ' -f2-4) — $(grep -m1 '^tests:' "$log"), $(grep -c '^ok - ' "$log") script checks; $warnings warnings from the project's files ($(( $(date +%s) - t0 )) s; log $log)"
  else
    echo "compilers: ✗ $n failed ($(( $(date +%s) - t0 )) s): tail of $log:"; tail -15 "$log"; failed=$((failed + 1))
  fi
done
[ $failed -eq 0 ]
