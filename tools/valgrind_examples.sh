#!/bin/bash
# tools/valgrind_examples.sh -- the example programs on tiny data under
# valgrind memcheck: no memory error and no definite leak.
#
#   tools/valgrind_examples.sh BUILD_DIR
#
# BUILD_DIR is an ordinary (unsanitized) build with the examples built.
# Data are made here, tiny, so that the whole run takes a few minutes under
# valgrind's ~50x slowdown: a CIFAR-10 directory of 16 random records per
# file and a gzip'd IDX directory (Fashion-MNIST names, 28x28). Every run
# uses 2 OpenMP threads, so the parallel paths are exercised too. Covered:
# quickstart (CIFAR directory), train_cifar (PGD-AT + GFA on synthetic data,
# stopped after epoch 1 and resumed from its checkpoint; GFA on gzip IDX),
# custom_loop (a CNN built node by node, PGD + GFA) and eval_robustness (an
# attack suite on the checkpoint just trained).
#
# memcheck: --error-exitcode=1 --leak-check=full
# --errors-for-leak-kinds=definite, with tests/valgrind.supp, which silences
# oneDNN's JIT kernels only (see the file). Valgrind emulates no AVX-512, so
# oneDNN runs its AVX2 kernels here whatever the machine.
set -euo pipefail

build=$(cd "${1:?usage: valgrind_examples.sh BUILD_DIR}" && pwd)
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dd-valgrind.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

vg=(valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --suppressions="$src/tests/valgrind.supp" --num-callers=30)

# make_cifar, make_idx: tiny datasets (shared with the examples' ctest runs).
. "$src/tests/examples/tiny_data.sh"

make_cifar cifar 16
make_idx idx train 48
make_idx idx t10k 16

failed=()
# run NAME CMD...: CMD under memcheck, output in NAME.log.
run() {
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS rc=0
    timeout 1200 "${vg[@]}" "$@" >"$name.log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "FAILED ($name, exit status $rc, $((SECONDS - start)) s):"
        tail -60 "$name.log"
        failed+=("$name")
    else
        echo "ok ($((SECONDS - start)) s)"
    fi
}

common=(--threads 2 --no-progress --batch 16 --eval-n 8)
run quickstart "$build/quickstart" cifar quickstart.st
run train_synthetic "$build/train_cifar" --synthetic 64 --arch mlp --defense pgd-at+gfa \
    --epochs 2 --stop-after 1 --train-steps 1 "${common[@]}" --out run.st
run train_resume "$build/train_cifar" --resume run.st --threads 2 --no-progress --eval-n 8
run train_idx "$build/train_cifar" --data idx --epochs 1 --train-limit 32 --test-limit 16 \
    "${common[@]}" --out idx.st
run custom_loop "$build/custom_loop" --epochs 1 --limit 32 --threads 2 --out custom.st
run eval_robustness "$build/eval_robustness" --n 8 --batch 8 --threads 2 --synthetic \
    --attacks fgsm,pgd-linf,deepfool-l2,square-linf --eps 8/255 --queries 10 --landscape 2 \
    --cache cache --out report run.st
# the same again: the model's results read back from its --cache record
run eval_cached "$build/eval_robustness" --n 8 --batch 8 --threads 2 --synthetic \
    --attacks fgsm,pgd-linf,deepfool-l2,square-linf --eps 8/255 --queries 10 --landscape 2 \
    --cache cache --out report run.st

if [ ${#failed[@]} -gt 0 ]; then
    echo "valgrind_examples: failing runs: ${failed[*]}" >&2
    exit 1
fi
echo "valgrind_examples: every example ran clean under memcheck"
