/* tests/check_faults.c -- numerical faults: NaN/Inf given by the host or
 * arising in training must be refused with DD_ERR_NUMERIC, and leave the
 * model's parameters (batch-norm running statistics included), its
 * accumulated gradients and the optimizer's state exactly as they were.
 *
 * "Exactly" is bitwise: every test snapshots all parameter tensors
 * (dd_model_param_read), all gradients (dd_model_grad_read), the optimizer's
 * state blob and step count (dd_optimizer_state_read, dd_optimizer_steps)
 * and compares the bytes after the failing call. Faults are produced in
 * four ways, each with a closed-form reason to fail:
 *   - inputs holding NaN, +Inf or -Inf (first, middle, last element) to
 *     every public function that takes float data;
 *   - weights scaled so that the logits overflow float (|z| > FLT_MAX):
 *     the forward pass must refuse;
 *   - finite logits and loss but a gradient that overflows: with x = 4,
 *     tiny first-layer weights and last-layer weights 1e38, the first
 *     layer's weight gradient is sum_n (1e38 / N) * 4 = 4e38 > FLT_MAX
 *     (derivation in test_gradient_overflow);
 *   - a run made to diverge with learning rate 1e30 (and FLT_MAX): whatever
 *     step first meets a non-finite value must refuse it, and no step may
 *     report success while leaving a non-finite parameter behind.
 * The plain and the GFA backward pass are both covered (loop tests). The
 * optimizer's own check is driven directly: a NaN is written into one
 * gradient through the internal model struct (lib/graph/graph.h), the only
 * way to hand the optimizer a gradient that the backward pass would refuse.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>

#include "graph/graph.h"

#define OK(call) ck_assert_msg((call) == DD_OK, "%s: %s", #call, dd_last_error())

/* ---- snapshots --------------------------------------------------------- */

typedef struct snap {
    size_t nparam, ngrad;
    float *params;      /* every parameter tensor, concatenated */
    float *grads;       /* every gradient (0 for running statistics) */
    unsigned char *opt; /* optimizer state blob (NULL without optimizer) */
    size_t opt_bytes;
    int64_t steps;
} snap;

static size_t total_floats(const dd_model *m) {
    int np = 0;
    OK(dd_model_num_params(m, &np));
    size_t total = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        OK(dd_model_param_info(m, i, &pi));
        total += pi.count;
    }
    return total;
}

static void snap_take(const dd_model *m, const dd_optimizer *opt, snap *s) {
    memset(s, 0, sizeof *s);
    size_t total = total_floats(m);
    s->nparam = s->ngrad = total;
    s->params = malloc(total * sizeof(float));
    s->grads = malloc(total * sizeof(float));
    ck_assert(s->params && s->grads);
    int np = 0;
    OK(dd_model_num_params(m, &np));
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        dd_param_info pi;
        OK(dd_model_param_info(m, i, &pi));
        OK(dd_model_param_read(m, i, s->params + off, pi.count));
        OK(dd_model_grad_read(m, i, s->grads + off, pi.count));
        off += pi.count;
    }
    if (opt) {
        OK(dd_optimizer_state_size(opt, &s->opt_bytes));
        s->opt = malloc(s->opt_bytes ? s->opt_bytes : 1);
        ck_assert_ptr_nonnull(s->opt);
        OK(dd_optimizer_state_read(opt, s->opt, s->opt_bytes));
        OK(dd_optimizer_steps(opt, &s->steps));
    }
}

static void snap_free(snap *s) {
    free(s->params);
    free(s->grads);
    free(s->opt);
    memset(s, 0, sizeof *s);
}

/* Bitwise equality of everything a snapshot holds (grads only if asked). */
static void snap_assert_same(const snap *a, const snap *b, int grads, const char *what) {
    ck_assert_uint_eq(a->nparam, b->nparam);
    for (size_t i = 0; i < a->nparam; i++)
        ck_assert_msg(memcmp(&a->params[i], &b->params[i], sizeof(float)) == 0,
                      "%s: parameter float %zu changed from %g to %g", what, i, (double)a->params[i],
                      (double)b->params[i]);
    for (size_t i = 0; grads && i < a->ngrad; i++)
        ck_assert_msg(memcmp(&a->grads[i], &b->grads[i], sizeof(float)) == 0,
                      "%s: gradient float %zu changed from %g to %g", what, i, (double)a->grads[i],
                      (double)b->grads[i]);
    ck_assert_uint_eq(a->opt_bytes, b->opt_bytes);
    if (a->opt) ck_assert_msg(memcmp(a->opt, b->opt, a->opt_bytes) == 0, "%s: optimizer state changed", what);
    ck_assert_msg(a->steps == b->steps, "%s: optimizer step count changed", what);
}

