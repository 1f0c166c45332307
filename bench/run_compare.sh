#!/usr/bin/env bash
# bench/run_compare.sh -- libdeepdefense against PyTorch 1.13, back to back.
#
#   bench/run_compare.sh BUILD_DIR [--batch 128] [--steps 20] [--warmup 3]
#       [--threads 2] [--archs "cnn-cw resnet20 preact-resnet18"]
#       [--modes "plain infer gfa pgd-at"] [--repeat 1] [--out FILE.jsonl]
#       [--no-wait] [--wait-max 900] [--busy 8]
#
# Builds nothing: BUILD_DIR must hold dd_bench (configure with
# -DDD_BUILD_BENCH=ON). For every repeat, arch and mode it runs one dd_bench
# process and then one bench/compare_pytorch.py process (/usr/bin/python3),
# each with only that --mode, so that each process's peak RSS belongs to one
# mode (gfa and pgd-at processes also time a plain step first for their
# ratio_to_plain). Unless --no-wait, every process starts only once the
# whole machine has been less than --busy percent busy for 3 s (at most
# --wait-max seconds of waiting, then it runs anyway and says so). All JSON
# lines go to --out (default bench-results-<time>.jsonl); stderr to
# <out>.log. At the end a table gives, per arch and mode, the best
# images/s of each implementation over the repeats, their ratio and the
# targets of issues 2, 3 and 4.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage 0;; esac
BUILD=$1; shift
BATCH=128 STEPS=20 WARMUP=3 THREADS=2 REPEAT=1 WAIT=1 WAIT_MAX=900 BUSY=8
ARCHS="cnn-cw resnet20 preact-resnet18"
MODES="plain infer gfa pgd-at"
OUT="bench-results-$(date +%Y%m%d-%H%M%S).jsonl"
while [ $# -gt 0 ]; do
  case "$1" in
    --batch) BATCH=$2; shift 2;;
    --steps) STEPS=$2; shift 2;;
    --warmup) WARMUP=$2; shift 2;;
    --threads) THREADS=$2; shift 2;;
    --archs) ARCHS=$2; shift 2;;
    --modes) MODES=$2; shift 2;;
    --repeat) REPEAT=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --no-wait) WAIT=0; shift;;
    --wait-max) WAIT_MAX=$2; shift 2;;
    --busy) BUSY=$2; shift 2;;
    -h|--help) usage 0;;
    *) echo "run_compare.sh: unknown argument $1" >&2; usage;;
  esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
DD_BENCH=$BUILD/dd_bench
PY=/usr/bin/python3
[ -x "$DD_BENCH" ] || { echo "run_compare.sh: $DD_BENCH not found (cmake -DDD_BUILD_BENCH=ON)" >&2; exit 2; }
$PY -c 'import torch' 2>/dev/null ||
  { echo "run_compare.sh: $PY cannot import torch (apt-get install -y python3-torch)" >&2; exit 2; }

OPENBLAS=""
for f in /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \
         /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3; do
  if [ -e "$f" ]; then OPENBLAS=$f; break; fi
done
[ -n "$OPENBLAS" ] ||
  echo "run_compare.sh: warning: no OpenBLAS libblas (apt-get install libopenblas0-pthread)" >&2

LOG=$OUT.log
: > "$OUT"
: > "$LOG"

# Busy percentage of the whole machine over 1 second, from /proc/stat's cpu line.
busy_pct() {
  local a b
  read -r -a a < /proc/stat; sleep 1; read -r -a b < /proc/stat
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  [ "$total" -gt 0 ] || { echo 0; return; }
  echo $(( 100 * (total - idle) / total ))
}

# Waits until three consecutive 1-second samples are below $BUSY percent.
wait_quiet() {
  [ "$WAIT" = 1 ] || return 0
  local start=$SECONDS calm=0 p
  while [ $calm -lt 3 ]; do
    p=$(busy_pct)
    if [ "$p" -lt "$BUSY" ]; then calm=$((calm + 1)); else calm=0; fi
    if [ $((SECONDS - start)) -ge "$WAIT_MAX" ]; then
      echo "run_compare.sh: machine still ${p}% busy after ${WAIT_MAX}s; running anyway" | tee -a "$LOG" >&2
      return 0
    fi
  done
}

run_one() { # label, command...
  local label=$1; shift
  wait_quiet
  echo "== $label: $*" >> "$LOG"
  if ! "$@" >> "$OUT" 2>> "$LOG"; then
    echo "run_compare.sh: $label failed (see $LOG)" >&2
  fi
}

COMMON=(--batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS")
for r in $(seq 1 "$REPEAT"); do
  for arch in $ARCHS; do
    for mode in $MODES; do
      echo "run_compare.sh: repeat $r/$REPEAT $arch $mode" >&2
      run_one "deepdefense $arch $mode" \
        env OMP_NUM_THREADS="$THREADS" "$DD_BENCH" --arch "$arch" --mode "$mode" "${COMMON[@]}"
      run_one "pytorch $arch $mode" \
        env DD_BENCH_REEXEC=1 ${OPENBLAS:+LD_PRELOAD=$OPENBLAS} OMP_NUM_THREADS="$THREADS" \
            OPENBLAS_NUM_THREADS="$THREADS" MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_MMAP_MAX_=0 \
            MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_TOP_PAD_=268435456 \
            "$PY" "$HERE/compare_pytorch.py" --arch "$arch" --mode "$mode" "${COMMON[@]}"
    done
  done
done

echo "run_compare.sh: JSON lines in $OUT, logs in $LOG" >&2
"$PY" "$HERE/compare_table.py" "$OUT"
