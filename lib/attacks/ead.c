/* lib/attacks/ead.c -- EAD, the elastic-net attack (Chen et al. 2018), with
 * the EN and L1 decision rules, FISTA (or ISTA) and a binary search over c.
 *
 * Objective per sample: c F(x) + ||x - x0||_2^2 + beta ||x - x0||_1 over the
 * box, F = max(z_y - max_{j!=y} z_j, -kappa) (targeted: max(max_{j!=t} z_j
 * - z_t, -kappa)). Each binary-search step restarts from x_k = y_k = x0 and
 * runs `steps` iterations of
 *     lr_k = lr sqrt(1 - k/I)
 *     x_new = S_beta(y_k - lr_k grad[c F + ||. - x0||^2](y_k))
 *     y_k = x_new + (k+1)/(k+4) (x_new - x_k);  x_k = x_new
 * where S_beta is the projected shrinkage (threshold beta itself, not
 * lr*beta: every implementation does this) and y_k is not clipped. Success
 * is judged at x_k: argmax(z + kappa e_y) != y. The EN rule keeps the
 * successful x_k with the smallest ||d||_2^2 + beta ||d||_1, the L1 rule the
 * smallest ||d||_1; both steer the search: success lowers the upper bound
 * and bisects, failure raises the lower bound and bisects (or multiplies c
 * by 10 while no upper bound is known).
 */
#include "attack_internal.h"

/* Defaults (the authors' EAD_Attack code, EAD0): beta 1e-3, lr 1e-2, 9
 * binary steps, c0 1e-3, kappa 0, FISTA momentum (k+1)/(k+4), reset of
 * x_k, y_k per binary step, abort early every I/10 iterations when the batch
 * loss (with the L1 term, at x_k) exceeds 0.9999 of the previous check.
 * Choices: 1000 iterations (EAD0 10000, torchattacks 100); the first abort
 * check compares against +infinity (foolbox) instead of EAD0's 1e6, which
 * assumes its batch of one; samples never fooled return x0 (torchattacks;
 * EAD0 and foolbox return zeros); untargeted by default (EAD0 is targeted).
 * eps (default +infinity) bounds the L1 norm of a success (attack.c).
 */

typedef struct ead_state {
    void *block;            /* first (dd__atk_state_free): every buffer below, one dd__alloc_views block */
    float *xk, *yk, *obest; /* (B, d) */
    double *c, *lower, *upper, *bdist, *odist; /* (B) */
    int32_t *blabel;                           /* (B) */
} ead_state;

static dd_status ead_create(dd_attack *a) {
    ead_state *s = dd__calloc(1, sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "EAD: out of memory");
    a->state = s;
    size_t B = (size_t)a->max_batch, img = B * a->d * sizeof(float);
    dd__view v[] = {
        DD__VIEW(s->xk, img),
        DD__VIEW(s->yk, img),
        DD__VIEW(s->obest, img),
        DD__VIEW(s->c, B * sizeof(double)),
        DD__VIEW(s->lower, B * sizeof(double)),
        DD__VIEW(s->upper, B * sizeof(double)),
        DD__VIEW(s->bdist, B * sizeof(double)),
        DD__VIEW(s->odist, B * sizeof(double)),
        DD__VIEW(s->blabel, B * sizeof(int32_t)),
    };
    s->block = dd__alloc_views(v, DD__NVIEWS(v));
    if (!s->block) {
        dd__atk_state_free(a);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "EAD: out of memory for %zu samples", B);
    }
    return DD_OK;
}

/* F and its logit gradient (into dz, scaled by c) for one sample. */
static double ead_f(const float *z, int K, int y, int targeted, float kappa, double c, float *dz) {
    double f;
    int pos, neg;
    if (targeted) {
        int o = dd__argmax_except(z, K, y);
        f = (double)z[o] - (double)z[y];
        pos = o;
        neg = y;
    } else {
        int o = dd__argmax_except(z, K, y);
        f = (double)z[y] - (double)z[o];
        pos = y;
        neg = o;
    }
    if (dz) {
        for (int j = 0; j < K; j++) dz[j] = 0.0f;
        if (f > -(double)kappa) {
            dz[pos] += (float)c;
            dz[neg] -= (float)c;
        }
    }
    return f > -(double)kappa ? f : -(double)kappa;
}

/* Success at logits z with the kappa adjustment (the references' compare()). */
static int ead_success(const float *z, int K, int y, int targeted, float kappa) {
    int best = 0;
    for (int j = 1; j < K; j++) {
        float vj = z[j] + (j == y ? (targeted ? -kappa : kappa) : 0.0f);
        float vb = z[best] + (best == y ? (targeted ? -kappa : kappa) : 0.0f);
        if (vj > vb) best = j;
    }
    return targeted ? best == y : best != y;
}

