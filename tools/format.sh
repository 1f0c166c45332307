#!/bin/sh
# tools/format.sh [--check] -- the one code style of the tree (.clang-format,
# Debian 12's clang-format 14): formats every tracked C/C++ source and
# header in place, or with --check lists the files that are not formatted
# and fails (the CI's format step). The checker fixtures (tests/docs,
# tests/status_docs) and the configure-time template version.h.in are left
# as they are.
set -eu
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "format.sh: clang-format not found (apt-get install clang-format)" >&2; exit 2; }
files=$(git ls-files '*.c' '*.h' '*.cpp' | grep -v '^tests/docs/' | grep -v '^tests/status_docs/')
if [ "${1:-}" = --check ]; then
    bad=0
    for f in $files; do
        if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
            echo "not formatted: $f (tools/format.sh formats it)"
            bad=1
        fi
    done
    [ "$bad" -eq 0 ] && echo "format: $(echo "$files" | wc -l) files formatted as .clang-format says"
    exit "$bad"
fi
# shellcheck disable=SC2086
clang-format -i $files
