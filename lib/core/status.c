/* lib/core/status.c -- status strings and the thread-local last-error message.
 *
 * dd_status_string() maps each code of deepdefense/status.h to static text
 * through a table indexed by the code (unknown values get a fixed string, so
 * the result is never NULL). dd_last_error() returns a per-thread buffer
 * (_Thread_local) that dd__set_error() fills with the failure message
 * followed by its source location in brackets, e.g.
 *     "conv2d #3: input has 64 channels, weights expect 128 [lib/nodes/conv2d.c:212]".
 * The message is formatted into a stack buffer first, so a caller may pass
 * dd_last_error() itself as an argument when adding context to an error.
 * dd__dnnl_error() translates a failed oneDNN call: dnnl_out_of_memory
 * becomes DD_ERR_OUT_OF_MEMORY, everything else DD_ERR_BACKEND, and the
 * message names the call and oneDNN's own status text.
 * Every recorded error is also sent to the log callback at DEBUG level.
 * None of this may run inside an OpenMP region: a worker thread's buffer is
 * invisible to the thread that called the library.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "core.h"

/* 512 bytes holds any message we write plus a path; longer ones are cut. */
#define DD_ERROR_BUF 512

static _Thread_local char dd_error_buf[DD_ERROR_BUF];

static const char *const dd_status_text[] = {
    [DD_OK] = "success",
    [DD_ERR_INVALID_ARGUMENT] = "invalid argument",
    [DD_ERR_OUT_OF_MEMORY] = "out of memory",
    [DD_ERR_UNSUPPORTED] = "unsupported operation",
    [DD_ERR_BACKEND] = "oneDNN backend error",
    [DD_ERR_STATE] = "call not valid in the handle's current state",
    [DD_ERR_IO] = "input/output error",
    [DD_ERR_FORMAT] = "malformed or truncated file",
    [DD_ERR_NUMERIC] = "non-finite value (NaN or Inf)",
    [DD_ERR_REMOTE] = "another process of the distributed job failed",
};

const char *dd_status_string(dd_status s) {
    /* The enum's underlying type may be unsigned: compare as long long. */
    long long i = (long long)s;
    if (i < 0 || i >= (long long)(sizeof dd_status_text / sizeof dd_status_text[0]) ||
        dd_status_text[i] == NULL)
        return "unknown status";
    return dd_status_text[i];
}

const char *dd_last_error(void) { return dd_error_buf; }

void dd__clear_error(void) { dd_error_buf[0] = '\0'; }

/* Shortens an absolute __FILE__ to the part from the last "lib/" on, so
 * messages do not depend on where the source tree was checked out. */
static const char *dd_short_path(const char *file) {
    const char *best = NULL;
    for (const char *p = strstr(file, "lib/"); p != NULL; p = strstr(p + 1, "lib/"))
        if (p == file || p[-1] == '/') best = p;
    if (best != NULL) return best;
    const char *slash = strrchr(file, '/');
    return slash != NULL ? slash + 1 : file;
}

static dd_status dd_record(dd_status s, const char *file, int line, const char *msg) {
    snprintf(dd_error_buf, sizeof dd_error_buf, "%s [%s:%d]", msg, file != NULL ? dd_short_path(file) : "?",
             line);
    dd__log(DD_LOG_DEBUG, "%s: %s", dd_status_string(s), dd_error_buf);
    return s;
}

dd_status dd__set_error(dd_status s, const char *file, int line, const char *fmt, ...) {
    char msg[DD_ERROR_BUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dd_record(s, file, line, msg);
}

dd_status dd__dnnl_error(int dnnl_status, const char *call, const char *file, int line) {
    char msg[DD_ERROR_BUF];
    dd_status s = dnnl_status == (int)dnnl_out_of_memory ? DD_ERR_OUT_OF_MEMORY : DD_ERR_BACKEND;
    snprintf(msg, sizeof msg, "oneDNN call %s failed: %s", call != NULL ? call : "?",
             dnnl_status2str((dnnl_status_t)dnnl_status));
    return dd_record(s, file, line, msg);
}

dd_status dd_set_last_error(dd_status s, const char *fmt, ...) {
    if (fmt == NULL) {
        dd__clear_error();
        return s;
    }
    char msg[DD_ERROR_BUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(dd_error_buf, sizeof dd_error_buf, "%s", msg);
    return s;
}
