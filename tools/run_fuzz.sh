#!/bin/bash
# tools/run_fuzz.sh -- runs every libFuzzer target for a bounded time.
#
#   tools/run_fuzz.sh BUILD_DIR [SECONDS]        (default 60 s per target)
#
# BUILD_DIR is a build configured with -DCMAKE_C_COMPILER=clang
# -DDD_BUILD_FUZZ=ON in which the fuzz_targets target was built. Each target
# starts from a scratch copy of its seeds (tests/fuzz/corpus/<target>, never
# modified) in BUILD_DIR/fuzz-corpus/<target>, runs for SECONDS on one core,
# and prints libFuzzer's final statistics (executions, edges covered,
# features, corpus size), which the README's testing section quotes. A
# crash, leak, sanitizer report, timeout or out-of-memory stops that target;
# the input is left in BUILD_DIR/fuzz-artifacts/ and the script fails at the
# end, naming it. Fix the bug, then copy the input to
# tests/fuzz/regress/<target>/ so that check_fuzz replays it in every build.
#
# Sanitizer settings: large allocations fail instead of aborting
# (allocator_may_return_null, max_allocation_size_mb), because a checkpoint
# header may describe a model whose activations do not fit: the library must
# answer DD_ERR_OUT_OF_MEMORY, which the target accepts. Leaks are reported
# (detect_leaks), with tests/lsan.supp silencing third-party frames only.
set -euo pipefail

build=${1:?usage: run_fuzz.sh BUILD_DIR [SECONDS]}
seconds=${2:-60}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$build" && pwd)
fuzzdir="$build/tests/fuzz"

export ASAN_OPTIONS="allocator_may_return_null=1:max_allocation_size_mb=1024:detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$src/tests/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
# One OpenMP thread: the targets ask for one anyway, and a fuzzing job on a
# shared machine should not take more than its core.
export OMP_NUM_THREADS=1

mkdir -p "$build/fuzz-artifacts"
failed=()
for target in safetensors arch cifar idx optstate; do
    exe="$fuzzdir/fuzz_$target"
    if [ ! -x "$exe" ]; then
        echo "run_fuzz: $exe not built (cmake --build $build --target fuzz_targets)" >&2
        exit 2
    fi
    work="$build/fuzz-corpus/$target"
    rm -rf "$work"
    mkdir -p "$work"
    cp "$src/tests/fuzz/corpus/$target"/* "$work/"
    log="$build/fuzz-$target.log"
    echo "== fuzz_$target: ${seconds} s =="
    # -timeout: a single input taking 30 s is a hang; -rss_limit_mb: the
    # process as a whole (libFuzzer's default, stated).
    if "$exe" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
              -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$target-" \
              "$work" >"$log" 2>&1; then
        grep -aE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
        grep -aE '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
    else
        echo "fuzz_$target FAILED; last lines of $log:"
        tail -40 "$log"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "run_fuzz: failing targets: ${failed[*]}; inputs in $build/fuzz-artifacts:" >&2
    ls -l "$build/fuzz-artifacts" >&2
    exit 1
fi
echo "run_fuzz: all targets ran ${seconds} s without a failure"
