#!/bin/bash
# tools/fuzz_coverage.sh -- line coverage of the parsers reached by the
# fuzzing corpora (the numbers quoted in the README's testing section).
#
#   tools/fuzz_coverage.sh BUILD_DIR
#
# BUILD_DIR is the clang fuzz build after tools/run_fuzz.sh, whose grown
# corpora are in BUILD_DIR/fuzz-corpus/<target>. The library and each
# target are compiled again with clang's source-based coverage
# (-fprofile-instr-generate -fcoverage-mapping, no sanitizer) into
# BUILD_DIR/coverage; every input of the grown corpus, the seeds and the
# regression inputs is run once (-runs=0), and llvm-cov reports the line
# and branch coverage of the files that parse each format. Needs clang,
# libomp-14-dev and llvm-cov / llvm-profdata (package llvm-14). Not part of
# CI: it is a measurement.
set -euo pipefail

build=$(cd "${1:?usage: fuzz_coverage.sh BUILD_DIR}" && pwd)
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$build/coverage"
rm -rf "$out"
mkdir -p "$out/obj"
cov=(-O1 -g -std=c11 -fopenmp -fprofile-instr-generate -fcoverage-mapping -Wno-pass-failed)
inc=(-I"$src/include" -I"$build/include" -I"$src/lib")

objs=()
for f in "$src"/lib/*/*.c; do
    o="$out/obj/$(basename "$(dirname "$f")")_$(basename "$f" .c).o"
    clang "${cov[@]}" -DDD_BUILDING_LIBRARY "${inc[@]}" -c "$f" -o "$o"
    objs+=("$o")
done

declare -A files=(
    [safetensors]="lib/io/safetensors.c lib/io/arch.c"
    [cifar]="lib/data/cifar10.c lib/data/reader.c lib/data/dataset.c"
    [idx]="lib/data/idx.c lib/data/reader.c lib/data/dataset.c"
)
export OMP_NUM_THREADS=1
for t in safetensors cifar idx; do
    exe="$out/fuzz_$t"
    clang "${cov[@]}" -fsanitize=fuzzer "${inc[@]}" "$src/tests/fuzz/fuzz_$t.c" "${objs[@]}" \
        -ldnnl -ljansson -lz -lm -o "$exe"
    dirs=()
    for d in "$build/fuzz-corpus/$t" "$src/tests/fuzz/corpus/$t" "$src/tests/fuzz/regress/$t"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    LLVM_PROFILE_FILE="$out/$t.profraw" "$exe" -runs=0 "${dirs[@]}" >"$out/$t.log" 2>&1
    llvm-profdata merge -sparse "$out/$t.profraw" -o "$out/$t.profdata"
    echo "== fuzz_$t ($(find "${dirs[@]}" -type f | wc -l) inputs)"
    paths=()
    for f in ${files[$t]}; do paths+=("$src/$f"); done
    llvm-cov report "$exe" -instr-profile="$out/$t.profdata" "${paths[@]}" \
        | sed "s|$src/||"
done
