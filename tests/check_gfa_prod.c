/* tests/check_gfa_prod.c -- GFA's gradient at production configuration.
 *
 * The small graphs of check_gfa run none of the production code paths:
 * blocked layouts (nChw8c/nChw16c from 8/16 channels), Winograd (from 32
 * input channels, where oneDNN has it), layer fusion, the few-channel image
 * kernel, thread splits of our kernels. So here: cnn-cw and resnet20 from
 * the zoo with default options, 32x32 inputs, batch 64, 2 threads, DD_TRAIN
 * and DD_EVAL, after 5 SGD steps (the alignment is no longer the initial
 * one), default hooks at lambda 0.05 (SIN2; COS too on cnn-cw in training,
 * with cross-entropy and with the MSE loss; under MSE the plain gradient is
 * checked against the reference's as well).
 *
 * 1. The regulariser's part of the gradient, grad J - grad L (both from the
 *    library, the second with every hook's lambda set to 0, so the forward
 *    and its fusion are the same), against the double-precision reference's
 *    sum_t lambda_t dR_t/dtheta (tests/ref: ref_reg_grad, a route that
 *    shares nothing with the four passes), per parameter tensor: worst
 *    max|lib - ref| / max(max|ref_tensor|, 1e-3 max|ref|) <= 1e-2. The
 *    floor keeps tensors whose exact term is ~0 (a conv bias before a
 *    training-mode batch norm) from dividing by noise. Why 1e-2 and not
 *    float rounding: the library is float32, and a float32 forward decides
 *    a few of the ~10^7 ReLU masks differently from the double one (units
 *    within rounding of 0: about 20 per batch of 32 here); each decides its
 *    unit's share of one sample's gradient. Resnet20 in training mode adds
 *    batch norm's backward, which cancels (dy - mean dy - xhat mean(dy
 *    xhat)): float32 autograd itself reaches 5e-4..2.5e-3 on this term
 *    (issue 11's measurement). The GFA defect this guards against was an
 *    error of 0.8-1.6.
 * 2. Invariance at batch 128 (test 'invariance'): fused vs unfused, 1 vs 2
 *    threads, DD_CONV_DIRECT vs AUTO give the same GFA gradient, plain
 *    gradient and input gradient, within 2e-3 of the tensor's scale: the
 *    configurations sum in different orders (Winograd's transforms,
 *    oneDNN's per-thread weight-gradient reductions, folded batch norms),
 *    and those float32 differences are then amplified by the same mask and
 *    cancellation effects as above; a defect of the kind this guards
 *    against (a fused or threaded path computing something else) is off by
 *    O(1).
 * 3. Repeatability: two GFA trainings of each model with the same seed and
 *    2 threads give bitwise-equal weights after 4 steps.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>
#include "ref/ref.h"

#define OK(call) ck_assert_msg((call) == DD_OK, "%s: %s", #call, dd_last_error())
#define LAMBDA 0.05f

typedef struct {
    dd_model *m;
    int nparams;
    size_t ntrain; /* trainable floats */
} model;

static dd_param_info pinfo(const dd_model *m, int i) {
    dd_param_info pi;
    OK(dd_model_param_info(m, i, &pi));
    return pi;
}

static model make(const char *arch, int threads, int fuse, dd_conv_algo algo, int max_batch) {
    model r;
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = threads;
    o.fuse_layers = fuse;
    o.conv_algo = algo;
    o.seed = 5;
    OK(dd_zoo_create(&r.m, arch, 3, 32, 32, 10, 1, NULL, NULL, max_batch, &o));
    OK(dd_model_num_params(r.m, &r.nparams));
    r.ntrain = 0;
    for (int i = 0; i < r.nparams; i++) {
        dd_param_info pi = pinfo(r.m, i);
        if (pi.trainable) r.ntrain += pi.count;
    }
    return r;
}

static void data(int n, uint64_t seed, float *x, int32_t *y) {
    ref_rng g;
    ref_rng_seed(&g, seed);
    ref_fill_uniform_f(&g, x, (size_t)n * 3 * 32 * 32, 0.0, 1.0);
    for (int i = 0; i < n; i++) y[i] = (int32_t)(ref_rng_uniform(&g) * 10) % 10;
}

