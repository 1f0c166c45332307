/* lib/attacks/attack.c -- the attack handle: options, validation, the run
 * protocol, results, and the vector helpers every attack file uses.
 *
 * A run is: validate everything (so a bad call writes nothing), reseed the
 * handle's RNG from opts.seed (the official AutoAttack reseeds every
 * perturb() call the same way), compute the clean logits, let the kind's
 * ops->run write x_adv into the staging buffer a->out, apply the success
 * threshold of the minimum-norm kinds, evaluate the model once more at
 * x_adv when results are wanted (success is always the model's verdict on
 * the returned image, never an attack's bookkeeping), then copy to the
 * caller. Staging makes x_adv == x safe and keeps caller memory untouched
 * on every error path.
 *
 * The model is used only through dd_model_forward(DD_EVAL) and
 * dd_model_input_grad(); lib/graph/graph.h is read for nothing but the
 * model's OpenMP thread count. Every buffer is allocated at create for the
 * model's max_batch. Element-wise work is OpenMP-parallel over samples with
 * a static schedule; each sample's arithmetic is sequential, so results do
 * not depend on the thread count.
 */
#include "attack_internal.h"

#include <omp.h>

#include "../graph/graph.h"

/* ======================================================================== */
/* Kinds: names, norms, defaults                                             */
/* ======================================================================== */

static const struct {
    dd_attack_kind kind;
    const char *name;
    dd_norm norm;
} kinds[] = {
    {DD_ATTACK_FGSM, "fgsm", DD_NORM_LINF},
    {DD_ATTACK_PGD_LINF, "pgd-linf", DD_NORM_LINF},
    {DD_ATTACK_PGD_L2, "pgd-l2", DD_NORM_L2},
    {DD_ATTACK_APGD_CE_LINF, "apgd-ce-linf", DD_NORM_LINF},
    {DD_ATTACK_APGD_CE_L2, "apgd-ce-l2", DD_NORM_L2},
    {DD_ATTACK_APGD_DLR_LINF, "apgd-dlr-linf", DD_NORM_LINF},
    {DD_ATTACK_APGD_DLR_L2, "apgd-dlr-l2", DD_NORM_L2},
    {DD_ATTACK_APGD_T_LINF, "apgd-t-linf", DD_NORM_LINF},
    {DD_ATTACK_APGD_T_L2, "apgd-t-l2", DD_NORM_L2},
    {DD_ATTACK_DEEPFOOL_L2, "deepfool-l2", DD_NORM_L2},
    {DD_ATTACK_DEEPFOOL_LINF, "deepfool-linf", DD_NORM_LINF},
    {DD_ATTACK_EAD, "ead", DD_NORM_L1},
    {DD_ATTACK_CW_L2, "cw-l2", DD_NORM_L2},
    {DD_ATTACK_SQUARE_LINF, "square-linf", DD_NORM_LINF},
    {DD_ATTACK_SQUARE_L2, "square-l2", DD_NORM_L2},
    {DD_ATTACK_FAB_T_LINF, "fab-t-linf", DD_NORM_LINF},
    {DD_ATTACK_FAB_T_L2, "fab-t-l2", DD_NORM_L2},
    {DD_ATTACK_AUTOATTACK_LINF, "autoattack-linf", DD_NORM_LINF},
    {DD_ATTACK_AUTOATTACK_L2, "autoattack-l2", DD_NORM_L2},
    {DD_ATTACK_TRADES_KL, "trades-kl", DD_NORM_LINF},
};
#define NKINDS ((int)(sizeof kinds / sizeof kinds[0]))

static int kind_index(dd_attack_kind kind) {
    for (int i = 0; i < NKINDS; i++)
        if (kinds[i].kind == kind) return i;
    return -1;
}

const char *dd_attack_kind_name(dd_attack_kind kind) {
    int i = kind_index(kind);
    return i < 0 ? NULL : kinds[i].name;
}

dd_status dd_attack_kind_from_name(const char *name, dd_attack_kind *kind) {
    DD_RETURN_IF(!name || !kind, DD_ERR_INVALID_ARGUMENT, "dd_attack_kind_from_name: NULL argument");
    for (int i = 0; i < NKINDS; i++)
        if (strcmp(kinds[i].name, name) == 0) {
            *kind = kinds[i].kind;
            return DD_OK;
        }
    return DD_ERROR(DD_ERR_INVALID_ARGUMENT, "dd_attack_kind_from_name: unknown attack '%.64s'", name);
}

