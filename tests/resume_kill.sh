#!/usr/bin/env bash
# An interrupted train_tiny continues where it stopped, bit for bit (make test runs this; ~20 s).
#   usage: tests/resume_kill.sh [BUILD_DIR]
# 1. One run is interrupted 14 times, at points spread over the teacher's run, the student's run and the files
#    written after them (FBI_TEST_KILL, a test hook: the program sends itself SIGKILL, or SIGINT once or twice,
#    at a chosen step; "write" kills it halfway through a file's atomic write, leaving the half-written temp
#    file a real kill there leaves). After each interruption the same command is run again and must say how it
#    starts; the last run ends it. Its checkpoints, records, packed file, summary JSON and CSV logs must be
#    byte-identical to an uninterrupted run's, except the timing columns and fields, which are stripped.
# 2. Real signals from outside, at times nobody chose: SIGKILL, then SIGINT, sent to a longer run while it trains;
#    it must stop (SIGINT: with a checkpoint and a message), resume, and end byte-identical to its own reference.
# 3. A different command does not silently resume an unfinished run: it refuses and names --fresh; --fresh works.
# Prints "ok - ..." / "FAIL - ..." per check and exits nonzero if any failed.
set -u
BUILD=${1:-build}
TRAIN=$PWD/$BUILD/train_tiny
[ -x "$TRAIN" ] || { echo "FAIL - $TRAIN is not built"; exit 1; }
export OMP_NUM_THREADS=1
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fbi_resume.XXXXXX")
WRAP=$TMP/wrap
mkdir "$WRAP"
[ -n "${KEEP:-}" ] && echo "# keeping $TMP" || trap 'rm -rf "$TMP"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ok, fail, wrap
TRAIN=$(wrap "$TRAIN")
cd "$TMP"

# A corpus of our own, ~40 KB (the same construction as examples_bad_input.sh, longer).
words=(the king and queen of a small town went down to the river where old men sat told long stories
       about war weather price bread)
for i in $(seq 1 1000); do
  case $((i % 3)) in 0) echo "KING:" ;; 1) echo "QUEEN:" ;; 2) echo "OLD MAN:" ;; esac
  echo "The ${words[$((i * 7 % 25))]} ${words[$((i * 11 % 25))]}, ${words[$((i * 13 % 25))]} and ${words[$((i * 17 % 25))]}."
done > corpus.txt
CMD=(--data ../corpus.txt --teacher-steps 12 --student-steps 12 --width 32 --layers 1 --heads 2 --context 16 --batch 2
     --eval-every 4 --ckpt-every 3 --eval-windows 20 --samples 20)

# Every file a run leaves, with the timing columns (CSV column 6, tokens/s) and fields (train seconds, decode
# tokens/s) removed; a temp file left over would show up here too.
normalized() {
  (cd "$1" && for f in $(ls -A | LC_ALL=C sort); do
    echo "== $f"
    case $f in
      *.csv) cut -d, -f1-5,7 "$f" ;;
      *.json) sed -E '/"decode_tokens_per_s"/,/\}/d; /_train_seconds"/d' "$f" ;;
      *) od -An -tx1 -v "$f" | sha256sum ;;
    esac
  done)
}

mkdir ref int long longref other
(cd ref && "$TRAIN" "${CMD[@]}" --out run) > ref.log 2>&1 || { fail "the uninterrupted reference run failed" "$(tail -3 ref.log)"; exit 1; }