/* steps SGD steps (plain, or GFA when the model has hooks) on (x, y). */
static void train(dd_model *m, const float *x, const int32_t *y, int n, int steps) {
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, DD_OPTIM_SGD);
    oo.lr = 0.02f;
    dd_optimizer *opt;
    OK(dd_optimizer_create(&opt, m, &oo));
    for (int s = 0; s < steps; s++) {
        OK(dd_model_zero_grad(m));
        OK(dd_model_forward(m, x, n, DD_TRAIN, NULL));
        OK(dd_model_backward(m, y, NULL));
        OK(dd_optimizer_step(opt));
    }
    dd_optimizer_destroy(opt);
}

/* The trainable gradients after zero_grad + forward(mode) + backward. */
static void grads(model *mm, const float *x, const int32_t *y, int n, dd_mode mode, float *out) {
    OK(dd_model_zero_grad(mm->m));
    OK(dd_model_forward(mm->m, x, n, mode, NULL));
    OK(dd_model_backward(mm->m, y, NULL));
    size_t off = 0;
    for (int i = 0; i < mm->nparams; i++) {
        dd_param_info pi = pinfo(mm->m, i);
        if (!pi.trainable) continue;
        OK(dd_model_grad_read(mm->m, i, out + off, pi.count));
        off += pi.count;
    }
}

static void set_lambdas(dd_model *m, float lambda) {
    int nh;
    OK(dd_gfa_num_hooks(m, &nh));
    for (int h = 0; h < nh; h++) {
        dd_node node;
        OK(dd_gfa_get_hook(m, h, &node, NULL));
        OK(dd_gfa_hook(m, node, lambda));
    }
}

/* grad J - grad L of the library (the hook set stays; lambda 0 for L);
 * grad L itself into plain (ntrain floats) unless NULL. */
static void lib_reg_grad(model *mm, const float *x, const int32_t *y, int n, dd_mode mode, float *out,
                         float *plain) {
    float *gl = malloc(mm->ntrain * sizeof(float));
    ck_assert(gl);
    grads(mm, x, y, n, mode, out);
    set_lambdas(mm->m, 0.0f);
    grads(mm, x, y, n, mode, gl);
    set_lambdas(mm->m, LAMBDA);
    for (size_t i = 0; i < mm->ntrain; i++) out[i] -= gl[i];
    if (plain) memcpy(plain, gl, mm->ntrain * sizeof(float));
    free(gl);
}

/* Per trainable tensor t, |a_t - b_t| / max(|b_t|, floor |b|) in the
 * Euclidean norm (a few float32 mask decisions move single entries; the
 * norm weighs them by their share of the tensor, where max-abs would let one
 * entry decide), and beside it the max-abs version for the log. The worst
 * norm error over tensors, its name in *worst. a is float, b double (b_f
 * NULL) or float (b_d NULL). */
static double tensor_err(const model *mm, const float *a, const double *b_d, const float *b_f, double floor,
                         const char **worst, int verbose) {
    double ball = 0.0;
    for (size_t i = 0; i < mm->ntrain; i++) {
        double bv = b_d ? b_d[i] : (double)b_f[i];
        ball += bv * bv;
    }
    ball = sqrt(ball);
    double w = 0.0;
    size_t off = 0;
    *worst = "";
    for (int p = 0; p < mm->nparams; p++) {
        dd_param_info pi = pinfo(mm->m, p);
        if (!pi.trainable) continue;
        double d2 = 0.0, b2 = 0.0, dmax = 0.0, bmax = 1e-300;
        for (size_t i = 0; i < pi.count; i++) {
            double bv = b_d ? b_d[off + i] : (double)b_f[off + i];
            double d = (double)a[off + i] - bv;
            d2 += d * d;
            b2 += bv * bv;
            dmax = fmax(dmax, fabs(d));
            bmax = fmax(bmax, fabs(bv));
        }
        double e = sqrt(d2) / fmax(sqrt(b2), floor * ball + 1e-300);
        if (verbose) printf("  %-28s norm %.3e  max %.3e\n", pi.name, e, dmax / bmax);
        if (e > w) {
            w = e;
            *worst = pi.name;
        }
        off += pi.count;
    }
    return w;
}

static int verbose(void) { return getenv("DD_TEST_VERBOSE") != NULL; }

/* ---- 1. against the double reference ------------------------------------- */

static void reference_case_loss(const char *arch, dd_mode mode, dd_gfa_mode gmode, dd_loss_kind loss);
static void reference_case(const char *arch, dd_mode mode) {
    reference_case_loss(arch, mode, DD_GFA_SIN2, DD_LOSS_CE);
}
static void reference_case_mode(const char *arch, dd_mode mode, dd_gfa_mode gmode) {
    reference_case_loss(arch, mode, gmode, DD_LOSS_CE);
}