static void assert_params_finite(const dd_model *m, const char *what) {
    snap s;
    snap_take(m, NULL, &s);
    for (size_t i = 0; i < s.nparam; i++)
        ck_assert_msg(isfinite(s.params[i]),
                      "%s: parameter float %zu is %g after a step that "
                      "reported success",
                      what, i, (double)s.params[i]);
    snap_free(&s);
}

/* ---- models and data --------------------------------------------------- */

static dd_model *new_model(int c, int h, int w, int k) {
    dd_model_options o;
    dd_model_options_init(&o);
    o.num_threads = 1;
    o.seed = 7;
    dd_model *m = NULL;
    OK(dd_model_create(&m, c, h, w, k, &o));
    return m;
}

/* (N, 1, 6, 6) -> conv 3x3x3 pad 1 -> [batchnorm] -> relu -> maxpool 2 ->
 * flatten -> linear 3. */
static dd_model *small_cnn(int bn) {
    dd_model *m = new_model(1, 6, 6, 3);
    dd_conv2d_options co;
    dd_conv2d_options_init(&co);
    co.out_channels = 3;
    co.pad_h = co.pad_w = 1;
    dd_node t, r, p, f, z;
    OK(dd_model_add_conv2d(m, DD_INPUT, &co, &t));
    if (bn) {
        dd_batchnorm_options bo;
        dd_batchnorm_options_init(&bo);
        OK(dd_model_add_batchnorm(m, t, &bo, &t));
    }
    OK(dd_model_add_relu(m, t, NULL, &r));
    dd_pool_options po;
    dd_pool_options_init(&po);
    OK(dd_model_add_maxpool(m, r, &po, &p));
    OK(dd_model_add_flatten(m, p, NULL, &f));
    OK(dd_model_add_linear(m, f, 3, 1, NULL, &z));
    OK(dd_model_build(m, z, 16));
    return m;
}

/* (N, 1, 2, 2) -> flatten -> linear 4 (param 0 weight, 1 bias) -> relu ->
 * linear 2 (param 2 weight, 3 bias). */
static dd_model *small_mlp(void) {
    dd_model *m = new_model(1, 2, 2, 2);
    dd_node f, l1, r, l2;
    OK(dd_model_add_flatten(m, DD_INPUT, NULL, &f));
    OK(dd_model_add_linear(m, f, 4, 1, NULL, &l1));
    OK(dd_model_add_relu(m, l1, NULL, &r));
    OK(dd_model_add_linear(m, r, 2, 1, NULL, &l2));
    OK(dd_model_build(m, l2, 16));
    return m;
}

static uint64_t lcg_state = 12345;
static float frand(void) {
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((lcg_state >> 40) & 0xffffff) / 16777216.0f;
}

static void fill_batch(float *x, size_t count, int32_t *labels, int n, int k) {
    for (size_t i = 0; i < count; i++) x[i] = frand();
    for (int i = 0; i < n; i++) labels[i] = (int32_t)(frand() * (float)k) % k;
}

/* Sets every element of parameter `index` to v. */
static void param_fill(dd_model *m, int index, float v) {
    dd_param_info pi;
    OK(dd_model_param_info(m, index, &pi));
    float *buf = malloc(pi.count * sizeof *buf);
    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < pi.count; i++) buf[i] = v;
    OK(dd_model_param_write(m, index, buf, pi.count));
    free(buf);
}

/* One ordinary training step, so that gradients and the optimizer state are
 * non-zero before a fault is provoked. */
static void normal_step(dd_model *m, dd_optimizer *opt, int n) {
    int c, h, w, k;
    OK(dd_model_input_shape(m, &c, &h, &w));
    OK(dd_model_num_classes(m, &k));
    size_t count = (size_t)n * c * h * w;
    float *x = malloc(count * sizeof *x);
    int32_t *y = malloc((size_t)n * sizeof *y);
    ck_assert(x && y);
    fill_batch(x, count, y, n, k);
    OK(dd_model_zero_grad(m));
    OK(dd_model_forward(m, x, n, DD_TRAIN, NULL));
    OK(dd_model_backward(m, y, NULL));
    if (opt) OK(dd_optimizer_step(opt));
    /* leave a second, un-applied gradient accumulated */
    OK(dd_model_forward(m, x, n, DD_TRAIN, NULL));
    OK(dd_model_backward(m, y, NULL));
    free(x);
    free(y);
}

