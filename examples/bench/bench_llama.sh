#!/usr/bin/env bash
# bench_llama.sh — build/generate and build/perplexity at the released FBI-LLM shapes (130M, 1.3B, 7B) on synthetic
# checkpoints in the release format (sharded fp32 safetensors + config.json, written by tests/interop/torch_ref.py
# one tensor at a time), with a 32000-piece BPE tokenizer trained on TinyShakespeare (random weights need some
# tokenizer of the model's vocabulary size; the released models bring LLaMA-2's).
#   make bench-llama                 130M and 1.3B (≈ 15 min);   BIG=1 make bench-llama   adds 7B (27 GB on disk,
#                                    written once, removed at the end; ≈ 10 min more)
# Per size: import (the first packed run: time, peak RSS, packed file size); generate 256 tokens after a short
# prompt (decode tokens/s, RSS: peak of a run that reuses the cache); prefill tokens/s of a 383-token prompt through
# the 1-bit kernels, through Ŵ unpacked to fp32 and (where it fits) the float model. 130M also checks itself against
# the PyTorch reference first: perplexity (2 windows of 2048) float within 1e-4, packed reported; greedy tokens.
# Verify first, then time: a size whose check fails is not timed. Prints the machine, SIMD flags and threads.
set -u
BUILD=${BUILD:-build}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REF="$PY $ROOT/tests/interop/torch_ref.py"
WORK=${WORK:-$BUILD/bench_llama}
SIZES=${SIZES:-130m 1.3b${BIG:+ 7b}}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
GEN=$BUILD/generate
PPL=$BUILD/perplexity
for b in "$GEN" "$PPL"; do [ -x "$b" ] || { echo "bench-llama: $b is not built (make llama)"; exit 1; }; done
corpus=$(sh "$ROOT/data/get_tinyshakespeare.sh") || exit 1
mkdir -p "$WORK"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "SIMD:    $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512bw|avx512_vpopcntdq|avx512_vnni|fma)$' | tr '\n' ' ')"
echo "threads: OMP_NUM_THREADS=$OMP_NUM_THREADS"

# The tokenizer: 32000 BPE pieces with byte fallback, as LLaMA-2's (trained once, kept in WORK)
if [ ! -s "$WORK/tok32k.model" ]; then
  spm_train --input="$corpus" --model_prefix="$WORK/tok32k" --vocab_size=32000 --model_type=bpe --byte_fallback=true \
    --character_coverage=1.0 --minloglevel=2 > "$WORK/spm.log" 2>&1 || { echo "spm_train failed: $(tail -2 "$WORK/spm.log")"; exit 1; }
fi
head -c 300000 "$corpus" > "$WORK/text.txt"   # ≈ 90,000 tokens: 40 windows of 2048
prompt="ROMEO: What light through yonder window breaks?"
long=$(head -c 1700 "$corpus")                 # 383 tokens with this tokenizer (BOS included)
rows=()
val() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" | tail -1; }

