#!/bin/bash
# tools/study_restore.sh [--from DIR] DEST -- restore the CIFAR-10 study's
# results folder on a fresh machine, so that tools/cifar_study.sh resumes
# where the last sitting stopped instead of retraining for hours.
#
# DIR (default docs/results/study) is the committed copy of the results
# folder: logs, metrics, markers, report records, without checkpoints (the
# tree keeps no trained outputs). Step 1 copies it into DEST, never over a
# file DEST already has. Step 2 brings back, from the git history of DIR,
# the checkpoint NAME.safetensors (and NAME.safetensors.state, the state an
# interrupted training resumes from) of every run NAME whose checkpoint
# DEST lacks, if a commit ever held it; a checkpoint counts as NAME's only
# if the commit that last held it also holds NAME.csv exactly as DIR has it
# now (the per-epoch metrics of the training that wrote it): a checkpoint
# of an earlier training under the same name is never restored. A run
# whose checkpoint cannot be restored is listed; cifar_study.sh retrains it
# (deterministically: the same numbers). Exit status 0 unless an error.
set -euo pipefail

from=""
dest=""
while [ $# -gt 0 ]; do
    case $1 in
    --from) from=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "study_restore.sh: unknown option $1" >&2; exit 2 ;;
    *) dest=$1; shift ;;
    esac
done
[ -n "$dest" ] || { echo "usage: study_restore.sh [--from DIR] DEST" >&2; exit 2; }
[ -n "$from" ] || from=$(cd "$(dirname "$0")/.." && pwd)/docs/results/study
[ -d "$from" ] || { echo "study_restore.sh: $from: no such folder" >&2; exit 2; }
git -C "$from" rev-parse --show-toplevel >/dev/null 2>&1 ||
    { echo "study_restore.sh: $from is not in a git work tree" >&2; exit 2; }
prefix=$(git -C "$from" rev-parse --show-prefix) # DIR's path in the repository, with /

mkdir -p "$dest"
cp -rn "$from/." "$dest/"

# restore FILE NAME: DEST/FILE from the last commit that held DIR/FILE, if
# that commit's NAME.csv is DIR's; prints the commit, or nothing
restore() {
    local file=$1 name=$2 commit want have
    commit=$(git -C "$from" log -1 --diff-filter=AM --format=%H -- "$file")
    [ -n "$commit" ] || return 0
    want=$(git -C "$from" hash-object "$name.csv")
    have=$(git -C "$from" rev-parse -q --verify "$commit:$prefix$name.csv" 2>/dev/null || true)
    [ "$want" = "$have" ] || return 0
    git -C "$from" show "$commit:$prefix$file" >"$dest/$file.tmp"
    mv "$dest/$file.tmp" "$dest/$file"
    echo "$commit"
}

restored=0
missing=()
for csv in "$from"/*.csv; do # a training is what has per-epoch metrics
    name=$(basename "$csv" .csv)
    case $name in sweep-* | report-*) continue ;; esac # no checkpoint kept / a report's table
    [ -e "$dest/$name.safetensors" ] && continue
    c=$(restore "$name.safetensors" "$name")
    if [ -z "$c" ]; then
        missing+=("$name")
        continue
    fi
    restored=$((restored + 1))
    echo "restored $name.safetensors from ${c:0:12}"
    [ -e "$from/$name.done" ] && continue # finished: no state to resume from
    c=$(restore "$name.safetensors.state" "$name")
    [ -n "$c" ] && echo "restored $name.safetensors.state from ${c:0:12}"
done
echo "study_restore.sh: $dest: $restored checkpoints restored"
if [ ${#missing[@]} -gt 0 ]; then
    echo "not in the history (cifar_study.sh retrains them): ${missing[*]}"
fi
