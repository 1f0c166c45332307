/* tests/check_model.c -- whole-model gradients, argument checking, states.
 *
 * 1. Gradients. Two small graphs that together hold every node type
 *    (normalize, conv with padding and stride 2, batch norm on the input and
 *    inside, relu, maxpool, avgpool, residual add on 4-D and 2-D tensors,
 *    global avgpool, flatten, linear). The library's dL/dtheta is compared
 *    (a) with the double reference's analytic gradient, per tensor, and
 *    (b) with central finite differences of the reference loss along random
 *    unit directions, h chosen by the activation-pattern rule of GFA.md;
 *    (b) also checks the reference's own backward against its forward.
 *    Both batch-norm modes, an odd batch and batch 1.
 * 2. Every public function of model.h given NULL or invalid arguments
 *    returns DD_ERR_INVALID_ARGUMENT (or the documented status) without
 *    crashing, and a rejected call changes nothing.
 * 3. States (add after build, passes before build or forward), non-finite
 *    input, and reproducible initialisation from the seed.
 * 4. Fusion: fused and node-by-node passes agree.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>
#include "ref/ref.h"

#define MAXB 4
#define K 5

static int g_fuse = 1; /* dd_model_options of the next new_model() */
static dd_conv_algo g_algo = DD_CONV_AUTO;

static dd_model *new_model_threads(int c, int h, int w, int k, uint64_t seed, int threads) {
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = threads;
    o.seed = seed;
    o.fuse_layers = g_fuse;
    o.conv_algo = g_algo;
    dd_model *m = NULL;
    dd_status st = dd_model_create(&m, c, h, w, k, &o);
    ck_assert_msg(st == DD_OK, "dd_model_create: %s", dd_last_error());
    return m;
}

static dd_model *new_model(int c, int h, int w, int k, uint64_t seed) {
    return new_model_threads(c, h, w, k, seed, 2);
}

#define ADD_OK(call) ck_assert_msg((call) == DD_OK, "%s: %s", #call, dd_last_error())

static dd_node conv(dd_model *m, dd_node in, int oc, int k, int s, int p, int bias) {
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = oc;
    co.kernel_h = co.kernel_w = k;
    co.stride_h = co.stride_w = s;
    co.pad_h = co.pad_w = p;
    co.bias = bias;
    dd_node out = -1;
    ADD_OK(dd_model_add_conv2d(m, in, &co, &out));
    return out;
}

static dd_node pool(dd_model *m, dd_node in, int is_max, int k, int s, int p) {
    dd_pool_options po;
    dd_pool_options_init(&po);
    po.kernel_h = po.kernel_w = k;
    po.stride_h = po.stride_w = s;
    po.pad_h = po.pad_w = p;
    dd_node out = -1;
    if (is_max)
        ADD_OK(dd_model_add_maxpool(m, in, &po, &out));
    else
        ADD_OK(dd_model_add_avgpool(m, in, &po, &out));
    return out;
}

static dd_node bn(dd_model *m, dd_node in) {
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    dd_node out = -1;
    ADD_OK(dd_model_add_batchnorm(m, in, &bo, &out));
    return out;
}

static dd_node relu(dd_model *m, dd_node in) {
    dd_node out = -1;
    ADD_OK(dd_model_add_relu(m, in, NULL, &out));
    return out;
}

static dd_node add(dd_model *m, dd_node a, dd_node b) {
    dd_node out = -1;
    ADD_OK(dd_model_add_add(m, a, b, NULL, &out));
    return out;
}

static dd_node linear(dd_model *m, dd_node in, int outf, int bias) {
    dd_node out = -1;
    ADD_OK(dd_model_add_linear(m, in, outf, bias, NULL, &out));
    return out;
}

static dd_node flatten(dd_model *m, dd_node in) {
    dd_node out = -1;
    ADD_OK(dd_model_add_flatten(m, in, NULL, &out));
    return out;
}

/* Graph A, input 3x12x12:
 * normalize -> conv 6 k3 s2 p1 (6x6x6) -> bn -> relu -> conv 6 k3 p1 no bias
 * -> bn -> add(., relu) -> relu -> maxpool 3/2 p1 (3x3) -> avgpool 3/1 p1
 * -> flatten -> linear 8 -> relu -> linear K. */
static dd_model *graph_a_batch(uint64_t seed, int max_batch, int threads) {
    static const float mean[3] = {0.45f, 0.5f, 0.55f}, sd[3] = {0.25f, 0.2f, 0.3f};
    dd_model *m = new_model_threads(3, 12, 12, K, seed, threads);
    dd_node t = -1;
    ADD_OK(dd_model_add_normalize(m, DD_INPUT, mean, sd, 3, "norm", &t));
    t = conv(m, t, 6, 3, 2, 1, 1);
    dd_node r1 = relu(m, bn(m, t));
    t = bn(m, conv(m, r1, 6, 3, 1, 1, 0));
    t = relu(m, add(m, t, r1));
    t = pool(m, t, 1, 3, 2, 1);
    t = pool(m, t, 0, 3, 1, 1);
    t = relu(m, linear(m, flatten(m, t), 8, 1));
    t = linear(m, t, K, 1);
    ck_assert_msg(dd_model_build(m, t, max_batch) == DD_OK, "build A: %s", dd_last_error());
    return m;
}

static dd_model *graph_a(uint64_t seed) { return graph_a_batch(seed, MAXB, 2); }

/* Graph B, input 4x8x8:
 * bn (on the input) -> conv 5 k3 p1 -> relu -> { avgpool 2/2 -> conv 7 k1 s2
 * -> global avgpool -> linear K } + { maxpool 2/2 -> flatten -> linear K }. */
static dd_model *graph_b(uint64_t seed) {
    dd_model *m = new_model(4, 8, 8, K, seed);
    dd_node r = relu(m, conv(m, bn(m, DD_INPUT), 5, 3, 1, 1, 1));
    dd_node g = -1;
    ADD_OK(dd_model_add_global_avgpool(m, conv(m, pool(m, r, 0, 2, 2, 0), 7, 1, 2, 0, 1), NULL, &g));
    dd_node z1 = linear(m, g, K, 1);
    dd_node z2 = linear(m, flatten(m, pool(m, r, 1, 2, 2, 0)), K, 0);
    dd_node z = add(m, z1, z2);
    ck_assert_msg(dd_model_build(m, z, MAXB) == DD_OK, "build B: %s", dd_last_error());
    return m;
}

/* Library gradient against the reference's analytic gradient and against
 * central differences of the reference loss along random unit directions. */