for size in $SIZES; do
  d=$WORK/$size
  echo "== $size"
  if [ ! -s "$d/model.safetensors.index.json" ]; then
    t0=$(date +%s)
    $REF write-stream "$d" --config "$size" --seed 11 > "$WORK/write-$size.log" || { echo "write $size failed"; continue; }
    echo "wrote $d: $(du -sh "$d" | cut -f1) in $(( $(date +%s) - t0 )) s"
  fi
  cp "$WORK/tok32k.model" "$d/tokenizer.model"
  rm -f "$d/fbi_llm.fbipack"
  # import: the first packed run packs and caches
  $GEN --model "$d" --prompt "$prompt" --max-tokens 1 --temperature 0 > /dev/null 2> "$WORK/import-$size.log" ||
    { echo "import failed: $(tail -1 "$WORK/import-$size.log")"; continue; }
  imp=$(grep -o 'made in [0-9.]* s, peak RSS [0-9]* MiB' "$WORK/import-$size.log")
  pack_mb=$(( $(stat -c %s "$d/fbi_llm.fbipack") / 1048576 ))
  src_mb=$(( $(du -sb "$d" | cut -f1) / 1048576 - pack_mb ))
  echo "import: $imp; packed file $pack_mb MiB (source $src_mb MiB)"

  if [ "$size" = 130m ]; then  # verify against PyTorch before timing anything
    $REF ppl "$d" --tokenizer "$d/tokenizer.model" --text "$WORK/text.txt" --windows 2 > "$WORK/ref-ppl.txt" || { echo "reference failed"; continue; }
    r=$(val mean_nll < "$WORK/ref-ppl.txt")
    f=$($PPL --model "$d" --text "$WORK/text.txt" --windows 2 --float 2> /dev/null | val mean_nll)
    p=$($PPL --model "$d" --text "$WORK/text.txt" --windows 2 2> /dev/null | val mean_nll)
    check=$($PY -c "
import math, sys; r, f, p = $r, $f, $p
print(f'perplexity vs PyTorch: float {math.exp(f):.4f} vs {math.exp(r):.4f} (relative {abs(math.exp(f) - math.exp(r)) / math.exp(r):.1e}); packed {math.exp(p):.4f} ({(math.exp(p) - math.exp(r)) / math.exp(r):+.1e})')
sys.exit(0 if abs(math.exp(f) - math.exp(r)) <= 1e-4 * math.exp(r) else 1)") && echo "ok: $check" || { echo "FAIL: $check"; continue; }
    ptoks=$($PY -c "
import sentencepiece as s; p = s.SentencePieceProcessor(model_file='$d/tokenizer.model'); print(','.join(map(str, [1] + p.encode('''$prompt'''))))")
    want=$($REF generate "$d" --tokens "$ptoks" --n 32 --eos 2 | sed -n 's/^ids: //p')
    got=$($GEN --model "$d" --prompt "$prompt" --max-tokens 32 --temperature 0 --ids --float 2> /dev/null | sed -n 's/^ids: //p')
    gotp=$($GEN --model "$d" --prompt "$prompt" --max-tokens 32 --temperature 0 --ids 2> /dev/null | sed -n 's/^ids: //p')
    [ "$got" = "$want" ] && echo "ok: greedy 32 tokens, float = PyTorch's; packed agrees on the first $($PY -c "
a, b = '$gotp'.split(), '$want'.split(); n = 0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print(n)")" || { echo "FAIL: greedy float '$got' vs PyTorch '$want'"; continue; }
  fi

  # decode: 256 tokens after a short prompt, the cache reused (so RSS is the generating process's, not the import's)
  $GEN --model "$d" --prompt "$prompt" --max-tokens 256 --temperature 0.8 --seed 1 > /dev/null 2> "$WORK/gen-$size.log"
  dec=$(val 'decode' < "$WORK/gen-$size.log"); rss=$(grep -o 'peak [0-9]* MiB' "$WORK/gen-$size.log" | tail -1 | cut -d' ' -f2)
  echo "packed decode: $dec tokens/s, peak RSS $rss MiB  ($(tail -1 "$WORK/gen-$size.log" | cut -c1-160))"
  # prefill of the 383-token prompt: 1-bit kernels, unpacked fp32, float model
  pk=$($GEN --model "$d" --prompt "$long" --max-tokens 0 2>&1 >/dev/null | val 'prefill')
  pu=$($GEN --model "$d" --prompt "$long" --max-tokens 0 --prefill unpack 2>&1 >/dev/null | val 'prefill')
  echo "packed prefill (383 tokens): kernels $pk tokens/s, unpack $pu tokens/s"
  fdec=-; frss=-; fpre=-
  if [ "$size" != 7b ]; then  # the float model (latent + Ŵ in fp32: 2 × 4 bytes per weight) fits 24 GB up to 1.3B
    $GEN --model "$d" --prompt "$prompt" --max-tokens 256 --temperature 0.8 --seed 1 --float > /dev/null 2> "$WORK/genf-$size.log"
    fdec=$(val 'decode' < "$WORK/genf-$size.log"); frss=$(grep -o 'peak [0-9]* MiB' "$WORK/genf-$size.log" | tail -1 | cut -d' ' -f2)
    fpre=$($GEN --model "$d" --prompt "$long" --max-tokens 0 --float 2>&1 >/dev/null | val 'prefill')
    echo "float decode: $fdec tokens/s, peak RSS $frss MiB; float prefill $fpre tokens/s"
  fi
  rows+=("| $size | $imp | $pack_mb MiB (from $src_mb MiB) | $dec | $rss MiB | $pk | $pu | $fdec | $frss MiB | $fpre |")
  [ "$size" = 7b ] && { rm -rf "$d"; echo "removed $d"; }
done
echo
echo "| model | import (first packed run) | packed file | packed decode tok/s | packed peak RSS | prefill tok/s, 1-bit kernels | prefill tok/s, unpacked fp32 | float decode tok/s | float peak RSS | float prefill tok/s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
