/* tests/check_oom.c -- allocation-failure sweeps across the public API.
 *
 * For each operation the sweep first runs it with injection off and counts
 * the allocations it makes (n, tests/internal.h), then for k = 0 .. n-1
 * lets exactly k allocations succeed and fails the next one
 * (dd__alloc_fail_after(k)). Each such run must return
 * DD_ERR_OUT_OF_MEMORY with a message, leave a constructor's *out NULL and
 * a method's handle usable: the same call without injection then succeeds
 * and gives bit-for-bit the result of a handle that never saw a failure
 * (status.h: "an allocation failed; nothing was changed"). Leaks are not
 * counted here: the sanitizer pass of CI runs this program under
 * LeakSanitizer, which reports any block a failed call left behind.
 *
 * Swept: building a model with every node type (the whole construction, and
 * dd_model_build alone followed by a retry), the first forward and backward
 * passes of a batch size (which create oneDNN primitives and, with GFA,
 * lazily allocated buffers), GFA hooks on a built model, checkpoint loading,
 * optimizer creation, attack creation for every kind, and every dataset
 * constructor on tiny generated files (CIFAR-10 plain, gzip, a directory;
 * IDX plain and gzip) plus subsets and batch iterators.
 *
 * Only the library's own allocations are swept: oneDNN, jansson and zlib
 * allocate with their own malloc, and OpenMP workers are not counted.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <deepdefense/deepdefense.h>

#include "internal.h"

#define OK(call) ck_assert_msg((call) == DD_OK, "%s: %s", #call, dd_last_error())

/* Asserts the outcome of one injected run. */
#define ASSERT_OOM(s, k, what)                                                                               \
    do {                                                                                                     \
        ck_assert_msg((s) == DD_ERR_OUT_OF_MEMORY, "%s, allocation %ld failing: %s (%s)", (what), (long)(k), \
                      dd_status_string(s), dd_last_error());                                                 \
        ck_assert_msg(strlen(dd_last_error()) > 0, "%s, allocation %ld: no message", (what), (long)(k));     \
    } while (0)

/* ======================================================================== */
/* Models                                                                    */
/* ======================================================================== */

enum { C = 2, H = 6, W = 6, K = 4, MAXB = 4 };

static dd_model_options model_opts(void) {
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = 1;
    o.seed = 11;
    return o;
}

/* Adds every node type to m (normalize, conv2d with and without bias,
 * batchnorm, relu, add, maxpool, avgpool, global average pool, flatten,
 * linear) and returns the logits node, or the first failing status. */
static dd_status add_all_nodes(dd_model *m, dd_node *logits) {
    static const float mean[C] = {0.5f, 0.25f}, std[C] = {0.5f, 2.0f};
    dd_node nrm, c1, bn, r1, c2, sum, mp, ap, gp, la, fl, lb, out;
    dd_status s;
#define TRY(call)                 \
    do {                          \
        s = (call);               \
        if (s != DD_OK) return s; \
    } while (0)
    TRY(dd_model_add_normalize(m, DD_INPUT, mean, std, C, "norm", &nrm));
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 3;
    co.pad_h = co.pad_w = 1;
    co.name = "conv1";
    TRY(dd_model_add_conv2d(m, nrm, &co, &c1));
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    bo.name = "bn1";
    TRY(dd_model_add_batchnorm(m, c1, &bo, &bn));
    TRY(dd_model_add_relu(m, bn, "relu1", &r1));
    co.bias = 0;
    co.name = "conv2";
    TRY(dd_model_add_conv2d(m, r1, &co, &c2));
    TRY(dd_model_add_add(m, r1, c2, "res", &sum));
    dd_pool_options po;
    dd_pool_options_init(&po);
    po.name = "mp";
    TRY(dd_model_add_maxpool(m, sum, &po, &mp)); /* 3 x 3 x 3 */
    po.kernel_h = po.kernel_w = 2;
    po.stride_h = po.stride_w = 1;
    po.pad_h = po.pad_w = 1;
    po.name = "ap";
    TRY(dd_model_add_avgpool(m, mp, &po, &ap));          /* 3 x 4 x 4 */
    TRY(dd_model_add_global_avgpool(m, ap, "gap", &gp)); /* 3 */
    TRY(dd_model_add_linear(m, gp, K, 1, "fca", &la));
    TRY(dd_model_add_flatten(m, mp, "flat", &fl)); /* 27 */
    TRY(dd_model_add_linear(m, fl, K, 0, "fcb", &lb));
    TRY(dd_model_add_add(m, la, lb, "logits", &out));
#undef TRY
    *logits = out;
    return DD_OK;
}