dd_status dd_attack_kind_norm(dd_attack_kind kind, dd_norm *norm) {
    DD_RETURN_IF(!norm, DD_ERR_INVALID_ARGUMENT, "dd_attack_kind_norm: norm is NULL");
    int i = kind_index(kind);
    DD_RETURN_IF(i < 0, DD_ERR_INVALID_ARGUMENT, "dd_attack_kind_norm: unknown kind %d", (int)kind);
    *norm = kinds[i].norm;
    return DD_OK;
}

static int is_apgd(dd_attack_kind k) { return k >= DD_ATTACK_APGD_CE_LINF && k <= DD_ATTACK_APGD_T_L2; }
static int is_min_norm(dd_attack_kind k) {
    return k == DD_ATTACK_DEEPFOOL_L2 || k == DD_ATTACK_DEEPFOOL_LINF || k == DD_ATTACK_EAD ||
           k == DD_ATTACK_CW_L2;
}

/* The defaults of `kind`, full-size. */
static void defaults(dd_attack_options *o, dd_attack_kind kind) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->kind = kind;
    /* Generic defaults; each kind overrides what its reference sets. */
    o->eps = 8.0f / 255.0f;
    o->step_size = 2.0f / 255.0f;
    o->steps = 10;
    o->restarts = 1;
    o->random_start = 1;
    o->targeted = 0;
    o->seed = 0;
    o->rho = 0.75f;
    o->num_targets = 9;
    o->overshoot = 0.02f;
    o->candidates = 10;
    o->binary_steps = 9;
    o->initial_const = 1e-3f;
    o->confidence = 0.0f;
    o->l1_weight = 1e-3f;
    o->ead_rule = DD_EAD_EN;
    o->fista = 1;
    o->abort_early = 1;
    o->p_init = 0.8f;
    o->queries = 5000;
    o->rescale_schedule = 1;
    o->alpha_max = 0.1f;
    o->eta = 1.05f;
    o->fab_beta = 0.9f;
    o->box_lo = 0.0f;
    o->box_hi = 1.0f;
    dd_norm norm = DD_NORM_LINF;
    dd_attack_kind_norm(kind, &norm);
    switch (kind) {
    case DD_ATTACK_FGSM:
        o->step_size = o->eps;
        o->steps = 1;
        o->random_start = 0;
        break;
    case DD_ATTACK_PGD_LINF:
        break;
    case DD_ATTACK_PGD_L2:
        o->eps = 1.0f;
        o->step_size = 0.2f;
        break;
    case DD_ATTACK_DEEPFOOL_L2:
    case DD_ATTACK_DEEPFOOL_LINF:
        o->eps = INFINITY;
        o->steps = 50;
        break;
    case DD_ATTACK_EAD:
    case DD_ATTACK_CW_L2:
        o->eps = INFINITY;
        o->steps = 1000;
        o->step_size = 1e-2f;
        break;
    case DD_ATTACK_AUTOATTACK_LINF:
    case DD_ATTACK_AUTOATTACK_L2:
        o->rescale_schedule = 0;
        o->steps = 100;
        if (norm == DD_NORM_L2) o->eps = 0.5f;
        break;
    case DD_ATTACK_TRADES_KL:
        o->eps = 0.031f;
        o->step_size = 0.007f;
        break;
    default:
        if (is_apgd(kind) || kind == DD_ATTACK_FAB_T_LINF || kind == DD_ATTACK_FAB_T_L2) o->steps = 100;
        if (norm == DD_NORM_L2) o->eps = 0.5f;
        break;
    }
}

void dd_attack_options_init_sized(dd_attack_options *opts, size_t size, dd_attack_kind kind) {
    dd_attack_options d;
    defaults(&d, kind);
    dd__struct_fill(opts, size, &d, sizeof d);
}

void dd_attack_results_init_sized(dd_attack_results *r, size_t size) {
    dd_attack_results d;
    memset(&d, 0, sizeof d);
    dd__struct_fill(r, size, &d, sizeof d);
}

/* ======================================================================== */
/* Validation                                                                */
/* ======================================================================== */

static dd_status check_eps(dd_attack_kind kind, float eps, const char *fn) {
    DD_RETURN_IF(isnan(eps) || eps < 0.0f, DD_ERR_INVALID_ARGUMENT, "%s: eps = %g must be >= 0", fn,
                 (double)eps);
    DD_RETURN_IF(isinf(eps) && !is_min_norm(kind), DD_ERR_INVALID_ARGUMENT,
                 "%s: eps must be finite for %s (only minimum-norm attacks accept infinity)", fn,
                 dd_attack_kind_name(kind));
    return DD_OK;
}

