/* tests/check_optim.c -- optimizers and learning-rate schedules (optim.h).
 *
 * The optimizers are checked on tiny built models: parameters are written
 * through the public API, gradients through the internal struct (so every
 * value is known exactly), and the library's float update over several
 * steps is compared with reference formulas written here in double, in the
 * textbook form (PyTorch's "clone on first step" momentum, bias-corrected
 * m-hat / v-hat for Adam) rather than the library's arrangement. The
 * comparison tolerance is 1e-6 relative to max(|reference|, 1): float
 * rounding over three steps stays near 1e-7, while every effect tested
 * (momentum, decay, bias correction, eps) moves weights by 1e-4 or more.
 * Schedules are compared with their closed forms at boundaries, endpoints
 * and midpoints. Every public function is also given NULL and invalid
 * arguments.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <deepdefense/deepdefense.h>

#include "graph/graph.h"

/* Relative tolerance of float updates against the double references. */
#define TOL 1e-6

/* ======================================================================== */
/* Helpers                                                                   */
/* ======================================================================== */

static int close_to(double got, double want) { return fabs(got - want) <= TOL * fmax(fabs(want), 1.0); }

/* Deterministic values in [-1, 1) (an LCG; quality is irrelevant here). */
static float pseudo(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)((double)(*state >> 8) / 8388608.0 - 1.0);
}

/* Input (1, 1, width) -> flatten -> linear 3 (with bias), built for batch 2. */
static dd_model *linear_model(int width, int threads) {
    dd_model_options mo;
    dd_model_options_init(&mo);
    mo.num_threads = threads;
    dd_model *m = NULL;
    ck_assert_int_eq(dd_model_create(&m, 1, 1, width, 3, &mo), DD_OK);
    dd_node f, l;
    ck_assert_int_eq(dd_model_add_flatten(m, DD_INPUT, "flat", &f), DD_OK);
    ck_assert_int_eq(dd_model_add_linear(m, f, 3, 1, "fc", &l), DD_OK);
    ck_assert_int_eq(dd_model_build(m, l, 2), DD_OK);
    return m;
}

/* Indices of the linear layer's weight (decayed) and bias (not decayed). */
static void find_wb(const dd_model *m, int *wi, int *bi) {
    *wi = *bi = -1;
    for (int i = 0; i < m->nparams; i++) {
        if (!m->params[i].trainable) continue;
        if (m->params[i].ndims == 2)
            *wi = i;
        else if (m->params[i].ndims == 1)
            *bi = i;
    }
    ck_assert_int_ge(*wi, 0);
    ck_assert_int_ge(*bi, 0);
    ck_assert_int_eq(m->params[*wi].decay, 1);
    ck_assert_int_eq(m->params[*bi].decay, 0);
}

/* Double mirror of every trainable parameter: weights, gradients, and the
 * reference's own moments. */
typedef struct ref_state {
    int n;
    size_t count[8];
    int decay[8];
    double *w[8], *g[8], *m1[8], *m2[8];
} ref_state;

/* Sets every trainable parameter of m to pseudo-random values (in [-1.5, 1.5]),
 * mirrors them in r, and allocates zeroed moments. */
static void ref_init(ref_state *r, dd_model *m, uint32_t seed) {
    memset(r, 0, sizeof *r);
    uint32_t st = seed;
    for (int i = 0; i < m->nparams; i++) {
        dd__param *p = &m->params[i];
        if (!p->trainable) continue;
        ck_assert_int_lt(r->n, 8);
        int k = r->n++;
        r->count[k] = p->count;
        r->decay[k] = p->decay;
        r->w[k] = calloc(p->count, sizeof(double));
        r->g[k] = calloc(p->count, sizeof(double));
        r->m1[k] = calloc(p->count, sizeof(double));
        r->m2[k] = calloc(p->count, sizeof(double));
        float *tmp = malloc(p->count * sizeof(float));
        ck_assert(r->w[k] && r->g[k] && r->m1[k] && r->m2[k] && tmp);
        for (size_t j = 0; j < p->count; j++) {
            tmp[j] = 1.5f * pseudo(&st);
            r->w[k][j] = tmp[j];
        }
        ck_assert_int_eq(dd_model_param_write(m, i, tmp, p->count), DD_OK);
        free(tmp);
    }
}

static void ref_free(ref_state *r) {
    for (int k = 0; k < r->n; k++) {
        free(r->w[k]);
        free(r->g[k]);
        free(r->m1[k]);
        free(r->m2[k]);
    }
}

/* Writes fresh pseudo-random gradients (in [-scale, scale]) into the model's
 * internal gradient arrays and mirrors them. */
static void ref_set_grads(ref_state *r, dd_model *m, uint32_t seed, float scale) {
    uint32_t st = seed;
    int k = 0;
    for (int i = 0; i < m->nparams; i++) {
        dd__param *p = &m->params[i];
        if (!p->trainable) continue;
        for (size_t j = 0; j < p->count; j++) {
            p->grad[j] = scale * pseudo(&st);
            r->g[k][j] = p->grad[j];
        }
        k++;
    }
}

/* torch.optim.SGD (dampening 0) in its own form: buf = d on the first step. */
static void ref_sgd(ref_state *r, int t, double lr, double wd, double mu, int nesterov, int decay_all) {
    for (int k = 0; k < r->n; k++) {
        double wdk = (decay_all || r->decay[k]) ? wd : 0.0;
        for (size_t j = 0; j < r->count[k]; j++) {
            double d = r->g[k][j] + wdk * r->w[k][j];
            if (mu != 0.0) {
                double buf = t == 1 ? d : mu * r->m1[k][j] + d;
                r->m1[k][j] = buf;
                d = nesterov ? d + mu * buf : buf;
            }
            r->w[k][j] -= lr * d;
        }
    }
}

/* Adam (decoupled = 0, L2 decay in the gradient) or AdamW (decoupled = 1),
 * textbook form with m-hat and v-hat. */
static void ref_adam(ref_state *r, int t, double lr, double b1, double b2, double eps, double wd,
                     int decoupled, int decay_all) {
    for (int k = 0; k < r->n; k++) {
        double wdk = (decay_all || r->decay[k]) ? wd : 0.0;
        for (size_t j = 0; j < r->count[k]; j++) {
            double w = r->w[k][j], g = r->g[k][j];
            if (decoupled)
                w -= lr * wdk * w;
            else
                g += wdk * w;
            r->m1[k][j] = b1 * r->m1[k][j] + (1.0 - b1) * g;
            r->m2[k][j] = b2 * r->m2[k][j] + (1.0 - b2) * g * g;
            double mhat = r->m1[k][j] / (1.0 - pow(b1, t));
            double vhat = r->m2[k][j] / (1.0 - pow(b2, t));
            r->w[k][j] = w - lr * mhat / (sqrt(vhat) + eps);
        }
    }
}

