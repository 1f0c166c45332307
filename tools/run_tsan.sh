#!/bin/bash
# tools/run_tsan.sh [BUILD_DIR] -- the GFA and attack passes at production
# size under ThreadSanitizer (tools/tsan/gfa_attack_race.c).
#
# Builds libdeepdefense with clang -fsanitize=thread into BUILD_DIR
# (default build-tsan) and runs the driver with LLVM's OpenMP runtime and
# its Archer tool (libarcher.so, Debian's libomp-14-dev), which tells TSan
# about OpenMP's barriers and task ordering so that our parallel loops are
# checked without false reports. oneDNN and its libgomp are not
# instrumented (ignore_noninstrumented_modules): races inside oneDNN are out
# of sight, ours are not. Any report makes the run fail (exit 66).
# Checked to fail: per-thread reduction rows of dd__chan_sums collapsed onto
# one row gave 26 reports.
# Needs: clang, libclang-rt-14-dev, libomp-14-dev.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B=${1:-build-tsan}
ARCHER=${DD_ARCHER:-/usr/lib/llvm-14/lib/libarcher.so}
CC=clang cmake -S . -B "$B" -DDD_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DDD_BUILD_TESTS=OFF -DDD_BUILD_EXAMPLES=OFF
cmake --build "$B" --target deepdefense -j2
B=$(cd "$B" && pwd)
clang -g -O1 -fsanitize=thread -fopenmp -Iinclude -I"$B/include" tools/tsan/gfa_attack_race.c \
      -L"$B" -ldeepdefense -Wl,-rpath,"$B" -o "$B/gfa_attack_race"
OMP_TOOL_LIBRARIES=$ARCHER \
TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1 exitcode=66" \
    "$B/gfa_attack_race"
echo "run_tsan.sh: no data race reported"