#define OPT_RANGE(cond, ...) DD_RETURN_IF(!(cond), DD_ERR_INVALID_ARGUMENT, __VA_ARGS__)

static int finite_pos(float v) { return isfinite(v) && v > 0.0f; }

static dd_status check_options(const dd_attack_options *o, int K, int H, int W) {
    const char *fn = "dd_attack_create";
    dd_attack_kind k = o->kind;
    const char *name = dd_attack_kind_name(k);
    OPT_RANGE(name != NULL, "%s: unknown attack kind %d", fn, (int)k);
    DD_FORWARD(check_eps(k, o->eps, fn));
    OPT_RANGE(isfinite(o->box_lo) && isfinite(o->box_hi) && o->box_lo < o->box_hi,
              "%s: box [%g, %g] is not a finite interval", fn, (double)o->box_lo, (double)o->box_hi);
    OPT_RANGE(K >= 2, "%s: the model has %d class(es); attacks need at least 2", fn, K);
    OPT_RANGE(!o->targeted || k == DD_ATTACK_FGSM || k == DD_ATTACK_PGD_LINF || k == DD_ATTACK_PGD_L2 ||
                  k == DD_ATTACK_CW_L2 || k == DD_ATTACK_EAD,
              "%s: %s has no targeted mode (targeted = %d)", fn, name, o->targeted);
    OPT_RANGE(o->targeted == 0 || o->targeted == 1, "%s: targeted = %d must be 0 or 1", fn, o->targeted);
    /* Iteration counts: the attacks keep per-iteration state (APGD's loss
     * history), so an absurd count is refused rather than allocated. */
    const int max_steps = 1000000;
    if (k != DD_ATTACK_FGSM && k != DD_ATTACK_SQUARE_LINF && k != DD_ATTACK_SQUARE_L2)
        OPT_RANGE(o->steps >= 1 && o->steps <= max_steps, "%s: %s: steps = %d outside [1, %d]", fn, name,
                  o->steps, max_steps);
    switch (k) {
    case DD_ATTACK_PGD_LINF:
    case DD_ATTACK_PGD_L2:
    case DD_ATTACK_TRADES_KL:
        OPT_RANGE(finite_pos(o->step_size), "%s: %s: step_size = %g must be finite and > 0", fn, name,
                  (double)o->step_size);
        OPT_RANGE(o->random_start == 0 || o->random_start == 1, "%s: random_start = %d", fn, o->random_start);
        break;
    case DD_ATTACK_APGD_DLR_LINF:
    case DD_ATTACK_APGD_DLR_L2:
        OPT_RANGE(K >= 3, "%s: %s: the DLR loss needs >= 3 classes, the model has %d", fn, name, K);
        break;
    case DD_ATTACK_APGD_T_LINF:
    case DD_ATTACK_APGD_T_L2:
    case DD_ATTACK_AUTOATTACK_LINF:
    case DD_ATTACK_AUTOATTACK_L2:
        OPT_RANGE(K >= 4, "%s: %s: the targeted DLR loss needs >= 4 classes, the model has %d", fn, name, K);
        break;
    default:
        break;
    }
    if (is_apgd(k) || k == DD_ATTACK_AUTOATTACK_LINF || k == DD_ATTACK_AUTOATTACK_L2)
        OPT_RANGE(isfinite(o->rho) && o->rho > 0.0f && o->rho <= 1.0f, "%s: rho = %g outside (0, 1]", fn,
                  (double)o->rho);
    if (is_apgd(k) || k == DD_ATTACK_FAB_T_LINF || k == DD_ATTACK_FAB_T_L2 || k == DD_ATTACK_SQUARE_LINF ||
        k == DD_ATTACK_SQUARE_L2 || k == DD_ATTACK_AUTOATTACK_LINF || k == DD_ATTACK_AUTOATTACK_L2)
        OPT_RANGE(o->restarts >= 1 && o->restarts <= 1000, "%s: %s: restarts = %d outside [1, 1000]", fn,
                  name, o->restarts);
    if (k == DD_ATTACK_APGD_T_LINF || k == DD_ATTACK_APGD_T_L2 || k == DD_ATTACK_FAB_T_LINF ||
        k == DD_ATTACK_FAB_T_L2 || k == DD_ATTACK_AUTOATTACK_LINF || k == DD_ATTACK_AUTOATTACK_L2)
        OPT_RANGE(o->num_targets >= 1 && o->num_targets <= K - 1,
                  "%s: %s: num_targets = %d outside [1, K-1 = %d]", fn, name, o->num_targets, K - 1);
    if (k == DD_ATTACK_DEEPFOOL_L2 || k == DD_ATTACK_DEEPFOOL_LINF) {
        OPT_RANGE(isfinite(o->overshoot) && o->overshoot >= 0.0f, "%s: overshoot = %g must be >= 0", fn,
                  (double)o->overshoot);
        OPT_RANGE(o->candidates >= 2, "%s: candidates = %d must be >= 2", fn, o->candidates);
    }
    if (k == DD_ATTACK_CW_L2 || k == DD_ATTACK_EAD) {
        OPT_RANGE(finite_pos(o->step_size), "%s: %s: learning rate step_size = %g must be > 0", fn, name,
                  (double)o->step_size);
        OPT_RANGE(o->binary_steps >= 1 && o->binary_steps <= 100, "%s: binary_steps = %d outside [1, 100]",
                  fn, o->binary_steps);
        OPT_RANGE(finite_pos(o->initial_const), "%s: initial_const = %g must be > 0", fn,
                  (double)o->initial_const);
        OPT_RANGE(isfinite(o->confidence) && o->confidence >= 0.0f, "%s: confidence = %g must be >= 0", fn,
                  (double)o->confidence);
        OPT_RANGE(o->abort_early == 0 || o->abort_early == 1, "%s: abort_early = %d", fn, o->abort_early);
    }
    if (k == DD_ATTACK_EAD) {
        OPT_RANGE(isfinite(o->l1_weight) && o->l1_weight >= 0.0f, "%s: l1_weight = %g must be >= 0", fn,
                  (double)o->l1_weight);
        OPT_RANGE(o->ead_rule == DD_EAD_EN || o->ead_rule == DD_EAD_L1, "%s: ead_rule = %d", fn,
                  (int)o->ead_rule);
        OPT_RANGE(o->fista == 0 || o->fista == 1, "%s: fista = %d", fn, o->fista);
    }
    if (k == DD_ATTACK_SQUARE_LINF || k == DD_ATTACK_SQUARE_L2 || k == DD_ATTACK_AUTOATTACK_LINF ||
        k == DD_ATTACK_AUTOATTACK_L2) {
        OPT_RANGE(isfinite(o->p_init) && o->p_init > 0.0f && o->p_init <= 1.0f,
                  "%s: p_init = %g outside (0, 1]", fn, (double)o->p_init);
        OPT_RANGE(o->queries >= 1 && o->queries <= max_steps, "%s: queries = %d outside [1, %d]", fn,
                  o->queries, max_steps);
        OPT_RANGE(o->rescale_schedule == 0 || o->rescale_schedule == 1, "%s: rescale_schedule = %d", fn,
                  o->rescale_schedule);
        OPT_RANGE(H >= 1 && W >= 1, "%s: Square needs an image input", fn);
    }
    if (k == DD_ATTACK_FAB_T_LINF || k == DD_ATTACK_FAB_T_L2 || k == DD_ATTACK_AUTOATTACK_LINF ||
        k == DD_ATTACK_AUTOATTACK_L2) {
        OPT_RANGE(isfinite(o->alpha_max) && o->alpha_max >= 0.0f && o->alpha_max <= 1.0f,
                  "%s: alpha_max = %g outside [0, 1]", fn, (double)o->alpha_max);
        OPT_RANGE(isfinite(o->eta) && o->eta >= 1.0f, "%s: eta = %g must be >= 1", fn, (double)o->eta);
        OPT_RANGE(isfinite(o->fab_beta) && o->fab_beta > 0.0f && o->fab_beta <= 1.0f,
                  "%s: fab_beta = %g outside (0, 1]", fn, (double)o->fab_beta);
    }
    return DD_OK;
}