/* Asserts the model's trainable parameters equal the reference. */
static void ref_compare(const ref_state *r, const dd_model *m, const char *what, int step) {
    int k = 0;
    for (int i = 0; i < m->nparams; i++) {
        const dd__param *p = &m->params[i];
        if (!p->trainable) continue;
        float *got = malloc(p->count * sizeof(float));
        ck_assert_ptr_nonnull(got);
        ck_assert_int_eq(dd_model_param_read(m, i, got, p->count), DD_OK);
        for (size_t j = 0; j < p->count; j++)
            ck_assert_msg(close_to(got[j], r->w[k][j]), "%s step %d: %s[%zu] = %.9g, reference %.9g", what,
                          step, p->name, j, (double)got[j], r->w[k][j]);
        free(got);
        k++;
    }
}

/* Copies every parameter (trainable or not) of m into a new buffer. */
static float *snapshot(const dd_model *m) {
    size_t total = 0;
    for (int i = 0; i < m->nparams; i++) total += m->params[i].count;
    float *s = malloc((total + 1) * sizeof(float));
    ck_assert_ptr_nonnull(s);
    size_t off = 0;
    for (int i = 0; i < m->nparams; i++) {
        ck_assert_int_eq(dd_model_param_read(m, i, s + off, m->params[i].count), DD_OK);
        off += m->params[i].count;
    }
    return s;
}

static void assert_same_snapshot(const dd_model *m, const float *s) {
    float *now = snapshot(m);
    size_t total = 0;
    for (int i = 0; i < m->nparams; i++) total += m->params[i].count;
    ck_assert_msg(memcmp(now, s, total * sizeof(float)) == 0, "parameters changed");
    free(now);
}

/* ======================================================================== */
/* Options and argument checking                                             */
/* ======================================================================== */

START_TEST(test_options_init) {
    dd_optimizer_options o;
    dd_optimizer_options_init(NULL, DD_OPTIM_SGD);
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    ck_assert_uint_eq(o.struct_size, sizeof o);
    ck_assert_int_eq(o.kind, DD_OPTIM_SGD);
    ck_assert_float_eq(o.lr, 0.1f);
    ck_assert_float_eq(o.momentum, 0.9f);
    ck_assert_int_eq(o.nesterov, 0);
    ck_assert_float_eq(o.weight_decay, 5e-4f);
    ck_assert_int_eq(o.decay_all, 0);
    dd_optimizer_options_init(&o, DD_OPTIM_ADAM);
    ck_assert_int_eq(o.kind, DD_OPTIM_ADAM);
    ck_assert_float_eq(o.lr, 1e-3f);
    ck_assert_float_eq(o.weight_decay, 0.0f);
    ck_assert_float_eq(o.beta1, 0.9f);
    ck_assert_float_eq(o.beta2, 0.999f);
    ck_assert_float_eq(o.eps, 1e-8f);
    dd_optimizer_options_init(&o, DD_OPTIM_ADAMW);
    ck_assert_int_eq(o.kind, DD_OPTIM_ADAMW);
    ck_assert_float_eq(o.lr, 1e-3f);
    ck_assert_float_eq(o.weight_decay, 1e-2f);
}
END_TEST

/* Expects create to fail with `want`, leave *out NULL and set a message. */
static void expect_create_fails(dd_model *m, const dd_optimizer_options *o, dd_status want,
                                const char *what) {
    dd_optimizer *opt = (dd_optimizer *)&opt; /* non-NULL garbage: must be reset */
    dd_status s = dd_optimizer_create(&opt, m, o);
    ck_assert_msg(s == want, "%s: status %d, expected %d", what, (int)s, (int)want);
    ck_assert_msg(opt == NULL, "%s: *out not NULL on failure", what);
    ck_assert_msg(dd_last_error()[0] != '\0', "%s: no error message", what);
}

START_TEST(test_create_invalid) {
    dd_model *m = linear_model(4, 1);
    dd_optimizer_options o;
    dd_optimizer *opt = NULL;
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    ck_assert_int_eq(dd_optimizer_create(NULL, m, &o), DD_ERR_INVALID_ARGUMENT);
    expect_create_fails(NULL, &o, DD_ERR_INVALID_ARGUMENT, "model NULL");
    expect_create_fails(m, NULL, DD_ERR_INVALID_ARGUMENT, "opts NULL");

    const float bad_nonneg[] = {-1.0f, NAN, INFINITY};
    for (int kind = DD_OPTIM_SGD; kind <= DD_OPTIM_ADAMW; kind++) {
        for (int b = 0; b < 3; b++) {
            dd_optimizer_options_init(&o, (dd_optimizer_kind)kind);
            o.lr = bad_nonneg[b];
            expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "lr");
            dd_optimizer_options_init(&o, (dd_optimizer_kind)kind);
            o.weight_decay = bad_nonneg[b];
            expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "weight_decay");
        }
        dd_optimizer_options_init(&o, (dd_optimizer_kind)kind);
        o.struct_size = 8;
        expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "struct_size");
        dd_optimizer_options_init(&o, (dd_optimizer_kind)kind);
        o.decay_all = 2;
        expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "decay_all");
    }
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    o.kind = (dd_optimizer_kind)0;
    expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "kind 0");
    o.kind = (dd_optimizer_kind)4;
    expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "kind 4");

    const float bad_unit[] = {-0.1f, 1.0f, 1.5f, NAN, INFINITY};
    for (int b = 0; b < 5; b++) {
        dd_optimizer_options_init(&o, DD_OPTIM_SGD);
        o.momentum = bad_unit[b];
        expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "momentum");
        for (int kind = DD_OPTIM_ADAM; kind <= DD_OPTIM_ADAMW; kind++) {
            dd_optimizer_options_init(&o, (dd_optimizer_kind)kind);
            o.beta1 = bad_unit[b];
            expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "beta1");
            dd_optimizer_options_init(&o, (dd_optimizer_kind)kind);
            o.beta2 = bad_unit[b];
            expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "beta2");
        }
    }
    const float bad_eps[] = {0.0f, -1e-8f, NAN, INFINITY};
    for (int b = 0; b < 4; b++) {
        dd_optimizer_options_init(&o, DD_OPTIM_ADAM);
        o.eps = bad_eps[b];
        expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "eps");
    }
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    o.nesterov = 1;
    o.momentum = 0.0f;
    expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "nesterov without momentum");
    o.nesterov = 2;
    o.momentum = 0.9f;
    expect_create_fails(m, &o, DD_ERR_INVALID_ARGUMENT, "nesterov = 2");

    /* SGD ignores the Adam fields and Adam the SGD ones. */
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    o.eps = 0.0f;
    o.beta1 = 2.0f;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    dd_optimizer_destroy(opt);
    dd_optimizer_options_init(&o, DD_OPTIM_ADAM);
    o.momentum = 2.0f;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);

    /* A model that is not built. */
    dd_model *u = NULL;
    dd_node f;
    ck_assert_int_eq(dd_model_create(&u, 1, 1, 4, 3, NULL), DD_OK);
    ck_assert_int_eq(dd_model_add_flatten(u, DD_INPUT, NULL, &f), DD_OK);
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    expect_create_fails(u, &o, DD_ERR_STATE, "model not built");
    dd_model_destroy(u);
}
END_TEST

