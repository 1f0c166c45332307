#!/bin/sh
# tests/check_exports.sh LIB -- fails if the shared library exports a symbol
# outside the dd_ namespace. Public functions are dd_[a-z]*; the only dd__
# (internal) exports allowed are the test hooks (allocation and I/O failure) declared
# in tests/internal.h.
set -eu
lib=$1
syms=$(nm -D --defined-only "$lib" | awk '{print $NF}')
[ -n "$syms" ] || { echo "no exported symbols in $lib"; exit 1; }
bad=0
for s in $syms; do
    case $s in
        dd__alloc_fail_after|dd__alloc_count|dd__io_fail_at) ;;
        dd__*) echo "internal symbol exported: $s"; bad=1 ;;
        dd_[a-z]*) ;;
        *) echo "symbol without the dd_ prefix exported: $s"; bad=1 ;;
    esac
done
[ "$bad" -eq 0 ] && echo "exports: $(echo "$syms" | wc -l) symbols, all dd_-prefixed"
exit "$bad"