/* With MSE the plain gradient grad L (lambda 0) is checked too, against
 * the reference's backward of its own MSE (a loss new in this release). */
static void reference_case_loss(const char *arch, dd_mode mode, dd_gfa_mode gmode, dd_loss_kind loss) {
    enum { B = 64 };
    size_t in = (size_t)B * 3 * 32 * 32;
    float *x = malloc(in * sizeof(float));
    double *xd = malloc(in * sizeof(double));
    int32_t y[B];
    ck_assert(x && xd);
    data(B, 11, x, y);
    model mm = make(arch, 2, 1, DD_CONV_AUTO, B);
    OK(dd_model_set_loss(mm.m, loss));
    train(mm.m, x, y, B, 5);
    OK(dd_gfa_hook_defaults(mm.m, LAMBDA, gmode));
    float *lib = malloc(mm.ntrain * sizeof(float));
    double *ref = malloc(mm.ntrain * sizeof(double));
    ck_assert(lib && ref);
    ref_model *r;
    ck_assert_msg(ref_model_create(&r, mm.m) == 0, "%s", ref_error());
    float *plain = loss == DD_LOSS_MSE ? malloc(mm.ntrain * sizeof(float)) : NULL;
    lib_reg_grad(&mm, x, y, B, mode, lib, plain);
    ref_hooks hk;
    memset(&hk, 0, sizeof hk);
    hk.mode = (int)gmode;
    OK(dd_gfa_num_hooks(mm.m, &hk.count));
    for (int h = 0; h < hk.count; h++) {
        float l;
        OK(dd_gfa_get_hook(mm.m, h, &hk.node[h], &l));
        hk.lambda[h] = l;
    }
    ref_to_double(x, xd, in);
    ck_assert_msg(ref_reg_grad(r, xd, B, y, mode == DD_TRAIN, &hk, ref) == 0, "%s", ref_error());
    const char *worst;
    const char *what = loss == DD_LOSS_MSE ? (gmode == DD_GFA_COS ? "cos mse" : "sin2 mse")
                                           : (gmode == DD_GFA_COS ? "cos" : "sin2");
    if (plain) {
        /* the reference's plain gradient of its MSE: forward, loss, backward */
        ck_assert_int_eq(ref_forward(r, xd, B, mode == DD_TRAIN, 0), 0);
        double *dz = malloc((size_t)B * 10 * sizeof(double)), *pg = malloc(mm.ntrain * sizeof(double));
        ck_assert(dz && pg);
        ref_loss(r, y, dz, NULL);
        ck_assert_int_eq(ref_backward(r, dz), 0);
        size_t off = 0;
        for (int p = 0; p < ref_num_params(r); p++) {
            if (!ref_param_trainable(r, p)) continue;
            memcpy(pg + off, ref_param_grad(r, p), ref_param_count(r, p) * sizeof(double));
            off += ref_param_count(r, p);
        }
        /* the same float32 mask decisions as the GFA term below */
        double ep = tensor_err(&mm, plain, pg, NULL, 1e-3, &worst, verbose());
        printf("%s %s %s: plain gradient vs double reference, worst tensor %s %.3e\n", arch,
               mode == DD_TRAIN ? "train" : "eval", what, worst, ep);
        ck_assert_msg(ep <= 1e-2, "%s: MSE gradient off by %.3e in %s", arch, ep, worst);
        free(dz);
        free(pg);
        free(plain);
    }
    if (verbose())
        printf("%s %s: regulariser part, lib vs double reference\n", arch,
               mode == DD_TRAIN ? "train" : "eval");
    double e = tensor_err(&mm, lib, ref, NULL, 1e-3, &worst, verbose());
    printf("%s %s %s: GFA term vs double reference, worst tensor %s %.3e\n", arch,
           mode == DD_TRAIN ? "train" : "eval", what, worst, e);
    ck_assert_msg(e <= 1e-2, "%s %s: GFA term off by %.3e in %s", arch, mode == DD_TRAIN ? "train" : "eval",
                  e, worst);
    ref_model_destroy(r);
    dd_model_destroy(mm.m);
    free(x);
    free(xd);
    free(lib);
    free(ref);
}