START_TEST(test_methods_invalid) {
    dd_model *m = linear_model(4, 1);
    dd_optimizer_options o;
    dd_optimizer *opt = NULL;
    float lr = 0.0f;
    int64_t steps = -1;
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);

    dd_optimizer_destroy(NULL);
    ck_assert_int_eq(dd_optimizer_step(NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_set_lr(NULL, 0.1f), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_set_lr(opt, -0.1f), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_set_lr(opt, NAN), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_set_lr(opt, INFINITY), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_get_lr(NULL, &lr), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_get_lr(opt, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_steps(NULL, &steps), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_steps(opt, NULL), DD_ERR_INVALID_ARGUMENT);

    /* Rejected values leave the rate as it was. */
    ck_assert_int_eq(dd_optimizer_get_lr(opt, &lr), DD_OK);
    ck_assert_float_eq(lr, 0.1f);
    ck_assert_int_eq(dd_optimizer_set_lr(opt, 0.0f), DD_OK);
    ck_assert_int_eq(dd_optimizer_set_lr(opt, 0.25f), DD_OK);
    ck_assert_int_eq(dd_optimizer_get_lr(opt, &lr), DD_OK);
    ck_assert_float_eq(lr, 0.25f);
    ck_assert_int_eq(dd_optimizer_steps(opt, &steps), DD_OK);
    ck_assert_int_eq(steps, 0);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

START_TEST(test_create_out_of_memory) {
    dd_model *m = linear_model(4, 1);
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, DD_OPTIM_ADAM);
    /* The optimizer makes at most two allocations (handle, state arena). */
    for (long k = 0; k < 2; k++) {
        dd_optimizer *opt = (dd_optimizer *)&o;
        dd__alloc_fail_after(k);
        dd_status s = dd_optimizer_create(&opt, m, &o);
        dd__alloc_fail_after(-1);
        ck_assert_msg(s == DD_ERR_OUT_OF_MEMORY, "fail after %ld: status %d", k, (int)s);
        ck_assert_ptr_null(opt);
    }
    dd_optimizer *opt = NULL;
    dd__alloc_fail_after(2);
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    dd__alloc_fail_after(-1);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */
/* SGD                                                                       */
/* ======================================================================== */

/* Runs `steps` SGD steps with fresh gradients each step against ref_sgd. */
static void run_sgd(float lr, float wd, float mu, int nesterov, int decay_all, const char *what) {
    dd_model *m = linear_model(4, 1);
    ref_state r;
    ref_init(&r, m, 11u);
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    o.lr = lr;
    o.weight_decay = wd;
    o.momentum = mu;
    o.nesterov = nesterov;
    o.decay_all = decay_all;
    dd_optimizer *opt = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    for (int t = 1; t <= 3; t++) {
        ref_set_grads(&r, m, 100u + (uint32_t)t, 1.0f);
        ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
        ref_sgd(&r, t, lr, wd, mu, nesterov, decay_all);
        ref_compare(&r, m, what, t);
    }
    int64_t steps = 0;
    ck_assert_int_eq(dd_optimizer_steps(opt, &steps), DD_OK);
    ck_assert_int_eq(steps, 3);
    dd_optimizer_destroy(opt);
    ref_free(&r);
    dd_model_destroy(m);
}

START_TEST(test_sgd_plain) { run_sgd(0.1f, 0.0f, 0.0f, 0, 0, "sgd plain"); }
END_TEST
START_TEST(test_sgd_momentum) { run_sgd(0.1f, 0.0f, 0.9f, 0, 0, "sgd momentum"); }
END_TEST
START_TEST(test_sgd_nesterov) { run_sgd(0.05f, 0.0f, 0.8f, 1, 0, "sgd nesterov"); }
END_TEST
START_TEST(test_sgd_weight_decay) {
    run_sgd(0.1f, 0.2f, 0.9f, 0, 0, "sgd decay");
    run_sgd(0.1f, 0.2f, 0.9f, 1, 1, "sgd nesterov decay_all");
    run_sgd(0.1f, 0.2f, 0.0f, 0, 1, "sgd plain decay_all");
}
END_TEST

/* One exact hand-computed step: bias excluded from decay unless decay_all. */
START_TEST(test_sgd_decay_excludes_bias) {
    for (int decay_all = 0; decay_all <= 1; decay_all++) {
        dd_model *m = linear_model(4, 1);
        int wi, bi;
        find_wb(m, &wi, &bi);
        float w[12], b[3] = {1.0f, -2.0f, 0.5f};
        for (int j = 0; j < 12; j++) w[j] = 1.0f;
        ck_assert_int_eq(dd_model_param_write(m, wi, w, 12), DD_OK);
        ck_assert_int_eq(dd_model_param_write(m, bi, b, 3), DD_OK);
        memset(m->params[wi].grad, 0, 12 * sizeof(float));
        memset(m->params[bi].grad, 0, 3 * sizeof(float));
        dd_optimizer_options o;
        dd_optimizer_options_init(&o, DD_OPTIM_SGD);
        o.lr = 0.5f;
        o.weight_decay = 0.5f;
        o.momentum = 0.0f;
        o.decay_all = decay_all;
        dd_optimizer *opt = NULL;
        ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
        ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
        ck_assert_int_eq(dd_model_param_read(m, wi, w, 12), DD_OK);
        ck_assert_int_eq(dd_model_param_read(m, bi, b, 3), DD_OK);
        /* w = 1 - 0.5 * 0.5 * 1 = 0.75; bias unchanged or scaled by 0.75 */
        for (int j = 0; j < 12; j++) ck_assert_float_eq(w[j], 0.75f);
        float scale = decay_all ? 0.75f : 1.0f;
        ck_assert_float_eq(b[0], 1.0f * scale);
        ck_assert_float_eq(b[1], -2.0f * scale);
        ck_assert_float_eq(b[2], 0.5f * scale);
        dd_optimizer_destroy(opt);
        dd_model_destroy(m);
    }
}
END_TEST

/* ======================================================================== */
/* Adam and AdamW                                                            */
/* ======================================================================== */

static void run_adam(dd_optimizer_kind kind, float lr, float wd, float eps, int decay_all, float grad_scale,
                     const char *what) {
    dd_model *m = linear_model(4, 1);
    ref_state r;
    ref_init(&r, m, 23u);
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, kind);
    o.lr = lr;
    o.weight_decay = wd;
    o.eps = eps;
    o.beta1 = 0.8f;
    o.beta2 = 0.95f;
    o.decay_all = decay_all;
    dd_optimizer *opt = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    for (int t = 1; t <= 3; t++) {
        ref_set_grads(&r, m, 200u + (uint32_t)t, grad_scale);
        ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
        ref_adam(&r, t, lr, o.beta1, o.beta2, eps, wd, kind == DD_OPTIM_ADAMW, decay_all);
        ref_compare(&r, m, what, t);
    }
    dd_optimizer_destroy(opt);
    ref_free(&r);
    dd_model_destroy(m);
}

START_TEST(test_adam) {
    run_adam(DD_OPTIM_ADAM, 0.01f, 0.0f, 1e-8f, 0, 1.0f, "adam");
    /* eps comparable to sqrt(v-hat): checks where eps enters. */
    run_adam(DD_OPTIM_ADAM, 0.01f, 0.0f, 0.05f, 0, 0.1f, "adam eps");
    run_adam(DD_OPTIM_ADAM, 0.01f, 0.5f, 1e-8f, 0, 1.0f, "adam l2");
    run_adam(DD_OPTIM_ADAM, 0.01f, 0.5f, 1e-3f, 1, 1.0f, "adam l2 decay_all");
}
END_TEST

START_TEST(test_adamw) {
    run_adam(DD_OPTIM_ADAMW, 0.01f, 0.0f, 1e-8f, 0, 1.0f, "adamw no decay");
    run_adam(DD_OPTIM_ADAMW, 0.05f, 0.5f, 1e-8f, 0, 1.0f, "adamw");
    run_adam(DD_OPTIM_ADAMW, 0.05f, 0.5f, 0.05f, 1, 0.1f, "adamw decay_all");
}
END_TEST

/* First Adam step by hand: m = (1-b1) g, v = (1-b2) g^2, so the update is
 * lr * g / (|g| + eps) = lr * sign(g) when eps is negligible. */
START_TEST(test_adam_first_step_sign) {
    dd_model *m = linear_model(4, 1);
    int wi, bi;
    find_wb(m, &wi, &bi);
    float w[12], b[3] = {0.0f, 0.0f, 0.0f};
    for (int j = 0; j < 12; j++) {
        w[j] = 1.0f;
        m->params[wi].grad[j] = (j % 2 ? -1.0f : 1.0f) * (float)(j + 1) * 1e-2f;
    }
    ck_assert_int_eq(dd_model_param_write(m, wi, w, 12), DD_OK);
    ck_assert_int_eq(dd_model_param_write(m, bi, b, 3), DD_OK);
    for (int j = 0; j < 3; j++) m->params[bi].grad[j] = 0.0f;
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, DD_OPTIM_ADAM);
    o.lr = 0.01f;
    dd_optimizer *opt = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
    ck_assert_int_eq(dd_model_param_read(m, wi, w, 12), DD_OK);
    ck_assert_int_eq(dd_model_param_read(m, bi, b, 3), DD_OK);
    for (int j = 0; j < 12; j++)
        ck_assert_msg(close_to(w[j], j % 2 ? 1.01 : 0.99), "w[%d] = %.9g", j, (double)w[j]);
    for (int j = 0; j < 3; j++) ck_assert_float_eq(b[j], 0.0f); /* zero gradient: 0 / (0 + eps) */
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */
/* Non-finite gradients, learning rate, bookkeeping                          */
/* ======================================================================== */

START_TEST(test_nonfinite_gradient) {
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int kind = DD_OPTIM_SGD; kind <= DD_OPTIM_ADAMW; kind++) {
        for (int b = 0; b < 3; b++) {
            dd_model *m = linear_model(4, 1);
            int wi, bi;
            find_wb(m, &wi, &bi);
            ref_state r;
            ref_init(&r, m, 31u);
            dd_optimizer_options o;
            dd_optimizer_options_init(&o, (dd_optimizer_kind)kind);
            o.weight_decay = 0.1f;
            dd_optimizer *opt = NULL;
            ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
            ref_set_grads(&r, m, 300u, 1.0f);
            ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
            if (kind == DD_OPTIM_SGD)
                ref_sgd(&r, 1, o.lr, o.weight_decay, o.momentum, 0, 0);
            else
                ref_adam(&r, 1, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, kind == DD_OPTIM_ADAMW, 0);

            /* The bad value sits in the last parameter checked so that a
             * partial update of the others would show. */
            ref_set_grads(&r, m, 301u, 1.0f);
            int last = wi > bi ? wi : bi;
            m->params[last].grad[m->params[last].count - 1] = bad[b];
            float *before = snapshot(m);
            uint64_t version = m->param_version;
            ck_assert_int_eq(dd_optimizer_step(opt), DD_ERR_NUMERIC);
            ck_assert(dd_last_error()[0] != '\0');
            assert_same_snapshot(m, before);
            ck_assert_uint_eq(m->param_version, version);
            int64_t steps = 0;
            ck_assert_int_eq(dd_optimizer_steps(opt, &steps), DD_OK);
            ck_assert_int_eq(steps, 1);
            free(before);

            /* The failed step left the moments alone: step 2 matches. */
            ref_set_grads(&r, m, 302u, 1.0f);
            ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
            if (kind == DD_OPTIM_SGD)
                ref_sgd(&r, 2, o.lr, o.weight_decay, o.momentum, 0, 0);
            else
                ref_adam(&r, 2, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, kind == DD_OPTIM_ADAMW, 0);
            ref_compare(&r, m, "after a rejected step", 2);
            dd_optimizer_destroy(opt);
            ref_free(&r);
            dd_model_destroy(m);
        }
    }
}
END_TEST

