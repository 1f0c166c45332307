/* examples/common.h -- die-on-error helpers shared by the example programs.
 *
 * The examples are single-file programs; everything they share lives here
 * as static inline functions (inline: no unused-function warnings), so each
 * example compiles on its own against the public API only. A helper whose
 * name ends in _or_die prints what failed (the call, dd_status_string() and
 * dd_last_error()) on stderr and exits with status 1: right for a
 * command-line program, never for a library (the library itself only
 * returns statuses).
 *
 * Also here: argument parsing of numbers, a monotonic clock, a synthetic
 * dataset (class-dependent patterns plus noise, learnable in seconds, for
 * runs without files), and the two evaluation loops every example needs
 * (clean accuracy, and accuracy under an attack).
 */
#ifndef DD_EXAMPLES_COMMON_H
#define DD_EXAMPLES_COMMON_H

#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#undef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <unistd.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <deepdefense/deepdefense.h>
#include <deepdefense/attack.h>

/* ---- errors --------------------------------------------------------------- */

/* Exits with a message naming `what` when s is not DD_OK. */
static inline void check_or_die(dd_status s, const char *what) {
    if (s == DD_OK) return;
    fflush(stdout);
    fprintf(stderr, "error: %s: %s", what, dd_status_string(s));
    const char *detail = dd_last_error();
    if (detail != NULL && detail[0] != '\0') fprintf(stderr, ": %s", detail);
    fputc('\n', stderr);
    exit(1);
}

/* Prints a formatted message and exits (for errors of the program itself). */
static inline void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void die(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* 1 if a file can be created next to path (path + ".probe.PID", removed
 * again), else 0 with errno set: output locations are checked before the
 * work starts. */
static inline int can_write_next_to(const char *path) {
    char probe[1200];
    snprintf(probe, sizeof probe, "%s.probe.%ld", path, (long)getpid());
    FILE *f = fopen(probe, "wb");
    if (f == NULL) return 0;
    fclose(f);
    remove(probe);
    return 1;
}

/* malloc that never returns NULL (count * size, overflow-checked). */
static inline void *malloc_or_die(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) die("allocation of %zu x %zu bytes overflows", count, size);
    void *p = malloc(count * size > 0 ? count * size : 1);
    if (p == NULL) die("out of memory (%zu bytes)", count * size);
    return p;
}

/* ---- command-line numbers -------------------------------------------------- */

static inline long parse_long_or_die(const char *opt, const char *s, long lo, long hi) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        die("%s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    return v;
}