# ---- 1. 14 interruptions of one run, then the run that ends it ------------------------------------------------
# point | what the NEXT run must print (how it starts)
points=(
  "teacher:step:2|teacher: V="                             # before the first checkpoint: starts from step 0
  "teacher:write:3|teacher: V="                            # during the first checkpoint's write: no checkpoint yet
  "teacher:meta:3|has no record of the command"            # between that checkpoint and its record: starts afresh
  "teacher:step:5|teacher: resuming at step 3/12"          # between checkpoints
  "teacher:write:9|teacher: resuming at step 6/12"         # during a periodic checkpoint's write
  "teacher:sigint:7|teacher: resuming at step 7/12"        # Ctrl-C: stops after step 7 with a checkpoint
  "teacher:write:12|teacher: resuming at step 9/12"        # during the final checkpoint's write
  "student:step:1|student: V="                             # the finished teacher is reused; student from step 0
  "student:write:6|student: resuming at step 3/12"         # during a periodic write
  "student:sigint2:7|student: resuming at step 6/12"       # Ctrl-C twice: quits at once, no checkpoint at step 7
  "student:step:11|student: resuming at step 9/12"         # between checkpoints
  "student:write:12|student: resuming at step 9/12"        # during the final checkpoint's write
  "pack:write:0|student: reusing"                          # during the packed file's write
  "summary:write:0|student: reusing"                       # during the summary's write
)
survived=0
for i in "${!points[@]}"; do
  point=${points[$i]%%|*}
  { (cd int && FBI_TEST_KILL=$point exec "$TRAIN" "${CMD[@]}" --out run) > "kill$i.log" 2>&1; } 2> /dev/null
  rc=$?
  case $point in *:sigint:*|*:sigint2:*) want=130 ;; *) want=137 ;; esac
  if [ $rc -ne $want ]; then fail "interruption $((i + 1)) ($point): exit $rc, expected $want" "$(tail -3 "kill$i.log")"; continue; fi
  case $point in
    *:sigint:*) grep -q "interrupted after step 7/12" "kill$i.log" && grep -q "Run the same command again to continue from step 7" "kill$i.log" ||
                fail "Ctrl-C: no message saying how to continue" "$(tail -3 "kill$i.log")" ;;
    *:sigint2:*) grep -q "quitting at once" "kill$i.log" || fail "Ctrl-C twice: no 'quitting at once'" "$(tail -3 "kill$i.log")" ;;
    *:write:*) ls int/run | grep -q '\.tmp\.' || fail "interruption $((i + 1)) ($point): no half-written temp file was left" ;;
  esac
  # the next run (the next point's, or the final one) must say how it starts: checked below
  expect=${points[$i]#*|}
  survived=$((survived + 1))
  echo "$expect" > "expect$i"
done
# Each interrupted run's successor was the next interrupted run; check what each one printed on starting.
starts_ok=1
for i in "${!points[@]}"; do
  [ $i -eq 0 ] && continue
  expect=$(cat "expect$((i - 1))")
  grep -qF -- "$expect" "kill$i.log" || { starts_ok=0; fail "after interruption $i (${points[$((i - 1))]%%|*}) the next run did not print '$expect'" "$(grep -E 'teacher|student|removed' "kill$i.log" | head -4)"; }
done
(cd int && "$TRAIN" "${CMD[@]}" --out run) > final.log 2>&1
rc=$?
last=$(( ${#points[@]} - 1 ))
grep -qF -- "$(cat "expect$last")" final.log || { starts_ok=0; fail "the final run did not print '$(cat "expect$last")'"; }
grep -q "removed run/summary_ad_random.json.tmp" final.log || fail "the final run did not remove the summary's half-written temp file"
[ $starts_ok -eq 1 ] && ok "after each of the $survived interruptions the next run said how it starts (resuming at the checkpoint's step, reusing, or from step 0)"
if [ $rc -eq 0 ]; then
  diffs=$(diff <(normalized ref/run) <(normalized int/run) | grep -c '^[<>]')
  if [ "$diffs" -eq 0 ]; then
    ok "$survived interruptions survived ($(printf '%s\n' "${points[@]}" | grep -vc sigint) SIGKILL, $(printf '%s\n' "${points[@]}" | grep -c sigint) SIGINT): every file byte-identical to the uninterrupted run ($(ls -A ref/run | wc -l) files; 0 lines differ outside the timing columns)"
  else fail "after $survived interruptions: $diffs lines differ from the uninterrupted run" "$(diff <(normalized ref/run) <(normalized int/run) | head -8)"; fi
else fail "the final run failed (exit $rc)" "$(tail -3 final.log)"; fi

# ---- 2. real signals from outside, at times nobody chose -------------------------------------------------------
# 4000 + 4000 steps (about 3 s here); 600 + 600 under an emulator (FBI_RUN: qemu is ~20× slower)
LS=4000
[ -n "${FBI_RUN:-}" ] && LS=600
LONG=(--data ../corpus.txt --teacher-steps $LS --student-steps $LS --width 32 --layers 1 --heads 2 --context 16
      --batch 2 --eval-every $((LS / 4)) --ckpt-every $((LS / 16)) --eval-windows 20 --samples 20)
(cd longref && "$TRAIN" "${LONG[@]}" --out run) > longref.log 2>&1 || fail "the long reference run failed" "$(tail -3 longref.log)"
# start, wait until it has trained a while (its teacher log has rows), send SIG, wait for it to end
interrupt() {  # interrupt SIG ROWS LOG
  (cd long && exec "$TRAIN" "${LONG[@]}" --out run) > "$3" 2>&1 &
  local pid=$! n=0
  while kill -0 $pid 2> /dev/null && [ "$(cat long/run/*.csv 2> /dev/null | wc -l)" -lt "$2" ] && [ $n -lt 3000 ]; do
    sleep 0.01; n=$((n + 1))
  done
  kill -"$1" $pid 2> /dev/null
  wait $pid 2> /dev/null
}
{ interrupt KILL $((LS * 3 / 8)) long1.log; } 2> /dev/null; rc1=$?   # in the teacher's run
interrupt INT $((LS * 5 / 4)) long2.log; rc2=$?                      # in the student's
(cd long && "$TRAIN" "${LONG[@]}" --out run) > long3.log 2>&1; rc3=$?
if [ $rc1 -eq 137 ] && [ $rc2 -eq 130 ] && grep -q "Run the same command again to continue from step" long2.log &&
   grep -q "resuming at step" long2.log && grep -q "resuming at step\|reusing" long3.log && [ $rc3 -eq 0 ]; then
  d=$(diff <(normalized longref/run) <(normalized long/run) | grep -c '^[<>]')
  [ "$d" -eq 0 ] && ok "an outside SIGKILL (its last progress line: $(grep -o "step *[0-9]*/$LS" long1.log | tail -1)) and SIGINT ($(grep -o "interrupted after step [0-9]*/$LS" long2.log)): resumed, byte-identical to the uninterrupted run" ||
    fail "outside signals: $d lines differ from the uninterrupted run" "$(diff <(normalized longref/run) <(normalized long/run) | head -6)"
else
  fail "outside signals: exits $rc1 (SIGKILL, want 137), $rc2 (SIGINT, want 130), $rc3 (resume, want 0)" "$(tail -2 long2.log; tail -2 long3.log)"
fi

# ---- 3. a different command and an unfinished run: refused, named; --fresh starts over ----------------------
{ (cd other && FBI_TEST_KILL=student:step:5 exec "$TRAIN" "${CMD[@]}" --out run) > other1.log 2>&1; } 2> /dev/null
before=$(normalized other/run)
(cd other && "$TRAIN" "${CMD[@]}" --out run --seed 7) > other2.log 2> other2.err
rc=$?
# the finished teacher of another seed would be replaced; the unfinished student is refused, before any work
if [ $rc -ne 0 ] && grep -qF "run/student_ad_random.ckpt holds an unfinished student run (step 3/12) of a different command" other2.err &&
   grep -qF -- "--fresh" other2.err && [ "$before" = "$(normalized other/run)" ]; then
  ok "a different command (--seed 7) refuses the unfinished student before any work, every file unchanged: \"$(cut -c8-140 other2.err | head -1)...\""
else fail "a different command did not refuse the unfinished run (exit $rc)" "$(cat other2.err | head -3)"; fi
(cd other && "$TRAIN" "${CMD[@]}" --out run --student-lr 2e-3 --fresh) > other3.log 2>&1 && grep -q "student: --fresh: starting over" other3.log &&
  ok "--fresh starts the student over ($(grep -c '^student step' other3.log) progress lines), the finished teacher reused" ||
  fail "--fresh did not start the student over" "$(grep student other3.log | head -3)"

# --eval-every only decides which log rows carry a validation loss: finished runs are reused under another one
(cd other && "$TRAIN" "${CMD[@]}" --out run --student-lr 2e-3 --eval-every 6) > other4.log 2>&1 &&
  grep -q "teacher: reusing" other4.log && grep -q "student: reusing" other4.log &&
  ok "finished runs are reused under another --eval-every (it decides the log, not the checkpoint)" ||
  fail "another --eval-every did not reuse the finished runs" "$(grep -E 'teacher|student' other4.log | head -3)"

# two programs into one --out: the second is refused at once, and the first finishes unharmed
mkdir -p lock
(cd lock && exec "$TRAIN" "${LONG[@]}" --out run) > lock1.log 2>&1 &
pid=$!
n=0
held() {  # the first program holds run/.lock: read from /proc/locks (taking the lock to test it could make the first
  # program fail); where there is no /proc/locks, its first CSV row
  if [ -r /proc/locks ]; then [ -e lock/run/.lock ] && grep -q ":$(stat -c %i lock/run/.lock) " /proc/locks
  else [ -s lock/run/teacher_s$LS.csv ]; fi
}
while ! held && [ $n -lt 6000 ]; do sleep 0.01; n=$((n + 1)); done  # up to 60 s: qemu starts slowly
(cd lock && "$TRAIN" "${LONG[@]}" --out run) > lock2.log 2> lock2.err
rc2=$?
wait $pid
rc1=$?
[ $rc2 -ne 0 ] && grep -qF "another program is writing into 'run' (it holds run/.lock)" lock2.err && [ $rc1 -eq 0 ] &&
  ok "a second program into the same --out is refused while the first runs; the first finishes (exit $rc1)" ||
  fail "the lock on --out (second: exit $rc2, first: exit $rc1)" "second: $(cat lock2.err) | first: $(tail -2 lock1.log)"

echo "# $passed ok, $failed failed"
[ $failed -eq 0 ]