static void gradient_check(dd_model *m, dd_mode mode, int n, uint64_t seed, const char *label) {
    ref_rng g;
    ref_rng_seed(&g, seed);
    ck_assert(ref_randomize_params(m, &g) == 0);
    ref_model *r = NULL;
    ck_assert_msg(ref_model_create(&r, m) == 0, "%s: %s", label, ref_error());
    int c, h, w;
    ck_assert(dd_model_input_shape(m, &c, &h, &w) == DD_OK);
    size_t insz = (size_t)c * h * w, D = ref_trainable_count(r);
    float *x = malloc((size_t)n * insz * sizeof(float));
    double *xd = malloc((size_t)n * insz * sizeof(double));
    double *gl = malloc(D * sizeof(double)), *gr = malloc(D * sizeof(double));
    double *d = malloc(D * sizeof(double));
    int32_t lab[MAXB];
    ck_assert(x && xd && gl && gr && d);
    ref_fill_uniform_f(&g, x, (size_t)n * insz, 0.0, 1.0);
    ref_to_double(x, xd, (size_t)n * insz);
    for (int i = 0; i < n; i++) lab[i] = (int32_t)(ref_rng_uniform(&g) * K);

    dd_step_stats st;
    dd_step_stats_init(&st);
    ck_assert(dd_model_zero_grad(m) == DD_OK);
    ck_assert_msg(dd_model_forward(m, x, n, mode, NULL) == DD_OK, "%s", dd_last_error());
    ck_assert_msg(dd_model_backward(m, lab, &st) == DD_OK, "%s", dd_last_error());
    ck_assert(ref_lib_grads(m, gl) == 0);

    double L = 0.0;
    double J = ref_objective(r, xd, n, lab, mode == DD_TRAIN, NULL, &L, NULL, NULL);
    ck_assert(!isnan(J) && J == L);
    ck_assert_msg(fabs(st.loss - L) < 1e-5 * fabs(L) + 1e-7, "%s: loss %.9g vs ref %.9g", label, st.loss, L);
    ck_assert_msg(fabs(st.objective - L) < 1e-5 * fabs(L) + 1e-7, "%s: objective %.9g vs loss %.9g", label,
                  st.objective, L);
    ck_assert_int_eq(st.batch, n);
    ck_assert_int_eq(st.num_hooks, 0);

    /* (a) per tensor, against the analytic reference. */
    size_t off = 0;
    double gmax = 0.0, gnorm = 0.0;
    for (int p = 0; p < ref_num_params(r); p++)
        if (ref_param_trainable(r, p)) {
            size_t cnt = ref_param_count(r, p);
            memcpy(gr + off, ref_param_grad(r, p), cnt * sizeof(double));
            off += cnt;
        }
    for (size_t i = 0; i < D; i++) {
        if (fabs(gr[i]) > gmax) gmax = fabs(gr[i]);
        gnorm += gr[i] * gr[i];
    }
    gnorm = sqrt(gnorm);
    off = 0;
    for (int p = 0; p < ref_num_params(r); p++) {
        if (!ref_param_trainable(r, p)) continue;
        size_t cnt = ref_param_count(r, p);
        double e = 0.0, s = ref_max_abs(gr + off, cnt);
        for (size_t i = 0; i < cnt; i++) e = fmax(e, fabs(gl[off + i] - gr[off + i]));
        e /= fmax(s, 1e-2 * gmax);
        ck_assert_msg(e < 1e-4, "%s: param %d gradient rel err %.3g vs reference", label, p, e);
        off += cnt;
    }

    /* (b) finite differences along >= 5 random unit directions and the
     * normalised gradient. A random direction's derivative is typically
     * |g|/sqrt(D); the scale is floored at a tenth of that so a near-zero
     * projection does not turn rounding into a large relative error. */
    int good = 0, tries = 0;
    double floor_dir = 0.1 * gnorm / sqrt((double)D);
    while (good < 6 && tries < 12) {
        double nd = 0.0;
        for (size_t i = 0; i < D; i++) {
            d[i] = tries == 0 ? gr[i] : ref_rng_normal(&g);
            nd += d[i] * d[i];
        }
        nd = sqrt(nd);
        for (size_t i = 0; i < D; i++) d[i] /= nd;
        tries++;
        double fd = 0.0, hu = 0.0, lib = 0.0, rd = 0.0;
        int rc = ref_fd_directional(r, xd, n, lab, mode == DD_TRAIN, NULL, d, &fd, &hu);
        ck_assert_msg(rc >= 0, "%s: %s", label, ref_error());
        if (rc == 1) continue; /* every h flips a unit: try another direction */
        for (size_t i = 0; i < D; i++) {
            lib += gl[i] * d[i];
            rd += gr[i] * d[i];
        }
        double scale = fmax(fabs(fd), floor_dir);
        if (getenv("DD_TEST_VERBOSE"))
            printf("%-16s dir %d: h %.0e  FD %+.9e  ref %.2e  lib %.2e (rel err)\n", label, tries, hu, fd,
                   fabs(rd - fd) / scale, fabs(lib - fd) / scale);
        ck_assert_msg(fabs(rd - fd) / scale < 1e-6, "%s dir %d: reference backward %.12g vs FD %.12g (h %g)",
                      label, tries, rd, fd, hu);
        ck_assert_msg(fabs(lib - fd) / scale < 1e-3, "%s dir %d: library %.9g vs FD %.9g (h %g, rel %.3g)",
                      label, tries, lib, fd, hu, fabs(lib - fd) / scale);
        good++;
    }
    ck_assert_msg(good >= 5, "%s: only %d usable directions", label, good);
    free(x);
    free(xd);
    free(gl);
    free(gr);
    free(d);
    ref_model_destroy(r);
}

START_TEST(test_grad_a_train) {
    dd_model *m = graph_a(1);
    gradient_check(m, DD_TRAIN, 3, 1001, "A train n=3");
    gradient_check(m, DD_TRAIN, 1, 1002, "A train n=1");
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_grad_a_eval) {
    dd_model *m = graph_a(2);
    gradient_check(m, DD_EVAL, 3, 1003, "A eval n=3");
    gradient_check(m, DD_EVAL, 1, 1004, "A eval n=1");
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_grad_b) {
    dd_model *m = graph_b(3);
    gradient_check(m, DD_TRAIN, 3, 1005, "B train n=3");
    gradient_check(m, DD_EVAL, 4, 1006, "B eval n=4");
    gradient_check(m, DD_EVAL, 1, 1007, "B eval n=1");
    dd_model_destroy(m);
}
END_TEST