/* ======================================================================== */
/* Create / destroy                                                          */
/* ======================================================================== */

static const dd__attack_ops *ops_of(dd_attack_kind k) {
    switch (k) {
    case DD_ATTACK_FGSM:
        return &dd__fgsm_ops;
    case DD_ATTACK_PGD_LINF:
    case DD_ATTACK_PGD_L2:
    case DD_ATTACK_TRADES_KL:
        return &dd__pgd_ops;
    case DD_ATTACK_DEEPFOOL_L2:
    case DD_ATTACK_DEEPFOOL_LINF:
        return &dd__deepfool_ops;
    case DD_ATTACK_EAD:
        return &dd__ead_ops;
    case DD_ATTACK_CW_L2:
        return &dd__cw_ops;
    case DD_ATTACK_SQUARE_LINF:
    case DD_ATTACK_SQUARE_L2:
        return &dd__square_ops;
    case DD_ATTACK_FAB_T_LINF:
    case DD_ATTACK_FAB_T_L2:
        return &dd__fab_ops;
    case DD_ATTACK_AUTOATTACK_LINF:
    case DD_ATTACK_AUTOATTACK_L2:
        return &dd__autoattack_ops;
    default:
        return is_apgd(k) ? &dd__apgd_ops : NULL;
    }
}

