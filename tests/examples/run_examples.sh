#!/bin/bash
# tests/examples/run_examples.sh BIN_DIR CASE -- the examples, end to end, on
# tiny data made here (ctest "example_<CASE>").
#
# Makes a tiny CIFAR-10 binary directory (five data_batch_<i>.bin of 40
# records and a test_batch.bin of 40, random pixels) and a tiny gzip'd IDX
# directory (Fashion-MNIST file names, 28x28), then runs one example:
#   train_cifar   full runs (mlp with PGD-AT + GFA and augmentation on CIFAR
#                 layout; mlp with GFA on IDX; TRADES + GFA; cnn-cw with GFA), checks
#                 exit codes, the checkpoint and its state file, the final
#                 report; then a run stopped after epoch 1 and resumed must
#                 give a checkpoint and state byte-identical to the
#                 uninterrupted run; a missing data directory must fail.
#   quickstart    synthetic data and the tiny CIFAR directory.
#   custom_loop   synthetic data.
#   eval_robustness  the report of two checkpoints side by side, and its
#                    resumption from --cache records.
# Threads are fixed (2) so that the runs compared are deterministic. The
# temporary directory is removed on exit (DD_EXAMPLES_KEEP=DIR keeps the
# eval_robustness report there).
set -euo pipefail

bin=$(cd "${1:?usage: run_examples.sh BIN_DIR CASE}" && pwd)
case_name=${2:?usage: run_examples.sh BIN_DIR CASE}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dd-examples.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

fail() { echo "FAIL: $*"; exit 1; }

# make_cifar, make_idx: tiny datasets (shared with tools/valgrind_examples.sh).
. "$(dirname "${BASH_SOURCE[0]}")/tiny_data.sh"

# run LOG CMD...: runs CMD with output in LOG, shows LOG and fails on error.
run() {
    local log=$1
    shift
    echo "== $*"
    local rc=0
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$log"
        fail "exit status $rc from: $*"
    fi
    cat "$log"
}