/* The whole construction as a host writes it: create, add, hook, build.
 * On failure the partial model is destroyed (as a host would) and *out is
 * NULL. */
static dd_status construct(dd_model **out, int hooks) {
    dd_model_options o = model_opts();
    dd_model *m = NULL;
    *out = NULL;
    dd_status s = dd_model_create(&m, C, H, W, K, &o);
    if (s != DD_OK) {
        ck_assert_ptr_null(m);
        return s;
    }
    dd_node logits = -1;
    s = add_all_nodes(m, &logits);
    if (s == DD_OK && hooks) s = dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2);
    if (s == DD_OK) s = dd_model_build(m, logits, MAXB);
    if (s != DD_OK) {
        dd_model_destroy(m);
        return s;
    }
    *out = m;
    return DD_OK;
}

static dd_model *construct_ok(int hooks) {
    dd_model *m = NULL;
    dd__alloc_fail_after(-1);
    OK(construct(&m, hooks));
    return m;
}

/* A fixed batch of MAXB images and labels. */
static void batch(float *x, int32_t *y) {
    for (int i = 0; i < MAXB * C * H * W; i++) x[i] = (float)((i * 37) % 101) / 101.0f;
    for (int i = 0; i < MAXB; i++) y[i] = i % K;
}

/* Every parameter value of m, concatenated (malloc'ed). */
static float *params_of(const dd_model *m, size_t *count) {
    int np = 0;
    OK(dd_model_num_params(m, &np));
    size_t total = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        OK(dd_model_param_info(m, i, &pi));
        total += pi.count;
    }
    float *all = malloc((total + 1) * sizeof *all);
    ck_assert_ptr_nonnull(all);
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        OK(dd_model_param_info(m, i, &pi));
        OK(dd_model_param_read(m, i, all + off, pi.count));
        off += pi.count;
    }
    *count = total;
    return all;
}

static void assert_same_params(const dd_model *a, const dd_model *b, const char *what) {
    size_t na, nb;
    float *pa = params_of(a, &na), *pb = params_of(b, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(memcmp(pa, pb, na * sizeof *pa) == 0, "%s: parameters differ", what);
    free(pa);
    free(pb);
}

/* Forward (n samples, DD_EVAL) and backward on m; logits and every
 * gradient come back for comparison (malloc'ed). */
static void run_passes(dd_model *m, int n, float **logits, float **grads, size_t *ngrads) {
    float x[MAXB * C * H * W];
    int32_t y[MAXB];
    batch(x, y);
    *logits = malloc((size_t)n * K * sizeof **logits);
    ck_assert_ptr_nonnull(*logits);
    OK(dd_model_zero_grad(m));
    OK(dd_model_forward(m, x, n, DD_EVAL, *logits));
    OK(dd_model_backward(m, y, NULL));
    int np = 0;
    OK(dd_model_num_params(m, &np));
    size_t total = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        OK(dd_model_param_info(m, i, &pi));
        total += pi.count;
    }
    *grads = malloc((total + 1) * sizeof **grads);
    ck_assert_ptr_nonnull(*grads);
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        OK(dd_model_param_info(m, i, &pi));
        OK(dd_model_grad_read(m, i, *grads + off, pi.count));
        off += pi.count;
    }
    *ngrads = total;
}

/* m computes exactly what a model that never saw a failure computes. */
static void assert_same_results(dd_model *m, dd_model *ref, int n, const char *what) {
    float *l1, *g1, *l2, *g2;
    size_t n1, n2;
    run_passes(m, n, &l1, &g1, &n1);
    run_passes(ref, n, &l2, &g2, &n2);
    ck_assert_msg(memcmp(l1, l2, (size_t)n * K * sizeof *l1) == 0, "%s: logits differ", what);
    ck_assert_uint_eq(n1, n2);
    ck_assert_msg(memcmp(g1, g2, n1 * sizeof *g1) == 0, "%s: gradients differ", what);
    free(l1);
    free(g1);
    free(l2);
    free(g2);
}

/* ======================================================================== */
/* Model construction, passes, GFA hooks                                     */
/* ======================================================================== */

