/* lib/core/version.c -- the run-time version of the loaded library.
 *
 * The numbers come from deepdefense/version.h, which CMake generates from
 * version.h.in with the project() version, so the header a host compiled
 * against (DD_VERSION_NUMBER) and the library it loaded (dd_version()) can be
 * compared to detect a mismatch, as zstd and SQLite do. Both functions
 * return constants and are thread-safe.
 */
#include <deepdefense/version.h>

#include "core.h"

unsigned dd_version(void) { return (unsigned)DD_VERSION_NUMBER; }

const char *dd_version_string(void) { return DD_VERSION_STRING; }