/* Gradients accumulate across backward calls until zero_grad. */
START_TEST(test_grad_accumulates) {
    dd_model *m = graph_b(4);
    ref_rng g;
    ref_rng_seed(&g, 1100);
    float x[3 * 256];
    int32_t lab[3] = {0, 3, 4};
    ref_fill_uniform_f(&g, x, 3 * 256, 0.0, 1.0);
    int np = 0;
    ck_assert(dd_model_num_params(m, &np) == DD_OK);
    ref_model *r = NULL;
    ck_assert(ref_model_create(&r, m) == 0);
    size_t D = ref_trainable_count(r);
    double *g1 = malloc(D * sizeof(double)), *g2 = malloc(D * sizeof(double));
    ck_assert(dd_model_zero_grad(m) == DD_OK);
    ck_assert(dd_model_forward(m, x, 3, DD_EVAL, NULL) == DD_OK);
    ck_assert(dd_model_backward(m, lab, NULL) == DD_OK);
    ck_assert(ref_lib_grads(m, g1) == 0);
    ck_assert(dd_model_forward(m, x, 3, DD_EVAL, NULL) == DD_OK);
    ck_assert(dd_model_backward(m, lab, NULL) == DD_OK);
    ck_assert(ref_lib_grads(m, g2) == 0);
    for (size_t i = 0; i < D; i++)
        ck_assert_msg(fabs(g2[i] - 2.0 * g1[i]) <= 1e-6 * fabs(g1[i]) + 1e-12,
                      "grad %zu: %g after two backward passes, %g after one", i, g2[i], g1[i]);
    ck_assert(dd_model_zero_grad(m) == DD_OK);
    ck_assert(ref_lib_grads(m, g2) == 0);
    for (size_t i = 0; i < D; i++) ck_assert(g2[i] == 0.0);
    free(g1);
    free(g2);
    ref_model_destroy(r);
    dd_model_destroy(m);
}
END_TEST

/* ---- invalid arguments --------------------------------------------------- */

#define EXPECT(call, status)                                                                \
    do {                                                                                    \
        dd_status st_ = (call);                                                             \
        ck_assert_msg(st_ == (status), "%s returned %d (%s), expected %d", #call, (int)st_, \
                      dd_status_string(st_), (int)(status));                                \
    } while (0)

#define EXPECT2(call, s1, s2)                                                             \
    do {                                                                                  \
        dd_status st_ = (call);                                                           \
        ck_assert_msg(st_ == (s1) || st_ == (s2), "%s returned %d (%s)", #call, (int)st_, \
                      dd_status_string(st_));                                             \
    } while (0)

#define INV DD_ERR_INVALID_ARGUMENT

START_TEST(test_invalid_create) {
    dd_model *m = (dd_model *)&m;
    EXPECT(dd_model_create(NULL, 3, 8, 8, 10, NULL), INV);
    EXPECT(dd_model_create(&m, 0, 8, 8, 10, NULL), INV);
    ck_assert_ptr_null(m);
    m = (dd_model *)&m;
    EXPECT(dd_model_create(&m, 3, -1, 8, 10, NULL), INV);
    ck_assert_ptr_null(m);
    EXPECT(dd_model_create(&m, 3, 8, 0, 10, NULL), INV);
    EXPECT(dd_model_create(&m, 3, 8, 8, 0, NULL), INV);
    EXPECT(dd_model_create(&m, 3, 8, 8, -2, NULL), INV);
    EXPECT(dd_model_create(&m, 1 << 20, 1 << 20, 1 << 20, 10, NULL), INV);
    ck_assert_ptr_null(m);
    ck_assert_str_ne(dd_last_error(), "");
    /* opts NULL means defaults */
    EXPECT(dd_model_create(&m, 3, 8, 8, 10, NULL), DD_OK);
    ck_assert_ptr_nonnull(m);
    dd_model_destroy(m);
    dd_model_destroy(NULL);
    dd_model_options_init(NULL);
    dd_conv2d_options_init(NULL);
    dd_pool_options_init(NULL);
    dd_batchnorm_options_init(NULL);
    dd_step_stats_init(NULL);
    ck_assert_ptr_nonnull(dd_status_string((dd_status)999));
    ck_assert_ptr_nonnull(dd_status_string((dd_status)-1));
    ck_assert_ptr_nonnull(dd_status_string(DD_ERR_NUMERIC));
    ck_assert_ptr_nonnull(dd_last_error());
}
END_TEST

