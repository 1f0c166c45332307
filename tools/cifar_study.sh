#!/bin/bash
# tools/cifar_study.sh -- the CIFAR-10 study of docs/RESULTS.md: does GFA
# (DeepDefense, arXiv 2511.13749) make CNNs robust, or only mask gradients?
#
#   tools/cifar_study.sh --data CIFAR_DIR [--out DIR] [--build DIR] [options]
#
# CIFAR_DIR holds data_batch_1..5.bin and test_batch.bin (decompress
# ../shared/data/cifar10 with `xz -dk *.xz`). Everything goes into the
# results folder (--out, default study/): per model NAME its checkpoint
# NAME.safetensors (+ .state), its training log NAME.log, its per-epoch
# metrics NAME.csv (loss, accuracy, alignment per hook), NAME.wall (training
# seconds, summed over sittings) and NAME.done once finished (NAME.failed
# with the error instead when the training failed, e.g. diverged; it is not
# retried until that file is deleted); the lambda
# sweep's choices in sweep-*.choice; the reports report-*.md/.json/.csv/.svg,
# each with its log, wall time, the models it covers (.models) and its
# per-model result records (report-*.cache/, kept as each model is done).
#
# Resumable: a rerun skips every model with a .done file, continues an
# interrupted training with train_cifar --resume (from its last finished
# epoch), and skips every report already written. So the study can run
# across several sittings: stop it at any time (Ctrl-C, kill), rerun the
# same command later. --list prints the plan and what is done.
#
# The plan (all cnn-cw, SGD momentum 0.9, cosine, crop+flip, inputs in
# [-1,1] as the paper: --input-range pm1):
#   stage 1, sweep: GFA {first, deep} x {cos, sin2} x {ce, mse} over four
#     lambdas each (first: 0.1..100, deep: 0.01..10, decades), --sweep-epochs
#     on --sweep-limit images; per variant the lambda with the best PGD-10
#     accuracy (train_cifar's check, 500 test images) among those whose test
#     accuracy is at least 80% of the variant's best is chosen (so a run that
#     collapsed to a constant classifier is never chosen), and the
#     alignment of every sweep run is in its CSV;
#   stage 2, full: all 50,000 training images, --epochs epochs each:
#     plain-ce, plain-mse (is MSE alone what changes the numbers?), pgd-at
#     (Madry: eps 8/255, --pgd-steps steps of 2.5 eps / steps, eps ramped
#     over --eps-ramp epochs), the eight GFA variants at their chosen lambda,
#     pgd-at + the best GFA variant (the best PGD-10 among the variants whose
#     alignment moved without a collapse; see below), and resnet20 for
#     pgd-at and the best GFA variant;
#   stage 3, evaluation (eval_robustness, --eval-n test images, the first
#     ones of the test set: the same images for every model): clean, FGSM,
#     PGD-20, APGD-CE, APGD-DLR, APGD-T at 2,4,8,16,32/255; AutoAttack
#     standard (the ensemble) and its parts alone (APGD-CE, APGD-T, FAB-T,
#     Square 5000) at 8/255; DeepFool and EAD
#     median norms; transfer attacks (PGD-20 adversarials of plain-ce and
#     pgd-at replayed on every model); the common-sample table of the
#     paper's protocol; eps in both units; loss landscape radial (from the
#     [-1,1] origin) vs tangential. Resumable per model: each model's
#     results are kept in report-*.cache/ as soon as it is done.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
data=""
out=study
epochs=10
sweep_epochs=2
sweep_limit=10000
pgd_steps=10
eps_ramp=3
eval_n=1000
train_limit=0
threads=2
only=""
list=0
stages="sweep,full,eval"

usage() {
    sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF
options:
  --data DIR          CIFAR-10 binary directory (required)
  --out DIR           results folder (default study)
  --build DIR         build directory with train_cifar and eval_robustness (default $build)
  --epochs N          epochs of every full training (default $epochs)
  --sweep-epochs N    epochs of a sweep run (default $sweep_epochs)
  --sweep-limit N     training images of a sweep run (default $sweep_limit)
  --pgd-steps N       PGD-AT attack steps (default $pgd_steps)
  --eps-ramp N        PGD-AT eps ramp, epochs (default $eps_ramp)
  --eval-n N          test images of the robustness evaluation (default $eval_n)
  --train-limit N     full trainings on the first N images (default 0: all; smoke tests)
  --threads N         OpenMP threads (default $threads)
  --stages LIST       any of sweep,full,eval (default all)
  --only LIST         comma-separated model names: train only these
  --list              print the plan and its state, run nothing
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --sweep-epochs) sweep_epochs=$2; shift 2 ;;
    --sweep-limit) sweep_limit=$2; shift 2 ;;
    --pgd-steps) pgd_steps=$2; shift 2 ;;
    --eps-ramp) eps_ramp=$2; shift 2 ;;
    --eval-n) eval_n=$2; shift 2 ;;
    --train-limit) train_limit=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --stages) stages=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --list) list=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cifar_study.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$data" ] || { echo "cifar_study.sh: --data CIFAR_DIR is required (see --help)" >&2; exit 2; }
