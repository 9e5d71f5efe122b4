#!/usr/bin/env bash
# Bad inputs through the examples (build/train_tiny, build/sample): each case checks the exit status, that the
# error message names the problem, and that nothing on disk was damaged (the files of an earlier good run are
# byte-identical afterwards, and no directory or file appeared that should not have).
#   usage: tests/examples_bad_input.sh [BUILD_DIR]     (make test-examples; make test runs it too)
# Prints one line per check, "ok - ..." or "FAIL - ...", and exits nonzero if any failed. Tiny models: ~3 s.
set -u
BUILD=${1:-build}
TRAIN_BIN=$PWD/$BUILD/train_tiny
SAMPLE_BIN=$PWD/$BUILD/sample
for b in "$TRAIN_BIN" "$SAMPLE_BIN"; do [ -x "$b" ] || { echo "FAIL - $b is not built (make $BUILD/${b##*/})"; exit 1; }; done
export OMP_NUM_THREADS=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fbi_bad_input.XXXXXX")
WRAP=$(mktemp -d "${TMPDIR:-/tmp}/fbi_wrap.XXXXXX")
trap 'rm -rf "$TMP" "$WRAP"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ok, fail, wrap
TRAIN=$(wrap "$TRAIN_BIN")
SAMPLE=$(wrap "$SAMPLE_BIN")
cd "$TMP"
mkdir logs

# A small corpus of our own (≈6 KB of dialogue built from a few words; no '~', '#', 'é' or digits in it).
words=(the king and queen of a small town went down to the river where old men sat told long stories
       about war weather price bread)
{
  for i in $(seq 1 160); do
    w1=${words[$((i * 7 % 25))]} w2=${words[$((i * 11 % 25))]} w3=${words[$((i * 13 % 25))]}
    w4=${words[$((i * 17 % 25))]}
    case $((i % 3)) in 0) echo "KING:" ;; 1) echo "QUEEN:" ;; 2) echo "OLD MAN:" ;; esac
    echo "The $w1 $w2, $w3 and $w4."
  done
} > corpus.txt
TINY=(--teacher-steps 4 --student-steps 4 --width 32 --layers 1 --heads 2 --context 16 --batch 2
      --eval-every 2 --samples 20)

# sha256 of files (GNU coreutils, or shasum on macOS); snapshot DIR: every file under DIR with its hash, sorted
if command -v sha256sum > /dev/null; then sha() { sha256sum "$@"; }; else sha() { shasum -a 256 "$@"; }; fi
snapshot() { (cd "$1" 2>/dev/null && find . -type f | LC_ALL=C sort | while IFS= read -r f; do sha "$f"; done) ; }

# run NAME EXPECTED_MESSAGE CMD...: the command must fail (exit != 0) and print EXPECTED_MESSAGE on stderr,
# and the good run in good/ plus everything else listed in $WATCH must be byte-identical afterwards.
WATCH=()
run() {
  local name=$1 expect=$2
  shift 2
  local before after rc
  before=$(snapshot good; for f in "${WATCH[@]}"; do [ -e "$f" ] && sha "$f"; done; ls -A)
  "$@" > logs/out.log 2> logs/err.log
  rc=$?
  after=$(snapshot good; for f in "${WATCH[@]}"; do [ -e "$f" ] && sha "$f"; done; ls -A)
  if [ $rc -eq 0 ]; then fail "$name: exited 0" "$(tail -3 logs/err.log)"; return; fi
  if ! grep -qF -- "$expect" logs/err.log; then fail "$name: message does not say '$expect'" "$(cat logs/err.log)"; return; fi
  if [ "$before" != "$after" ]; then fail "$name: files on disk changed" "$(diff <(echo "$before") <(echo "$after") | head -5)"; return; fi
  ok "$name: exit $rc, \"$(grep -m1 -F -- "$expect" logs/err.log | sed 's/^error: //' | cut -c1-110)\""
}

# ---- a good run first: its outputs must survive every bad input below ----
if "$TRAIN" --data corpus.txt --out good "${TINY[@]}" > good.log 2>&1 && [ -s good/student_ad_random.ckpt ]; then
  ok "a good tiny run writes its checkpoints ($(ls good | wc -l) files in good/)"
