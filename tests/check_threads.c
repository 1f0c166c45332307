/* tests/check_threads.c -- thread safety and OpenMP hygiene.
 *
 * Concurrency: two different trainings, each on its own model (one thread
 * per model, num_threads = 1), are run one after the other on the main
 * thread and then at the same time in two pthreads released together by a
 * barrier. The library promises no mutable global state and one handle per
 * thread, so the concurrent runs must give bit-for-bit the weights of the
 * sequential ones. The two trainings use different parts of the library so
 * that any shared state between them would show: A is a CNN with batch norm,
 * GFA hooks, SGD with momentum, a dataset and an augmenting batch iterator;
 * B is the zoo's MLP trained adversarially with PGD (dd_attack_train_step)
 * and Adam. Both end with a checkpoint save and load (thread-local fault
 * state, temporary file names) whose parameters must match too. The
 * concurrent runs are repeated to give interleavings more chances.
 *
 * OpenMP: the library must never change the host's settings. The host (this
 * test) sets a thread count (3) different from the model's (2) and checks
 * omp_get_max_threads(), omp_get_dynamic(), omp_get_max_active_levels() and
 * omp_get_schedule() after every kind of call: create, build, forward,
 * backward, GFA backward, optimizer step, attack creation and run, the
 * batch iterator, save and load; also from inside a host parallel region
 * and for a model that takes OpenMP's default (num_threads = 0).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <check.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <deepdefense/deepdefense.h>

#define OK(call) ck_assert_msg((call) == DD_OK, "%s: %s", #call, dd_last_error())

/* A failure inside a worker thread cannot use ck_assert (it longjmps on the
 * main thread only under CK_NOFORK and ends the process otherwise); workers
 * record the first failure here and the main thread asserts on it. */
typedef struct run_result {
    float *params;
    size_t count;
    char error[512];
} run_result;

#define RUN_CHECK(r, call)                                                                         \
    do {                                                                                           \
        dd_status s_ = (call);                                                                     \
        if (s_ != DD_OK) {                                                                         \
            if ((r)->error[0] == '\0')                                                             \
                snprintf((r)->error, sizeof(r)->error, "%s: %s (%s)", #call, dd_status_string(s_), \
                         dd_last_error());                                                         \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Deterministic data from a local generator (no shared state). */
static float next_unit(uint64_t *state) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*state >> 40) & 0xffffff) / 16777216.0f;
}

static int collect_params(const dd_model *m, run_result *r) {
    int np = 0;
    if (dd_model_num_params(m, &np) != DD_OK) return -1;
    size_t total = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        if (dd_model_param_info(m, i, &pi) != DD_OK) return -1;
        total += pi.count;
    }
    r->params = malloc((total + 1) * sizeof(float));
    if (!r->params) return -1;
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        if (dd_model_param_info(m, i, &pi) != DD_OK ||
            dd_model_param_read(m, i, r->params + off, pi.count) != DD_OK)
            return -1;
        off += pi.count;
    }
    r->count = total;
    return 0;
}

/* Saves m to a private file, loads it back, and checks every parameter. */
static void save_load_check(const dd_model *m, const char *tag, run_result *r) {
    char dir[] = "/tmp/dd-threads-XXXXXX", path[128];
    if (!mkdtemp(dir)) {
        snprintf(r->error, sizeof r->error, "%s: mkdtemp failed", tag);
        return;
    }
    snprintf(path, sizeof path, "%s/%s.st", dir, tag);
    dd_model *g = NULL;
    run_result back;
    memset(&back, 0, sizeof back);
    RUN_CHECK(r, dd_model_save(m, path));
    RUN_CHECK(r, dd_model_load(path, &g));
    if (collect_params(g, &back) != 0 || back.count != r->count ||
        memcmp(back.params, r->params, r->count * sizeof(float)) != 0)
        snprintf(r->error, sizeof r->error, "%s: loaded checkpoint differs", tag);
done:
    free(back.params);
    dd_model_destroy(g);
    unlink(path);
    rmdir(dir);
}

/* Training A: conv -> batchnorm -> relu -> maxpool -> flatten -> linear on
 * 3x8x8 images, GFA hooks, SGD with momentum, augmenting batch iterator. */