/* _i: 0 without hooks, 1 with GFA hooks set before the build. */
START_TEST(test_oom_construct) {
    dd_model *ref = construct_ok(_i);
    dd__alloc_fail_after(-1);
    dd_model *m = NULL;
    OK(construct(&m, _i));
    long n = dd__alloc_count();
    dd_model_destroy(m);
    ck_assert_int_gt(n, 0);
    for (long k = 0; k < n; k++) {
        m = (dd_model *)&m;
        dd__alloc_fail_after(k);
        dd_status s = construct(&m, _i);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, "create + add + build");
        ck_assert_ptr_null(m);
    }
    OK(construct(&m, _i));
    assert_same_params(m, ref, "constructed after the sweep");
    dd_model_destroy(m);
    dd_model_destroy(ref);
}
END_TEST

/* dd_model_build alone fails at allocation k; the same handle is then built
 * without injection and must equal a model built once. */
START_TEST(test_oom_build_retry) {
    dd_model *ref = construct_ok(_i);
    long n = -1;
    for (long k = 0; n < 0 || k < n; k++) {
        dd_model_options o = model_opts();
        dd_model *m = NULL;
        dd_node logits;
        OK(dd_model_create(&m, C, H, W, K, &o));
        OK(add_all_nodes(m, &logits));
        if (_i) OK(dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2));
        if (n < 0) {
            dd__alloc_fail_after(-1);
            OK(dd_model_build(m, logits, MAXB));
            n = dd__alloc_count();
            ck_assert_int_gt(n, 0);
            k = -1;
            dd_model_destroy(m);
            continue;
        }
        dd__alloc_fail_after(k);
        dd_status s = dd_model_build(m, logits, MAXB);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, "dd_model_build");
        char failed_at[256];
        snprintf(failed_at, sizeof failed_at, "%s", dd_last_error());
        s = dd_model_build(m, logits, MAXB);
        ck_assert_msg(s == DD_OK, "build after a failure at allocation %ld: %s (%s)", k, dd_status_string(s),
                      dd_last_error());
        char what[400];
        snprintf(what, sizeof what, "built after a build failed at allocation %ld of %ld (%s)", k, n,
                 failed_at);
        assert_same_params(m, ref, what);
        assert_same_results(m, ref, 2, what);
        dd_model_destroy(m);
    }
    dd_model_destroy(ref);
}
END_TEST

/* The first forward and backward of a batch size may allocate (plans, the
 * gradient backup, GFA buffers): failures there leave the model usable. */
START_TEST(test_oom_first_passes) {
    dd_model *ref = construct_ok(_i);
    float x[MAXB * C * H * W];
    int32_t y[MAXB];
    batch(x, y);
    /* the passes of a fresh model, with injection off, give the count */
    long nf, nb;
    {
        dd_model *m = construct_ok(_i);
        dd__alloc_fail_after(-1);
        OK(dd_model_forward(m, x, 3, DD_EVAL, NULL)); /* the pass swept below */
        nf = dd__alloc_count();
        OK(dd_model_backward(m, y, NULL));
        OK(dd_model_forward(m, x, 3, DD_EVAL, NULL));
        dd__alloc_fail_after(-1);
        OK(dd_model_backward(m, y, NULL)); /* accumulating: the backup buffer */
        nb = dd__alloc_count();
        dd_model_destroy(m);
    }
    for (long k = 0; k < nf; k++) {
        dd_model *m = construct_ok(_i);
        dd__alloc_fail_after(k);
        dd_status s = dd_model_forward(m, x, 3, DD_EVAL, NULL);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, "first forward");
        ck_assert_int_eq(dd_model_backward(m, y, NULL), DD_ERR_STATE);
        assert_same_results(m, ref, 3, "after a failed forward");
        dd_model_destroy(m);
    }
    for (long k = 0; k < nb; k++) {
        dd_model *m = construct_ok(_i);
        OK(dd_model_forward(m, x, 3, DD_EVAL, NULL));
        OK(dd_model_backward(m, y, NULL));
        OK(dd_model_forward(m, x, 3, DD_EVAL, NULL));
        dd__alloc_fail_after(k);
        dd_status s = dd_model_backward(m, y, NULL);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, "accumulating backward");
        assert_same_results(m, ref, 3, "after a failed backward");
        dd_model_destroy(m);
    }
    dd_model_destroy(ref);
}
END_TEST