else
  fail "the good tiny run failed" "$(tail -5 good.log)"
  echo "# $passed ok, $failed failed"
  exit 1
fi
CKPT=good/student_ad_random.ckpt

# ---- the corpus: missing, a directory, empty, shorter than one window, too short, not text ----
run "--scale-bits out of range" "--scale-bits must be 32 (fp32 scales) or 1..8 (codebook), not 9" \
    "$TRAIN" --data corpus.txt --out good "${TINY[@]}" --scale-bits 9
run "corpus missing" "corpus 'nope.txt' not found" "$TRAIN" --data nope.txt --out good "${TINY[@]}"
run "corpus missing, --out not created" "not found" "$TRAIN" --data nope.txt --out fresh/run "${TINY[@]}"
[ ! -e fresh ] && ok "corpus missing: the --out directory fresh/run was not created" || fail "fresh/run was created"
mkdir -p adir
run "corpus is a directory" "corpus 'adir' is a directory, not a text file" "$TRAIN" --data adir --out good "${TINY[@]}"
: > empty.txt
run "corpus empty" "corpus 'empty.txt' is empty" "$TRAIN" --data empty.txt --out good "${TINY[@]}"
printf 'KING:\nThe end.\n' > ten.txt  # 15 characters < T+1 = 17
run "corpus shorter than one context window" \
    "corpus 'ten.txt' has 15 characters, shorter than one context window (T+1 = 17 characters for --context 16)" \
    "$TRAIN" --data ten.txt --out good "${TINY[@]}"
head -c 200 corpus.txt > short.txt  # > one window, < the 340 needed for a validation window too
run "corpus shorter than the training + validation windows" \
    "corpus 'short.txt' has 200 characters, fewer than the 340 needed for --context 16" \
    "$TRAIN" --data short.txt --out good "${TINY[@]}"
{ head -c 3000 corpus.txt; printf 'KING:\000\001\002\n'; tail -c 3000 corpus.txt; } > nul.txt
run "corpus not text (NUL bytes)" "corpus 'nul.txt' is not text: it contains NUL bytes (the first at byte 3005 (line" \
    "$TRAIN" --data nul.txt --out good "${TINY[@]}"
{ head -c 3000 corpus.txt; printf 'caf\351 latin-1\n'; tail -c 3000 corpus.txt; } > latin1.txt
run "corpus not UTF-8 (a Latin-1 byte)" "corpus 'latin1.txt' is not UTF-8 text: invalid byte 0xe9 at byte 3003" \
    "$TRAIN" --data latin1.txt --out good "${TINY[@]}"
run "corpus is a binary file (the train_tiny executable)" "is not text: it contains NUL bytes" \
    "$TRAIN" --data "$TRAIN_BIN" --out good "${TINY[@]}"
{ cat corpus.txt; printf 'QUEEN:\nCaf\303\251 cr\303\250me, \342\202\254 5.\n'; } > utf8.txt  # valid UTF-8: accepted
if "$TRAIN" --data utf8.txt --out utf8run "${TINY[@]}" --teacher-steps 2 --student-steps 2 > utf8.log 2>&1; then
  ok "a UTF-8 corpus (é, è, €) is accepted as text"
else fail "a valid UTF-8 corpus was refused" "$(tail -2 utf8.log)"; fi

# ---- sampling: characters outside the vocabulary, prompt length, bad checkpoint files ----
run "sample: a character not in the vocabulary" \
    "--prompt: character '~' at position 4 is not in the model's vocabulary of" "$SAMPLE" --ckpt "$CKPT" --prompt "KING~" --n 5
run "sample: a UTF-8 character not in the vocabulary" \
    "character 'é' (UTF-8 bytes c3 a9) at position 3 is not in the model's vocabulary" \
    "$SAMPLE" --ckpt "$CKPT" --prompt "The$(printf '\303\251')" --n 5