START_TEST(test_set_lr_and_version) {
    dd_model *m = linear_model(4, 1);
    ref_state r;
    ref_init(&r, m, 41u);
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    o.weight_decay = 0.0f;
    dd_optimizer *opt = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    const float rates[3] = {0.1f, 0.02f, 0.0f};
    for (int t = 1; t <= 3; t++) {
        ck_assert_int_eq(dd_optimizer_set_lr(opt, rates[t - 1]), DD_OK);
        ref_set_grads(&r, m, 400u + (uint32_t)t, 1.0f);
        uint64_t version = m->param_version;
        ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
        ck_assert_uint_gt(m->param_version, version);
        ref_sgd(&r, t, rates[t - 1], 0.0, o.momentum, 0, 0);
        ref_compare(&r, m, "set_lr", t);
    }
    dd_optimizer_destroy(opt);
    ref_free(&r);
    dd_model_destroy(m);
}
END_TEST

/* Parameters large enough for the parallel path: 3 x 20000 weights. Two
 * runs with 2 threads agree bitwise, and both match the reference. */
START_TEST(test_parallel_deterministic) {
    const int width = 20000;
    float *out[2] = {NULL, NULL};
    size_t count = 0;
    for (int run = 0; run < 2; run++) {
        dd_model *m = linear_model(width, 2);
        int wi, bi;
        find_wb(m, &wi, &bi);
        ref_state r;
        ref_init(&r, m, 51u);
        dd_optimizer_options o;
        dd_optimizer_options_init(&o, DD_OPTIM_ADAMW);
        o.lr = 0.01f;
        o.weight_decay = 0.1f;
        dd_optimizer *opt = NULL;
        ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
        for (int t = 1; t <= 3; t++) {
            ref_set_grads(&r, m, 500u + (uint32_t)t, 1.0f);
            ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
            ref_adam(&r, t, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, 1, 0);
        }
        ref_compare(&r, m, "parallel adamw", 3);
        count = m->params[wi].count;
        out[run] = malloc(count * sizeof(float));
        ck_assert_ptr_nonnull(out[run]);
        ck_assert_int_eq(dd_model_param_read(m, wi, out[run], count), DD_OK);
        dd_optimizer_destroy(opt);
        ref_free(&r);
        dd_model_destroy(m);
    }
    ck_assert(memcmp(out[0], out[1], count * sizeof(float)) == 0);
    free(out[0]);
    free(out[1]);
}
END_TEST