START_TEST(test_invalid_add) {
    static const float mean[3] = {0.5f, 0.5f, 0.5f}, sd[3] = {0.2f, 0.2f, 0.2f};
    static const float bad_sd[3] = {0.2f, 0.0f, 0.2f}, neg_sd[3] = {0.2f, -1.0f, 0.2f};
    float nan_sd[3] = {0.2f, 0.2f, 0.2f};
    nan_sd[2] = nanf("");
    dd_model *m = new_model(3, 8, 8, K, 5);
    dd_node o = -1, f = -1, lin = -1;
    /* normalize */
    EXPECT(dd_model_add_normalize(NULL, DD_INPUT, mean, sd, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, -1, mean, sd, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, 7, mean, sd, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, NULL, sd, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, NULL, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, sd, 2, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, bad_sd, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, neg_sd, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, nan_sd, 3, NULL, &o), INV);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, sd, 3, NULL, NULL), INV);
    char longname[100];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, sd, 3, longname, &o), INV);
    /* conv2d */
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 4;
    EXPECT(dd_model_add_conv2d(NULL, DD_INPUT, &co, &o), INV);
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, NULL, &o), INV);
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, NULL), INV);
    EXPECT(dd_model_add_conv2d(m, 42, &co, &o), INV);
    co.out_channels = 0;
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, &o), INV);
    co.out_channels = 4;
    co.kernel_h = 0;
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, &o), INV);
    co.kernel_h = 3;
    co.stride_w = 0;
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, &o), INV);
    co.stride_w = 1;
    co.pad_h = -1;
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, &o), INV);
    co.pad_h = 0;
    co.kernel_h = co.kernel_w = 9; /* larger than the 8x8 input */
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, &o), INV);
    co.kernel_h = co.kernel_w = 3;
    /* pooling */
    dd_pool_options po;
    dd_pool_options_init(&po);
    EXPECT(dd_model_add_maxpool(NULL, DD_INPUT, &po, &o), INV);
    EXPECT(dd_model_add_avgpool(NULL, DD_INPUT, &po, &o), INV);
    EXPECT(dd_model_add_maxpool(m, DD_INPUT, &po, NULL), INV);
    EXPECT(dd_model_add_avgpool(m, DD_INPUT, &po, NULL), INV);
    EXPECT(dd_model_add_maxpool(m, -3, &po, &o), INV);
    po.kernel_w = 0;
    EXPECT(dd_model_add_maxpool(m, DD_INPUT, &po, &o), INV);
    EXPECT(dd_model_add_avgpool(m, DD_INPUT, &po, &o), INV);
    po.kernel_w = 2;
    po.stride_h = 0;
    EXPECT(dd_model_add_maxpool(m, DD_INPUT, &po, &o), INV);
    EXPECT(dd_model_add_avgpool(m, DD_INPUT, &po, &o), INV);
    po.stride_h = 2;
    po.pad_w = -1;
    EXPECT(dd_model_add_avgpool(m, DD_INPUT, &po, &o), INV);
    po.pad_w = 0;
    po.kernel_h = 11;
    EXPECT(dd_model_add_maxpool(m, DD_INPUT, &po, &o), INV);
    po.kernel_h = 2;
    /* NULL pool options: defaults or refused, never a crash */
    EXPECT2(dd_model_add_maxpool(m, DD_INPUT, NULL, &o), DD_OK, INV);
    /* batchnorm */
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    EXPECT(dd_model_add_batchnorm(NULL, DD_INPUT, &bo, &o), INV);
    EXPECT(dd_model_add_batchnorm(m, DD_INPUT, &bo, NULL), INV);
    EXPECT(dd_model_add_batchnorm(m, 99, &bo, &o), INV);
    bo.eps = 0.0f;
    EXPECT(dd_model_add_batchnorm(m, DD_INPUT, &bo, &o), INV);
    bo.eps = -1e-5f;
    EXPECT(dd_model_add_batchnorm(m, DD_INPUT, &bo, &o), INV);
    bo.eps = nanf("");
    EXPECT(dd_model_add_batchnorm(m, DD_INPUT, &bo, &o), INV);
    bo.eps = 1e-5f;
    bo.momentum = -0.1f;
    EXPECT(dd_model_add_batchnorm(m, DD_INPUT, &bo, &o), INV);
    bo.momentum = 1.5f;
    EXPECT(dd_model_add_batchnorm(m, DD_INPUT, &bo, &o), INV);
    bo.momentum = 0.1f;
    EXPECT2(dd_model_add_batchnorm(m, DD_INPUT, NULL, &o), DD_OK, INV);
    /* relu, flatten, global avgpool, linear, add */
    EXPECT(dd_model_add_relu(NULL, DD_INPUT, NULL, &o), INV);
    EXPECT(dd_model_add_relu(m, DD_INPUT, NULL, NULL), INV);
    EXPECT(dd_model_add_relu(m, 1000, NULL, &o), INV);
    EXPECT(dd_model_add_flatten(NULL, DD_INPUT, NULL, &o), INV);
    EXPECT(dd_model_add_flatten(m, DD_INPUT, NULL, NULL), INV);
    EXPECT(dd_model_add_flatten(m, -1, NULL, &o), INV);
    EXPECT(dd_model_add_global_avgpool(NULL, DD_INPUT, NULL, &o), INV);
    EXPECT(dd_model_add_global_avgpool(m, DD_INPUT, NULL, NULL), INV);
    EXPECT(dd_model_add_global_avgpool(m, 500, NULL, &o), INV);
    EXPECT(dd_model_add_flatten(m, DD_INPUT, NULL, &f), DD_OK);
    /* 4-D-only nodes refuse the 2-D flatten output */
    EXPECT(dd_model_add_conv2d(m, f, &co, &o), INV);
    EXPECT(dd_model_add_maxpool(m, f, &po, &o), INV);
    EXPECT(dd_model_add_avgpool(m, f, &po, &o), INV);
    EXPECT(dd_model_add_global_avgpool(m, f, NULL, &o), INV);
    EXPECT(dd_model_add_linear(NULL, f, 3, 1, NULL, &o), INV);
    EXPECT(dd_model_add_linear(m, f, 3, 1, NULL, NULL), INV);
    EXPECT(dd_model_add_linear(m, f, 0, 1, NULL, &o), INV);
    EXPECT(dd_model_add_linear(m, f, -4, 1, NULL, &o), INV);
    EXPECT(dd_model_add_linear(m, 77, 3, 1, NULL, &o), INV);
    EXPECT(dd_model_add_add(NULL, DD_INPUT, DD_INPUT, NULL, &o), INV);
    EXPECT(dd_model_add_add(m, DD_INPUT, DD_INPUT, NULL, NULL), INV);
    EXPECT(dd_model_add_add(m, DD_INPUT, -1, NULL, &o), INV);
    EXPECT(dd_model_add_add(m, 123, DD_INPUT, NULL, &o), INV);
    EXPECT(dd_model_add_add(m, DD_INPUT, f, NULL, &o), INV); /* shapes differ */
    dd_node c4 = -1;
    co.out_channels = 4;
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, &c4), DD_OK); /* 4x6x6 */
    EXPECT(dd_model_add_add(m, DD_INPUT, c4, NULL, &o), INV);
    /* build */
    EXPECT(dd_model_add_linear(m, f, K, 1, NULL, &lin), DD_OK);
    EXPECT(dd_model_build(NULL, lin, 2), INV);
    EXPECT(dd_model_build(m, -1, 2), INV);
    EXPECT(dd_model_build(m, 1000, 2), INV);
    EXPECT(dd_model_build(m, c4, 2), INV); /* not 2-D */
    EXPECT(dd_model_build(m, f, 2), INV);  /* 2-D, but 192 features, not K */
    EXPECT(dd_model_build(m, lin, 0), INV);
    EXPECT(dd_model_build(m, lin, -5), INV);
    /* the unbuilt model refuses passes */
    float x[2 * 192] = {0}, z[2 * K] = {0}, dx[2 * 192];
    int32_t lab[2] = {0, 1};
    int np = 0;
    EXPECT(dd_model_forward(m, x, 1, DD_EVAL, z), DD_ERR_STATE);
    EXPECT(dd_model_backward(m, lab, NULL), DD_ERR_STATE);
    EXPECT(dd_model_input_grad(m, z, dx), DD_ERR_STATE);
    EXPECT(dd_model_num_params(m, &np), DD_ERR_STATE);
    EXPECT(dd_model_build(m, lin, 2), DD_OK);
    /* built: no more adding, no second build */
    EXPECT(dd_model_build(m, lin, 2), DD_ERR_STATE);
    EXPECT(dd_model_add_relu(m, DD_INPUT, NULL, &o), DD_ERR_STATE);
    EXPECT(dd_model_add_conv2d(m, DD_INPUT, &co, &o), DD_ERR_STATE);
    EXPECT(dd_model_add_linear(m, f, 3, 1, NULL, &o), DD_ERR_STATE);
    EXPECT(dd_model_add_normalize(m, DD_INPUT, mean, sd, 3, NULL, &o), DD_ERR_STATE);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_invalid_passes) {
    dd_model *m = graph_b(6); /* input 4x8x8, K classes, max batch 4 */
    size_t insz = 4 * 8 * 8;
    float x[(MAXB + 1) * 256], z[MAXB * K], dz[MAXB * K], dx[MAXB * 256];
    int32_t lab[MAXB] = {0, 1, 2, 3};
    ref_rng g;
    ref_rng_seed(&g, 1200);
    ref_fill_uniform_f(&g, x, (MAXB + 1) * insz, 0.0, 1.0);
    ref_fill_normal_f(&g, dz, MAXB * K, 1.0);
    int np = 0;
    EXPECT(dd_model_num_params(m, &np), DD_OK);
    ck_assert_int_gt(np, 0);
    /* before any forward pass */
    EXPECT(dd_model_backward(m, lab, NULL), DD_ERR_STATE);
    EXPECT(dd_model_input_grad(m, dz, dx), DD_ERR_STATE);
    EXPECT2(dd_model_get_logits(m, z, MAXB * K), DD_ERR_STATE, INV);
    /* forward */
    EXPECT(dd_model_forward(NULL, x, 2, DD_EVAL, z), INV);
    EXPECT(dd_model_forward(m, NULL, 2, DD_EVAL, z), INV);
    EXPECT(dd_model_forward(m, x, 0, DD_EVAL, z), INV);
    EXPECT(dd_model_forward(m, x, -1, DD_EVAL, z), INV);
    EXPECT(dd_model_forward(m, x, MAXB + 1, DD_EVAL, z), INV);
    EXPECT(dd_model_forward(m, x, 2, (dd_mode)7, z), INV);
    /* a valid forward; logits optional */
    EXPECT(dd_model_forward(m, x, 3, DD_EVAL, NULL), DD_OK);
    EXPECT(dd_model_forward(m, x, 3, DD_EVAL, z), DD_OK);
    float z2[MAXB * K];
    EXPECT(dd_model_get_logits(NULL, z2, 3 * K), INV);
    EXPECT(dd_model_get_logits(m, NULL, 3 * K), INV);
    EXPECT(dd_model_get_logits(m, z2, 3 * K - 1), INV);
    EXPECT(dd_model_get_logits(m, z2, 3 * K), DD_OK);
    ck_assert(memcmp(z, z2, 3 * K * sizeof(float)) == 0);
    /* input_grad */
    EXPECT(dd_model_input_grad(NULL, dz, dx), INV);
    EXPECT(dd_model_input_grad(m, NULL, dx), INV);
    EXPECT(dd_model_input_grad(m, dz, NULL), INV);
    /* backward: labels out of range are refused and nothing accumulates */
    EXPECT(dd_model_zero_grad(NULL), INV);
    EXPECT(dd_model_zero_grad(m), DD_OK);
    int32_t bad1[3] = {0, K, 1}, bad2[3] = {-1, 0, 1};
    EXPECT(dd_model_backward(NULL, lab, NULL), INV);
    EXPECT(dd_model_backward(m, NULL, NULL), INV);
    EXPECT(dd_model_backward(m, bad1, NULL), INV);
    EXPECT(dd_model_backward(m, bad2, NULL), INV);
    ref_model *r = NULL;
    ck_assert(ref_model_create(&r, m) == 0);
    size_t D = ref_trainable_count(r);
    double *gl = malloc(D * sizeof(double));
    ck_assert(ref_lib_grads(m, gl) == 0);
    for (size_t i = 0; i < D; i++) ck_assert_msg(gl[i] == 0.0, "rejected backward accumulated");
    /* stats */
    dd_step_stats st;
    dd_step_stats_init(&st);
    ck_assert_uint_eq(st.struct_size, sizeof st);
    EXPECT(dd_model_backward(m, lab, &st), DD_OK);
    ck_assert_int_eq(st.batch, 3);
    ck_assert(st.correct >= 0 && st.correct <= 3);
    /* NaN / Inf input: DD_ERR_NUMERIC, and the running statistics untouched */
    int nrun = 0;
    float before[64], after[64];
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        EXPECT(dd_model_param_info(m, p, &pi), DD_OK);
        if (pi.trainable) continue;
        ck_assert(pi.count <= 4);
        EXPECT(dd_model_param_read(m, p, before + 4 * nrun, pi.count), DD_OK);
        nrun++;
    }
    ck_assert_int_eq(nrun, 2);
    float saved = x[17];
    x[17] = nanf("");
    EXPECT(dd_model_forward(m, x, 2, DD_TRAIN, z), DD_ERR_NUMERIC);
    x[17] = INFINITY;
    EXPECT(dd_model_forward(m, x, 2, DD_TRAIN, z), DD_ERR_NUMERIC);
    x[17] = -INFINITY;
    EXPECT(dd_model_forward(m, x, 2, DD_EVAL, z), DD_ERR_NUMERIC);
    x[17] = saved;
    nrun = 0;
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        EXPECT(dd_model_param_info(m, p, &pi), DD_OK);
        if (pi.trainable) continue;
        EXPECT(dd_model_param_read(m, p, after + 4 * nrun, pi.count), DD_OK);
        ck_assert_msg(memcmp(before + 4 * nrun, after + 4 * nrun, pi.count * sizeof(float)) == 0,
                      "a refused forward changed running statistics");
        nrun++;
    }
    free(gl);
    ref_model_destroy(r);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_invalid_introspection) {
    dd_model *m = graph_b(7);
    int v = -1, c = 0, h = 0, w = 0;
    EXPECT(dd_model_num_nodes(NULL, &v), INV);
    EXPECT(dd_model_num_nodes(m, NULL), INV);
    EXPECT(dd_model_num_nodes(m, &v), DD_OK);
    int nn = v;
    ck_assert_int_gt(nn, 5);
    dd_node_info ni;
    memset(&ni, 0, sizeof ni);
    EXPECT(dd_model_node_info(NULL, 0, &ni), INV);
    EXPECT(dd_model_node_info(m, -1, &ni), INV);
    EXPECT(dd_model_node_info(m, nn, &ni), INV);
    EXPECT(dd_model_node_info(m, 0, NULL), INV);
    EXPECT(dd_model_node_info(m, 0, &ni), DD_OK);
    ck_assert_int_eq(ni.type, DD_NODE_INPUT);
    ck_assert_int_eq(ni.channels, 4);
    ck_assert_int_eq(ni.ndims, 4);
    EXPECT(dd_model_node_info(m, 1, &ni), DD_OK); /* the input batch norm */
    ck_assert_int_eq(ni.type, DD_NODE_BATCHNORM);
    ck_assert_float_eq_tol(ni.eps, 1e-5f, 1e-12f);
    ck_assert_float_eq_tol(ni.momentum, 0.1f, 1e-9f);
    EXPECT(dd_model_num_classes(NULL, &v), INV);
    EXPECT(dd_model_num_classes(m, NULL), INV);
    EXPECT(dd_model_num_classes(m, &v), DD_OK);
    ck_assert_int_eq(v, K);
    EXPECT(dd_model_input_shape(NULL, &c, &h, &w), INV);
    EXPECT2(dd_model_input_shape(m, NULL, NULL, NULL), DD_OK, INV);
    EXPECT(dd_model_input_shape(m, &c, &h, &w), DD_OK);
    ck_assert(c == 4 && h == 8 && w == 8);
    EXPECT(dd_model_max_batch(NULL, &v), INV);
    EXPECT(dd_model_max_batch(m, NULL), INV);
    EXPECT(dd_model_max_batch(m, &v), DD_OK);
    ck_assert_int_eq(v, MAXB);
    int np = 0;
    EXPECT(dd_model_num_params(NULL, &np), INV);
    EXPECT(dd_model_num_params(m, NULL), INV);
    EXPECT(dd_model_num_params(m, &np), DD_OK);
    dd_param_info pi;
    memset(&pi, 0, sizeof pi);
    EXPECT(dd_model_param_info(NULL, 0, &pi), INV);
    EXPECT(dd_model_param_info(m, -1, &pi), INV);
    EXPECT(dd_model_param_info(m, np, &pi), INV);
    EXPECT(dd_model_param_info(m, 0, NULL), INV);
    /* find a running statistic and a weight */
    int run = -1, wt = -1;
    size_t wcount = 0;
    for (int p = 0; p < np; p++) {
        EXPECT(dd_model_param_info(m, p, &pi), DD_OK);
        ck_assert_ptr_nonnull(pi.name);
        ck_assert(pi.count > 0);
        if (!pi.trainable && run < 0) run = p;
        if (pi.trainable && pi.ndims == 4 && wt < 0) {
            wt = p;
            wcount = pi.count;
        }
    }
    ck_assert(run >= 0 && wt >= 0);
    float *buf = malloc((wcount + 1) * sizeof(float)), *buf2 = malloc((wcount + 1) * sizeof(float));
    EXPECT(dd_model_param_read(NULL, wt, buf, wcount), INV);
    EXPECT(dd_model_param_read(m, -1, buf, wcount), INV);
    EXPECT(dd_model_param_read(m, np, buf, wcount), INV);
    EXPECT(dd_model_param_read(m, wt, NULL, wcount), INV);
    EXPECT(dd_model_param_read(m, wt, buf, wcount - 1), INV);
    EXPECT(dd_model_param_read(m, wt, buf, wcount + 1), INV);
    EXPECT(dd_model_param_read(m, wt, buf, wcount), DD_OK);
    EXPECT(dd_model_param_write(NULL, wt, buf, wcount), INV);
    EXPECT(dd_model_param_write(m, np, buf, wcount), INV);
    EXPECT(dd_model_param_write(m, wt, NULL, wcount), INV);
    EXPECT(dd_model_param_write(m, wt, buf, wcount - 1), INV);
    memcpy(buf2, buf, wcount * sizeof(float));
    buf2[3] = nanf("");
    EXPECT2(dd_model_param_write(m, wt, buf2, wcount), INV, DD_ERR_NUMERIC);
    buf2[3] = INFINITY;
    EXPECT2(dd_model_param_write(m, wt, buf2, wcount), INV, DD_ERR_NUMERIC);
    EXPECT(dd_model_param_read(m, wt, buf2, wcount), DD_OK);
    ck_assert_msg(memcmp(buf, buf2, wcount * sizeof(float)) == 0, "a refused write changed the weight");
    EXPECT(dd_model_grad_read(NULL, wt, buf, wcount), INV);
    EXPECT(dd_model_grad_read(m, -1, buf, wcount), INV);
    EXPECT(dd_model_grad_read(m, wt, NULL, wcount), INV);
    EXPECT(dd_model_grad_read(m, wt, buf, wcount + 1), INV);
    /* A batch-norm buffer has no gradient: refused, or all zeros. */
    for (int i = 0; i < 4; i++) buf[i] = 1.0f;
    dd_status gs = dd_model_grad_read(m, run, buf, 4);
    ck_assert_msg(gs == INV || gs == DD_OK, "grad_read of a buffer: %d", (int)gs);
    if (gs == DD_OK)
        for (int i = 0; i < 4; i++) ck_assert_float_eq(buf[i], 0.0f);
    EXPECT(dd_model_grad_read(m, wt, buf, wcount), DD_OK);
    size_t bytes = 0;
    EXPECT(dd_model_memory_size(NULL, &bytes), INV);
    EXPECT(dd_model_memory_size(m, NULL), INV);
    EXPECT(dd_model_memory_size(m, &bytes), DD_OK);
    ck_assert_uint_gt(bytes, wcount * sizeof(float));
    free(buf);
    free(buf2);
    dd_model_destroy(m);
}
END_TEST