static void train_a(run_result *r) {
    enum { N = 48, B = 16, C = 3, HW = 8, K = 5, EPOCHS = 2 };
    dd_model *m = NULL;
    dd_optimizer *opt = NULL;
    dd_dataset *ds = NULL;
    dd_batch_iter *it = NULL;
    float *x = malloc((size_t)N * C * HW * HW * sizeof *x);
    int32_t labels[N], y[B];
    float *xb = malloc((size_t)B * C * HW * HW * sizeof *xb);
    uint64_t rng = 1234;
    if (!x || !xb) {
        snprintf(r->error, sizeof r->error, "train_a: malloc");
        goto done;
    }
    for (int i = 0; i < N * C * HW * HW; i++) x[i] = next_unit(&rng);
    for (int i = 0; i < N; i++) labels[i] = i % K;
    RUN_CHECK(r, dd_dataset_from_memory(&ds, x, labels, N, C, HW, HW, K));

    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = 1;
    mo.seed = 3;
    RUN_CHECK(r, dd_model_create(&m, C, HW, HW, K, &mo));
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 4;
    co.pad_h = co.pad_w = 1;
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    dd_pool_options po;
    dd_pool_options_init(&po);
    dd_node c1, bn, act, mp, fl, fc;
    RUN_CHECK(r, dd_model_add_conv2d(m, DD_INPUT, &co, &c1));
    RUN_CHECK(r, dd_model_add_batchnorm(m, c1, &bo, &bn));
    RUN_CHECK(r, dd_model_add_relu(m, bn, NULL, &act));
    RUN_CHECK(r, dd_model_add_maxpool(m, act, &po, &mp));
    RUN_CHECK(r, dd_model_add_flatten(m, mp, NULL, &fl));
    RUN_CHECK(r, dd_model_add_linear(m, fl, K, 1, NULL, &fc));
    RUN_CHECK(r, dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2));
    RUN_CHECK(r, dd_model_build(m, fc, B));

    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    oo.lr = 0.05f;
    RUN_CHECK(r, dd_optimizer_create(&opt, m, &oo));
    dd_batch_iter_options io;
    dd_batch_iter_options_init(&io);
    io.num_threads = 1;
    io.seed = 9;
    io.crop_padding = 2;
    io.hflip = 1;
    RUN_CHECK(r, dd_batch_iter_create(&it, ds, B, &io));
    for (int e = 0; e < EPOCHS; e++) {
        RUN_CHECK(r, dd_batch_iter_reset(it, e));
        for (;;) {
            int n = 0;
            RUN_CHECK(r, dd_batch_iter_next(it, xb, y, NULL, &n));
            if (n == 0) break;
            RUN_CHECK(r, dd_model_zero_grad(m));
            RUN_CHECK(r, dd_model_forward(m, xb, n, DD_TRAIN, NULL));
            RUN_CHECK(r, dd_model_backward(m, y, NULL));
            RUN_CHECK(r, dd_optimizer_step(opt));
        }
    }
    if (collect_params(m, r) != 0) {
        snprintf(r->error, sizeof r->error, "train_a: reading parameters failed");
        goto done;
    }
    save_load_check(m, "a", r);
done:
    dd_batch_iter_destroy(it);
    dd_dataset_destroy(ds);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
    free(x);
    free(xb);
}

/* Training B: the zoo's MLP on 1x8x8 images, PGD adversarial training with
 * Adam through dd_attack_train_step. */
static void train_b(run_result *r) {
    enum { B = 12, HW = 8, K = 3, STEPS = 6 };
    dd_model *m = NULL;
    dd_optimizer *opt = NULL;
    dd_attack *a = NULL;
    float x[B * HW * HW];
    int32_t y[B];
    uint64_t rng = 99;
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = 1;
    mo.seed = 5;
    RUN_CHECK(r, dd_zoo_create(&m, "mlp", 1, HW, HW, K, 1, NULL, NULL, B, &mo));
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_ADAM);
    RUN_CHECK(r, dd_optimizer_create(&opt, m, &oo));
    dd_attack_options ao;
    dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF);
    ao.steps = 3;
    ao.seed = 17;
    RUN_CHECK(r, dd_attack_create(&a, m, &ao));
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < B * HW * HW; i++) x[i] = next_unit(&rng);
        for (int i = 0; i < B; i++) y[i] = (int32_t)((i + s) % K);
        RUN_CHECK(r, dd_attack_train_step(a, opt, x, y, B, NULL, NULL));
    }
    if (collect_params(m, r) != 0) {
        snprintf(r->error, sizeof r->error, "train_b: reading parameters failed");
        goto done;
    }
    save_load_check(m, "b", r);
done:
    dd_attack_destroy(a);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}

typedef struct worker {
    pthread_barrier_t *start;
    void (*train)(run_result *);
    run_result result;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(w->start);
    w->train(&w->result);
    return NULL;
}

static void assert_same(const run_result *a, const run_result *b, const char *what) {
    ck_assert_msg(a->error[0] == '\0', "%s: %s", what, a->error);
    ck_assert_msg(b->error[0] == '\0', "%s: %s", what, b->error);
    ck_assert_uint_eq(a->count, b->count);
    ck_assert_uint_gt(a->count, 0);
    for (size_t i = 0; i < a->count; i++)
        ck_assert_msg(memcmp(&a->params[i], &b->params[i], sizeof(float)) == 0,
                      "%s: parameter float %zu: %a sequential, %a concurrent", what, i, (double)a->params[i],
                      (double)b->params[i]);
}

