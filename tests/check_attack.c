/* tests/check_attack.c -- attacks (attack.h) against closed-form oracles.
 *
 * The oracles are those of shared/ATTACKS.md section 13, on affine
 * classifiers built with the engine (flatten + linear, parameters written
 * with dd_model_param_write), where every answer is known exactly: FGSM
 * and PGD give eps*sign(w) (O3, O4), PGD-L2 its closed form (O5), APGD the
 * vertex or exactly x0 (O6), DeepFool 1.02 (rho* + 1e-4) (O1, O2), FAB
 * 1.05 then 1.005213 rho* (O9), EAD and CW respect Hoelder's bound (O7),
 * CW reaches rho2 from above (O13), AutoAttack's robust accuracy is the
 * exact one (O8). The pure pieces (DLR O10, APGD checkpoints and decision
 * O11, Square's schedule O12, EAD's shrinkage and search O14) are checked
 * through the inline functions the library itself uses. A small random
 * ReLU network checks every kind's invariants (box, eps ball, success only
 * where the model misclassifies, eps = 0 gives clean accuracy, the same
 * seed gives the same bits), OOM and no allocation in a warm run; TRADES'
 * gradient is checked against its closed form in double. Bad input must
 * leave x_adv untouched. Tolerances: float arithmetic on values near 1 is
 * good to ~1e-6; where a test allows more it says why.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>

#include "attacks/attack_internal.h"
#include "internal.h"

#define TOL 1e-5

/* ======================================================================== */
/* Helpers                                                                   */
/* ======================================================================== */

static int param_index(const dd_model *m, const char *name) {
    int np = 0;
    ck_assert_int_eq(dd_model_num_params(m, &np), DD_OK);
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        ck_assert_int_eq(dd_model_param_info(m, i, &pi), DD_OK);
        if (strcmp(pi.name, name) == 0) return i;
    }
    ck_abort_msg("parameter %s not found", name);
    return -1;
}

/* Affine classifier z = W x + b on (C, H, W) images: flatten + linear.
 * Wm: (K, C*H*W) row-major, b: (K). */
static dd_model *affine_model(int K, int C, int H, int W, const float *Wm, const float *b, int max_batch) {
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = 1;
    dd_model *m = NULL;
    ck_assert_int_eq(dd_model_create(&m, C, H, W, K, &mo), DD_OK);
    dd_node f, l;
    ck_assert_int_eq(dd_model_add_flatten(m, DD_INPUT, "flat", &f), DD_OK);
    ck_assert_int_eq(dd_model_add_linear(m, f, K, 1, "fc", &l), DD_OK);
    ck_assert_int_eq(dd_model_build(m, l, max_batch), DD_OK);
    size_t d = (size_t)C * H * W;
    ck_assert_int_eq(dd_model_param_write(m, param_index(m, "fc.weight"), Wm, (size_t)K * d), DD_OK);
    ck_assert_int_eq(dd_model_param_write(m, param_index(m, "fc.bias"), b, (size_t)K), DD_OK);
    return m;
}

/* The reference model of ATTACKS.md 13: 2 classes, d = 4 (1x2x2),
 * W = [[0,0,0,0],[1,-2,2,0]], b = [0,-1], x0 = 0.5, y = 0: margin 0.5,
 * w = (1,-2,2,0), ||w||_1 = 5, ||w||_2 = 3, ||w||_inf = 2; minimal
 * perturbations rho2 = 1/6, rhoinf = 0.1, rho1 = 0.25 (box inactive). */
static const float REF_W[8] = {0, 0, 0, 0, 1, -2, 2, 0};
static const float REF_B[2] = {0, -1};
static const float REF_SIGNW[4] = {1, -1, 1, 0};

static dd_model *reference_model(int max_batch) { return affine_model(2, 1, 2, 2, REF_W, REF_B, max_batch); }

static dd_attack *make_attack(dd_model *m, const dd_attack_options *o) {
    dd_attack *a = NULL;
    dd_status s = dd_attack_create(&a, m, o);
    ck_assert_msg(s == DD_OK, "dd_attack_create(%s): %s: %s", dd_attack_kind_name(o->kind),
                  dd_status_string(s), dd_last_error());
    return a;
}

/* Runs a on one reference point x0 = 0.5, y = 0; returns success. */
static int run_ref(dd_attack *a, float xadv[4]) {
    const float x0[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    const int32_t y[1] = {0};
    int32_t succ = -1;
    dd_attack_results r;
    dd_attack_results_init(&r);
    r.success = &succ;
    dd_status s = dd_attack_run(a, x0, y, 1, xadv, &r);
    ck_assert_msg(s == DD_OK, "dd_attack_run: %s: %s", dd_status_string(s), dd_last_error());
    return succ;
}

static void logits_at(dd_model *m, const float *x, int n, float *z) {
    ck_assert_int_eq(dd_model_forward(m, x, n, DD_EVAL, z), DD_OK);
}

/* norms[0..3] = L0, L1, L2, Linf of u - v (double, independent of the library's). */
static void tnorms(const float *u, const float *v, size_t d, double norms[4]) {
    double l0 = 0, l1 = 0, l2 = 0, li = 0;
    for (size_t j = 0; j < d; j++) {
        double a = fabs((double)u[j] - (double)v[j]);
        l0 += a > 0;
        l1 += a;
        l2 += a * a;
        li = a > li ? a : li;
    }
    norms[0] = l0;
    norms[1] = l1;
    norms[2] = sqrt(l2);
    norms[3] = li;
}

static double tnorm(const float *u, const float *v, size_t d, dd_norm p) {
    double nv[4];
    tnorms(u, v, d, nv);
    return p == DD_NORM_L2 ? nv[2] : (p == DD_NORM_L1 ? nv[1] : (p == DD_NORM_L0 ? nv[0] : nv[3]));
}

/* Deterministic values in [0, 1) (an LCG; quality is irrelevant here). */
static float pseudo01(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)((double)(*state >> 8) / 16777216.0);
}

/* ======================================================================== */
/* Options, names, pure pieces                                               */
/* ======================================================================== */