void dd__atk_state_free(dd_attack *a) {
    void **block = a->state; /* the state's first member */
    if (!block) return;
    dd__free_aligned(*block);
    dd__free(a->state);
    a->state = NULL;
}

void dd_attack_destroy(dd_attack *a) {
    if (!a) return;
    if (a->ops && a->ops->destroy) a->ops->destroy(a);
    dd__free_aligned(a->block);
    dd__free(a);
}

dd_status dd__attack_create_sub(dd_attack **out, dd_model *m, const dd_attack_options *o) {
    *out = NULL;
    dd_attack *a = dd__calloc(1, sizeof *a);
    DD_RETURN_IF(!a, DD_ERR_OUT_OF_MEMORY, "dd_attack_create: out of memory");
    a->o = *o;
    a->m = m;
    a->ops = ops_of(o->kind);
    dd_model_max_batch(m, &a->max_batch);
    dd_model_num_classes(m, &a->K);
    dd_model_input_shape(m, &a->C, &a->H, &a->W);
    a->d = (size_t)a->C * (size_t)a->H * (size_t)a->W;
    a->nt = m->ctx.nthreads > 0 ? m->ctx.nthreads
                                : (m->opts.num_threads > 0 ? m->opts.num_threads : omp_get_max_threads());
    dd_attack_kind_norm(o->kind, &a->norm);
    a->min_norm = is_min_norm(o->kind);
    size_t B = (size_t)a->max_batch, K = (size_t)a->K;
    const size_t img = B * a->d * sizeof(float);
    dd__view v[] = {
        DD__VIEW(a->out, img),
        DD__VIEW(a->grad, img),
        DD__VIEW(a->pad, img),
        DD__VIEW(a->logits, B * K * sizeof(float)),
        DD__VIEW(a->dlogits, B * K * sizeof(float)),
        DD__VIEW(a->clean_logits, B * K * sizeof(float)),
        DD__VIEW(a->clean_pred, B * sizeof(int32_t)),
        DD__VIEW(a->pred, B * sizeof(int32_t)),
        DD__VIEW(a->stage, B * sizeof(int32_t)),
    };
    a->block = dd__alloc_views(v, DD__NVIEWS(v));
    a->bucket_base = a->max_batch;
    if (!a->block) {
        size_t d = a->d;
        dd_attack_destroy(a);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_attack_create: out of memory (%zu samples of %zu floats)",
                        B, d);
    }
    if (a->ops->create) {
        dd_status s = a->ops->create(a);
        if (s != DD_OK) {
            dd_attack_destroy(a);
            return s;
        }
    }
    *out = a;
    return DD_OK;
}

dd_status dd_attack_create(dd_attack **out, dd_model *m, const dd_attack_options *user) {
    DD_RETURN_IF(!out, DD_ERR_INVALID_ARGUMENT, "dd_attack_create: out is NULL");
    *out = NULL;
    DD_RETURN_IF(!m || !user, DD_ERR_INVALID_ARGUMENT, "dd_attack_create: model or options NULL");
    dd_attack_options full;
    DD_FORWARD(dd__struct_size_check(user->struct_size, DD_ATTACK_OPTIONS_SIZE_V1, sizeof full,
                                     "dd_attack_create", "dd_attack_options"));
    defaults(&full, user->kind); /* what an older, smaller layout lacks */
    DD_FORWARD(
        DD__STRUCT_READ(&full, user, DD_ATTACK_OPTIONS_SIZE_V1, "dd_attack_create", "dd_attack_options"));
    const dd_attack_options *opts = &full;
    int B = 0, K = 0, C = 0, H = 0, W = 0;
    dd_status s = dd_model_max_batch(m, &B);
    DD_RETURN_IF(s != DD_OK, DD_ERR_STATE, "dd_attack_create: the model is not built");
    DD_FORWARD(dd_model_num_classes(m, &K));
    DD_FORWARD(dd_model_input_shape(m, &C, &H, &W));
    DD_FORWARD(check_options(opts, K, H, W));
    return dd__attack_create_sub(out, m, opts);
}