START_TEST(test_concurrent_equals_sequential) {
    run_result seq_a, seq_b;
    memset(&seq_a, 0, sizeof seq_a);
    memset(&seq_b, 0, sizeof seq_b);
    train_a(&seq_a);
    train_b(&seq_b);
    ck_assert_msg(seq_a.error[0] == '\0', "sequential A: %s", seq_a.error);
    ck_assert_msg(seq_b.error[0] == '\0', "sequential B: %s", seq_b.error);

    for (int round = 0; round < 3; round++) {
        pthread_barrier_t start;
        ck_assert_int_eq(pthread_barrier_init(&start, NULL, 2), 0);
        worker w[2];
        memset(w, 0, sizeof w);
        w[0].start = w[1].start = &start;
        /* round 1 swaps which thread runs which training */
        w[0].train = round == 1 ? train_b : train_a;
        w[1].train = round == 1 ? train_a : train_b;
        pthread_t t[2];
        ck_assert_int_eq(pthread_create(&t[0], NULL, worker_main, &w[0]), 0);
        ck_assert_int_eq(pthread_create(&t[1], NULL, worker_main, &w[1]), 0);
        ck_assert_int_eq(pthread_join(t[0], NULL), 0);
        ck_assert_int_eq(pthread_join(t[1], NULL), 0);
        pthread_barrier_destroy(&start);
        const run_result *ra = round == 1 ? &w[1].result : &w[0].result;
        const run_result *rb = round == 1 ? &w[0].result : &w[1].result;
        assert_same(&seq_a, ra, "training A");
        assert_same(&seq_b, rb, "training B");
        free(w[0].result.params);
        free(w[1].result.params);
    }
    free(seq_a.params);
    free(seq_b.params);
}
END_TEST

/* ---- OpenMP settings ---------------------------------------------------- */

typedef struct omp_state {
    int max_threads, dynamic, levels, chunk;
    omp_sched_t kind;
} omp_state;

static omp_state omp_now(void) {
    omp_state s;
    s.max_threads = omp_get_max_threads();
    s.dynamic = omp_get_dynamic();
    s.levels = omp_get_max_active_levels();
    omp_get_schedule(&s.kind, &s.chunk);
    return s;
}

static void assert_omp(const omp_state *want, const char *after) {
    omp_state now = omp_now();
    ck_assert_msg(now.max_threads == want->max_threads,
                  "after %s: omp_get_max_threads() = %d, the host had set %d", after, now.max_threads,
                  want->max_threads);
    ck_assert_msg(now.dynamic == want->dynamic, "after %s: omp_get_dynamic() changed", after);
    ck_assert_msg(now.levels == want->levels, "after %s: max active levels changed", after);
    ck_assert_msg(now.kind == want->kind && now.chunk == want->chunk, "after %s: omp_get_schedule() changed",
                  after);
}

#define HOST_THREADS 3

