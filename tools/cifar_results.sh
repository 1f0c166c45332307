#!/bin/bash
# tools/cifar_results.sh -- the CIFAR-10 comparison of docs/RESULTS.md.
#
#   tools/cifar_results.sh BUILD_DIR CIFAR_DIR OUT_DIR [TRAIN_LIMIT EPOCHS]
#
# CIFAR_DIR holds data_batch_1..5.bin and test_batch.bin (e.g. decompressed
# from ../shared/data/cifar10 with `xz -dk *.xz`). Trains cnn-cw four ways
# (plain, PGD-AT, GFA, PGD-AT + GFA) after a small GFA lambda sweep, then
# compares the four checkpoints with eval_robustness. Everything is logged
# under OUT_DIR; the schedule is sized for a 2-core machine.
set -euo pipefail
build=${1:?build dir}
data=${2:?CIFAR-10 dir}
out=${3:?output dir}
limit=${4:-20000}
epochs=${5:-3}
mkdir -p "$out"
train="$build/train_cifar --data $data --arch cnn-cw --threads 2 --no-progress --seed 1"

# 1. lambda sweep: GFA alone, 2 epochs on 10k images, PGD-10 on 500 test images
# (skipped when LAMBDA is set, e.g. to rerun the trainings with the lambda
# an earlier sweep chose)
if [ -z "${LAMBDA:-}" ]; then
for lam in 0.01 0.05 0.2; do
    $train --defense gfa --gfa-lambda "$lam" --train-limit 10000 --epochs 2 --eval-n 500 \
        --out "$out/sweep-gfa-$lam.safetensors" > "$out/sweep-gfa-$lam.log" 2>&1
done
best=$(for lam in 0.01 0.05 0.2; do
           acc=$(grep -Eo 'PGD-10[^%]*[0-9.]+%' "$out/sweep-gfa-$lam.log" | tail -1 | grep -Eo '[0-9.]+%$' | tr -d %)
           echo "$acc $lam"
       done | sort -rn | head -1 | cut -d' ' -f2)
echo "lambda chosen by the sweep: $best" | tee "$out/lambda.txt"
else
best=$LAMBDA
fi

# 2. the four trainings
for d in none pgd-at gfa pgd-at+gfa; do
    $train --defense "$d" --gfa-lambda "$best" --train-limit "$limit" --epochs "$epochs" \
        --eval-n 1000 --out "$out/cnn-cw-$d.safetensors" > "$out/train-$d.log" 2>&1
done

# 3. side-by-side robustness report
"$build/eval_robustness" --data "$data" --n "${EVAL_N:-200}" --threads 2 \
    --attacks fgsm,pgd-linf,apgd-ce-linf,deepfool-l2,ead,square-linf \
    --eps 1/255,2/255,4/255,8/255 --queries 500 --ead-steps 50 --landscape 4 --out "$out/report" \
    --compare "$out/cnn-cw-none.safetensors" "$out/cnn-cw-pgd-at.safetensors" \
              "$out/cnn-cw-gfa.safetensors" "$out/cnn-cw-pgd-at+gfa.safetensors" > "$out/eval.log" 2>&1
echo "done: $out/report.md"