case "$case_name" in
train_cifar)
    make_cifar cifar 40
    make_idx idx train 120
    make_idx idx t10k 40
    common=(--threads 2 --no-progress --batch 32 --eval-n 16)

    # PGD-AT + GFA on the CIFAR layout (augmentation on), uninterrupted.
    args=(--data cifar --arch mlp --defense pgd-at+gfa --epochs 2 --train-steps 2 "${common[@]}")
    run full.log "$bin/train_cifar" "${args[@]}" --out full.safetensors
    [ -s full.safetensors ] || fail "no checkpoint written"
    [ -s full.safetensors.state ] || fail "no state file written"
    grep -q "robust accuracy at eps" full.log || fail "no robustness report"
    grep -q "clean test accuracy" full.log || fail "no clean accuracy"

    # The same run, interrupted after epoch 1, then resumed.
    run part1.log "$bin/train_cifar" "${args[@]}" --out part.safetensors --stop-after 1
    grep -q "stopped after epoch 1" part1.log || fail "--stop-after did not stop"
    run part2.log "$bin/train_cifar" --resume part.safetensors --threads 2 --no-progress --eval-n 16
    grep -q "resuming part.safetensors after epoch 1" part2.log || fail "did not resume"
    cmp full.safetensors part.safetensors || fail "resumed weights differ from the uninterrupted run"
    cmp full.safetensors.state part.safetensors.state || fail "resumed optimizer state differs"

    # Killed at each point of the end-of-epoch save (after the new state,
    # after the checkpoint, after the rename): the rerun with --resume
    # continues from a matching pair and ends with the uninterrupted weights.
    for k in 1 2 3; do
        run "k$k-1.log" "$bin/train_cifar" "${args[@]}" --out "k$k.safetensors" --stop-after 1
        rc=0
        TRAIN_CIFAR_CRASH_AT=$k "$bin/train_cifar" --resume "k$k.safetensors" --threads 2 --no-progress \
            --eval-n 16 >"k$k-2.log" 2>&1 || rc=$?
        [ "$rc" -eq 137 ] || fail "crash point $k: exit $rc (want 137)"
        run "k$k-3.log" "$bin/train_cifar" --resume "k$k.safetensors" --threads 2 --no-progress --eval-n 16
        cmp full.safetensors "k$k.safetensors" || fail "crash point $k: the resumed weights differ"
        cmp full.safetensors.state "k$k.safetensors.state" || fail "crash point $k: the state differs"
        [ ! -e "k$k.safetensors.state.next" ] || fail "crash point $k: a .next state was left behind"
        [ ! -e "k$k.safetensors.state.tmp" ] || fail "crash point $k: a temporary was left behind"
    done
    grep -q "recovered the state of an interrupted save" k2-3.log || fail "crash point 2: not recovered from .next"

    # GFA alone on gzip'd IDX files (1-channel defaults: mlp, Adam).
    run idx.log "$bin/train_cifar" --data idx --epochs 1 "${common[@]}" --out idx.safetensors
    grep -q "arch mlp, defense gfa" idx.log || fail "unexpected defaults for 1-channel data"
    [ -s idx.safetensors ] || fail "no checkpoint written (IDX)"

    # TRADES + GFA.
    run trades.log "$bin/train_cifar" --data cifar --arch mlp --defense trades+gfa --epochs 1 \
        --train-steps 2 "${common[@]}" --out trades.safetensors
    grep -q "beta 6" trades.log || fail "TRADES settings not shown"
    [ -s trades.safetensors ] || fail "no checkpoint written (TRADES)"

    # The paper's architecture with GFA, a few batches.
    run cw.log "$bin/train_cifar" --data cifar --arch cnn-cw --train-limit 64 --test-limit 32 \
        --epochs 1 --batch 16 --threads 2 --no-progress --eval-n 8 --out cw.safetensors
    [ -s cw.safetensors ] || fail "no checkpoint written (cnn-cw)"

    # Errors are reported, not crashed on.
    if "$bin/train_cifar" --data "$tmp/missing" --epochs 1 >err.log 2>&1; then
        fail "a missing data directory was accepted"
    fi
    grep -q "error:" err.log || fail "no error message for a missing data directory"
    if "$bin/train_cifar" --defense bogus >err.log 2>&1; then
        fail "an unknown defense was accepted"
    fi
    # Resuming on other data (a CIFAR checkpoint, 1x28x28 IDX images): an
    # error before training, not a crash in the forward pass.
    cp part.safetensors cifar_ck.safetensors && cp part.safetensors.state cifar_ck.safetensors.state
    rc=0
    "$bin/train_cifar" --data idx --resume cifar_ck.safetensors --epochs 3 "${common[@]}" >err.log 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "resume on other data: exit $rc (want 1: an error)"
    grep -q "resume with the data the run was trained on" err.log || fail "no shape message: $(cat err.log)"
    # Resuming with another architecture is refused, not half-applied.
    if "$bin/train_cifar" --data cifar --resume cifar_ck.safetensors --arch cnn-cw "${common[@]}" >err.log 2>&1; then
        fail "--arch on --resume of an mlp run was accepted"
    fi
    grep -q "keeps its network" err.log || fail "no message for --arch on --resume"
    # A finished run says so.
    run done.log "$bin/train_cifar" --resume full.safetensors --threads 2 --no-progress --eval-n 0
    grep -q "already complete (2 of 2 epochs)" done.log || fail "a finished run did not say it was complete"
    # ... and trained further with a larger --epochs, it says how the schedule changes.
    cp full.safetensors ext.safetensors && cp full.safetensors.state ext.safetensors.state
    run ext.log "$bin/train_cifar" --resume ext.safetensors --epochs 3 --threads 2 --no-progress --eval-n 0
    grep -q "recomputed over 3 epochs, so at the resumed epoch 3 the rate is" ext.log ||
        fail "no note on the recomputed schedule: $(cat ext.log)"
    grep -q "epoch 3/3" ext.log || fail "the extended run did not train epoch 3"
    # Values that used to mean "the default" silently, and unwritable outputs, before any work.
    for bad in "--lr 0" "--train-step-size 0" "--train-eps 0" "--arch="; do
        # shellcheck disable=SC2086
        if "$bin/train_cifar" --data cifar --defense pgd-at $bad --epochs 1 "${common[@]}" >err.log 2>&1; then
            fail "'$bad' was accepted"
        fi
        grep -q "error:" err.log || fail "no message for '$bad'"
    done
    if "$bin/train_cifar" --data cifar --epochs 1 "${common[@]}" --out "$tmp/no/such/dir/m.safetensors" >err.log 2>&1; then
        fail "an --out in a missing directory was accepted"
    fi
    grep -q "cannot write next to --out" err.log || fail "no early message for an unwritable --out"
    ! grep -q "^epoch" err.log || fail "trained before finding --out unwritable"
    ;;