dd_status dd_attack_get_options_sized(const dd_attack *a, dd_attack_options *opts, size_t size) {
    DD_RETURN_IF(!a || !opts, DD_ERR_INVALID_ARGUMENT, "dd_attack_get_options: NULL argument");
    DD_FORWARD(dd__struct_size_check(size, DD_ATTACK_OPTIONS_SIZE_V1, sizeof *opts, "dd_attack_get_options",
                                     "dd_attack_options"));
    dd__struct_fill(opts, size, &a->o, sizeof a->o);
    return DD_OK;
}

dd_status dd_attack_set_eps(dd_attack *a, float eps) {
    DD_RETURN_IF(!a, DD_ERR_INVALID_ARGUMENT, "dd_attack_set_eps: attack is NULL");
    DD_FORWARD(check_eps(a->o.kind, eps, "dd_attack_set_eps"));
    a->o.eps = eps;
    return DD_OK;
}

/* ======================================================================== */
/* Run                                                                       */
/* ======================================================================== */

dd_status dd__attack_run_raw(dd_attack *a, const float *x, const int32_t *y, int n, float *out, int clean) {
    dd__rng_seed(&a->rng, a->o.seed);
    a->stage_set = 0;
    if (clean) {
        DD_FORWARD(dd__atk_forward(a, x, n, a->clean_logits));
        dd__atk_argmax_rows(a->clean_logits, n, a->K, a->clean_pred);
    }
    return a->ops->run(a, x, y, n, out);
}

dd_status dd_attack_run(dd_attack *a, const float *x, const int32_t *labels, int n, float *x_adv,
                        dd_attack_results *user) {
    DD_RETURN_IF(!a, DD_ERR_INVALID_ARGUMENT, "dd_attack_run: attack is NULL");
    DD_RETURN_IF(!x || !labels || !x_adv, DD_ERR_INVALID_ARGUMENT, "dd_attack_run: NULL buffer");
    DD_RETURN_IF(n < 1 || n > a->max_batch, DD_ERR_INVALID_ARGUMENT,
                 "dd_attack_run: n = %d outside [1, max_batch = %d]", n, a->max_batch);
    /* the caller's struct is read whole here and written whole at the end */
    dd_attack_results full, *r = user ? &full : NULL;
    if (user) {
        dd_attack_results_init(&full);
        DD_FORWARD(
            DD__STRUCT_READ(&full, user, DD_ATTACK_RESULTS_SIZE_V1, "dd_attack_run", "dd_attack_results"));
    }
    for (int i = 0; i < n; i++)
        DD_RETURN_IF(labels[i] < 0 || labels[i] >= a->K, DD_ERR_INVALID_ARGUMENT,
                     "dd_attack_run: labels[%d] = %d outside [0, %d)", i, (int)labels[i], a->K);
    size_t count = (size_t)n * a->d;
    DD_RETURN_IF(!dd__all_finite(x, count, a->nt), DD_ERR_NUMERIC, "dd_attack_run: x holds NaN or Inf");
    const float lo = a->o.box_lo, hi = a->o.box_hi;
    size_t outside = 0;
    for (size_t j = 0; j < count; j++) outside += (x[j] < lo) | (x[j] > hi);
    DD_RETURN_IF(outside > 0, DD_ERR_INVALID_ARGUMENT,
                 "dd_attack_run: %zu values of x lie outside the box [%g, %g]", outside, (double)lo,
                 (double)hi);

    a->n_fwd = a->n_grad = 0;
    a->bucket_base = n;
    /* FGSM and PGD need neither the clean logits nor (without results) the
     * final evaluation: two forward passes fewer in adversarial training. */
    const dd_attack_kind kind = a->o.kind;
    const int plain = kind == DD_ATTACK_FGSM || kind == DD_ATTACK_PGD_LINF || kind == DD_ATTACK_PGD_L2;
    DD_FORWARD(dd__attack_run_raw(a, x, labels, n, a->out, r != NULL || !plain));

    /* Minimum-norm kinds: eps is a success threshold (as FAB in AutoAttack). */
    if (a->min_norm && isfinite(a->o.eps)) {
        for (int i = 0; i < n; i++) {
            float *oi = a->out + (size_t)i * a->d;
            const float *xi = x + (size_t)i * a->d;
            if (dd__atk_norm(oi, xi, a->d, a->norm) > (double)a->o.eps) memcpy(oi, xi, a->d * sizeof(float));
        }
    }
    if (!r) {
        if (x_adv != a->out) memcpy(x_adv, a->out, count * sizeof(float));
        return DD_OK;
    }
    DD_FORWARD(dd__atk_forward(a, a->out, n, a->logits));
    dd__atk_argmax_rows(a->logits, n, a->K, a->pred);

    const int targeted = a->o.targeted;
    int nsucc = 0, nclean = 0;
    for (int i = 0; i < n; i++) {
        int succ = targeted ? a->pred[i] == labels[i] : a->pred[i] != labels[i];
        int clean_ok = a->clean_pred[i] == labels[i];
        nsucc += succ;
        nclean += clean_ok;
        if (!a->stage_set) {
            int already = targeted ? clean_ok : !clean_ok;
            a->stage[i] = !succ ? -1 : (already ? 0 : 1);
        }
        if (r->success) r->success[i] = succ;
        if (r->pred) r->pred[i] = a->pred[i];
        if (r->clean_correct) r->clean_correct[i] = clean_ok;
        if (r->stage) r->stage[i] = a->stage[i];
        if (r->norm_l0 || r->norm_l1 || r->norm_l2 || r->norm_linf) {
            double nv[4];
            dd__atk_norms(a->out + (size_t)i * a->d, x + (size_t)i * a->d, a->d, nv);
            if (r->norm_l0) r->norm_l0[i] = (float)nv[0];
            if (r->norm_l1) r->norm_l1[i] = (float)nv[1];
            if (r->norm_l2) r->norm_l2[i] = (float)nv[2];
            if (r->norm_linf) r->norm_linf[i] = (float)nv[3];
        }
    }
    r->n = n;
    r->num_clean_correct = nclean;
    r->num_success = nsucc;
    r->forward_passes = a->n_fwd;
    r->gradient_passes = a->n_grad;
    dd__struct_fill(user, user->struct_size, &full, sizeof full); /* its size was checked on entry */
    if (x_adv != a->out) memcpy(x_adv, a->out, count * sizeof(float));
    return DD_OK;
}

