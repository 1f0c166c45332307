#!/bin/bash
# tests/study/run_study.sh BIN_DIR -- tools/cifar_study.sh's evaluation
# stage, end to end on tiny data: the two reports are written from one
# --cache record per model; a rerun does nothing; a model that finishes
# later rewrites the reports with only that model attacked; a checkpoint
# that cannot be read stops the stage with a message, keeps the finished
# models' records and leaves the old reports in place, and the rerun after
# the fix attacks only that model. Then stage 2's choice of the best GFA
# variant, on a made-up results folder. The models are MLPs on random images
# (the stage runs the whole attack suite, so that is what keeps it short).
set -euo pipefail

bin=$(cd "${1:?usage: run_study.sh BIN_DIR}" && pwd)
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dd-study.XXXXXX")
trap '[ -n "${DD_STUDY_KEEP:-}" ] && cp -r "$tmp/res" "$DD_STUDY_KEEP"; rm -rf "$tmp"' EXIT
cd "$tmp"

fail() { echo "FAIL: $*"; exit 1; }
. "$src/tests/examples/tiny_data.sh"

make_cifar data 20
mkdir res
# model NAME SEED: a finished model of the study (its checkpoint and .done)
model() {
    "$bin/train_cifar" --data data --arch mlp --epochs 1 --batch 10 --input-range pm1 --eval-n 0 \
        --threads 2 --no-progress --seed "$2" --out "res/$1.safetensors" >"train-$1.log" 2>&1 ||
        { cat "train-$1.log"; fail "training $1"; }
    touch "res/$1.done"
}
study() { bash "$src/tools/cifar_study.sh" --data data --out res --build "$bin" --stages eval --eval-n 8; }
# attacked REPORT: how many models the last run of REPORT attacked (and
# did not read back from its records)
attacked() {
    awk '/^== 20/ { n = 0; next } /^== / && !/results of/ { n++ } END { print n + 0 }' "res/$1.log"
}

model plain-ce 1
model pgd-at 2
study >s1.log 2>&1 || { cat s1.log; fail "the evaluation stage"; }
for r in report-gradient report-ensemble; do
    [ -s "res/$r.md" ] || fail "$r.md not written"
    [ "$(find "res/$r.cache" -name "*.eval" | wc -l)" -eq 2 ] || fail "$r.cache/ does not hold one record per model"
    [ "$(attacked $r)" -eq 2 ] || fail "$r: the first run did not attack both models"
done
grep -q "| autoattack-linf | Linf | 8/255 | 16/255 |" res/report-ensemble.md || fail "no AutoAttack row"
grep -q "partial" res/report-gradient.md && fail "report-gradient.md names the .partial files"
grep -q "| transfer-pgd<-pgd-at | Linf | 8/255 |" res/report-gradient.md || fail "no transfer row"
cp res/report-gradient.md first.md

study >s2.log 2>&1 || { cat s2.log; fail "the rerun"; }
grep -q "report-" s2.log && fail "the rerun ran a report again"

model gfa-first-cos-ce 3
study >s3.log 2>&1 || { cat s3.log; fail "the run with a third model"; }
for r in report-gradient report-ensemble; do
    [ "$(attacked $r)" -eq 1 ] || fail "$r: not only the new model was attacked"
    grep -q "| plain-ce | pgd-at | gfa-first-cos-ce |" "res/$r.md" || fail "$r.md lacks the new model"
done
# the old models' rows are the attacked ones (the first report's, column for column)
# (the all-images table only: the common-sample one changes with the third model)
rows() { sed '/^## Only the samples/q' "$1" | grep '^| fgsm' | cut -d'|' -f1-7; }
diff <(rows first.md) <(rows res/report-gradient.md) ||
    fail "the rows read back differ from the attacked ones"

# a checkpoint that cannot be read: the stage stops, the others' records stay
head -c 100 res/pgd-at.safetensors >bad && cp res/pgd-at.safetensors good
model gfa-deep-cos-ce 4
cp bad res/gfa-deep-cos-ce.safetensors
if study >s4.log 2>&1; then fail "an unreadable checkpoint did not stop the stage"; fi
grep -q "report-gradient stopped" s4.log || fail "no message naming the stopped report"
grep -q "^error: .*gfa-deep-cos-ce" res/report-gradient.log || fail "the log does not say which checkpoint"
grep -q "| plain-ce | pgd-at | gfa-first-cos-ce |$" res/report-gradient.md || fail "the old report was not kept"
model gfa-deep-cos-ce 4
study >s5.log 2>&1 || { cat s5.log; fail "the rerun after the fix"; }
for r in report-gradient report-ensemble; do
    [ "$(attacked $r)" -eq 1 ] || fail "$r: the rerun after the fix did not attack only the fixed model"
done
# Stage 2's best GFA variant (for PGD-AT + GFA and resnet20), as --list
# plans it: the best PGD-10 among the variants whose alignment moved
# without a collapse, else among the accurate ones.
mkdir pick
touch pick/plain-ce.done pick/plain-mse.done pick/pgd-at.done
for h in first deep; do for r in cos sin2; do for l in ce mse; do echo 0.1 >"pick/sweep-$h-$r-$l.choice"; done; done; done
fake() { # NAME TEST_ACC PGD10 ALIGN_FIRST ALIGN_LAST: a finished GFA training
    printf 'epoch,train_loss,train_acc,test_acc,lr,seconds,img_s,reg,align_mean\n' >"pick/$1.csv"
    printf '%s,1,0.5,%s,0.01,1,1,0.1,%s\n' 1 "$2" "$4" 2 "$2" "$5" >>"pick/$1.csv"
    echo "robust accuracy at eps 0.03137 (Linf, 1000 test images): FGSM 1.00%, PGD-10 $3% (0:01)" >"pick/$1.log"
    touch "pick/$1.done"
}
fake gfa-first-cos-ce 0.76 0.00 0.028 0.016  # the most accurate, alignment unmoved
fake gfa-first-sin2-ce 0.10 9.00 0.042 0.000 # collapsed ("robust" at its clean accuracy)
fake gfa-deep-cos-mse 0.45 0.05 0.020 0.300  # moved
fake gfa-deep-sin2-ce 0.49 0.10 0.056 0.409  # moved, the better PGD-10
# (the plan goes through a variable: `plan | grep -q` under pipefail fails
# whenever grep exits before the plan is written, a race)
plan=$(bash "$src/tools/cifar_study.sh" --data data --out pick --build "$bin" --stages full --list)
grep -q "^todo     pgd-at+gfa-deep-sin2-ce: " <<<"$plan" || { echo "$plan"; fail "the best GFA variant is not deep-sin2-ce"; }
rm pick/gfa-deep-cos-mse.done pick/gfa-deep-sin2-ce.done
plan=$(bash "$src/tools/cifar_study.sh" --data data --out pick --build "$bin" --stages full --list)
grep -q "^todo     pgd-at+gfa-first-cos-ce: " <<<"$plan" ||
    { echo "$plan"; fail "without a moved variant the best is not the accurate first-cos-ce"; }

# the study's summary reads the reports (tests/study/check_study_report.py checks its numbers)
if command -v python3 >/dev/null; then
    python3 "$src/tools/study_report.py" res >rep.log || { cat rep.log; fail "study_report.py"; }
    grep -q "^| gfa-deep-cos-ce | [0-9.]* | " res/evaluation.md ||
        fail "evaluation.md lacks the diagnostics of the last model"
    grep -q "^## The paper's claims" res/evaluation.md || fail "evaluation.md lacks the claims table"
fi
echo "PASS: study evaluation stage and choice of the best GFA variant"
