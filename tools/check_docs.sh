#!/bin/sh
# tools/check_docs.sh -- fails if a public function lacks its documentation.
#
#   tools/check_docs.sh [HEADER_DIR]     (default: include/deepdefense next to tools/)
#
# Every declaration that starts with DD_API in the public headers (*.h and
# version.h.in) must be immediately preceded by its own Doxygen comment,
# /** ... */: only blank lines may separate the comment's closing */ from
# the declaration, and a comment may document one declaration only (a
# second DD_API right after the first is undocumented, and Doxygen would
# indeed leave it out of the reference). Member comments (/**< ... */) and
# plain comments (/* ... */) do not count. Needs only a POSIX shell and awk,
# so CTest runs it everywhere (test "docs"); the `docs` target (Doxygen)
# renders the same comments.
set -eu

dir=${1:-$(dirname "$0")/../include/deepdefense}
status=0
for f in "$dir"/*.h "$dir"/*.h.in; do
    [ -f "$f" ] || continue
    awk -v file="$f" '
    # state: in_comment (inside /* */), doc (the comment being read is /**),
    # ready (the last non-blank thing seen was the end of a /** comment not
    # yet used by a declaration).
    BEGIN { in_comment = 0; doc = 0; ready = 0; bad = 0 }
    {
        line = $0
        if (in_comment) {
            if (index(line, "*/") > 0) {
                in_comment = 0
                rest = substr(line, index(line, "*/") + 2)
                if (rest ~ /^[ \t]*$/) { ready = doc; next }
                line = rest
            } else {
                next
            }
        }
        if (line ~ /^[ \t]*$/) next
        # a comment starting the line
        if (line ~ /^[ \t]*\/\*/) {
            d = (line ~ /^[ \t]*\/\*\*[^<]/ || line ~ /^[ \t]*\/\*\*$/)
            body = substr(line, index(line, "/*") + 2)
            if (index(body, "*/") > 0) {
                rest = substr(body, index(body, "*/") + 2)
                if (rest ~ /^[ \t]*$/) { ready = d; next }
                line = rest
            } else {
                in_comment = 1; doc = d; next
            }
        }
        if (line ~ /^[ \t]*DD_API[ \t]/) {
            if (!ready) {
                name = line
                sub(/\(.*/, "", name)
                n = split(name, w, /[ \t*]+/)
                printf "%s:%d: %s has no /** doc comment right before it\n", file, NR, w[n]
                bad = 1
            }
            ready = 0
        } else {
            ready = 0
        }
        # a comment opened later on a code line (e.g. /**< member doc */)
        if (index(line, "/*") > 0 && index(substr(line, index(line, "/*")), "*/") == 0)
            { in_comment = 1; doc = 0 }
    }
    END { exit bad }' "$f" || status=1
done
if [ "$status" -eq 0 ]; then
    echo "check_docs: every DD_API function in $dir has a doc comment"
fi
exit $status