/* A 2-thread model of every node type for batches of up to 24. */
static dd_model *predict_model(void) {
    dd_model_options o = model_opts();
    o.num_threads = 2;
    dd_model *m = NULL;
    dd_node logits = -1;
    dd__alloc_fail_after(-1);
    OK(dd_model_create(&m, C, H, W, K, &o));
    OK(add_all_nodes(m, &logits));
    OK(dd_model_build(m, logits, 24));
    return m;
}

/* dd_model_predict's first call builds the threads' model copies and their
 * plans: a failed allocation gives DD_ERR_OUT_OF_MEMORY with a message, and
 * the next call predicts what a model that never failed predicts. The
 * calling thread runs a varying share of the chunks, so a late allocation
 * may not happen in a given run: then the call succeeds. */
START_TEST(test_oom_predict) {
    enum { PB = 24 };
    static float x[PB * C * H * W], want[PB * K], z[PB * K];
    for (int i = 0; i < PB * C * H * W; i++) x[i] = (float)((i * 37) % 101) / 101.0f;
    dd_model *ref = predict_model();
    dd__alloc_fail_after(-1);
    OK(dd_model_predict(ref, x, PB, want));
    long n = dd__alloc_count();
    ck_assert_int_gt(n, 0);
    for (long k = 0; k < n; k++) {
        dd_model *m = predict_model();
        dd__alloc_fail_after(k);
        dd_status s = dd_model_predict(m, x, PB, z);
        dd__alloc_fail_after(-1);
        if (s != DD_OK) ASSERT_OOM(s, k, "first predict");
        OK(dd_model_predict(m, x, PB, z));
        ck_assert_msg(memcmp(z, want, sizeof z) == 0, "allocation %ld failing: logits differ after", k);
        dd_model_destroy(m);
    }
    dd_model_destroy(ref);
}
END_TEST

/* Hooks set on a built model reallocate its activations. */
START_TEST(test_oom_gfa_hooks) {
    dd_model *ref = construct_ok(1);
    dd_model *m = construct_ok(0);
    dd__alloc_fail_after(-1);
    OK(dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2));
    long n = dd__alloc_count();
    dd_model_destroy(m);
    for (long k = 0; k < n; k++) {
        m = construct_ok(0);
        dd__alloc_fail_after(k);
        dd_status s = dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, "dd_gfa_hook_defaults on a built model");
        int nh = -1;
        OK(dd_gfa_num_hooks(m, &nh));
        /* usable: as it was (no hooks), or retried to equal the reference */
        ck_assert_int_eq(nh, 0);
        float *l, *g;
        size_t ng;
        run_passes(m, 2, &l, &g, &ng);
        free(l);
        free(g);
        OK(dd_gfa_hook_defaults(m, 0.05f, DD_GFA_SIN2));
        assert_same_results(m, ref, 2, "hooks set after a failure");
        dd_model_destroy(m);
    }
    dd_model_destroy(ref);
}
END_TEST

/* ======================================================================== */
/* Checkpoints, optimizers, attacks                                          */
/* ======================================================================== */

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dd-oom-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void remove_tmpdir(const char *const *names) {
    for (int i = 0; names[i]; i++) unlink(tpath(names[i]));
    rmdir(tmpdir);
}

START_TEST(test_oom_load) {
    make_tmpdir();
    dd_model *ref = construct_ok(1);
    float x[MAXB * C * H * W];
    int32_t y[MAXB];
    batch(x, y);
    OK(dd_model_forward(ref, x, MAXB, DD_TRAIN, NULL)); /* running statistics move */
    const char *f = tpath("m.st");
    OK(dd_model_save(ref, f));
    dd_model *m = NULL;
    dd__alloc_fail_after(-1);
    OK(dd_model_load(f, &m));
    long n = dd__alloc_count();
    dd_model_destroy(m);
    for (long k = 0; k < n; k++) {
        m = (dd_model *)&m;
        dd__alloc_fail_after(k);
        dd_status s = dd_model_load(f, &m);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, "dd_model_load");
        ck_assert_ptr_null(m);
    }
    OK(dd_model_load(f, &m));
    assert_same_params(m, ref, "loaded after the sweep");
    dd_model_destroy(m);
    dd_model_destroy(ref);
    static const char *const names[] = {"m.st", NULL};
    remove_tmpdir(names);
}
END_TEST

