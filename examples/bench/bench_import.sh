#!/usr/bin/env bash
# Importing release-sized FBI-LLM checkpoints: a synthetic 130M-shaped pytorch_model.bin (537 MB, one file) and, with
# BIG=1, a 1.3B-shaped one (5.4 GB fp32, two shards + index), both written by the PyTorch reference in the release
# format; fbi_convert imports each and packs it to 1 bit, streaming. Reports wall time and peak RSS against the bound
# 1.5 × (packed result + largest tensor), and deletes the synthetic files afterwards (KEEP=1 keeps them).
#   usage: examples/bench/bench_import.sh [BUILD_DIR]     (make bench-import; BIG=1 make bench-import)
set -eu
BUILD=${1:-build}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CONV=$ROOT/$BUILD/fbi_convert
DIR=${BENCH_DIR:-$ROOT/$BUILD/bench_import}
CSV=$ROOT/$BUILD/bench_import.csv
echo "machine : $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
echo "SIMD    : $(grep -m1 -o -w -E 'avx2|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')(import is I/O and packing: no SIMD kernel involved)"
echo "threads : OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}; disk: $(df -h "$ROOT/$BUILD" | tail -1 | awk '{print $4}') free"
mkdir -p "$DIR"
[ -f "$CSV" ] || echo "model,format,file_bytes,tensors,packed_bytes,largest_tensor_bytes,seconds,peak_rss_mb,bound_mb" > "$CSV"
run() {  # name, torch_ref config, format
  local d=$DIR/$1
  rm -rf "$d" "$d.fbipack"
  echo "== $1: writing the synthetic checkpoint ($2, $3) with the PyTorch reference ..."
  $PY "$ROOT/tests/interop/torch_ref.py" write "$d" --config "$2" --format "$3"
  local bytes; bytes=$(du -cb "$d"/*.bin | tail -1 | cut -f1)
  echo "== $1: fbi_convert import (streaming, packed) — a cold page cache is not forced: the file was just written"
  local out; out=$("$CONV" import "$d" --packed "$d.fbipack")
  echo "$out"
  local secs rss packed largest tensors
  secs=$(grep -o '[0-9.]* s, peak' <<< "$out" | cut -d' ' -f1)
  rss=$(grep -o 'peak RSS [0-9]*' <<< "$out" | cut -d' ' -f3)
  tensors=$(grep -o '[0-9]* tensors' <<< "$out" | cut -d' ' -f1)
  packed=$(stat -c %s "$d.fbipack")
  largest=$($PY -c "import json; c = json.load(open('$d/config.json')); print(4 * c['vocab_size'] * c['hidden_size'])")
  local bound=$(( (packed + largest) * 3 / 2 / 1048576 ))
  echo "$1: $(( bytes / 1048576 )) MB of checkpoint → $(( packed / 1048576 )) MB packed in $secs s; peak RSS $rss MB" \
       "(bound 1.5 × (packed + largest tensor $(( largest / 1048576 )) MB) = $bound MB: $([ "$rss" -le "$bound" ] && echo within || echo ABOVE))"
  echo "$1,$3,$bytes,$tensors,$packed,$largest,$secs,$rss,$bound" >> "$CSV"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$d" "$d.fbipack"
}
run fbi-130m 130m bin
if [ "${BIG:-0}" = 1 ]; then run fbi-1.3b 1.3b bin-sharded; fi
echo "wrote $CSV (appended)"
