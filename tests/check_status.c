/* tests/check_status.c -- the core runtime: statuses, last error, logging,
 * version, allocation-failure injection, RNG and the finiteness check.
 *
 * Public behaviour is tested through the shared library. The RNG and
 * dd__all_finite are internal (hidden) symbols that the shared library does
 * not export, so their translation units are compiled into this program
 * (the #includes of core/rng.c and core/numeric.c below) and tested
 * directly: against the published xoshiro256** and splitmix64 vectors, and
 * against moments whose bounds come from the central limit theorem (5
 * standard errors: a false failure has probability below 1e-6 per check,
 * and the streams are seeded, so a pass is reproducible anyway).
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include <deepdefense/deepdefense.h>

#include "internal.h"
#include "core/rng.c"
#include "core/numeric.c"

/* Every status code of status.h, first to last. */
static const dd_status all_codes[] = {
    DD_OK,
    DD_ERR_INVALID_ARGUMENT,
    DD_ERR_OUT_OF_MEMORY,
    DD_ERR_UNSUPPORTED,
    DD_ERR_BACKEND,
    DD_ERR_STATE,
    DD_ERR_IO,
    DD_ERR_FORMAT,
    DD_ERR_NUMERIC,
    DD_ERR_REMOTE,
};
#define NUM_CODES ((int)(sizeof all_codes / sizeof all_codes[0]))

/* ---- statuses and the last error --------------------------------------- */

