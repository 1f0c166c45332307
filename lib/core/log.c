/* lib/core/log.c -- the optional, process-wide log callback.
 *
 * The library never prints. dd_set_log_callback() installs a host function
 * that receives every message at or below a maximum level; without one,
 * dd__log() returns before formatting anything, so logging costs one atomic
 * load when it is off. The three settings are C11 atomics: installation is
 * documented as not synchronised with concurrent logging, but a racing
 * reader sees either the old or the new callback, never a torn pointer.
 * The user pointer and level are stored before the callback (release) and
 * read after it (acquire), so a newly installed callback is never called
 * with the previous user pointer. Messages are formatted into a stack
 * buffer (long messages are cut, never allocated) and passed borrowed.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "core.h"

/* Longest message passed to the callback, terminator included. */
#define DD_LOG_BUF 1024

static _Atomic(dd_log_fn) dd_log_callback;
static _Atomic(void *) dd_log_user;
static atomic_int dd_log_max_level;

void dd_set_log_callback(dd_log_fn fn, void *user, dd_log_level max_level) {
    atomic_store_explicit(&dd_log_user, user, memory_order_relaxed);
    atomic_store_explicit(&dd_log_max_level, (int)max_level, memory_order_relaxed);
    atomic_store_explicit(&dd_log_callback, fn, memory_order_release);
}

void dd__log(dd_log_level level, const char *fmt, ...) {
    dd_log_fn fn = atomic_load_explicit(&dd_log_callback, memory_order_acquire);
    if (fn == NULL || (int)level > atomic_load_explicit(&dd_log_max_level, memory_order_relaxed)) return;
    void *user = atomic_load_explicit(&dd_log_user, memory_order_relaxed);
    char msg[DD_LOG_BUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(level, msg, user);
}
