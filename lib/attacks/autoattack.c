/* lib/attacks/autoattack.c -- the AutoAttack ensemble, standard version
 * (Croce & Hein 2020; official autoattack.py run_standard_evaluation).
 *
 * Stages, in order: APGD-CE, APGD-T (targeted DLR over the 2nd..10th clean
 * classes), FAB-T (9 targets), Square (5000 queries, p_init 0.8, schedule
 * not rescaled), each with 100 iterations and 1 restart. A sample starts
 * robust iff the model classifies x correctly; every stage runs from the
 * clean x on the samples still robust only (the official code: x0, not the
 * previous stage's output, fra31/auto-attack#85), the model re-evaluates
 * each returned point, and a misclassified one leaves the pipeline with
 * that point as x_adv. Robust accuracy is the number of samples still
 * robust over all n inputs, clean mistakes included in the denominator
 * (dd_attack_results: n - num_success), i.e. the per-sample worst case over
 * the stages (fra31/auto-attack#45), not an average. results->stage says
 * which stage fooled each sample (0: misclassified clean).
 */
#include "attack_internal.h"

/* Defaults: eps 8/255 (Linf) and 0.5 (L2), the CIFAR-10 budgets (the
 * official constructor's 0.3 is MNIST's); seed 0, fixed (the official
 * default draws a time-based seed per batch, so it is not reproducible).
 * The four stages are sub-handles created here with the options derived
 * from ours (steps, restarts, num_targets, rho, queries, p_init,
 * rescale_schedule, alpha_max, eta, fab_beta, seed); each reseeds at its
 * start, like the official per-batch seeding.
 */

#define NSTAGES 4

typedef struct aa_state {
    void *block; /* first (dd__atk_state_free): every buffer below, one dd__alloc_views block */
    dd_attack *sub[NSTAGES];
    float *x0, *xa;            /* (B, d) compacted clean inputs and a stage's output */
    int32_t *idx, *y, *robust; /* (B) */
} aa_state;

static void aa_destroy(dd_attack *a) {
    aa_state *s = a->state;
    if (!s) return;
    for (int k = 0; k < NSTAGES; k++) dd_attack_destroy(s->sub[k]);
    dd__atk_state_free(a);
}

static dd_status aa_create(dd_attack *a) {
    aa_state *s = dd__calloc(1, sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "AutoAttack: out of memory");
    a->state = s;
    const int l2 = a->norm == DD_NORM_L2;
    const dd_attack_kind kinds[NSTAGES] = {
        l2 ? DD_ATTACK_APGD_CE_L2 : DD_ATTACK_APGD_CE_LINF, l2 ? DD_ATTACK_APGD_T_L2 : DD_ATTACK_APGD_T_LINF,
        l2 ? DD_ATTACK_FAB_T_L2 : DD_ATTACK_FAB_T_LINF, l2 ? DD_ATTACK_SQUARE_L2 : DD_ATTACK_SQUARE_LINF};
    for (int k = 0; k < NSTAGES; k++) {
        dd_attack_options o;
        dd_attack_options_init(&o, kinds[k]);
        o.eps = a->o.eps;
        o.seed = a->o.seed;
        o.steps = a->o.steps;
        o.restarts = a->o.restarts;
        o.rho = a->o.rho;
        o.num_targets = a->o.num_targets;
        o.queries = a->o.queries;
        o.p_init = a->o.p_init;
        o.rescale_schedule = a->o.rescale_schedule;
        o.alpha_max = a->o.alpha_max;
        o.eta = a->o.eta;
        o.fab_beta = a->o.fab_beta;
        o.box_lo = a->o.box_lo;
        o.box_hi = a->o.box_hi;
        dd_status st = dd__attack_create_sub(&s->sub[k], a->m, &o);
        if (st != DD_OK) {
            aa_destroy(a);
            return st;
        }
    }
    size_t B = (size_t)a->max_batch, img = B * a->d * sizeof(float);
    dd__view v[] = {
        DD__VIEW(s->x0, img),
        DD__VIEW(s->xa, img),
        DD__VIEW(s->idx, B * sizeof(int32_t)),
        DD__VIEW(s->y, B * sizeof(int32_t)),
        DD__VIEW(s->robust, B * sizeof(int32_t)),
    };
    s->block = dd__alloc_views(v, DD__NVIEWS(v));
    if (!s->block) {
        aa_destroy(a);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "AutoAttack: out of memory for %zu samples", B);
    }
    return DD_OK;
}

static dd_status aa_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    aa_state *s = a->state;
    const size_t d = a->d;
    memcpy(out, x, (size_t)n * d * sizeof(float));
    for (int i = 0; i < n; i++) {
        s->robust[i] = a->clean_pred[i] == y[i];
        a->stage[i] = s->robust[i] ? -1 : 0;
    }
    a->stage_set = 1;
    for (int k = 0; k < NSTAGES; k++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (s->robust[i]) s->idx[m++] = i;
        if (m == 0) break;
        dd__atk_gather(s->x0, x, s->idx, m, d);
        for (int j = 0; j < m; j++) s->y[j] = y[s->idx[j]];
        dd_attack *sub = s->sub[k];
        sub->o.eps = a->o.eps; /* dd_attack_set_eps may have changed it */
        sub->n_fwd = sub->n_grad = 0;
        sub->bucket_base = a->bucket_base; /* share our four batch sizes */
        dd_status st = dd__attack_run_raw(sub, s->x0, s->y, m, s->xa, 1);
        a->n_fwd += sub->n_fwd;
        a->n_grad += sub->n_grad;
        DD_FORWARD(st);
        DD_FORWARD(dd__atk_forward(a, s->xa, m, a->logits));
        for (int j = 0; j < m; j++) {
            if (dd__argmax(a->logits + (size_t)j * a->K, a->K) == s->y[j]) continue;
            int i = s->idx[j];
            s->robust[i] = 0;
            a->stage[i] = k + 1;
            memcpy(out + (size_t)i * d, s->xa + (size_t)j * d, d * sizeof(float));
        }
    }
    return DD_OK;
}

const dd__attack_ops dd__autoattack_ops = {aa_create, aa_destroy, aa_run};