static dd_optimizer *new_optimizer(dd_model *m, dd_optimizer_kind kind, float lr) {
    dd_optimizer_options oo;
    dd_optimizer_options_init(&oo, kind);
    if (lr > 0.0f) oo.lr = lr;
    dd_optimizer *opt = NULL;
    OK(dd_optimizer_create(&opt, m, &oo));
    return opt;
}

static const float bad_values[3] = {NAN, INFINITY, -INFINITY};

/* ---- host inputs ------------------------------------------------------- */

START_TEST(test_forward_nonfinite_input) {
    dd_model *m = small_cnn(1);
    dd_optimizer *opt = new_optimizer(m, DD_OPTIM_SGD, 0.0f);
    normal_step(m, opt, 4);
    enum { N = 4, IN = N * 36 };
    float x[IN], logits[N * 3];
    int32_t y[N];
    fill_batch(x, IN, y, N, 3);
    snap before, after;
    snap_take(m, opt, &before);
    const size_t where[3] = {0, IN / 2, IN - 1};
    for (int mode = 0; mode < 2; mode++)
        for (int b = 0; b < 3; b++)
            for (int w = 0; w < 3; w++) {
                float keep = x[where[w]];
                x[where[w]] = bad_values[b];
                for (int i = 0; i < N * 3; i++) logits[i] = 42.0f;
                dd_status s = dd_model_forward(m, x, N, mode ? DD_TRAIN : DD_EVAL, logits);
                ck_assert_msg(s == DD_ERR_NUMERIC, "mode %d value %g at %zu: %s", mode, (double)bad_values[b],
                              where[w], dd_status_string(s));
                ck_assert_int_gt((int)strlen(dd_last_error()), 0);
                for (int i = 0; i < N * 3; i++) ck_assert(logits[i] == 42.0f); /* nothing written */
                x[where[w]] = keep;
                snap_take(m, opt, &after);
                snap_assert_same(&before, &after, 1, "forward on NaN/Inf input");
                snap_free(&after);
            }
    /* still usable */
    OK(dd_model_forward(m, x, N, DD_EVAL, logits));
    snap_free(&before);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_other_nonfinite_inputs) {
    dd_model *m = small_cnn(0);
    enum { N = 2, IN = N * 36 };
    float x[IN], dlogits[N * 3], dx[IN];
    int32_t y[N];
    fill_batch(x, IN, y, N, 3);
    normal_step(m, NULL, N);
    OK(dd_model_forward(m, x, N, DD_EVAL, NULL));
    snap before, after;
    snap_take(m, NULL, &before);
    for (int b = 0; b < 3; b++) {
        for (int i = 0; i < N * 3; i++) dlogits[i] = 0.25f;
        dlogits[N * 3 - 1 - b] = bad_values[b];
        ck_assert_int_eq(dd_model_backward_logits(m, dlogits, NULL), DD_ERR_NUMERIC);
        for (int i = 0; i < IN; i++) dx[i] = 7.0f;
        ck_assert_int_eq(dd_model_input_grad(m, dlogits, dx), DD_ERR_NUMERIC);
        for (int i = 0; i < IN; i++) ck_assert(dx[i] == 7.0f);
        snap_take(m, NULL, &after);
        snap_assert_same(&before, &after, 1, "backward_logits / input_grad on NaN/Inf");
        snap_free(&after);

        /* a parameter write of a NaN/Inf is refused, the parameter kept */
        dd_param_info pi;
        OK(dd_model_param_info(m, 0, &pi));
        float *w = malloc(pi.count * sizeof *w);
        ck_assert_ptr_nonnull(w);
        OK(dd_model_param_read(m, 0, w, pi.count));
        w[pi.count / 2] = bad_values[b];
        ck_assert_int_eq(dd_model_param_write(m, 0, w, pi.count), DD_ERR_NUMERIC);
        free(w);
        snap_take(m, NULL, &after);
        snap_assert_same(&before, &after, 1, "param_write of NaN/Inf");
        snap_free(&after);

        /* datasets refuse NaN/Inf pixels */
        dd_dataset *ds = (dd_dataset *)&ds;
        float px[IN];
        for (int i = 0; i < IN; i++) px[i] = 0.5f;
        px[b] = bad_values[b];
        ck_assert_int_eq(dd_dataset_from_memory(&ds, px, y, N, 1, 6, 6, 3), DD_ERR_NUMERIC);
        ck_assert_ptr_null(ds);

        /* attacks refuse NaN/Inf images and write nothing */
        dd_attack_options ao;
        dd_attack_options_init(&ao, DD_ATTACK_PGD_LINF);
        ao.steps = 2;
        dd_attack *a = NULL;
        OK(dd_attack_create(&a, m, &ao));
        float adv[IN];
        for (int i = 0; i < IN; i++) adv[i] = 3.0f;
        float xb[IN];
        memcpy(xb, x, sizeof xb);
        xb[IN / 2] = bad_values[b];
        ck_assert_int_eq(dd_attack_run(a, xb, y, N, adv, NULL), DD_ERR_NUMERIC);
        for (int i = 0; i < IN; i++) ck_assert(adv[i] == 3.0f);
        dd_attack_destroy(a);
        snap_take(m, NULL, &after);
        snap_assert_same(&before, &after, 1, "attack on NaN/Inf");
        snap_free(&after);
    }
    snap_free(&before);
    dd_model_destroy(m);
}
END_TEST