/* Accepts "0.03", "1e-3" and fractions such as "8/255". */
static inline double parse_double_or_die(const char *opt, const char *s, double lo, double hi) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == 0 && end != s && *end == '/') {
        const char *d = end + 1;
        double den = strtod(d, &end);
        if (end == d || den == 0.0) die("%s: '%s' is not a number", opt, s);
        v /= den;
    }
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi)
        die("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

/* ---- time -------------------------------------------------------------- */

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "1:05:03" or "4:07" into buf. */
static inline const char *format_duration(double seconds, char *buf, size_t size) {
    if (!(seconds >= 0.0) || seconds > 1e7) seconds = 0.0;
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

/* ---- data ----------------------------------------------------------------- */

/* Opens the split of dir (CIFAR-10 binary or IDX, detected), optionally
 * cut to its first `limit` samples (limit <= 0: all). */
static inline dd_dataset *open_dataset_or_die(const char *dir, dd_split split, long limit) {
    dd_dataset *ds = NULL;
    check_or_die(dd_dataset_open_auto(&ds, dir, split), dir);
    int n = 0;
    check_or_die(dd_dataset_info(ds, &n, NULL, NULL, NULL, NULL), "dd_dataset_info");
    if (limit > 0 && limit < n) {
        dd_dataset *sub = NULL;
        check_or_die(dd_dataset_subset(&sub, ds, 0, (int)limit), "dd_dataset_subset");
        dd_dataset_destroy(ds);
        ds = sub;
    }
    return ds;
}

/* splitmix64: a tiny, seedable generator for synthetic data. */
static inline uint64_t example_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A synthetic dataset of n images (c, h, w) in k classes (k <= 16): each
 * class brightens a different horizontal or vertical bar of uniform noise,
 * so a small model learns it in a few hundred steps. Deterministic in seed. */
static inline dd_dataset *synthetic_dataset_or_die(int n, int c, int h, int w, int k, uint64_t seed) {
    if (n < 1 || c < 1 || h < 4 || w < 4 || k < 2 || k > 16)
        die("synthetic data: unsupported shape n=%d c=%d h=%d w=%d k=%d", n, c, h, w, k);
    size_t per = (size_t)c * (size_t)h * (size_t)w;
    float *x = malloc_or_die((size_t)n * per, sizeof *x);
    int32_t *y = malloc_or_die((size_t)n, sizeof *y);
    uint64_t st = seed * 0x2545f4914f6cdd1dULL + 1;
    for (int i = 0; i < n; i++) {
        int label = (int)(example_rng_next(&st) % (uint64_t)k);
        y[i] = label;
        int vertical = label % 2, slot = label / 2, slots = (k + 1) / 2;
        float *img = x + (size_t)i * per;
        for (int ch = 0; ch < c; ch++)
            for (int r = 0; r < h; r++)
                for (int col = 0; col < w; col++) {
                    double u = (double)(example_rng_next(&st) >> 11) * 0x1.0p-53;
                    int pos = vertical ? col : r, len = vertical ? w : h;
                    int in_bar = pos * slots / len == slot;
                    /* The bar is only 0.15 brighter than the noise: learnable, but
                     * not so clean that every attack fails. */
                    img[((size_t)ch * h + r) * w + col] = (float)(0.85 * u + (in_bar ? 0.15 : 0.0));
                }
    }
    dd_dataset *ds = NULL;
    check_or_die(dd_dataset_from_memory(&ds, x, y, n, c, h, w, k), "dd_dataset_from_memory");
    free(x);
    free(y);
    return ds;
}

/* ---- evaluation ------------------------------------------------------------ */

/* Index of the largest of k logits (ties: the lowest index). */
static inline int argmax_row(const float *row, int k) {
    int best = 0;
    for (int j = 1; j < k; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

/* Clean accuracy of m on the first `count` samples of ds (count <= 0: all),
 * in DD_EVAL mode, batches of the model's max_batch. */
static inline double accuracy_or_die(dd_model *m, const dd_dataset *ds, int count) {
    int n = 0, c = 0, h = 0, w = 0, k = 0, mb = 0, mk = 0;
    check_or_die(dd_dataset_info(ds, &n, &c, &h, &w, &k), "dd_dataset_info");
    check_or_die(dd_model_max_batch(m, &mb), "dd_model_max_batch");
    check_or_die(dd_model_num_classes(m, &mk), "dd_model_num_classes");
    if (count <= 0 || count > n) count = n;
    size_t per = (size_t)c * (size_t)h * (size_t)w;
    float *x = malloc_or_die((size_t)mb * per, sizeof *x);
    float *logits = malloc_or_die((size_t)mb * (size_t)mk, sizeof *logits);
    int32_t *y = malloc_or_die((size_t)mb, sizeof *y);
    long correct = 0;
    for (int start = 0; start < count; start += mb) {
        int b = count - start < mb ? count - start : mb;
        check_or_die(dd_dataset_get_range(ds, start, b, x, y), "dd_dataset_get_range");
        check_or_die(dd_model_forward(m, x, b, DD_EVAL, logits), "dd_model_forward");
        for (int i = 0; i < b; i++) correct += argmax_row(logits + (size_t)i * mk, mk) == y[i];
    }
    free(x);
    free(logits);
    free(y);
    return (double)correct / (double)count;
}

/* Robust accuracy of m under an attack of `kind` at budget eps on the first
 * `count` samples of ds: the fraction the attack does not fool (clean
 * mistakes count as fooled, as AutoAttack counts). Other options are the
 * kind's defaults. */
static inline double robust_accuracy_or_die(dd_model *m, const dd_dataset *ds, int count, dd_attack_kind kind,
                                            float eps) {
    int n = 0, c = 0, h = 0, w = 0, mb = 0;
    check_or_die(dd_dataset_info(ds, &n, &c, &h, &w, NULL), "dd_dataset_info");
    check_or_die(dd_model_max_batch(m, &mb), "dd_model_max_batch");
    if (count <= 0 || count > n) count = n;
    dd_attack_options ao;
    dd_attack_options_init(&ao, kind);
    ao.eps = eps;
    dd_attack *a = NULL;
    check_or_die(dd_attack_create(&a, m, &ao), "dd_attack_create");
    size_t per = (size_t)c * (size_t)h * (size_t)w;
    float *x = malloc_or_die((size_t)mb * per, sizeof *x);
    float *xa = malloc_or_die((size_t)mb * per, sizeof *xa);
    int32_t *y = malloc_or_die((size_t)mb, sizeof *y);
    long fooled = 0;
    for (int start = 0; start < count; start += mb) {
        int b = count - start < mb ? count - start : mb;
        check_or_die(dd_dataset_get_range(ds, start, b, x, y), "dd_dataset_get_range");
        dd_attack_results r;
        dd_attack_results_init(&r);
        check_or_die(dd_attack_run(a, x, y, b, xa, &r), "dd_attack_run");
        fooled += r.num_success;
    }
    dd_attack_destroy(a);
    free(x);
    free(xa);
    free(y);
    return 1.0 - (double)fooled / (double)count;
}

#endif