START_TEST(test_status_strings) {
    const char *unknown = dd_status_string((dd_status)9999);
    ck_assert_ptr_nonnull(unknown);
    ck_assert_ptr_nonnull(dd_status_string((dd_status)-1));
    for (int i = 0; i < NUM_CODES; i++) {
        const char *s = dd_status_string(all_codes[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_gt((int)strlen(s), 0);
        ck_assert_str_ne(s, unknown);
        for (int j = 0; j < i; j++) ck_assert_str_ne(s, dd_status_string(all_codes[j]));
    }
    ck_assert_int_eq((int)all_codes[NUM_CODES - 1], NUM_CODES - 1);
    /* One past the last code is unknown (a new code must get a string). */
    ck_assert_str_eq(dd_status_string((dd_status)NUM_CODES), unknown);
}
END_TEST

START_TEST(test_last_error_after_failure) {
    dd_status s = dd_model_create(NULL, 3, 8, 8, 10, NULL);
    ck_assert_int_eq(s, DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(dd_last_error());
    ck_assert_int_gt((int)strlen(dd_last_error()), 0);

    dd_model *m = (dd_model *)&m; /* must be reset to NULL on failure */
    s = dd_model_create(&m, 0, 8, 8, 10, NULL);
    ck_assert_int_eq(s, DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(m);
    ck_assert_int_gt((int)strlen(dd_last_error()), 0);
}
END_TEST

static int other_thread(void *arg) {
    const char **seen = arg;
    /* Copy: the buffer belongs to this thread and dies with it. */
    static char copy[64];
    snprintf(copy, sizeof copy, "%s", dd_last_error());
    *seen = copy;
    return 0;
}

START_TEST(test_last_error_is_thread_local) {
    const char *seen = NULL;
    thrd_t t;
    /* A thread that never failed sees an empty message, never NULL. */
    ck_assert_int_eq(thrd_create(&t, other_thread, &seen), thrd_success);
    ck_assert_int_eq(thrd_join(t, NULL), thrd_success);
    ck_assert_ptr_nonnull(seen);
    ck_assert_str_eq(seen, "");

    /* A failure on this thread is invisible to another one. */
    ck_assert_int_eq(dd_model_create(NULL, 3, 8, 8, 10, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_gt((int)strlen(dd_last_error()), 0);
    seen = NULL;
    ck_assert_int_eq(thrd_create(&t, other_thread, &seen), thrd_success);
    ck_assert_int_eq(thrd_join(t, NULL), thrd_success);
    ck_assert_ptr_nonnull(seen);
    ck_assert_str_eq(seen, "");
    ck_assert_int_gt((int)strlen(dd_last_error()), 0);
}
END_TEST

/* ---- logging ----------------------------------------------------------- */

static int log_calls;
static dd_log_level log_last_level;
static char log_last[2048];
static void *log_user_seen;

static void log_fn(dd_log_level level, const char *message, void *user) {
    log_calls++;
    log_last_level = level;
    log_user_seen = user;
    snprintf(log_last, sizeof log_last, "%s", message);
}

START_TEST(test_log_callback) {
    int token = 0;
    log_calls = 0;
    /* No callback: nothing is delivered anywhere. */
    ck_assert_int_eq(dd_model_create(NULL, 3, 8, 8, 10, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(log_calls, 0);

    /* Errors are logged at DEBUG with the last-error text. */
    dd_set_log_callback(log_fn, &token, DD_LOG_DEBUG);
    ck_assert_int_eq(dd_model_create(NULL, 3, 8, 8, 10, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_ge(log_calls, 1);
    ck_assert_ptr_eq(log_user_seen, &token);
    ck_assert_int_eq(log_last_level, DD_LOG_DEBUG);
    ck_assert_ptr_nonnull(strstr(log_last, dd_last_error()));

    /* A lower maximum level filters DEBUG out. */
    int before = log_calls;
    dd_set_log_callback(log_fn, &token, DD_LOG_ERROR);
    ck_assert_int_eq(dd_model_create(NULL, 3, 8, 8, 10, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(log_calls, before);

    /* Removal. */
    dd_set_log_callback(NULL, NULL, DD_LOG_DEBUG);
    ck_assert_int_eq(dd_model_create(NULL, 3, 8, 8, 10, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(log_calls, before);
}
END_TEST

/* ---- version ----------------------------------------------------------- */

START_TEST(test_version) {
    char expect[32];
    ck_assert_uint_eq(dd_version(), DD_VERSION_NUMBER);
    ck_assert_str_eq(dd_version_string(), DD_VERSION_STRING);
    snprintf(expect, sizeof expect, "%d.%d.%d", DD_VERSION_MAJOR, DD_VERSION_MINOR, DD_VERSION_PATCH);
    ck_assert_str_eq(dd_version_string(), expect);
    ck_assert(DD_VERSION_AT_LEAST(DD_VERSION_MAJOR, DD_VERSION_MINOR, DD_VERSION_PATCH));
    ck_assert(!DD_VERSION_AT_LEAST(DD_VERSION_MAJOR, DD_VERSION_MINOR, DD_VERSION_PATCH + 1));
}
END_TEST

/* ---- allocation-failure injection -------------------------------------- */

START_TEST(test_alloc_fail_first) {
    dd_model *m = (dd_model *)&m;
    dd__alloc_fail_after(0);
    dd_status s = dd_model_create(&m, 3, 8, 8, 10, NULL);
    long made = dd__alloc_count();
    dd__alloc_fail_after(-1);
    ck_assert_int_eq(s, DD_ERR_OUT_OF_MEMORY);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(made, 0);
    ck_assert_int_gt((int)strlen(dd_last_error()), 0);
}
END_TEST

START_TEST(test_alloc_count_and_sweep) {
    dd_model *m = NULL;
    dd__alloc_fail_after(-1);
    ck_assert_int_eq(dd_model_create(&m, 3, 8, 8, 10, NULL), DD_OK);
    long n = dd__alloc_count();
    ck_assert_int_gt(n, 0);
    dd_model_destroy(m);

    /* Failing allocation k (0-based) for each k must report OOM, cleanly. */
    for (long k = 0; k < n; k++) {
        m = (dd_model *)&m;
        dd__alloc_fail_after(k);
        dd_status s = dd_model_create(&m, 3, 8, 8, 10, NULL);
        long made = dd__alloc_count();
        dd__alloc_fail_after(-1);
        ck_assert_msg(s == DD_ERR_OUT_OF_MEMORY, "k = %ld: status %d", k, (int)s);
        ck_assert_ptr_null(m);
        ck_assert_int_eq(made, k);
    }
    /* Enough room: succeeds again, and the counter saw the same number. */
    dd__alloc_fail_after(n);
    ck_assert_int_eq(dd_model_create(&m, 3, 8, 8, 10, NULL), DD_OK);
    ck_assert_int_eq(dd__alloc_count(), n);
    dd__alloc_fail_after(-1);
    dd_model_destroy(m);
    dd_model_destroy(NULL);
}
END_TEST

/* ---- RNG --------------------------------------------------------------- */

START_TEST(test_rng_reference_vectors) {
    /* Published xoshiro256** outputs from state {1, 2, 3, 4}
     * (reference C implementation; also rand_xoshiro's test vector). */
    static const uint64_t expect[10] = {
        11520ULL,
        0ULL,
        1509978240ULL,
        1215971899390074240ULL,
        1216172134540287360ULL,
        607988272756665600ULL,
        16172922978634559625ULL,
        8476171486693032832ULL,
        10595114339597558777ULL,
        2904607092377533576ULL,
    };
    dd__rng r = {{1, 2, 3, 4}};
    for (int i = 0; i < 10; i++) ck_assert_msg(dd__rng_next(&r) == expect[i], "output %d", i);

    /* Seeding is splitmix64 from the seed: its published first outputs for 0. */
    dd__rng_seed(&r, 0);
    ck_assert(r.s[0] == 0xe220a8397b1dcdafULL);
    ck_assert(r.s[1] == 0x6e789e6aa1b965f4ULL);
    ck_assert(r.s[2] == 0x06c45d188009454fULL);
    ck_assert(r.s[3] == 0xf88bb8a8724c81ecULL);
}
END_TEST

START_TEST(test_rng_reproducible) {
    dd__rng a, b, c;
    dd__rng_seed(&a, 42);
    dd__rng_seed(&b, 42);
    dd__rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = dd__rng_next(&a), y = dd__rng_next(&b), z = dd__rng_next(&c);
        ck_assert(x == y);
        differ += x != z;
    }
    ck_assert_int_gt(differ, 990);
    for (int i = 0; i < 100; i++) {
        ck_assert(dd__rng_normal(&a) == dd__rng_normal(&b));
        ck_assert(dd__rng_uniform(&a) == dd__rng_uniform(&b));
        ck_assert(dd__rng_below(&a, 1000) == dd__rng_below(&b, 1000));
    }
}
END_TEST

#define NSAMP 100000

START_TEST(test_rng_uniform) {
    dd__rng r;
    dd__rng_seed(&r, 7);
    double sum = 0, sum2 = 0;
    for (int i = 0; i < NSAMP; i++) {
        double u = dd__rng_uniform(&r);
        ck_assert(u >= 0.0 && u < 1.0);
        sum += u;
        sum2 += u * u;
    }
    double mean = sum / NSAMP, var = sum2 / NSAMP - mean * mean;
    /* U(0,1): mean 1/2, sd 1/sqrt(12); variance 1/12, sd of the sample
     * variance sqrt((1/80 - 1/144) / n). */
    ck_assert_double_le(fabs(mean - 0.5), 5 * sqrt(1.0 / 12 / NSAMP));
    ck_assert_double_le(fabs(var - 1.0 / 12), 5 * sqrt((1.0 / 80 - 1.0 / 144) / NSAMP));
}
END_TEST

START_TEST(test_rng_normal) {
    dd__rng r;
    dd__rng_seed(&r, 11);
    double s1 = 0, s2 = 0, s4 = 0;
    long tail = 0;
    for (int i = 0; i < NSAMP; i++) {
        double x = dd__rng_normal(&r);
        ck_assert(isfinite(x));
        s1 += x;
        s2 += x * x;
        s4 += x * x * x * x;
        tail += fabs(x) > 2.0;
    }
    double mean = s1 / NSAMP, m2 = s2 / NSAMP, m4 = s4 / NSAMP;
    double p = (double)tail / NSAMP;
    /* N(0,1): E x = 0 (sd 1), E x^2 = 1 (sd sqrt 2), E x^4 = 3 (sd sqrt 96),
     * P(|x| > 2) = erfc(sqrt 2) = 0.0455. */
    double p2 = erfc(sqrt(2.0));
    ck_assert_double_le(fabs(mean), 5 * sqrt(1.0 / NSAMP));
    ck_assert_double_le(fabs(m2 - 1.0), 5 * sqrt(2.0 / NSAMP));
    ck_assert_double_le(fabs(m4 - 3.0), 5 * sqrt(96.0 / NSAMP));
    ck_assert_double_le(fabs(p - p2), 5 * sqrt(p2 * (1 - p2) / NSAMP));
}
END_TEST

START_TEST(test_rng_below) {
    dd__rng r;
    dd__rng_seed(&r, 3);
    ck_assert(dd__rng_below(&r, 0) == 0);
    ck_assert(dd__rng_below(&r, 1) == 0);

    long count[3] = {0, 0, 0};
    for (int i = 0; i < 30000; i++) {
        uint64_t v = dd__rng_below(&r, 3);
        ck_assert(v < 3);
        count[v]++;
    }
    for (int i = 0; i < 3; i++) /* binomial(30000, 1/3): sd 81.6 */
        ck_assert_int_le(labs(count[i] - 10000), 5 * 82);

    /* n = 3 * 2^62: plain x % n would give values below 2^62 with
     * probability 1/2 instead of 1/3. */
    const uint64_t n = 3ULL << 62;
    long low = 0;
    for (int i = 0; i < 30000; i++) {
        uint64_t v = dd__rng_below(&r, n);
        ck_assert(v < n);
        low += v < (1ULL << 62);
    }
    ck_assert_int_le(labs(low - 10000), 5 * 82);
}
END_TEST

/* ---- finiteness -------------------------------------------------------- */

static void check_finite(size_t count, int nthreads) {
    float *x = malloc(count * sizeof *x);
    ck_assert_ptr_nonnull(x);
    for (size_t i = 0; i < count; i++) x[i] = (i % 3 == 0) ? FLT_MAX : (i % 3 == 1) ? -FLT_TRUE_MIN : 0.5f;
    ck_assert_int_eq(dd__all_finite(x, count, nthreads), 1);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const size_t where[3] = {0, count / 2, count - 1};
    for (int b = 0; b < 3; b++)
        for (int w = 0; w < 3; w++) {
            float keep = x[where[w]];
            x[where[w]] = bad[b];
            ck_assert_msg(dd__all_finite(x, count, nthreads) == 0, "count %zu bad %d at %zu", count, b,
                          where[w]);
            x[where[w]] = keep;
        }
    ck_assert_int_eq(dd__all_finite(x, count, nthreads), 1);
    free(x);
}

START_TEST(test_all_finite) {
    ck_assert_int_eq(dd__all_finite(NULL, 0, 1), 1);
    check_finite(1, 1);
    check_finite(1000, 2);
    check_finite((size_t)1 << 18, 1);
    check_finite(((size_t)1 << 18) + 3, 2);
}
END_TEST

/* ---- runner ------------------------------------------------------------ */

static Suite *status_suite(void) {
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("status");
    tcase_add_test(tc, test_status_strings);
    tcase_add_test(tc, test_last_error_after_failure);
    tcase_add_test(tc, test_last_error_is_thread_local);
    tcase_add_test(tc, test_log_callback);
    tcase_add_test(tc, test_version);
    suite_add_tcase(s, tc);

    tc = tcase_create("alloc");
    tcase_add_test(tc, test_alloc_fail_first);
    tcase_add_test(tc, test_alloc_count_and_sweep);
    suite_add_tcase(s, tc);

    tc = tcase_create("rng");
    tcase_add_test(tc, test_rng_reference_vectors);
    tcase_add_test(tc, test_rng_reproducible);
    tcase_add_test(tc, test_rng_uniform);
    tcase_add_test(tc, test_rng_normal);
    tcase_add_test(tc, test_rng_below);
    tcase_add_test(tc, test_all_finite);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(status_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
