#!/bin/sh
# tests/check_exports.sh LIB -- fails if the shared library exports a symbol
# outside the public dd_ namespace. Public functions are dd_[a-z]*; no dd__
# (internal) symbol may leave an installed library, the test hooks of
# tests/internal.h included (only the build tree's libdeepdefense_testhooks
# exports those).
set -eu
lib=$1
syms=$(nm -D --defined-only "$lib" | awk '{print $NF}')
[ -n "$syms" ] || { echo "no exported symbols in $lib"; exit 1; }
bad=0
for s in $syms; do
    case $s in
        dd__*) echo "internal symbol exported: $s"; bad=1 ;;
        dd_[a-z]*) ;;
        *) echo "symbol without the dd_ prefix exported: $s"; bad=1 ;;
    esac
done
[ "$bad" -eq 0 ] && echo "exports: $(echo "$syms" | wc -l) symbols, all dd_-prefixed"
exit "$bad"
