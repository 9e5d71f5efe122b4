#!/usr/bin/env bash
# Hugging Face / official FBI-LLM model directories, against an independent PyTorch reference (tests/interop/torch_ref.py):
#   1. synthetic checkpoints in the release format (pytorch_model.bin, sharded .bin + index, model.safetensors,
#      sharded safetensors; fp32, bf16, fp16): build/fbi_convert's float logits = PyTorch's within 1e-5 relative,
#      the packed 1-bit model's within 1e-2 (the int8 activations, [P1]; measured ≈ 6e-3)
#   2. export (official layout and folded) → PyTorch = C++; export → import gives back the checkpoint byte for byte
#   3. every bad input: a one-line message naming the file and key, exit 1, nothing written
#   usage: tests/interop.sh [BUILD_DIR]    (make test-interop; make test runs it). PYTHON: an interpreter with torch.
set -u
BUILD=${1:-build}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONV_BIN=$PWD/$BUILD/fbi_convert
TRAIN_BIN=$PWD/$BUILD/train_tiny
for b in "$CONV_BIN" "$TRAIN_BIN"; do [ -x "$b" ] || { echo "FAIL - $b is not built (make $BUILD/${b##*/})"; exit 1; }; done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fbi_interop.XXXXXX")
WRAP=$(mktemp -d "${TMPDIR:-/tmp}/fbi_wrap.XXXXXX")
trap 'rm -rf "$TMP" "$WRAP"' EXIT
source "$HERE/lib.sh"  # ok, fail, wrap
CONV=$(wrap "$CONV_BIN")
REF="$PY $HERE/interop/torch_ref.py"
cd "$TMP"
TOK=1,5,9,33,2,7,96,0,12,3,44,61,8,8,70,31
# max |a − b| / max |b| of two raw fp32 files, checked against a bound
close() { $PY -c "
import numpy as np, sys
a, b = np.fromfile('$1', '<f4'), np.fromfile('$2', '<f4')
r = np.abs(a - b).max() / np.abs(b).max() if a.shape == b.shape else float('inf')
print(f'{r:.2e}'); sys.exit(0 if r <= $3 else 1)"; }

# ---- 1. release-format files: float and packed logits against PyTorch ---------------------------------------------
for case in "bin fp32" "bin-sharded fp32" "safetensors fp32" "safetensors-sharded fp32" "bin bf16" "safetensors bf16" "safetensors fp16"; do
  set -- $case
  d=$1-$2
  $REF write $d --format $1 --dtype $2 --seed 3 || { fail "torch_ref.py write $d"; continue; }
  $REF logits $d --tokens $TOK --out $d.ref || { fail "torch_ref.py logits $d"; continue; }
  if $CONV logits $d --tokens $TOK --out $d.float > /dev/null && $CONV logits $d --tokens $TOK --out $d.packed --packed > /dev/null &&
     rf=$(close $d.float $d.ref 1e-5) && rp=$(close $d.packed $d.ref 1e-2); then
    ok "$1 $2: float logits = PyTorch's within $rf (≤ 1e-5), packed 1-bit within $rp (≤ 1e-2)"
  else
    fail "$1 $2: logits differ from PyTorch's" "float ${rf:-?}, packed ${rp:-?}"
  fi
done

# ---- 2. export → PyTorch, export → import ---------------------------------------------------------------------------
$CONV import bin-fp32 --ckpt a.ckpt > /dev/null && $CONV logits a.ckpt --tokens $TOK --out a.cpp > /dev/null &&
for layout in official folded; do
  flag=$([ $layout = folded ] && echo --folded)
  if $CONV export a.ckpt --out exp-$layout $flag > /dev/null && $REF logits exp-$layout --tokens $TOK --out exp-$layout.ref &&
     r=$(close a.cpp exp-$layout.ref 1e-5); then
    ok "export ($layout layout) → PyTorch reference: logits = C++'s within $r"
  else
    fail "export ($layout layout) → PyTorch: logits differ (${r:-?})"
  fi
done
if $CONV import exp-official --ckpt b.ckpt > /dev/null && cmp -s a.ckpt b.ckpt; then
  ok "export → import gives back the checkpoint byte for byte ($(wc -c < a.ckpt) bytes)"
else
  fail "export → import changed the checkpoint"
fi
grep -q '"wscale"\|wscale' <(head -c 4000 exp-official/model.safetensors) && ! grep -q wscale <(head -c 4000 exp-folded/model.safetensors) &&
  ok "the official layout holds weight + wscale + wbias, the folded one dense weights only" ||
  fail "the exported layouts do not hold the keys they should"
$REF write plain --plain --format safetensors && $REF logits plain --tokens $TOK --out plain.ref &&
  $CONV logits plain --tokens $TOK --out plain.cpp > /dev/null && r=$(close plain.cpp plain.ref 1e-5) &&
  ok "a plain LLaMA (no wscale/wbias) imports as the fp32 model: logits within $r" || fail "plain LLaMA import (${r:-?})"

# ---- 3. bad inputs: message, exit 1, nothing written ----------------------------------------------------------------
$PY "$HERE/interop/make_bad.py" "$TMP/bin-fp32" "$TMP/bin-sharded-fp32" "$TMP/safetensors-fp32" bad || fail "make_bad.py"
expect() {  # case, text the message must hold, [fbi_convert arguments after the directory]
  local c=$1 want=$2; shift 2
  rm -f out.ckpt out.fbipack
  local msg rc
  msg=$($CONV import bad/$c --ckpt out.ckpt --packed out.fbipack "$@" 2>&1 > /dev/null); rc=$?
  if [ $rc -eq 1 ] && grep -qF -- "$want" <<< "$msg" && [ "$(wc -l <<< "$msg")" -eq 1 ] && [ ! -e out.ckpt ] && [ ! -e out.fbipack ] &&
     [ -z "$(ls -a | grep '\.tmp\.')" ]; then
    ok "$c: $msg"
  else
    fail "$c (exit $rc; expected a one-line message with '$want', nothing written)" "$msg"
  fi
}
expect no_config "config.json: cannot open"
expect no_weights "no weights (model.safetensors"
expect shard_missing "shard 'pytorch_model-00002-of-00002.bin'"
expect truncated_bin "pytorch_model.bin: "
expect truncated_safetensors "run past the data"
expect offsets_past_end "tensor 'lm_head.weight': data_offsets"
expect offsets_overlap "two tensors' data_offsets overlap"
expect unknown_dtype "tensor 'model.norm.weight': unsupported dtype 'I32'"
expect key_missing "key 'model.layers.1.mlp.up_proj.wbias' is missing"
expect key_extra "key 'model.layers.0.self_attn.q_proj.bias' is not part of"
expect wrong_shape "key 'model.layers.0.self_attn.k_proj.wscale' has shape [64], the config needs [1, 64]"
expect gqa "grouped-query attention is not supported"
expect tied "tie_word_embeddings is true"
expect rope_scaling "rope_scaling is set"
expect rope_theta "rope_theta 500000"
expect bad_json "config.json: not JSON"
expect evil_pickle "names the global 'posix.system'"
[ ! -e bad/PWNED ] && ok "the evil pickle ran nothing (no bad/PWNED)" || fail "the evil pickle ran a command"
rm -f out.fbipack
msg=$($CONV import plain --packed out.fbipack 2>&1 > /dev/null)
[ $? -eq 1 ] && grep -qF "a plain LLaMA (no wscale/wbias keys) has no 1-bit form" <<< "$msg" && [ ! -e out.fbipack ] &&
  ok "plain LLaMA asked to pack: $msg" || fail "plain LLaMA asked to pack" "$msg"
mkdir -p full && touch full/x
msg=$($CONV export a.ckpt --out full 2>&1 > /dev/null)
[ $? -eq 1 ] && grep -qF "exists and is not an empty directory" <<< "$msg" && [ "$(ls full)" = x ] &&
  ok "export into a non-empty directory: $msg" || fail "export into a non-empty directory" "$msg"

# ---- 4. scale-out: a train_tiny student to PyTorch and back ---------------------------------------------------------
# A corpus of our own (no download): train_tiny trains a teacher and an FBI student on it; both are exported; the
# PyTorch reference evaluates the student (= the C++ evaluation), continues its AD training for 3 AdamW steps (its loss
# continues from the C++ run's last steps), saves it; fbi_convert imports that and evaluates it (= PyTorch's number).
TRAIN=$(wrap "$TRAIN_BIN")
$PY -c "
import random; r = random.Random(5); w = 'the king and queen of a small town went down to the river where old men sat told long stories'.split()
open('corpus.txt', 'w').write('\n'.join(' '.join(r.choice(w) for _ in range(12)) for _ in range(600)) + '\n')"
if $TRAIN --data corpus.txt --out tiny --teacher-steps 40 --student-steps 40 --eval-every 0 --samples 0 --eval-windows 40 > tiny.log 2>&1 &&
   $CONV export tiny/teacher_s40.ckpt --out t-hf > /dev/null && $CONV export tiny/student_ad_random.ckpt --out s-hf > /dev/null; then
  c=$($CONV eval tiny/student_ad_random.ckpt --corpus corpus.txt --windows 40 | cut -d' ' -f2)
  p=$($REF eval s-hf --corpus corpus.txt --windows 40 | cut -d' ' -f2)
  $PY -c "import sys; r = abs($c - $p) / $p; print(f'{r:.1e}'); sys.exit(0 if r <= 1e-5 else 1)" > r.txt &&
    ok "a train_tiny student exported: PyTorch's validation CE $p = the C++ evaluation's $c (relative $(cat r.txt))" ||
    fail "exported student: PyTorch CE $p vs C++ $c"
  $REF train s-hf --teacher t-hf --corpus corpus.txt --out s2-hf --steps 3 --windows 40 > train.log 2>&1
  last=$(tail -n 10 tiny/student_ad_random.csv | cut -d, -f3 | $PY -c "import sys; v = [float(x) for x in sys.stdin]; print(f'{sum(v) / len(v):.6f}')")
  first=$(grep -m1 '^step 1 ' train.log | cut -d' ' -f4)
  start=$(sed -n 2p tiny/student_ad_random.csv | cut -d, -f3)
  p2=$(grep '^val_ce' train.log | cut -d' ' -f2)
  c2=$($CONV eval s2-hf --corpus corpus.txt --windows 40 | cut -d' ' -f2)
  $PY -c "import sys; sys.exit(0 if abs($first - $last) < 0.1 * $last and $first < $start - 0.5 else 1)" &&
    ok "PyTorch continues the AD training: its first loss $first, the C++ run's last 10 steps $last (its first $start)" ||
    fail "PyTorch's training does not continue from the C++ run" "first $first, C++ last $last, C++ start $start"
  $PY -c "import sys; sys.exit(0 if abs($c2 - $p2) <= 1e-5 * $p2 else 1)" &&
    ok "trained further in PyTorch, imported back: C++ validation CE $c2 = PyTorch's $p2" ||
    fail "imported back: C++ CE $c2 vs PyTorch $p2"
else
  fail "train_tiny or export for the scale-out check" "$(tail -3 tiny.log)"
fi

echo "# $passed ok, $failed failed"
[ $failed -eq 0 ]