/* ======================================================================== */
/* Model access and losses                                                   */
/* ======================================================================== */

dd_status dd__atk_forward(dd_attack *a, const float *x, int n, float *logits) {
    int nb = n;
    for (int k = 3; k >= 0; k--) {
        int size = (a->bucket_base + (1 << k) - 1) >> k; /* ceil(base / 2^k) */
        if (size >= n) {
            nb = size;
            break;
        }
    }
    if (nb > a->max_batch || n > a->bucket_base) nb = n;
    a->fw_n = n;
    a->fw_nb = nb;
    a->n_fwd++;
    float *z = logits ? logits : a->logits;
    if (nb == n) return dd_model_forward(a->m, x, n, DD_EVAL, z);
    /* Padding rows repeat the first image: valid input, results ignored. */
    memcpy(a->pad, x, (size_t)n * a->d * sizeof(float));
    for (int i = n; i < nb; i++) memcpy(a->pad + (size_t)i * a->d, x, a->d * sizeof(float));
    return dd_model_forward(a->m, a->pad, nb, DD_EVAL, z);
}

dd_status dd__atk_vjp(dd_attack *a, float *dlogits, float *dx) {
    a->n_grad++;
    if (a->fw_nb > a->fw_n)
        memset(dlogits + (size_t)a->fw_n * a->K, 0, (size_t)(a->fw_nb - a->fw_n) * a->K * sizeof(float));
    return dd_model_input_grad(a->m, dlogits, dx);
}

/* KL(softmax(r) || softmax(z)) and its gradient in z: softmax(z) - softmax(r). */
static double kl_loss(const float *r, const float *z, int K, float *dz) {
    double mr = r[0], mz = z[0];
    for (int j = 1; j < K; j++) {
        if (r[j] > mr) mr = r[j];
        if (z[j] > mz) mz = z[j];
    }
    double sr = 0.0, sz = 0.0;
    for (int j = 0; j < K; j++) {
        sr += exp((double)r[j] - mr);
        sz += exp((double)z[j] - mz);
    }
    double lr = mr + log(sr), lz = mz + log(sz), kl = 0.0;
    for (int j = 0; j < K; j++) {
        double lp = (double)r[j] - lr, lq = (double)z[j] - lz;
        double p = exp(lp);
        kl += p * (lp - lq);
        dz[j] = (float)(exp(lq) - p);
    }
    return kl;
}