run "sample: prompt longer than the context" \
    "--prompt has 17 characters, more than the model's context of T=16" \
    "$SAMPLE" --ckpt "$CKPT" --prompt "The king and quee" --n 5
if "$SAMPLE" --ckpt "$CKPT" --prompt "The king and que" --n 40 > full.log 2> full.err &&
   [ "$(head -c 16 full.log)" = "The king and que" ] && grep -q "40 tokens" full.err; then
  ok "sample: a prompt of exactly T=16 characters works, and generation runs past T (16 + 40 tokens, sliding window)"
else fail "sample: a prompt of exactly T characters failed" "$(cat full.err)"; fi
run "sample: empty prompt" "--prompt is empty" "$SAMPLE" --ckpt "$CKPT" --prompt "" --n 5
run "sample: checkpoint missing" "cannot open 'good/nope.ckpt'" "$SAMPLE" --ckpt good/nope.ckpt
head -c 1000 "$CKPT" > cut.ckpt
WATCH=(cut.ckpt)
run "sample: truncated checkpoint" "checkpoint 'cut.ckpt': truncated" "$SAMPLE" --ckpt cut.ckpt
WATCH=()
run "sample: a packed file is not a checkpoint" "not an fbi_llm checkpoint (bad magic)" \
    "$SAMPLE" --ckpt good/student_ad_random.fbipack

# ---- unwritable output paths: a regular file in the way, /proc (no mkdir), /sys (exists, refuses files) ----
echo "keep me" > afile
WATCH=(afile)
run "--out under a regular file" "output path 'afile' exists and is not a directory" \
    "$TRAIN" --data corpus.txt --out afile/run "${TINY[@]}"
run "--out is a regular file" "output path 'afile' exists and is not a directory" \
    "$TRAIN" --data corpus.txt --out afile "${TINY[@]}"
WATCH=()
if [ -d /proc/self ] && [ -d /sys/kernel ]; then  # Linux: even root cannot create entries there
  run "--out where no directory can be made (/proc)" "cannot create output directory '/proc/fbi_llm_test'" \
      "$TRAIN" --data corpus.txt --out /proc/fbi_llm_test/run "${TINY[@]}"
  run "--out a directory that refuses new files (/sys)" "output directory '/sys' is not writable" \
      "$TRAIN" --data corpus.txt --out /sys "${TINY[@]}"
  grep -q "teacher:" logs/err.log logs/out.log && fail "--out /sys: training started before the output was checked" || true
else
  echo "skip - --out in /proc and /sys (not Linux)"
fi

# ---- NaN during training: stop with a message naming the step; keep the last good checkpoint ----
# (FBI_INJECT_NAN is a test hook, not a flag: it poisons one LM-head weight before the given step)
FBI_INJECT_NAN=teacher:7 "$TRAIN" --data corpus.txt --out nan "${TINY[@]}" --teacher-steps 10 --ckpt-every 2 \
  > nan.log 2> nan.err
rc=$?
if [ $rc -ne 0 ] && grep -qF "teacher stopped at step 7/10: fbi: non-finite loss at step 7" nan.err &&
   grep -qF "last good checkpoint: nan/teacher_s10.ckpt (after step 6; parameters and optimizer state)" nan.err; then
  ok "NaN at teacher step 7: exit $rc, \"$(head -1 nan.err | sed 's/^error: //' | cut -c1-90)...\""
else fail "NaN at teacher step 7: wrong exit status or message (exit $rc)" "$(cat nan.err)"; fi
if "$SAMPLE" --ckpt nan/teacher_s10.ckpt --n 5 > /dev/null 2> s.err && grep -q "fp32, step 6:" s.err; then
  ok "NaN: the kept checkpoint loads and is the one from after step 6 ($(grep -o 'step 6' s.err))"
else fail "NaN: the kept checkpoint does not load as step 6" "$(cat s.err)"; fi
grep -qx 'teacher-steps=10' nan/teacher_s10.ckpt.meta 2> /dev/null && [ -z "$(ls nan | grep -E 'tmp|student')" ] &&
  ok "NaN: the kept checkpoint's record (.meta) names its command; no temp files, no student files" ||
  fail "NaN: unexpected files in nan/" "$(ls nan)"