/* Every kind of call, with the OpenMP state checked after each. */
static void exercise(int model_threads) {
    const omp_state host = omp_now();
    enum { B = 4, C = 1, HW = 6, K = 4 };
    float x[B * C * HW * HW], adv[B * C * HW * HW];
    int32_t y[B];
    for (int i = 0; i < B * C * HW * HW; i++) x[i] = (float)(i % 13) / 13.0f;
    for (int i = 0; i < B; i++) y[i] = i % K;

    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = model_threads;
    dd_model *m = NULL;
    OK(dd_model_create(&m, C, HW, HW, K, &mo));
    assert_omp(&host, "dd_model_create");
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 16; /* >= 16 channels: oneDNN's blocked kernels */
    co.pad_h = co.pad_w = 1;
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    dd_node c1, bn, r1, g, fc;
    OK(dd_model_add_conv2d(m, DD_INPUT, &co, &c1));
    OK(dd_model_add_batchnorm(m, c1, &bo, &bn));
    OK(dd_model_add_relu(m, bn, NULL, &r1));
    OK(dd_model_add_global_avgpool(m, r1, NULL, &g));
    OK(dd_model_add_linear(m, g, K, 1, NULL, &fc));
    assert_omp(&host, "dd_model_add_*");
    OK(dd_model_build(m, fc, B));
    assert_omp(&host, "dd_model_build");
    OK(dd_model_forward(m, x, B, DD_TRAIN, NULL));
    assert_omp(&host, "dd_model_forward");
    OK(dd_model_backward(m, y, NULL));
    assert_omp(&host, "dd_model_backward");
    OK(dd_gfa_hook_defaults(m, 0.1f, DD_GFA_SIN2));
    OK(dd_model_forward(m, x, B, DD_TRAIN, NULL));
    OK(dd_model_backward(m, y, NULL));
    assert_omp(&host, "dd_model_backward with GFA hooks");
    float dl[B * K], dx[B * C * HW * HW];
    for (int i = 0; i < B * K; i++) dl[i] = 0.1f;
    OK(dd_model_forward(m, x, B, DD_EVAL, NULL));
    OK(dd_model_input_grad(m, dl, dx));
    assert_omp(&host, "dd_model_input_grad");
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    dd_optimizer *opt = NULL;
    OK(dd_optimizer_create(&opt, m, &oo));
    OK(dd_optimizer_step(opt));
    assert_omp(&host, "dd_optimizer_step");
    dd_attack_options ao;
    dd_attack_options_init(&ao, DD_ATTACK_APGD_CE_LINF);
    ao.steps = 3;
    dd_attack *a = NULL;
    OK(dd_attack_create(&a, m, &ao));
    assert_omp(&host, "dd_attack_create");
    OK(dd_attack_run(a, x, y, B, adv, NULL));
    assert_omp(&host, "dd_attack_run");
    OK(dd_attack_train_step(a, opt, x, y, B, NULL, NULL));
    assert_omp(&host, "dd_attack_train_step");
    dd_attack_destroy(a);
    dd_optimizer_destroy(opt);

    dd_dataset *ds = NULL;
    OK(dd_dataset_from_memory(&ds, x, y, B, C, HW, HW, K));
    dd_batch_iter_options io;
    dd_batch_iter_options_init(&io);
    io.num_threads = model_threads;
    io.hflip = 1;
    dd_batch_iter *it = NULL;
    OK(dd_batch_iter_create(&it, ds, 2, &io));
    int n = 0;
    OK(dd_batch_iter_next(it, adv, y, NULL, &n));
    assert_omp(&host, "dd_batch_iter_next");
    dd_batch_iter_destroy(it);
    dd_dataset_destroy(ds);

    char dir[] = "/tmp/dd-omp-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.st", dir);
    OK(dd_model_save(m, path));
    dd_model *g2 = NULL;
    OK(dd_model_load(path, &g2));
    assert_omp(&host, "dd_model_save / dd_model_load");
    OK(dd_model_forward(g2, x, B, DD_EVAL, NULL));
    assert_omp(&host, "dd_model_forward of a loaded model");
    dd_model_destroy(g2);
    unlink(path);
    rmdir(dir);
    dd_model_destroy(m);
    assert_omp(&host, "dd_model_destroy");
}

START_TEST(test_host_openmp_settings_kept) {
    omp_set_num_threads(HOST_THREADS);
    omp_set_dynamic(0);
    omp_set_schedule(omp_sched_guided, 3);
    ck_assert_int_eq(omp_get_max_threads(), HOST_THREADS);
    exercise(2); /* the model's own count, different from the host's */
    exercise(0); /* OpenMP's default, resolved at creation */
    exercise(1);
}
END_TEST

/* From inside a host parallel region each host thread keeps its own ICVs. */
START_TEST(test_host_openmp_settings_in_parallel_region) {
    omp_set_num_threads(2);
    int bad = 0;
    char why[256] = "";
#pragma omp parallel num_threads(2) reduction(+ : bad)
    {
        omp_set_num_threads(HOST_THREADS + omp_get_thread_num());
        int want = omp_get_max_threads();
        dd_model_options mo;
        dd_model_options_init(&mo);
        mo.num_threads = 1;
        dd_model *m = NULL;
        float x[2 * 16], lg[2 * 2];
        for (int i = 0; i < 32; i++) x[i] = 0.5f;
        dd_node f, l;
        if (dd_model_create(&m, 1, 4, 4, 2, &mo) != DD_OK ||
            dd_model_add_flatten(m, DD_INPUT, NULL, &f) != DD_OK ||
            dd_model_add_linear(m, f, 2, 1, NULL, &l) != DD_OK || dd_model_build(m, l, 2) != DD_OK ||
            dd_model_forward(m, x, 2, DD_EVAL, lg) != DD_OK)
            bad++;
        if (omp_get_max_threads() != want) {
            bad++;
#pragma omp critical
            snprintf(why, sizeof why, "thread %d: %d != %d", omp_get_thread_num(), omp_get_max_threads(),
                     want);
        }
        dd_model_destroy(m);
    }
    ck_assert_msg(bad == 0, "inside a host parallel region: %s", why);
    ck_assert_int_eq(omp_get_max_threads(), 2);
}
END_TEST

int main(void) {
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_concurrent_equals_sequential);
    tcase_add_test(tc, test_host_openmp_settings_kept);
    tcase_add_test(tc, test_host_openmp_settings_in_parallel_region);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