START_TEST(test_kind_names) {
    for (int k = DD_ATTACK_FGSM; k <= DD_ATTACK_TRADES_KL; k++) {
        const char *name = dd_attack_kind_name((dd_attack_kind)k);
        ck_assert_ptr_nonnull(name);
        dd_attack_kind back;
        ck_assert_int_eq(dd_attack_kind_from_name(name, &back), DD_OK);
        ck_assert_int_eq(back, k);
        dd_norm nrm;
        ck_assert_int_eq(dd_attack_kind_norm((dd_attack_kind)k, &nrm), DD_OK);
    }
    ck_assert_ptr_null(dd_attack_kind_name((dd_attack_kind)999));
    dd_attack_kind k;
    ck_assert_int_eq(dd_attack_kind_from_name("nope", &k), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_kind_from_name(NULL, &k), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options o;
    dd_attack_options_init(&o, DD_ATTACK_PGD_LINF);
    ck_assert_float_eq_tol(o.eps, 8.0f / 255.0f, 1e-9);
    ck_assert_float_eq_tol(o.step_size, 2.0f / 255.0f, 1e-9);
    ck_assert_int_eq(o.steps, 10);
    dd_attack_options_init(&o, DD_ATTACK_PGD_L2);
    ck_assert_float_eq(o.eps, 1.0f);
    ck_assert_float_eq(o.step_size, 0.2f);
    dd_attack_options_init(&o, DD_ATTACK_APGD_CE_LINF);
    ck_assert_int_eq(o.steps, 100);
    ck_assert_float_eq(o.rho, 0.75f);
    dd_attack_options_init(&o, DD_ATTACK_AUTOATTACK_LINF);
    ck_assert_int_eq(o.rescale_schedule, 0);
    ck_assert_int_eq(o.queries, 5000);
    dd_attack_options_init(&o, DD_ATTACK_DEEPFOOL_L2);
    ck_assert(isinf(o.eps));
    ck_assert_int_eq(o.steps, 50);
    ck_assert_int_eq(o.candidates, 10);
    dd_attack_options_init(NULL, DD_ATTACK_FGSM);
    dd_attack_results_init(NULL);
}
END_TEST

START_TEST(test_dlr_values) {
    /* O10. */
    const float z1[4] = {3, 2, 5, 1};
    float dz[4];
    double l = dd__dlr_loss(z1, 4, 1, dz);
    ck_assert(fabs(l - 1.0) < 1e-9);
    for (int j = 0; j < 4; j++) ck_assert(fabs(dz[j]) < 1e-9);
    const float z2[3] = {1, 2, 3};
    ck_assert(fabs(dd__dlr_loss(z2, 3, 2, NULL) + 0.5) < 1e-9);
    ck_assert(fabs(dd__dlr_loss(z2, 3, 0, NULL) - 1.0) < 1e-9);
    const float z3[4] = {4, 3, 2, 1};
    ck_assert(fabs(dd__dlr_target_loss(z3, 4, 0, 1, NULL) + 0.4) < 1e-9);
    /* Invariance under a z + b, a > 0, and the gradient against central differences. */
    const float z4[5] = {0.3f, -1.2f, 2.5f, 0.7f, 1.9f};
    float z5[5], g[5], gt[5];
    for (int j = 0; j < 5; j++) z5[j] = 3.0f * z4[j] - 7.0f;
    ck_assert(fabs(dd__dlr_loss(z4, 5, 3, NULL) - dd__dlr_loss(z5, 5, 3, NULL)) < 1e-6);
    ck_assert(fabs(dd__dlr_target_loss(z4, 5, 3, 0, NULL) - dd__dlr_target_loss(z5, 5, 3, 0, NULL)) < 1e-6);
    dd__dlr_loss(z4, 5, 3, g);
    dd__dlr_target_loss(z4, 5, 3, 0, gt);
    for (int j = 0; j < 5; j++) {
        float zp[5], zm[5];
        memcpy(zp, z4, sizeof zp);
        memcpy(zm, z4, sizeof zm);
        zp[j] += 1e-3f;
        zm[j] -= 1e-3f;
        double fd = (dd__dlr_loss(zp, 5, 3, NULL) - dd__dlr_loss(zm, 5, 3, NULL)) / ((double)zp[j] - zm[j]);
        double fdt = (dd__dlr_target_loss(zp, 5, 3, 0, NULL) - dd__dlr_target_loss(zm, 5, 3, 0, NULL)) /
                     ((double)zp[j] - zm[j]);
        ck_assert_msg(fabs(fd - g[j]) < 1e-4, "DLR grad %d: %g vs %g", j, g[j], fd);
        ck_assert_msg(fabs(fdt - gt[j]) < 1e-4, "DLR-T grad %d: %g vs %g", j, gt[j], fdt);
    }
    /* O13: the correct CW margin for negative logits. */
    const float z6[3] = {-1, -2, -3};
    ck_assert(fabs(dd__margin(z6, 3, 0) - 1.0) < 1e-12);
}
END_TEST

START_TEST(test_apgd_checkpoints) {
    /* O11. */
    int it[32];
    const int want100[] = {21, 40, 56, 69, 79, 86, 92, 98};
    const int want1000[] = {219, 409, 569, 699, 799, 869, 929, 989};
    ck_assert_int_eq(dd__apgd_checkpoints(100, it, 32), 8);
    for (int i = 0; i < 8; i++) ck_assert_int_eq(it[i], want100[i]);
    ck_assert_int_eq(dd__apgd_checkpoints(1000, it, 32), 8);
    for (int i = 0; i < 8; i++) ck_assert_int_eq(it[i], want1000[i]);
    ck_assert_int_eq(dd__apgd_checkpoints(10, it, 32), 9);
    for (int i = 0; i < 9; i++) ck_assert_int_eq(it[i], i + 1);
}
END_TEST

START_TEST(test_apgd_decision) {
    /* Condition 1 at the first checkpoint (k = 22, i = 21) with the
     * zero placeholder of loss_steps[-1]: 16 increases among the 21 real
     * comparisons; CE-like positive L(0) adds a 17th (17 > 16.5: keep the
     * step), DLR-like negative L(0) does not (16 <= 16.5: halve). */
    const int k = 22, len = k + 1;
    float ring[23];
    for (int sign = 0; sign < 2; sign++) {
        memset(ring, 0, sizeof ring);
        float base = sign ? 10.0f : -10.0f;
        float v = base;
        for (int i = 0; i < k; i++) {
            if (i > 0) v += (i <= 16) ? 0.1f : -0.05f; /* 16 increases, 5 decreases */
            ring[i % len] = v;
        }
        int red = dd__apgd_reduce(ring, len, 1, 0, k - 1, k, 0.75, 1, 0.0f, 0.0f);
        ck_assert_int_eq(red, sign ? 0 : 1);
    }
    /* The `<=`: exactly rho*k increases halves (k = 16, 12 increases). */
    float r2[17];
    memset(r2, 0, sizeof r2);
    float v = 1.0f;
    for (int i = 0; i < 16; i++) {
        if (i > 0) v += (i <= 11) ? 0.1f : -0.05f;
        r2[i % 17] = v; /* 11 real increases + L(0) > 0 = 12 = 0.75 * 16 */
    }
    ck_assert_int_eq(dd__apgd_reduce(r2, 17, 1, 0, 15, 16, 0.75, 1, 0.0f, 0.0f), 1);
    /* Condition 2: not reduced last time and no best-loss progress. */
    float r3[6] = {1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(dd__apgd_reduce(r3, 6, 1, 0, 5, 4, 0.75, 0, 2.0f, 2.0f), 1);
    ck_assert_int_eq(dd__apgd_reduce(r3, 6, 1, 0, 5, 4, 0.75, 0, 1.0f, 2.0f), 0);
    ck_assert_int_eq(dd__apgd_reduce(r3, 6, 1, 0, 5, 4, 0.75, 1, 2.0f, 2.0f), 0);
}
END_TEST

START_TEST(test_square_schedule) {
    /* O12: 32x32, 5000 queries, p_init 0.8. */
    struct {
        int from;
        double p;
        int s;
    } aa[] = {{0, 0.8, 29},   {11, 0.4, 20},    {51, 0.2, 14},     {201, 0.1, 10},
              {501, 0.05, 7}, {1001, 0.025, 5}, {2001, 0.0125, 4}, {4001, 0.00625, 3}};
    for (int i = 0; i < 8; i++) {
        ck_assert(fabs(dd__square_p(aa[i].from, 5000, 0.8, 0) - aa[i].p) < 1e-12);
        if (aa[i].from > 0) ck_assert(fabs(dd__square_p(aa[i].from - 1, 5000, 0.8, 0) - 2 * aa[i].p) < 1e-12);
        ck_assert_int_eq(dd__square_side(aa[i].p, 32, 32, 0), aa[i].s);
    }
    struct {
        int from;
        double p;
        int s;
    } ta[] = {{0, 0.8, 29},        {6, 0.4, 20},        {26, 0.2, 14},     {101, 0.1, 10},
              {251, 0.05, 7},      {501, 0.025, 5},     {1001, 0.0125, 4}, {2001, 0.00625, 3},
              {3001, 0.003125, 2}, {4001, 0.0015625, 1}};
    for (int i = 0; i < 10; i++) {
        ck_assert(fabs(dd__square_p(ta[i].from, 5000, 0.8, 1) - ta[i].p) < 1e-12);
        if (ta[i].from > 0) ck_assert(fabs(dd__square_p(ta[i].from - 1, 5000, 0.8, 1) - 2 * ta[i].p) < 1e-12);
        ck_assert_int_eq(dd__square_side(ta[i].p, 32, 32, 0), ta[i].s);
    }
    /* L2 windows: at least 3, odd, capped at the image. */
    ck_assert_int_eq(dd__square_side(0.8, 32, 32, 1), 29);
    ck_assert_int_eq(dd__square_side(0.4, 32, 32, 1), 21);
    ck_assert_int_eq(dd__square_side(0.0015625, 32, 32, 1), 3);
    ck_assert_int_eq(dd__square_side(0.8, 2, 2, 1), 2);
}
END_TEST

START_TEST(test_ead_pieces) {
    /* O14: shrinkage with x0 = 0.5, beta = 0.1, box [0, 1]. */
    ck_assert_float_eq_tol(dd__ead_shrink(0.65f, 0.5f, 0.1f, 0.0f, 1.0f), 0.55f, 1e-6);
    ck_assert_float_eq(dd__ead_shrink(0.55f, 0.5f, 0.1f, 0.0f, 1.0f), 0.5f);
    ck_assert_float_eq_tol(dd__ead_shrink(0.3f, 0.5f, 0.1f, 0.0f, 1.0f), 0.4f, 1e-6);
    ck_assert_float_eq(dd__ead_shrink(1.2f, 0.5f, 0.1f, 0.0f, 1.0f), 1.0f);
    ck_assert_float_eq(dd__ead_shrink(-0.2f, 0.5f, 0.1f, 0.0f, 1.0f), 0.0f);
    /* The constant search: all fail, all succeed, fail then succeed. */
    double c = 1e-3, lo = 0, up = 1e10;
    for (int j = 0; j < 9; j++) {
        ck_assert_msg(fabs(c - 1e-3 * pow(10, j)) < 1e-9 * c, "fail step %d: c = %g", j, c);
        dd__ead_update_const(0, &c, &lo, &up);
    }
    c = 1e-3, lo = 0, up = 1e10;
    for (int j = 0; j < 9; j++) {
        ck_assert(fabs(c - 1e-3 * pow(2, -j)) < 1e-15);
        dd__ead_update_const(1, &c, &lo, &up);
    }
    c = 1e-3, lo = 0, up = 1e10;
    dd__ead_update_const(0, &c, &lo, &up);
    ck_assert(fabs(c - 1e-2) < 1e-15);
    dd__ead_update_const(1, &c, &lo, &up);
    ck_assert(fabs(c - 5.5e-3) < 1e-15);
}
END_TEST

/* ======================================================================== */
/* Bad input                                                                 */
/* ======================================================================== */

START_TEST(test_bad_input) {
    dd_model *m = reference_model(2);
    dd_attack_options o;
    dd_attack *a = NULL;
    /* Options. */
    dd_attack_options_init(&o, DD_ATTACK_PGD_LINF);
    o.eps = -0.1f;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(a);
    o.eps = NAN;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    o.eps = INFINITY;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_PGD_LINF);
    o.steps = 0;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_PGD_LINF);
    o.step_size = 0;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_APGD_CE_LINF);
    o.targeted = 1; /* no targeted mode */
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_APGD_DLR_LINF); /* K = 2 < 3 */
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_APGD_T_LINF); /* K = 2 < 4 */
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_FAB_T_LINF); /* 9 targets > K - 1 */
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    o.num_targets = 1;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_OK);
    dd_attack_destroy(a);
    a = NULL;
    dd_attack_options_init(&o, DD_ATTACK_EAD);
    o.ead_rule = (dd_ead_rule)7;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_SQUARE_LINF);
    o.p_init = 1.5f;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, (dd_attack_kind)999);
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_FGSM);
    o.struct_size = 8;
    ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_ERR_INVALID_ARGUMENT);
    dd_attack_options_init(&o, DD_ATTACK_FGSM);
    ck_assert_int_eq(dd_attack_create(NULL, m, &o), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_create(&a, NULL, &o), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_create(&a, m, NULL), DD_ERR_INVALID_ARGUMENT);
    /* A model that is not built. */
    dd_model *raw = NULL;
    ck_assert_int_eq(dd_model_create(&raw, 1, 2, 2, 2, NULL), DD_OK);
    ck_assert_int_eq(dd_attack_create(&a, raw, &o), DD_ERR_STATE);
    dd_model_destroy(raw);

    /* Run arguments: nothing written to x_adv or results. */
    dd_attack_options_init(&o, DD_ATTACK_PGD_LINF);
    a = make_attack(m, &o);
    ck_assert_int_eq(dd_attack_set_eps(a, -1.0f), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_set_eps(a, NAN), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_set_eps(a, INFINITY), DD_ERR_INVALID_ARGUMENT);
    float x[12] = {0.5f, 0.5f, 0.5f, 0.5f, 0.2f, 0.3f, 0.4f, 0.5f, 0.1f, 0.1f, 0.1f, 0.1f};
    int32_t y[3] = {0, 1, 0};
    float xadv[12];
    const float sentinel = 7.0f;
    for (int j = 0; j < 12; j++) xadv[j] = sentinel;
    int32_t succ[3] = {-5, -5, -5};
    dd_attack_results r;
    dd_attack_results_init(&r);
    r.success = succ;
    ck_assert_int_eq(dd_attack_run(a, x, y, 3, xadv, &r), DD_ERR_INVALID_ARGUMENT); /* n > max_batch */
    ck_assert_int_eq(dd_attack_run(a, x, y, 0, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_run(a, x, y, -1, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    int32_t ybad[2] = {0, 2};
    ck_assert_int_eq(dd_attack_run(a, x, ybad, 2, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    ybad[1] = -1;
    ck_assert_int_eq(dd_attack_run(a, x, ybad, 2, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    float xn[8];
    memcpy(xn, x, sizeof xn);
    xn[5] = NAN;
    ck_assert_int_eq(dd_attack_run(a, xn, y, 2, xadv, &r), DD_ERR_NUMERIC);
    xn[5] = INFINITY;
    ck_assert_int_eq(dd_attack_run(a, xn, y, 2, xadv, &r), DD_ERR_NUMERIC);
    xn[5] = 1.5f; /* outside the box */
    ck_assert_int_eq(dd_attack_run(a, xn, y, 2, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_run(a, NULL, y, 2, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_run(a, x, NULL, 2, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_run(a, x, y, 2, NULL, &r), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_run(NULL, x, y, 2, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    r.struct_size = 3;
    ck_assert_int_eq(dd_attack_run(a, x, y, 2, xadv, &r), DD_ERR_INVALID_ARGUMENT);
    for (int j = 0; j < 12; j++) ck_assert_float_eq(xadv[j], sentinel);
    for (int j = 0; j < 3; j++) ck_assert_int_eq(succ[j], -5);
    ck_assert_str_ne(dd_last_error(), "");
    /* A good call works after all that, also in place (x_adv == x). */
    ck_assert_int_eq(dd_attack_run(a, x, y, 2, xadv, NULL), DD_OK);
    float xi[8];
    memcpy(xi, x, sizeof xi);
    ck_assert_int_eq(dd_attack_run(a, xi, y, 2, xi, NULL), DD_OK);
    ck_assert_int_eq(memcmp(xi, xadv, sizeof xi), 0);
    dd_attack_options got;
    ck_assert_int_eq(dd_attack_get_options(a, &got), DD_OK);
    ck_assert_int_eq(got.kind, DD_ATTACK_PGD_LINF);
    ck_assert_int_eq(dd_attack_get_options(NULL, &got), DD_ERR_INVALID_ARGUMENT);
    dd_attack_destroy(a);
    dd_attack_destroy(NULL);
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */
/* Closed-form oracles on the reference affine model                         */
/* ======================================================================== */

START_TEST(test_fgsm_oracle) {
    /* O3. */
    dd_model *m = reference_model(1);
    dd_attack_options o;
    dd_attack_options_init(&o, DD_ATTACK_FGSM);
    dd_attack *a = make_attack(m, &o);
    float xa[4], z[2];
    ck_assert_int_eq(run_ref(a, xa), 0);
    for (int j = 0; j < 4; j++) ck_assert_float_eq_tol(xa[j] - 0.5f, REF_SIGNW[j] * 8.0f / 255.0f, 1e-7);
    logits_at(m, xa, 1, z);
    ck_assert(fabs((z[1] - z[0]) - (-0.5 + 40.0 / 255.0)) < TOL);
    ck_assert_int_eq(dd_attack_set_eps(a, 26.0f / 255.0f), DD_OK);
    ck_assert_int_eq(run_ref(a, xa), 1);
    logits_at(m, xa, 1, z);
    ck_assert(fabs((z[1] - z[0]) - (-0.5 + 130.0 / 255.0)) < TOL);
    dd_attack_destroy(a);
    /* Targeted towards class 1: delta = -eps sign(grad CE(z, 1)) = eps sign(w). */
    o.targeted = 1;
    a = make_attack(m, &o);
    const float x0[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    const int32_t t[1] = {1};
    ck_assert_int_eq(dd_attack_run(a, x0, t, 1, xa, NULL), DD_OK);
    for (int j = 0; j < 4; j++) ck_assert_float_eq_tol(xa[j] - 0.5f, REF_SIGNW[j] * 8.0f / 255.0f, 1e-7);
    dd_attack_destroy(a);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_pgd_oracle) {
    /* O4: final delta = eps sign(w) on w != 0 regardless of the random start. */
    dd_model *m = reference_model(1);
    dd_attack_options o;
    dd_attack_options_init(&o, DD_ATTACK_PGD_LINF);
    const float eps = 8.0f / 255.0f;
    for (uint64_t seed = 0; seed < 3; seed++) {
        o.seed = seed;
        dd_attack *a = make_attack(m, &o);
        float xa[4];
        run_ref(a, xa);
        for (int j = 0; j < 3; j++) ck_assert_float_eq_tol(xa[j] - 0.5f, REF_SIGNW[j] * eps, 1e-7);
        ck_assert(fabsf(xa[3] - 0.5f) <= eps + 1e-7f); /* zero weight: keeps its random start */
        dd_attack_destroy(a);
    }
    o.random_start = 0;
    dd_attack *a = make_attack(m, &o);
    float xa[4];
    run_ref(a, xa);
    for (int j = 0; j < 4; j++) ck_assert_float_eq_tol(xa[j] - 0.5f, REF_SIGNW[j] * eps, 1e-7);
    dd_attack_destroy(a);
    /* O5: L2 without random start, eps 0.5: min(T alpha, eps) s w/||w|| = (1/6, -1/3, 1/3, 0). */
    dd_attack_options_init(&o, DD_ATTACK_PGD_L2);
    o.eps = 0.5f;
    o.random_start = 0;
    a = make_attack(m, &o);
    ck_assert_int_eq(run_ref(a, xa), 1);
    const double want[4] = {1.0 / 6, -1.0 / 3, 1.0 / 3, 0};
    for (int j = 0; j < 4; j++) ck_assert(fabs(xa[j] - 0.5 - want[j]) < 1e-6);
    dd_attack_destroy(a);
    /* Two steps only: 2 alpha = 0.4 < eps. */
    o.steps = 2;
    a = make_attack(m, &o);
    run_ref(a, xa);
    for (int j = 0; j < 4; j++) ck_assert(fabs(xa[j] - 0.5 - 0.4 * want[j] / 0.5) < 1e-6);
    dd_attack_destroy(a);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_apgd_oracle) {
    /* O6. */
    dd_model *m = reference_model(1);
    const dd_attack_kind kinds[2] = {DD_ATTACK_APGD_CE_LINF, DD_ATTACK_APGD_CE_L2};
    for (int kk = 0; kk < 2; kk++) {
        dd_attack_options o;
        dd_attack_options_init(&o, kinds[kk]);
        int l2 = kk == 1;
        /* Linf: rho* = 0.1; L2: rho* = 1/6. */
        o.eps = l2 ? 0.1f : 8.0f / 255.0f; /* below rho*: exactly x0 */
        dd_attack *a = make_attack(m, &o);
        float xa[4];
        ck_assert_int_eq(run_ref(a, xa), 0);
        for (int j = 0; j < 4; j++) ck_assert_float_eq(xa[j], 0.5f);
        ck_assert_int_eq(dd_attack_set_eps(a, l2 ? 0.25f : 26.0f / 255.0f), DD_OK);
        ck_assert_int_eq(run_ref(a, xa), 1);
        if (!l2) {
            for (int j = 0; j < 3; j++)
                ck_assert_float_eq_tol(xa[j] - 0.5f, REF_SIGNW[j] * 26.0f / 255.0f, 1e-7);
            ck_assert(fabsf(xa[3] - 0.5f) <= 26.0f / 255.0f + 1e-7f);
        } else {
            double n2 = 0.0;
            for (int j = 0; j < 4; j++) n2 += (xa[j] - 0.5) * (xa[j] - 0.5);
            ck_assert(sqrt(n2) <= 0.25 * (1 + 1e-6));
            ck_assert(sqrt(n2) >= 1.0 / 6); /* O7 */
        }
        dd_attack_destroy(a);
    }
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_deepfool_oracle) {
    /* O1 (foolbox form) and O2. */
    dd_model *m = reference_model(1);
    dd_attack_options o;
    dd_attack_options_init(&o, DD_ATTACK_DEEPFOOL_L2);
    dd_attack *a = make_attack(m, &o);
    float xa[4];
    ck_assert_int_eq(run_ref(a, xa), 1);
    double len = 1.02 * (1.0 / 6 + 1e-4);
    for (int j = 0; j < 4; j++) ck_assert(fabs((xa[j] - 0.5) - len * REF_W[4 + j] / 3.0) < 1e-6);
    dd_attack_destroy(a);
    dd_attack_options_init(&o, DD_ATTACK_DEEPFOOL_LINF);
    a = make_attack(m, &o);
    ck_assert_int_eq(run_ref(a, xa), 1);
    for (int j = 0; j < 4; j++) ck_assert(fabs((xa[j] - 0.5) - 1.02 * (0.1 + 1e-4) * REF_SIGNW[j]) < 1e-6);
    /* An eps threshold below the found norm: returned unchanged, no success. */
    dd_attack_destroy(a);
    o.eps = 0.09f;
    a = make_attack(m, &o);
    ck_assert_int_eq(run_ref(a, xa), 0);
    for (int j = 0; j < 4; j++) ck_assert_float_eq(xa[j], 0.5f);
    dd_attack_destroy(a);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_fab_oracle) {
    /* O9: 1.05 rho* after one iteration, 1.005213 rho* from the second. */
    dd_model *m = reference_model(1);
    const dd_attack_kind kinds[2] = {DD_ATTACK_FAB_T_LINF, DD_ATTACK_FAB_T_L2};
    const double rho[2] = {0.1, 1.0 / 6};
    for (int kk = 0; kk < 2; kk++) {
        const int steps[3] = {1, 2, 7};
        const double factor[3] = {1.05, 1.005213, 1.005213};
        for (int q = 0; q < 3; q++) {
            dd_attack_options o;
            dd_attack_options_init(&o, kinds[kk]);
            o.num_targets = 1;
            o.eps = 1.0f;
            o.steps = steps[q];
            dd_attack *a = make_attack(m, &o);
            float xa[4];
            ck_assert_int_eq(run_ref(a, xa), 1);
            const float x0[4] = {0.5f, 0.5f, 0.5f, 0.5f};
            double got = tnorm(xa, x0, 4, kk ? DD_NORM_L2 : DD_NORM_LINF);
            ck_assert_msg(fabs(got / rho[kk] - factor[q]) < 2e-6, "FAB %d steps %d: %.7f rho*", kk, steps[q],
                          got / rho[kk]);
            dd_attack_destroy(a);
        }
        /* Within-eps rule: eps below the closest point -> not fooled, x0. */
        dd_attack_options o;
        dd_attack_options_init(&o, kinds[kk]);
        o.num_targets = 1;
        o.eps = (float)(rho[kk] * 1.002);
        dd_attack *a = make_attack(m, &o);
        float xa[4];
        ck_assert_int_eq(run_ref(a, xa), 0);
        for (int j = 0; j < 4; j++) ck_assert_float_eq(xa[j], 0.5f);
        dd_attack_destroy(a);
    }
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_ead_cw_bounds) {
    /* O7 (Hoelder) and O13 (CW converges to rho2 from above). */
    dd_model *m = reference_model(1);
    const float x0[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    for (int rule = 0; rule < 2; rule++) {
        dd_attack_options o;
        dd_attack_options_init(&o, DD_ATTACK_EAD);
        o.ead_rule = rule ? DD_EAD_L1 : DD_EAD_EN;
        o.steps = 300;
        dd_attack *a = make_attack(m, &o);
        float xa[4];
        ck_assert_int_eq(run_ref(a, xa), 1);
        double nv[4];
        tnorms(xa, x0, 4, nv);
        ck_assert_msg(nv[1] >= 0.25 - 1e-6, "EAD L1 %g below the Hoelder bound 0.25", nv[1]);
        ck_assert(nv[2] >= 1.0 / 6 - 1e-6);
        ck_assert(nv[3] >= 0.1 - 1e-6);
        /* Sparse: the zero-weight pixel never moves; with the L1 rule the
         * mass sits on the |w| = 2 pixels (loose: within 20% of rho1). */
        ck_assert_float_eq(xa[3], 0.5f);
        if (rule) ck_assert_msg(nv[1] <= 0.3, "EAD-L1 found L1 = %g, rho1 = 0.25", nv[1]);
        dd_attack_destroy(a);
    }
    dd_attack_options o;
    dd_attack_options_init(&o, DD_ATTACK_CW_L2);
    o.steps = 1000;
    dd_attack *a = make_attack(m, &o);
    float xa[4];
    ck_assert_int_eq(run_ref(a, xa), 1);
    double n2 = tnorm(xa, x0, 4, DD_NORM_L2);
    /* kappa = 0 puts the optimum on the tie; Adam stops a little beyond it. */
    ck_assert_msg(n2 >= 1.0 / 6 - 1e-6 && n2 <= 1.0 / 6 * 1.05, "CW L2 = %g, rho2 = %g", n2, 1.0 / 6);
    dd_attack_destroy(a);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_autoattack_exact) {
    /* O8: K = 4, classes 2 and 3 with bias -1e3 (softmax exactly 0), so the
     * CE direction is constant and the robust set is exact:
     * robust iff m0 - eps ||w||_1 > 0, m0 = 1 - w.x, ||w||_1 = 5. */
    float Wm[16] = {0, 0, 0, 0, 1, -2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    float b[4] = {0, -1, -1e3f, -1e3f};
    dd_model *m = affine_model(4, 1, 2, 2, Wm, b, 8);
    /* m0 = 0.05, 0.1, 0.2, 0.3 (x1 = 0.95 .. 0.7) and -0.1 (clean mistake). */
    float x[20] = {0.95f, 0.5f, 0.5f, 0.5f, 0.9f, 0.5f, 0.5f, 0.5f, 0.8f, 0.5f,
                   0.5f,  0.5f, 0.7f, 0.5f, 0.5f, 0.5f, 0.9f, 0.4f, 0.5f, 0.5f};
    int32_t y[5] = {0, 0, 0, 0, 0};
    const float eps = 8.0f / 255.0f; /* eps ||w||_1 = 0.157 */
    dd_attack_options o;
    dd_attack_options_init(&o, DD_ATTACK_AUTOATTACK_LINF);
    o.num_targets = 3;
    o.queries = 500;
    dd_attack *a = make_attack(m, &o);
    float xa[20];
    int32_t stage[5], succ[5];
    dd_attack_results r;
    dd_attack_results_init(&r);
    r.stage = stage;
    r.success = succ;
    ck_assert_int_eq(dd_attack_run(a, x, y, 5, xa, &r), DD_OK);
    ck_assert_int_eq(r.num_clean_correct, 4);
    ck_assert_int_eq(r.n - r.num_success, 2); /* robust accuracy 2/5 */
    const int want_stage[5] = {1, 1, -1, -1, 0};
    for (int i = 0; i < 5; i++) ck_assert_int_eq(stage[i], want_stage[i]);
    for (int i = 0; i < 20; i++) {
        ck_assert(fabsf(xa[i] - x[i]) <= eps + 1e-7f);
        if (stage[i / 4] <= 0) ck_assert_float_eq(xa[i], x[i]);
    }
    /* eps = 0: robust accuracy equals clean accuracy (O15). */
    ck_assert_int_eq(dd_attack_set_eps(a, 0.0f), DD_OK);
    ck_assert_int_eq(dd_attack_run(a, x, y, 5, xa, &r), DD_OK);
    ck_assert_int_eq(r.n - r.num_success, 4);
    ck_assert_int_eq(memcmp(xa, x, sizeof xa), 0);
    dd_attack_destroy(a);
    /* APGD-T alone: same exact set (targets 2..4 of the clean logits). */
    dd_attack_options_init(&o, DD_ATTACK_APGD_T_LINF);
    o.num_targets = 3;
    a = make_attack(m, &o);
    ck_assert_int_eq(dd_attack_run(a, x, y, 5, xa, &r), DD_OK);
    ck_assert_int_eq(r.n - r.num_success, 2);
    dd_attack_destroy(a);
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */
/* Invariants of every kind on a small ReLU network                          */
/* ======================================================================== */

#define NB 6
#define IC 2
#define IH 5
#define IW 5
#define NK 10

static dd_model *relu_net(void) {
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = 2;
    mo.seed = 7;
    dd_model *m = NULL;
    ck_assert_int_eq(dd_zoo_create(&m, "mlp", IC, IH, IW, NK, 0, NULL, NULL, NB, &mo), DD_OK);
    return m;
}

/* Inputs in [0, 1] with pixels at 0 and 1 (box edges), labels = the model's
 * own prediction except the last sample (a clean mistake). */
static void relu_inputs(dd_model *m, float *x, int32_t *y) {
    const size_t d = (size_t)IC * IH * IW;
    uint32_t st = 12345;
    for (size_t j = 0; j < NB * d; j++) x[j] = pseudo01(&st);
    x[0] = 0.0f;
    x[1] = 1.0f;
    float z[NB * NK];
    logits_at(m, x, NB, z);
    for (int i = 0; i < NB; i++) y[i] = dd__argmax(z + i * NK, NK);
    y[NB - 1] = (y[NB - 1] + 1) % NK;
}

static void cheap(dd_attack_options *o) {
    /* Small budgets keep the suite fast; the algorithms are unchanged. */
    switch (o->kind) {
    case DD_ATTACK_APGD_CE_LINF:
    case DD_ATTACK_APGD_CE_L2:
    case DD_ATTACK_APGD_DLR_LINF:
    case DD_ATTACK_APGD_DLR_L2:
    case DD_ATTACK_APGD_T_LINF:
    case DD_ATTACK_APGD_T_L2:
    case DD_ATTACK_FAB_T_LINF:
    case DD_ATTACK_FAB_T_L2:
        o->steps = 20;
        o->num_targets = 3;
        break;
    case DD_ATTACK_EAD:
    case DD_ATTACK_CW_L2:
        o->steps = 30;
        o->binary_steps = 4;
        break;
    case DD_ATTACK_SQUARE_LINF:
    case DD_ATTACK_SQUARE_L2:
        o->queries = 300;
        break;
    case DD_ATTACK_AUTOATTACK_LINF:
    case DD_ATTACK_AUTOATTACK_L2:
        o->steps = 10;
        o->num_targets = 2;
        o->queries = 100;
        break;
    default:
        break;
    }
}

START_TEST(test_invariants) {
    const dd_attack_kind kind = (dd_attack_kind)(DD_ATTACK_FGSM + _i);
    dd_model *m = relu_net();
    const size_t d = (size_t)IC * IH * IW;
    float x[NB * IC * IH * IW], xa[NB * IC * IH * IW], xb[NB * IC * IH * IW], z[NB * NK];
    int32_t y[NB], succ[NB], pred[NB], clean[NB];
    float n0[NB], n1[NB], n2[NB], ni[NB];
    relu_inputs(m, x, y);
    dd_attack_options o;
    dd_attack_options_init(&o, kind);
    cheap(&o);
    /* Give the minimum-norm kinds a finite threshold to check the ball too. */
    if (isinf(o.eps)) o.eps = kind == DD_ATTACK_EAD ? 3.0f : 1.0f;
    dd_attack *a = make_attack(m, &o);
    dd_attack_results r;
    dd_attack_results_init(&r);
    r.success = succ;
    r.pred = pred;
    r.clean_correct = clean;
    r.norm_l0 = n0;
    r.norm_l1 = n1;
    r.norm_l2 = n2;
    r.norm_linf = ni;
    ck_assert_int_eq(dd_attack_run(a, x, y, NB, xa, &r), DD_OK);
    ck_assert_int_eq(r.n, NB);
    ck_assert_int_eq(r.num_clean_correct, NB - 1);
    ck_assert(r.forward_passes >= 2);
    dd_norm norm;
    dd_attack_kind_norm(kind, &norm);
    logits_at(m, xa, NB, z);
    for (int i = 0; i < NB; i++) {
        double nv[4];
        tnorms(xa + i * d, x + i * d, d, nv);
        for (size_t j = 0; j < d; j++) ck_assert(xa[i * d + j] >= 0.0f && xa[i * d + j] <= 1.0f);
        double used = norm == DD_NORM_L2 ? nv[2] : (norm == DD_NORM_L1 ? nv[1] : nv[3]);
        ck_assert_msg(used <= o.eps * (1 + 1e-5) + 1e-7, "%s sample %d: norm %g > eps %g",
                      dd_attack_kind_name(kind), i, used, o.eps);
        int p = dd__argmax(z + i * NK, NK);
        ck_assert_int_eq(pred[i], p);
        ck_assert_int_eq(succ[i], p != y[i]); /* success only where the model is fooled */
        ck_assert_int_eq(clean[i], i < NB - 1);
        ck_assert(fabs(n1[i] - nv[1]) < 1e-4 && fabs(n2[i] - nv[2]) < 1e-5 && fabs(ni[i] - nv[3]) < 1e-6);
        ck_assert(fabs(n0[i] - nv[0]) < 0.5);
    }
    ck_assert_int_eq(succ[NB - 1], 1); /* the clean mistake stays a mistake */
    /* Determinism: same seed, same thread count, bit-identical. */
    ck_assert_int_eq(dd_attack_run(a, x, y, NB, xb, NULL), DD_OK);
    ck_assert_int_eq(memcmp(xa, xb, sizeof xa), 0);
    /* eps = 0 for the budgeted kinds: clean accuracy (O15). */
    if (dd_attack_set_eps(a, 0.0f) == DD_OK && kind != DD_ATTACK_EAD && kind != DD_ATTACK_CW_L2 &&
        kind != DD_ATTACK_DEEPFOOL_L2 && kind != DD_ATTACK_DEEPFOOL_LINF) {
        ck_assert_int_eq(dd_attack_run(a, x, y, NB, xb, &r), DD_OK);
        ck_assert_int_eq(r.num_success, 1);
        if (kind != DD_ATTACK_TRADES_KL) ck_assert_int_eq(memcmp(xb, x, sizeof xb), 0);
    }
    /* The Linf Square invariant (O12): coordinates at +-eps or box-clipped. */
    if (kind == DD_ATTACK_SQUARE_LINF) {
        for (int i = 0; i < NB; i++) {
            if (!succ[i] || i == NB - 1) continue;
            for (size_t j = 0; j < d; j++) {
                float dv = xa[i * d + j] - x[i * d + j];
                int ok = fabsf(fabsf(dv) - o.eps) < 1e-6f || xa[i * d + j] == 0.0f || xa[i * d + j] == 1.0f;
                ck_assert_msg(ok, "Square Linf delta %g", dv);
            }
        }
    }
    dd_attack_destroy(a);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_square_all_misclassified) {
    /* auto-attack#81: every sample already misclassified must not crash. */
    dd_model *m = relu_net();
    float x[NB * IC * IH * IW], xa[NB * IC * IH * IW];
    int32_t y[NB];
    relu_inputs(m, x, y);
    for (int i = 0; i < NB; i++) y[i] = (y[i] + 1) % NK;
    for (int k = 0; k < 2; k++) {
        dd_attack_options o;
        dd_attack_options_init(&o, k ? DD_ATTACK_SQUARE_L2 : DD_ATTACK_SQUARE_LINF);
        dd_attack *a = make_attack(m, &o);
        int32_t stage[NB];
        dd_attack_results r;
        dd_attack_results_init(&r);
        r.stage = stage;
        ck_assert_int_eq(dd_attack_run(a, x, y, NB, xa, &r), DD_OK);
        ck_assert_int_eq(r.num_success, NB);
        for (int i = 0; i < NB; i++) ck_assert_int_eq(stage[i], 0);
        ck_assert_int_eq(memcmp(xa, x, sizeof xa), 0);
        dd_attack_destroy(a);
    }
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_train_step_parity) {
    /* dd_attack_train_step equals the hand-written loop bit for bit. */
    float x[NB * IC * IH * IW], xa1[NB * IC * IH * IW], xa2[NB * IC * IH * IW];
    int32_t y[NB];
    dd_model *m1 = relu_net(), *m2 = relu_net();
    relu_inputs(m1, x, y);
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    dd_optimizer *o1 = NULL, *o2 = NULL;
    ck_assert_int_eq(dd_optimizer_create(&o1, m1, &oo), DD_OK);
    ck_assert_int_eq(dd_optimizer_create(&o2, m2, &oo), DD_OK);
    dd_attack_options ao;
    dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF);
    dd_attack *a1 = make_attack(m1, &ao), *a2 = make_attack(m2, &ao);
    for (int step = 0; step < 2; step++) {
        dd_step_stats s1, s2;
        dd_step_stats_init(&s1);
        dd_step_stats_init(&s2);
        ck_assert_int_eq(dd_attack_train_step(a1, o1, x, y, NB, xa1, &s1), DD_OK);
        ck_assert_int_eq(dd_attack_run(a2, x, y, NB, xa2, NULL), DD_OK);
        ck_assert_int_eq(dd_model_zero_grad(m2), DD_OK);
        ck_assert_int_eq(dd_model_forward(m2, xa2, NB, DD_TRAIN, NULL), DD_OK);
        ck_assert_int_eq(dd_model_backward(m2, y, &s2), DD_OK);
        ck_assert_int_eq(dd_optimizer_step(o2), DD_OK);
        ck_assert_int_eq(memcmp(xa1, xa2, sizeof xa1), 0);
        ck_assert(s1.loss == s2.loss);
    }
    int np = 0;
    ck_assert_int_eq(dd_model_num_params(m1, &np), DD_OK);
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        ck_assert_int_eq(dd_model_param_info(m1, p, &pi), DD_OK);
        float *w1 = malloc(pi.count * sizeof(float)), *w2 = malloc(pi.count * sizeof(float));
        ck_assert_int_eq(dd_model_param_read(m1, p, w1, pi.count), DD_OK);
        ck_assert_int_eq(dd_model_param_read(m2, p, w2, pi.count), DD_OK);
        ck_assert_int_eq(memcmp(w1, w2, pi.count * sizeof(float)), 0);
        free(w1);
        free(w2);
    }
    ck_assert_int_eq(dd_attack_train_step(NULL, o1, x, y, NB, NULL, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_attack_train_step(a1, NULL, x, y, NB, NULL, NULL), DD_ERR_INVALID_ARGUMENT);
    dd_attack_destroy(a1);
    dd_attack_destroy(a2);
    dd_optimizer_destroy(o1);
    dd_optimizer_destroy(o2);
    dd_model_destroy(m1);
    dd_model_destroy(m2);
}
END_TEST

/* Reads trainable parameter `index` gradient into a new array. */
static float *grad_copy(const dd_model *m, int index, size_t *count) {
    dd_param_info pi;
    memset(&pi, 0, sizeof pi);
    ck_assert_int_eq(dd_model_param_info(m, index, &pi), DD_OK);
    float *g = malloc(pi.count * sizeof(float));
    ck_assert_int_eq(dd_model_grad_read(m, index, g, pi.count), DD_OK);
    *count = pi.count;
    return g;
}

START_TEST(test_trades_gradient) {
    /* The TRADES gradient on an affine model against the closed form in
     * double: dW = sum_i dz_i x_i^T + dz'_i x'_i^T, db = sum_i dz_i + dz'_i. */
    const int K = 3, n = 2;
    const float Wm[12] = {0.5f, -1.0f, 0.3f, 0.2f, -0.4f, 0.8f, -0.6f, 1.1f, 0.9f, 0.1f, -0.2f, -0.7f};
    const float b[3] = {0.1f, -0.2f, 0.3f};
    dd_model *m = affine_model(K, 1, 2, 2, Wm, b, 4);
    const float xn[8] = {0.2f, 0.4f, 0.6f, 0.8f, 0.9f, 0.1f, 0.5f, 0.3f};
    const float xa[8] = {0.25f, 0.35f, 0.65f, 0.75f, 0.85f, 0.15f, 0.45f, 0.35f};
    const int32_t y[2] = {1, 2};
    const float beta = 6.0f;
    double dW[12] = {0}, db[3] = {0}, ce = 0, klsum = 0;
    for (int i = 0; i < n; i++) {
        double zn[3], za[3], p[3], q[3], sp = 0, sq = 0;
        for (int k = 0; k < K; k++) {
            zn[k] = b[k];
            za[k] = b[k];
            for (int j = 0; j < 4; j++) {
                zn[k] += (double)Wm[k * 4 + j] * xn[i * 4 + j];
                za[k] += (double)Wm[k * 4 + j] * xa[i * 4 + j];
            }
            p[k] = exp(zn[k]);
            q[k] = exp(za[k]);
            sp += p[k];
            sq += q[k];
        }
        double kl = 0;
        for (int k = 0; k < K; k++) {
            p[k] /= sp;
            q[k] /= sq;
            kl += p[k] * log(p[k] / q[k]);
        }
        ce += -log(p[y[i]]);
        klsum += kl;
        for (int k = 0; k < K; k++) {
            double gn = (p[k] - (k == y[i])) / n + beta / n * p[k] * (log(p[k] / q[k]) - kl);
            double ga = beta / n * (q[k] - p[k]);
            db[k] += gn + ga;
            for (int j = 0; j < 4; j++) dW[k * 4 + j] += gn * xn[i * 4 + j] + ga * xa[i * 4 + j];
        }
    }
    dd_step_stats st;
    dd_step_stats_init(&st);
    ck_assert_int_eq(dd_model_zero_grad(m), DD_OK);
    ck_assert_int_eq(dd_model_backward_trades(m, xn, xa, y, n, beta, &st), DD_OK);
    size_t cw, cb;
    float *gw = grad_copy(m, param_index(m, "fc.weight"), &cw),
          *gb = grad_copy(m, param_index(m, "fc.bias"), &cb);
    for (int k = 0; k < 12; k++)
        ck_assert_msg(fabs(gw[k] - dW[k]) < 1e-5, "dW[%d] %g vs %g", k, gw[k], dW[k]);
    for (int k = 0; k < 3; k++) ck_assert_msg(fabs(gb[k] - db[k]) < 1e-5, "db[%d] %g vs %g", k, gb[k], db[k]);
    ck_assert(fabs(st.loss - ce / n) < 1e-5);
    ck_assert(fabs(st.objective - (ce + beta * klsum) / n) < 1e-5);
    ck_assert_int_eq(st.batch, n);
    free(gw);
    free(gb);
    /* beta = 0 is plain cross-entropy on x_nat. */
    ck_assert_int_eq(dd_model_zero_grad(m), DD_OK);
    ck_assert_int_eq(dd_model_backward_trades(m, xn, xa, y, n, 0.0f, NULL), DD_OK);
    gw = grad_copy(m, param_index(m, "fc.weight"), &cw);
    ck_assert_int_eq(dd_model_zero_grad(m), DD_OK);
    ck_assert_int_eq(dd_model_forward(m, xn, n, DD_TRAIN, NULL), DD_OK);
    ck_assert_int_eq(dd_model_backward(m, y, NULL), DD_OK);
    float *gc = grad_copy(m, param_index(m, "fc.weight"), &cw);
    for (int k = 0; k < 12; k++) ck_assert(fabs(gw[k] - gc[k]) < 1e-6);
    free(gw);
    free(gc);
    /* Bad input. */
    int32_t ybad[2] = {0, 3};
    ck_assert_int_eq(dd_model_backward_trades(m, xn, xa, ybad, n, beta, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_backward_trades(m, xn, xa, y, 5, beta, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_backward_trades(m, xn, xa, y, n, -1.0f, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_backward_trades(m, xn, xa, y, n, NAN, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_backward_trades(m, NULL, xa, y, n, beta, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_model_backward_trades(NULL, xn, xa, y, n, beta, NULL), DD_ERR_INVALID_ARGUMENT);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_trades_hooks_and_step) {
    /* With GFA hooks the difference to the hook-free gradient is exactly
     * the hooks' contribution to the natural cross-entropy backward. */
    float x[NB * IC * IH * IW], xa[NB * IC * IH * IW];
    int32_t y[NB];
    dd_model *m = relu_net();
    relu_inputs(m, x, y);
    for (size_t j = 0; j < sizeof x / sizeof x[0]; j++) xa[j] = fminf(1.0f, x[j] + 0.02f);
    int np = 0;
    ck_assert_int_eq(dd_model_num_params(m, &np), DD_OK);
    float *g[4][8];
    size_t cnt[8];
    ck_assert(np <= 8);
    for (int pass = 0; pass < 4; pass++) {
        int hooks = pass & 1, trades = pass >> 1;
        if (hooks)
            ck_assert_int_eq(dd_gfa_hook_defaults(m, 0.5f, DD_GFA_SIN2), DD_OK);
        else
            ck_assert_int_eq(dd_gfa_clear(m), DD_OK);
        ck_assert_int_eq(dd_model_zero_grad(m), DD_OK);
        if (trades) {
            ck_assert_int_eq(dd_model_backward_trades(m, x, xa, y, NB, 6.0f, NULL), DD_OK);
        } else {
            ck_assert_int_eq(dd_model_forward(m, x, NB, DD_TRAIN, NULL), DD_OK);
            ck_assert_int_eq(dd_model_backward(m, y, NULL), DD_OK);
        }
        for (int p = 0; p < np; p++) g[pass][p] = grad_copy(m, p, &cnt[p]);
    }
    double diff = 0, scale = 0;
    for (int p = 0; p < np; p++)
        for (size_t k = 0; k < cnt[p]; k++) {
            double hook_ce = (double)g[1][p][k] - g[0][p][k], hook_tr = (double)g[3][p][k] - g[2][p][k];
            diff = fmax(diff, fabs(hook_ce - hook_tr));
            scale = fmax(scale, fabs(hook_ce));
        }
    ck_assert_msg(scale > 1e-6, "the hooks changed nothing (scale %g)", scale);
    ck_assert_msg(diff <= 1e-4 * fmax(scale, 1e-3), "hook contributions differ by %g (scale %g)", diff,
                  scale);
    for (int pass = 0; pass < 4; pass++)
        for (int p = 0; p < np; p++) free(g[pass][p]);
    ck_assert_int_eq(dd_gfa_clear(m), DD_OK);

    /* dd_attack_trades_step equals the hand-written TRADES loop. */
    dd_model *m2 = relu_net();
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    dd_optimizer *o1 = NULL, *o2 = NULL;
    ck_assert_int_eq(dd_optimizer_create(&o1, m, &oo), DD_OK);
    ck_assert_int_eq(dd_optimizer_create(&o2, m2, &oo), DD_OK);
    dd_attack_options ao;
    dd_attack_options_init(&ao, DD_ATTACK_TRADES_KL);
    dd_attack *a1 = make_attack(m, &ao), *a2 = make_attack(m2, &ao);
    float xa1[NB * IC * IH * IW], xa2[NB * IC * IH * IW];
    dd_step_stats s1, s2;
    dd_step_stats_init(&s1);
    dd_step_stats_init(&s2);
    ck_assert_int_eq(dd_attack_trades_step(a1, o1, x, y, NB, 6.0f, xa1, &s1), DD_OK);
    ck_assert_int_eq(dd_attack_run(a2, x, y, NB, xa2, NULL), DD_OK);
    ck_assert_int_eq(dd_model_zero_grad(m2), DD_OK);
    ck_assert_int_eq(dd_model_backward_trades(m2, x, xa2, y, NB, 6.0f, &s2), DD_OK);
    ck_assert_int_eq(dd_optimizer_step(o2), DD_OK);
    ck_assert_int_eq(memcmp(xa1, xa2, sizeof xa1), 0);
    ck_assert(s1.objective == s2.objective && s1.objective > s1.loss);
    for (int p = 0; p < np; p++) {
        size_t c1, c2;
        float *w1 = grad_copy(m, p, &c1), *w2 = grad_copy(m2, p, &c2);
        ck_assert_int_eq(memcmp(w1, w2, c1 * sizeof(float)), 0);
        free(w1);
        free(w2);
    }
    ck_assert_int_eq(dd_attack_trades_step(a1, o1, x, y, NB, -1.0f, NULL, NULL), DD_ERR_INVALID_ARGUMENT);
    dd_attack_destroy(a1);
    dd_attack_destroy(a2);
    dd_optimizer_destroy(o1);
    dd_optimizer_destroy(o2);
    dd_model_destroy(m);
    dd_model_destroy(m2);
}
END_TEST

START_TEST(test_oom_and_no_alloc) {
    /* Every allocation of dd_attack_create may fail cleanly (ASan builds
     * check for leaks); dd_attack_run allocates nothing once the model has
     * seen the batch size. */
    dd_model *m = relu_net();
    float x[NB * IC * IH * IW], xa[NB * IC * IH * IW];
    int32_t y[NB];
    relu_inputs(m, x, y);
    const dd_attack_kind kinds[] = {DD_ATTACK_PGD_LINF,   DD_ATTACK_APGD_T_L2,      DD_ATTACK_DEEPFOOL_L2,
                                    DD_ATTACK_EAD,        DD_ATTACK_CW_L2,          DD_ATTACK_SQUARE_L2,
                                    DD_ATTACK_FAB_T_LINF, DD_ATTACK_AUTOATTACK_LINF};
    for (size_t q = 0; q < sizeof kinds / sizeof kinds[0]; q++) {
        dd_attack_options o;
        dd_attack_options_init(&o, kinds[q]);
        cheap(&o);
        dd_attack *a = NULL;
        dd__alloc_fail_after(-1);
        ck_assert_int_eq(dd_attack_create(&a, m, &o), DD_OK);
        long count = dd__alloc_count();
        ck_assert(count > 0);
        ck_assert_int_eq(dd_attack_run(a, x, y, NB, xa, NULL), DD_OK);
        dd__alloc_fail_after(0); /* every allocation from here on fails */
        dd_status rs = dd_attack_run(a, x, y, NB, xa, NULL);
        dd__alloc_fail_after(-1);
        ck_assert_msg(rs == DD_OK, "%s allocated in a warm run: %s", dd_attack_kind_name(kinds[q]),
                      dd_last_error());
        dd_attack_destroy(a);
        for (long k = 0; k < count; k++) {
            a = (dd_attack *)&a;
            dd__alloc_fail_after(k);
            dd_status s = dd_attack_create(&a, m, &o);
            dd__alloc_fail_after(-1);
            ck_assert_msg(s == DD_ERR_OUT_OF_MEMORY, "%s: failing allocation %ld gave %s",
                          dd_attack_kind_name(kinds[q]), k, dd_status_string(s));
            ck_assert_ptr_null(a);
        }
    }
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */

static Suite *attack_suite(void) {
    Suite *s = suite_create("attack");
    TCase *tc = tcase_create("pieces");
    tcase_add_test(tc, test_kind_names);
    tcase_add_test(tc, test_dlr_values);
    tcase_add_test(tc, test_apgd_checkpoints);
    tcase_add_test(tc, test_apgd_decision);
    tcase_add_test(tc, test_square_schedule);
    tcase_add_test(tc, test_ead_pieces);
    suite_add_tcase(s, tc);
    tc = tcase_create("contracts");
    tcase_add_test(tc, test_bad_input);
    suite_add_tcase(s, tc);
    tc = tcase_create("oracles");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fgsm_oracle);
    tcase_add_test(tc, test_pgd_oracle);
    tcase_add_test(tc, test_apgd_oracle);
    tcase_add_test(tc, test_deepfool_oracle);
    tcase_add_test(tc, test_fab_oracle);
    tcase_add_test(tc, test_ead_cw_bounds);
    tcase_add_test(tc, test_autoattack_exact);
    suite_add_tcase(s, tc);
    tc = tcase_create("invariants");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_invariants, 0, DD_ATTACK_TRADES_KL - DD_ATTACK_FGSM + 1);
    tcase_add_test(tc, test_square_all_misclassified);
    tcase_add_test(tc, test_train_step_parity);
    tcase_add_test(tc, test_oom_and_no_alloc);
    tcase_add_test(tc, test_trades_gradient);
    tcase_add_test(tc, test_trades_hooks_and_step);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(attack_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
