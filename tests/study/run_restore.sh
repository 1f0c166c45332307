#!/bin/bash
# tests/study/run_restore.sh -- tools/study_restore.sh on a made-up
# repository: a checkpoint that was committed and later removed from the
# tree comes back byte for byte; one whose training was redone since (its
# NAME.csv changed) does not; an interrupted training gets its .state too;
# sweep runs are skipped; a file the destination already has is never
# overwritten; a second run restores nothing.
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dd-restore.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
fail() { echo "FAIL: $*"; exit 1; }

repo=$tmp/repo
d=$repo/docs/results/study
mkdir -p "$d"
git -C "$repo" init -q
g() { git -C "$repo" -c user.name=t -c user.email=t@t -c commit.gpgsign=false "$@"; }
# run NAME CSV: a training's metrics, log and checkpoint (its bytes name it)
run() {
    echo "$2" >"$d/$1.csv"
    echo "log of $1" >"$d/$1.log"
    printf 'weights of %s, %s\n' "$1" "$2" >"$d/$1.safetensors"
}
run plain "epoch,1"
touch "$d/plain.done"
run redone "epoch,1"
touch "$d/redone.done"
run cut "epoch,1" # interrupted after one epoch: no .done, a .state
echo "state of cut" >"$d/cut.safetensors.state"
run sweep-x "epoch,1"
touch "$d/sweep-x.done"
g add -A && g commit -qm "trained"
# the tree stops keeping checkpoints; "redone" is trained again since
g rm -q "$d"/*.safetensors "$d"/*.state && g commit -qm "checkpoints out"
echo "epoch,1 (retrained)" >"$d/redone.csv"
g add -A && g commit -qm "redone retrained"
[ ! -e "$d/plain.safetensors" ] || fail "the made-up tree still has its checkpoint"

out=$tmp/dest
mkdir -p "$out"
echo "kept" >"$out/plain.log"
bash "$src/tools/study_restore.sh" --from "$d" "$out" >r1.log 2>&1 || { cat r1.log; fail "restore"; }
[ "$(cat "$out/plain.safetensors")" = "weights of plain, epoch,1" ] || fail "plain's checkpoint not restored"
[ "$(cat "$out/cut.safetensors.state")" = "state of cut" ] || fail "the interrupted run's state not restored"
[ -e "$out/cut.safetensors" ] || fail "the interrupted run's checkpoint not restored"
[ ! -e "$out/redone.safetensors" ] || fail "restored the checkpoint of an earlier training of redone"
[ ! -e "$out/sweep-x.safetensors" ] || fail "restored a sweep checkpoint"
[ "$(cat "$out/plain.log")" = "kept" ] || fail "overwrote a file the destination had"
{ [ -e "$out/redone.done" ] && [ -e "$out/sweep-x.csv" ]; } || fail "the committed folder was not copied"
grep -q "not in the history (cifar_study.sh retrains them): redone" r1.log || { cat r1.log; fail "redone not listed"; }
grep -q "2 checkpoints restored" r1.log || { cat r1.log; fail "count"; }

bash "$src/tools/study_restore.sh" --from "$d" "$out" >r2.log 2>&1 || { cat r2.log; fail "second restore"; }
grep -q "0 checkpoints restored" r2.log || { cat r2.log; fail "the second run restored again"; }

bash "$src/tools/study_restore.sh" --from "$tmp" "$out" >r3.log 2>&1 && fail "accepted a folder outside git"
grep -q "not in a git work tree" r3.log || { cat r3.log; fail "no message for a folder outside git"; }
echo "study_restore: ok"