/* ---- faults arising in training (_i: 0 plain, 1 GFA SIN2, 2 GFA TANGENT) */

static void set_hooks(dd_model *m, int variant) {
    if (variant == 1)
        OK(dd_gfa_hook_defaults(m, 0.1f, DD_GFA_SIN2));
    else if (variant == 2)
        OK(dd_gfa_hook_defaults(m, 0.01f, DD_GFA_TANGENT));
}

static const char *variant_name[3] = {"plain", "GFA sin2", "GFA tangent"};

START_TEST(test_logits_overflow) {
    dd_model *m = small_mlp();
    set_hooks(m, _i);
    dd_optimizer *opt = new_optimizer(m, DD_OPTIM_ADAM, 0.0f);
    normal_step(m, opt, 8);
    /* |h| ~ 1e20 * 4 * 0.5, |z| ~ 1e20 * 4 * 2e20 = 8e40 > FLT_MAX. */
    param_fill(m, 0, 1e20f);
    param_fill(m, 2, 1e20f);
    enum { N = 8 };
    float x[N * 4], logits[N * 2];
    int32_t y[N];
    fill_batch(x, N * 4, y, N, 2);
    snap before, after;
    snap_take(m, opt, &before);
    for (int mode = 0; mode < 2; mode++) {
        dd_status s = dd_model_forward(m, x, N, mode ? DD_TRAIN : DD_EVAL, logits);
        ck_assert_msg(s == DD_ERR_NUMERIC, "%s: forward with overflowing logits: %s", variant_name[_i],
                      dd_status_string(s));
        /* no forward pass to differentiate: backward refuses, changes nothing */
        ck_assert_int_eq(dd_model_backward(m, y, NULL), DD_ERR_STATE);
        snap_take(m, opt, &after);
        snap_assert_same(&before, &after, 1, variant_name[_i]);
        snap_free(&after);
    }
    snap_free(&before);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_gradient_overflow) {
    dd_model *m = small_mlp();
    set_hooks(m, _i);
    dd_optimizer *opt = new_optimizer(m, DD_OPTIM_SGD, 0.0f);
    normal_step(m, opt, 8);
    /* x = 4, W1 = 1e-30, b1 = 0: h_j = 4 * 4e-30 = 1.6e-29 (> 0, ReLU' = 1).
     * W2 row 0 = 0, row 1 = 1e38, b2 = 0: z = (0, 6.4e9), finite; labels 0,
     * so p = (0, 1), the loss 6.4e9 is finite and dL/dz_n = (-1/N, 1/N).
     * dL/dh_n,j = 1e38 / N, and dL/dW1[j][i] = sum_n (1e38 / N) * 4 = 4e38,
     * which exceeds FLT_MAX = 3.4e38: the gradient is +Inf in float. */
    param_fill(m, 0, 1e-30f);
    param_fill(m, 1, 0.0f);
    param_fill(m, 3, 0.0f);
    const float w2[8] = {0, 0, 0, 0, 1e38f, 1e38f, 1e38f, 1e38f};
    OK(dd_model_param_write(m, 2, w2, 8));
    enum { N = 16 };
    float x[N * 4], logits[N * 2];
    int32_t y[N];
    for (int i = 0; i < N * 4; i++) x[i] = 4.0f;
    for (int i = 0; i < N; i++) y[i] = 0;
    snap before, after;
    snap_take(m, opt, &before);
    OK(dd_model_forward(m, x, N, DD_TRAIN, logits));
    for (int n = 0; n < N; n++)
        ck_assert(logits[2 * n] == 0.0f && isfinite(logits[2 * n + 1]) && logits[2 * n + 1] > 6e9f);
    dd_step_stats st;
    dd_step_stats_init(&st);
    dd_status s = dd_model_backward(m, y, &st);
    ck_assert_msg(s == DD_ERR_NUMERIC, "%s: backward with a gradient of 4e38: %s", variant_name[_i],
                  dd_status_string(s));
    ck_assert_int_gt((int)strlen(dd_last_error()), 0);
    snap_take(m, opt, &after);
    snap_assert_same(&before, &after, 1, variant_name[_i]);
    snap_free(&after);
    /* the optimizer then applies the gradient accumulated before: finite */
    OK(dd_optimizer_step(opt));
    snap_free(&before);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

/* A run made to diverge by an absurd learning rate. _i: variant as above,
 * learning rate 1e30 on a model with batch norm; _i + 3: FLT_MAX without. */
START_TEST(test_divergence) {
    int variant = _i % 3, bn = _i < 3;
    float lr = _i < 3 ? 1e30f : FLT_MAX;
    dd_model *m = small_cnn(bn);
    set_hooks(m, variant);
    dd_optimizer *opt = new_optimizer(m, DD_OPTIM_SGD, lr);
    enum { N = 8, IN = N * 36 };
    float x[IN];
    int32_t y[N];
    int refused = 0;
    for (int step = 0; step < 8 && !refused; step++) {
        fill_batch(x, IN, y, N, 3);
        snap before, after;
        snap_take(m, opt, &before);
        const char *where = "forward";
        OK(dd_model_zero_grad(m));
        dd_status s = dd_model_forward(m, x, N, DD_TRAIN, NULL);
        if (s == DD_OK) {
            where = "backward";
            s = dd_model_backward(m, y, NULL);
        }
        if (s == DD_OK) {
            where = "optimizer step";
            s = dd_optimizer_step(opt);
        }
        if (s == DD_OK) {
            char what[128];
            snprintf(what, sizeof what, "%s, lr %g, %s, step %d", variant_name[variant], (double)lr,
                     bn ? "batch norm" : "no batch norm", step);
            assert_params_finite(m, what);
        } else {
            ck_assert_msg(s == DD_ERR_NUMERIC, "%s step %d: %s returned %s (%s)", variant_name[variant], step,
                          where, dd_status_string(s), dd_last_error());
            snap_take(m, opt, &after);
            /* zero_grad ran; a refused backward leaves the zero gradients */
            char what[160];
            snprintf(what, sizeof what, "%s, lr %g, step %d, refused by %s", variant_name[variant],
                     (double)lr, step, where);
            snap_assert_same(&before, &after, 0, what);
            snap_free(&after);
            refused = 1;
        }
        snap_free(&before);
    }
    ck_assert_msg(refused, "%s: lr %g never produced a non-finite value in 8 steps", variant_name[variant],
                  (double)lr);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

/* The optimizer's own guard: a NaN/Inf in any gradient -> DD_ERR_NUMERIC,
 * parameters, moments and step count untouched. _i: optimizer kind. */
START_TEST(test_optimizer_nonfinite_gradient) {
    const dd_optimizer_kind kinds[3] = {DD_OPTIM_SGD, DD_OPTIM_ADAM, DD_OPTIM_ADAMW};
    dd_model *m = small_cnn(1);
    dd_optimizer *opt = new_optimizer(m, kinds[_i], 0.0f);
    normal_step(m, opt, 4);
    for (int b = 0; b < 3; b++) {
        /* the last trainable parameter's last gradient element, then the first's */
        for (int which = 0; which < 2; which++) {
            int idx = -1;
            for (int i = 0; i < m->nparams; i++)
                if (m->params[i].trainable && (idx < 0 || which == 0)) idx = i;
            dd__param *p = &m->params[idx];
            size_t j = which == 0 ? p->count - 1 : 0;
            float keep = p->grad[j];
            p->grad[j] = bad_values[b];
            snap before, after;
            snap_take(m, opt, &before);
            ck_assert_int_eq(dd_optimizer_step(opt), DD_ERR_NUMERIC);
            snap_take(m, opt, &after);
            snap_assert_same(&before, &after, 1, "optimizer step on a NaN/Inf gradient");
            snap_free(&after);
            snap_free(&before);
            p->grad[j] = keep;
        }
    }
    OK(dd_optimizer_step(opt)); /* usable afterwards */
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("numeric");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_forward_nonfinite_input);
    tcase_add_test(tc, test_other_nonfinite_inputs);
    tcase_add_loop_test(tc, test_logits_overflow, 0, 3);
    tcase_add_loop_test(tc, test_gradient_overflow, 0, 3);
    tcase_add_loop_test(tc, test_divergence, 0, 6);
    tcase_add_loop_test(tc, test_optimizer_nonfinite_gradient, 0, 3);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
