/* deepdefense/status.h -- status codes, error messages, logging, export macro.
 *
 * Every fallible libdeepdefense function returns a dd_status. DD_OK is 0;
 * the numbers are append-only and never reused. dd_status_string() gives a
 * static description; dd_last_error() gives a thread-local message with
 * context for the most recent failure on the calling thread.
 */
#ifndef DEEPDEFENSE_STATUS_H
#define DEEPDEFENSE_STATUS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(DD_BUILDING_LIBRARY)
#define DD_API __declspec(dllexport)
#else
#define DD_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define DD_API __attribute__((visibility("default")))
#else
#define DD_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Versioned structs. Every public options, info and results struct starts
 *  with `size_t struct_size`: the size of the caller's struct as the
 *  caller's compiler saw it. The _init functions and the info functions of
 *  the headers are inline wrappers that pass `sizeof *p` to an exported
 *  `..._sized` function, so a program built against an older, smaller
 *  layout gets exactly its struct filled. The library accepts any size from
 *  the struct's first released layout (its DD_<NAME>_SIZE_V1) up to the
 *  library's own sizeof and reads or writes only that many bytes; fields
 *  the caller's layout lacks take their defaults. A larger size (a header
 *  newer than the library) is DD_ERR_INVALID_ARGUMENT. New fields are only
 *  ever appended.
 *
 *  DD_SIZE_THROUGH(type, field): the bytes of `type` up to and including
 *  `field`, the form of every DD_<NAME>_SIZE_V1. */
#define DD_SIZE_THROUGH(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

/** Status of a libdeepdefense call. Append-only: numbers are never reused. */
typedef enum dd_status {
    DD_OK = 0,                   /**< success */
    DD_ERR_INVALID_ARGUMENT = 1, /**< NULL pointer, bad size, value out of range */
    DD_ERR_OUT_OF_MEMORY = 2,    /**< an allocation failed; nothing was changed */
    DD_ERR_UNSUPPORTED = 3,      /**< valid request the library cannot do (yet) */
    DD_ERR_BACKEND = 4,          /**< a oneDNN call failed; see dd_last_error() */
    DD_ERR_STATE = 5,            /**< call not valid in the handle's current state */
    DD_ERR_IO = 6,               /**< file could not be opened, read or written */
    DD_ERR_FORMAT = 7,           /**< file is truncated, malformed or inconsistent */
    DD_ERR_NUMERIC = 8,          /**< a non-finite value (NaN/Inf) was produced or given */
    DD_ERR_REMOTE = 9            /**< another process of a distributed job failed (its own
                                      dd_last_error() says why; deepdefense/mpi.h) */
} dd_status;

/** Static, never-NULL English description of a status (unknown values included).
 *  Thread-safe. */
DD_API const char *dd_status_string(dd_status s);

/** Thread-local message describing the most recent failure of a dd_ call on
 *  the calling thread ("" if none). Valid until the next dd_ call on this
 *  thread. Never NULL. Thread-safe. */
DD_API const char *dd_last_error(void);

/** Sets the calling thread's dd_last_error() message to the printf-style
 *  text fmt and returns s, for libraries built on libdeepdefense (the MPI
 *  layer, deepdefense/mpi.h) and hosts that wrap dd_ calls, so that their
 *  failures read like the library's own. fmt NULL clears the message.
 *  Thread-safe. */
DD_API dd_status dd_set_last_error(dd_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Log levels for the optional log callback. */
typedef enum dd_log_level {
    DD_LOG_ERROR = 0,
    DD_LOG_WARN = 1,
    DD_LOG_INFO = 2,
    DD_LOG_DEBUG = 3
} dd_log_level;

/** Log callback: level, a NUL-terminated message (borrowed for the call),
 *  and the user pointer given at installation. */
typedef void (*dd_log_fn)(dd_log_level level, const char *message, void *user);

/** Installs (or with fn == NULL removes) the process-wide log callback.
 *  Without a callback the library prints nothing. Messages above max_level
 *  are dropped. Call it before creating handles: installation is not
 *  synchronised with logging from other threads. The callback itself may be
 *  called from any thread that uses the library. */
DD_API void dd_set_log_callback(dd_log_fn fn, void *user, dd_log_level max_level);

#ifdef __cplusplus
}
#endif
#endif
