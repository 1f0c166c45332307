/* lib/core/core.h -- internal plumbing shared by every file of the library.
 *
 * Error reporting: dd__set_error() records a thread-local message (with the
 * source location) and returns the status, so a failure site reads
 *     DD_RETURN_IF(n < 1, DD_ERR_INVALID_ARGUMENT, "n = %d", n);
 * DD_FORWARD propagates a non-OK status. DD_CHECK_DNNL maps a oneDNN status
 * to DD_ERR_BACKEND (or DD_ERR_OUT_OF_MEMORY) naming the failed call.
 * Never call these inside an OpenMP parallel region (thread-local storage of
 * a worker is invisible to the caller).
 *
 * Allocation goes through dd__malloc/dd__calloc/dd__free so tests can fail
 * the k-th allocation (dd__alloc_fail_after). Large buffers are 64-byte
 * aligned (dd__aligned_alloc).
 */
#ifndef DD_LIB_CORE_H
#define DD_LIB_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <deepdefense/status.h>

#define DD_INTERNAL __attribute__((visibility("hidden")))

/* Function clones per instruction set (the loader's ifunc resolver picks
 * one). Not under ThreadSanitizer: the resolver runs during relocation,
 * before TSan's runtime is up, and its instrumentation crashes the process
 * (tools/run_tsan.sh); that build takes the baseline code. */
#if defined(__SANITIZE_THREAD__)
#define DD_CLONES(...)
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DD_CLONES(...)
#endif
#endif
#ifndef DD_CLONES
#define DD_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#endif

DD_INTERNAL dd_status dd__set_error(dd_status s, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
DD_INTERNAL void dd__clear_error(void);

#define DD_ERROR(status, ...) dd__set_error((status), __FILE__, __LINE__, __VA_ARGS__)
#define DD_RETURN_IF(cond, status, ...)                   \
    do {                                                  \
        if (cond) return DD_ERROR((status), __VA_ARGS__); \
    } while (0)
#define DD_FORWARD(expr)                  \
    do {                                  \
        dd_status dd_s_ = (expr);         \
        if (dd_s_ != DD_OK) return dd_s_; \
    } while (0)
#define DD_CHECK_ARG(cond) \
    DD_RETURN_IF(!(cond), DD_ERR_INVALID_ARGUMENT, "%s: invalid argument: %s", __func__, #cond)

/* oneDNN status -> dd_status (records the call text). */
DD_INTERNAL dd_status dd__dnnl_error(int dnnl_status, const char *call, const char *file, int line);
#define DD_CHECK_DNNL(expr)                                                      \
    do {                                                                         \
        int dd_d_ = (int)(expr);                                                 \
        if (dd_d_ != 0) return dd__dnnl_error(dd_d_, #expr, __FILE__, __LINE__); \
    } while (0)

/* ---- versioned structs (lib/core/versioned.c) -------------------------- */
/* size in [v1, cur], else DD_ERR_INVALID_ARGUMENT naming fn and type. */
DD_INTERNAL dd_status dd__struct_size_check(size_t size, size_t v1, size_t cur, const char *fn,
                                            const char *type);
/* An _init function's body: the first `size` bytes of dst = the first bytes
 * of `full` (the defaults, cur bytes), zero past cur, struct_size = size.
 * NULL dst or size < sizeof(size_t): no-op. */
DD_INTERNAL void dd__struct_fill(void *dst, size_t size, const void *full, size_t cur);
/* Input struct: full (cur bytes, holding the defaults) takes the caller's
 * first user->struct_size bytes; full's struct_size becomes cur. */
DD_INTERNAL dd_status dd__struct_read(void *full, size_t cur, const void *user, size_t v1, const char *fn,
                                      const char *type);
/* The passes' statistics (dd_step_stats, deepdefense/model.h): a public
 * entry point checks the caller's struct (NULL passes), runs on a full-size
 * local one and copies it out with dd__stats_out (no-op for NULL). */
struct dd_step_stats;
DD_INTERNAL dd_status dd__stats_check(const struct dd_step_stats *user, const char *fn);
DD_INTERNAL void dd__stats_out(struct dd_step_stats *user, const struct dd_step_stats *full);
#define DD__STRUCT_READ(full, user, V1, fn, type) \
    dd__struct_read((full), sizeof *(full), (user), (V1), (fn), (type))

/* ---- logging ------------------------------------------------------------ */
DD_INTERNAL void dd__log(dd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- allocation --------------------------------------------------------- */
DD_INTERNAL void *dd__malloc(size_t bytes);
DD_INTERNAL void *dd__calloc(size_t count, size_t size);
DD_INTERNAL void *dd__realloc(void *p, size_t bytes);
DD_INTERNAL void dd__free(void *p);
/* 64-byte aligned, zero-filled; free with dd__free_aligned. */
DD_INTERNAL void *dd__aligned_alloc(size_t bytes);
DD_INTERNAL void dd__free_aligned(void *p);
DD_INTERNAL char *dd__strdup(const char *s);
/* One-block allocation with named views (llm.c's malloc-and-point), so a
 * handle's buffers are one table and one free:
 *     dd__view v[] = {DD__VIEW(s->x, img), DD__VIEW(s->idx, B * sizeof(int32_t))};
 *     s->block = dd__alloc_views(v, DD__NVIEWS(v));
 * Each view (bytes rounded up to 64) points into one zero-filled, 64-byte
 * aligned block, returned (free it with dd__free_aligned) or NULL, which
 * sets every view to NULL; at most 64 views. */
typedef struct dd__view {
    void *ptr;    /* the address of the T * that receives its view */
    size_t bytes; /* the view's size */
} dd__view;
#define DD__VIEW(p, nbytes) \
    { (void *)&(p), (size_t)(nbytes) }
#define DD__NVIEWS(v) ((int)(sizeof(v) / sizeof((v)[0])))
DD_INTERNAL void *dd__alloc_views(const dd__view *views, int n);

/* Fault injection for tests (exported through the test-only header
 * tests/internal.h, not the public API): after `count` successful
 * allocations on this thread, every further one fails; -1 disables. */
DD_API void dd__alloc_fail_after(long count);
DD_API long dd__alloc_count(void);

/* ---- random numbers ----------------------------------------------------- */
/* xoshiro256** seeded by splitmix64: fast, reproducible, per-handle state. */
typedef struct dd__rng {
    uint64_t s[4];
} dd__rng;
DD_INTERNAL void dd__rng_seed(dd__rng *r, uint64_t seed);
DD_INTERNAL uint64_t dd__rng_next(dd__rng *r);
DD_INTERNAL double dd__rng_uniform(dd__rng *r);             /* [0, 1) */
DD_INTERNAL double dd__rng_normal(dd__rng *r);              /* N(0, 1), Box-Muller */
DD_INTERNAL uint64_t dd__rng_below(dd__rng *r, uint64_t n); /* uniform in [0, n) */

/* ---- numerics ----------------------------------------------------------- */
/* 1 if all count floats are finite. OpenMP-parallel for large arrays. */
DD_INTERNAL int dd__all_finite(const float *x, size_t count, int nthreads);

#endif