/* Names: "<name>.weight" for named nodes, distinct names for every
 * parameter, and the batch-norm buffers flagged non-trainable. */
START_TEST(test_param_names) {
    dd_model *m = new_model(3, 6, 6, K, 8);
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 4;
    co.name = "conv1";
    dd_node c1 = -1, b1 = -1, f = -1, z = -1;
    ADD_OK(dd_model_add_conv2d(m, DD_INPUT, &co, &c1));
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    bo.name = "bn1";
    ADD_OK(dd_model_add_batchnorm(m, c1, &bo, &b1));
    ADD_OK(dd_model_add_flatten(m, b1, NULL, &f));
    ADD_OK(dd_model_add_linear(m, f, K, 1, "fc", &z));
    ADD_OK(dd_model_build(m, z, 2));
    static const char *want[] = {"conv1.weight",     "conv1.bias",      "bn1.weight", "bn1.bias",
                                 "bn1.running_mean", "bn1.running_var", "fc.weight",  "fc.bias"};
    static const int trainable[] = {1, 1, 1, 1, 0, 0, 1, 1};
    int np = 0;
    EXPECT(dd_model_num_params(m, &np), DD_OK);
    ck_assert_int_eq(np, 8);
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        EXPECT(dd_model_param_info(m, p, &pi), DD_OK);
        ck_assert_str_eq(pi.name, want[p]);
        ck_assert_int_eq(pi.trainable, trainable[p]);
    }
    dd_param_info pi;
    memset(&pi, 0, sizeof pi);
    EXPECT(dd_model_param_info(m, 0, &pi), DD_OK);
    ck_assert(pi.ndims == 4 && pi.dims[0] == 4 && pi.dims[1] == 3 && pi.dims[2] == 3 && pi.dims[3] == 3);
    EXPECT(dd_model_param_info(m, 6, &pi), DD_OK);
    ck_assert(pi.ndims == 2 && pi.dims[0] == K && pi.dims[1] == 64);
    /* fresh batch norm: gamma 1, beta 0, running mean 0, running var 1 */
    float v[4];
    float expect[4][4] = {{1, 1, 1, 1}, {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 1, 1, 1}};
    for (int p = 2; p < 6; p++) {
        EXPECT(dd_model_param_read(m, p, v, 4), DD_OK);
        for (int i = 0; i < 4; i++) ck_assert_float_eq(v[i], expect[p - 2][i]);
    }
    dd_model_destroy(m);
}
END_TEST