# the same command again (without the hook) continues the unfinished teacher from its step 6
if "$TRAIN" --data corpus.txt --out nan "${TINY[@]}" --teacher-steps 10 --ckpt-every 2 > nan2.log 2>&1 &&
   grep -qF "teacher: resuming at step 6/10 from nan/teacher_s10.ckpt" nan2.log; then
  ok "NaN: running the same command again resumes the teacher at step 6/10 and finishes"
else fail "NaN: the same command did not resume at step 6" "$(grep -m3 -E 'teacher|error' nan2.log)"; fi

# A NaN in the student (--fresh: train it again): the finished teacher (reused from good/) stays byte-identical,
# the student keeps step 2.
cp -r good nan_student
teacher_before=$(sha nan_student/teacher_s4.ckpt nan_student/teacher_s4.ckpt.meta)
FBI_INJECT_NAN=student:3 "$TRAIN" --data corpus.txt --out nan_student "${TINY[@]}" --ckpt-every 2 --fresh > ns.log 2> ns.err
rc=$?
if [ $rc -ne 0 ] && grep -qF "student stopped at step 3/4" ns.err &&
   grep -qF "last good checkpoint: nan_student/student_ad_random.ckpt (after step 2" ns.err &&
   grep -q "teacher: reusing" ns.log && [ "$teacher_before" = "$(sha nan_student/teacher_s4.ckpt nan_student/teacher_s4.ckpt.meta)" ] &&
   "$SAMPLE" --ckpt nan_student/student_ad_random.ckpt --n 5 > /dev/null 2> s.err && grep -q "fbi, step 2:" s.err; then
  ok "NaN at student step 3: exit $rc; teacher files byte-identical; student checkpoint kept at step 2"
else fail "NaN at student step 3" "$(cat ns.err s.err 2>/dev/null)"; fi

# A NaN before the first periodic checkpoint: the previous run's checkpoint and .meta are not touched.
cp -r good nan_early
before=$(snapshot nan_early | grep -v '\.csv$')
FBI_INJECT_NAN=teacher:1 "$TRAIN" --data corpus.txt --out nan_early "${TINY[@]}" --seed 7 > ne.log 2> ne.err
rc=$?
if [ $rc -ne 0 ] && grep -qF "no checkpoint of this run was written: the first was due after step 2" ne.err &&
   [ "$before" = "$(snapshot nan_early | grep -v '\.csv$')" ]; then
  ok "NaN at step 1, before the first checkpoint: exit $rc; every earlier checkpoint and .meta byte-identical"
else fail "NaN before the first checkpoint" "$(cat ne.err)"; fi

# A real divergence, no hook: a learning rate of 1e30 overflows the weights within two steps.
"$TRAIN" --data corpus.txt --out diverge "${TINY[@]}" --lr 1e30 --warmup 0 --ckpt-every 1 > dv.log 2> dv.err
rc=$?
if [ $rc -ne 0 ] && grep -qE "teacher stopped at step [0-9]+/4: fbi: non-finite (loss|gradient norm)" dv.err; then
  ok "--lr 1e30: exit $rc, \"$(head -1 dv.err | sed 's/^error: //' | cut -c1-100)...\""
else fail "--lr 1e30 did not stop with a non-finite error (exit $rc)" "$(cat dv.err)"; fi

