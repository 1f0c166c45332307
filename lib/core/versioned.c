/* lib/core/versioned.c -- the one struct_size policy of every public
 * options, info and results struct (README "ABI policy").
 *
 * Each such struct starts with `size_t struct_size`, the size of the
 * caller's struct as the caller's compiler saw it (the header's inline
 * _init functions and info wrappers pass `sizeof *p`). The library accepts
 * any size from the struct's first released layout (DD_<NAME>_SIZE_V1 in
 * its header) up to its own sizeof, and reads or writes only that many
 * bytes: a program built against an older, smaller layout keeps working,
 * the fields it does not know take their defaults, and nothing past its
 * struct is touched. A size above the library's is a program built against
 * a newer header than the library: refused, never truncated silently.
 *
 * Library code copies an input struct into a full-size local one
 * (dd__struct_read) and fills an output struct from a full-size local one
 * (dd__struct_fill, after dd__struct_size_check); no library code reads a
 * caller's struct field by field.
 */
#include "core.h"

#include <string.h>

#include <deepdefense/model.h>

dd_status dd__struct_size_check(size_t size, size_t v1, size_t cur, const char *fn, const char *type) {
    DD_RETURN_IF(size < v1 || size > cur, DD_ERR_INVALID_ARGUMENT,
                 "%s: %s.struct_size = %zu is outside [%zu, %zu] (fill the struct with its _init "
                 "function, or set struct_size = sizeof; a size above %zu means a header newer "
                 "than this library)",
                 fn, type, size, v1, cur, cur);
    return DD_OK;
}

void dd__struct_fill(void *dst, size_t size, const void *full, size_t cur) {
    if (!dst || size < sizeof(size_t)) return;
    size_t n = size < cur ? size : cur;
    memcpy(dst, full, n);
    if (size > n) memset((char *)dst + n, 0, size - n);
    memcpy(dst, &size, sizeof size);
}

dd_status dd__struct_read(void *full, size_t cur, const void *user, size_t v1, const char *fn,
                          const char *type) {
    size_t size;
    memcpy(&size, user, sizeof size);
    DD_FORWARD(dd__struct_size_check(size, v1, cur, fn, type));
    memcpy(full, user, size);
    memcpy(full, &cur, sizeof cur);
    return DD_OK;
}

dd_status dd__stats_check(const dd_step_stats *user, const char *fn) {
    if (!user) return DD_OK;
    return dd__struct_size_check(user->struct_size, DD_STEP_STATS_SIZE_V1, sizeof *user, fn, "dd_step_stats");
}

void dd__stats_out(dd_step_stats *user, const dd_step_stats *full) {
    if (user) dd__struct_fill(user, user->struct_size, full, sizeof *full);
}