/* ---- reproducibility ----------------------------------------------------- */

static int params_equal(dd_model *a, dd_model *b) {
    int na = 0, nb = 0, same = 1;
    ck_assert(dd_model_num_params(a, &na) == DD_OK && dd_model_num_params(b, &nb) == DD_OK);
    ck_assert_int_eq(na, nb);
    for (int p = 0; p < na; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        ck_assert(dd_model_param_info(a, p, &pi) == DD_OK);
        float *va = malloc(pi.count * sizeof(float)), *vb = malloc(pi.count * sizeof(float));
        ck_assert(dd_model_param_read(a, p, va, pi.count) == DD_OK);
        ck_assert(dd_model_param_read(b, p, vb, pi.count) == DD_OK);
        if (pi.trainable && pi.ndims >= 2) {
            /* He initialisation: weights are not all equal */
            int varied = 0;
            for (size_t i = 1; i < pi.count; i++) varied |= va[i] != va[0];
            ck_assert_msg(varied, "param %s is constant", pi.name);
        }
        same &= memcmp(va, vb, pi.count * sizeof(float)) == 0;
        free(va);
        free(vb);
    }
    return same;
}

START_TEST(test_seed) {
    dd_model *a = graph_a(42), *b = graph_a(42), *c = graph_a(43);
    ck_assert_msg(params_equal(a, b), "same seed and threads gave different parameters");
    ck_assert_msg(!params_equal(a, c), "different seeds gave identical parameters");
    /* same seed: bitwise identical logits and gradients for the same batch */
    float x[3 * 432], za[3 * K], zb[3 * K];
    int32_t lab[3] = {1, 2, 0};
    ref_rng g;
    ref_rng_seed(&g, 1300);
    ref_fill_uniform_f(&g, x, 3 * 432, 0.0, 1.0);
    EXPECT(dd_model_forward(a, x, 3, DD_TRAIN, za), DD_OK);
    EXPECT(dd_model_forward(b, x, 3, DD_TRAIN, zb), DD_OK);
    ck_assert(memcmp(za, zb, sizeof za) == 0);
    EXPECT(dd_model_zero_grad(a), DD_OK);
    EXPECT(dd_model_zero_grad(b), DD_OK);
    EXPECT(dd_model_backward(a, lab, NULL), DD_OK);
    EXPECT(dd_model_backward(b, lab, NULL), DD_OK);
    ref_model *r = NULL;
    ck_assert(ref_model_create(&r, a) == 0);
    size_t D = ref_trainable_count(r);
    double *ga = malloc(D * sizeof(double)), *gb = malloc(D * sizeof(double));
    ck_assert(ref_lib_grads(a, ga) == 0 && ref_lib_grads(b, gb) == 0);
    ck_assert_msg(memcmp(ga, gb, D * sizeof(double)) == 0, "same model, same batch, different gradients");
    free(ga);
    free(gb);
    ref_model_destroy(r);
    dd_model_destroy(a);
    dd_model_destroy(b);
    dd_model_destroy(c);
}
END_TEST