/* Batch-norm running statistics are not trainable: never touched. Its
 * gamma and beta are not decayed unless decay_all. */
START_TEST(test_batchnorm_params) {
    dd_model *m = NULL;
    ck_assert_int_eq(dd_model_create(&m, 2, 2, 2, 3, NULL), DD_OK);
    dd_batchnorm_options bo;
    dd_batchnorm_options_init(&bo);
    dd_node bn, f, l;
    ck_assert_int_eq(dd_model_add_batchnorm(m, DD_INPUT, &bo, &bn), DD_OK);
    ck_assert_int_eq(dd_model_add_flatten(m, bn, NULL, &f), DD_OK);
    ck_assert_int_eq(dd_model_add_linear(m, f, 3, 1, NULL, &l), DD_OK);
    ck_assert_int_eq(dd_model_build(m, l, 2), DD_OK);
    int frozen = 0, undecayed = 0;
    for (int i = 0; i < m->nparams; i++) {
        if (!m->params[i].trainable)
            frozen++;
        else if (!m->params[i].decay)
            undecayed++;
    }
    ck_assert_int_eq(frozen, 2);    /* running mean and variance */
    ck_assert_int_eq(undecayed, 3); /* gamma, beta, linear bias */

    ref_state r;
    ref_init(&r, m, 61u);
    float *before = snapshot(m);
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    o.weight_decay = 0.3f;
    dd_optimizer *opt = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    for (int t = 1; t <= 2; t++) {
        ref_set_grads(&r, m, 600u + (uint32_t)t, 1.0f);
        ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
        ref_sgd(&r, t, o.lr, o.weight_decay, o.momentum, 0, 0);
        ref_compare(&r, m, "batchnorm model", t);
    }
    float *after = snapshot(m);
    size_t off = 0;
    for (int i = 0; i < m->nparams; i++) {
        if (!m->params[i].trainable)
            ck_assert(memcmp(before + off, after + off, m->params[i].count * sizeof(float)) == 0);
        off += m->params[i].count;
    }
    free(before);
    free(after);
    dd_optimizer_destroy(opt);
    ref_free(&r);
    dd_model_destroy(m);
}
END_TEST

/* With gradients from a real backward pass (read through the public API)
 * one plain SGD step is w - lr * g, and the loss goes down. */
START_TEST(test_step_after_backward) {
    dd_model *m = linear_model(4, 1);
    int np = 0;
    ck_assert_int_eq(dd_model_num_params(m, &np), DD_OK);
    const float x[8] = {0.1f, 0.9f, 0.4f, 0.3f, 0.8f, 0.2f, 0.5f, 0.7f};
    const int32_t y[2] = {2, 0};
    dd_step_stats st, st2;
    dd_step_stats_init(&st);
    dd_step_stats_init(&st2);
    ck_assert_int_eq(dd_model_zero_grad(m), DD_OK);
    ck_assert_int_eq(dd_model_forward(m, x, 2, DD_TRAIN, NULL), DD_OK);
    ck_assert_int_eq(dd_model_backward(m, y, &st), DD_OK);

    float w[8][16], g[8][16];
    for (int i = 0; i < np && i < 8; i++) {
        dd_param_info pi;
        ck_assert_int_eq(dd_model_param_info(m, i, &pi), DD_OK);
        ck_assert_uint_le(pi.count, 16);
        ck_assert_int_eq(dd_model_param_read(m, i, w[i], pi.count), DD_OK);
        ck_assert_int_eq(dd_model_grad_read(m, i, g[i], pi.count), DD_OK);
    }
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, DD_OPTIM_SGD);
    o.lr = 0.5f;
    o.momentum = 0.0f;
    o.weight_decay = 0.0f;
    dd_optimizer *opt = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);
    for (int i = 0; i < np && i < 8; i++) {
        dd_param_info pi;
        ck_assert_int_eq(dd_model_param_info(m, i, &pi), DD_OK);
        float now[16];
        ck_assert_int_eq(dd_model_param_read(m, i, now, pi.count), DD_OK);
        for (size_t j = 0; j < pi.count; j++)
            ck_assert(close_to(now[j], (double)w[i][j] - 0.5 * (double)g[i][j]));
    }
    ck_assert_int_eq(dd_model_forward(m, x, 2, DD_TRAIN, NULL), DD_OK);
    ck_assert_int_eq(dd_model_zero_grad(m), DD_OK);
    ck_assert_int_eq(dd_model_backward(m, y, &st2), DD_OK);
    ck_assert(st2.loss < st.loss);
    dd_optimizer_destroy(opt);
    dd_model_destroy(m);
}
END_TEST