for f in data_batch_1.bin test_batch.bin; do
    [ -r "$data/$f" ] || { echo "cifar_study.sh: $data/$f missing (xz -dk the .xz files)" >&2; exit 2; }
done
for b in train_cifar eval_robustness; do
    [ -x "$build/$b" ] || { echo "cifar_study.sh: $build/$b not built" >&2; exit 2; }
done
mkdir -p "$out"
[ -w "$out" ] || { echo "cifar_study.sh: cannot write to $out" >&2; exit 2; }

has() { case ",$1," in *,"$2",*) return 0 ;; *) return 1 ;; esac; }

common=(--data "$data" --threads "$threads" --no-progress --seed 1 --input-range pm1)
full=(--epochs "$epochs" --train-limit "$train_limit")

# train NAME ARGS...: one training, skipped when done, resumed when
# interrupted; its wall time is added to NAME.wall.
train() {
    local name=$1
    shift
    local ck=$out/$name.safetensors
    # done: its marker, and for a full training its checkpoint too (a results
    # folder restored without checkpoints retrains them; sweep runs keep none)
    if [ -e "$out/$name.done" ] && { [ -e "$ck" ] || [[ $name == sweep-* ]]; }; then
        [ "$list" = 1 ] && echo "done     $name ($(cat "$out/$name.wall" 2>/dev/null || echo ?) s)"
        return 0
    fi
    if [ -e "$out/$name.failed" ]; then
        [ "$list" = 1 ] && echo "failed   $name: $(cat "$out/$name.failed")"
        return 0
    fi
    if [ -n "$only" ] && ! has "$only" "$name"; then
        return 0
    fi
    if [ "$list" = 1 ]; then
        if [ -e "$ck.state" ]; then
            echo "resume   $name (after epoch $(sed -n 's/^epochs_done //p' "$ck.state"))"
        else
            echo "todo     $name: $*"
        fi
        return 0
    fi
    local t0 rc
    t0=$(date +%s)
    echo "[$(date -u +%H:%M:%S)] $name"
    set +e
    if [ -e "$ck.state" ]; then
        echo "== resumed $(date -u '+%F %T') UTC" >>"$out/$name.log"
        "$build/train_cifar" --resume "$ck" --threads "$threads" --no-progress >>"$out/$name.log" 2>&1
    else
        # a fresh start: train_cifar appends to an existing metrics file (for
        # --resume), so drop what an earlier, lost training left
        rm -f "$out/$name.csv" "$out/$name.wall"
        echo "== started $(date -u '+%F %T') UTC: train_cifar ${common[*]} $* --out $ck --metrics $out/$name.csv" \
            >"$out/$name.log"
        "$build/train_cifar" "${common[@]}" "$@" --out "$ck" --metrics "$out/$name.csv" >>"$out/$name.log" 2>&1
    fi
    rc=$?
    set -e
    local prev
    prev=$(cat "$out/$name.wall" 2>/dev/null || echo 0)
    echo $((prev + $(date +%s) - t0)) >"$out/$name.wall"
    if [ "$rc" -ge 128 ]; then # killed (Ctrl-C, kill): stop; a rerun resumes
        echo "cifar_study.sh: $name interrupted (exit $rc); rerun to resume" >&2
        exit "$rc"
    fi
    if [ "$rc" -ne 0 ]; then
        # a training that fails (diverged: non-finite loss) is a result, recorded
        # in NAME.failed and not retried (delete NAME.failed to retry)
        echo "exit $rc: $(grep -m1 '^error:' "$out/$name.log" || tail -1 "$out/$name.log")" >"$out/$name.failed"
        echo "cifar_study.sh: $name failed: $(cat "$out/$name.failed")" >&2
        return 0
    fi
    touch "$out/$name.done"
}

# PGD-10 accuracy of a finished run (train_cifar's closing check).
pgd_of() {
    local v
    v=$(sed -n 's/.*PGD-10 \([0-9.]*\)%.*/\1/p' "$out/$1.log" 2>/dev/null | tail -1)
    echo "${v:--1}"
}

hooks_of() { [ "$1" = first ] && echo first || echo deep; }
lambdas_of() { [ "$1" = first ] && echo "0.1 1 10 100" || echo "0.01 0.1 1 10"; }