dd_status dd__atk_loss_grad(dd_attack *a, const float *x, int n, dd__loss loss, const int32_t *y,
                            const int32_t *t, const float *ref, float *lossv, float *grad, float *logits) {
    float *z = logits ? logits : a->logits;
    DD_FORWARD(dd__atk_forward(a, x, n, z));
    const int K = a->K;
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * K;
        float *dz = a->dlogits + (size_t)i * K;
        double l = 0.0;
        switch (loss) {
        case DD__LOSS_CE:
            l = dd__ce_loss(zi, K, y[i], dz);
            break;
        case DD__LOSS_CE_TARGET:
            l = -dd__ce_loss(zi, K, t[i], dz);
            for (int j = 0; j < K; j++) dz[j] = -dz[j];
            break;
        case DD__LOSS_DLR:
            l = dd__dlr_loss(zi, K, y[i], dz);
            break;
        case DD__LOSS_DLR_TARGET:
            l = dd__dlr_target_loss(zi, K, y[i], t[i], dz);
            break;
        case DD__LOSS_KL:
            l = kl_loss(ref + (size_t)i * K, zi, K, dz);
            break;
        }
        if (lossv) lossv[i] = (float)l;
    }
    return dd__atk_vjp(a, a->dlogits, grad);
}

/* ======================================================================== */
/* Vector helpers                                                            */
/* ======================================================================== */

void dd__atk_project_linf(const dd_attack *a, float *x, const float *x0, int n, float eps) {
    const size_t d = a->d;
    const float lo = a->o.box_lo, hi = a->o.box_hi;
#pragma omp parallel for num_threads(a->nt) schedule(static)
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d;
        const float *x0i = x0 + (size_t)i * d;
#pragma omp simd
        for (size_t j = 0; j < d; j++) {
            float v = dd__clampf(xi[j], x0i[j] - eps, x0i[j] + eps);
            xi[j] = dd__clampf(v, lo, hi);
        }
    }
}

void dd__atk_project_l2(const dd_attack *a, float *x, const float *x0, int n, float eps, double guard) {
    const size_t d = a->d;
    const float lo = a->o.box_lo, hi = a->o.box_hi;
#pragma omp parallel for num_threads(a->nt) schedule(static)
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d;
        const float *x0i = x0 + (size_t)i * d;
        double r2 = 0.0;
        for (size_t j = 0; j < d; j++) {
            double dv = (double)xi[j] - (double)x0i[j];
            r2 += dv * dv;
        }
        double r = sqrt(r2);
        double f = (guard == 0.0 && r == 0.0) ? 1.0 : fmin((double)eps, r) / (r + guard);
        for (size_t j = 0; j < d; j++) {
            float v = (float)((double)x0i[j] + ((double)xi[j] - (double)x0i[j]) * f);
            xi[j] = dd__clampf(v, lo, hi);
        }
    }
}

void dd__atk_clip(const dd_attack *a, float *x, size_t count) {
    const float lo = a->o.box_lo, hi = a->o.box_hi;
#pragma omp simd
    for (size_t j = 0; j < count; j++) x[j] = dd__clampf(x[j], lo, hi);
}

void dd__atk_norms(const float *u, const float *v, size_t d, double norms[4]) {
    double l0 = 0.0, l1 = 0.0, l2 = 0.0, li = 0.0;
    for (size_t j = 0; j < d; j++) {
        double dv = fabs((double)u[j] - (double)v[j]);
        l0 += dv > 0.0;
        l1 += dv;
        l2 += dv * dv;
        if (dv > li) li = dv;
    }
    norms[0] = l0;
    norms[1] = l1;
    norms[2] = sqrt(l2);
    norms[3] = li;
}

double dd__atk_norm(const float *u, const float *v, size_t d, dd_norm p) {
    double nv[4];
    dd__atk_norms(u, v, d, nv);
    switch (p) {
    case DD_NORM_L0:
        return nv[0];
    case DD_NORM_L1:
        return nv[1];
    case DD_NORM_L2:
        return nv[2];
    default:
        return nv[3];
    }
}

void dd__atk_gather(float *dst, const float *src, const int32_t *idx, int m, size_t row) {
    for (int j = 0; j < m; j++)
        memcpy(dst + (size_t)j * row, src + (size_t)idx[j] * row, row * sizeof(float));
}

void dd__atk_scatter(float *dst, const float *src, const int32_t *idx, int m, size_t row) {
    for (int j = 0; j < m; j++)
        memcpy(dst + (size_t)idx[j] * row, src + (size_t)j * row, row * sizeof(float));
}

void dd__atk_argmax_rows(const float *logits, int n, int K, int32_t *pred) {
    for (int i = 0; i < n; i++) pred[i] = dd__argmax(logits + (size_t)i * K, K);
}

void dd__atk_uniform(dd_attack *a, float *v, size_t count, float lo, float hi) {
    for (size_t j = 0; j < count; j++) v[j] = lo + (hi - lo) * (float)dd__rng_uniform(&a->rng);
}

void dd__atk_normal(dd_attack *a, float *v, size_t count) {
    for (size_t j = 0; j < count; j++) v[j] = (float)dd__rng_normal(&a->rng);
}
