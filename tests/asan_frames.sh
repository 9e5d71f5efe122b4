#!/usr/bin/env bash
# Why `make sanitize` is built for x86-64-v3 and not -march=native (README, Robustness). Runs on any x86-64
# machine: it only compiles and reads the machine code, it does not need an AVX-512 CPU.
#
# With ASan's use-after-return check (detect_stack_use_after_return=1) an instrumented function takes its
# stack frame from the fake stack that __asan_stack_malloc_N returns (4096-byte aligned). GCC 12, on an
# AVX-512 target, gives some local arrays a 64-byte alignment that only the prologue's `and $-64,%rsp`
# provides on the real stack; in the fake frame the same slot can sit 32 bytes off, and the first aligned
# zmm move there (vmovdqa64) faults with SIGSEGV. This script counts, per target, the functions of one test
# file that realign their frame to 64 bytes and can take a fake frame: > 0 means the hazard is there.
#
#   bash tests/asan_frames.sh [file.cpp]      (default tests/test_quant.cpp; ~4 minutes: three compiles)
set -euo pipefail
src=${1:-tests/test_quant.cpp}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
flags="-std=c++17 -O1 -fopenmp -isystem /usr/include/eigen3 -fsanitize=address,undefined -fno-omit-frame-pointer -g -w"
# GCC 12 does not know znver4; -march=native on a Zen 4 CPU gives znver3 plus the AVX-512 extensions below.
zen4="-march=znver3 -mavx512f -mavx512dq -mavx512cd -mavx512bw -mavx512vl -mavx512ifma -mavx512vbmi -mavx512vbmi2 -mavx512vnni -mavx512bitalg -mavx512vpopcntdq -mavx512bf16"
for target in "x86-64-v3|-march=x86-64-v3" "zen4 (AVX-512)|$zen4" "sapphirerapids|-march=sapphirerapids"; do
  name=${target%%|*}; march=${target#*|}
  ${CXX:-g++} $flags $march -c "$src" -o "$tmp/t.o"
  objdump -dr --no-show-raw-insn "$tmp/t.o" | awk -v name="$name" '
    /^[0-9a-f]+ <.*>:$/ { if (re && fake) { n++; if (zmm) z++ } re = fake = zmm = 0; next }
    /and +\$0xffffffffffffffc0,%rsp/ { re = 1 }
    /__asan_stack_malloc/ { fake = 1 }
    /vmov(dqa64|dqa32|aps|apd) .*zmm/ { zmm = 1 }
    END { if (re && fake) { n++; if (zmm) z++ }
          printf "%-16s functions with a 64-byte-realigned frame that can move to the fake stack: %3d (%d with aligned zmm moves)\n", name, n, z }'
done