/* ---- 4. fusion ------------------------------------------------------------
 * Graph A holds every chain the library fuses: in eval passes conv + bn +
 * relu, conv + bn + add + relu and linear + relu; in training passes bn +
 * relu, add + relu and linear + relu. A fused model and a node-by-node one
 * (dd_model_options.fuse_layers = 0) with the same parameters agree in
 * logits, input gradients, parameter gradients (in eval mode through the
 * unfused recompute the folded batch norm needs) and running statistics.
 * The tolerance is float rounding: folding changes the order of operations
 * (relative 1e-5). The debug log must show the fused kernels, so the test
 * cannot pass by not fusing. Under DD_CONV_WINOGRAD the residual add is a
 * sum post-op (Winograd has no binary post-op), under AUTO a binary one. */
static char g_log[8192];
static void log_fn(dd_log_level level, const char *msg, void *user) {
    (void)level;
    (void)user;
    int wanted = strstr(msg, "fused forward") || strstr(msg, "folded in");
    if (wanted && strlen(g_log) + strlen(msg) + 2 < sizeof g_log) {
        strcat(g_log, msg);
        strcat(g_log, "\n");
    }
}

/* 1 if log holds one of the '|'-separated alternatives of want. */
static int log_has(const char *log, const char *want) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", want);
    for (char *tok = strtok(buf, "|"); tok; tok = strtok(NULL, "|"))
        if (strstr(log, tok)) return 1;
    return 0;
}

static double rel_diff(const float *a, const float *b, size_t n) {
    double e = 0.0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return e / s;
}

static void all_params(dd_model *m, float *out, size_t cap, size_t *total) {
    int np = 0;
    ck_assert(dd_model_num_params(m, &np) == DD_OK);
    size_t off = 0;
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        ck_assert(dd_model_param_info(m, p, &pi) == DD_OK);
        ck_assert(off + pi.count <= cap);
        ck_assert(dd_model_param_read(m, p, out + off, pi.count) == DD_OK);
        off += pi.count;
    }
    *total = off;
}

static void fusion_case(dd_conv_algo algo, dd_mode mode, const char *expect1, const char *expect2) {
    g_algo = algo;
    g_fuse = 1;
    dd_model *f = graph_a(7);
    g_fuse = 0;
    dd_model *u = graph_a(7);
    g_fuse = 1;
    g_algo = DD_CONV_AUTO;
    ref_rng g;
    ref_rng_seed(&g, 77);
    ck_assert(ref_randomize_params(f, &g) == 0);
    ref_rng_seed(&g, 77);
    ck_assert(ref_randomize_params(u, &g) == 0);
    enum { N = 3, IN = 432, P = 4096 };
    float x[N * IN], zf[N * K], zu[N * K], dl[N * K], gf[N * IN], gu[N * IN];
    static float pf[P], pu[P];
    int32_t lab[N] = {4, 0, 2};
    ref_fill_uniform_f(&g, x, N * IN, 0.0, 1.0);
    ref_fill_uniform_f(&g, dl, N * K, -1.0, 1.0);
    g_log[0] = 0;
    dd_set_log_callback(log_fn, NULL, DD_LOG_DEBUG);
    ck_assert_msg(dd_model_forward(f, x, N, mode, zf) == DD_OK, "%s", dd_last_error());
    dd_set_log_callback(NULL, NULL, DD_LOG_ERROR);
    if (getenv("DD_TEST_VERBOSE")) printf("%s", g_log);
    ck_assert_msg(log_has(g_log, expect1) && log_has(g_log, expect2), "fused kernels missing:\n%s", g_log);
    ck_assert(dd_model_forward(u, x, N, mode, zu) == DD_OK);
    ck_assert_msg(rel_diff(zf, zu, N * K) < 1e-5, "logits differ: %.3g", rel_diff(zf, zu, N * K));
    g_log[0] = 0;
    dd_set_log_callback(log_fn, NULL, DD_LOG_DEBUG);
    ck_assert(dd_model_input_grad(f, dl, gf) == DD_OK);
    dd_set_log_callback(NULL, NULL, DD_LOG_ERROR);
    /* eval: the convolutions before batch norms run backward-data with the
     * slope folded in, the batch norms' backwards skipped */
    ck_assert_msg(mode != DD_EVAL || strstr(g_log, "folded in"), "no folded backward-data:\n%s", g_log);
    ck_assert(dd_model_input_grad(u, dl, gu) == DD_OK);
    ck_assert_msg(rel_diff(gf, gu, N * IN) < 1e-5, "input gradients differ: %.3g", rel_diff(gf, gu, N * IN));
    size_t nf, nu;
    all_params(f, pf, P, &nf);
    all_params(u, pu, P, &nu);
    ck_assert(nf == nu);
    ck_assert_msg(rel_diff(pf, pu, nf) < 1e-5, "parameters or running statistics differ");
    ck_assert(dd_model_zero_grad(f) == DD_OK && dd_model_zero_grad(u) == DD_OK);
    ck_assert_msg(dd_model_backward(f, lab, NULL) == DD_OK, "%s", dd_last_error());
    ck_assert(dd_model_backward(u, lab, NULL) == DD_OK);
    ref_model *r = NULL;
    ck_assert(ref_model_create(&r, f) == 0);
    size_t D = ref_trainable_count(r);
    double *a = malloc(D * sizeof(double)), *b = malloc(D * sizeof(double));
    ck_assert(a && b && ref_lib_grads(f, a) == 0 && ref_lib_grads(u, b) == 0);
    double e = 0.0, sc = 1e-30;
    for (size_t i = 0; i < D; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        sc = fmax(sc, fabs(b[i]));
    }
    ck_assert_msg(e / sc < 1e-5, "parameter gradients differ: %.3g", e / sc);
    free(a);
    free(b);
    ref_model_destroy(r);
    dd_model_destroy(f);
    dd_model_destroy(u);
}