# ---- every flag checked before any work: the message names the flag; nothing is written, no --out is made ----
flag() {  # flag NAME EXPECTED ARGS...: train_tiny with the tiny settings and ARGS, into a directory that must not appear
  local name=$1 expect=$2
  shift 2
  run "$name" "$expect" "$TRAIN" --data corpus.txt --out flags_out "${TINY[@]}" "$@"
}
flag "learning rate negative" "--lr must be a finite number > 0, got '-1'" --lr -1
flag "learning rate NaN" "--lr must be a finite number > 0, got 'nan'" --lr nan
flag "learning rate zero" "--student-lr must be a finite number > 0, got '0'" --student-lr 0
flag "floor negative" "--lr-min must be a finite number >= 0, got '-1e-4'" --lr-min -1e-4
flag "floor above the peak" "--student-lr-min 0.01 is above --student-lr 0.001" --student-lr-min 0.01
flag "weight decay infinite" "--wd must be a finite number >= 0, got 'inf'" --wd inf
flag "steps negative" "--teacher-steps must be a whole number from 0 to 1000000000, got '-5'" --teacher-steps -5
flag "steps not whole" "--student-steps must be a whole number from 0 to 1000000000, got '2.5'" --student-steps 2.5
flag "--eval-every negative (named, not --ckpt-every)" "--eval-every must be a whole number from 0" --eval-every -1
flag "--samples negative" "--samples must be a whole number from 0" --samples -1
flag "--eval-windows negative" "--eval-windows must be a whole number from 0" --eval-windows -3
flag "size zero" "--batch must be a whole number from 1" --batch 0
flag "size not whole" "--context must be a whole number from 1 to 65536, got '16.5'" --context 16.5
flag "size beyond int" "--width must be a whole number from 1 to 65536, got '1e12'" --width 1e12
flag "heads that do not divide the width" "--width 32 / --heads 3 must be a whole, even head size" --heads 3
flag "seed negative" "--seed must be a whole number from 0 to 18446744073709551615, got '-1'" --seed -1
flag "seed not whole" "--seed must be a whole number from 0 to 18446744073709551615, got '1e3'" --seed 1e3
flag "scale bits zero" "--scale-bits must be 32 (fp32 scales) or 1..8 (codebook), not 0" --scale-bits 0
flag "memory: a batch that cannot fit" "lower --batch or --context" --batch 100000000
grep -qE "this run needs about [0-9.]+ [TP]iB of memory \(.* of activations for --batch 100000000 × --context 16" logs/err.log &&
  ok "memory: the message gives the figure and the machine's memory: \"$(grep -o 'needs about [^(]*' logs/err.log)... more than this machine's $(grep -o "machine's [0-9.]* [A-Za-z]*" logs/err.log | cut -d' ' -f2-)\"" ||
  fail "memory: no figure in the message" "$(cat logs/err.log)"
flag "memory: a model that cannot fit" "lower --width or --layers" --width 65536 --heads 2 --layers 4096
run "thread count not a number" "OMP_NUM_THREADS='abc' is not a thread count" \
    env OMP_NUM_THREADS=abc "$TRAIN" --data corpus.txt --out flags_out "${TINY[@]}"
run "thread count zero" "OMP_NUM_THREADS='0' is not a thread count" \
    env OMP_NUM_THREADS=0 "$SAMPLE" --ckpt "$CKPT" --n 5
run "sample: temperature negative" "--temperature must be a finite number >= 0, got '-0.5'" \
    "$SAMPLE" --ckpt "$CKPT" --temperature -0.5
run "sample: temperature NaN" "--temperature must be a finite number >= 0, got 'nan'" "$SAMPLE" --ckpt "$CKPT" --temperature nan
run "sample: --n negative" "--n must be a whole number from 0" "$SAMPLE" --ckpt "$CKPT" --n -1
run "sample: --seed not a number" "--seed must be a whole number from 0" "$SAMPLE" --ckpt "$CKPT" --seed x

# ---- bad arguments ----
run "a number argument that is not a number" "--context expects a number, got 'abc'" \
    "$TRAIN" --data corpus.txt --out good --context abc
run "a malformed test hook" "FBI_INJECT_NAN expects teacher:STEP or student:STEP" \
    env FBI_INJECT_NAN=5 "$TRAIN" --data corpus.txt --out good "${TINY[@]}"
run "a removed or misspelt flag" "unknown flag --tag" \
    "$TRAIN" --data corpus.txt --out good "${TINY[@]}" --tag x
run "a misspelt sample flag" "unknown flag --temp" \
    "$SAMPLE" --ckpt good/student_ad_random.ckpt --temp 0.5

echo "# $passed ok, $failed failed"
[ $failed -eq 0 ]