quickstart)
    make_cifar cifar 20
    run q1.log "$bin/quickstart" - q1.safetensors
    [ -s q1.safetensors ] || fail "no checkpoint written"
    run q2.log "$bin/quickstart" cifar q2.safetensors
    [ -s q2.safetensors ] || fail "no checkpoint written (CIFAR layout)"
    ;;
custom_loop)
    run c.log "$bin/custom_loop" --limit 128 --epochs 1 --threads 2 --out c.safetensors
    [ -s c.safetensors ] || fail "no checkpoint written"
    grep -q "alignment" c.log || fail "no alignment reported"
    ;;
eval_robustness)
    for d in none gfa; do
        run "$d.log" "$bin/train_cifar" --synthetic 512 --arch mlp --defense "$d" --epochs 1 \
            --batch 32 --optimizer adam --threads 2 --no-progress --eval-n 0 --out "$d.safetensors"
    done
    # Every kind of row: budgeted Linf and L2, minimum-norm (L2 and L1), black-box, ensemble.
    run e.log "$bin/eval_robustness" --n 24 --batch 16 --threads 2 --synthetic --out report \
        --attacks fgsm,pgd-linf,apgd-ce-linf,pgd-l2,deepfool-l2,ead,square-linf,autoattack-linf \
        --eps 2/255,8/255 --eps-l2 0.5 --queries 40 --ead-steps 20 --landscape 8 \
        --transfer src=none.safetensors --compare none.safetensors gfa.safetensors
    for f in report.md report.json report.csv report-accuracy-linf.svg report-accuracy-l2.svg \
        report-landscape.svg; do
        [ -s "$f" ] || fail "$f not written"
    done
    grep -q "| none | gfa |" report.md || fail "report.md lacks the side-by-side columns"
    grep -q "| autoattack-linf | Linf | 8/255 |" report.md || fail "report.md lacks AutoAttack"
    grep -q '"median_l2"' report.json || fail "report.json lacks minimum-norm statistics"
    grep -q '"name": "gfa"' report.json || fail "report.json lacks the models' names"
    grep -q '"accuracy_common": [0-9n]' report.json || fail "report.json lacks the common-sample accuracies"
    grep -q "| fgsm | Linf | 8/255 | 16/255 |" report.md || fail "report.md lacks eps in [-1,1] units"
    grep -q "| transfer-pgd<-src | Linf | 8/255 |" report.md || fail "report.md lacks the transfer attack"
    grep -q "every model classifies correctly" report.md || fail "report.md lacks the common-sample protocol"
    # --input-range is checked against the checkpoints (these standardise their input)
    if "$bin/eval_robustness" --n 8 --synthetic --input-range pm1 none.safetensors >r.log 2>&1; then
        fail "--input-range pm1 accepted a standardising checkpoint"
    fi
    grep -q "not --input-range pm1" r.log || fail "no message for a wrong --input-range"
    [ "$(grep -c '^gfa,' report.csv)" -ge 10 ] || fail "report.csv lacks rows"
    if command -v python3 >/dev/null; then
        python3 -c 'import json, sys; json.load(open(sys.argv[1]))' report.json ||
            fail "report.json is not valid JSON"
    fi
    # A missing checkpoint is an error with a message, not a crash.
    if "$bin/eval_robustness" --n 8 --synthetic missing.safetensors >err.log 2>&1; then
        fail "a missing checkpoint was accepted"
    fi
    grep -q "error:" err.log || fail "no error message for a missing checkpoint"
    # An unwritable report path fails before the attacks, not after them.
    if "$bin/eval_robustness" --n 8 --synthetic --out "$tmp/no/such/dir/r" none.safetensors >err.log 2>&1; then
        fail "an unwritable --out was accepted"
    fi
    grep -q "cannot write the report" err.log || fail "no early message for an unwritable --out"
    ! grep -q "^== " err.log || fail "attacks ran before the report path was checked"
    # --cache: a rerun reads each model's results back instead of attacking
    # again, and the report is the same; a record that does not hold is
    # said and redone; other settings get records of their own.
    cached=(--n 24 --batch 16 --threads 2 --synthetic --attacks fgsm,pgd-linf,deepfool-l2,ead
        --eps 2/255,8/255 --ead-steps 20 --landscape 4 --transfer src=none.safetensors --cache cache
        none.safetensors gfa.safetensors)
    run c1.log "$bin/eval_robustness" "${cached[@]}" --out c1
    [ "$(ls cache/*.eval | wc -l)" -eq 2 ] || fail "--cache did not keep one record per model"
    run c2.log "$bin/eval_robustness" "${cached[@]}" --out c2
    [ "$(grep -c ': results of cache/' c2.log)" -eq 2 ] || fail "the rerun did not read both records"
    ! grep -q "transfer source" c2.log || fail "the rerun made the transfer adversarials it did not need"
    for ext in md json csv; do
        cmp <(sed 's/c1/cN/g' "c1.$ext") <(sed 's/c2/cN/g' "c2.$ext") ||
            fail "the report from the cache differs from the attacked one (.$ext)"
    done
    cmp <(sed 's/c1/cN/g' c1-accuracy-linf.svg) <(sed 's/c2/cN/g' c2-accuracy-linf.svg) ||
        fail "the accuracy plot from the cache differs"
    # a truncated record, and one whose mask is too short: said, redone,
    # and the report is still the attacked one (the seconds aside)
    rec=$(ls cache/gfa-*.eval)
    head -n -1 "$rec" >t && mv t "$rec"
    rec0=$(ls cache/none-*.eval)
    sed -i '0,/^row /s/^\(row .* \)\([01]*\)0$/\1\2/' "$rec0"
    run c3.log "$bin/eval_robustness" "${cached[@]}" --out c3
    grep -q "gfa-.*\.eval, line .*: expected 'end' as the last line; attacking the model again" c3.log ||
        fail "no warning for a truncated record"
    grep -q "none-.*\.eval, line 5: a mask is missing or not the run's length" c3.log ||
        fail "no warning for a short mask"
    cmp <(sed 's/c1/cN/g' c1.md) <(sed 's/c3/cN/g' c3.md) || fail "the redone models' report differs"
    run c4.log "$bin/eval_robustness" "${cached[@]}" --out c4
    [ "$(grep -c ': results of cache/' c4.log)" -eq 2 ] || fail "the redone records were not kept"
    # other settings: attacked, in records of their own beside the first ones
    run c5.log "$bin/eval_robustness" "${cached[@]/2\/255,8\/255/4\/255}" --out c5
    ! grep -q ': results of cache/' c5.log || fail "a record of other settings was used"
    [ "$(ls cache/*.eval | wc -l)" -eq 4 ] || fail "other settings did not get records of their own"
    if "$bin/eval_robustness" --n 8 --synthetic --cache none.safetensors/x none.safetensors >err.log 2>&1; then
        fail "an unusable --cache was accepted"
    fi
    grep -q "^error: --cache" err.log || fail "no message for an unusable --cache"
    if [ -n "${DD_EXAMPLES_KEEP:-}" ]; then # keep the report for a look
        mkdir -p "$DD_EXAMPLES_KEEP" && cp report* "$DD_EXAMPLES_KEEP/"
    fi
    ;;
train_cifar_mpi)
    # 2 ranks x batch 32 = global batch 64, GFA on synthetic data
    run mpi.log "${MPIEXEC:-mpirun}" -np 2 "$bin/train_cifar_mpi" --synthetic 256 --arch mlp --defense gfa \
        --epochs 2 --batch 32 --out mpi.safetensors
    grep -q "2 ranks x batch 32 = global batch 64" mpi.log || fail "no global batch line"
    [ "$(grep -c '^epoch ' mpi.log)" -eq 2 ] || fail "progress not printed once per epoch (rank 0 only)"
    [ -s mpi.safetensors ] || fail "no checkpoint written"
    # a data directory that does not exist: every rank stops with a message
    if "${MPIEXEC:-mpirun}" -np 2 "$bin/train_cifar_mpi" --data /nonexistent --epochs 1 >bad.log 2>&1; then
        fail "a missing data directory was accepted"
    fi
    grep -q "error:" bad.log || fail "no error message for a missing data directory"
    ;;
*)
    fail "unknown case '$case_name'"
    ;;
esac
echo "PASS: $case_name"