/* dd_model_predict against the eval forward: batches split into chunks
 * over the threads' model copies (n >= 16 with 2 threads; a ragged last
 * chunk), the ordinary forward below that and with one thread; parameters
 * and running statistics that change after the copies were made; no state
 * for backward passes afterwards; bad input. */
START_TEST(test_predict) {
    enum { NB = 40, IN = 432 };
    static float x[NB * IN], zf[NB * K], zp[NB * K], zq[NB * K];
    ref_rng g;
    ref_rng_seed(&g, 91);
    ref_fill_uniform_f(&g, x, NB * IN, 0.0, 1.0);
    for (int threads = 1; threads <= 2; threads++) {
        dd_model *m = graph_a_batch(31, NB, threads);
        ck_assert(ref_randomize_params(m, &g) == 0);
        const int ns[] = {NB, 19, 16, 15, 1};
        for (int round = 0; round < 3; round++) {
            if (round == 1) { /* new parameters: the copies must follow */
                float w[6 * 3 * 3 * 3];
                int np = 0, wi = -1;
                ck_assert(dd_model_num_params(m, &np) == DD_OK);
                for (int i = 0; i < np && wi < 0; i++) { /* the first convolution's weight */
                    dd_param_info pi;
                    ck_assert(dd_model_param_info(m, i, &pi) == DD_OK);
                    if (pi.count == sizeof w / sizeof w[0]) wi = i;
                }
                ck_assert(wi >= 0 && dd_model_param_read(m, wi, w, sizeof w / sizeof w[0]) == DD_OK);
                for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) w[i] *= -1.5f;
                ck_assert(dd_model_param_write(m, wi, w, sizeof w / sizeof w[0]) == DD_OK);
            } else if (round == 2) { /* new running statistics */
                ck_assert(dd_model_forward(m, x, NB, DD_TRAIN, NULL) == DD_OK);
            }
            for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
                int n = ns[k];
                ck_assert_msg(dd_model_forward(m, x, n, DD_EVAL, zf) == DD_OK, "%s", dd_last_error());
                ck_assert_msg(dd_model_predict(m, x, n, zp) == DD_OK, "%s", dd_last_error());
                ck_assert_msg(rel_diff(zp, zf, (size_t)n * K) < 1e-5,
                              "threads %d round %d n %d: predict differs from forward by %.3g", threads,
                              round, n, rel_diff(zp, zf, (size_t)n * K));
                ck_assert(dd_model_predict(m, x, n, zq) == DD_OK);
                ck_assert_msg(memcmp(zp, zq, (size_t)n * K * sizeof(float)) == 0, "predict not repeatable");
                ck_assert_int_eq(dd_model_input_grad(m, zf, x), DD_ERR_STATE);
            }
        }
        dd_model_destroy(m);
    }
    dd_model *m = graph_a_batch(32, NB, 2);
    ck_assert_int_eq(dd_model_predict(NULL, x, NB, zp), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_predict(m, NULL, NB, zp), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_predict(m, x, NB, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_predict(m, x, 0, zp), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_predict(m, x, NB + 1, zp), DD_ERR_INVALID_ARGUMENT);
    float keep = x[37 * IN + 5];
    x[37 * IN + 5] = NAN; /* in the fifth chunk */
    ck_assert_int_eq(dd_model_predict(m, x, NB, zp), DD_ERR_NUMERIC);
    ck_assert_msg(strstr(dd_last_error(), "dd_model_predict") && strstr(dd_last_error(), "NaN"),
                  "message: %s", dd_last_error());
    x[37 * IN + 5] = keep;
    ck_assert(dd_model_predict(m, x, NB, zp) == DD_OK);
    dd_model_destroy(m);
    dd_model *u = NULL;
    ck_assert(dd_model_create(&u, 3, 12, 12, K, NULL) == DD_OK);
    ck_assert_int_eq(dd_model_predict(u, x, 1, zp), DD_ERR_STATE);
    dd_model_destroy(u);
}
END_TEST

START_TEST(test_fusion) {
    fusion_case(DD_CONV_AUTO, DD_EVAL, "+batchnorm +add +relu", "linear 'linear");
    /* oneDNN 2.6 has Winograd kernels only for AVX-512: on an AVX2 CPU the
     * layer runs direct, which takes the add as a binary post-op */
    fusion_case(DD_CONV_WINOGRAD, DD_EVAL, "+batchnorm +sum +relu|+batchnorm +add +relu", "+batchnorm +relu");
    fusion_case(DD_CONV_AUTO, DD_TRAIN, "batchnorm 'batchnorm", "fused forward +relu");
}
END_TEST

static Suite *model_suite(void) {
    Suite *s = suite_create("model");
    TCase *tg = tcase_create("gradient");
    tcase_set_timeout(tg, 120);
    tcase_add_test(tg, test_grad_a_train);
    tcase_add_test(tg, test_grad_a_eval);
    tcase_add_test(tg, test_grad_b);
    tcase_add_test(tg, test_grad_accumulates);
    suite_add_tcase(s, tg);
    TCase *ta = tcase_create("api");
    tcase_set_timeout(ta, 60);
    tcase_add_test(ta, test_invalid_create);
    tcase_add_test(ta, test_invalid_add);
    tcase_add_test(ta, test_invalid_passes);
    tcase_add_test(ta, test_invalid_introspection);
    tcase_add_test(ta, test_param_names);
    tcase_add_test(ta, test_seed);
    tcase_add_test(ta, test_fusion);
    tcase_add_test(ta, test_predict);
    suite_add_tcase(s, ta);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