START_TEST(cnn_cw_train) { reference_case("cnn-cw", DD_TRAIN); }
END_TEST
START_TEST(cnn_cw_eval) { reference_case("cnn-cw", DD_EVAL); }
END_TEST
START_TEST(cnn_cw_train_cos) { reference_case_mode("cnn-cw", DD_TRAIN, DD_GFA_COS); }
END_TEST
START_TEST(cnn_cw_train_mse_cos) { reference_case_loss("cnn-cw", DD_TRAIN, DD_GFA_COS, DD_LOSS_MSE); }
END_TEST
START_TEST(resnet20_train) { reference_case("resnet20", DD_TRAIN); }
END_TEST
START_TEST(resnet20_eval) { reference_case("resnet20", DD_EVAL); }
END_TEST

/* ---- 2. invariance ------------------------------------------------------- */

/* Every parameter and buffer of src into dst (same architecture). */
static void copy_params(const model *src, model *dst) {
    for (int i = 0; i < src->nparams; i++) {
        dd_param_info pi = pinfo(src->m, i);
        float *v = malloc(pi.count * sizeof(float));
        ck_assert(v);
        OK(dd_model_param_read(src->m, i, v, pi.count));
        OK(dd_model_param_write(dst->m, i, v, pi.count));
        free(v);
    }
}

typedef struct {
    float *gfa, *plain, *dx;
} results;

/* GFA gradient (default hooks), plain gradient, input gradient of mm on
 * (x, y, dl) in mode; hooks are cleared afterwards. */
static results run_all(model *mm, const float *x, const int32_t *y, const float *dl, int n, dd_mode mode) {
    results r;
    r.gfa = malloc(mm->ntrain * sizeof(float));
    r.plain = malloc(mm->ntrain * sizeof(float));
    r.dx = malloc((size_t)n * 3 * 32 * 32 * sizeof(float));
    ck_assert(r.gfa && r.plain && r.dx);
    OK(dd_gfa_hook_defaults(mm->m, LAMBDA, DD_GFA_SIN2));
    grads(mm, x, y, n, mode, r.gfa);
    OK(dd_gfa_clear(mm->m));
    grads(mm, x, y, n, mode, r.plain);
    OK(dd_model_forward(mm->m, x, n, mode, NULL));
    OK(dd_model_input_grad(mm->m, dl, r.dx));
    return r;
}

static void free_results(results *r) {
    free(r->gfa);
    free(r->plain);
    free(r->dx);
}

/* |a - b| / |b| over the whole of two float arrays. */
static double norm_err(const float *a, const float *b, size_t n) {
    double d2 = 0, b2 = 1e-300;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        d2 += d * d;
        b2 += (double)b[i] * b[i];
    }
    return sqrt(d2 / b2);
}

static void invariance_case(const char *arch, dd_mode mode) {
    enum { B = 128 };
    size_t in = (size_t)B * 3 * 32 * 32;
    float *x = malloc(in * sizeof(float)), *dl = malloc(B * 10 * sizeof(float));
    int32_t y[B];
    ck_assert(x && dl);
    data(B, 23, x, y);
    ref_rng g;
    ref_rng_seed(&g, 29);
    ref_fill_uniform_f(&g, dl, B * 10, -1.0, 1.0);
    model base = make(arch, 2, 1, DD_CONV_AUTO, B);
    train(base.m, x, y, B, 3);
    results rb = run_all(&base, x, y, dl, B, mode);
    /* Training-mode batch norm (resnet20): the plain gradient itself moves
     * by 1-3% between thread counts, and each is 1-3% from the double
     * reference at 1 and 2 threads alike (measured with oneDNN's
     * bnorm_jit:avx2; 6e-3 with its reference kernels at batch 16): the
     * float32 limit of this model here, not a GFA term. 5e-2 still catches
     * the O(1) errors of a wrong path. */
    double tol = mode == DD_TRAIN && !strcmp(arch, "resnet20") ? 5e-2 : 2e-3;
    struct {
        const char *what;
        int threads, fuse;
        dd_conv_algo algo;
    } cfg[3] = {
        {"unfused", 2, 0, DD_CONV_AUTO}, {"1 thread", 1, 1, DD_CONV_AUTO}, {"direct", 2, 1, DD_CONV_DIRECT}};
    for (int c = 0; c < 3; c++) {
        model o = make(arch, cfg[c].threads, cfg[c].fuse, cfg[c].algo, B);
        copy_params(&base, &o);
        results ro = run_all(&o, x, y, dl, B, mode);
        const char *wg, *wp;
        double eg = tensor_err(&base, ro.gfa, NULL, rb.gfa, 1e-3, &wg, 0);
        double ep = tensor_err(&base, ro.plain, NULL, rb.plain, 1e-3, &wp, 0);
        double ex = norm_err(ro.dx, rb.dx, in);
        printf("%s %s, %s vs default: GFA gradient %.2e (%s), plain %.2e (%s), input gradient %.2e\n", arch,
               mode == DD_TRAIN ? "train" : "eval", cfg[c].what, eg, wg, ep, wp, ex);
        /* direct vs the default, where the default is Winograd (oneDNN has
         * it on AVX-512 only): Winograd's tile transforms round differently
         * from direct convolution at every 3x3 layer, and over resnet20's
         * 19 convolutions the input gradient moved by 2.5e-3 in eval mode
         * (measured on an AVX-512 EPYC, 2026-12-02; the 2e-3 above was set
         * on an AVX2 machine, which runs no Winograd). 1e-2 there; O(1) is
         * what a wrong path gives. */
        double t = cfg[c].algo == DD_CONV_DIRECT && tol < 1e-2 ? 1e-2 : tol;
        ck_assert_msg(eg <= t && ep <= t && ex <= t, "%s %s: %s changes the gradients: %.2e %.2e %.2e", arch,
                      mode == DD_TRAIN ? "train" : "eval", cfg[c].what, eg, ep, ex);
        free_results(&ro);
        dd_model_destroy(o.m);
    }
    free_results(&rb);
    dd_model_destroy(base.m);
    free(x);
    free(dl);
}