# Test accuracy of a finished run's last epoch (its metrics CSV), -1 if none.
acc_of() {
    [ -e "$out/$1.done" ] || { echo -1; return; } # failed (diverged) or unfinished
    tail -n +2 "$out/$1.csv" 2>/dev/null | tail -1 | cut -d, -f4 | grep . || echo -1
}

# Mean |cos| of a run's first and last epoch, "FIRST LAST" (its metrics
# CSV's align_mean column; "0 0" without one).
align_of() {
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "align_mean") c = i; next }
             c { if (f == "") f = $c; l = $c } END { print (f == "" ? 0 : f), (l == "" ? 0 : l) }' \
        "$out/$1.csv" 2>/dev/null || echo "0 0"
}

# The sweep's choice for variant $1: among its lambdas whose test accuracy
# is at least 80% of the variant's best (a run that collapsed to a constant
# classifier is not "robust"), the best PGD-10 accuracy; ties go to the
# smaller lambda.
choose() {
    local v=$1 h=$2 lam rows best
    rows=$(for lam in $(lambdas_of "$h"); do echo "$lam $(acc_of "sweep-$v-$lam") $(pgd_of "sweep-$v-$lam")"; done)
    best=$(echo "$rows" | awk '{ if ($2 > m) m = $2 } END { print m }')
    echo "$rows" | awk -v m="$best" '$2 >= 0.8 * m { print }' | sort -s -k3,3gr | head -1 | cut -d' ' -f1
}

variants=""
for h in first deep; do for r in cos sin2; do for l in ce mse; do variants="$variants $h-$r-$l"; done; done; done

# ---- stage 1: the lambda sweep ---------------------------------------------
if has "$stages" sweep; then
    for v in $variants; do
        IFS=- read -r h r l <<<"$v"
        for lam in $(lambdas_of "$h"); do
            train "sweep-$v-$lam" --defense gfa --gfa-hooks "$(hooks_of "$h")" --gfa-lambda "$lam" \
                --gfa-mode "$r" --loss "$l" --epochs "$sweep_epochs" --train-limit "$sweep_limit" \
                --eval-n 500
        done
        if [ "$list" = 0 ] && [ ! -e "$out/sweep-$v.choice" ] && [ -z "$only" ]; then
            choose "$v" "$h" >"$out/sweep-$v.choice"
        fi
    done
fi

choice() { cat "$out/sweep-$1.choice" 2>/dev/null || echo ""; }

# ---- stage 2: the full trainings ---------------------------------------------
pgd_args=(--defense pgd-at --train-eps 0.0313725490196 --train-steps "$pgd_steps" --eps-ramp "$eps_ramp")
if has "$stages" full; then
    # cheapest first: plain (1x a plain step), GFA (~2x), then PGD-AT (~11x)
    train plain-ce --defense none "${full[@]}"
    train plain-mse --defense none --loss mse "${full[@]}"
    for v in $variants; do
        IFS=- read -r h r l <<<"$v"
        lam=$(choice "$v")
        if [ -z "$lam" ]; then
            [ "$list" = 1 ] && echo "waits    gfa-$v (its sweep)"
            continue
        fi
        train "gfa-$v" --defense gfa --gfa-hooks "$(hooks_of "$h")" --gfa-lambda "$lam" --gfa-mode "$r" \
            --loss "$l" "${full[@]}"
    done
    train pgd-at "${pgd_args[@]}" "${full[@]}"
    # the best GFA variant: one in which GFA does something. Among the
    # finished variants whose alignment moved (last epoch's mean |cos| at
    # least 0.1 and twice the first epoch's) and that did not collapse (test
    # accuracy at least 20%), the highest PGD-10 accuracy; a variant whose
    # alignment stayed put is a plain model plus a constant penalty, and
    # PGD-AT with it would be PGD-AT again. If no variant moved: the highest
    # PGD-10 among those whose test accuracy is at least 80% of the best
    # GFA model's. Ties go to the earlier variant.
    rows=$(for v in $variants; do
        if [ -e "$out/gfa-$v.done" ]; then
            echo "$v $(acc_of "gfa-$v") $(pgd_of "gfa-$v") $(align_of "gfa-$v")"
        fi
    done)
    best=""
    if [ -n "$rows" ]; then
        best=$(echo "$rows" | awk '$5 >= 0.1 && $5 >= 2 * $4 && $2 >= 0.2 { print }' |
            sort -s -k3,3gr | head -1 | cut -d' ' -f1)
    fi
    if [ -z "$best" ] && [ -n "$rows" ]; then
        m=$(echo "$rows" | awk '{ if ($2 > m) m = $2 } END { print m }')
        best=$(echo "$rows" | awk -v m="$m" '$2 >= 0.8 * m { print }' | sort -s -k3,3gr | head -1 | cut -d' ' -f1)
    fi
    if [ -n "$best" ]; then
        IFS=- read -r h r l <<<"$best"
        lam=$(choice "$best")
        gargs=(--gfa-hooks "$(hooks_of "$h")" --gfa-lambda "$lam" --gfa-mode "$r" --loss "$l")
        train "pgd-at+gfa-$best" "${pgd_args[@]}" --defense pgd-at+gfa "${gargs[@]}" "${full[@]}"
        train resnet20-pgd-at --arch resnet20 "${pgd_args[@]}" "${full[@]}"
        train "resnet20-gfa-$best" --arch resnet20 --defense gfa "${gargs[@]}" "${full[@]}"
    elif [ "$list" = 1 ]; then
        echo "waits    pgd-at+gfa, resnet20-pgd-at, resnet20-gfa (a finished GFA variant)"
    fi