START_TEST(test_oom_optimizer_create) {
    const dd_optimizer_kind kinds[3] = {DD_OPTIM_SGD, DD_OPTIM_ADAM, DD_OPTIM_ADAMW};
    dd_model *m = construct_ok(0);
    for (int i = 0; i < 3; i++) {
        dd_optimizer_options oo;
        dd_optimizer_options_init(&oo, kinds[i]);
        dd_optimizer *opt = NULL;
        dd__alloc_fail_after(-1);
        OK(dd_optimizer_create(&opt, m, &oo));
        long n = dd__alloc_count();
        dd_optimizer_destroy(opt);
        for (long k = 0; k < n; k++) {
            opt = (dd_optimizer *)&opt;
            dd__alloc_fail_after(k);
            dd_status s = dd_optimizer_create(&opt, m, &oo);
            dd__alloc_fail_after(-1);
            ASSERT_OOM(s, k, "dd_optimizer_create");
            ck_assert_ptr_null(opt);
        }
    }
    dd_model_destroy(m);
}
END_TEST

/* Every attack kind (1 .. 20), with small budgets so the run afterwards is
 * quick: creation fails cleanly at every allocation, then succeeds and runs. */
START_TEST(test_oom_attack_create) {
    dd_model *m = construct_ok(0);
    float x[MAXB * C * H * W], adv[MAXB * C * H * W];
    int32_t y[MAXB];
    batch(x, y);
    int kinds = 0;
    for (int kind = 1; kind <= 64; kind++) {
        if (dd_attack_kind_name((dd_attack_kind)kind) == NULL) continue;
        kinds++;
        dd_attack_options ao;
        dd_attack_options_init(&ao, (dd_attack_kind)kind);
        ao.steps = 2;
        ao.queries = 4;
        ao.binary_steps = 1;
        ao.num_targets = 2; /* K = 4: APGD-T needs 4 classes */
        ao.candidates = 3;
        dd_attack *a = NULL;
        dd__alloc_fail_after(-1);
        dd_status s = dd_attack_create(&a, m, &ao);
        long n = dd__alloc_count();
        ck_assert_msg(s == DD_OK, "%s: %s", dd_attack_kind_name((dd_attack_kind)kind), dd_last_error());
        dd_attack_destroy(a);
        for (long k = 0; k < n; k++) {
            a = (dd_attack *)&a;
            dd__alloc_fail_after(k);
            s = dd_attack_create(&a, m, &ao);
            dd__alloc_fail_after(-1);
            ASSERT_OOM(s, k, dd_attack_kind_name((dd_attack_kind)kind));
            ck_assert_ptr_null(a);
        }
        OK(dd_attack_create(&a, m, &ao));
        OK(dd_attack_run(a, x, y, MAXB, adv, NULL));
        dd_attack_destroy(a);
    }
    ck_assert_int_ge(kinds, 20);
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */
/* Datasets                                                                  */
/* ======================================================================== */

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *read_source_file(const char *rel, size_t *len) {
    const char *src = getenv("DD_SOURCE_DIR");
    ck_assert_msg(src != NULL, "DD_SOURCE_DIR is not set (run through ctest)");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", src, rel);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    unsigned char *buf = malloc(1 << 20);
    ck_assert_ptr_nonnull(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* n CIFAR-10 records (label i % 10, pixels from i). */
static unsigned char *cifar_records(int n, size_t *len) {
    *len = (size_t)n * 3073;
    unsigned char *b = malloc(*len);
    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < n; i++) {
        b[(size_t)i * 3073] = (unsigned char)(i % 10);
        for (int j = 1; j < 3073; j++) b[(size_t)i * 3073 + j] = (unsigned char)((i * 31 + j * 7) & 0xff);
    }
    return b;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX images (n, 5, 4) and labels. */
static void idx_files(int n, unsigned char **img, size_t *ilen, unsigned char **lab, size_t *llen) {
    *ilen = 16 + (size_t)n * 20;
    *llen = 8 + (size_t)n;
    *img = malloc(*ilen);
    *lab = malloc(*llen);
    ck_assert(*img && *lab);
    put_be32(*img, 0x803);
    put_be32(*img + 4, (uint32_t)n);
    put_be32(*img + 8, 5);
    put_be32(*img + 12, 4);
    for (size_t j = 16; j < *ilen; j++) (*img)[j] = (unsigned char)(j * 13);
    put_be32(*lab, 0x801);
    put_be32(*lab + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) (*lab)[8 + i] = (unsigned char)(i % 4);
}

typedef struct ds_case {
    const char *what;
    int kind;      /* which constructor */
    const char *a; /* path, directory or NULL */
    const char *b;
    const void *mem, *mem2;
    size_t len, len2;
} ds_case;

static const dd_dataset *subset_parent;

static dd_status ds_open(const ds_case *c, dd_dataset **out) {
    static float fx[3 * 2 * 2 * 2];
    static uint8_t ux[3 * 2 * 2 * 2];
    static const int32_t labels[3] = {0, 1, 2};
    for (int i = 0; i < 24; i++) {
        fx[i] = (float)i / 24.0f;
        ux[i] = (uint8_t)(i * 10);
    }
    switch (c->kind) {
    case 0:
        return dd_dataset_open_cifar10_file(out, c->a);
    case 1:
        return dd_dataset_open_cifar10_memory(out, c->mem, c->len);
    case 2:
        return dd_dataset_open_cifar10(out, c->a, DD_SPLIT_TRAIN);
    case 3:
        return dd_dataset_open_idx(out, c->a, c->b);
    case 4:
        return dd_dataset_open_idx_memory(out, c->mem, c->len, c->mem2, c->len2);
    case 5:
        return dd_dataset_open_auto(out, c->a, DD_SPLIT_TRAIN);
    case 6:
        return dd_dataset_from_memory(out, fx, labels, 3, 2, 2, 2, 3);
    case 7:
        return dd_dataset_from_memory_u8(out, ux, labels, 3, 2, 2, 2, 3);
    default:
        return dd_dataset_subset(out, subset_parent, 1, 2);
    }
}

static void ds_sweep(const ds_case *c) {
    dd_dataset *ds = NULL;
    dd__alloc_fail_after(-1);
    dd_status s = ds_open(c, &ds);
    long n = dd__alloc_count();
    ck_assert_msg(s == DD_OK, "%s: %s (%s)", c->what, dd_status_string(s), dd_last_error());
    int ref_n, ref_c, ref_h, ref_w, ref_k;
    OK(dd_dataset_info(ds, &ref_n, &ref_c, &ref_h, &ref_w, &ref_k));
    dd_dataset_destroy(ds);
    ck_assert_int_gt(n, 0);
    for (long k = 0; k < n; k++) {
        ds = (dd_dataset *)&ds;
        dd__alloc_fail_after(k);
        s = ds_open(c, &ds);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, c->what);
        ck_assert_ptr_null(ds);
    }
    OK(ds_open(c, &ds));
    int nn, cc, hh, ww, kk;
    OK(dd_dataset_info(ds, &nn, &cc, &hh, &ww, &kk));
    ck_assert(nn == ref_n && cc == ref_c && hh == ref_h && ww == ref_w && kk == ref_k);

    /* a batch iterator over it: creation swept too, then one batch */
    dd_batch_iter_options io;
    dd_batch_iter_options_init(&io);
    io.num_threads = 1;
    io.hflip = 1;
    dd_batch_iter *it = NULL;
    dd__alloc_fail_after(-1);
    OK(dd_batch_iter_create(&it, ds, 2, &io));
    n = dd__alloc_count();
    dd_batch_iter_destroy(it);
    for (long k = 0; k < n; k++) {
        it = (dd_batch_iter *)&it;
        dd__alloc_fail_after(k);
        s = dd_batch_iter_create(&it, ds, 2, &io);
        dd__alloc_fail_after(-1);
        ASSERT_OOM(s, k, "dd_batch_iter_create");
        ck_assert_ptr_null(it);
    }
    OK(dd_batch_iter_create(&it, ds, 2, &io));
    float *x = malloc((size_t)2 * cc * hh * ww * sizeof *x);
    int32_t y[2];
    int got = 0;
    ck_assert_ptr_nonnull(x);
    OK(dd_batch_iter_next(it, x, y, NULL, &got));
    ck_assert_int_eq(got, nn < 2 ? nn : 2);
    free(x);
    dd_batch_iter_destroy(it);
    dd_dataset_destroy(ds);
}

START_TEST(test_oom_datasets) {
    make_tmpdir();
    size_t clen;
    unsigned char *cifar = cifar_records(3, &clen);
    write_file(tpath("one.bin"), cifar, clen);
    /* a CIFAR-10 directory: five training batches of one record each */
    char name[32];
    for (int i = 1; i <= 5; i++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", i);
        write_file(tpath(name), cifar + (size_t)(i % 3) * 3073, 3073);
    }
    write_file(tpath("test_batch.bin"), cifar, 3073);
    size_t gzlen;
    unsigned char *gz = read_source_file("tests/fuzz/corpus/cifar/two_records.bin.gz", &gzlen);
    write_file(tpath("two.bin.gz"), gz, gzlen);

    unsigned char *img, *lab;
    size_t ilen, llen;
    idx_files(5, &img, &ilen, &lab, &llen);
    char idxdir[300];
    snprintf(idxdir, sizeof idxdir, "%s/idx", tmpdir);
    ck_assert_int_eq(mkdir(idxdir, 0700), 0);
    write_file(tpath("idx/train-images-idx3-ubyte"), img, ilen);
    write_file(tpath("idx/train-labels-idx1-ubyte"), lab, llen);
    /* gzip IDX from the fuzz seeds: 2 bytes of split, images, labels */
    size_t slen;
    unsigned char *split = read_source_file("tests/fuzz/corpus/idx/both_gzip.idx", &slen);
    ck_assert_uint_ge(slen, 2);
    size_t rest = slen - 2, cut = ((size_t)split[0] | (size_t)split[1] << 8) % (rest + 1);

    char one[512], two[512], img_path[512], lab_path[512];
    snprintf(one, sizeof one, "%s", tpath("one.bin"));
    snprintf(two, sizeof two, "%s", tpath("two.bin.gz"));
    snprintf(img_path, sizeof img_path, "%s", tpath("idx/train-images-idx3-ubyte"));
    snprintf(lab_path, sizeof lab_path, "%s", tpath("idx/train-labels-idx1-ubyte"));
    const ds_case cases[] = {
        {"cifar10 file", 0, one, NULL, NULL, NULL, 0, 0},
        {"cifar10 gzip file", 0, two, NULL, NULL, NULL, 0, 0},
        {"cifar10 memory", 1, NULL, NULL, cifar, NULL, clen, 0},
        {"cifar10 gzip memory", 1, NULL, NULL, gz, NULL, gzlen, 0},
        {"cifar10 directory", 2, tmpdir, NULL, NULL, NULL, 0, 0},
        {"cifar10 auto", 5, tmpdir, NULL, NULL, NULL, 0, 0},
        {"idx files", 3, img_path, lab_path, NULL, NULL, 0, 0},
        {"idx memory", 4, NULL, NULL, img, lab, ilen, llen},
        {"idx gzip memory", 4, NULL, NULL, split + 2, split + 2 + cut, cut, rest - cut},
        {"idx auto", 5, idxdir, NULL, NULL, NULL, 0, 0},
        {"from memory", 6, NULL, NULL, NULL, NULL, 0, 0},
        {"from memory u8", 7, NULL, NULL, NULL, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) ds_sweep(&cases[i]);
    /* subsets */
    dd_dataset *parent = NULL;
    OK(dd_dataset_open_cifar10_memory(&parent, cifar, clen));
    subset_parent = parent;
    const ds_case sub = {"subset", 8, NULL, NULL, NULL, NULL, 0, 0};
    ds_sweep(&sub);
    dd_dataset_destroy(parent);

    free(cifar);
    free(gz);
    free(img);
    free(lab);
    free(split);
    unlink(tpath("idx/train-images-idx3-ubyte"));
    unlink(tpath("idx/train-labels-idx1-ubyte"));
    rmdir(idxdir);
    static const char *const names[] = {"one.bin",          "two.bin.gz",       "data_batch_1.bin",
                                        "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                                        "data_batch_5.bin", "test_batch.bin",   NULL};
    remove_tmpdir(names);
}
END_TEST

int main(void) {
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("sweeps");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_oom_construct, 0, 2);
    tcase_add_loop_test(tc, test_oom_build_retry, 0, 2);
    tcase_add_loop_test(tc, test_oom_first_passes, 0, 2);
    tcase_add_test(tc, test_oom_gfa_hooks);
    tcase_add_test(tc, test_oom_predict);
    tcase_add_test(tc, test_oom_load);
    tcase_add_test(tc, test_oom_optimizer_create);
    tcase_add_test(tc, test_oom_attack_create);
    tcase_add_test(tc, test_oom_datasets);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
