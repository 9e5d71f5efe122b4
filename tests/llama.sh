#!/usr/bin/env bash
# build/generate and build/perplexity on a tiny synthetic FBI-LLM in the release format (model.safetensors +
# config.json + a sentencepiece tokenizer.model that spm_train makes here), against tests/interop/torch_ref.py:
#   1. perplexity by the paper's protocol: the float path = PyTorch's within 1e-4 relative; the packed path's
#      difference reported and bounded (1e-2); prefill kernels = decode one token at a time; unpack = float
#   2. greedy generation: the float path gives PyTorch's tokens; the packed path's agreement reported; a prompt
#      through the prefill and token by token give the same tokens
#   3. the packed cache: made once, reused, made again when the source changes, never left half-written
#   4. bad input at the user interface: one-line message, exit code 1, nothing cached
#   usage: tests/llama.sh [BUILD_DIR]    (make test-llama; make test runs it). PYTHON: an interpreter with torch.
set -u
BUILD=${1:-build}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
for b in generate perplexity spm_tokenize train_tiny; do [ -x "$BUILD/$b" ] || { echo "FAIL - $BUILD/$b is not built (make llama)"; exit 1; }; done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fbi_llama.XXXXXX")
WRAP=$(mktemp -d "${TMPDIR:-/tmp}/fbi_wrap.XXXXXX")
trap 'rm -rf "$TMP" "$WRAP"' EXIT
source "$HERE/lib.sh"  # ok, fail, wrap
GEN=$(wrap "$PWD/$BUILD/generate")
PPL=$(wrap "$PWD/$BUILD/perplexity")
TOKZ=$(wrap "$PWD/$BUILD/spm_tokenize")
TRAIN=$(wrap "$PWD/$BUILD/train_tiny")
REF="$PY $HERE/interop/torch_ref.py"
cd "$TMP"
# relative difference of two numbers, checked against a bound: rel A B BOUND
rel() { $PY -c "import sys; r = abs($1 - $2) / abs($2); print(f'{r:.1e}'); sys.exit(0 if r <= $3 else 1)"; }
field() { grep "^$1 " | head -1 | cut -d' ' -f2; }

# ---- the model: 2 blocks, C=64, a 512-piece BPE vocabulary with byte fallback (as LLaMA-2's), context 2048 ------------
cat "$ROOT/README.md" "$ROOT/fbi_llm.hpp" > text.txt
spm_train --input=text.txt --model_prefix=tok --vocab_size=512 --model_type=bpe --byte_fallback=true \
  --character_coverage=1.0 --minloglevel=2 > spm.log 2>&1 || { fail "spm_train" "$(tail -2 spm.log)"; exit 1; }
$REF write m --config tiny --vocab 512 --ctx 2048 --format safetensors --seed 7 || { fail "torch_ref.py write"; exit 1; }
cp tok.model m/tokenizer.model

# ---- 1. perplexity ------------------------------------------------------------------------------------------------------
$REF ppl m --tokenizer m/tokenizer.model --text text.txt --windows 6 > ref.txt 2>&1 || fail "torch_ref.py ppl" "$(tail -2 ref.txt)"
ref=$(field mean_nll < ref.txt)
for mode in "float --float" "packed-kernels --prefill kernels" "packed-unpack --prefill unpack" "packed-decode --prefill decode"; do
  set -- $mode
  name=$1; shift
  $PPL --model m --text text.txt --windows 6 "$@" > $name.txt 2> $name.err || fail "perplexity $name" "$(tail -2 $name.err)"
  eval "nll_${name//-/_}=\$(field mean_nll < $name.txt)"
done
grep -q "mean CE" packed-kernels.err && grep -q "ETA" packed-kernels.err && ok "perplexity prints a progress line per window with ETA" ||
  fail "no progress lines" "$(head -3 packed-kernels.err)"
r=$(rel "$nll_float" "$ref" 1e-4) && ok "perplexity, float path: mean CE $nll_float = PyTorch's $ref (relative $r ≤ 1e-4; 6 windows of 2048 tokens)" ||
  fail "perplexity float $nll_float vs PyTorch $ref ($r)"
r=$(rel "$nll_packed_kernels" "$ref" 1e-2) && ok "perplexity, packed 1-bit path: mean CE $nll_packed_kernels, PyTorch's $ref (relative $r ≤ 1e-2: int8 activations)" ||
  fail "perplexity packed $nll_packed_kernels vs PyTorch $ref ($r)"
r=$(rel "$nll_packed_unpack" "$nll_float" 1e-5) && ok "packed file, prefill unpack (fp32 GEMM on Ŵ from the bits) = the float path (relative $r)" ||
  fail "prefill unpack $nll_packed_unpack vs float $nll_float ($r)"
r=$(rel "$nll_packed_decode" "$nll_packed_kernels" 1e-5) && ok "packed: prefill through the kernels = one token at a time (relative $r)" ||
  fail "prefill kernels $nll_packed_kernels vs decode $nll_packed_decode ($r)"