static dd_status ead_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    ead_state *s = a->state;
    const size_t d = a->d, count = (size_t)n * d;
    const int K = a->K, I = a->o.steps, targeted = a->o.targeted, l1rule = a->o.ead_rule == DD_EAD_L1;
    const float beta = a->o.l1_weight, kappa = a->o.confidence, lo = a->o.box_lo, hi = a->o.box_hi;
    const double lr = a->o.step_size;
    const int period = I / 10 > 0 ? I / 10 : 1; /* EAD0's I//10 (which fails below 10 steps) */

    memcpy(s->obest, x, count * sizeof(float));
    for (int i = 0; i < n; i++) {
        s->c[i] = a->o.initial_const;
        s->lower[i] = 0.0;
        s->upper[i] = 1e10; /* EAD0: "no upper bound yet" while >= 1e9 */
        s->odist[i] = INFINITY;
    }
    for (int outer = 0; outer < a->o.binary_steps; outer++) {
        if (a->o.binary_steps >= 10 && outer == a->o.binary_steps - 1)
            for (int i = 0; i < n; i++) s->c[i] = s->upper[i];
        memcpy(s->xk, x, count * sizeof(float));
        memcpy(s->yk, x, count * sizeof(float));
        for (int i = 0; i < n; i++) {
            s->bdist[i] = INFINITY;
            s->blabel[i] = -1;
        }
        double prev = INFINITY;
        for (int it = 0; it < I; it++) {
            const double alpha = lr * sqrt(1.0 - (double)it / (double)I);
            const float mom = a->o.fista ? (float)(it + 1) / (float)(it + 4) : 0.0f;
            /* Gradient of the smooth part at y_k. */
            DD_FORWARD(dd__atk_forward(a, s->yk, n, a->logits));
            for (int i = 0; i < n; i++)
                ead_f(a->logits + (size_t)i * K, K, y[i], targeted, kappa, s->c[i],
                      a->dlogits + (size_t)i * K);
            DD_FORWARD(dd__atk_vjp(a, a->dlogits, a->grad));
#pragma omp parallel for num_threads(a->nt) schedule(static)
            for (size_t j = 0; j < count; j++) {
                float g = a->grad[j] + 2.0f * (s->yk[j] - x[j]);
                float xn = dd__ead_shrink(s->yk[j] - (float)alpha * g, x[j], beta, lo, hi);
                s->yk[j] = xn + mom * (xn - s->xk[j]);
                s->xk[j] = xn;
            }
            /* Loss and success at x_k. */
            DD_FORWARD(dd__atk_forward(a, s->xk, n, a->logits));
            double total = 0.0;
            for (int i = 0; i < n; i++) {
                double nv[4];
                dd__atk_norms(s->xk + (size_t)i * d, x + (size_t)i * d, d, nv);
                const float *zi = a->logits + (size_t)i * K;
                double f = ead_f(zi, K, y[i], targeted, kappa, 1.0, NULL);
                total += s->c[i] * f + nv[2] * nv[2] + (double)beta * nv[1];
            }
            if (a->o.abort_early && it % period == 0) {
                if (total > prev * 0.9999) break; /* 0.9999: EAD0's stall threshold */
                prev = total;
            }
            for (int i = 0; i < n; i++) {
                const float *zi = a->logits + (size_t)i * K;
                if (!ead_success(zi, K, y[i], targeted, kappa)) continue;
                double nv[4];
                dd__atk_norms(s->xk + (size_t)i * d, x + (size_t)i * d, d, nv);
                double dist = l1rule ? nv[1] : nv[2] * nv[2] + (double)beta * nv[1];
                if (dist < s->bdist[i]) {
                    s->bdist[i] = dist;
                    s->blabel[i] = dd__argmax(zi, K);
                }
                if (dist < s->odist[i]) {
                    s->odist[i] = dist;
                    memcpy(s->obest + (size_t)i * d, s->xk + (size_t)i * d, d * sizeof(float));
                }
            }
        }
        for (int i = 0; i < n; i++)
            dd__ead_update_const(s->blabel[i] != -1, &s->c[i], &s->lower[i], &s->upper[i]);
    }
    memcpy(out, s->obest, count * sizeof(float));
    return DD_OK;
}

const dd__attack_ops dd__ead_ops = {ead_create, dd__atk_state_free, ead_run};