/* ======================================================================== */
/* Learning-rate schedules                                                   */
/* ======================================================================== */

static double sched(const dd_lr_schedule *s, int64_t step) {
    float lr = -1.0f;
    ck_assert_int_eq(dd_lr_schedule_eval(s, step, &lr), DD_OK);
    return lr;
}

#define CK_LR(s, step, want)                                                                \
    do {                                                                                    \
        double got_ = sched((s), (step)), want_ = (want);                                   \
        ck_assert_msg(fabs(got_ - want_) <= 1e-6 * fmax(fabs(want_), 1e-3),                 \
                      "step %lld: lr %.9g, expected %.9g", (long long)(step), got_, want_); \
    } while (0)

START_TEST(test_schedule_init) {
    dd_lr_schedule s;
    dd_lr_schedule_init(NULL, DD_SCHED_COSINE, 0.1f, 100);
    dd_lr_schedule_init(&s, DD_SCHED_COSINE, 0.1f, 100);
    ck_assert_uint_eq(s.struct_size, sizeof s);
    ck_assert_int_eq(s.kind, DD_SCHED_COSINE);
    ck_assert_float_eq(s.base_lr, 0.1f);
    ck_assert_float_eq(s.min_lr, 0.0f);
    ck_assert_float_eq(s.gamma, 0.1f);
    ck_assert_int_eq(s.warmup_steps, 0);
    ck_assert_int_eq(s.total_steps, 100);
    dd_lr_schedule_init(&s, DD_SCHED_ONE_CYCLE, 0.1f, 1000);
    ck_assert_int_eq(s.warmup_steps, 300);
    dd_lr_schedule_init(&s, DD_SCHED_ONE_CYCLE, 0.1f, 7);
    ck_assert_int_eq(s.warmup_steps, 2);
}
END_TEST

START_TEST(test_schedule_constant) {
    dd_lr_schedule s;
    dd_lr_schedule_init(&s, DD_SCHED_CONSTANT, 0.05f, 0);
    CK_LR(&s, 0, 0.05);
    CK_LR(&s, 12345, 0.05);
    dd_lr_schedule_init(&s, DD_SCHED_CONSTANT, 0.05f, 10);
    CK_LR(&s, 9, 0.05);
    CK_LR(&s, 11, 0.05);
}
END_TEST

START_TEST(test_schedule_step) {
    dd_lr_schedule s;
    dd_lr_schedule_init(&s, DD_SCHED_STEP, 0.1f, 0);
    s.step_size = 10;
    s.gamma = 0.5f;
    CK_LR(&s, 0, 0.1);
    CK_LR(&s, 9, 0.1);
    CK_LR(&s, 10, 0.05);
    CK_LR(&s, 19, 0.05);
    CK_LR(&s, 20, 0.025);
    CK_LR(&s, 35, 0.0125);
    CK_LR(&s, 1000, 0.1 * pow(0.5, 100));

    /* Default step size: a third of the run; steps past the end keep the
     * value at total_steps. */
    dd_lr_schedule_init(&s, DD_SCHED_STEP, 0.1f, 90);
    ck_assert_int_eq(s.step_size, 30);
    CK_LR(&s, 29, 0.1);
    CK_LR(&s, 30, 0.01);
    CK_LR(&s, 59, 0.01);
    CK_LR(&s, 60, 0.001);
    CK_LR(&s, 89, 0.001);
    CK_LR(&s, 90, 0.0001);
    CK_LR(&s, 500, 0.0001);
}
END_TEST

START_TEST(test_schedule_cosine) {
    const double pi = 3.14159265358979323846;
    dd_lr_schedule s;
    dd_lr_schedule_init(&s, DD_SCHED_COSINE, 0.2f, 100);
    s.min_lr = 0.01f;
    double base = 0.2, lo = (double)0.01f;
    CK_LR(&s, 0, base);
    CK_LR(&s, 50, (base + lo) / 2.0);
    CK_LR(&s, 25, lo + (base - lo) * (1.0 + cos(pi * 0.25)) / 2.0);
    CK_LR(&s, 99, lo + (base - lo) * (1.0 + cos(pi * 0.99)) / 2.0);
    CK_LR(&s, 100, lo);
    CK_LR(&s, 1000, lo);

    /* Linear warm-up over 10 steps, then cosine over the remaining 90. */
    s.warmup_steps = 10;
    CK_LR(&s, 0, 0.0);
    CK_LR(&s, 5, base * 0.5);
    CK_LR(&s, 9, base * 0.9);
    CK_LR(&s, 10, base);
    CK_LR(&s, 55, (base + lo) / 2.0);
    CK_LR(&s, 40, lo + (base - lo) * (1.0 + cos(pi / 3.0)) / 2.0);
    CK_LR(&s, 100, lo);
    CK_LR(&s, 101, lo);

    /* Decreasing over the whole cosine part. */
    double prev = sched(&s, 10);
    for (int64_t t = 11; t <= 100; t++) {
        double now = sched(&s, t);
        ck_assert(now <= prev);
        prev = now;
    }
}
END_TEST