# ---- 2. generation --------------------------------------------------------------------------------------------------------
prompt="The packed model"
ptoks=$($PY -c "
import sentencepiece as s; p = s.SentencePieceProcessor(model_file='m/tokenizer.model'); print(','.join(map(str, [1] + p.encode('$prompt'))))")
want=$($REF generate m --tokens "$ptoks" --n 16 --eos 2 | sed -n 's/^ids: //p')  # 2: the tokenizer's EOS
for mode in "float --float" "packed" "packed-decode --prefill decode" "float-tokens --float --tokens $ptoks"; do
  set -- $mode
  name=$1; shift
  [ "$name" = float-tokens ] && args=("$@") || args=(--prompt "$prompt" "$@")
  $GEN --model m "${args[@]}" --temperature 0 --max-tokens 16 --ids > g-$name.txt 2> g-$name.err || fail "generate $name" "$(tail -2 g-$name.err)"
  eval "ids_${name//-/_}=\"\$(sed -n 's/^ids: //p' g-$name.txt)\""
done
[ -n "$want" ] && [ "$ids_float" = "$want" ] && ok "generate, float path, greedy: PyTorch's $(wc -w <<< "$want") tokens, 16 or up to EOS ($want)" ||
  fail "generate float: '$ids_float', PyTorch '$want'"
[ "$ids_float_tokens" = "$want" ] && ok "generate --tokens (no tokenizer needed): the same tokens" || fail "generate --tokens: '$ids_float_tokens'"
same=$($PY -c "a, b = '$ids_packed'.split(), '$want'.split(); n = 0
while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
print(n)")
[ -n "$ids_packed" ] && ok "generate, packed 1-bit path, greedy: the first $same of $(wc -w <<< "$want") tokens are PyTorch's (int8 activations can flip a near-tie)" ||
  fail "generate packed produced nothing"
[ -n "$ids_packed" ] && [ "$ids_packed" = "$ids_packed_decode" ] && ok "packed: the prompt through the prefill and token by token give the same $(wc -w <<< "$ids_packed") tokens" ||
  fail "packed prefill vs decode: '$ids_packed' vs '$ids_packed_decode'"
grep -q "decode .* tokens/s" g-packed.err && grep -q "RSS" g-packed.err && ok "generate reports tokens/s and memory: $(tail -1 g-packed.err | cut -c1-120)" ||
  fail "generate's last line" "$(tail -1 g-packed.err)"
$GEN --model m --prompt "$prompt" --temperature 0.8 --top-p 0.9 --seed 3 --max-tokens 24 --ids > s1.txt 2>/dev/null &&
$GEN --model m --prompt "$prompt" --temperature 0.8 --top-p 0.9 --seed 3 --max-tokens 24 --ids > s2.txt 2>/dev/null &&
$GEN --model m --prompt "$prompt" --temperature 0.8 --top-p 0.9 --seed 4 --max-tokens 24 --ids > s3.txt 2>/dev/null &&
  cmp -s s1.txt s2.txt && ! cmp -s s1.txt s3.txt && ok "sampling (temperature 0.8, top-p 0.9): a seed repeats, another seed differs" ||
  fail "sampling is not reproducible per seed"

# ---- 3. the packed cache ----------------------------------------------------------------------------------------------------
grep -q "(reused)" g-packed-decode.err && ok "the packed cache m/fbi_llm.fbipack is reused by later runs" || fail "cache not reused" "$(grep cache g-packed-decode.err)"
touch -d '2001-01-01' m/model.safetensors
$GEN --model m --tokens 1,2,3 --max-tokens 2 > /dev/null 2> c.err
grep -q "made from other files" c.err && grep -q "made in" c.err && ok "a changed source file makes a new cache" || fail "changed source: cache not remade" "$(cat c.err)"
mkdir ro && cp m/config.json m/model.safetensors m/tokenizer.model ro/ && chmod 555 ro
if [ "$(id -u)" != 0 ]; then
  XDG_CACHE_HOME=$TMP/xdg $GEN --model ro --tokens 1,2 --max-tokens 2 > /dev/null 2> ro.err && [ -s xdg/fbi_llm/ro.fbipack ] &&
    ok "a read-only model directory: the cache goes to \$XDG_CACHE_HOME/fbi_llm/ro.fbipack" || fail "read-only directory" "$(cat ro.err)"
else
  XDG_CACHE_HOME=$TMP/xdg $GEN --model ro --tokens 1,2 --max-tokens 2 --cache $TMP/elsewhere.fbipack > /dev/null 2> ro.err && [ -s elsewhere.fbipack ] &&
    ok "--cache FILE puts the packed file elsewhere (root ignores permissions: the read-only case is not testable here)" || fail "--cache" "$(cat ro.err)"
fi
chmod 755 ro

# ---- 4. bad input -------------------------------------------------------------------------------------------------------------
# expect NAME "message part" command...: exit 1, the message on one line, no cache or temp file left in m2/
cp -r m m2 && rm -f m2/fbi_llm.fbipack
expect() {
  local name=$1 want=$2; shift 2
  local msg rc
  msg=$("$@" 2>&1 > /dev/null); rc=$?
  local left; left=$(ls m2 | grep -E 'fbipack|\.tmp' | tr '\n' ' ')
  if [ $rc -eq 1 ] && grep -qF -- "$want" <<< "$msg" && [ "$(wc -l <<< "$msg")" -eq 1 ] && [ -z "$left" ]; then
    ok "$name: $msg"
  else
    fail "$name (exit $rc${left:+, left $left})" "$msg"
  fi
}
mkdir notamodel
expect "not a model directory" "config.json: cannot open" $GEN --model notamodel --prompt hi
expect "no such directory" "not a directory" $PPL --model nowhere --text text.txt
mv m2/tokenizer.model tok.saved
expect "tokenizer missing" "tokenizer.model: no tokenizer here" $GEN --model m2 --prompt hi
mv tok.saved m2/tokenizer.model
spm_train --input=text.txt --model_prefix=small --vocab_size=400 --model_type=bpe --byte_fallback=true --minloglevel=2 > /dev/null 2>&1
expect "tokenizer for another vocabulary" "a tokenizer of 400 pieces, the model's config.json has vocab_size 512" $PPL --model m2 --text text.txt --tokenizer small.model
head -c 3000 /dev/urandom > junk.model
expect "tokenizer not sentencepiece" "not a sentencepiece model" $GEN --model m2 --prompt hi --tokenizer junk.model
$REF write short --config tiny --vocab 512 --ctx 32 --format safetensors --seed 7 && cp tok.model short/tokenizer.model
expect "prompt longer than the context" "leave no room in the context of 32" $GEN --model short --prompt "$(head -c 400 text.txt)"
: > empty.txt
expect "empty text file" "empty.txt: the text file is empty" $PPL --model m2 --text empty.txt
printf 'caf\xe9 au lait\n' > latin1.txt
expect "non-UTF-8 text" "latin1.txt: not UTF-8 text (invalid byte at offset 3)" $PPL --model m2 --text latin1.txt
head -c 2000 text.txt > short.txt
expect "text shorter than one window" "fewer than one window of 2048" $PPL --model m2 --text short.txt
expect "--windows larger than the text" "--windows 999: text.txt has only" $PPL --model m2 --text text.txt --windows 999
expect "--window larger than the context" "--window" $PPL --model m2 --text text.txt --window 4096
expect "--top-p 0" "--top-p" $GEN --model m2 --prompt hi --top-p 0
expect "unknown kernel" "--kernel 'gpu': fast, popcount or reference" $GEN --model m2 --prompt hi --kernel gpu
expect "token id outside the vocabulary" "--tokens: '600' is not a token id in [0, 512)" $GEN --model m2 --tokens 1,600
expect "unknown flag" "unknown flag --temp" $GEN --model m2 --prompt hi --temp 1
echo 'not json' > m2/config.json.bad && cp m2/config.json config.saved && mv m2/config.json.bad m2/config.json
expect "config.json not JSON" "config.json: not JSON" $GEN --model m2 --prompt hi
cp config.saved m2/config.json
head -c 100000 m/model.safetensors > m2/model.safetensors
expect "truncated weights: nothing cached" "model.safetensors" $GEN --model m2 --prompt hi

# ---- 5. subword ids for train_tiny (make train-tiny TOKENIZER=bpe) ----------------------------------------------------------
spm_train --input=text.txt --model_prefix=ident --vocab_size=512 --model_type=bpe --byte_fallback=true --character_coverage=1.0 \
  --normalization_rule_name=identity --remove_extra_whitespaces=false --add_dummy_prefix=false --minloglevel=2 > /dev/null 2>&1
if $TOKZ --model ident.model --text text.txt --out text.fbitoks > tokz.log 2>&1; then
  ok "spm_tokenize: $(cat tokz.log) (the pieces give back the text byte for byte)"
else
  fail "spm_tokenize" "$(cat tokz.log)"
fi
expect2() {  # like expect, for files outside m2/
  local name=$1 want=$2; shift 2
  local msg rc
  msg=$("$@" 2>&1 > /dev/null); rc=$?
  [ $rc -eq 1 ] && grep -qF -- "$want" <<< "$msg" && ok "$name: $(tail -1 <<< "$msg")" || fail "$name (exit $rc)" "$msg"
}
expect2 "spm_tokenize with a normalizing vocabulary" "do not give back the text byte for byte" $TOKZ --model tok.model --text text.txt --out x.fbitoks
[ ! -e x.fbitoks ] && ok "  … and nothing written" || fail "spm_tokenize left x.fbitoks"
head -c 5000 text.fbitoks > cut.fbitoks
expect2 "train_tiny --tokens of a truncated token file" "truncated or corrupted" $TRAIN --tokens cut.fbitoks --out tt
[ ! -e tt ] && ok "  … and no output directory" || fail "train_tiny made tt/ for a bad token file"
expect2 "train_tiny --data and --tokens together" "one of them" $TRAIN --tokens text.fbitoks --data text.txt --out tt

echo "# $passed ok, $failed failed"
[ $failed -eq 0 ]