fi

# ---- stage 3: the evaluation -----------------------------------------------------
# report NAME MODEL...: one eval_robustness report of the finished models.
# Each model's results are kept in NAME.cache/ as soon as it is attacked
# (eval_robustness --cache), so an interrupted report resumes after its
# last finished model, and a report is rewritten (from those records, the
# new models attacked) when more models have finished since it was made.
report() {
    local name=$1
    shift
    local models=() m
    for m in "$@"; do
        [ -e "$out/$m.done" ] && models+=("$m=$out/$m.safetensors")
    done
    [ ${#models[@]} -gt 0 ] || return 0
    if [ -e "$out/$name.md" ] && [ "$(cat "$out/$name.models" 2>/dev/null)" = "${models[*]}" ]; then
        [ "$list" = 1 ] && echo "done     $name"
        return 0
    fi
    if [ "$list" = 1 ]; then
        local kept
        kept=$(find "$out/$name.cache" -name '*.eval' 2>/dev/null | wc -l)
        echo "todo     $name (${#models[@]} models, $kept model records kept): ${models[*]}"
        return 0
    fi
    echo "[$(date -u +%H:%M:%S)] $name (${#models[@]} models)"
    local t0 rc prev
    t0=$(date +%s)
    echo "== $(date -u '+%F %T') UTC" >>"$out/$name.log"
    set +e
    "$build/eval_robustness" --data "$data" --n "$eval_n" --threads "$threads" --batch 100 \
        --input-range pm1 --pgd-steps 20 --ead-steps 100 --landscape 16 --landscape-radius 8 \
        "${eval_args[@]}" --cache "$out/$name.cache" --out "$out/$name.partial" "${models[@]}" \
        >>"$out/$name.log" 2>&1
    rc=$?
    set -e
    prev=$(cat "$out/$name.wall" 2>/dev/null || echo 0)
    echo $((prev + $(date +%s) - t0)) >"$out/$name.wall" # summed over sittings
    if [ "$rc" -ne 0 ]; then # killed, or an error (in the log): a rerun resumes
        echo "cifar_study.sh: $name stopped (exit $rc, see $out/$name.log); rerun to resume" >&2
        exit "$rc"
    fi
    for f in "$out/$name.partial"*; do
        [ "$f" = "$out/$name.partial.md" ] || mv "$f" "${f/.partial/}"
    done
    # the report names its plots by the --out path: point it at the renamed ones
    sed -i "s|$name\.partial|$name|g" "$out/$name.partial.md"
    mv "$out/$name.partial.md" "$out/$name.md" # last: the report counts as written
    echo "${models[*]}" >"$out/$name.models"
}

if has "$stages" eval; then
    all=(plain-ce plain-mse pgd-at)
    for v in $variants; do all+=("gfa-$v"); done
    for f in "$out"/pgd-at+gfa-*.done "$out"/resnet20-*.done; do
        [ -e "$f" ] && { b=${f##*/}; all+=("${b%.done}"); }
    done
    # gradient attacks at every eps, black-box and minimum-norm ones
    eval_args=(--attacks fgsm,pgd-linf,apgd-ce-linf,apgd-dlr-linf,apgd-t-linf --eps 2/255,4/255,8/255,16/255,32/255)
    # transfer: PGD-20 adversarials made on the plain and the PGD-AT model
    for src in plain-ce pgd-at; do
        [ -e "$out/$src.done" ] && eval_args+=(--transfer "$src=$out/$src.safetensors")
    done
    report report-gradient "${all[@]}"
    eval_args=(--attacks autoattack-linf,apgd-ce-linf,apgd-t-linf,fab-t-linf,square-linf,deepfool-l2,ead --eps 8/255 --landscape 0)
    report report-ensemble "${all[@]}"
fi
[ "$list" = 1 ] || echo "study: results in $out"