START_TEST(test_schedule_one_cycle) {
    dd_lr_schedule s;
    dd_lr_schedule_init(&s, DD_SCHED_ONE_CYCLE, 0.4f, 100);
    ck_assert_int_eq(s.warmup_steps, 30);
    double base = 0.4;
    CK_LR(&s, 0, 0.0);
    CK_LR(&s, 15, base / 2.0);
    CK_LR(&s, 30, base); /* peak */
    CK_LR(&s, 65, base / 2.0);
    CK_LR(&s, 86, base * 14.0 / 70.0);
    CK_LR(&s, 100, 0.0);
    CK_LR(&s, 200, 0.0);
    for (int64_t t = 0; t <= 100; t++) ck_assert(sched(&s, t) <= sched(&s, 30));

    s.min_lr = 0.04f;
    double lo = (double)0.04f;
    CK_LR(&s, 30, base);
    CK_LR(&s, 65, (base + lo) / 2.0);
    CK_LR(&s, 100, lo);

    /* Warm-up over the whole run: stays at the peak afterwards. */
    s.warmup_steps = 100;
    CK_LR(&s, 50, base / 2.0);
    CK_LR(&s, 100, base);
    CK_LR(&s, 150, base);
}
END_TEST

START_TEST(test_schedule_invalid) {
    dd_lr_schedule s;
    float lr = 0.0f;
    dd_lr_schedule_init(&s, DD_SCHED_COSINE, 0.1f, 100);
    ck_assert_int_eq(dd_lr_schedule_eval(NULL, 0, &lr), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_lr_schedule_eval(&s, 0, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_lr_schedule_eval(&s, -1, &lr), DD_ERR_INVALID_ARGUMENT);

#define EXPECT_BAD(mutation)                                                                      \
    do {                                                                                          \
        dd_lr_schedule b_ = s;                                                                    \
        mutation;                                                                                 \
        ck_assert_msg(dd_lr_schedule_eval(&b_, 1, &lr) == DD_ERR_INVALID_ARGUMENT, "%s accepted", \
                      #mutation);                                                                 \
    } while (0)
    EXPECT_BAD(b_.struct_size = 0);
    EXPECT_BAD(b_.kind = (dd_schedule_kind)4);
    EXPECT_BAD(b_.kind = (dd_schedule_kind)-1);
    EXPECT_BAD(b_.base_lr = -0.1f);
    EXPECT_BAD(b_.base_lr = NAN);
    EXPECT_BAD(b_.base_lr = INFINITY);
    EXPECT_BAD(b_.min_lr = -0.1f);
    EXPECT_BAD(b_.min_lr = NAN);
    EXPECT_BAD(b_.total_steps = 0);
    EXPECT_BAD(b_.total_steps = -5);
    EXPECT_BAD(b_.warmup_steps = -1);
    EXPECT_BAD(b_.warmup_steps = 101);
    EXPECT_BAD(b_.kind = DD_SCHED_ONE_CYCLE; b_.total_steps = 0);
    EXPECT_BAD(b_.kind = DD_SCHED_STEP; b_.step_size = 0);
    EXPECT_BAD(b_.kind = DD_SCHED_STEP; b_.step_size = 10; b_.gamma = NAN);
    EXPECT_BAD(b_.kind = DD_SCHED_STEP; b_.step_size = 10; b_.gamma = -0.5f);
    EXPECT_BAD(b_.kind = DD_SCHED_CONSTANT; b_.total_steps = -1);
#undef EXPECT_BAD
    /* A step schedule over fewer than 3 steps has no default period. */
    dd_lr_schedule_init(&s, DD_SCHED_STEP, 0.1f, 2);
    ck_assert_int_eq(dd_lr_schedule_eval(&s, 0, &lr), DD_ERR_INVALID_ARGUMENT);
}
END_TEST

/* ======================================================================== */
/* State blob (dd_optimizer_state_*): exact resumption                        */
/* ======================================================================== */

/* For each kind: optimizer A takes 3 steps; after step 1 its weights and
 * state are copied into a fresh model and optimizer B, which then takes
 * steps 2 and 3 with the same gradients. B must end bitwise equal to A. */
static void run_resume(dd_optimizer_kind kind, const char *what) {
    dd_model *ma = linear_model(40, 1), *mb = linear_model(40, 1);
    ref_state r;
    ref_init(&r, ma, 61u);
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, kind);
    o.lr = 0.01f;
    o.weight_decay = 0.01f;
    dd_optimizer *oa = NULL, *ob = NULL;
    ck_assert_int_eq(dd_optimizer_create(&oa, ma, &o), DD_OK);
    ck_assert_int_eq(dd_optimizer_create(&ob, mb, &o), DD_OK);

    ref_set_grads(&r, ma, 700u, 1.0f);
    ck_assert_int_eq(dd_optimizer_step(oa), DD_OK);
    float *w1 = snapshot(ma);
    size_t bytes = 0;
    ck_assert_int_eq(dd_optimizer_state_size(oa, &bytes), DD_OK);
    ck_assert_uint_gt(bytes, 0);
    unsigned char *blob = malloc(bytes + 1);
    ck_assert_ptr_nonnull(blob);
    /* Unaligned on purpose: the blob needs no alignment. */
    ck_assert_int_eq(dd_optimizer_state_read(oa, blob + 1, bytes), DD_OK);

    size_t off = 0;
    for (int i = 0; i < mb->nparams; i++) {
        ck_assert_int_eq(dd_model_param_write(mb, i, w1 + off, mb->params[i].count), DD_OK);
        off += mb->params[i].count;
    }
    ck_assert_int_eq(dd_optimizer_state_write(ob, blob + 1, bytes), DD_OK);
    int64_t ta = 0, tb = 0;
    ck_assert_int_eq(dd_optimizer_steps(ob, &tb), DD_OK);
    ck_assert_int_eq(tb, 1);

    for (int t = 2; t <= 3; t++) {
        ref_set_grads(&r, ma, 700u + (uint32_t)t, 1.0f);
        ref_set_grads(&r, mb, 700u + (uint32_t)t, 1.0f);
        ck_assert_int_eq(dd_optimizer_step(oa), DD_OK);
        ck_assert_int_eq(dd_optimizer_step(ob), DD_OK);
    }
    float *wa = snapshot(ma);
    assert_same_snapshot(mb, wa);
    ck_assert_int_eq(dd_optimizer_steps(oa, &ta), DD_OK);
    ck_assert_int_eq(dd_optimizer_steps(ob, &tb), DD_OK);
    ck_assert_msg(ta == 3 && tb == 3, "%s: steps %lld and %lld", what, (long long)ta, (long long)tb);
    free(w1);
    free(wa);
    free(blob);
    dd_optimizer_destroy(oa);
    dd_optimizer_destroy(ob);
    ref_free(&r);
    dd_model_destroy(ma);
    dd_model_destroy(mb);
}

START_TEST(test_state_resume_sgd) { run_resume(DD_OPTIM_SGD, "sgd"); }
END_TEST
START_TEST(test_state_resume_adam) { run_resume(DD_OPTIM_ADAM, "adam"); }
END_TEST
START_TEST(test_state_resume_adamw) { run_resume(DD_OPTIM_ADAMW, "adamw"); }
END_TEST

/* Every malformed or mismatched blob is refused and changes nothing. */
START_TEST(test_state_invalid) {
    dd_model *m = linear_model(8, 1), *other = linear_model(9, 1);
    dd_optimizer_options o;
    dd_optimizer_options_init(&o, DD_OPTIM_ADAM);
    dd_optimizer *opt = NULL, *sgd = NULL, *wide = NULL;
    ck_assert_int_eq(dd_optimizer_create(&opt, m, &o), DD_OK);
    ck_assert_int_eq(dd_optimizer_create(&wide, other, &o), DD_OK);
    dd_optimizer_options so;
    dd_optimizer_options_init(&so, DD_OPTIM_SGD);
    ck_assert_int_eq(dd_optimizer_create(&sgd, m, &so), DD_OK);
    for (int i = 0; i < m->nparams; i++)
        for (size_t j = 0; j < m->params[i].count; j++) m->params[i].grad[j] = 0.25f;
    ck_assert_int_eq(dd_optimizer_step(opt), DD_OK);

    size_t bytes = 0;
    ck_assert_int_eq(dd_optimizer_state_size(opt, &bytes), DD_OK);
    unsigned char *blob = malloc(bytes), *copy = malloc(bytes), *after = malloc(bytes);
    ck_assert(blob && copy && after);
    ck_assert_int_eq(dd_optimizer_state_read(opt, blob, bytes), DD_OK);

    /* NULL and short buffers. */
    ck_assert_int_eq(dd_optimizer_state_size(NULL, &bytes), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_state_size(opt, NULL), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_state_read(NULL, blob, bytes), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_state_read(opt, NULL, bytes), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_state_read(opt, copy, bytes - 1), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_state_write(NULL, blob, bytes), DD_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(dd_optimizer_state_write(opt, NULL, bytes), DD_ERR_INVALID_ARGUMENT);

    /* Truncated, extended, bad magic, bad version. */
    ck_assert_int_eq(dd_optimizer_state_write(opt, blob, 10), DD_ERR_FORMAT);
    ck_assert_int_eq(dd_optimizer_state_write(opt, blob, bytes - 4), DD_ERR_FORMAT);
    memcpy(copy, blob, bytes);
    copy[0] ^= 0xff;
    ck_assert_int_eq(dd_optimizer_state_write(opt, copy, bytes), DD_ERR_FORMAT);
    memcpy(copy, blob, bytes);
    copy[8] ^= 0x40;
    ck_assert_int_eq(dd_optimizer_state_write(opt, copy, bytes), DD_ERR_FORMAT);

    /* Another kind; another architecture of the same blob size (3x8 and
     * 3x9 weights both pad to 32 floats: only the layout fingerprint differs). */
    ck_assert_int_eq(dd_optimizer_state_write(sgd, blob, bytes), DD_ERR_FORMAT);
    size_t wbytes = 0;
    ck_assert_int_eq(dd_optimizer_state_size(wide, &wbytes), DD_OK);
    ck_assert_uint_eq(wbytes, bytes);
    ck_assert_int_eq(dd_optimizer_state_write(wide, blob, bytes), DD_ERR_FORMAT);

    /* A NaN moment (a float of the last moment slice). */
    memcpy(copy, blob, bytes);
    float nan = NAN;
    memcpy(copy + bytes - 4 * 16, &nan, sizeof nan);
    ck_assert_int_eq(dd_optimizer_state_write(opt, copy, bytes), DD_ERR_NUMERIC);

    /* None of the refused writes changed the state. */
    ck_assert_int_eq(dd_optimizer_state_read(opt, after, bytes), DD_OK);
    ck_assert(memcmp(after, blob, bytes) == 0);

    free(blob);
    free(copy);
    free(after);
    dd_optimizer_destroy(opt);
    dd_optimizer_destroy(sgd);
    dd_optimizer_destroy(wide);
    dd_model_destroy(m);
    dd_model_destroy(other);
}
END_TEST

/* ======================================================================== */

static Suite *optim_suite(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optimizer");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_options_init);
    tcase_add_test(tc, test_create_invalid);
    tcase_add_test(tc, test_methods_invalid);
    tcase_add_test(tc, test_create_out_of_memory);
    tcase_add_test(tc, test_sgd_plain);
    tcase_add_test(tc, test_sgd_momentum);
    tcase_add_test(tc, test_sgd_nesterov);
    tcase_add_test(tc, test_sgd_weight_decay);
    tcase_add_test(tc, test_sgd_decay_excludes_bias);
    tcase_add_test(tc, test_adam);
    tcase_add_test(tc, test_adamw);
    tcase_add_test(tc, test_adam_first_step_sign);
    tcase_add_test(tc, test_nonfinite_gradient);
    tcase_add_test(tc, test_set_lr_and_version);
    tcase_add_test(tc, test_parallel_deterministic);
    tcase_add_test(tc, test_batchnorm_params);
    tcase_add_test(tc, test_step_after_backward);
    suite_add_tcase(s, tc);

    TCase *tst = tcase_create("state");
    tcase_set_timeout(tst, 60);
    tcase_add_test(tst, test_state_resume_sgd);
    tcase_add_test(tst, test_state_resume_adam);
    tcase_add_test(tst, test_state_resume_adamw);
    tcase_add_test(tst, test_state_invalid);
    suite_add_tcase(s, tst);

    TCase *ts = tcase_create("schedule");
    tcase_set_timeout(ts, 30);
    tcase_add_test(ts, test_schedule_init);
    tcase_add_test(ts, test_schedule_constant);
    tcase_add_test(ts, test_schedule_step);
    tcase_add_test(ts, test_schedule_cosine);
    tcase_add_test(ts, test_schedule_one_cycle);
    tcase_add_test(ts, test_schedule_invalid);
    suite_add_tcase(s, ts);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(optim_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