START_TEST(invariance_cnn_cw) {
    invariance_case("cnn-cw", DD_TRAIN);
    invariance_case("cnn-cw", DD_EVAL);
}
END_TEST
START_TEST(invariance_resnet20) {
    invariance_case("resnet20", DD_TRAIN);
    invariance_case("resnet20", DD_EVAL);
}
END_TEST

/* ---- 3. repeatability ----------------------------------------------------- */

static void repeat_case(const char *arch) {
    enum { B = 64 };
    size_t in = (size_t)B * 3 * 32 * 32;
    float *x = malloc(in * sizeof(float));
    int32_t y[B];
    ck_assert(x);
    data(B, 37, x, y);
    float *w[2];
    size_t nt = 0;
    for (int run = 0; run < 2; run++) {
        model mm = make(arch, 2, 1, DD_CONV_AUTO, B);
        OK(dd_gfa_hook_defaults(mm.m, LAMBDA, DD_GFA_SIN2));
        train(mm.m, x, y, B, 4);
        nt = 0;
        for (int i = 0; i < mm.nparams; i++) nt += pinfo(mm.m, i).count;
        w[run] = malloc(nt * sizeof(float));
        ck_assert(w[run]);
        size_t off = 0;
        for (int i = 0; i < mm.nparams; i++) {
            dd_param_info pi = pinfo(mm.m, i);
            OK(dd_model_param_read(mm.m, i, w[run] + off, pi.count));
            off += pi.count;
        }
        dd_model_destroy(mm.m);
    }
    size_t diff = 0;
    for (size_t i = 0; i < nt; i++) diff += memcmp(&w[0][i], &w[1][i], sizeof(float)) != 0;
    ck_assert_msg(diff == 0, "%s: %zu of %zu floats differ between two GFA trainings", arch, diff, nt);
    free(w[0]);
    free(w[1]);
    free(x);
}

START_TEST(repeatable_cnn_cw) { repeat_case("cnn-cw"); }
END_TEST
START_TEST(repeatable_resnet20) { repeat_case("resnet20"); }
END_TEST

Suite *gfa_prod_suite(void) {
    Suite *s = suite_create("gfa_prod");
    TCase *ref = tcase_create("reference");
    tcase_set_timeout(ref, 300);
    tcase_add_test(ref, cnn_cw_train);
    tcase_add_test(ref, cnn_cw_eval);
    tcase_add_test(ref, cnn_cw_train_cos);
    tcase_add_test(ref, cnn_cw_train_mse_cos);
    tcase_add_test(ref, resnet20_train);
    tcase_add_test(ref, resnet20_eval);
    suite_add_tcase(s, ref);
    TCase *inv = tcase_create("invariance");
    tcase_set_timeout(inv, 300);
    tcase_add_test(inv, invariance_cnn_cw);
    tcase_add_test(inv, invariance_resnet20);
    suite_add_tcase(s, inv);
    TCase *rep = tcase_create("repeatability");
    tcase_set_timeout(rep, 300);
    tcase_add_test(rep, repeatable_cnn_cw);
    tcase_add_test(rep, repeatable_resnet20);
    suite_add_tcase(s, rep);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(gfa_prod_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
